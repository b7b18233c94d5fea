"""Strategy ``bo``: Bayesian optimisation with a Gaussian process and expected improvement over the candidate set.

The feasible candidates of a :class:`CandidateSpace` can be enumerated (5,232 for ``search_space.json``), so the
acquisition is not optimised by a heuristic: every free candidate is scored, and the best is proposed. Features are
those of :mod:`efficientnet.search.encoding` (coefficients and block choices in [0, 1], plus the training
hyperparameters when the search space has any); the surrogate is :class:`~efficientnet.search.gp.GaussianProcess`.

* **Start**: ``n_init`` space-filling candidates (half the number of features, 4 to 8): each the farthest from those
  taken among ``init_pool`` random free ones (256 with up to 4 features; 16 with more, where the farthest points
  would all be corners). Several trials in flight before any result (NNI's ``trialConcurrency``) are all such, and
  so is every proposal while all results so far are equal (a plateau, or every trial at chance): the GP learns
  nothing from them, and its expected improvement would send the search back to a few corners of the grid.
* **Model**: a Matérn-5/2 GP whose kernel mixes the full (interacting) kernel with a first-order additive one, the
  weight learnt from the data (``GaussianProcess(additive=True)``): effects that add up are learnt from fewer trials.
* **Then**: the GP is refitted on every result (hyperparameters re-estimated while the data is small, then whenever
  it has grown by a tenth) and the candidate with the highest log expected improvement over the best posterior mean
  of a completed trial is proposed.
* **Hyperparameters** (``lr``, ``batch_size``, ...): the architectures are ranked with the hyperparameters of the
  best trial so far; for the ``top_archs`` best, ``hp_samples`` hyperparameter settings (the best trials' own,
  small perturbations of them, and one in eight drawn afresh with NNI's semantics) are scored jointly, and the best
  pair is proposed.
* **Parallel trials**: candidates asked for but without a result yet are pending; the GP is conditioned on them at
  its own mean (the kriging believer), which leaves the mean alone and removes the uncertainty around them, so a
  batch of proposals spreads out instead of piling onto one peak.
* **Several objectives** (``multi_objective: pareto``): the GP models each result's NSGA-II fitness (front rank,
  then crowding) among all results, recomputed on every refit, so the search heads for the Pareto front.
* **Early-stopped trials** (``tell(..., partial=True)``): a lower-fidelity observation with extra noise
  ``partial_noise`` (on the standardised scale), never the incumbent; its architecture stays a candidate, so the
  tuner's one second chance (training it to the end) is taken when the model rates it highly.
* **Cost** (``cost``, set by the tuner with classArg ``cost_aware``): once a trial's seconds are known, candidates
  are ranked by expected improvement per predicted second of their trial, start-up included
  (:class:`~efficientnet.search.cost_model.TrainingCostModel`); a second chance is priced at the epochs its stopped
  trial has left.
* **Large spaces** (more than ``max_enumerate`` candidates): a pool of ``pool_size`` random candidates, every
  single-step neighbour of the best results and the early-stopped architectures granted a second chance is scored
  instead.
* **Long searches**: beyond ``exact_until`` results (150), ``max_points`` results train the GP (the best half and
  the most recent half), its kernel drops the additive part, and ``max_scored`` candidates are scored per proposal
  (half the nearest to the best results, half at random), which keeps a proposal within a few milliseconds after
  1,000 trials; the hyperparameters are re-estimated whenever the history has grown by a tenth.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .candidates import Candidate, CandidateSpace
from .class_args import positive_int
from .encoding import ArchEncoding, HyperparameterEncoding
from .gp import GaussianProcess, log_expected_improvement, single_threaded
from .strategies import Fitness, IsFree, SearchStrategy

__all__ = ["BayesOptStrategy"]


@dataclass
class _Observation:
    candidate: Candidate
    x: np.ndarray
    value: float
    partial: bool
    score: float = math.nan  # what the GP models: the value, or its multi-objective fitness

    def __post_init__(self) -> None:
        if math.isnan(self.score):
            self.score = self.value


class BayesOptStrategy(SearchStrategy):
    """GP + expected improvement over every free candidate (see the module docstring).

    Options: ``n_init`` (a classArg of the tuner), ``exact_until`` (150), ``max_points`` (100), ``max_scored``
    (400), ``max_enumerate`` (50,000), ``pool_size`` (2,000), ``top_archs`` (8), ``hp_samples`` (48),
    ``partial_noise`` (0.25), ``believer`` (True: model pending trials), ``init_pool`` (see above),
    ``gp_options`` (for :class:`GaussianProcess`); set by the tuner: ``fitness`` (multi-objective) and ``cost``
    (architecture features and, for an enumerated space, the candidates' indices -> their trials' predicted seconds).
    """

    def __init__(
        self,
        space: CandidateSpace,
        rng: np.random.Generator,
        is_free: IsFree,
        n_init: int | None = None,
        exact_until: int = 150,
        max_points: int = 100,
        max_scored: int = 400,
        max_enumerate: int = 50_000,
        pool_size: int = 2000,
        top_archs: int = 8,
        hp_samples: int = 48,
        partial_noise: float = 0.25,
        believer: bool = True,
        gp_options: dict[str, Any] | None = None,
        fitness: Fitness | None = None,
        init_pool: int | None = None,
        cost: Callable[[np.ndarray, np.ndarray | None], np.ndarray | None] | None = None,
        **_: object,
    ) -> None:
        super().__init__(space, rng, is_free)
        self.arch = ArchEncoding(space)
        self.hp = HyperparameterEncoding(space.parsed.hyperparameters)
        self.dim = self.arch.dim + self.hp.dim
        self.n_init = (
            int(np.clip(self.dim // 2, 4, 8)) if n_init is None else positive_int("n_init", n_init)
        )
        self.exact_until = positive_int("exact_until", exact_until, 0)
        self.max_points = positive_int("max_points", max_points, 10)
        self.max_scored = positive_int("max_scored", max_scored, 10)
        self.pool_size, self.top_archs, self.hp_samples = pool_size, top_archs, hp_samples
        if not isinstance(partial_noise, (int, float)) or not partial_noise >= 0:
            raise ValueError(f"classArg partial_noise must be a number >= 0, got {partial_noise!r}")
        self.partial_noise = float(partial_noise)
        self.believer = believer
        self.fitness = fitness
        self.cost = cost  # (architecture features, space indices or None) -> predicted seconds (None: not known yet)
        self.init_pool = init_pool if init_pool is not None else (256 if self.dim <= 4 else 16)
        self.enumerated = space.size <= max_enumerate
        self._open = np.ones(space.size, dtype=bool) if self.enumerated else None  # never asked, told or used
        self._all_features: np.ndarray | None = None
        self.observations: dict[Candidate, _Observation] = {}
        self.pending: dict[Candidate, np.ndarray] = {}
        self.failed: set[Candidate] = set()
        self.gp = GaussianProcess(seed=int(rng.integers(2**31)), **{"additive": True, **(gp_options or {})})
        self._dirty = True
        self._optimized_at = 0
        self._version = 0
        self._sorted: list[_Observation] = []
        self._flat = True  # every result so far has the same score (set by _fit)
        self._queue: list[Candidate] = []
        self._queue_state: tuple | None = None
        self.proposed_by_model = 0

    # ------------------------------------------------------------------------------------------- features
    def _arch_features(self, indices: np.ndarray) -> np.ndarray:
        if self._all_features is None:
            self._all_features = self.arch.features(np.arange(self.space.size))
        return self._all_features[indices]

    def _features(self, candidate: Candidate) -> np.ndarray:
        arch = (self._arch_features(np.array([self.space.index(candidate)])) if self.enumerated
                else self.arch.features_of([candidate]))[0]
        if not self.hp.dim:
            return arch
        return np.concatenate([arch, self.hp.encode(dict(candidate.hyper))])

    def _close(self, candidate: Candidate) -> None:
        if self._open is not None:
            self._open[self.space.index(candidate)] = False

    # ------------------------------------------------------------------------------------------- ask
    def ask(self) -> Candidate | None:
        with single_threaded():
            if len(self.observations) < self.n_init:
                candidate = self._space_filling()
            else:
                candidate = self._by_model()
        if candidate is not None:
            self.pending[candidate] = self._features(candidate)
            self._close(candidate)
        return candidate

    def _free_indices(self, limit: int) -> np.ndarray:
        """Up to ``limit`` random open candidate indices that are free (enumerated spaces)."""
        assert self._open is not None
        out: list[int] = []
        while len(out) < limit:
            open_ = np.flatnonzero(self._open)
            if not len(open_):
                break
            picks = self.rng.choice(open_, size=min(limit - len(out), len(open_)), replace=False)
            for i in picks:
                if self.is_free(self.space.at(int(i))):
                    out.append(int(i))
                else:
                    self._open[i] = False
        return np.asarray(out, dtype=np.int64)

    def _random_candidates(self, count: int) -> list[Candidate]:
        if self.enumerated:
            return [self.space.at(int(i)) for i in self._free_indices(count)]
        seen: set[Candidate] = set()
        for _ in range(20 * count):
            c = self.space.sample(self.rng)
            if c not in seen and c not in self.pending and self.is_free(c):
                seen.add(c)
                if len(seen) >= count:
                    break
        if not seen:  # nearly exhausted: scan
            for i in range(self.space.size):
                c = self.space.at(i)
                if self.is_free(c) and c not in self.pending:
                    seen.add(c)
                    break
        return list(seen)

    def _space_filling(self) -> Candidate | None:
        """The random free candidate farthest from every observed and pending one (greedy max-min)."""
        options = self._random_candidates(self.init_pool)
        if not options:
            return None
        options = [c.with_hyper(self.hp.sample(self.rng)) if self.hp.raw else c for c in options]
        taken = [o.x for o in self.observations.values()] + list(self.pending.values())
        if not taken:
            return options[0]
        X = np.array([self._features(c) for c in options])
        T = np.array(taken)
        d2 = ((X[:, None, :] - T[None, :, :]) ** 2).sum(-1).min(1)
        return options[int(np.argmax(d2))]

    @property
    def _long(self) -> bool:
        return len(self.observations) > self.exact_until

    def _training_set(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs = list(self.observations.values())
        if self._long and len(obs) > self.max_points:
            keep = {id(o) for o in self._sorted[: self.max_points // 2]}
            for o in reversed(obs):
                if len(keep) >= self.max_points:
                    break
                keep.add(id(o))
            obs = [o for o in obs if id(o) in keep]
        X = np.array([o.x for o in obs])
        y = np.array([o.score for o in obs])
        extra = np.array([self.partial_noise if o.partial else 0.0 for o in obs])
        return X, y, extra

    def _fit(self) -> None:
        """Refit the GP on the results, and find the incumbent: the best posterior mean among completed
        (full-fidelity) trials (the best results only, in a long search)."""
        if self.fitness is not None:  # multi-objective: model each result's NSGA-II fitness among all results
            obs = list(self.observations.values())
            for o, f in zip(obs, self.fitness([(o.candidate, o.value) for o in obs])):
                o.score = float(f)
            self._sorted.sort(key=lambda o: -o.score)
        X, y, extra = self._training_set()
        self._flat = float(np.ptp(y)) <= 1e-9 * max(1.0, float(np.abs(y).max()))  # no signal for the model yet
        n = len(self.observations)
        optimize = n <= 40 or n >= 1.1 * self._optimized_at
        if self._long and self.gp.additive:  # plenty of data: the plain kernel, cheaper to evaluate, will do
            self.gp.additive, optimize = False, True
        self.gp.fit(X, y, extra_noise=extra, optimize=optimize)
        if optimize:
            self._optimized_at = n
        obs = self._sorted[: self.max_points] if self._long else self._sorted
        full = [o for o in obs if not o.partial] or obs
        mu, _ = self.gp.predict(np.array([o.x for o in full]), return_std=False)
        best = int(np.argmax(mu))
        self._best, self._incumbent = float(mu[best]), full[best].candidate
        self._dirty = False
        self._version += 1

    def _candidate_pool(self) -> tuple[list[Candidate] | None, np.ndarray]:
        """Candidates to score: (None, indices) for an enumerated space, else (candidates, arch features)."""
        if self.enumerated:
            assert self._open is not None
            idx = np.flatnonzero(self._open)
            if self._long and len(idx) > self.max_scored:
                idx = self._nearest_and_random(idx)
            return None, idx
        pool: set[Candidate] = set(self._random_candidates(self.pool_size))
        for o in self._sorted[:5]:
            pool.update(self._neighbours(o.candidate))
        # a stopped trial's architecture may be proposed once more, as in an enumerated space (is_free: if granted)
        pool.update(o.candidate for o in self._sorted if o.partial)
        pool = {c for c in pool if c not in self.pending and self.is_free(c)
                and (c not in self.observations or self.observations[c].partial)}
        cands = list(pool)
        return cands, (self.arch.features_of(cands) if cands else np.zeros((0, self.arch.dim)))

    def _nearest_and_random(self, idx: np.ndarray) -> np.ndarray:
        """``max_scored`` of the open indices ``idx``: half the nearest (in lengthscale units) to the best results,
        half at random (both from a random subset of three times as many, to keep this cheap)."""
        if len(idx) > 3 * self.max_scored:
            idx = self.rng.choice(idx, size=3 * self.max_scored, replace=False)
        feats = self._arch_features(idx)
        ls = self.gp.lengthscales[: self.arch.dim]
        centres = np.array([o.x[: self.arch.dim] for o in self._sorted[:5]]) / ls
        d2 = (((feats / ls)[:, None, :] - centres[None, :, :]) ** 2).sum(-1).min(1)
        near = np.argpartition(d2, self.max_scored // 2)[: self.max_scored // 2]
        rest = np.ones(len(idx), dtype=bool)
        rest[near] = False
        far = self.rng.choice(np.flatnonzero(rest), size=min(int(rest.sum()), self.max_scored - len(near)),
                              replace=False)
        return idx[np.concatenate([near, far])]

    def _neighbours(self, candidate: Candidate) -> list[Candidate]:
        out = []
        for k in self.space.searched_coefficients():
            for step in (-1, 1):
                c = self.space.move_coefficient(candidate, k, step, self.rng)
                if c is not None:
                    out.append(c)
        for d, dim in enumerate(self.space.choice_dims):
            for v in dim.values:
                if v != candidate.choices[d]:
                    choices = list(candidate.choices)
                    choices[d] = v
                    out.append(Candidate(candidate.coefficients, tuple(choices)))
        return out

    def _by_model(self) -> Candidate | None:
        if self._dirty:
            self._fit()
        if self._flat:  # every result the same: keep filling the space, as at the start
            return self._space_filling()
        state = (self._version, frozenset(self.pending))
        if self._queue_state != state:  # a new model or a new pending trial; a rejected candidate changes neither
            self._rank()
            self._queue_state = state
        need = (self.top_archs if not self._long else max(1, self.top_archs // 2)) if self.hp.dim else 1
        chosen: list[Candidate] = []
        while len(chosen) < need:
            if not self._queue:
                if chosen:
                    break
                self._rank()  # every ranked candidate was taken or over budget: rank the rest
                if not self._queue:
                    return self._space_filling()
                continue
            c = self._queue.pop(0)
            if c not in self.pending and self.is_free(c):
                chosen.append(c)
            else:
                self._close(c)
        self.proposed_by_model += 1
        picked = self._best_hyperparameters(chosen) if self.hp.dim else chosen[0]
        self._queue[:0] = [c for c in chosen if c != picked]  # the next ask on the same model starts from them
        return picked

    def _rank(self) -> None:
        """Score the candidate pool with the current model (conditioned on pending trials) into ``_queue``, best
        first; the model is kept for the hyperparameter choice."""
        model = self.gp
        if self.pending and self.believer:
            model = self.gp.with_fantasies(np.array(list(self.pending.values())))
        self._model = model
        cands, arch_x = self._candidate_pool()
        if cands is None:
            indices = arch_x
            arch_x = self._arch_features(indices)
        if not len(arch_x):
            self._queue = []
            return
        self._hyper_ref = dict(self._incumbent.hyper) if self.hp.dim else {}
        X = arch_x
        if self.hp.dim:
            X = np.hstack([arch_x, np.tile(self.hp.encode(self._hyper_ref), (len(arch_x), 1))])
        mu, sd = model.predict(X)
        acquisition = log_expected_improvement(mu, sd, self._best)
        seconds = None
        if self.cost is not None:
            if cands is not None:  # the cost prices a second chance by its index in the space
                indices = np.fromiter((self.space.index(c) for c in cands), dtype=np.int64, count=len(cands))
            seconds = self.cost(arch_x, indices)
        if seconds is not None:  # expected improvement per second (Snoek et al. 2012)
            acquisition = acquisition - np.log(seconds)
        order = np.argsort(-acquisition)[: 16 if self._long else 64]
        self._queue = [self.space.at(int(indices[i])) if cands is None else cands[i] for i in order]

    def _best_hyperparameters(self, archs: list[Candidate]) -> Candidate:
        """Score ``hp_samples`` hyperparameter settings with each of ``archs``; the best (architecture, setting)."""
        top = list(itertools.islice((o for o in self._sorted if not o.partial), 3))
        settings = [self._hyper_ref] + [dict(o.candidate.hyper) for o in top]
        count = self.hp_samples if not self._long else max(4, self.hp_samples // 2)
        while len(settings) < count:
            if len(settings) % 8 == 0:  # mostly near the best settings, one in eight drawn afresh
                settings.append(self.hp.sample(self.rng))
            else:
                base = settings[int(self.rng.integers(min(len(settings), 4)))]
                settings.append(self.hp.perturb(base, self.rng, scale=0.1))
        H = np.array([self.hp.encode(s) for s in settings])
        A = self.arch.features_of(archs)
        X = np.hstack([np.repeat(A, len(H), axis=0), np.tile(H, (len(A), 1))])
        mu, sd = self._model.predict(X)
        k = int(np.argmax(log_expected_improvement(mu, sd, self._best)))
        return archs[k // len(H)].with_hyper(settings[k % len(H)])

    # ------------------------------------------------------------------------------------------- tell
    def tell(self, candidate: Candidate, value: float | None, partial: bool = False) -> None:
        """A result: the score (higher is better), None for a failed or never-trained candidate; ``partial`` for
        the last intermediate result of a trial that was stopped early."""
        self.pending.pop(candidate, None)
        if not partial:
            self._close(candidate)
        elif self._open is not None:  # a stopped trial's architecture may be proposed once more, if the model wants
            self._open[self.space.index(candidate)] = True
        if value is None:
            self.failed.add(candidate)
            self._forget(candidate)
            return
        if candidate in self.failed or not math.isfinite(float(value)):
            return
        self._forget(candidate)
        obs = _Observation(candidate, self._features(candidate), float(value), partial)
        self.observations[candidate] = obs
        bisect.insort(self._sorted, obs, key=lambda o: -o.score)  # best first
        self._dirty = True

    def _forget(self, candidate: Candidate) -> None:
        old = self.observations.pop(candidate, None)
        if old is not None:
            self._sorted.remove(old)
            self._dirty = True
