"""The finite candidate space: feasible coefficient points × block choices, indexable, sampleable, mutable."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from ..proposal import STAGE_KEY, Proposal
from ..spec import ArchSpec, StageChoice
from .constraint import CompoundConstraint, feasible_points
from .space import COEFFICIENTS, ParsedSearchSpace

__all__ = ["Candidate", "CandidateSpace"]


@dataclass(frozen=True)
class Candidate:
    """One architecture of the space: ``(alpha, beta, gamma)`` and one value per block-choice dimension.

    ``hyper`` optionally carries the training hyperparameters chosen for it, as ``((name, value), ...)``; it is not
    part of the identity (equality, hashing): an architecture is proposed once, whatever its hyperparameters.
    """

    coefficients: tuple[float, float, float]
    choices: tuple[int, ...] = ()
    hyper: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    def with_hyper(self, hyper: Mapping[str, Any]) -> "Candidate":
        """This architecture with the training hyperparameters ``hyper``."""
        return Candidate(self.coefficients, self.choices, tuple(hyper.items()))

    def cost_vector(self) -> tuple[float, ...]:
        """Every coordinate grows the model when it grows (used for dominance pre-filters)."""
        return self.coefficients + tuple(float(c) for c in self.choices)


class CandidateSpace:
    """All candidates: the feasible coefficient points (lexicographic) × the block-choice grid.

    Index ``i`` enumerates the space in mixed radix with the coefficient point as the outermost digit, so
    :meth:`at` / :meth:`index` give grid search and exhaustive fallbacks without materialising the space.
    """

    def __init__(
        self,
        parsed: ParsedSearchSpace,
        constraint: CompoundConstraint,
        base: ArchSpec,
        phi: float = 1.0,
        base_resolution: int | None = None,
    ) -> None:
        self.parsed = parsed
        self.constraint = constraint
        self.base = base
        self.phi = float(phi)
        self.base_resolution = base_resolution
        self.points: list[tuple[float, float, float]] = feasible_points(parsed.coefficients, constraint)
        self._point_index = {p: i for i, p in enumerate(self.points)}
        self.choice_dims = parsed.choices
        self._radix = [len(d.values) for d in self.choice_dims]
        self.choice_count = math.prod(self._radix)
        self.size = len(self.points) * self.choice_count
        # (coefficient position, grid index) -> feasible points with that coordinate, for constraint repair
        self._grid_pos = [
            {v: i for i, v in enumerate(dim.values)} for dim in parsed.coefficients
        ]
        self._by_coordinate: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
        for p in self.points:
            for k in range(3):
                self._by_coordinate.setdefault((k, self._grid_pos[k][p[k]]), []).append(p)
        self.spec = lru_cache(maxsize=65536)(self._spec)
        self.network = lru_cache(maxsize=65536)(self._network)

    # ------------------------------------------------------------------------------------------- enumeration
    def __len__(self) -> int:
        return self.size

    def __contains__(self, candidate: object) -> bool:
        return (
            isinstance(candidate, Candidate)
            and candidate.coefficients in self._point_index
            and len(candidate.choices) == len(self.choice_dims)
            and all(c in d.values for c, d in zip(candidate.choices, self.choice_dims))
        )

    def at(self, index: int) -> Candidate:
        """The candidate with this index (0 <= index < size)."""
        index, digits = int(index), []
        for radix in reversed(self._radix):
            index, digit = divmod(index, radix)
            digits.append(digit)
        choices = tuple(d.values[i] for d, i in zip(self.choice_dims, reversed(digits)))
        return Candidate(self.points[index], choices)

    def point_index(self, coefficients: tuple[float, float, float]) -> int:
        """Position of a feasible coefficient point in :attr:`points`."""
        return self._point_index[coefficients]

    def index(self, candidate: Candidate) -> int:
        """Inverse of :meth:`at`."""
        index = self._point_index[candidate.coefficients]
        for d, value in zip(self.choice_dims, candidate.choices):
            index = index * len(d.values) + d.values.index(value)
        return index

    def sample(self, rng: np.random.Generator) -> Candidate:
        """A uniformly random candidate."""
        point = self.points[int(rng.integers(len(self.points)))]
        return Candidate(point, tuple(d.values[int(rng.integers(len(d.values)))] for d in self.choice_dims))

    def cheapest(self) -> list[Candidate]:
        """The Pareto-minimal candidates: every candidate of the space is at least as large as one of them."""
        choices = tuple(d.values[0] for d in self.choice_dims)
        minimal = [
            p for p in self.points
            if not any(q != p and all(a <= b for a, b in zip(q, p)) for q in self.points)
        ]
        return [Candidate(p, choices) for p in minimal]

    # ------------------------------------------------------------------------------------------- mutation
    def searched_coefficients(self) -> list[int]:
        """Positions (0 alpha, 1 beta, 2 gamma) of the coefficients that take more than one value."""
        return [k for k, d in enumerate(self.parsed.coefficients) if len(d.values) > 1]

    def move_coefficient(
        self, candidate: Candidate, position: int, step: int, rng: np.random.Generator
    ) -> Candidate | None:
        """Move one coefficient ``step`` grid steps, then restore the constraint with the other two.

        Among the feasible points with the moved coordinate, the nearest one (in grid steps) to the original point is
        taken (ties broken at random); None when the move leaves the grid or no feasible point has that coordinate.
        A move that lands on a twin of ``candidate`` (the same network: the step was below the rounding of repeats
        and channels) goes on in the same direction, so that a move changes the network.
        """
        network, direction = self.network(candidate), 1 if step > 0 else -1
        while True:
            moved = self._moved(candidate, position, step, rng)
            if moved is None or self.network(moved) != network:
                return moved
            step += direction

    def _moved(self, candidate: Candidate, position: int, step: int, rng: np.random.Generator) -> Candidate | None:
        grid = self._grid_pos
        origin = [grid[k][candidate.coefficients[k]] for k in range(3)]
        target = origin[position] + step
        options = self._by_coordinate.get((position, target))
        if not options:
            return None
        dist = [sum(abs(grid[k][p[k]] - origin[k]) for k in range(3) if k != position) for p in options]
        best = min(dist)
        nearest = [p for p, d in zip(options, dist) if d == best]
        return Candidate(nearest[int(rng.integers(len(nearest)))], candidate.choices)

    def change_choice(self, candidate: Candidate, dim: int, rng: np.random.Generator) -> Candidate | None:
        """Give block-choice dimension ``dim`` another value, drawn uniformly (None if it has only one)."""
        values = [v for v in self.choice_dims[dim].values if v != candidate.choices[dim]]
        if not values:
            return None
        choices = list(candidate.choices)
        choices[dim] = values[int(rng.integers(len(values)))]
        return Candidate(candidate.coefficients, tuple(choices))

    # ------------------------------------------------------------------------------------------- conversion
    def _spec(self, candidate: Candidate) -> ArchSpec:
        alpha, beta, gamma = candidate.coefficients
        spec = ArchSpec.from_compound(
            alpha, beta, gamma, self.phi, base=self.base, base_resolution=self.base_resolution
        )
        return spec.with_stage_choices(self.stage_choices(candidate)) if self.choice_dims else spec

    def _network(self, candidate: Candidate) -> tuple:
        """What the candidate builds (:func:`~efficientnet.builder.network_key`): twins, candidates that differ only
        below the rounding of repeats and channels, build the same network."""
        from ..builder import network_key  # imports torch (efficientnet-pytorch's rounding): loaded on first use

        return network_key(self.spec(candidate))

    def stage_choices(self, candidate: Candidate) -> dict[int, StageChoice]:
        """The candidate's block choices as ``{stage index: StageChoice}``."""
        fields: dict[int, dict[str, Any]] = {}
        names = {"kernel": "kernel", "expand": "expand", "se": "se", "repeats": "repeats_delta"}
        for d, value in zip(self.choice_dims, candidate.choices):
            fields.setdefault(d.stage, {})[names[d.field]] = bool(value) if d.field == "se" else value
        return {stage: StageChoice(**kw) for stage, kw in fields.items()}

    def proposal(self, candidate: Candidate) -> Proposal:
        """The candidate as a proposal: coefficients (and phi), one ``stageN_field`` choice per dimension, the
        spec, and its hyperparameters (the tuner adds the costs and the budget)."""
        return Proposal(
            coefficients={**dict(zip(COEFFICIENTS, candidate.coefficients)), "phi": self.phi},
            choices={d.key: value for d, value in zip(self.choice_dims, candidate.choices)},
            spec=self.spec(candidate),
            hyper=dict(candidate.hyper),
        )

    def candidate_of(self, proposal: Proposal) -> Candidate | None:
        """The candidate a proposal (or an imported trial's) describes; None if it is not in the space."""
        known = {**proposal.coefficients, **proposal.choices}
        try:
            coefficients = []
            for dim in self.parsed.coefficients:
                index = dim.index_of(float(known.get(dim.name, 1.0)))
                if index is None:
                    return None
                coefficients.append(dim.values[index])
            choices = []
            for d in self.choice_dims:
                if d.key not in known or not STAGE_KEY.match(d.key):
                    return None
                choices.append(int(known[d.key]))
        except (TypeError, ValueError):
            return None
        if "phi" in known and not math.isclose(float(known["phi"]), self.phi):
            return None
        hyper = tuple((k, proposal.hyper[k]) for k in self.parsed.hyperparameters if k in proposal.hyper)
        candidate = Candidate(tuple(coefficients), tuple(choices), hyper)  # type: ignore[arg-type]
        return candidate if candidate in self else None
