"""Search cost: simulated seconds until the best model, against the strongest multi-fidelity baselines.

Run from the repository root (Optuna is a benchmark-only extra: ``pip install -e .[bench]``)::

    nice -n 10 python bench/search_cost.py                 # everything: 30 seeds, 24 problems, 32 to 58 minutes
    python bench/search_cost.py --seeds 10                  # about 10 minutes on 2 cores (docs/benchmarks/search_cost.md)
    python bench/search_cost.py --quick                     # 3 seeds, 3 objectives, concurrency 1 (about a minute)
    python bench/search_cost.py --seeds 5 --methods default,bo-halving,asha-random --spaces legacy --objectives smooth
    python bench/search_cost.py --seeds 10 --methods default,default-medianstop,default-curve   # with assessors

Seeds run in ``--jobs`` processes (default: 2, or 1 on a 1-core machine), one BLAS thread each, glibc's malloc keeping
freed memory (see :func:`_keep_freed_memory`). Most of the time goes to runs that never reach the target: they run to
the cap, and the model-based methods (``bo-halving``, NNI's BOHB, Optuna's TPE) fit a model over every trial so far on
each proposal.

:mod:`search_efficiency` counts trials; this benchmark counts *seconds*, so that methods which train some
architectures for fewer epochs (multi-fidelity) and methods which waste trials are compared on what a user waits for.

**Problems.** The search spaces of ``bench/search_efficiency.py``: ``legacy`` (``search_space_legacy.json``: 109
alpha/beta/gamma points on the constraint) and ``space`` (``search_space.json``: those × 48 block choices, plus ``lr``
and ``batch_size``); six objective families of ``bench/synthetic.py`` (all but ``noisy``, which is ``smooth`` with
observation noise, and every curve here is noisy; seed ``s`` draws member ``s``); concurrency 1 and 4
(``--concurrency``): 24 problems. Every trial trains an architecture for some epochs on a synthetic learning curve
(``learning_curve`` of ``bench/synthetic.py`` with ``curve_tau`` of ``bench/search_efficiency.py``: bigger networks
learn slower, so curves cross and an early epoch ranks architectures only roughly), reaching at the last of the
``--epochs`` (9) epochs the family's value (plus its per-epoch noise). One configuration has one curve per seed, the
same for every method. A trial reports the best accuracy of the epochs it has trained.

**Cost.** A trial costs ``startup_s + epochs_trained * epoch_s(arch)`` simulated seconds. ``epoch_s`` is proportional
to the architecture's MACs (``efficientnet.search.costs.estimate_costs(spec, 10).macs``), scaled so that the base
architecture (alpha = beta = gamma = 1) at the problem's resolution (64 px) takes ``--epoch-s`` (2.0) seconds; the
feasible architectures take 3.3 to 7.6 s per epoch. ``--startup-s`` (5.0) is the per-trial start-up: the order of a
one-epoch digits trial's start-up on the 2-core CPU (5.8 s measured once, on a loaded machine). An event queue runs ``concurrency`` workers: a free
worker asks the method for a trial, the trial ends after its cost, then the method is told.

**Measure.** Per seed, the target is the best *true* full-budget value among 100 random full-budget trials (an
independent draw, as ``search_efficiency`` does). A method's time is the simulated time at which its first
*full-budget* trial (``--epochs`` epochs) whose true value reaches the target completes; a lower-budget trial never
counts (the final pick is always a full-budget result). Runs are capped at the time 300 full-budget trials of the
average architecture take at that concurrency; ``>cap`` when not reached (counted as the cap in medians, so a ratio
with ``>`` is a lower bound). Each problem prints each method's median seconds over the seeds and its ratio to the
*best baseline*: the lowest median among ``random-full``, ``asha-random``, ``optuna-tpe-hyperband``,
``nni-hyperband`` and ``nni-bohb``. The last lines are the median over problems of that ratio for ``previous-default``
and ``bo-halving`` and, last, ``median ratio vs best baseline: X.XXx`` for ``default`` (below 1: faster than the best
baseline).

**Methods.**

* ``random-full``: a uniform random order of the feasible candidates (random hyperparameters), each trained fully.
* ``asha-random``: Optuna's ``RandomSampler`` with ``SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)``
  (asynchronous successive halving: rungs at 1, 3 and 9 epochs), told every epoch's accuracy; a pruned trial costs
  start-up + the epochs it ran. ``optuna-tpe-hyperband``: ``TPESampler`` with ``HyperbandPruner(min_resource=1,
  max_resource=9, reduction_factor=3)``. Both are given the constraint as :class:`search_efficiency.OptunaSession`
  gives it (each suggestion projected onto the nearest feasible grid point). A suggestion of a configuration trained
  before replays its known epochs for free (the pruner decides again) and continues from its checkpoint for the rest;
  after ``--free-asks`` (50) suggestions in a row answered that way, the run has converged and ends (once its running
  trials end).
* ``nni-hyperband`` (``R=9, eta=3``, NNI's default ``exec_mode: parallelism``) and ``nni-bohb`` (``min_budget=1,
  max_budget=9, eta=3``, defaults otherwise): NNI's advisors, driven in-process through the handlers NNI's dispatcher
  calls (initialize; request trial jobs, ``trialConcurrency`` at the start and one per ended trial; the final metric
  with ``sequence`` 0, as ``nni.report_final_result`` sends it; trial end), their ``send`` captured. As NNI runs them
  they are constraint-blind (an infeasible proposal costs a start-up and reports 0) and restart: every rung's trial
  trains ``TRIAL_BUDGET`` epochs from epoch 0. Two fixes make them run at all: NNI 3.0's ``is_created_in_previous_exp``
  compares their string parameter ids with an int (TypeError, microsoft/nni#5263), so it answers False here (no
  resumed experiment); and ConfigSpace 1.x dropped the ``q`` of ``UniformFloatHyperparameter`` that BOHB uses for
  ``quniform``, so BOHB gets those keys as ``uniform`` and each of its proposals is rounded onto the ``q`` grid (what
  ConfigSpace 0.x did). BOHB hears every final result at budget 0 (the ``sequence`` NNI sends), as in a real run.
  Three shortcuts change nothing but the benchmark's own run time: the advisors' ``nni.dump``/``nni.load`` are plain
  JSON; BOHB's truncated-normal draws are made by inverse CDF; its KDE's density at a point is computed for all
  dimensions at once (the same kernels; equal to statsmodels' to 1e-15).
* ``previous-default``: this tuner as it was before trials were priced (``bo``, ``cost_aware: false``): every
  trial trains the full budget.
* ``default``: this tuner with its default classArgs (``bo``, ``cost_aware: true``, ``startup_s``), what
  ``config.yml`` runs (less its assessor): every trial trains the full budget, and bo ranks by expected improvement
  per predicted second.
* ``default-medianstop`` (only when named in ``--methods``): ``default`` with the assessor ``config.yml`` ships,
  NNI's own ``MedianstopAssessor`` (``start_step`` 2) run in-process: after each epoch it is handed the trial's
  per-epoch accuracies, as NNI's dispatcher hands it the intermediate results; a trial it stops costs start-up + the
  epochs it ran, its last result reaches the tuner as NNI hands it over (``{"default", "loss", "top5", "f1",
  "epoch"}``, then the trial ends as not successful), and the tuner's second chance continues its checkpoint
  (reporting only the epochs it trains, as a real continuation does). ``default-curve``: the same with this
  project's ``CurveAssessor`` (``efficientnet/search/assessor.py``, its defaults).
* ``bo-halving``: ``default`` plus successive halving (classArgs ``full_epochs=9, min_epochs=1, eta=3``): a proposal
  carries ``epochs``, ``budget`` and, for a promotion, ``continue_from`` (the ``trial_job_id`` of the lower-rung trial
  whose checkpoint it continues, so it trains only the extra epochs). Every trial has a unique ``trial_job_id``; its
  result is ``{"default", "epochs", "epochs_trained", "train_seconds"}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import logging
import statistics
import sys
import time
import warnings
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Generator, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from efficientnet.search.costs import estimate_costs, estimated_profile  # noqa: E402
from efficientnet.spec import ArchSpec  # noqa: E402
from search_efficiency import OptunaSession, Problem, curve_tau, make_tuner, objective_for  # noqa: E402
from synthetic import CHOICE_KEYS, KINDS, learning_curve  # noqa: E402
from tuner import EfficientNetTuner  # noqa: E402

SPACE_FILES = {"legacy": "legacy", "space": "full"}  # this benchmark's names -> search_efficiency's SPACES keys
BASELINES = ("random-full", "asha-random", "optuna-tpe-hyperband", "nni-hyperband", "nni-bohb")
ASSESSED = ("default-medianstop", "default-curve")  # run when named in --methods
OURS = ("previous-default", "default", "bo-halving") + ASSESSED
ALL_METHODS = BASELINES + OURS
DEFAULT_OBJECTIVES = ("smooth", "multimodal", "interactions", "plateaus", "choices", "rugged")  # all but noisy
QUICK_OBJECTIVES = ("smooth", "multimodal", "rugged")
TARGET_TRIALS = 100  # the target: best of this many random full-budget trials
CAP_TRIALS = 300     # the cap: this many full-budget trials of the average architecture
FREE_ASKS = 50       # Optuna: cached answers in a row before a run has converged (--free-asks; see the doc)
ETA = 3

MEDIANSTOP_START = 2  # config.yml's start_step
Job = Generator[float, float, bool]  # yields delays (simulated seconds), returns whether it reached the target


# ----------------------------------------------------------------------------------------------- problems
@dataclasses.dataclass
class SpaceCosts:
    """Seconds per epoch of every architecture of one search space (``epoch_s`` proportional to MACs)."""

    epoch_s: dict[tuple, float]
    mean_epoch_s: float

    @classmethod
    def build(cls, problem: Problem, base_epoch_s: float) -> "SpaceCosts":
        tuner = make_tuner("grid", 0, problem.space)
        cs = tuner.space
        base = ArchSpec.from_compound(1.0, 1.0, 1.0, cs.phi, base=cs.base, base_resolution=cs.base_resolution)
        per_mac = base_epoch_s / estimate_costs(base, tuner.options.num_classes).macs
        seconds = [estimate_costs(ArchSpec.parse(a), tuner.options.num_classes).macs * per_mac
                   for a in problem.arch["arch"]]
        keys = [arch_key({k: v[i] for k, v in problem.arch.items()}) for i in range(problem.size)]
        return cls(dict(zip(keys, seconds)), float(np.mean(seconds)))


def arch_key(p: dict) -> tuple:
    """The architecture of a proposal: coefficients on the grid, and its block choices."""
    return (tuple(round(float(p[k]), 6) for k in ("alpha", "beta", "gamma"))
            + tuple(int(p[k]) for k in CHOICE_KEYS if k in p))


@dataclasses.dataclass
class Entry:
    """One configuration's training run: its true full-budget value, per-epoch accuracies and seconds per epoch."""

    true: float
    curve: np.ndarray
    epoch_s: float

    def best(self, epochs: int) -> float:
        return float(np.max(self.curve[:epochs]))


