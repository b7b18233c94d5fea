"""Search strategies: one small base class, :class:`SearchStrategy` (``ask`` and ``tell``, as Optuna's samplers share
``BaseSampler``), for grid, random, regularized evolution, the predictor (:mod:`~efficientnet.search.predictor`) and
Bayesian optimisation (:mod:`~efficientnet.search.bayesopt`); :mod:`~efficientnet.search.strategy_table` names them.

A strategy proposes candidates of a :class:`~efficientnet.search.candidates.CandidateSpace` and learns from their
results. It does not check budgets or duplicates itself beyond skipping candidates that ``is_free`` rejects; the
tuner does the shared feasibility/dedupe work and marks every candidate it has used (proposed, imported or found
over budget) as no longer free. Values are *scores*: higher is better (the tuner negates them when minimizing).
A candidate the strategy returns may carry training hyperparameters (``Candidate.hyper``); otherwise the tuner
draws them with NNI's semantics. Several ``ask`` calls may come before any ``tell`` (parallel trials).
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Sequence

import numpy as np

from .candidates import Candidate, CandidateSpace

__all__ = ["SearchStrategy", "GridStrategy", "RandomStrategy", "EvolutionStrategy", "IsFree", "Fitness"]

IsFree = Callable[[Candidate], bool]
# Multi-objective parent selection: (candidate, score) members -> one fitness each, higher is better.
Fitness = Callable[[Sequence[tuple[Candidate, float]]], Sequence[float]]


class SearchStrategy:
    """What the tuner needs from a search strategy. A subclass implements :meth:`ask`; :meth:`tell` is a no-op by
    default (strategies that do not learn, like grid and random search, keep it). Built as
    ``Strategy(space, rng, is_free, **options)``; options a strategy does not take are ignored."""

    def __init__(self, space: CandidateSpace, rng: np.random.Generator, is_free: IsFree, **_: object) -> None:
        self.space, self.rng, self.is_free = space, rng, is_free

    def ask(self) -> Candidate | None:
        """A free candidate to try next, or None when the strategy has nothing left (the space is exhausted)."""
        raise NotImplementedError

    def tell(self, candidate: Candidate, value: float | None, partial: bool = False) -> None:
        """The score of ``candidate`` (higher is better); None means its trial failed (or it was never trained, being
        over budget) and it must never be a parent, even if a score was told earlier. ``partial``: the score is the
        last intermediate result of a trial an assessor stopped early (a lower-fidelity observation, already capped
        by the tuner, see :mod:`efficientnet.search.fidelity`). A candidate told again replaces its earlier score."""


def _scan(space: CandidateSpace, is_free: IsFree, start: int) -> Candidate | None:
    """The first free candidate at or after index ``start`` (wrapping around), or None."""
    for offset in range(space.size):
        candidate = space.at((start + offset) % space.size)
        if is_free(candidate):
            return candidate
    return None


class GridStrategy(SearchStrategy):
    """Every candidate once, in index order (coefficient points lexicographically, then block choices)."""

    def __init__(self, space: CandidateSpace, rng: np.random.Generator, is_free: IsFree, **_: object) -> None:
        super().__init__(space, rng, is_free)
        self._next = 0

    def ask(self) -> Candidate | None:
        while self._next < self.space.size:
            candidate = self.space.at(self._next)
            self._next += 1
            if self.is_free(candidate):
                return candidate
        return None


class RandomStrategy(SearchStrategy):
    """Uniform random candidates; near exhaustion, a scan from a random index finds the remaining free ones."""

    def __init__(
        self, space: CandidateSpace, rng: np.random.Generator, is_free: IsFree, tries: int = 64, **_: object
    ) -> None:
        super().__init__(space, rng, is_free)
        self.tries = tries

    def ask(self) -> Candidate | None:
        for _ in range(self.tries):
            candidate = self.space.sample(self.rng)
            if self.is_free(candidate):
                return candidate
        return _scan(self.space, self.is_free, int(self.rng.integers(self.space.size)))


class EvolutionStrategy(SearchStrategy):
    """Regularized (aging) evolution, Real et al. 2019.

    Until ``population_size`` results have arrived, candidates are random (the seed population). After that, each
    ask runs a tournament: ``sample_size`` members drawn at random, the best is the parent, and the child is one
    mutation of it: one coefficient moved one grid step (the other two then restore the product constraint) or one
    block choice changed. Each result joins the population and the oldest member leaves. Failed trials never join;
    one that fails after reporting is removed. With ``fitness`` (multi-objective search), the tournament compares
    the members' fitness (e.g. NSGA-II rank and crowding) instead of their scores.
    """

    def __init__(
        self,
        space: CandidateSpace,
        rng: np.random.Generator,
        is_free: IsFree,
        population_size: int = 20,
        sample_size: int = 5,
        mutation_tries: int = 50,
        fitness: Fitness | None = None,
        **_: object,
    ) -> None:
        if population_size < 2:
            raise ValueError(f"classArg population_size must be >= 2, got {population_size!r}")
        if not 1 <= sample_size <= population_size:
            raise ValueError(f"classArg sample_size must be in 1..population_size, got {sample_size!r}")
        super().__init__(space, rng, is_free)
        self.population_size, self.sample_size, self.mutation_tries = population_size, sample_size, mutation_tries
        self.fitness = fitness
        self.population: deque[tuple[Candidate, float]] = deque()
        self._random = RandomStrategy(space, rng, is_free)
        self._kinds = [("coefficient", k) for k in space.searched_coefficients()] + [
            ("choice", d) for d, dim in enumerate(space.choice_dims) if len(dim.values) > 1
        ]

    def ask(self) -> Candidate | None:
        if len(self.population) < self.population_size or not self._kinds:
            return self._random.ask()
        for _ in range(self.mutation_tries):
            child = self.mutate(self.select())
            if child is not None and self.is_free(child):
                return child
        return self._random.ask()

    def select(self) -> Candidate:
        """Tournament selection: the best of ``sample_size`` random members of the population."""
        picks = self.rng.choice(len(self.population), size=self.sample_size, replace=False)
        members = list(self.population)
        keys = self.fitness(members) if self.fitness is not None else [v for _, v in members]
        return members[int(max(picks, key=lambda i: keys[int(i)]))][0]

    def mutate(self, parent: Candidate) -> Candidate | None:
        """One random mutation of ``parent`` (None when the drawn mutation is impossible)."""
        kind, which = self._kinds[int(self.rng.integers(len(self._kinds)))]
        if kind == "coefficient":
            return self.space.move_coefficient(parent, which, 1 if self.rng.random() < 0.5 else -1, self.rng)
        return self.space.change_choice(parent, which, self.rng)

    def tell(self, candidate: Candidate, value: float | None, partial: bool = False) -> None:
        """A result joins the population (replacing the candidate's earlier one); None removes the candidate."""
        if value is None or any(m[0] == candidate for m in self.population):
            self.population = deque(m for m in self.population if m[0] != candidate)
        if value is None:
            return
        self.population.append((candidate, float(value)))
        while len(self.population) > self.population_size:
            self.population.popleft()
