"""The project's NNI tuner: EfficientNet variants on the compound constraint, within hardware budgets.

Use it from ``config.yml``::

    tuner:
      codeDirectory: .
      className: tuner.EfficientNetTuner
      classArgs: {strategy: evolution, product: 2.0, base: lite0, max_params: 6000000}

Each proposal is a flat dict (see :mod:`efficientnet.proposal`): ``alpha``, ``beta``, ``gamma``, ``phi``, the block
choices ``stageN_kernel|expand|se|repeats``, ``arch`` (the architecture's compact string, authoritative), its profiled
``params``, ``macs``, ``model_size_mb``, ``peak_memory_mb`` (and ``latency_ms``), plus the hyperparameters of the
search space drawn with NNI's semantics. ``FixedProductTuner`` keeps the old seed's ``classArgs: {product: 2}``
working: a grid over the alpha/beta/gamma points that meet the constraint.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Mapping

import nni
import numpy as np
from nni.tuner import Tuner
from nni.utils import OptimizeMode, extract_scalar_reward

from efficientnet.profiler import Profile
from efficientnet.search.budgets import Budgets, FeasibilityChecker
from efficientnet.search.candidates import Candidate, CandidateSpace
from efficientnet.search.constraint import DEFAULT_PRODUCT, DEFAULT_TOLERANCE, CompoundConstraint
from efficientnet.search.space import parse_search_space
from efficientnet.search.strategies import STRATEGIES, make_strategy
from efficientnet.spec import ArchSpec, SpecError, resolve_arch

__all__ = ["EfficientNetTuner", "FixedProductTuner"]

_logger = logging.getLogger(__name__)



class EfficientNetTuner(Tuner):
    """Proposes EfficientNets meeting alpha·beta²·gamma² ≈ ``product`` and every hardware budget.

    classArgs: ``product`` (2.0) and absolute ``tolerance`` (0.1); ``phi`` (1.0); ``strategy`` (``grid``,
    ``random`` or ``evolution``, the default); ``population_size`` (20) and ``sample_size`` (5) for evolution;
    ``seed``; ``optimize_mode`` (``maximize``, the default, or ``minimize``); ``base`` (``lite0`` or ``b0``, the
    pretrained weights' family, or any preset or spec string, e.g. a narrow base for quick runs); ``base_resolution`` (input size before gamma scaling; default the base's 224);
    ``num_classes`` (for the profiled costs; 1000); budgets ``max_params``, ``max_macs``, ``max_model_size_mb``,
    ``max_peak_memory_mb`` and ``max_latency_ms`` (measured on this machine's CPU; slow, off by default).
    ``profiler`` is for tests and benchmarks only: a ``(spec, num_classes) -> Profile`` replacing the meta profiler.
    """

    def __init__(
        self,
        product: float = DEFAULT_PRODUCT,
        tolerance: float = DEFAULT_TOLERANCE,
        phi: float = 1.0,
        strategy: str = "evolution",
        population_size: int = 20,
        sample_size: int = 5,
        seed: int | None = None,
        optimize_mode: str = "maximize",
        base: str = "lite0",
        base_resolution: int | None = None,
        num_classes: int = 1000,
        max_params: float | None = None,
        max_macs: float | None = None,
        max_model_size_mb: float | None = None,
        max_peak_memory_mb: float | None = None,
        max_latency_ms: float | None = None,
        profiler: Callable[[ArchSpec, int], Profile] | None = None,
    ) -> None:
        self.constraint = CompoundConstraint(float(product), float(tolerance))
        if not isinstance(phi, (int, float)) or phi < 0:
            raise ValueError(f"classArg phi must be a number >= 0, got {phi!r}")
        self.phi = float(phi)
        if strategy not in STRATEGIES:
            raise ValueError(f"classArg strategy {strategy!r} is unknown: use one of {', '.join(STRATEGIES)}")
        self.strategy_name = strategy
        self.strategy_options = {"population_size": int(population_size), "sample_size": int(sample_size)}
        try:
            self.optimize_mode = OptimizeMode(optimize_mode)
        except ValueError:
            raise ValueError(f"classArg optimize_mode must be 'maximize' or 'minimize', got {optimize_mode!r}") from None
        try:
            self.base = resolve_arch(str(base))
        except SpecError as exc:
            raise ValueError(f"classArg base: {exc} (use lite0 or b0 to match the pretrained weights)") from None
        if base_resolution is not None and (not isinstance(base_resolution, int) or base_resolution < 16):
            raise ValueError(f"classArg base_resolution must be an integer >= 16 or null, got {base_resolution!r}")
        self.base_resolution = base_resolution
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"classArg num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.budgets = Budgets(max_params, max_macs, max_model_size_mb, max_peak_memory_mb, max_latency_ms)
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31))
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self._profiler = profiler
        self.space: CandidateSpace | None = None
        self.checker: FeasibilityChecker | None = None
        self.strategy = None
        self._used: set[Candidate] = set()                   # proposed, imported or over budget: never proposed again
        self._by_id: dict[int, Candidate] = {}                # parameter id -> candidate
        self._results: dict[Candidate, float] = {}            # successful results, as scores (higher is better)
        self._failed: set[Candidate] = set()
        _logger.info("EfficientNetTuner: strategy %s, seed %d, %s, budgets %s",
                     strategy, self.seed, self.constraint, self.budgets.active() or "none")

    # ------------------------------------------------------------------------------------------ search space
    def update_search_space(self, search_space: Mapping[str, Any]) -> None:
        """Validate the search space, precompute the feasible grid and check that the budgets leave something."""
        parsed = parse_search_space(search_space, self.base)
        space = CandidateSpace(parsed, self.constraint, self.base, self.phi, self.base_resolution)
        checker = FeasibilityChecker(space, self.budgets, self.num_classes, self._profiler)
        checker.assert_feasible()
        self.space, self.checker = space, checker
        self.strategy = make_strategy(
            self.strategy_name, space, self.rng, self._is_free, **self.strategy_options
        )
        for candidate, score in self._results.items():  # a new search space keeps what was learnt in it
            if candidate in space:
                self.strategy.tell(candidate, score)
        _logger.info(
            "search space: %d coefficient points meet the constraint, %d block-choice combinations, "
            "%d candidates, hyperparameters %s",
            len(space.points), space.choice_count, space.size, sorted(parsed.hyperparameters) or "none",
        )

    def _is_free(self, candidate: Candidate) -> bool:
        return candidate not in self._used

    # ------------------------------------------------------------------------------------------ proposals
    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        """The next proposal; ``nni.NoMoreTrialError`` once every candidate has been used."""
        if self.space is None or self.strategy is None or self.checker is None:
            raise RuntimeError("update_search_space must be called before generate_parameters")
        while True:
            if len(self._used) >= self.space.size:
                raise nni.NoMoreTrialError("every candidate of the search space has been proposed or is over budget")
            candidate = self.strategy.ask()
            if candidate is None:
                raise nni.NoMoreTrialError("the search strategy has no candidate left")
            if candidate in self._used:  # a strategy should not do this; never propose twice anyway
                _logger.debug("strategy asked for a used candidate %s", candidate)
                continue
            self._used.add(candidate)
            prof, broken = self.checker.check(candidate)
            if prof is None:
                _logger.debug("over budget %s: %s", candidate, broken)
                continue
            self._by_id[parameter_id] = candidate
            return self._proposal(candidate, prof)

    def _proposal(self, candidate: Candidate, prof: Profile) -> dict[str, Any]:
        assert self.space is not None
        params = self.space.parameters(candidate)
        params["arch"] = str(self.space.spec(candidate))
        params.update(
            params=prof.params,
            macs=prof.macs,
            model_size_mb=round(prof.model_size_mb, 3),
            peak_memory_mb=round(prof.peak_memory_mb, 3),
        )
        if prof.latency_ms is not None:
            params["latency_ms"] = round(prof.latency_ms, 3)
        params.update(self.space.parsed.sample_hyperparameters(self.rng))
        return params

    # ------------------------------------------------------------------------------------------ results
    def _score(self, value: Any) -> float:
        if isinstance(value, str):
            value = json.loads(value)
        reward = float(extract_scalar_reward(value))
        return reward if self.optimize_mode is OptimizeMode.Maximize else -reward

    def _candidate_of(self, parameter_id: int | None, parameters: Any) -> Candidate | None:
        candidate = self._by_id.get(parameter_id) if parameter_id is not None else None
        if candidate is None and self.space is not None and isinstance(parameters, Mapping):
            candidate = self.space.candidate_from_parameters(parameters)
        return candidate

    def receive_trial_result(self, parameter_id: int, parameters: Any, value: Any, **kwargs: Any) -> None:
        """Record a final result (a number, or a dict with ``default``); results may arrive in any order."""
        candidate = self._candidate_of(parameter_id, parameters)
        if candidate is None or self.strategy is None:
            _logger.warning("result for unknown parameters %s ignored", parameter_id)
            return
        score = self._score(value)
        if candidate in self._failed:
            return
        self._used.add(candidate)
        self._results[candidate] = score
        self.strategy.tell(candidate, score)

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        """A failed (or killed) trial's architecture is never used as a parent."""
        candidate = self._by_id.get(parameter_id)
        if success or candidate is None or self.strategy is None:
            return
        self._failed.add(candidate)
        self._results.pop(candidate, None)
        self.strategy.tell(candidate, None)

    def import_data(self, data: Any) -> None:
        """Replay finished trials (``nnictl resume`` / ``experiment import``): ``[{"parameter", "value"}, ...]``."""
        if self.space is None or self.strategy is None:
            raise RuntimeError("update_search_space must be called before import_data")
        if isinstance(data, str):
            data = json.loads(data)
        imported = skipped = 0
        for record in data:
            if isinstance(record, str):
                record = json.loads(record)
            parameters = record.get("parameter")
            if isinstance(parameters, str):
                parameters = json.loads(parameters)
            candidate = self._candidate_of(None, parameters)
            try:
                score = self._score(record.get("value"))
            except (RuntimeError, TypeError, ValueError):
                score = None
            if candidate is None or score is None:
                skipped += 1
                continue
            self._used.add(candidate)
            self._results[candidate] = score
            self.strategy.tell(candidate, score)
            imported += 1
        _logger.info("imported %d trials (%d skipped: outside the search space or without a numeric value)",
                     imported, skipped)


class FixedProductTuner(EfficientNetTuner):
    """The old seed's tuner: a grid over the alpha/beta/gamma points meeting alpha·beta²·gamma² ≈ ``product``.

    It takes the same classArgs as :class:`EfficientNetTuner`, with ``strategy`` defaulting to ``grid`` and the base
    to ``b0``, so ``classArgs: {product: 2}`` works unchanged.
    """

    def __init__(self, product: float = DEFAULT_PRODUCT, strategy: str = "grid", base: str = "b0", **kwargs: Any):
        super().__init__(product=product, strategy=strategy, base=base, **kwargs)