class Book:
    """One seed of one problem: the target, and one training run (learning curve) per configuration, the same for
    every method."""

    def __init__(self, problem: Problem, costs: SpaceCosts, seed: int, args: argparse.Namespace) -> None:
        self.problem, self.costs, self.seed = problem, costs, seed
        self.full, self.startup_s = args.epochs, args.startup_s
        self.target = problem.target(seed)
        self.entries: dict[tuple, Entry | None] = {}

    def clean(self, params: dict) -> dict:
        return {k: params[k] for k in self.problem.space if k in params}

    def entry(self, params: dict) -> Entry | None:
        """The run of these parameters (only the search space's keys are read); None when infeasible."""
        p = self.clean(params)
        key = self.problem.key(p)
        if key not in self.entries:
            epoch_s = self.costs.epoch_s.get(arch_key(p)) if self.problem.feasible(p) else None
            if epoch_s is None:
                self.entries[key] = None
            else:
                rng = np.random.default_rng([self.seed, 6_000_007, zlib.crc32(repr(key).encode())])
                observed = self.problem.objective.observe(p, rng)
                curve = learning_curve(observed, curve_tau(p, self.seed), self.full, rng)
                self.entries[key] = Entry(float(self.problem.objective.value(p)), curve, epoch_s)
        return self.entries[key]

    def hit(self, entry: Entry | None, epochs: int) -> bool:
        """A full-budget trial whose true value reaches the target."""
        return entry is not None and epochs >= self.full and entry.true >= self.target - 1e-9


