"""Pareto dominance, NSGA-II sorting and crowding on hand-made points; multi-objective classArgs in the tuner."""

from __future__ import annotations

import math

import pytest

from efficientnet.proposal import Proposal
from efficientnet.search.costs import estimated_profile
from efficientnet.search.pareto import (
    crowding_distance, dominates, non_dominated_sort, nsga2_fitness, pareto_front, weighted_reward,
)
from spaces import DEFAULT_SPACE
from tuner import EfficientNetTuner

UP_DOWN = (True, False)  # maximise accuracy, minimise cost

# (accuracy, MACs): A, B, C, D are the front; E is dominated by B only; F by everything but G; G is dominated by all
POINTS = [(90, 400), (85, 200), (80, 100), (70, 50), (84, 250), (60, 300), (50, 500)]


def test_dominance_is_strict_and_oriented():
    assert dominates((90, 100), (80, 100), UP_DOWN) and dominates((90, 100), (90, 200), UP_DOWN)
    assert not dominates((90, 100), (90, 100), UP_DOWN)  # equal points do not dominate each other
    assert not dominates((90, 200), (80, 100), UP_DOWN)  # a trade-off
    assert dominates((1, 1), (0, 0), (True, True)) and not dominates((1, 1), (0, 0), (False, False))


def test_fronts_of_hand_made_points():
    assert pareto_front(POINTS, UP_DOWN) == [0, 1, 2, 3]
    assert non_dominated_sort(POINTS, UP_DOWN) == [[0, 1, 2, 3], [4], [5], [6]]
    assert pareto_front([(1, 1), (1, 1), (0, 2)], UP_DOWN) == [0, 1]  # duplicates stay on the front together
    assert pareto_front([], UP_DOWN) == [] and non_dominated_sort([(3, 3)], UP_DOWN) == [[0]]


def test_crowding_distance_matches_nsga2_by_hand():
    front = [POINTS[i] for i in (0, 1, 2, 3)]  # accuracy range 20, MACs range 350
    d = crowding_distance(front)
    assert math.isinf(d[0]) and math.isinf(d[3])
    assert math.isclose(d[1], (90 - 80) / 20 + (400 - 100) / 350)
    assert math.isclose(d[2], (85 - 70) / 20 + (200 - 50) / 350)


def test_nsga2_fitness_orders_by_front_then_crowding():
    fit = nsga2_fitness(POINTS, UP_DOWN)
    assert min(fit[:4]) > fit[4] > fit[5] > fit[6]
    assert fit[0] == fit[3] > fit[1] > fit[2]  # boundary points first, then the less crowded inner point (by hand above)


def test_weighted_reward_is_mnasnet():
    assert math.isclose(weighted_reward(80.0, 10.0, 10.0), 80.0)
    assert math.isclose(weighted_reward(80.0, 20.0, 10.0), 80.0 * 2 ** -0.07)
    assert weighted_reward(80.0, 5.0, 10.0) > 80.0  # under target: a small bonus


@pytest.mark.parametrize("kwargs,word", [
    ({"objectives": ["latency_ms"]}, "objectives"), ({"objectives": ["accuracy", "flops"]}, "unknown"),
    ({"objectives": ["accuracy", "macs"], "multi_objective": "lexicographic"}, "multi_objective"),
    ({"objectives": ["accuracy", "latency_ms"], "multi_objective": "weighted"}, "target_latency_ms"),
    ({"objectives": ["accuracy", "macs"], "multi_objective": "weighted", "target_macs": 1e8, "reward_exponent": 0.1},
     "reward_exponent"),
    ({"objectives": ["accuracy", "macs"], "optimize_mode": "minimize"}, "maximize"),
])
def test_bad_objective_class_args_name_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        EfficientNetTuner(**kwargs)


def _tuner(**kwargs) -> EfficientNetTuner:
    tuner = EfficientNetTuner(seed=0, base_resolution=64, num_classes=10, population_size=6, sample_size=3,
                              profiler=estimated_profile, **kwargs)
    tuner.update_search_space(DEFAULT_SPACE)
    return tuner


def test_weighted_mode_tells_the_strategy_mnasnet_rewards_from_the_result_dict():
    tuner = _tuner(strategy="evolution", objectives=["accuracy", "latency_ms"], multi_objective="weighted",
                   target_latency_ms=20.0)
    for pid in range(4):
        p = tuner.generate_parameters(pid)
        tuner.receive_trial_result(pid, p, {"default": 80.0, "latency_ms": 10.0 * (pid + 1), "macs": p["macs"]})
    rewards = [v for _, v in tuner.strategy.population]
    assert all(math.isclose(r, weighted_reward(80.0, 10.0 * (i + 1), 20.0)) for i, r in enumerate(rewards))


@pytest.mark.parametrize("strategy", ["evolution", "predictor"])
def test_pareto_mode_picks_parents_on_the_front(strategy):
    tuner = _tuner(strategy=strategy, objectives=["accuracy", "macs"], multi_objective="pareto")
    results = {}
    for pid in range(6):
        p = tuner.generate_parameters(pid)
        # accuracy rises with MACs except one cheap, accurate model that dominates half the others
        acc = 95.0 if pid == 0 else 60.0 + p["macs"] / 1e7
        results[tuner.space.candidate_of(Proposal.from_parameters(p))] = (acc, p["macs"])
        tuner.receive_trial_result(pid, p, {"default": acc, "macs": p["macs"]})
    front = {c for c, (acc, macs) in results.items()
             if not any(dominates(o, (acc, macs), UP_DOWN) for o in results.values())}
    members = list(tuner.strategy.population)
    fit = tuner._pareto_fitness(members)
    on_front = [f for (c, _), f in zip(members, fit) if c in front]
    off_front = [f for (c, _), f in zip(members, fit) if c not in front]
    assert on_front and off_front and min(on_front) > max(off_front)
    parents = {tuner.strategy.select() for _ in range(60)}
    assert parents <= set(results) and parents & front
    # a tournament of 3 out of 6 always holds one of 4 or more members dominating a candidate: it never wins
    assert all(sum(dominates(o, results[c], UP_DOWN) for o in results.values()) < 4 for c in parents)
    for pid in range(6, 10):  # and the search goes on
        p = tuner.generate_parameters(pid)
        tuner.receive_trial_result(pid, p, {"default": 70.0, "macs": p["macs"]})


def test_bo_in_pareto_mode_models_the_nsga2_fitness_and_its_incumbent_is_on_the_front():
    tuner = _tuner(objectives=["accuracy", "macs"], multi_objective="pareto")
    results = {}
    for pid in range(12):
        p = tuner.generate_parameters(pid)
        acc = 95.0 if pid == 3 else 60.0 + p["macs"] / 1e7  # one cheap, accurate model; otherwise bigger is better
        results[tuner.space.candidate_of(Proposal.from_parameters(p))] = (acc, p["macs"])
        tuner.receive_trial_result(pid, p, {"default": acc, "macs": p["macs"]})
        tuner.trial_end(pid, True)
    strategy = tuner.strategy
    strategy._fit()
    front = {c for c, v in results.items() if not any(dominates(o, v, UP_DOWN) for o in results.values())}
    scores = {c: o.score for c, o in strategy.observations.items()}
    assert min(scores[c] for c in front) > max(s for c, s in scores.items() if c not in front)
    assert strategy._incumbent in front
