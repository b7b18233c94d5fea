"""The search strategies by the name classArg ``strategy`` gives them: one explicit table."""

from __future__ import annotations

from typing import Callable

import numpy as np

from .bayesopt import BayesOptStrategy
from .candidates import CandidateSpace
from .predictor import PredictorStrategy
from .strategies import EvolutionStrategy, GridStrategy, IsFree, RandomStrategy, SearchStrategy

__all__ = ["STRATEGIES", "register_strategy", "make_strategy"]

STRATEGIES: dict[str, Callable[..., SearchStrategy]] = {
    "bo": BayesOptStrategy,
    "evolution": EvolutionStrategy,
    "predictor": PredictorStrategy,
    "random": RandomStrategy,
    "grid": GridStrategy,
}


def register_strategy(name: str, factory: Callable[..., SearchStrategy]) -> None:
    """Make ``factory(space, rng, is_free, **options)`` available as classArg ``strategy: name`` (a strategy of your
    own: a :class:`~efficientnet.search.strategies.SearchStrategy`)."""
    STRATEGIES[name] = factory


def make_strategy(
    name: str, space: CandidateSpace, rng: np.random.Generator, is_free: IsFree, **options: object
) -> SearchStrategy:
    """Build the strategy called ``name``; a ValueError naming the choices when it is unknown."""
    if name not in STRATEGIES:
        raise ValueError(f"classArg strategy {name!r} is unknown: use one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name](space, rng, is_free, **options)