# ----------------------------------------------------------------------------------------------- simulator
def simulate(method: "Method", concurrency: int, cap_s: float) -> float | None:
    """Simulated seconds until the first trial reaching the target completes (None: not within ``cap_s``)."""
    running: list[tuple[float, int, Job]] = []
    now, seq, free = 0.0, 0, concurrency
    while True:
        while free:
            job = method.ask()
            if job is None:
                break
            heapq.heappush(running, (now + next(job), seq, job))
            seq, free = seq + 1, free - 1
        if not running:
            return None  # the method has nothing more to run
        now, _, job = heapq.heappop(running)
        if now > cap_s:
            return None
        try:
            heapq.heappush(running, (now + job.send(now), seq, job))
            seq += 1
        except StopIteration as done:
            free += 1
            if done.value:
                return now


class Method:
    """ask() -> a job (a generator: yields the seconds to its next event, tells the method when it ends and
    returns whether it reached the target) or None when the method has nothing to run now."""

    def __init__(self, book: Book) -> None:
        self.book = book

    def ask(self) -> Job | None:
        raise NotImplementedError


class RandomFull(Method):
    def __init__(self, book: Book, seed: int) -> None:
        super().__init__(book)
        p = book.problem
        rng = np.random.default_rng([seed, 7_000_003])
        self.order: Iterator[int] = iter(rng.permutation(p.size))
        self.hyper = p.sample_hyper(rng, p.size)

    def ask(self) -> Job | None:
        i = next(self.order, None)
        if i is None:
            return None
        p = self.book.problem
        params = {k: v[i] for k, v in p.arch.items() if k != "arch"}
        params.update({k: v[i] for k, v in self.hyper.items()})
        return self._run(self.book.entry(params))

    def _run(self, entry: Entry) -> Job:
        yield self.book.startup_s + self.book.full * entry.epoch_s
        return self.book.hit(entry, self.book.full)


