"""Hardware budgets and the feasibility check that every candidate passes before it becomes a trial.

A candidate is checked in order of cost: a dominance pre-filter (it is at least as large, coordinate by coordinate,
as a candidate already known to break a budget), the closed-form parameter/MAC/size counts of
:mod:`efficientnet.search.costs`, and only then the meta-device profiler (cached per spec) and, when
``max_latency_ms`` is set, a real CPU latency measurement. Only a candidate that passes everything is proposed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import TYPE_CHECKING, Callable

from ..spec import ArchSpec
from .candidates import Candidate, CandidateSpace
from .costs import estimate_costs

__all__ = ["Budgets", "BudgetError", "FeasibilityChecker", "cached_profile"]

if TYPE_CHECKING:  # the profiler imports torch: loaded on first use, so the tuner process starts fast
    from ..profiler import Profile

_logger = logging.getLogger(__name__)

ProfileFn = Callable[[ArchSpec, int], "Profile"]


class BudgetError(ValueError):
    """The hardware budgets leave no candidate of the search space; the message names the budget."""


@dataclass(frozen=True)
class Budgets:
    """Upper bounds on a candidate's costs (None: no bound)."""

    max_params: float | None = None
    max_macs: float | None = None
    max_model_size_mb: float | None = None
    max_peak_memory_mb: float | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not (
                isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
            ):
                raise ValueError(f"classArg {f.name} must be a positive number or null, got {value!r}")

    def active(self) -> dict[str, float]:
        """The budgets that are set."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def violations(self, costs: object) -> dict[str, float]:
        """``{budget name: measured value}`` for every budget ``costs`` breaks (attributes it lacks are skipped)."""
        out = {}
        for name, limit in self.active().items():
            value = getattr(costs, name.removeprefix("max_"), None)
            if value is not None and value > limit:
                out[name] = value
        return out


@lru_cache(maxsize=8192)
def cached_profile(spec: ArchSpec, num_classes: int = 1000) -> Profile:
    """:func:`efficientnet.profiler.profile`, cached per (spec, class count) for the whole process."""
    from ..profiler import profile

    return profile(spec, num_classes=num_classes)


@lru_cache(maxsize=1024)
def _cached_latency(spec: ArchSpec, num_classes: int) -> float:
    from ..profiler import measure_latency

    return measure_latency(spec, num_classes=num_classes)


class FeasibilityChecker:
    """Decides whether a candidate fits the budgets, and returns its profile when it does."""

    def __init__(
        self,
        space: CandidateSpace,
        budgets: Budgets,
        num_classes: int = 1000,
        profiler: ProfileFn | None = None,
    ) -> None:
        self.space = space
        self.budgets = budgets
        self.num_classes = num_classes
        self.profiler: ProfileFn = profiler or cached_profile
        self._over: list[tuple[float, ...]] = []  # minimal cost vectors known to break a budget
        self.profiled = 0
        self.rejected = 0

    def _dominates_violator(self, vector: tuple[float, ...]) -> bool:
        return any(all(a >= b for a, b in zip(vector, bad)) for bad in self._over)

    def _remember(self, vector: tuple[float, ...]) -> None:
        self._over = [v for v in self._over if not all(a >= b for a, b in zip(v, vector))]
        self._over.append(vector)

    def check(self, candidate: Candidate) -> tuple[Profile | None, dict[str, float]]:
        """``(profile, {})`` when the candidate fits every budget, else ``(None, violations)``."""
        vector = candidate.cost_vector()
        if self._over and self._dominates_violator(vector):
            self.rejected += 1
            return None, {"dominated": 1.0}
        spec = self.space.spec(candidate)
        if self.budgets.active():
            broken = self.budgets.violations(estimate_costs(spec, self.num_classes))
            if broken:
                self._remember(vector)
                self.rejected += 1
                return None, broken
        result = self.profiler(spec, self.num_classes)
        self.profiled += 1
        if self.budgets.max_latency_ms is not None:
            result = dataclasses.replace(result, latency_ms=_cached_latency(spec, self.num_classes))
        broken = self.budgets.violations(result)
        if broken:
            self._remember(vector)
            self.rejected += 1
            return None, broken
        return result, {}

    def assert_feasible(self) -> Candidate:
        """Find one candidate that fits, trying the Pareto-minimal ones cheapest first; else raise BudgetError.

        Costs grow with every coordinate of a candidate, so when none of the Pareto-minimal candidates fits, nothing
        does. The error names the budget(s) that every minimal candidate breaks, with the smallest value needed.
        """
        if not self.budgets.active():
            return self.space.cheapest()[0]
        cheapest = sorted(
            self.space.cheapest(), key=lambda c: estimate_costs(self.space.spec(c), self.num_classes).macs
        )
        _logger.info("checking the budgets against %d minimal candidates", len(cheapest))
        always: set[str] | None = None
        smallest: dict[str, float] = {}
        for candidate in cheapest:
            spec = self.space.spec(candidate)
            broken = self.budgets.violations(estimate_costs(spec, self.num_classes))
            if not broken:
                prof, broken = self.check(candidate)
                if prof is not None:
                    return candidate
            always = set(broken) if always is None else always & set(broken)
            for name, value in broken.items():
                smallest[name] = min(value, smallest.get(name, math.inf))
        active = self.budgets.active()
        if always:
            text = "; ".join(f"{n}={active[n]:g} but the smallest candidate needs {smallest[n]:g}" for n in sorted(always))
            names = " / ".join(sorted(always))
        else:
            names = " / ".join(sorted(smallest))
            text = f"{names} cannot all be met at once by any candidate"
        raise BudgetError(
            f"the budgets leave no feasible architecture: {text}; raise {names}, lower phi/base_resolution or "
            "allow smaller alpha/beta/gamma and block choices"
        )
