"""Search-space parsing, the compound constraint, the candidate space, hardware budgets and search strategies
behind the project's NNI tuner (``tuner.EfficientNetTuner``)."""

from .budgets import BudgetError, Budgets, FeasibilityChecker, cached_profile
from .candidates import Candidate, CandidateSpace
from .constraint import CompoundConstraint, feasible_points
from .costs import CostEstimate, estimate_costs
from .space import SearchSpaceError, parse_search_space
from .strategies import STRATEGIES, EvolutionStrategy, GridStrategy, RandomStrategy, Strategy, make_strategy, register_strategy

__all__ = [
    "BudgetError",
    "Budgets",
    "Candidate",
    "CandidateSpace",
    "CompoundConstraint",
    "CostEstimate",
    "EvolutionStrategy",
    "FeasibilityChecker",
    "GridStrategy",
    "RandomStrategy",
    "STRATEGIES",
    "SearchSpaceError",
    "Strategy",
    "cached_profile",
    "estimate_costs",
    "feasible_points",
    "make_strategy",
    "parse_search_space",
    "register_strategy",
]
