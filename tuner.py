"""The project's NNI tuner: EfficientNet variants on the compound constraint, within hardware budgets.

Use it from ``config.yml``::

    tuner:
      codeDirectory: .
      className: tuner.EfficientNetTuner
      classArgs: {strategy: bo, product: 2.0, base: lite0, max_params: 6000000}

Each proposal is an :class:`efficientnet.proposal.Proposal`, which NNI carries as a flat dict: ``alpha``, ``beta``,
``gamma``, ``phi``, the block choices ``stageN_kernel|expand|se|repeats``, ``arch`` (the architecture's compact
string, authoritative), its profiled ``params``, ``macs``, ``model_size_mb``, ``peak_memory_mb`` (and
``latency_ms``), the hyperparameters of the search space (chosen by the ``bo`` strategy, drawn with NNI's semantics
by the others) and, with proxy training, its budget. ``FixedProductTuner`` keeps the legacy project's ``classArgs: {product: 2}``
working: a grid over the alpha/beta/gamma points that meet the constraint.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Mapping

import nni
import numpy as np
from nni.tuner import Tuner
from nni.utils import OptimizeMode, extract_scalar_reward

from efficientnet.search.budgets import Budgets, FeasibilityChecker
from efficientnet.search.candidates import Candidate, CandidateSpace
from efficientnet.proposal import Proposal
from efficientnet.nni_dispatcher import (ExperimentError, guarded, hear_stopped_trials, in_dispatcher, report_errors,
                                         trial_error)
from efficientnet.search.class_args import class_arg_names, positive_int, unknown_class_args
from efficientnet.search.constraint import DEFAULT_PRODUCT, DEFAULT_TOLERANCE, CompoundConstraint
from efficientnet.search.costs import estimate_costs
from efficientnet.search.failures import FirstFailures
from efficientnet.search.fidelity import is_partial_result, partial_score
from efficientnet.search.pareto import MultiObjective, nsga2_fitness
from efficientnet.search.proxy import FULL, PROXY, ProxySchedule
from efficientnet.search.space import parse_search_space
from efficientnet.search.strategy_table import STRATEGIES, make_strategy
from efficientnet.spec import ArchSpec, SpecError, resolve_arch

if TYPE_CHECKING:
    from efficientnet.profiler import Profile

__all__ = ["EfficientNetTuner", "FixedProductTuner"]

_logger = logging.getLogger(__name__)



class EfficientNetTuner(Tuner):
    """Proposes EfficientNets meeting alpha·beta²·gamma² ≈ ``product`` and every hardware budget.

    classArgs: ``product`` (2.0) and absolute ``tolerance`` (0.1); ``phi`` (1.0); ``strategy`` (``bo``, the
    default: Bayesian optimisation, see :mod:`efficientnet.search.bayesopt`; ``grid``, ``random``, ``evolution`` or
    ``predictor``); ``n_init`` (space-filling proposals before bo's first model; default half the number of
    features, 4 to 8); ``population_size`` (20) and ``sample_size`` (5) for evolution;
    ``seed``; ``optimize_mode`` (``maximize``, the default, or ``minimize``); ``base`` (``lite0`` or ``b0``, the
    pretrained weights' family, or any preset or spec string, e.g. a narrow base for quick runs); ``base_resolution`` (input size before gamma scaling; default the base's 224);
    ``num_classes`` (for the profiled costs; 1000); budgets ``max_params``, ``max_macs``, ``max_model_size_mb``,
    ``max_peak_memory_mb`` and ``max_latency_ms`` (measured on this machine's CPU; slow, off by default).

    Strategy ``predictor`` (a surrogate model picks evolution's children): ``pool_size`` (200), ``explore`` (0.2),
    ``warmup`` (random trials before the first fit). Multi-objective: ``objectives`` (``[accuracy]``, or accuracy
    with ``latency_ms``, ``macs`` and/or ``params``), ``multi_objective`` (``pareto``: NSGA-II rank and crowding pick
    the parents, and bo models it; ``weighted``: MnasNet's reward ``acc · (cost / target) ** reward_exponent`` with
    ``target_latency_ms`` or ``target_macs``; ``reward_exponent`` -0.07). Proxy training: ``proxy_subset``,
    ``proxy_epochs``, ``proxy_trials``, ``promote_top`` (3) and ``full_epochs`` (see :mod:`efficientnet.search.proxy`).
    Budgets are checked on closed-form costs; ``profiler`` (a ``(spec, num_classes) -> Profile``) replaces the
    meta-device profiler they are cross-checked against (for tests and benchmarks).

    Early-stopped trials: ``learn_from_stopped`` (True) has NNI's dispatcher hand the tuner the last intermediate
    result of a trial that an assessor stopped (NNI 3.0's config cannot ask for it; see
    :func:`~efficientnet.nni_dispatcher.hear_stopped_trials`). Such a result is a partial one, see
    :mod:`efficientnet.search.fidelity`, and the architecture may be proposed once more, to be trained to the end.
    With False, a stopped trial counts as a failed one, as in plain NNI 3.0.

    Failing trials: ``stop_after_failures`` (3): when that many trials fail, before any succeeds, with the same error
    line, the experiment stops with that line (0 or null: never). ``failure_reader`` (a ``parameter_id -> (trial id,
    status, error line) | None``) replaces reading the trial's stderr through NNI's REST API (tests).

    An unknown classArg is an error naming the closest known one. :meth:`check_experiment` runs every check of the
    classArgs and the search space before an experiment starts (``python -m efficientnet create`` calls it).
    """

    def __init__(
        self,
        product: float = DEFAULT_PRODUCT,
        tolerance: float = DEFAULT_TOLERANCE,
        phi: float = 1.0,
        strategy: str = "bo",
        n_init: int | None = None,
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
        pool_size: int = 200,
        explore: float = 0.2,
        warmup: int | None = None,
        objectives: list[str] | None = None,
        multi_objective: str | None = None,
        target_latency_ms: float | None = None,
        target_macs: float | None = None,
        reward_exponent: float = -0.07,
        proxy_subset: float | None = None,
        proxy_epochs: int | None = None,
        proxy_trials: int | None = None,
        promote_top: int | None = None,
        full_epochs: int | None = None,
        learn_from_stopped: bool = True,
        stop_after_failures: int | None = 3,
        profiler: Callable[[ArchSpec, int], Profile] | None = None,
        failure_reader: Callable[[int], tuple[str, str, str] | None] | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise ValueError(unknown_class_args(unknown, class_arg_names(EfficientNetTuner.__init__), "the tuner"))
        self.constraint = CompoundConstraint(float(product), float(tolerance))
        if not isinstance(phi, (int, float)) or phi < 0:
            raise ValueError(f"classArg phi must be a number >= 0, got {phi!r}")
        self.phi = float(phi)
        if strategy not in STRATEGIES:
            raise ValueError(f"classArg strategy {strategy!r} is unknown: use one of {', '.join(STRATEGIES)}")
        self.strategy_name = strategy
        self.strategy_options: dict[str, Any] = {"population_size": int(population_size), "sample_size": int(sample_size)}
        if strategy == "predictor":
            self.strategy_options.update(pool_size=pool_size, explore=explore, warmup=warmup)
        if n_init is not None:
            if strategy != "bo":
                raise ValueError(f"classArg n_init is for strategy bo, not {strategy!r}: remove it or use strategy bo")
            self.strategy_options["n_init"] = positive_int("n_init", n_init)
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
        self.strategy_options["num_classes"] = num_classes
        self.objectives = MultiObjective.from_class_args(
            objectives, multi_objective, target_latency_ms, target_macs, reward_exponent
        )
        if self.objectives.mode != "single" and self.optimize_mode is not OptimizeMode.Maximize:
            raise ValueError("classArg objectives: accuracy is maximised; use optimize_mode maximize")
        if self.objectives.mode == "pareto":
            self.strategy_options["fitness"] = self._pareto_fitness
        self.proxy = ProxySchedule.from_class_args(proxy_subset, proxy_epochs, proxy_trials, promote_top, full_epochs)
        self.budgets = Budgets(max_params, max_macs, max_model_size_mb, max_peak_memory_mb, max_latency_ms)
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31))
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self._profiler = profiler
        if not isinstance(learn_from_stopped, bool):
            raise ValueError(f"classArg learn_from_stopped must be true or false, got {learn_from_stopped!r}")
        self.first_failures = FirstFailures(0 if stop_after_failures is None
                                            else positive_int("stop_after_failures", stop_after_failures, minimum=0))
        self._failure_reader = failure_reader or (trial_error if in_dispatcher() else (lambda parameter_id: None))
        # inside NNI's dispatcher: NNI hands over an assessor-stopped trial's last intermediate result, and an error
        # in the tuner ends the experiment with its line instead of leaving it RUNNING with a dead tuner
        self.hears_stopped_trials = learn_from_stopped and hear_stopped_trials()
        self.reports_errors = report_errors()
        if in_dispatcher() and not guarded():
            _logger.warning("NNI's manager runs without this project's fixes (started by plain nnictl): concurrent "
                            "trials may train each other's proposals and any host that reaches its port can read "
                            "your files; start experiments with: python -m efficientnet create --config config.yml")
        self.space: CandidateSpace | None = None
        self.checker: FeasibilityChecker | None = None
        self.strategy = None
        self._used: set[Candidate] = set()                   # proposed, imported or over budget: never proposed again
        self._second_chance: set[Candidate] = set()          # ... except once more, after an early stop
        self._had_second_chance: set[Candidate] = set()
        self._by_id: dict[int, tuple[Candidate, str]] = {}    # parameter id -> (candidate, training budget)
        self._proposals: dict[int, Proposal] = {}             # parameter id -> proposal (for its profiled costs)
        # successful results per training budget, as scores the strategy ranks (higher is better); proxy and full
        # results are never mixed: the strategy only ever hears results of its own budget
        self._results: dict[tuple[Candidate, str], float] = {}
        self._failed: set[tuple[Candidate, str]] = set()
        # early-stopped trials (their last intermediate result, handed over as final): raw score before capping
        self._partial: dict[tuple[Candidate, str], float] = {}
        self._costs: dict[Candidate, tuple[float, ...]] = {}   # observed cost objectives (multi-objective)
        self._ms_per_mac: list[float] = []                     # observed latency per closed-form MAC
        self._running: set[int] = set()                        # parameter ids proposed, not ended yet
        self._ended = False                                    # the experiment was ended with an error
        self.strategy_budget = self.proxy.next_budget()
        _logger.info("EfficientNetTuner: strategy %s, seed %d, %s, budgets %s, objectives %s (%s), stopped trials "
                     "%s%s", strategy, self.seed, self.constraint, self.budgets.active() or "none",
                     list(self.objectives.names), self.objectives.mode,
                     "heard (partial results)" if self.hears_stopped_trials else "not heard",
                     f", proxy {self.proxy.budget(PROXY)} for {self.proxy.trials} trials, top "
                     f"{self.proxy.promote_top} promoted" if self.proxy.enabled else "")

    @classmethod
    def check_experiment(cls, class_args: Mapping[str, Any], search_space: Mapping[str, Any],
                         profiler: Callable[[ArchSpec, int], Profile] | None = None) -> str:
        """Every check the tuner makes of its classArgs and search space, before an experiment starts: the tuner is
        built with ``class_args`` (and ``profiler``) and given ``search_space``, as NNI's dispatcher will. Raises
        ``ValueError`` (or ``TypeError``) with one line; returns a one-line summary."""
        tuner = cls(**dict(class_args), profiler=profiler)
        tuner.update_search_space(search_space)
        assert tuner.space is not None
        return (f"tuner {cls.__name__} ({tuner.strategy_name}): {tuner.space.size} candidates, "
                f"budgets {tuner.budgets.active() or 'none'}")

    # ------------------------------------------------------------------------------------------ search space
    def update_search_space(self, search_space: Mapping[str, Any]) -> None:
        """Validate the search space, precompute the feasible grid and check that the budgets leave something."""
        parsed = parse_search_space(search_space, self.base)
        space = CandidateSpace(parsed, self.constraint, self.base, self.phi, self.base_resolution)
        checker = FeasibilityChecker(space, self.budgets, self.num_classes, self._profiler)
        checker.assert_feasible()
        self.space, self.checker = space, checker
        self._new_strategy(self.strategy_budget)  # a new search space keeps what was learnt in it
        _logger.info(
            "search space: %d coefficient points meet the constraint, %d block-choice combinations, "
            "%d candidates, hyperparameters %s",
            len(space.points), space.choice_count, space.size, sorted(parsed.hyperparameters) or "none",
        )

    def _new_strategy(self, budget: str) -> None:
        """A fresh strategy for ``budget``, told every result of that budget (and only those)."""
        assert self.space is not None
        self.strategy = make_strategy(self.strategy_name, self.space, self.rng, self._is_free, **self.strategy_options)
        self.strategy_budget = budget
        for (candidate, b), score in self._results.items():
            if b == budget and candidate in self.space:
                self.strategy.tell(candidate, score, (candidate, b) in self._partial)


    def _is_free(self, candidate: Candidate) -> bool:
        """Not used yet, and within the budgets by the closed forms (strategies skip what could not be proposed)."""
        return ((candidate not in self._used or candidate in self._second_chance)
                and (self.checker is None or self.checker.fits_estimate(candidate)))

    def _pareto_fitness(self, members: Any) -> list[float]:
        """NSGA-II fitness of (candidate, accuracy score) members over (accuracy, cost objectives...)."""
        points = [(score, *self._cost_of(candidate)) for candidate, score in members]
        return nsga2_fitness(points, self.objectives.maximize)

    def _cost_of(self, candidate: Candidate) -> tuple[float, ...]:
        """Observed costs, else closed-form params/MACs, and latency scaled from MACs by the observed ms per MAC."""
        known = self._costs.get(candidate)
        if known is not None:
            return known
        assert self.space is not None
        est = estimate_costs(self.space.spec(candidate), self.num_classes)
        out = []
        for k, name in enumerate(self.objectives.costs):
            if name == "latency_ms":
                out.append(est.macs * (float(np.median(self._ms_per_mac)) if self._ms_per_mac else 1e-6))
            else:
                out.append(float(getattr(est, name)))
        return tuple(out)

    # ------------------------------------------------------------------------------------------ proposals
    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        """The next proposal; ``nni.NoMoreTrialError`` once every candidate has been used."""
        if self.space is None or self.strategy is None or self.checker is None:
            raise RuntimeError("update_search_space must be called before generate_parameters")
        if self.first_failures.stopped:
            raise nni.NoMoreTrialError(self.first_failures.stopped)
        budget = self.proxy.next_budget()
        if budget != self.strategy_budget:  # the proxy phase is over: search afresh on full-budget results only
            _logger.info("proxy phase over after %d trials: promoting the best %d, full budget from now on",
                         self.proxy.proposed_proxy, self.proxy.promote_top)
            self._new_strategy(budget)
        for candidate in self.proxy.promotions():
            self.proxy.promoted.add(candidate)
            prof, _ = self.checker.check(candidate)
            if prof is not None:
                _logger.info("promoting %s (proxy score %.4g) to the full budget", candidate,
                             self.proxy.results[PROXY][candidate])
                return self._register(parameter_id, candidate, FULL, prof)
        while True:
            if len(self._used) >= self.space.size and not self._second_chance:
                raise nni.NoMoreTrialError("every candidate of the search space has been proposed or is over budget")
            candidate = self.strategy.ask()
            if candidate is None:
                raise nni.NoMoreTrialError("the search strategy has no candidate left")
            if candidate in self._second_chance:  # a stopped trial's architecture, trained to the end this time
                self._second_chance.discard(candidate)
                self._had_second_chance.add(candidate)
                prof, _ = self.checker.check(candidate)
                if prof is not None:
                    _logger.info("second chance for %s, stopped early before", candidate)
                    return self._register(parameter_id, candidate, budget, prof)
                continue
            if candidate in self._used:  # a strategy should not do this; never propose twice anyway
                _logger.debug("strategy asked for a used candidate %s", candidate)
                continue
            self._used.add(candidate)
            prof, broken = self.checker.check(candidate)
            if prof is None:
                _logger.debug("over budget %s: %s", candidate, broken)
                self.strategy.tell(candidate, None)  # never trained: no result will come
                continue
            if budget == PROXY:
                self.proxy.proposed_proxy += 1
            return self._register(parameter_id, candidate, budget, prof)

    def _register(self, parameter_id: int, candidate: Candidate, budget: str, prof: Profile) -> dict[str, Any]:
        """File the proposal under ``parameter_id``; NNI's flat dict of it."""
        assert self.space is not None
        if not candidate.hyper:
            candidate = candidate.with_hyper(self.space.parsed.sample_hyperparameters(self.rng))
        self._by_id[parameter_id] = (candidate, budget)
        self._running.add(parameter_id)
        costs = {"params": prof.params, "macs": prof.macs, "model_size_mb": round(prof.model_size_mb, 3),
                 "peak_memory_mb": round(prof.peak_memory_mb, 3)}
        if prof.latency_ms is not None:
            costs["latency_ms"] = round(prof.latency_ms, 3)
        proposal = replace(self.space.proposal(candidate), costs=costs, budget=self.proxy.budget(budget))
        self._proposals[parameter_id] = proposal
        return proposal.to_parameters()

    # ------------------------------------------------------------------------------------------ results
    def _score(self, value: Any) -> float:
        if isinstance(value, str):
            value = json.loads(value)
        reward = float(extract_scalar_reward(value))
        return reward if self.optimize_mode is OptimizeMode.Maximize else -reward

    def _candidate_of(self, parameter_id: int | None, proposal: Proposal | None) -> tuple[Candidate, str] | None:
        known = self._by_id.get(parameter_id) if parameter_id is not None else None
        if known is None and self.space is not None and proposal is not None:
            candidate = self.space.candidate_of(proposal)
            known = None if candidate is None else (candidate, proposal.budget_name)
        return known

    def _record(self, candidate: Candidate, budget: str, value: Any, proposal: Proposal | None,
                partial: bool = False) -> None:
        """Turn a final result into the strategy's score (MnasNet's reward in weighted mode) and file it under its
        budget; the strategy hears it only when it searches that budget. A ``partial`` result (the last intermediate
        result of an early-stopped trial) is capped into [lowest, median] of the full results of its budget, see
        :mod:`efficientnet.search.fidelity`."""
        score = self._score(value)
        if isinstance(value, str):
            value = json.loads(value)
        if self.objectives.mode != "single":
            costs = self.objectives.cost_values(value if isinstance(value, Mapping) else None,
                                                proposal.costs if proposal is not None else None)
            if costs is not None:
                self._costs[candidate] = costs
                if "latency_ms" in self.objectives.costs and self.space is not None:
                    macs = estimate_costs(self.space.spec(candidate), self.num_classes).macs
                    self._ms_per_mac.append(costs[self.objectives.costs.index("latency_ms")] / max(macs, 1))
            elif self.objectives.mode == "weighted":
                _logger.warning("result of %s has no %s: its plain accuracy is used", candidate, self.objectives.costs)
            score = self.objectives.scalar(score, costs)
        self._used.add(candidate)
        key = (candidate, budget)
        if partial and key in self._results and key not in self._partial:
            # stopped at its last epoch while its final result was on its way, and the final one came first
            _logger.info("partial result of %s ignored: its full result is known", candidate)
            return
        if partial:
            _logger.info("partial result %.4g for %s: its trial was stopped early", score, candidate)
            self._partial[key] = score
            score = partial_score(score, (v for k, v in self._results.items()
                                          if k[1] == budget and k not in self._partial))
        else:
            self._partial.pop(key, None)
        self._store(key, score, partial)

    def _store(self, key: tuple[Candidate, str], score: float, partial: bool = False) -> None:
        """File ``score`` under (candidate, budget) and tell the strategy when it searches that budget."""
        self._results[key] = score
        self.proxy.record(*key, score)
        if key[1] == self.strategy_budget and self.strategy is not None:
            self.strategy.tell(key[0], score, partial)

    def receive_trial_result(self, parameter_id: int, parameters: Any, value: Any, **kwargs: Any) -> None:
        """Record a final result (a number, or a dict with ``default``); results may arrive in any order. A result
        shaped like an intermediate one is an early-stopped trial's (see :mod:`efficientnet.search.fidelity`)."""
        proposal = self._proposals.get(parameter_id) or _read_proposal(parameters)
        known = self._candidate_of(parameter_id, proposal)
        if known is None or self.strategy is None:
            _logger.warning("result for unknown parameters %s ignored", parameter_id)
            return
        self._score(value)  # a result without a usable number is an error before anything is recorded
        if known in self._failed:
            return
        self._record(*known, value, proposal, partial=is_partial_result(value))

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        """A failed (or killed) trial's architecture is never used as a parent (within its budget). A trial stopped
        by the assessor after its last intermediate result was handed over keeps that result as a partial one; a
        trial that succeeds after an intermediate-shaped result keeps it as a full one."""
        self._running.discard(parameter_id)
        self._trial_end(parameter_id, success)
        self._watch_failures(parameter_id, success)

    def _trial_end(self, parameter_id: int, success: bool) -> None:
        known = self._by_id.get(parameter_id)
        if known is None or self.strategy is None:
            return
        if known in self._partial:
            if success:  # its final result had the shape of an intermediate one: a full result after all
                self._store(known, self._partial.pop(known))
            else:
                _logger.info("trial of %s stopped early: its last intermediate result is kept as a partial one",
                             known[0])
                if known[0] not in self._had_second_chance and known[1] == self.strategy_budget:
                    self._second_chance.add(known[0])
                    self.strategy.tell(known[0], self._results[known], partial=True)  # the strategy may propose it again
            return
        if success:
            return
        self._failed.add(known)
        self._results.pop(known, None)
        self.proxy.record(*known, None)
        if known[1] == self.strategy_budget:
            self.strategy.tell(known[0], None)

    def _watch_failures(self, parameter_id: int, success: bool) -> None:
        """Stop the search when the first trials all fail with the same error (see :class:`FirstFailures`); once
        the trials still running have ended too, end the experiment with that error."""
        if self.first_failures.watching:
            trial = None if success else self._failure_reader(parameter_id)
            if trial is None or trial[1] == "FAILED":  # not one the assessor or the user stopped
                stop = self.first_failures.observe(success, trial[2] if trial else None, trial[0] if trial else None)
                if stop:
                    _logger.error("%s (no more trials; %d still running)", stop, len(self._running))
        if self.first_failures.stopped and not self._running and not self._ended:
            self._ended = True
            raise ExperimentError(self.first_failures.stopped)  # NNI's manager shows it as the experiment's error

    def import_data(self, data: Any) -> None:
        """Replay finished trials (``nnictl resume`` / ``experiment import``): ``[{"parameter", "value"}, ...]``."""
        if self.space is None or self.strategy is None:
            raise RuntimeError("update_search_space must be called before import_data")
        if isinstance(data, str):
            data = json.loads(data)
        imported = skipped = mismatched = 0
        for record in data:
            if isinstance(record, str):
                record = json.loads(record)
            parameters = record.get("parameter")
            proposal = _read_proposal(json.loads(parameters) if isinstance(parameters, str) else parameters)
            if proposal is not None and not result_matches(proposal, record.get("value")):
                mismatched += 1  # NNI recorded it with another trial's proposal: it would teach a wrong pair
                continue
            known = self._candidate_of(None, proposal)
            try:
                self._score(record.get("value"))
            except (RuntimeError, TypeError, ValueError):
                known = None
            if known is None:
                skipped += 1
                continue
            candidate, budget = known
            if budget == PROXY:
                self.proxy.proposed_proxy += 1
            elif self.proxy.enabled and (candidate, PROXY) in self._results:
                self.proxy.promoted.add(candidate)
            self._record(candidate, budget, record.get("value"), proposal,
                         partial=is_partial_result(record.get("value")))
            imported += 1
        _logger.info("imported %d trials (%d skipped: outside the search space or without a numeric value)",
                     imported, skipped)
        if mismatched:
            _logger.warning("%d imported trials were left out: their result names another architecture than the "
                            "proposal NNI recorded for them (an experiment run by plain nnictl with concurrent "
                            "trials)", mismatched)


def _read_proposal(parameters: Any) -> Proposal | None:
    """The proposal in a dict NNI handed over (an imported trial's, or one this tuner did not make); None when it is
    not one (or its ``arch`` does not parse)."""
    if not isinstance(parameters, Mapping):
        return None
    try:
        return Proposal.from_parameters(parameters)
    except SpecError:
        return None


def result_matches(proposal: Proposal, value: Any) -> bool:
    """Whether a final result and the proposal NNI recorded beside it describe one architecture: the trial echoes
    the ``arch`` it trained in its final result (a result without one cannot be checked and is taken as it is)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return True
    trained = value.get("arch") if isinstance(value, Mapping) else None
    return trained is None or proposal.spec is None or trained == str(proposal.spec)


class FixedProductTuner(EfficientNetTuner):
    """The legacy project's tuner: a grid over the alpha/beta/gamma points meeting alpha·beta²·gamma² ≈ ``product``.

    It takes the same classArgs as :class:`EfficientNetTuner`, with ``strategy`` defaulting to ``grid`` and the base
    to ``b0``, so ``classArgs: {product: 2}`` works unchanged.
    """

    def __init__(self, product: float = DEFAULT_PRODUCT, strategy: str = "grid", base: str = "b0", **kwargs: Any):
        super().__init__(product=product, strategy=strategy, base=base, **kwargs)
