"""Hardware budgets and the feasibility check that every candidate passes before it becomes a trial.

A candidate is checked in order of cost: a dominance pre-filter (it is at least as large, coordinate by coordinate,
as a candidate already known to break a budget), then the closed forms of :mod:`efficientnet.search.costs`
(parameters, MACs, model size and peak activation memory, in well under a millisecond), and, only when
``max_latency_ms`` is set, a real CPU latency measurement (or, with classArg ``latency_table``, the sum of the
table's per-layer latencies measured on the target device, see :mod:`efficientnet.latency_table`). Only a
candidate that passes everything is proposed.

The meta-device profiler stays as the reference: the first ``cross_check`` candidates are profiled as well, and if
the profile disagrees with the closed forms (a changed model implementation, say), a warning names the difference
and from then on every candidate is profiled and the profile decides. Profiles are stored between processes under
a key that covers the model's code (:mod:`efficientnet.profile_store`), so an experiment after the first reads its
cross-check instead of measuring it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..spec import ArchSpec
from .candidates import Candidate, CandidateSpace

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
    latency_table: Any = field(default=None, compare=False, repr=False)  # a LatencyTable: max_latency_ms predicted

    def _limits(self) -> list[Any]:
        return [f for f in fields(self) if f.name.startswith("max_")]

    def __post_init__(self) -> None:
        for f in self._limits():
            value = getattr(self, f.name)
            if value is not None and not (
                isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
            ):
                raise ValueError(f"classArg {f.name} must be a positive number or null, got {value!r}")

    def active(self) -> dict[str, float]:
        """The budgets that are set."""
        return {f.name: getattr(self, f.name) for f in self._limits() if getattr(self, f.name) is not None}

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
    """:func:`efficientnet.profiler.profile`, cached per (spec, class count) for the whole process, and between
    processes on disk (:mod:`efficientnet.profile_store`)."""
    from ..profile_store import stored_profile

    return stored_profile(spec, num_classes)


@lru_cache(maxsize=1024)
def _cached_latency(spec: ArchSpec, num_classes: int) -> float:
    from ..profiler import measure_latency

    return measure_latency(spec, num_classes=num_classes)


@lru_cache(maxsize=65536)
def _cached_estimate(spec: ArchSpec, num_classes: int) -> "Profile":
    from .costs import estimated_profile

    return estimated_profile(spec, num_classes)


def _agree(closed: "Profile", profiled: "Profile") -> list[str]:
    """The cost names on which the closed forms and a profile disagree (counts exactly, sizes to 1e-6 relative)."""
    out = [n for n in ("params", "macs") if getattr(closed, n) != getattr(profiled, n)]
    out += [n for n in ("model_size_mb", "peak_memory_mb")
            if not math.isclose(getattr(closed, n), getattr(profiled, n), rel_tol=1e-6, abs_tol=1e-9)]
    return out


class FeasibilityChecker:
    """Decides whether a candidate fits the budgets, and returns its costs (a ``Profile``) when it does.

    ``profiler`` is the reference the closed forms are cross-checked against (the meta-device profiler by default);
    ``cross_check`` is how many candidates are checked both ways.
    """

    def __init__(
        self,
        space: CandidateSpace,
        budgets: Budgets,
        num_classes: int = 1000,
        profiler: ProfileFn | None = None,
        cross_check: int = 1,
    ) -> None:
        self.space = space
        self.budgets = budgets
        self.num_classes = num_classes
        self.profiler: ProfileFn = profiler or cached_profile
        self.cross_check = cross_check
        self.closed_forms_agree = True  # False once a cross-check disagreed: the profiler decides from then on
        self._over: list[tuple[float, ...]] = []  # minimal cost vectors known to break a budget
        self._over_array: np.ndarray | None = None
        self._fits: dict[Candidate, bool] = {}  # fits_estimate's answers (costs are fixed per candidate)
        self.profiled = 0
        self.rejected = 0

    def costs(self, spec: ArchSpec) -> "Profile":
        """The costs of ``spec``: closed forms, cross-checked against the profiler for the first candidates."""
        closed = _cached_estimate(spec, self.num_classes)
        if self.profiled >= self.cross_check and self.closed_forms_agree:
            return closed
        profiled = self.profiler(spec, self.num_classes)
        self.profiled += 1
        if self.closed_forms_agree:
            differ = _agree(closed, profiled)
            if differ:
                self.closed_forms_agree = False
                _logger.warning(
                    "closed-form costs disagree with the profiler on %s for %s (%s vs %s): every candidate is "
                    "profiled from now on", ", ".join(differ), spec,
                    {n: getattr(closed, n) for n in differ}, {n: getattr(profiled, n) for n in differ},
                )
        return profiled

    def _dominates_violator(self, vector: tuple[float, ...]) -> bool:
        if self._over_array is None:
            self._over_array = np.asarray(self._over, dtype=float)
        return bool(np.any(np.all(np.asarray(vector) >= self._over_array, axis=1)))

    def _remember(self, vector: tuple[float, ...]) -> None:
        self._over = [v for v in self._over if not all(a >= b for a, b in zip(v, vector))]
        self._over.append(vector)
        self._over_array = None

    def fits_estimate(self, candidate: Candidate) -> bool:
        """A cheap pre-check for strategies choosing among many candidates: the dominance pre-filter and the closed
        forms only (never the profiler, never a latency measurement); :meth:`check` has the last word."""
        if not self.budgets.active():
            return True
        known = self._fits.get(candidate)
        if known is not None:
            return known
        vector = candidate.cost_vector()
        fits = not (self._over and self._dominates_violator(vector))
        if fits and self.budgets.violations(_cached_estimate(self.space.spec(candidate), self.num_classes)):
            self._remember(vector)
            self.rejected += 1
            fits = False
        self._fits[candidate] = fits
        return fits

    def check(self, candidate: Candidate) -> tuple[Profile | None, dict[str, float]]:
        """``(profile, {})`` when the candidate fits every budget, else ``(None, violations)``."""
        vector = candidate.cost_vector()
        if self._over and self._dominates_violator(vector):
            self.rejected += 1
            return None, {"dominated": 1.0}
        spec = self.space.spec(candidate)
        result = self.costs(spec)
        broken = self.budgets.violations(result)
        if not broken and self.budgets.max_latency_ms is not None:  # measured only when the rest fits
            table = self.budgets.latency_table
            latency = (table.predict(spec, self.num_classes) if table is not None
                       else _cached_latency(spec, self.num_classes))
            result = dataclasses.replace(result, latency_ms=latency)
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
            self.space.cheapest(), key=lambda c: _cached_estimate(self.space.spec(c), self.num_classes).macs
        )
        _logger.info("checking the budgets against %d minimal candidates", len(cheapest))
        always: set[str] | None = None
        smallest: dict[str, float] = {}
        for candidate in cheapest:
            spec = self.space.spec(candidate)
            broken = self.budgets.violations(_cached_estimate(spec, self.num_classes))
            if not broken or not self.closed_forms_agree:
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