class OptunaPruned(Method):
    """Optuna with a pruner, given the constraint by projection (:class:`search_efficiency.OptunaSession`)."""

    def __init__(self, kind: str, book: Book, seed: int) -> None:
        import optuna

        super().__init__(book)
        self.session = OptunaSession("tpe", seed, book.problem)  # its projection onto the feasible grid
        full = book.full
        if kind == "asha-random":
            sampler = optuna.samplers.RandomSampler(seed=seed)
            pruner: Any = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA)
        else:
            sampler = optuna.samplers.TPESampler(seed=seed)
            pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=full, reduction_factor=ETA)
        # a fixed name: HyperbandPruner puts a trial in a bracket by a hash of the study's name (a uuid by default)
        self.session.study = self.study = optuna.create_study(study_name=f"search-cost-{seed}", direction="maximize",
                                                              sampler=sampler, pruner=pruner)
        self.trained: dict[tuple, int] = {}  # configuration -> epochs in its checkpoint
        self.pruned = optuna.trial.TrialState.PRUNED
        self.converged = False

    def ask(self) -> Job | None:
        book = self.book
        if self.converged:
            return None
        for _ in range(FREE_ASKS):
            params = self.session.ask()
            trial = params.pop("_trial")
            entry = book.entry(params)
            assert entry is not None, "a projected suggestion is feasible"
            key = book.problem.key(book.clean(params))
            known = self.trained.get(key, 0)
            for e in range(1, known + 1):  # epochs trained before: replayed from the cache, free
                trial.report(float(entry.curve[e - 1]), e)
                if e < book.full and trial.should_prune():
                    self.study.tell(trial, state=self.pruned)
                    break
            else:
                if known < book.full:
                    return self._run(trial, entry, key, known)
                self.study.tell(trial, entry.best(book.full))
        self.converged = True  # it only suggests what it has trained: it ends once its running trials have
        return None

    def _run(self, trial: Any, entry: Entry, key: tuple, epoch: int) -> Job:
        book = self.book
        yield book.startup_s + entry.epoch_s
        while True:
            epoch += 1
            self.trained[key] = max(self.trained.get(key, 0), epoch)
            trial.report(float(entry.curve[epoch - 1]), epoch)
            if epoch >= book.full:
                self.study.tell(trial, entry.best(epoch))
                return book.hit(entry, epoch)
            if trial.should_prune():
                self.study.tell(trial, state=self.pruned)
                return False
            yield entry.epoch_s


class _FastTruncnorm:
    """``scipy.stats.truncnorm.rvs`` for one draw, by inverse CDF from ``np.random`` (which BOHB seeds and uses):
    BOHB draws every dimension of its 64 samples per proposal one scalar at a time, and scipy's 240 us per call were
    three quarters of a BOHB run's time."""

    class truncnorm:  # noqa: N801 - stands in for scipy.stats.truncnorm
        from scipy.special import ndtr, ndtri

        @classmethod
        def rvs(cls, a: float, b: float, loc: float = 0.0, scale: float = 1.0) -> float:
            pa, pb = cls.ndtr(a), cls.ndtr(b)
            return float(loc + scale * cls.ndtri(pa + np.random.rand() * (pb - pa)))


def _fast_kde() -> type:
    """statsmodels' ``KDEMultivariate`` with the density at one point computed for all dimensions at once (the same
    kernels: Gaussian for continuous, Aitchison-Aitken for unordered; statsmodels calls a kernel per dimension and
    counts a categorical's levels anew on every call: 70 % of a BOHB run on ``space``)."""
    from statsmodels.nonparametric.kernel_density import KDEMultivariate

    class FastKDE(KDEMultivariate):
        def pdf(self, data_predict: Any = None) -> Any:
            x = None if data_predict is None else np.asarray(data_predict, dtype=float).reshape(-1)
            if x is None or x.size != self.k_vars or set(self.var_type) - {"c", "u"}:
                return super().pdf(data_predict)
            if not hasattr(self, "_cont"):  # the training data never change; bw does (BOHB clips it after fitting)
                cont = np.array([t == "c" for t in self.var_type])
                self._cont, self._xc, self._xu = cont, self.data[:, cont], self.data[:, ~cont]
                self._levels = np.array([np.unique(col).size for col in self._xu.T], dtype=float)
                self._bw_of = None
            cont = self._cont
            if self._bw_of is not self.bw:  # BOHB assigns a new bw array once per fit, then samples with it
                bw = np.asarray(self.bw, dtype=float)
                bc, bu = bw[cont], bw[~cont]
                self._bw_of, self._bc2, self._norm = self.bw, bc**2 * 2.0, bc.prod()
                self._same, self._other = 1 - bu, bu / (self._levels - 1)
            k = ((1.0 / np.sqrt(2 * np.pi)) * np.exp(-((self._xc - x[cont]) ** 2) / self._bc2)).prod(axis=1)
            if self._xu.shape[1]:
                k = k * np.where(self._xu == x[~cont], self._same, self._other).prod(axis=1)
            return np.squeeze(k.sum() / self._norm / self.nobs)

    return FastKDE


