"""Multi-objective helpers: Pareto dominance, NSGA-II non-dominated sorting with crowding, MnasNet's weighted reward.

Points are sequences of objective values; ``maximize[i]`` says whether objective ``i`` grows better (accuracy) or
shrinks better (latency, MACs). Everything here is plain Python on small lists (a population, a report's trials).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = [
    "OBJECTIVES",
    "MultiObjective",
    "dominates",
    "non_dominated_sort",
    "crowding_distance",
    "pareto_front",
    "nsga2_fitness",
    "weighted_reward",
]

# objective name -> (maximize?, keys to read it from a final-result dict or a proposal, in order)
OBJECTIVES: dict[str, tuple[bool, tuple[str, ...]]] = {
    "accuracy": (True, ("default",)),
    "latency_ms": (False, ("latency_ms",)),
    "macs": (False, ("macs",)),
    "params": (False, ("params",)),
}


def _oriented(point: Sequence[float], maximize: Sequence[bool]) -> tuple[float, ...]:
    """The point with every objective turned into 'higher is better'."""
    return tuple(v if up else -v for v, up in zip(point, maximize))


def dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool]) -> bool:
    """``a`` is at least as good as ``b`` in every objective and strictly better in one."""
    oa, ob = _oriented(a, maximize), _oriented(b, maximize)
    return all(x >= y for x, y in zip(oa, ob)) and any(x > y for x, y in zip(oa, ob))


def non_dominated_sort(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[list[int]]:
    """NSGA-II's fast non-dominated sort: fronts of indices, the first one non-dominated (Deb et al. 2002)."""
    n = len(points)
    dominated_by: list[list[int]] = [[] for _ in range(n)]
    counts = [0] * n
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j], maximize):
                dominated_by[i].append(j)
                counts[j] += 1
            elif dominates(points[j], points[i], maximize):
                dominated_by[j].append(i)
                counts[i] += 1
    fronts: list[list[int]] = []
    current = [i for i in range(n) if counts[i] == 0]
    while current:
        fronts.append(current)
        following = []
        for i in current:
            for j in dominated_by[i]:
                counts[j] -= 1
                if counts[j] == 0:
                    following.append(j)
        current = sorted(following)
    return fronts


def crowding_distance(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II crowding distance of each point within its front: boundary points get infinity."""
    n = len(points)
    if n == 0:
        return []
    distance = [0.0] * n
    for k in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][k])
        low, high = points[order[0]][k], points[order[-1]][k]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for pos in range(1, n - 1):
            i = order[pos]
            distance[i] += (points[order[pos + 1]][k] - points[order[pos - 1]][k]) / (high - low)
    return distance


def pareto_front(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Indices of the non-dominated points (duplicates of a front point are all kept), in input order."""
    fronts = non_dominated_sort(points, maximize)
    return sorted(fronts[0]) if fronts else []


def nsga2_fitness(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[float]:
    """One number per point, higher is better, ordering exactly like NSGA-II's crowded comparison:
    a lower front wins; within a front, a larger crowding distance wins."""
    out = [0.0] * len(points)
    for rank, front in enumerate(non_dominated_sort(points, maximize)):
        crowd = crowding_distance([points[i] for i in front])
        for i, c in zip(front, crowd):
            out[i] = -rank + 0.5 * (1.0 if math.isinf(c) else c / (1.0 + c))
    return out


def weighted_reward(accuracy: float, cost: float, target: float, w: float = -0.07) -> float:
    """MnasNet's soft-constrained reward ``accuracy · (cost / target) ** w`` (Tan et al. 2019; w = -0.07)."""
    if cost <= 0 or target <= 0:
        raise ValueError(f"cost and target must be positive, got cost={cost!r}, target={target!r}")
    return accuracy * (cost / target) ** w


@dataclass(frozen=True)
class MultiObjective:
    """The tuner's objectives: ``names`` (accuracy first), and how they combine.

    ``mode`` ``single``: only accuracy counts. ``weighted``: one scalar, MnasNet's reward with ``target`` (the target
    latency in ms or MACs) for the single cost objective. ``pareto``: parents are chosen by NSGA-II rank and crowding
    over (accuracy, costs...).
    """

    names: tuple[str, ...] = ("accuracy",)
    mode: str = "single"
    target: float | None = None
    w: float = -0.07

    @classmethod
    def from_class_args(
        cls, objectives: Sequence[str] | None, mode: str | None, target_latency_ms: float | None,
        target_macs: float | None, w: float = -0.07,
    ) -> "MultiObjective":
        names = tuple(objectives or ("accuracy",))
        if isinstance(objectives, str) or not names or names[0] != "accuracy" or len(set(names)) != len(names):
            raise ValueError(f"classArg objectives must be a list starting with 'accuracy', got {objectives!r}")
        unknown = [n for n in names if n not in OBJECTIVES]
        if unknown:
            raise ValueError(f"classArg objectives: unknown {unknown}; use accuracy, {', '.join(list(OBJECTIVES)[1:])}")
        if len(names) == 1:
            return cls(names)
        mode = mode or "pareto"
        if mode not in ("pareto", "weighted"):
            raise ValueError(f"classArg multi_objective must be 'pareto' or 'weighted', got {mode!r}")
        target = None
        if mode == "weighted":
            if len(names) != 2:
                raise ValueError("classArg multi_objective 'weighted' takes exactly one cost next to accuracy")
            if names[1] not in ("latency_ms", "macs"):
                raise ValueError("classArg multi_objective 'weighted' needs objectives [accuracy, latency_ms|macs]")
            target = target_latency_ms if names[1] == "latency_ms" else target_macs
            if not isinstance(target, (int, float)) or isinstance(target, bool) or target <= 0:
                key = "target_latency_ms" if names[1] == "latency_ms" else "target_macs"
                raise ValueError(f"classArg {key} must be a positive number for a weighted {names[1]} reward")
        if not isinstance(w, (int, float)) or w >= 0:
            raise ValueError(f"classArg reward_exponent must be a negative number, got {w!r}")
        return cls(names, mode, None if target is None else float(target), float(w))

    @property
    def maximize(self) -> tuple[bool, ...]:
        return tuple(OBJECTIVES[n][0] for n in self.names)

    @property
    def costs(self) -> tuple[str, ...]:
        return self.names[1:]

    def cost_values(self, *sources: Mapping[str, Any] | None) -> tuple[float, ...] | None:
        """The cost objectives, each from the first source that has it as a positive number (else None)."""
        out = []
        for name in self.costs:
            for source in sources:
                value = source.get(name) if isinstance(source, Mapping) else None
                if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                    out.append(float(value))
                    break
            else:
                return None
        return tuple(out)

    def scalar(self, score: float, costs: Sequence[float] | None) -> float:
        """The number strategies rank by: the accuracy score, or MnasNet's reward in weighted mode."""
        if self.mode != "weighted" or costs is None:
            return score
        assert self.target is not None
        return weighted_reward(score, costs[0], self.target, self.w)
