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
by the others) and, with proxy training, its budget. ``FixedProductTuner`` keeps the legacy project's
``classArgs: {product: 2}`` working: a grid over the alpha/beta/gamma points that meet the constraint.

What the tuner knows is one :class:`~efficientnet.search.ledger.Ledger` (a record per candidate and budget); its
settings are one :class:`~efficientnet.search.options.TunerOptions`; this module is what NNI calls.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Mapping

import nni
import numpy as np
from nni.tuner import Tuner
from nni.utils import extract_scalar_reward

from efficientnet.nni_dispatcher import (ExperimentError, guarded, hear_stopped_trials, in_dispatcher, report_errors,
                                         stop_promptly, trial_error)
from efficientnet.proposal import Proposal
from efficientnet.search.budgets import FeasibilityChecker
from efficientnet.search.candidates import Candidate, CandidateSpace
from efficientnet.search.constraint import DEFAULT_PRODUCT
from efficientnet.search.cost_model import TrainingCostModel, observed_cost
from efficientnet.search.costs import estimate_costs
from efficientnet.search.failures import FirstFailures
from efficientnet.search.fidelity import is_partial_result, partial_epoch, partial_score, result_mapping
from efficientnet.search.halving import rung_hint
from efficientnet.search.ledger import FAILED, OVER_BUDGET, PARTIAL, SCORED, Ledger, Record
from efficientnet.search.options import TunerOptions
from efficientnet.search.pareto import nsga2_fitness
from efficientnet.search.proxy import FULL, PROXY
from efficientnet.search.strategy_table import make_strategy
from efficientnet.spec import ArchSpec, SpecError

if TYPE_CHECKING:
    from efficientnet.profiler import Profile

__all__ = ["EfficientNetTuner", "FixedProductTuner"]

_logger = logging.getLogger(__name__)


