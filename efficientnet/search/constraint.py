"""The compound-scaling constraint alpha·beta²·gamma² ≈ product, and the grid points that meet it."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from .space import CoefficientDim, SearchSpaceError

__all__ = ["CompoundConstraint", "feasible_points"]

DEFAULT_PRODUCT = 2.0
DEFAULT_TOLERANCE = 0.1


@dataclass(frozen=True)
class CompoundConstraint:
    """``|alpha * beta**2 * gamma**2 - product| <= tolerance`` (absolute tolerance).

    The default tolerance 0.1 (5 % of the paper's product 2) admits 109 of the 2,541 points of the legacy grid
    (alpha in [1, 2], beta and gamma in [1, 1.5], step 0.05), among them the paper's alpha=1.2, beta=1.1, gamma=1.15.
    """

    product: float = DEFAULT_PRODUCT
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        if not (isinstance(self.product, (int, float)) and math.isfinite(self.product) and self.product > 0):
            raise ValueError(f"classArg product must be a positive number, got {self.product!r}")
        if not (isinstance(self.tolerance, (int, float)) and math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(f"classArg tolerance must be a number >= 0, got {self.tolerance!r}")

    @staticmethod
    def value(alpha: float, beta: float, gamma: float) -> float:
        """alpha * beta**2 * gamma**2."""
        return alpha * beta * beta * gamma * gamma

    def satisfied(self, alpha: float, beta: float, gamma: float) -> bool:
        """Whether the point meets the constraint (with a hair of float slack)."""
        return abs(self.value(alpha, beta, gamma) - self.product) <= self.tolerance + 1e-9


def feasible_points(
    dims: tuple[CoefficientDim, CoefficientDim, CoefficientDim], constraint: CompoundConstraint
) -> list[tuple[float, float, float]]:
    """All grid points (lexicographic order) that meet ``constraint``; an error naming the keys when none does."""
    points = [p for p in itertools.product(*(d.values for d in dims)) if constraint.satisfied(*p)]
    if not points:
        lo = constraint.value(*(d.values[0] for d in dims))
        hi = constraint.value(*(d.values[-1] for d in dims))
        raise SearchSpaceError(
            f"no grid point of alpha/beta/gamma meets alpha*beta^2*gamma^2 = {constraint.product} ± "
            f"{constraint.tolerance} (the grid spans products {lo:.3f} .. {hi:.3f}): widen the alpha/beta/gamma "
            "ranges, use a finer q, or change the classArgs product/tolerance"
        )
    return points