class _JsonNni:
    """What the advisors' modules call ``nni``: its ``dump``/``load`` (json_tricks, which inspects signatures on every
    call: 90 % of a Hyperband run's time) as plain JSON, which is all that goes through the dispatcher here;
    every other name is nni's."""

    def __getattr__(self, name: str) -> Any:
        import nni

        return getattr(nni, name)

    @staticmethod
    def dump(obj: Any) -> str:
        return json.dumps(obj, default=lambda o: o.item())  # numpy scalars from ConfigSpace

    @staticmethod
    def load(text: str) -> Any:
        return json.loads(text)


def _advisor_class(kind: str, seed: int) -> type:
    """NNI's advisor, with its ``send`` captured (and the two fixes of the module docstring)."""
    import nni.runtime.msg_dispatcher_base as dispatcher_base

    # no command channel: NNI's own unit-test switch in MsgDispatcherBase.__init__ skips connecting
    dispatcher_base.dispatcher_env_vars = dispatcher_base.dispatcher_env_vars._replace(
        NNI_TUNER_COMMAND_CHANNEL="ws://_unittest_search_cost")
    if kind == "hyperband":
        from nni.algorithms.hpo import hyperband_advisor as module
        from nni.algorithms.hpo.hyperband_advisor import Hyperband as Base
    else:
        from nni.algorithms.hpo.bohb_advisor import BOHB as Base
        from nni.algorithms.hpo.bohb_advisor import bohb_advisor as module
        from nni.algorithms.hpo.bohb_advisor import config_generator

        config_generator.sps = _FastTruncnorm  # the only scipy.stats it uses: same distribution, 150x faster
        config_generator.sm = SimpleNamespace(nonparametric=SimpleNamespace(KDEMultivariate=_fast_kde()))

    module.nni = _JsonNni()

    class Captured(Base):  # type: ignore[misc, valid-type]
        def send(self, command: Any, data: str) -> None:
            self.sent.append((command, data))

        def is_created_in_previous_exp(self, param_id: Any) -> bool:
            return False  # NNI 3.0 compares the string ids with an int here (microsoft/nni#5263); no resume here

        def handle_update_search_space(self, data: dict) -> None:
            if kind == "hyperband":
                super().handle_update_search_space(data)
                self.random_state = np.random.RandomState(seed)  # NNI seeds it from the OS
                return
            # ConfigSpace 1.x has no q: quniform goes in as uniform, and proposals are rounded onto the q grid
            self.q = {k: v["_value"] for k, v in data.items() if v["_type"] == "quniform"}
            super().handle_update_search_space(
                {k: {"_type": "uniform", "_value": v["_value"][:2]} if k in self.q else v for k, v in data.items()})
            self.search_space.seed(seed)

        def handle_initialize(self, data: dict) -> None:
            super().handle_initialize(data)
            if kind == "bohb":  # its imputation copies row by row; without conditional keys there is nothing to impute
                slow = self.cg.impute_conditional_data
                self.cg.impute_conditional_data = lambda a: slow(a) if np.isnan(a).any() else np.array(a, float)

        def _get_one_trial_job(self) -> dict | None:
            ret = super()._get_one_trial_job()
            if ret is not None and kind == "bohb":  # in place: the dict BOHB will read back for its model
                params = ret["parameters"]
                for k, (low, high, q) in self.q.items():
                    params[k] = float(np.clip(np.round(params[k] / q) * q, low, high))
            return ret

    return Captured


