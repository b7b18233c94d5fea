"""Search efficiency: trials needed to reach the best of 100 random trials, against honest baselines.

Run from the repository root (Optuna is a benchmark-only extra: ``pip install -e .[bench]``)::

    nice -n 15 python bench/search_efficiency.py                      # everything, 50 seeds (hours on 2 cores)
    python bench/search_efficiency.py --quick                          # 10 seeds, fewer methods (minutes)
    python bench/search_efficiency.py --seeds 20 --methods bo,random-order --spaces seed --objectives smooth

**Problems.** Two search spaces: the legacy project's ``search_space_legacy.json`` (alpha, beta, gamma; 109 points meet
alpha·beta²·gamma² = 2 ± 0.1) and ``search_space.json`` (those points × 48 block choices, plus ``lr`` and
``batch_size``). Objectives: the families of ``bench/synthetic.py`` (smooth, multimodal,
interactions, plateaus, noisy, choices, rugged); seed ``s`` draws member ``s`` of each family.

**Measure.** The objective is read on networks (:class:`OnNetworks`): candidates that build the same network share
one value, as they would share a trained accuracy. For each seed, the target is the best true value among 100 trials
of a uniform random order without repeats (an independent draw). A method's count is the number of trials until its first trial whose *true* value
reaches the target (noise only affects what the method observes); ``>cap`` when it never does within ``--max-trials``
(counted as cap + 1 in medians, so a ratio with ``>`` is a lower bound). The reference is the expected count of a
uniform random order without repeats for the same target: exact, (N + 1) / (m + 1) with m of the N candidates
at or above the target, when the space is finite; with hyperparameters, that formula averaged over >= 1,000
random draws of every candidate's hyperparameters (the shuffles, with the order averaged out exactly). The printed
ratio is the median over seeds of count / reference.

**Methods.** ``bo`` (the default strategy), ``evolution``, ``predictor`` and ``random`` are this tuner's strategies
(evolution with population 10, tournament 3); ``nni-tpe`` and ``nni-evolution`` are NNI's built-in tuners on the
same search-space file, blind to the constraint: an infeasible proposal is a wasted trial (reported as 0 %);
``optuna-tpe`` and ``optuna-gp`` are Optuna's samplers given the constraint: each suggestion is projected onto the
nearest feasible grid point (see :class:`OptunaSession`), and a suggestion that lands on a configuration already
trained is answered from the cache, uncounted (at most 3 x cap suggestions).

``--concurrency 1,4,16`` also runs ``bo`` with that many trials in flight (NNI asks for all of them before any
result; finishing times are random), with and without its pending-trial model (the kriging believer).

``--curves`` measures early stopping: every trial trains ``--epochs`` epochs on a synthetic learning curve
(``learning_curve`` of ``bench/synthetic.py``; bigger networks learn slower at first, so curves cross) and
reports each epoch; the count is the total epochs trained until a trial that reaches the target completes.
``bo`` runs without an assessor, with NNI's Medianstop (start_step 2, as ``config.yml``) and with
:class:`~efficientnet.search.assessor.CurveAssessor`, and so does ``random`` without and with CurveAssessor (a search
with many bad candidates to stop); stopped trials reach the tuner as partial results, as NNI does with
``includeIntermediateResults``, and may be proposed once more.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from efficientnet.search.bayesopt import BayesOptStrategy  # noqa: E402
from efficientnet.search.constraint import CompoundConstraint  # noqa: E402
from efficientnet.search.costs import estimated_profile  # noqa: E402
from efficientnet.search.strategy_table import register_strategy  # noqa: E402
from synthetic import KINDS, SyntheticObjective, learning_curve  # noqa: E402  (this folder is on sys.path)
from tuner import EfficientNetTuner  # noqa: E402

SPACES = {"legacy": ROOT / "search_space_legacy.json", "full": ROOT / "search_space.json"}
OURS = ("bo", "evolution", "predictor", "random")
ALL_METHODS = ("random-order", "bo", "evolution", "random", "nni-tpe", "nni-evolution", "optuna-tpe", "optuna-gp")
QUICK_METHODS = ("random-order", "bo", "evolution", "nni-tpe", "optuna-tpe")
TARGET_TRIALS = 100
SHUFFLES = 1000
CURVE_RUNS = (("bo", "none"), ("bo", "medianstop"), ("bo", "curve"), ("random", "none"), ("random", "curve"))

register_strategy("bo-no-believer", lambda *a, **k: BayesOptStrategy(*a, believer=False, **k))


# ----------------------------------------------------------------------------------------------- problems
_TWINS: dict[str, tuple[list[str], dict[tuple, tuple]]] = {}


def twins_of(space_name: str) -> tuple[list[str], dict[tuple, tuple]]:
    """The architecture keys of a space (coefficients, then block choices) and, for every feasible candidate, the
    values of those keys at the first candidate (in the space's order) that builds the same network."""
    if space_name not in _TWINS:
        cs = make_tuner("grid", 0, json.loads(SPACES[space_name].read_text())).space
        names = ["alpha", "beta", "gamma", *(d.key for d in cs.choice_dims)]
        first: dict[tuple, tuple] = {}
        canonical = {}
        for i in range(cs.size):
            c = cs.at(i)
            row = tuple(c.coefficients) + tuple(c.choices)
            canonical[_rounded(row)] = first.setdefault(cs.network(c), row)
        _TWINS[space_name] = (names, canonical)
    return _TWINS[space_name]


def _rounded(row) -> tuple:
    return tuple(round(float(v), 6) for v in row)


def first_twin(params: dict, space_name: str) -> dict:
    """``params`` (one proposal's) with its architecture keys set to those of the first candidate, in the space's
    order, that builds the same network; unchanged when it is no candidate of the space."""
    names, canonical = twins_of(space_name)
    row = canonical.get(_rounded(params.get(n, 1.0) for n in names))
    return params if row is None else {**params, **dict(zip(names, row))}


class OnNetworks:
    """A synthetic objective read as a trained network would be: twins (candidates that build the same network,
    their coefficients differing only below the rounding of repeats and channels) share the value of the first of
    them, as they would share a trained accuracy. ``value`` and ``observe`` take what the objective takes."""

    def __init__(self, objective: SyntheticObjective, space_name: str) -> None:
        self.objective = objective
        self.space_name = space_name
        self.names, self.canonical = twins_of(space_name)
        self._last: tuple[tuple, dict[str, np.ndarray]] = ((), {})  # the last arrays read, and their twins' columns

    def _params(self, params: dict) -> dict:
        if np.ndim(params["alpha"]) == 0:
            return first_twin(params, self.space_name)
        arrays = tuple(params[n] for n in self.names)  # the space's own columns, read again and again: kept once
        if len(arrays) != len(self._last[0]) or any(a is not b for a, b in zip(arrays, self._last[0])):
            rows = [self.canonical.get(_rounded(r), r) for r in zip(*arrays)]
            self._last = (arrays, {n: np.array([r[k] for r in rows]) for k, n in enumerate(self.names)})
        return {**params, **self._last[1]}

    def value(self, params: dict):
        return self.objective.value(self._params(params))

    def observe(self, params: dict, rng: np.random.Generator) -> float:
        return self.objective.observe(self._params(params), rng)


@dataclass
class Problem:
    """One search space with one objective: every feasible architecture, and the hyperparameters' sampler."""

    space_name: str
    space: dict
    objective: OnNetworks
    arch: dict[str, np.ndarray]
    hyper: dict[str, Any]
    constraint: CompoundConstraint

    @classmethod
    def build(cls, space_name: str, objective: SyntheticObjective) -> "Problem":
        space = json.loads(SPACES[space_name].read_text())
        tuner = make_tuner("grid", 0, space)
        cs = tuner.space
        rows = [cs.proposal(cs.at(i)).to_parameters() for i in range(cs.size)]
        arch = {k: np.array([r[k] for r in rows]) for k in rows[0] if k != "phi"}
        hyper = dict(cs.parsed.hyperparameters)
        return cls(space_name, space, OnNetworks(objective, space_name), arch, hyper, tuner.options.constraint)

    @property
    def size(self) -> int:
        return len(self.arch["alpha"])

    def sample_hyper(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """``n`` draws of every hyperparameter with NNI's semantics (the types this benchmark's spaces use)."""
        out = {}
        for name, entry in self.hyper.items():
            t, v = entry["_type"], entry["_value"]
            if t == "choice":
                out[name] = np.asarray(v)[rng.integers(len(v), size=n)]
            elif t == "uniform":
                out[name] = rng.uniform(v[0], v[1], size=n)
            elif t == "loguniform":
                out[name] = np.exp(rng.uniform(np.log(v[0]), np.log(v[1]), size=n))
            else:
                raise ValueError(f"benchmark cannot sample hyperparameter type {t!r}")
        return out

    def random_values(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """True values of the first ``count`` trials of a uniform random order without repeats."""
        order = rng.permutation(self.size)[:count]
        params = {k: v[order] for k, v in self.arch.items()}
        params.update(self.sample_hyper(rng, len(order)))
        return np.asarray(self.objective.value(params))

    def target(self, seed: int) -> float:
        return float(self.random_values(np.random.default_rng([seed, 1_000_003]), TARGET_TRIALS).max())

    def random_order_expectation(self, target: float, seed: int, shuffles: int) -> float:
        """Expected trials of a uniform random order without repeats to reach ``target`` (see the module doc)."""
        n = self.size
        if not self.hyper:
            m = int((np.asarray(self.objective.value(self.arch)) >= target - 1e-9).sum())
            return (n + 1) / (m + 1)
        rng = np.random.default_rng([seed, 2_000_003])
        total = 0.0
        for _ in range(shuffles):
            params = dict(self.arch)
            params.update(self.sample_hyper(rng, n))
            m = int((np.asarray(self.objective.value(params)) >= target - 1e-9).sum())
            total += (n + 1) / (m + 1)
        return total / shuffles

    def feasible(self, p: dict) -> bool:
        return self.constraint.satisfied(float(p.get("alpha", 1.0)), float(p.get("beta", 1.0)),
                                         float(p.get("gamma", 1.0)))

    def key(self, p: dict) -> tuple:
        return tuple(round(float(p[k]), 9) for k in sorted(p) if k in self.space)


def objective_for(kind: str, seed: int, space_name: str) -> SyntheticObjective:
    """Member ``seed`` of family ``kind``, with the hyperparameter ranges of the search space."""
    space = json.loads(SPACES[space_name].read_text())
    kwargs: dict[str, Any] = {}
    if "lr" in space:
        kwargs["lr_range"] = tuple(space["lr"]["_value"][:2])
    if "batch_size" in space:
        kwargs["batch_sizes"] = tuple(sorted(space["batch_size"]["_value"]))
    return SyntheticObjective(kind, seed, **kwargs)


def make_tuner(strategy: str, seed: int, space: dict) -> EfficientNetTuner:
    tuner = EfficientNetTuner(strategy=strategy, seed=seed, base_resolution=64, num_classes=10,
                              population_size=10, sample_size=3, profiler=estimated_profile)
    tuner.update_search_space(space)
    return tuner


# ----------------------------------------------------------------------------------------------- methods
class Session:
    """ask() -> params (or None when exhausted); tell(params, value or None for infeasible)."""

    constraint_given = False  # infeasible proposals are free (not trials)
    dedupe_free = False       # repeated configurations are answered from a cache, not trials

    def ask(self) -> dict | None:
        raise NotImplementedError

    def tell(self, params: dict, value: float | None) -> None:
        raise NotImplementedError


class OursSession(Session):
    def __init__(self, strategy: str, seed: int, problem: Problem) -> None:
        self.tuner = make_tuner(strategy, seed, problem.space)
        self.pid = 0

    def ask(self) -> dict | None:
        import nni

        try:
            params = self.tuner.generate_parameters(self.pid)
        except nni.NoMoreTrialError:
            return None
        params["_pid"] = self.pid
        self.pid += 1
        return params

    def tell(self, params: dict, value: float | None) -> None:
        pid = params["_pid"]
        self.tuner.receive_trial_result(pid, params, {"default": 0.0 if value is None else value, "epochs": 1})
        self.tuner.trial_end(pid, True)


class NniSession(Session):
    def __init__(self, kind: str, seed: int, problem: Problem) -> None:
        random.seed(seed)
        np.random.seed(seed)
        if kind == "tpe":
            from nni.algorithms.hpo.tpe_tuner import TpeTuner

            self.tuner = TpeTuner(optimize_mode="maximize", seed=seed)
            self.tuner.update_search_space(problem.space)
        else:
            from nni.algorithms.hpo.evolution_tuner import EvolutionTuner

            self.tuner = EvolutionTuner(optimize_mode="maximize", population_size=32)
            self.tuner.update_search_space(problem.space)
            # NNI seeds its evolution from the OS; reseeded here so the benchmark is reproducible
            self.tuner.random_state = np.random.RandomState(seed)
            self.tuner.population = []
            for _ in range(self.tuner.population_size):
                self.tuner._random_generate_individual()
        self.pid = 0

    def ask(self) -> dict | None:
        params = dict(self.tuner.generate_multiple_parameters([self.pid], st_callback=lambda *a: None)[0])
        params["_pid"] = self.pid
        self.pid += 1
        return params

    def tell(self, params: dict, value: float | None) -> None:
        pid = params.pop("_pid")
        self.tuner.receive_trial_result(pid, params, 0.0 if value is None else value)
        self.tuner.trial_end(pid, True)


class OptunaSession(Session):
    """Optuna given the constraint: it suggests alpha, beta and gamma on their grids as NNI's TPE does, and each
    suggestion is projected onto the nearest point that meets the constraint (in grid steps), as this tuner's own
    mutations repair it. Optuna is told the projected point's value for its suggestion. A projection onto an already
    trained configuration is answered from the cache and not counted."""

    dedupe_free = True

    def __init__(self, kind: str, seed: int, problem: Problem) -> None:
        import optuna
        import torch

        torch.set_num_threads(1)  # Optuna's GP runs on torch; one thread is several times faster on 2 busy cores
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", module="optuna")
        sampler = (optuna.samplers.TPESampler(seed=seed) if kind == "tpe"
                   else optuna.samplers.GPSampler(seed=seed))
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self.problem = problem
        coef = {k: problem.space[k]["_value"] for k in ("alpha", "beta", "gamma")}
        self.steps = np.array([coef[k][2] for k in ("alpha", "beta", "gamma")])
        self.lows = np.array([coef[k][0] for k in ("alpha", "beta", "gamma")])
        self.points = np.unique(np.stack([problem.arch[k] for k in ("alpha", "beta", "gamma")], -1), axis=0)

    def project(self, alpha: float, beta: float, gamma: float) -> tuple[float, float, float]:
        """The feasible grid point nearest to (alpha, beta, gamma), distance in grid steps."""
        d = (((self.points - np.array([alpha, beta, gamma])) / self.steps) ** 2).sum(1)
        return tuple(float(v) for v in self.points[int(np.argmin(d))])

    def ask(self) -> dict | None:
        trial = self.study.ask()
        params: dict[str, Any] = {}
        for name, entry in self.problem.space.items():
            t, v = entry["_type"], entry["_value"]
            if t == "quniform":
                params[name] = trial.suggest_float(name, v[0], v[1], step=v[2])
            elif t == "loguniform":
                params[name] = trial.suggest_float(name, v[0], v[1], log=True)
            elif t == "uniform":
                params[name] = trial.suggest_float(name, v[0], v[1])
            elif t == "choice":
                params[name] = trial.suggest_categorical(name, v)
            else:
                raise ValueError(f"benchmark cannot give Optuna the type {t!r}")
        params["alpha"], params["beta"], params["gamma"] = self.project(params["alpha"], params["beta"],
                                                                        params["gamma"])
        params["_trial"] = trial
        return params

    def tell(self, params: dict, value: float | None) -> None:
        self.study.tell(params.pop("_trial"), 0.0 if value is None else value)


def make_session(method: str, seed: int, problem: Problem) -> Session:
    if method in OURS:
        return OursSession(method, seed, problem)
    if method.startswith("nni-"):
        return NniSession(method[4:], seed, problem)
    if method.startswith("optuna-"):
        return OptunaSession(method[7:], seed, problem)
    raise ValueError(f"unknown method {method!r}: use {', '.join(ALL_METHODS)}")


def trials_to_target(method: str, problem: Problem, seed: int, target: float, cap: int) -> int | None:
    """Trials (as the module docstring counts them) until the first whose true value reaches ``target``."""
    session = make_session(method, seed, problem)
    noise = np.random.default_rng([seed, 3_000_017])
    seen: dict[tuple, float] = {}
    counted = asks = 0
    while counted < cap and asks < 3 * cap:
        params = session.ask()
        asks += 1
        if params is None:
            return None
        clean = {k: v for k, v in params.items() if not k.startswith("_")}
        if not problem.feasible(clean):
            if not session.constraint_given:
                counted += 1
            session.tell(params, None)
            continue
        key = problem.key(clean)
        if key in seen and session.dedupe_free:
            session.tell(params, seen[key])
            continue
        counted += 1
        if problem.objective.value(clean) >= target - 1e-9:
            return counted
        seen[key] = problem.objective.observe(clean, noise)
        session.tell(params, seen[key])
    return None


def parallel_trials_to_target(strategy: str, problem: Problem, seed: int, target: float, cap: int,
                              concurrency: int) -> int | None:
    """Like :func:`trials_to_target` for our tuner with ``concurrency`` trials in flight: proposals are counted in
    the order they are made; results come back in order of random finishing times."""
    import heapq

    import nni

    tuner = make_tuner(strategy, seed, problem.space)
    rng = np.random.default_rng([seed, 4_000_037])      # finishing times
    noise = np.random.default_rng([seed, 3_000_017])    # the sequential runs' noise: x1 repeats them exactly
    running: list[tuple[float, int, dict]] = []
    now, pid = 0.0, 0
    while True:
        while len(running) < concurrency and pid < cap:
            try:
                params = tuner.generate_parameters(pid)
            except nni.NoMoreTrialError:
                break
            if problem.objective.value(params) >= target - 1e-9:
                return pid + 1
            heapq.heappush(running, (now + rng.uniform(0.5, 1.5), pid, params))
            pid += 1
        if not running:
            return None
        now, done, params = heapq.heappop(running)
        tuner.receive_trial_result(done, params, {"default": problem.objective.observe(params, noise), "epochs": 1})
        tuner.trial_end(done, True)


# ----------------------------------------------------------------------------------------------- curves
def curve_tau(params: dict, rng_seed: int) -> float:
    """How many epochs an architecture takes to learn (the curve's time constant): about 3 of 20, a quarter longer
    for the biggest networks (deep and wide), and ±15 % per architecture, so curves cross. The rank correlation
    between the accuracy after 2 of 20 epochs and the final one is about 0.6 on the smooth objective."""
    a, b = float(params["alpha"]) - 1.0, (float(params["beta"]) - 1.0) / 0.4
    key = [rng_seed] + [int(round(float(params[k]) * 100)) for k in ("alpha", "beta", "gamma")]
    return 3.0 * (1.0 + 0.25 * ((a + b) / 2 - 0.5) + 0.15 * np.random.default_rng(key).uniform(-1.0, 1.0))


def epochs_to_target(strategy: str, assessor_kind: str, problem: Problem, seed: int, target: float, cap: int,
                     epochs: int) -> int | None:
    """Total epochs trained (one trial at a time) until a trial reaching ``target`` completes (None beyond
    ``cap`` trials)."""
    import nni

    tuner = make_tuner(strategy, seed, problem.space)
    rng = np.random.default_rng([seed, 5_000_011])
    assessor: Any = None
    if assessor_kind == "medianstop":
        from nni.algorithms.hpo.medianstop_assessor import MedianstopAssessor

        assessor = MedianstopAssessor(optimize_mode="maximize", start_step=2)
    elif assessor_kind == "curve":
        from efficientnet.search.assessor import CurveAssessor

        assessor = CurveAssessor()
    total = 0
    for pid in range(cap):
        try:
            params = tuner.generate_parameters(pid)
        except nni.NoMoreTrialError:
            return None
        final = float(problem.objective.value(params))
        observed = problem.objective.observe(params, rng)
        curve = learning_curve(observed, curve_tau(params, seed), epochs, rng)
        history: list[dict] = []
        stopped = False
        for e, acc in enumerate(curve, start=1):
            history.append({"default": float(acc), "loss": 1.0, "top5": 100.0, "f1": acc / 100})
            total += 1
            if assessor is not None and e < epochs:
                verdict = assessor.assess_trial(pid, list(history))
                if verdict is nni.assessor.AssessResult.Bad:
                    stopped = True
                    break
        if stopped:  # NNI (includeIntermediateResults) hands the last intermediate result over as final
            tuner.receive_trial_result(pid, params, history[-1])
            tuner.trial_end(pid, False)
            assessor.trial_end(pid, False)
            continue
        best = int(np.argmax(curve))
        tuner.receive_trial_result(pid, params, {"default": float(curve[best]), "epochs": epochs,
                                                 "best_epoch": best + 1, "loss": 1.0, "top5": 100.0})
        tuner.trial_end(pid, True)
        if assessor is not None:
            assessor.trial_end(pid, True)
        if final >= target - 1e-9:
            return total
    return None


# ----------------------------------------------------------------------------------------------- reporting
def summarize(counts: list[int | None], refs: list[float], cap: int) -> dict[str, Any]:
    """Median, quartiles, share reached and the median ratio to the reference (a lower bound when a run that never
    reached the target sits at or below the median)."""
    filled = [cap + 1 if c is None else c for c in counts]
    ratios = [f / r for f, r in zip(filled, refs)]
    q1, med, q3 = np.percentile(filled, [25, 50, 75])
    ratio = float(statistics.median(ratios))
    return {
        "median": float(med), "q1": float(q1), "q3": float(q3), "reached": sum(c is not None for c in counts),
        "seeds": len(counts), "ratio": ratio,
        "lower_bound": any(c is None and r <= ratio for c, r in zip(counts, ratios)),
        "counts": counts,
    }


def fmt_count(x: float, cap: int | None) -> str:
    return f">{cap}" if cap is not None and x > cap else f"{x:.1f}"


def print_table(title: str, rows: dict[str, dict], cap: int, unit: str = "trials") -> None:
    print(f"\n{title}")
    print(f"{'method':22s} {'median ' + unit:>15s} {'IQR':>15s} {'reached':>9s} {'vs random order':>16s} {'s/run':>7s}")
    for name, r in rows.items():
        c = None if r.get("reference") else cap
        iqr = f"{fmt_count(r['q1'], c)}-{fmt_count(r['q3'], c)}"
        ratio = r["ratio"]
        lower = ">" if r.get("lower_bound") else ""
        print(f"{name:22s} {fmt_count(r['median'], c):>15s} {iqr:>15s} {r['reached']:>4d}/{r['seeds']:<4d} "
              f"{lower + f'{ratio:.2f}x':>16s} {r.get('seconds', 0.0):7.2f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10 seeds, methods " + ",".join(QUICK_METHODS))
    parser.add_argument("--methods", default=None, help="comma-separated, from " + ",".join(ALL_METHODS))
    parser.add_argument("--spaces", default="legacy,full")
    parser.add_argument("--objectives", default=",".join(KINDS))
    parser.add_argument("--max-trials", type=int, default=150, help="cap on counted trials per run")
    parser.add_argument("--shuffles", type=int, default=SHUFFLES)
    parser.add_argument("--concurrency", default="", help="e.g. 1,4,16: also run bo with trials in flight")
    parser.add_argument("--curves", action="store_true", help="also measure epochs with assessors")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--json", default=None, help="write every count here")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    seeds = list(range(args.first_seed, args.first_seed + (10 if args.quick else args.seeds)))
    methods = (args.methods.split(",") if args.methods else list(QUICK_METHODS if args.quick else ALL_METHODS))
    concurrency = [int(c) for c in args.concurrency.split(",") if c]
    cap = args.max_trials
    results: dict[str, Any] = {"seeds": seeds, "cap": cap, "problems": {}}
    summary: dict[str, dict[str, str]] = {}
    t_start = time.time()
    for space_name in args.spaces.split(","):
        for kind in args.objectives.split(","):
            key = f"{space_name}/{kind}"
            refs, targets = [], []
            counts: dict[str, list] = {m: [] for m in methods if m != "random-order"}
            seconds: dict[str, float] = {m: 0.0 for m in counts}
            extra: dict[str, list] = {}
            for seed in seeds:
                problem = Problem.build(space_name, objective_for(kind, seed, space_name))
                target = problem.target(seed)
                targets.append(target)
                refs.append(problem.random_order_expectation(target, seed, args.shuffles))
                for m in counts:
                    t0 = time.perf_counter()
                    counts[m].append(trials_to_target(m, problem, seed, target, cap))
                    seconds[m] += time.perf_counter() - t0
                for c in concurrency:
                    for strat in ("bo", "bo-no-believer") if c > 1 else ("bo",):
                        name = f"{strat} x{c}"
                        extra.setdefault(name, []).append(parallel_trials_to_target(strat, problem, seed, target,
                                                                                    cap, c))
                if args.curves:
                    for strat, kind_a in CURVE_RUNS:
                        extra.setdefault(f"epochs {strat}+{kind_a}", []).append(
                            epochs_to_target(strat, kind_a, problem, seed, target, cap, args.epochs))
            size = Problem.build(space_name, objective_for(kind, 0, space_name)).size
            rows = {}
            if "random-order" in methods:
                rows["random order (expected)"] = {
                    "median": float(np.median(refs)), "q1": float(np.percentile(refs, 25)),
                    "q3": float(np.percentile(refs, 75)), "reached": len(refs), "seeds": len(refs), "ratio": 1.0,
                    "reference": True}
            for m, cs in counts.items():
                rows[m] = summarize(cs, refs, cap)
                rows[m]["seconds"] = seconds[m] / len(seeds)
            print_table(f"{key}: {size} candidates, targets {min(targets):.2f}..{max(targets):.2f}, "
                        f"{len(seeds)} seeds, cap {cap} trials", rows, cap)
            par = {name: summarize(cs, refs, cap) for name, cs in extra.items() if not name.startswith("epochs")}
            if par:
                print_table(f"{key}: parallel trials (bo; proposals counted in order)", par, cap)
            if args.curves:
                erefs = [r * args.epochs for r in refs]
                cur = {"random order (expected)": {"median": float(np.median(erefs)), "q1": float(np.percentile(
                    erefs, 25)), "q3": float(np.percentile(erefs, 75)), "reached": len(erefs), "seeds": len(erefs),
                    "ratio": 1.0, "reference": True}}
                cur.update({name[7:]: summarize(cs, erefs, cap * args.epochs)
                            for name, cs in extra.items() if name.startswith("epochs")})
                print_table(f"{key}: epochs to reach the target ({args.epochs} epochs per full trial)", cur,
                            cap * args.epochs, unit="epochs")
                par.update({n: cur[n[7:]] for n in extra if n.startswith("epochs")})
            summary[key] = {m: (">" if r.get("lower_bound") else "") + f"{r['ratio']:.2f}x"
                            for m, r in {**rows, **par}.items()}
            results["problems"][key] = {"refs": refs, "targets": targets, "counts": counts, "extra": extra,
                                        "rows": {m: {k: v for k, v in r.items() if k != "counts"}
                                                 for m, r in {**rows, **par}.items()}}
            if args.json:  # after every problem, so a long run that is cut short keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    names = list(dict.fromkeys(n for row in summary.values() for n in row))
    for space_name in args.spaces.split(","):
        keys = [k for k in summary if k.startswith(space_name + "/")]
        print(f"\n{space_name} space: ratio to the random order's expected count (median over {len(seeds)} seeds; "
              "lower is better; > : a lower bound)")
        print("| method | " + " | ".join(k.split("/", 1)[1] for k in keys) + " |")
        print("|---|" + "---:|" * len(keys))
        for n in names:
            print(f"| {n} | " + " | ".join(summary[k].get(n, "-") for k in keys) + " |")
    print(f"\ntotal {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