class EfficientNetTuner(Tuner):
    """Proposes EfficientNets meeting alpha·beta²·gamma² ≈ ``product`` and every hardware budget.

    classArgs: ``product`` (2.0) and absolute ``tolerance`` (0.1); ``phi`` (1.0); ``strategy`` (``bo``, the
    default: Bayesian optimisation, see :mod:`efficientnet.search.bayesopt`; ``grid``, ``random``, ``evolution`` or
    ``predictor``); ``n_init`` (space-filling proposals before bo's first model; default half the number of
    features, 4 to 8); ``population_size`` (20) and ``sample_size`` (5) for evolution; ``seed``; ``optimize_mode``
    (``maximize``, the default, or ``minimize``); ``base`` (``lite0`` or ``b0``, the pretrained weights' family, or
    any preset or spec string, e.g. a narrow base for quick runs); ``base_resolution`` (input size before gamma
    scaling; default the base's 224); ``num_classes`` (for the profiled costs; 1000); budgets ``max_params``,
    ``max_macs``, ``max_model_size_mb``, ``max_peak_memory_mb`` and ``max_latency_ms`` (measured on this machine's
    CPU; slow, off by default); ``latency_table`` (a file from ``python -m efficientnet latency-table``: then
    ``max_latency_ms`` is the sum of its per-layer latencies, measured on the target device, not a measurement).

    Strategy ``predictor`` (a surrogate model picks evolution's children): ``pool_size`` (200), ``explore`` (0.2),
    ``warmup`` (random trials before the first fit). Multi-objective: ``objectives`` (``[accuracy]``, or accuracy
    with ``latency_ms``, ``macs`` and/or ``params``), ``multi_objective`` (``pareto``: NSGA-II rank and crowding pick
    the parents, and bo models it; ``weighted``: MnasNet's reward ``acc · (cost / target) ** reward_exponent`` with
    ``target_latency_ms`` or ``target_macs``; ``reward_exponent`` -0.07). Proxy training: ``proxy_subset``,
    ``proxy_epochs``, ``proxy_trials``, ``promote_top`` (3) and ``full_epochs`` (see :mod:`efficientnet.search.proxy`).
    Successive halving over epochs (ASHA; promotions continue the lower rung's checkpoint): ``min_epochs`` with
    ``full_epochs`` and ``eta`` (3), see :mod:`efficientnet.search.halving`. Cost: ``cost_aware`` (True: bo ranks by
    expected improvement per predicted second, see :mod:`efficientnet.search.cost_model`) and ``startup_s`` (5.0,
    a trial's fixed start-up in seconds).

    Early-stopped trials: ``learn_from_stopped`` (True) has NNI's dispatcher hand the tuner the last intermediate
    result of a trial that an assessor stopped (NNI 3.0's config cannot ask for it; see
    :func:`~efficientnet.nni_dispatcher.hear_stopped_trials`). Such a result is a partial one, see
    :mod:`efficientnet.search.fidelity`, and the architecture may be proposed once more, to be trained to the end:
    that trial continues the stopped one's checkpoint, with its hyperparameters.
    With False, a stopped trial counts as a failed one, as in plain NNI 3.0. Failing trials: ``stop_after_failures``
    (3): when that many trials fail, before any succeeds, with the same error line, the experiment stops with that
    line (0 or null: never).

    An unknown classArg is an error naming the closest known one. :meth:`check_experiment` runs every check of the
    classArgs and the search space before an experiment starts (``python -m efficientnet create`` calls it).
    Arguments for code, not configs: ``profiler`` (a ``(spec, num_classes) -> Profile``) replaces the meta-device
    profiler that the closed-form budget checks are cross-checked against; ``failure_reader`` (a ``parameter_id ->
    (trial id, status, error line) | None``) replaces reading a failed trial's stderr through NNI's REST API.
    """

    def __init__(self, profiler: Callable[[ArchSpec, int], Profile] | None = None,
                 failure_reader: Callable[[int], tuple[str, str, str] | None] | None = None,
                 **class_args: Any) -> None:
        self.options = options = TunerOptions.from_class_args(**class_args)
        self.rng = np.random.default_rng(options.seed)
        self.ledger = Ledger()
        self.first_failures = FirstFailures(options.stop_after_failures)
        self._profiler = profiler
        self._failure_reader = failure_reader or (trial_error if in_dispatcher() else (lambda parameter_id: None))
        self._ended = False  # the experiment was ended with an error
        # inside NNI's dispatcher: NNI hands over an assessor-stopped trial's last intermediate result, and an error
        # in the tuner ends the experiment with its line instead of leaving it RUNNING with a dead tuner, and a stop
        # ends the dispatcher at once (no 3 s poll of NNI's command workers, no teardown of torch)
        self.hears_stopped_trials = options.learn_from_stopped and hear_stopped_trials()
        self.reports_errors = report_errors()
        self.stops_promptly = stop_promptly()
        if in_dispatcher() and not guarded():
            _logger.warning("NNI's manager runs without this project's fixes (started by plain nnictl): concurrent "
                            "trials may train each other's proposals, any host that reaches its port can read your "
                            "files, and on GPUs a trial that asks for every GPU of the machine never starts while "
                            "one that waits for a GPU stalls the manager; start experiments with: python -m "
                            "efficientnet create --config config.yml")
        self.space: CandidateSpace | None = None
        self.checker: FeasibilityChecker | None = None
        self.strategy = None
        self.cost_model: TrainingCostModel | None = None
        self.strategy_budget = self._search_budget()
        proxy, halving = options.proxy, options.halving
        _logger.info("EfficientNetTuner: strategy %s, seed %d, %s, budgets %s, objectives %s (%s), stopped trials "
                     "%s%s%s", options.strategy, options.seed, options.constraint, options.budgets.active() or "none",
                     list(options.objectives.names), options.objectives.mode,
                     "heard (partial results)" if self.hears_stopped_trials else "not heard",
                     f", proxy {proxy.budget(PROXY)} for {proxy.trials} trials, top {proxy.promote_top} promoted"
                     if proxy.enabled else "",
                     f", successive halving over epochs {list(halving.rungs)} (eta {halving.eta}), promotions "
                     "continue their checkpoint" if halving.enabled else "")

    @classmethod
    def check_experiment(cls, class_args: Mapping[str, Any], search_space: Mapping[str, Any],
                         profiler: Callable[[ArchSpec, int], Profile] | None = None) -> str:
        """Every check the tuner makes of its classArgs and search space, before an experiment starts: the tuner is
        built with ``class_args`` (and ``profiler``) and given ``search_space``, as NNI's dispatcher will. Raises
        ``ValueError`` (or ``TypeError``) with one line; returns a one-line summary."""
        tuner = cls(**dict(class_args), profiler=profiler)
        tuner.update_search_space(search_space)
        assert tuner.space is not None
        return (f"tuner {cls.__name__} ({tuner.options.strategy}): {tuner.space.size} candidates, "
                f"budgets {tuner.options.budgets.active() or 'none'}")

    # ------------------------------------------------------------------------------------------ search space
    def update_search_space(self, search_space: Mapping[str, Any]) -> None:
        """Validate the search space, precompute the feasible grid and check that the budgets leave something."""
        o = self.options
        space = o.candidate_space(search_space)
        checker = FeasibilityChecker(space, o.budgets, o.num_classes, self._profiler)
        checker.assert_feasible()
        self.space, self.checker = space, checker
        if o.cost_aware and o.strategy == "bo":
            self.cost_model = TrainingCostModel(space, o.startup_s, o.num_classes, o.seed)
        self._new_strategy(self.strategy_budget)  # a new search space keeps what was learnt in it
        _logger.info(
            "search space: %d coefficient points meet the constraint, %d block-choice combinations, "
            "%d candidates, hyperparameters %s",
            len(space.points), space.choice_count, space.size, sorted(space.parsed.hyperparameters) or "none",
        )

    def _new_strategy(self, budget: str) -> None:
        """A fresh strategy for ``budget``, told every result of that budget (and only those)."""
        assert self.space is not None
        options = dict(self.options.strategy_options)
        if self.options.objectives.mode == "pareto":
            options["fitness"] = self._pareto_fitness
        if self.cost_model is not None:
            options["cost"] = self._trial_seconds
        self.strategy = make_strategy(self.options.strategy, self.space, self.rng, self._is_free, **options)
        self.strategy_budget = budget
        for record in self.ledger.heard(budget):
            if record.candidate in self.space:
                self.strategy.tell(record.candidate, record.score, record.state == PARTIAL)
        for record in self.ledger.records.values():
            if record.budget != budget and record.candidate in self.space:
                self._hint(record)

    def _new_budget(self) -> str:
        """The budget of the next new candidate: successive halving's first rung, else the proxy schedule's."""
        halving = self.options.halving
        return halving.first if halving.enabled else self.options.proxy.next_budget(self.ledger)

    def _search_budget(self) -> str:
        """The budget whose results the strategy models: the full one under successive halving (lower rungs are
        hints, see :meth:`_hint`), else the proxy schedule's current one."""
        return FULL if self.options.halving.enabled else self.options.proxy.next_budget(self.ledger)

    def _budget(self, name: str, continue_from: str | None = None) -> Any:
        """The :class:`~efficientnet.proposal.Budget` a proposal of budget ``name`` carries (or None)."""
        halving = self.options.halving
        schedule = halving if halving.enabled else self.options.proxy
        return schedule.budget(name, continue_from)

    def _trial_seconds(self, features: np.ndarray, indices: np.ndarray | None = None) -> np.ndarray | None:
        """Predicted seconds of the trials of candidates (their architecture features, and their indices in the
        space when known): bo's cost, None until a trial's seconds are known. A new candidate's trial trains its
        budget's epochs; a second chance continues its stopped trial's checkpoint and trains only the epochs after
        the one that trial reported last."""
        model = self.cost_model
        assert model is not None and self.space is not None
        seconds = model.trial_seconds(features, self._epochs_of(self._new_budget()))
        if seconds is None or indices is None:
            return seconds
        for record in self.ledger.granted():
            if record.stopped_at is None or not record.trial or record.candidate not in self.space:
                continue  # no checkpoint to continue: the whole trial, as priced
            rows = indices == self.space.index(record.candidate)
            if rows.any():
                left = max(self._epochs_of(record.budget) - record.stopped_at, 0.0)
                seconds[rows] = model.trial_seconds(features[rows], left)
        return seconds

    def _epochs_of(self, budget: str) -> float:
        """The epochs a trial of ``budget`` ends at: the budget's, else the trials' usual length."""
        assert self.cost_model is not None
        given = self._budget(budget)
        return given.epochs if given is not None and given.epochs else self.cost_model.typical_epochs()

    def _is_free(self, candidate: Candidate) -> bool:
        """Not known yet and no twin of a known one (or granted a second chance), and within the budgets by the
        closed forms (strategies skip what could not be proposed)."""
        return ((not self._used(candidate) or self.ledger.free_again(candidate))
                and (self.checker is None or self.checker.fits_estimate(candidate)))

    def _used(self, candidate: Candidate) -> bool:
        """Known to the ledger, or a twin of a proposed or imported candidate (it builds the same network)."""
        assert self.space is not None
        return self.ledger.known(candidate) or self.ledger.has_twin(candidate, self.space.network(candidate))

    def _pareto_fitness(self, members: Any) -> list[float]:
        """NSGA-II fitness of (candidate, accuracy score) members over (accuracy, cost objectives...)."""
        points = [(score, *self._cost_of(candidate)) for candidate, score in members]
        return nsga2_fitness(points, self.options.objectives.maximize)

    def _cost_of(self, candidate: Candidate) -> tuple[float, ...]:
        """Observed costs, else closed-form params/MACs, and latency scaled from MACs by the observed ms per MAC."""
        known = self.ledger.costs.get(candidate)
        if known is not None:
            return known
        assert self.space is not None
        est = estimate_costs(self.space.spec(candidate), self.options.num_classes)
        ms_per_mac = self.ledger.ms_per_mac
        return tuple(est.macs * (float(np.median(ms_per_mac)) if ms_per_mac else 1e-6) if name == "latency_ms"
                     else float(getattr(est, name)) for name in self.options.objectives.costs)

    # ------------------------------------------------------------------------------------------ proposals
    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        """The next proposal; ``nni.NoMoreTrialError`` once every candidate has been used."""
        if self.space is None or self.strategy is None or self.checker is None:
            raise RuntimeError("update_search_space must be called before generate_parameters")
        if self.first_failures.stopped:
            raise nni.NoMoreTrialError(self.first_failures.stopped)
        proxy, ledger = self.options.proxy, self.ledger
        budget, search = self._new_budget(), self._search_budget()
        if search != self.strategy_budget:  # the proxy phase is over: search afresh on full-budget results only
            _logger.info("proxy phase over after %d trials: promoting the best %d, full budget from now on",
                         ledger.proposed(PROXY), proxy.promote_top)
            self._new_strategy(search)
        promotion = self._promote(parameter_id, top_only=True)
        if promotion is not None:
            return promotion
        for record in proxy.promotions(ledger):
            record.promoted = True
            prof, _ = self.checker.check(record.candidate)
            if prof is not None:
                _logger.info("promoting %s (proxy score %.4g) to the full budget", record.candidate, record.score)
                return self._register(parameter_id, record.candidate, FULL, prof)
        while True:
            if ledger.candidates() >= self.space.size and not ledger.second_chances():
                return self._promote_any(parameter_id, "every candidate of the search space has been proposed or is "
                                                       "over budget")
            candidate = self.strategy.ask()
            if candidate is None:
                return self._promote_any(parameter_id, "the search strategy has no candidate left (each network is "
                                                       "proposed once, however many grid points build it)")
            if ledger.free_again(candidate):  # a stopped trial's architecture, trained to the end this time
                stopped = ledger.spend_second_chance(candidate)
                prof, _ = self.checker.check(stopped.candidate)
                if prof is not None:
                    return self._second_chance(parameter_id, stopped, prof)
                continue
            if self._used(candidate):  # a strategy should not do this; never propose twice anyway
                _logger.debug("strategy asked for a used candidate %s", candidate)
                continue
            prof, broken = self.checker.check(candidate)
            if prof is None:
                _logger.debug("over budget %s: %s", candidate, broken)
                ledger.record(candidate, budget).state = OVER_BUDGET
                self.strategy.tell(candidate, None)  # never trained: no result will come
                continue
            return self._register(parameter_id, candidate, budget, prof)

    def _second_chance(self, parameter_id: int, stopped: Record, prof: Profile) -> dict[str, Any]:
        """Propose a stopped trial's architecture once more, with its hyperparameters and budget: the new trial
        continues the stopped one's checkpoint (rerun from epoch 0 with the same seed, it would repeat the stopped
        curve, and be stopped again where it was)."""
        _logger.info("second chance for %s, stopped early before%s", stopped.candidate,
                     f": continuing trial {stopped.trial}" if stopped.trial else "")
        return self._register(parameter_id, stopped.candidate, stopped.budget, prof, continue_from=stopped.trial)

    def _promote(self, parameter_id: int, top_only: bool) -> dict[str, Any] | None:
        """Successive halving's next promotion within the budgets, as NNI's dict (None: none is due); see
        :meth:`SuccessiveHalving.promotion`."""
        assert self.checker is not None
        halving = self.options.halving
        promoted = halving.promotion(self.ledger, top_only) if halving.enabled else None
        while promoted is not None:
            record, higher = promoted
            record.promoted = True
            prof, _ = self.checker.check(record.candidate)
            if prof is not None:
                _logger.info("promoting %s (%s score %.4g) to %s, continuing trial %s%s", record.candidate,
                             record.budget, record.score, higher, record.trial,
                             "" if top_only else " (no new candidate is left)")
                return self._register(parameter_id, record.candidate, higher, prof, continue_from=record.trial)
            promoted = halving.promotion(self.ledger, top_only)
        return None

    def _promote_any(self, parameter_id: int, why: str) -> dict[str, Any]:
        """No new candidate is left: promote the best result of a rung not promoted yet, whatever its rank; else
        ``NoMoreTrialError`` saying ``why``."""
        promotion = self._promote(parameter_id, top_only=False)
        if promotion is None:
            raise nni.NoMoreTrialError(why)
        return promotion

    def _register(self, parameter_id: int, candidate: Candidate, budget: str, prof: Profile,
                  continue_from: str | None = None) -> dict[str, Any]:
        """File the proposal under ``parameter_id``; NNI's flat dict of it."""
        assert self.space is not None
        if not candidate.hyper:
            candidate = candidate.with_hyper(self.space.parsed.sample_hyperparameters(self.rng))
        costs = {"params": prof.params, "macs": prof.macs, "model_size_mb": round(prof.model_size_mb, 3),
                 "peak_memory_mb": round(prof.peak_memory_mb, 3)}
        table = self.options.budgets.latency_table
        if table is not None:  # the target device's latency, from its table (the trial measures its own machine's)
            costs["predicted_latency_ms"] = round(table.predict(self.space.spec(candidate), self.options.num_classes),
                                                  3)
        elif prof.latency_ms is not None:
            costs["latency_ms"] = round(prof.latency_ms, 3)
        proposal = replace(self.space.proposal(candidate), costs=costs, budget=self._budget(budget, continue_from))
        self.ledger.propose(parameter_id, candidate, budget, proposal)
        self.ledger.builds(candidate, self.space.network(candidate))
        return proposal.to_parameters()

    # ------------------------------------------------------------------------------------------ results
    def _score(self, value: Any) -> float:
        if isinstance(value, str):
            value = json.loads(value)
        reward = float(extract_scalar_reward(value))
        return reward if self.options.maximize else -reward

    def _key_of(self, proposal: Proposal | None) -> tuple[Candidate, str] | None:
        """(candidate, budget) of a proposal this tuner did not make (an imported or customized trial's)."""
        candidate = self.space.candidate_of(proposal) if self.space is not None and proposal is not None else None
        return None if candidate is None else (candidate, proposal.budget_name)

    def receive_trial_result(self, parameter_id: int, parameters: Any, value: Any, **kwargs: Any) -> None:
        """Record a final result (a number, or a dict with ``default``); results may arrive in any order. A result
        shaped like an intermediate one is an early-stopped trial's (see :mod:`efficientnet.search.fidelity`)."""
        proposal = self.ledger.proposals.get(parameter_id) or _read_proposal(parameters)
        key = self.ledger.trials.get(parameter_id) or self._key_of(proposal)
        if key is None or self.strategy is None:
            _logger.warning("result for unknown parameters %s ignored", parameter_id)
            return
        self._score(value)  # a result without a usable number is an error before anything is recorded
        record = self.ledger.record(*key)
        if record.state != FAILED:
            partial = is_partial_result(value)
            record.trial = kwargs.get("trial_job_id") or record.trial  # whose checkpoint a continuation starts from
            if not partial:
                self._observe_cost(record, value)
            self._hear(record, value, proposal, partial=partial)

    def _observe_cost(self, record: Record, value: Any) -> None:
        """Teach the cost model the seconds a trial's result reports."""
        cost = observed_cost(result_mapping(value))
        if cost is not None and self.cost_model is not None:
            self.cost_model.observe(record.candidate, cost.epochs_trained, cost.seconds, cost.epochs)

    def _hear(self, record: Record, value: Any, proposal: Proposal | None, partial: bool = False) -> None:
        """Turn a final result into the strategy's score (MnasNet's reward in weighted mode) and file it; the strategy
        hears it only when it searches the record's budget. A ``partial`` result (the last intermediate result of an
        early-stopped trial) is capped into [lowest, median] of the full results of its budget, see
        :mod:`efficientnet.search.fidelity`."""
        score = self._score(value)
        objectives = self.options.objectives
        if objectives.mode != "single":
            costs = objectives.cost_values(result_mapping(value), proposal.costs if proposal is not None else None)
            if costs is not None:
                self.ledger.costs[record.candidate] = costs
                if "latency_ms" in objectives.costs and self.space is not None:
                    macs = estimate_costs(self.space.spec(record.candidate), self.options.num_classes).macs
                    self.ledger.ms_per_mac.append(costs[objectives.costs.index("latency_ms")] / max(macs, 1))
            elif objectives.mode == "weighted":
                _logger.warning("result of %s has no %s: its plain accuracy is used", record.candidate,
                                objectives.costs)
            score = objectives.scalar(score, costs)
        if partial and record.state == SCORED:
            # stopped at its last epoch while its final result was on its way, and the final one came first
            _logger.info("partial result of %s ignored: its full result is known", record.candidate)
            return
        if partial:
            _logger.info("partial result %.4g for %s: its trial was stopped early", score, record.candidate)
            record.state, record.raw, record.stopped_at = PARTIAL, score, partial_epoch(value)
            score = partial_score(score, self.ledger.full_scores(record.budget))
        else:
            record.state, record.raw = SCORED, None
        self._file(record, score, partial)

    def _file(self, record: Record, score: float, partial: bool = False) -> None:
        """``score`` becomes the record's, and the strategy hears it when it searches the record's budget."""
        record.score = score
        if record.budget == self.strategy_budget and self.strategy is not None:
            self.strategy.tell(record.candidate, score, partial)
        else:
            self._hint(record)

    def _hint(self, record: Record) -> None:
        """Successive halving: a lower rung's result tells the strategy, as a partial observation, how the
        candidate compares, until the candidate has a full-budget result (see :func:`rung_hint`)."""
        halving, ledger = self.options.halving, self.ledger
        if not halving.enabled or record.state != SCORED or self.strategy is None or record.budget == FULL:
            return
        full = ledger.records.get((record.candidate, FULL))
        if full is not None and full.heard:
            return
        hint = rung_hint(record.score, [r.score for r in ledger.heard(record.budget) if r.state == SCORED],
                         ledger.full_scores(FULL))
        if hint is not None:
            self.strategy.tell(record.candidate, hint, partial=True)

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        """A failed (or killed) trial's architecture is never used as a parent (within its budget). A trial stopped
        by the assessor after its last intermediate result was handed over keeps that result as a partial one; a
        trial that succeeds after an intermediate-shaped result keeps it as a full one."""
        self.ledger.running.discard(parameter_id)
        record = self.ledger.of_trial(parameter_id)
        if record is not None and self.strategy is not None:
            self._end(record, success)
        self._watch_failures(parameter_id, success)

    def _end(self, record: Record, success: bool) -> None:
        if record.state == PARTIAL:
            if success:  # its final result had the shape of an intermediate one: a full result after all
                record.state, score, record.raw = SCORED, record.raw, None
                self._file(record, score)
                return
            _logger.info("trial of %s stopped early: its last intermediate result is kept as a partial one",
                         record.candidate)
            if not record.second_chance and record.budget == self.strategy_budget:
                self.ledger.grant_second_chance(record)
                self.strategy.tell(record.candidate, record.score, partial=True)  # it may be proposed again
            return
        if success:
            return
        record.state, record.score = FAILED, None
        if record.budget == self.strategy_budget:
            self.strategy.tell(record.candidate, None)

    def _watch_failures(self, parameter_id: int, success: bool) -> None:
        """Stop the search when the first trials all fail with the same error (see :class:`FirstFailures`); once
        the trials still running have ended too, end the experiment with that error."""
        if self.first_failures.watching:
            trial = None if success else self._failure_reader(parameter_id)
            if trial is None or trial[1] == "FAILED":  # not one the assessor or the user stopped
                stop = self.first_failures.observe(success, trial[2] if trial else None, trial[0] if trial else None)
                if stop:
                    _logger.error("%s (no more trials; %d still running)", stop, len(self.ledger.running))
        if self.first_failures.stopped and not self.ledger.running and not self._ended:
            self._ended = True
            raise ExperimentError(self.first_failures.stopped)  # NNI's manager shows it as the experiment's error

    def import_data(self, data: Any) -> None:
        """Replay finished trials (``nnictl resume`` / ``experiment import``): ``[{"parameter", "value"}, ...]``."""
        if self.space is None or self.strategy is None:
            raise RuntimeError("update_search_space must be called before import_data")
        if isinstance(data, str):
            data = json.loads(data)
        imported = skipped = mismatched = 0
        for item in data:
            item = json.loads(item) if isinstance(item, str) else item
            parameters, value = item.get("parameter"), item.get("value")
            proposal = _read_proposal(json.loads(parameters) if isinstance(parameters, str) else parameters)
            if proposal is not None and not result_matches(proposal, value):
                mismatched += 1  # NNI recorded it with another trial's proposal: it would teach a wrong pair
                continue
            key = self._key_of(proposal)
            try:
                self._score(value)
            except (RuntimeError, TypeError, ValueError):
                key = None
            if key is None:
                skipped += 1
                continue
            candidate, budget = key
            proxy_record = self.ledger.records.get((candidate, PROXY))
            if budget == FULL and self.options.proxy.enabled and proxy_record is not None and proxy_record.heard:
                proxy_record.promoted = True
            record = self.ledger.record(candidate, budget)
            self.ledger.builds(candidate, self.space.network(candidate))
            if self.options.halving.enabled:
                self.options.halving.mark_promoted(self.ledger, record)
            self._hear(record, value, proposal, partial=is_partial_result(value))
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
    result = result_mapping(value)
    trained = result.get("arch") if result is not None else None
    return trained is None or proposal.spec is None or trained == str(proposal.spec)


class FixedProductTuner(EfficientNetTuner):
    """The legacy project's tuner: a grid over the alpha/beta/gamma points meeting alpha·beta²·gamma² ≈ ``product``:
    each network once (the legacy grid's 109 points build 65 networks on B0: later points that round to a network
    already trained are skipped).

    It takes the same classArgs as :class:`EfficientNetTuner`, with ``strategy`` defaulting to ``grid`` and the base
    to ``b0``, so ``classArgs: {product: 2}`` works unchanged.
    """

    def __init__(self, product: float = DEFAULT_PRODUCT, strategy: str = "grid", base: str = "b0", **kwargs: Any):
        super().__init__(product=product, strategy=strategy, base=base, **kwargs)