class NniAdvisor(Method):
    """NNI's Hyperband or BOHB as NNI's dispatcher runs them (see the module docstring)."""

    def __init__(self, kind: str, book: Book, seed: int, concurrency: int) -> None:
        from nni.runtime.tuner_command_channel import CommandType

        super().__init__(book)
        self.new_job = CommandType.NewTrialJob
        np.random.seed(seed)
        cls = _advisor_class(kind, seed)
        if kind == "hyperband":
            self.advisor = cls(optimize_mode="maximize", R=book.full, eta=ETA)
        else:
            self.advisor = cls(optimize_mode="maximize", min_budget=1, max_budget=book.full, eta=ETA)
        self.advisor.sent = []
        self.advisor.handle_initialize(book.problem.space)
        self.advisor.handle_request_trial_jobs(concurrency)
        self.jobs = 0

    def ask(self) -> Job | None:
        sent = self.advisor.sent
        while sent:
            command, data = sent.pop(0)
            if command == self.new_job:
                return self._run(json.loads(data))
        return None

    def _run(self, job: dict) -> Job:
        book, advisor = self.book, self.advisor
        epochs = int(job["parameters"]["TRIAL_BUDGET"])
        entry = book.entry(job["parameters"])  # None: infeasible (NNI does not know the constraint)
        trial_job_id = f"nni-{self.jobs}"
        self.jobs += 1
        yield book.startup_s + (0.0 if entry is None else epochs * entry.epoch_s)
        value = 0.0 if entry is None else entry.best(epochs)
        advisor.handle_report_metric_data({"parameter_id": job["parameter_id"], "trial_job_id": trial_job_id,
                                           "type": "FINAL", "sequence": 0, "value": json.dumps(value)})
        advisor.handle_trial_end({"trial_job_id": trial_job_id, "event": "SUCCEEDED", "hyper_params": json.dumps(job)})
        advisor.handle_request_trial_jobs(1)
        return book.hit(entry, epochs)


class Ours(Method):
    """This tuner: ``previous-default``, ``default`` or ``bo-halving`` (see the module docstring)."""

    def __init__(self, book: Book, seed: int, variant: str) -> None:
        super().__init__(book)
        args: dict[str, Any] = {"strategy": "bo", "seed": seed, "base_resolution": 64, "num_classes": 10,
                                "startup_s": book.startup_s}
        if variant == "previous-default":
            args.update(cost_aware=False)
        elif variant == "bo-halving":
            args.update(full_epochs=book.full, min_epochs=1, eta=ETA)
        self.tuner = EfficientNetTuner(profiler=estimated_profile, **args)
        self.tuner.update_search_space(book.problem.space)
        self.pid = 0
        self.epochs_of: dict[str, int] = {}  # trial_job_id -> the epochs its checkpoint holds
        self.assessor = None
        if variant == "default-medianstop":
            from nni.algorithms.hpo.medianstop_assessor import MedianstopAssessor

            self.assessor = MedianstopAssessor("maximize", start_step=MEDIANSTOP_START)
        elif variant == "default-curve":
            from efficientnet.search.assessor import CurveAssessor

            self.assessor = CurveAssessor("maximize")

    def ask(self) -> Job | None:
        import nni

        try:
            params = self.tuner.generate_parameters(self.pid)
        except nni.NoMoreTrialError:
            return None
        self.pid += 1
        return self._run(self.pid - 1, params)

    def _run(self, pid: int, params: dict) -> Job:
        book = self.book
        epochs = int(params.get("epochs") or book.full)
        parent = params.get("continue_from")
        if parent is not None and parent not in self.epochs_of:
            raise RuntimeError(f"proposal {pid} continues from {parent!r}, which is no finished trial")
        before = self.epochs_of[parent] if parent is not None else 0
        trained = epochs - before
        entry = book.entry(params)
        assert entry is not None and trained > 0, (params, before)
        trial_job_id = f"ours-{pid}"
        if self.assessor is None:
            yield book.startup_s + trained * entry.epoch_s
        else:  # epoch by epoch, each one's accuracy handed to the assessor
            from nni.assessor import AssessResult

            history: list[float] = []
            for epoch in range(before + 1, epochs + 1):
                yield entry.epoch_s + (book.startup_s if epoch == before + 1 else 0.0)
                history.append(float(entry.curve[epoch - 1]))
                if epoch < epochs and self.assessor.assess_trial(trial_job_id, history) == AssessResult.Bad:
                    last = {"default": history[-1], "loss": 1.0, "top5": 100.0, "f1": 0.5, "epoch": epoch}
                    self.tuner.receive_trial_result(pid, params, last, trial_job_id=trial_job_id)
                    self.tuner.trial_end(pid, False)
                    self.assessor.trial_end(trial_job_id, False)
                    self.epochs_of[trial_job_id] = epoch
                    return False
        result = {"default": entry.best(epochs), "epochs": epochs, "epochs_trained": trained,
                  "train_seconds": trained * entry.epoch_s}
        self.tuner.receive_trial_result(pid, params, result, trial_job_id=trial_job_id)
        self.tuner.trial_end(pid, True)
        if self.assessor is not None:
            self.assessor.trial_end(trial_job_id, True)
        self.epochs_of[trial_job_id] = epochs
        return book.hit(entry, epochs)


