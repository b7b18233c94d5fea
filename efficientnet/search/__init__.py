"""Search-space parsing, the compound constraint, the candidate space, hardware budgets and search strategies
behind the project's NNI tuner (``tuner.EfficientNetTuner``)."""

from .bayesopt import BayesOptStrategy
from .budgets import BudgetError, Budgets, FeasibilityChecker, cached_profile
from .candidates import Candidate, CandidateSpace
from .constraint import CompoundConstraint, feasible_points
from .costs import CostEstimate, estimate_costs
from .space import SearchSpaceError, parse_search_space
from .pareto import MultiObjective, crowding_distance, non_dominated_sort, nsga2_fitness, pareto_front
from .predictor import PredictorStrategy, SurrogatePredictor, kendall_tau
from .proxy import ProxySchedule
from .strategies import EvolutionStrategy, GridStrategy, RandomStrategy, SearchStrategy
from .strategy_table import STRATEGIES, make_strategy, register_strategy

__all__ = [
    "BayesOptStrategy",
    "BudgetError",
    "Budgets",
    "Candidate",
    "CandidateSpace",
    "CompoundConstraint",
    "CostEstimate",
    "EvolutionStrategy",
    "FeasibilityChecker",
    "MultiObjective",
    "PredictorStrategy",
    "ProxySchedule",
    "SurrogatePredictor",
    "crowding_distance",
    "kendall_tau",
    "non_dominated_sort",
    "nsga2_fitness",
    "pareto_front",
    "GridStrategy",
    "RandomStrategy",
    "STRATEGIES",
    "SearchSpaceError",
    "SearchStrategy",
    "cached_profile",
    "estimate_costs",
    "feasible_points",
    "make_strategy",
    "parse_search_space",
    "register_strategy",
]
