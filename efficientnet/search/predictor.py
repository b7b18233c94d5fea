"""A surrogate accuracy predictor and the ``predictor`` strategy: evolution that only tries what the model likes.

Features of a candidate: alpha, beta, gamma, every block choice, log params, log MACs (closed-form counts) and the
input resolution. The model is scikit-learn gradient boosting, refitted whenever new results have arrived. Each
generation (the proposals made between two results) the strategy scores a pool of ``pool_size`` candidates —
children (one to three mutations) of tournament winners or of the best results so far, and uniform random ones — and
proposes them best predicted first. A share ``explore`` of the proposals stays exploratory: a single plain mutation
of such a parent, unscored, which also feeds the model the local effects (one block choice) it is weakest on.

Rank quality is measured the way NAS-predictor papers do, with Kendall's tau, and honestly held out: every result
that arrives is compared with what the current model (which never saw it) predicted for it; tau over the last
``tau_window`` such pairs is logged (``predictor: Kendall tau ...``, in NNI's dispatcher.log).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Sequence

import numpy as np

from .candidates import Candidate, CandidateSpace
from .class_args import positive_int
from .costs import estimate_costs
from .strategies import EvolutionStrategy, Fitness, IsFree

__all__ = ["SurrogatePredictor", "PredictorStrategy", "candidate_features", "kendall_tau"]

_logger = logging.getLogger(__name__)


def kendall_tau(predicted: Sequence[float], actual: Sequence[float]) -> float:
    """Kendall's tau-b between predictions and truth (nan when either is constant or fewer than 2 points)."""
    from scipy.stats import kendalltau

    if len(predicted) < 2:
        return math.nan
    return float(kendalltau(predicted, actual).statistic)


def candidate_features(space: CandidateSpace, candidate: Candidate, num_classes: int = 1000) -> list[float]:
    """alpha, beta, gamma, the block choices, log params, log MACs and resolution of ``candidate``."""
    spec = space.spec(candidate)
    costs = estimate_costs(spec, num_classes)
    return [
        *candidate.coefficients,
        *(float(c) for c in candidate.choices),
        math.log(costs.params),
        math.log(max(costs.macs, 1)),
        float(spec.resolution),
    ]