def make_method(name: str, book: Book, seed: int, concurrency: int) -> Method:
    if name == "random-full":
        return RandomFull(book, seed)
    if name in ("asha-random", "optuna-tpe-hyperband"):
        return OptunaPruned(name, book, seed)
    if name in ("nni-hyperband", "nni-bohb"):
        return NniAdvisor(name[4:], book, seed, concurrency)
    if name in OURS:
        return Ours(book, seed, name)
    raise ValueError(f"unknown method {name!r}: use {', '.join(ALL_METHODS)}")


# ----------------------------------------------------------------------------------------------- reporting
def fmt_s(x: float, cap: float) -> str:
    return f">{cap:.0f}" if x >= cap else f"{x:.0f}"


def fmt_ratio(mine: float, best: float, my_cap: bool, best_cap: bool) -> str:
    if my_cap and best_cap:
        return "?"
    return (">" if my_cap else "<" if best_cap else "") + f"{mine / best:.2f}x"


_ARGS: argparse.Namespace | None = None  # a worker's settings (set by its initializer)
_BLAS: Any = None
_SPACES: dict[str, tuple[Problem, SpaceCosts]] = {}  # a worker's problems, one per search space


def _init_worker(args: argparse.Namespace) -> None:
    global _ARGS, _BLAS, FREE_ASKS
    _ARGS = args
    FREE_ASKS = args.free_asks
    try:
        import threadpoolctl

        _BLAS = threadpoolctl.threadpool_limits(1)  # one BLAS thread per process: two processes on two cores
    except ImportError:
        pass
    _keep_freed_memory()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")


def _keep_freed_memory() -> None:
    """glibc's malloc keeps what is freed instead of handing it back to the OS at once (``mallopt``): the tuner's GP
    allocates and frees arrays of tens of MB on every proposal, and mapping them anew each time made 40 % of a
    ``default`` run's time page faults (system time). Nothing else changes."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: big arrays from the heap, not fresh mappings
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep freed heap memory
        libc.mallopt(-2, 1 << 28)  # M_TOP_PAD
    except (OSError, AttributeError):  # not glibc: run as it is
        pass


def run_task(task: tuple[str, str, int, int, tuple[str, ...]]) -> dict[str, tuple[float | None, float]]:
    """One seed of one problem: every method's simulated seconds (None: over the cap) and the CPU seconds it took."""
    space_name, kind, concurrency, seed, methods = task
    args = _ARGS
    assert args is not None
    se_name = SPACE_FILES[space_name]
    costs = _space_costs(space_name, args)
    base = _SPACES[space_name][0]
    problem = dataclasses.replace(base, objective=objective_for(kind, seed, se_name))
    book = Book(problem, costs, seed, args)
    out = {}
    for m in methods:
        t0 = time.process_time()
        out[m] = (simulate(make_method(m, book, seed, concurrency), concurrency, cap_s(costs, concurrency, args)),
                  time.process_time() - t0)
    return out


def cap_s(costs: SpaceCosts, concurrency: int, args: argparse.Namespace) -> float:
    """The time :data:`CAP_TRIALS` full-budget trials of the average architecture take at ``concurrency``."""
    return CAP_TRIALS * (args.startup_s + args.epochs * costs.mean_epoch_s) / concurrency


def main(argv: list[str] | None = None) -> None:
    import multiprocessing
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="3 seeds, objectives " + ",".join(QUICK_OBJECTIVES) + ", concurrency 1")
    parser.add_argument("--methods", default=",".join(m for m in ALL_METHODS if m not in ASSESSED),
                        help=f"comma-separated, from the default and {', '.join(ASSESSED)}")
    parser.add_argument("--spaces", default="space,legacy", help="the heavier first: the two processes end together")
    parser.add_argument("--objectives", default=None, help="default " + ",".join(DEFAULT_OBJECTIVES))
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--epochs", type=int, default=9, help="the full budget")
    parser.add_argument("--epoch-s", type=float, default=2.0, help="seconds per epoch of the base architecture")
    parser.add_argument("--startup-s", type=float, default=5.0, help="seconds per trial before its first epoch")
    parser.add_argument("--free-asks", type=int, default=FREE_ASKS,
                        help="Optuna: cached answers in a row after which a run has converged")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    parser.add_argument("--json", default=None, help="write every time here")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    seeds = list(range(args.first_seed, args.first_seed + (3 if args.quick else args.seeds)))
    objectives = (args.objectives.split(",") if args.objectives
                  else list(QUICK_OBJECTIVES if args.quick else DEFAULT_OBJECTIVES))
    concurrency = [1] if args.quick and args.concurrency == "1,4" else [int(c) for c in args.concurrency.split(",")]
    methods = args.methods.split(",")
    for m in methods:
        if m not in ALL_METHODS:
            parser.error(f"unknown method {m!r}: use {', '.join(ALL_METHODS)}")
    for k in objectives:
        if k not in KINDS:
            parser.error(f"unknown objective {k!r}: use {', '.join(KINDS)}")
    spaces = args.spaces.split(",")
    for s in spaces:
        if s not in SPACE_FILES:
            parser.error(f"unknown space {s!r}: use {', '.join(SPACE_FILES)}")

    baselines = [m for m in methods if m in BASELINES]
    print(f"{len(seeds)} seeds ({seeds[0]}..{seeds[-1]}), full budget {args.epochs} epochs, start-up "
          f"{args.startup_s:g} s, base architecture {args.epoch_s:g} s per epoch, {args.jobs} processes; median "
          f"simulated seconds to the best of {TARGET_TRIALS} random full-budget trials, and the ratio to the best "
          f"baseline (lowest median of {', '.join(baselines) or 'none'})", flush=True)
    problems = [(s, k, c) for s in spaces for k in objectives for c in concurrency]
    tasks = [(s, k, c, seed, tuple(methods)) for s, k, c in problems for seed in seeds]
    results: dict[str, Any] = {"seeds": seeds, "args": vars(args), "methods": methods, "problems": {}}
    ratios: dict[str, list[float]] = {m: [] for m in OURS if m in methods}
    bounds = {m: 0 for m in ratios}
    cpu = {m: 0.0 for m in methods}
    t_start = time.time()
    for space_name in spaces:  # before the workers start: they inherit them
        _space_costs(space_name, args)
    with multiprocessing.Pool(args.jobs, _init_worker, (args,)) if args.jobs > 1 else _InProcess(args) as pool:
        done = pool.imap(run_task, tasks)
        for space_name, kind, c in problems:
            key = f"{space_name}/{kind} x{c}"
            outs = [next(done) for _ in seeds]
            cap = cap_s(_space_costs(space_name, args), c, args)
            times = {m: [o[m][0] for o in outs] for m in methods}
            spent = {m: sum(o[m][1] for o in outs) for m in methods}
            for m in methods:
                cpu[m] += spent[m]
            med = {m: float(np.median([cap if t is None else t for t in ts])) for m, ts in times.items()}
            best = min(baselines, key=lambda m: med[m]) if baselines else None
            cells = []
            for m in methods:
                cell = f"{m} {fmt_s(med[m], cap)}"
                if best is not None:
                    cell += " " + fmt_ratio(med[m], med[best], med[m] >= cap, med[best] >= cap)
                    if m in ratios:
                        ratios[m].append(med[m] / med[best])
                        bounds[m] += med[m] >= cap or med[best] >= cap
                cells.append(cell)
            print(f"{key:22s} cap {cap:.0f} s, best baseline {best}: " + " | ".join(cells), flush=True)
            results["problems"][key] = {"cap": cap, "best_baseline": best, "median": med, "times": times,
                                        "cpu_s": spent}
            if args.json:  # after every problem, so a run cut short keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=1))
    print("CPU seconds per method, all runs: " + ", ".join(f"{m} {w:.0f}" for m, w in cpu.items()))
    print(f"total {time.time() - t_start:.0f} s wall")
    for m, capped in bounds.items():
        if capped:
            print(f"{m}: {capped} of {len(problems)} problems have a median at the cap (theirs or the best "
                  "baseline's): the ratio there is a bound")
    for m in ("previous-default", "bo-halving"):
        if ratios.get(m):
            print(f"{m}: median ratio vs best baseline: {statistics.median(ratios[m]):.2f}x")
    if ratios.get("default"):
        print(f"median ratio vs best baseline: {statistics.median(ratios['default']):.2f}x")


def _space_costs(space_name: str, args: argparse.Namespace) -> SpaceCosts:
    if space_name not in _SPACES:
        se_name = SPACE_FILES[space_name]
        base = Problem.build(se_name, objective_for("smooth", 0, se_name))
        _SPACES[space_name] = (base, SpaceCosts.build(base, args.epoch_s))
    return _SPACES[space_name][1]


class _InProcess:
    """``--jobs 1``: the pool's imap in this process."""

    def __init__(self, args: argparse.Namespace) -> None:
        _init_worker(args)

    def __enter__(self) -> "_InProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def imap(self, fn: Callable, items: list) -> Iterator:
        return map(fn, items)


if __name__ == "__main__":
    main()