class SurrogatePredictor:
    """Gradient-boosted trees (scikit-learn; a small ensemble of ``ensemble`` subsampled models, averaged) from candidate
    features to score; cheap to refit on hundreds of points."""

    def __init__(self, space: CandidateSpace, num_classes: int = 1000, seed: int = 0, n_estimators: int = 50,
                 ensemble: int = 3) -> None:
        self.space, self.num_classes, self.seed, self.n_estimators = space, num_classes, seed, n_estimators
        self.ensemble = ensemble
        self._features: dict[Candidate, list[float]] = {}
        self.model: list | None = None
        self.trained_on: frozenset[Candidate] = frozenset()

    def features(self, candidates: Sequence[Candidate]) -> np.ndarray:
        rows = []
        for c in candidates:
            row = self._features.get(c)
            if row is None:
                row = self._features[c] = candidate_features(self.space, c, self.num_classes)
            rows.append(row)
        return np.asarray(rows, dtype=float)

    def fit(self, candidates: Sequence[Candidate], values: Sequence[float]) -> "SurrogatePredictor":
        from sklearn.ensemble import GradientBoostingRegressor

        y = np.asarray(values, dtype=float)
        scale = float(y.std()) or 1.0
        self._center, self._scale = float(y.mean()), scale
        X, target = self.features(candidates), (y - self._center) / scale
        self.model = [
            GradientBoostingRegressor(
                n_estimators=self.n_estimators, max_depth=3, learning_rate=0.15, subsample=0.8,
                min_samples_leaf=2, random_state=self.seed + k,
            ).fit(X, target)
            for k in range(self.ensemble)
        ]
        self.trained_on = frozenset(candidates)
        return self

    @property
    def fitted(self) -> bool:
        return self.model is not None

    def predict(self, candidates: Sequence[Candidate]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("the predictor has not been fitted yet")
        if not candidates:
            return np.zeros(0)
        X = self.features(candidates)
        return np.mean([m.predict(X) for m in self.model], axis=0) * self._scale + self._center


class PredictorStrategy(EvolutionStrategy):
    """Regularized evolution with a surrogate model choosing which children become trials.

    Options (classArgs): ``pool_size`` (200 candidates scored per generation), ``explore`` (0.2, the share of
    proposals that are plain unscored mutations), ``warmup`` (random proposals before the first fit; default
    ``min(population_size, 10)``), plus evolution's ``population_size`` and ``sample_size``.
    """

    def __init__(
        self,
        space: CandidateSpace,
        rng: np.random.Generator,
        is_free: IsFree,
        population_size: int = 20,
        sample_size: int = 5,
        pool_size: int = 200,
        explore: float = 0.2,
        warmup: int | None = None,
        num_classes: int = 1000,
        fitness: Fitness | None = None,
        tau_window: int = 30,
        log_every: int = 5,
        **options: object,
    ) -> None:
        super().__init__(space, rng, is_free, population_size, sample_size, fitness=fitness, **options)
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"classArg pool_size must be a positive integer, got {pool_size!r}")
        if not isinstance(explore, (int, float)) or not 0 <= explore <= 1:
            raise ValueError(f"classArg explore must be within [0, 1], got {explore!r}")
        warmup = min(population_size, 10) if warmup is None else warmup
        positive_int("warmup", warmup, 2)
        self.pool_size, self.explore, self.warmup, self.log_every = pool_size, float(explore), warmup, log_every
        self.predictor = SurrogatePredictor(space, num_classes, seed=int(rng.integers(2**31)))
        self.history: dict[Candidate, float] = {}      # every successful result (the training set)
        self.heldout: deque[tuple[float, float]] = deque(maxlen=tau_window)  # (predicted before seen, actual)
        self._dirty = False
        self._ranked: list[Candidate] = []            # this generation's pool, best predicted first
        self._pool: list[Candidate] = []
        self._since_log = 0
        self.proposed_by_model = self.proposed_exploratory = 0

    # ------------------------------------------------------------------------------------------ ask
    def ask(self) -> Candidate | None:
        if len(self.history) < self.warmup:
            return self._random.ask()
        if self._dirty or not self.predictor.fitted:
            self._new_generation()
        if self.rng.random() < self.explore:  # exploratory: one plain mutation of a parent, whatever the model says
            for _ in range(self.mutation_tries):
                child = self.mutate(self._parent())
                if child is not None and self.is_free(child):
                    self.proposed_exploratory += 1
                    return child
        while self._ranked:
            candidate = self._ranked.pop(0)
            if self.is_free(candidate):
                self.proposed_by_model += 1
                return candidate
        self._new_generation()  # the pool ran dry within one generation: score a fresh one
        for candidate in self._ranked:
            if self.is_free(candidate):
                self._ranked.remove(candidate)
                return candidate
        return self._random.ask()

    def _new_generation(self) -> None:
        members = list(self.history.items())
        if not self.predictor.fitted:
            _logger.info("predictor: first fit on %d results; the model picks proposals from now on", len(members))
        self.predictor.fit([c for c, _ in members], [v for _, v in members])
        self._dirty = False
        pool = self._candidate_pool()
        if not pool:
            self._pool = self._ranked = []
            return
        predicted = self.predictor.predict(pool)
        if self.fitness is not None:  # multi-objective: rank the pool among the population by NSGA-II fitness
            population = list(self.population)
            keys = list(self.fitness(population + list(zip(pool, predicted.tolist()))))[len(population):]
        else:
            keys = predicted.tolist()
        order = sorted(range(len(pool)), key=lambda i: -keys[i])
        self._pool = pool
        self._ranked = [pool[i] for i in order]

    def _candidate_pool(self) -> list[Candidate]:
        seen: set[Candidate] = set()
        pool: list[Candidate] = []
        tries = 0
        while len(pool) < self.pool_size and tries < 4 * self.pool_size:
            tries += 1
            if tries % 2 and self.population and self._kinds:
                child: Candidate | None = self._parent()
                for _ in range(1 + int(self.rng.integers(3))):
                    child = self.mutate(child) if child is not None else None
            else:
                child = self.space.sample(self.rng)
            if child is not None and child not in seen and self.is_free(child):
                seen.add(child)
                pool.append(child)
        return pool

    def _parent(self) -> Candidate:
        """Half the time a tournament winner of the (aging) population, half the time one of the best results so
        far (multi-objective: always the tournament, whose fitness knows the costs)."""
        if self.fitness is not None or self.rng.random() < 0.5 or not self.history:
            return self.select()
        best = sorted(self.history.items(), key=lambda kv: -kv[1])[: self.sample_size]
        return best[int(self.rng.integers(len(best)))][0]

    # ------------------------------------------------------------------------------------------ tell
    def tell(self, candidate: Candidate, value: float | None, partial: bool = False) -> None:
        super().tell(candidate, value, partial)
        if value is None:
            if self.history.pop(candidate, None) is not None:
                self._dirty = True
            return
        if self.predictor.fitted and candidate not in self.predictor.trained_on and candidate not in self.history:
            self.heldout.append((float(self.predictor.predict([candidate])[0]), float(value)))
            self._since_log += 1
            if self._since_log >= self.log_every and len(self.heldout) >= 8:
                self._since_log = 0
                _logger.info(
                    "predictor: Kendall tau %.3f on the last %d held-out results (predicted before they arrived), "
                    "%d results in the training set", self.kendall_tau, len(self.heldout), len(self.history),
                )
        self.history[candidate] = float(value)
        self._dirty = True

    @property
    def kendall_tau(self) -> float:
        """Kendall tau between the model's predictions and the results that arrived after them."""
        if len(self.heldout) < 2:
            return math.nan
        predicted, actual = zip(*self.heldout)
        return kendall_tau(predicted, actual)
