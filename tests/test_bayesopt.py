"""Bayesian optimisation (strategy ``bo``): the GP, expected improvement, efficiency against the random order, batches
of pending trials, hyperparameters, early-stopped (partial) results and spaces too large to enumerate."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy.optimize import approx_fprime
from scipy.stats import norm

from efficientnet.builder import network_key
from efficientnet.search.bayesopt import BayesOptStrategy
from efficientnet.search.costs import estimated_profile
from efficientnet.search.gp import GaussianProcess, expected_improvement, log_expected_improvement
from efficientnet.spec import ArchSpec
from spaces import DEFAULT_SPACE, LEGACY_SPACE
from synthetic import SyntheticObjective  # bench/synthetic.py
from tuner import EfficientNetTuner


def make_tuner(space: dict, **kwargs) -> EfficientNetTuner:
    tuner = EfficientNetTuner(strategy=kwargs.pop("strategy", "bo"), base_resolution=64, num_classes=10,
                              profiler=estimated_profile, **kwargs)
    tuner.update_search_space(space)
    return tuner


# ------------------------------------------------------------------------------------------------- the GP
def test_gp_gradient_is_that_of_the_log_posterior():
    rng = np.random.default_rng(0)
    X = rng.random((25, 3))
    y = np.sin(4 * X[:, 0]) + X[:, 1] ** 2
    gp = GaussianProcess()
    yz = (y - y.mean()) / y.std()
    extra = np.where(np.arange(25) == 3, 0.5, 0.0)
    diffs = (X[:, None, :] - X[None, :, :]) ** 2
    theta = rng.normal(size=5) * 0.5
    analytic = gp._neg_log_posterior(theta, X, yz, extra, diffs)[1]
    numeric = approx_fprime(theta, lambda t: gp._neg_log_posterior(t, X, yz, extra, diffs)[0], 1e-6)
    assert np.allclose(analytic, numeric, rtol=1e-4, atol=1e-4)


def test_gp_learns_a_smooth_function_and_its_uncertainty_is_calibrated():
    rng = np.random.default_rng(1)
    f = lambda X: np.sin(3 * X[:, 0]) + 0.5 * X[:, 1] ** 2 - X[:, 2]  # noqa: E731
    X, Xt = rng.random((40, 3)), rng.random((300, 3))
    gp = GaussianProcess().fit(X, f(X))
    mu, sd = gp.predict(Xt)
    assert np.corrcoef(mu, f(Xt))[0, 1] > 0.99
    inside = np.abs(mu - f(Xt)) <= 2 * sd
    assert inside.mean() > 0.85  # a 2-sigma band holds most of the truth
    _, sd_train = gp.predict(X)
    assert sd_train.max() < sd.mean()  # no doubt where it has seen the value


def test_log_ei_matches_ei_and_stays_finite_and_ordered_in_the_tail():
    mu = np.array([-3.0, -1.0, 0.0, 0.5, 2.0])
    sd = np.array([1.0, 0.5, 2.0, 1.0, 0.1])
    z = mu / sd
    exact = sd * (z * norm.cdf(z) + norm.pdf(z))
    assert np.allclose(expected_improvement(mu, sd, 0.0), exact, rtol=1e-9)
    tail = log_expected_improvement(np.array([-50.0, -100.0, -1e4]), np.ones(3), 0.0)
    assert np.all(np.isfinite(tail)) and tail[0] > tail[1] > tail[2]


# ------------------------------------------------------------------------------------------------- efficiency
def trials_to_best(tuner: EfficientNetTuner, objective: SyntheticObjective, target: float, cap: int = 109) -> int:
    for pid in range(cap):
        params = tuner.generate_parameters(pid)
        value = objective.value(params)
        if value >= target - 1e-9:
            return pid + 1
        tuner.receive_trial_result(pid, params, value)
        tuner.trial_end(pid, True)
    return cap + 1


def test_bo_finds_the_optimum_of_the_seed_space_in_a_fraction_of_the_random_orders_trials():
    """The legacy grid has 109 points; a uniform random order needs 55 trials on average to hit its best one."""
    counts = []
    for seed in range(6):
        objective = SyntheticObjective("smooth", seed)
        tuner = make_tuner(LEGACY_SPACE, seed=seed)
        best = max(objective.value(tuner.space.proposal(c).to_parameters()) for c in map(tuner.space.at, range(tuner.space.size)))
        counts.append(trials_to_best(tuner, objective, best))
    assert statistics.median(counts) <= 0.3 * 55, counts


def test_while_every_result_is_the_same_bo_keeps_covering_the_space():
    """Results all equal (a plateau, or every trial at chance) tell the GP nothing, and its expected improvement
    then sent bo back to a few corners of the coefficient grid: on a benchmark plateau (full space, seed 10) it never
    left them in 150 trials, where the random order expects 75. Until a result differs, bo keeps filling the space,
    as at its start."""
    points = []
    for seed in range(3):
        tuner = make_tuner(DEFAULT_SPACE, seed=seed)
        seen = []
        for pid in range(40):
            params = tuner.generate_parameters(pid)
            seen.append((params["alpha"], params["beta"], params["gamma"]))
            tuner.receive_trial_result(pid, params, 73.0)
            tuner.trial_end(pid, True)
        points.append(len(set(seen)))
    coefficient_points = len(tuner.space.points)
    uniform = coefficient_points * (1 - (1 - 1 / coefficient_points) ** 40)  # distinct points of 40 uniform draws
    assert min(points) >= 0.8 * uniform, (points, uniform)


def test_a_batch_of_pending_proposals_spreads_out():
    """Eight proposals asked before any result: the kriging believer keeps them apart; without it they crowd
    around the model's favourite."""
    spreads = {}
    for believer in (True, False):
        tuner = make_tuner(DEFAULT_SPACE, seed=3)
        objective = SyntheticObjective("smooth", 3)
        for pid in range(8):
            params = tuner.generate_parameters(pid)
            tuner.receive_trial_result(pid, params, objective.value(params))
            tuner.trial_end(pid, True)
        tuner.strategy.believer = believer
        batch = [tuner.strategy._features(c) for c in (tuner.strategy.ask() for _ in range(8))]
        X = np.array(batch)
        d = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
        spreads[believer] = d[np.triu_indices(8, 1)].mean()
        assert len({tuple(x) for x in X}) == 8
    assert spreads[True] > 1.3 * spreads[False], spreads


def test_bo_tunes_the_learning_rate_along_with_the_architecture():
    """lr is part of the search: the best trial's lr sits near the objective's best lr, much nearer than uniform
    draws from the search space's range (median over seeds), and every lr stays inside that range."""
    low, high = DEFAULT_SPACE["lr"]["_value"]
    uniform = np.exp(np.random.default_rng(0).uniform(np.log(low), np.log(high), 2000))
    found, chance = [], []
    for seed in range(6):
        objective = SyntheticObjective("smooth", seed, lr_range=(low, high))
        lr0 = objective._p["lr0"]
        tuner = make_tuner(DEFAULT_SPACE, seed=seed)
        lrs, best = [], (-math.inf, 0.0)
        for pid in range(40):
            params = tuner.generate_parameters(pid)
            value = objective.value(params)
            lrs.append(params["lr"])
            best = max(best, (value, params["lr"]))
            tuner.receive_trial_result(pid, params, value)
            tuner.trial_end(pid, True)
        assert all(low <= lr <= high for lr in lrs) and len(set(lrs)) > 20
        found.append(abs(math.log(best[1] / lr0)))
        chance.append(np.median(np.abs(np.log(uniform / lr0))))
    assert statistics.median(found) < 0.5 * statistics.median(chance), (found, chance)


def test_a_space_too_large_to_enumerate_is_searched_from_a_pool():
    tuner = make_tuner(DEFAULT_SPACE, seed=2)
    strategy = BayesOptStrategy(tuner.space, np.random.default_rng(0), tuner._is_free, max_enumerate=100,
                                pool_size=200)
    tuner.strategy = strategy
    assert not strategy.enumerated
    objective = SyntheticObjective("smooth", 2)
    seen = set()
    for pid in range(20):
        params = tuner.generate_parameters(pid)
        seen.add(params["arch"])
        tuner.receive_trial_result(pid, params, objective.value(params))
        tuner.trial_end(pid, True)
    assert len(seen) == 20 and strategy.proposed_by_model >= 10


# ------------------------------------------------------------------------------------------------- partial results
@pytest.mark.parametrize("max_enumerate", [50_000, 100], ids=["enumerated", "too-large-to-enumerate"])
def test_a_stopped_architecture_stays_among_the_candidates_the_model_scores(max_enumerate):
    """An assessor may stop a trial wrongly: its architecture keeps one second chance, which the model may take
    when it ranks the candidates, in a space too large to enumerate as in an enumerated one."""
    tuner = make_tuner(DEFAULT_SPACE, seed=3)
    strategy = BayesOptStrategy(tuner.space, np.random.default_rng(0), tuner._is_free, max_enumerate=max_enumerate,
                                pool_size=200)
    tuner.strategy = strategy
    assert strategy.enumerated == (max_enumerate > tuner.space.size)
    objective = SyntheticObjective("smooth", 2)
    for pid in range(8):
        params = tuner.generate_parameters(pid)
        tuner.receive_trial_result(pid, params, objective.value(params))
        tuner.trial_end(pid, True)
    stopped = tuner.generate_parameters(8)
    tuner.receive_trial_result(8, stopped, {"default": 50.0, "loss": 0.5, "top5": 90.0, "f1": 0.5, "epoch": 1},
                               trial_job_id="Stop8")
    tuner.trial_end(8, False)
    candidate = tuner.ledger.of_trial(8).candidate
    assert strategy.observations[candidate].partial and tuner._is_free(candidate)  # a granted second chance
    finished = [tuner.ledger.of_trial(pid).candidate for pid in range(8)]
    cands, indices = strategy._candidate_pool()  # what the model ranks next
    pool = cands if cands is not None else [tuner.space.at(int(i)) for i in indices]
    assert candidate in pool and not set(finished) & set(pool)
    priced = []  # the cost is told which candidates it prices: a second chance is priced at the epochs it has left
    strategy.cost = lambda features, indices: priced.append(indices)
    strategy._rank()
    assert tuner.space.index(candidate) in priced[0]


def test_a_partial_result_is_a_noisier_observation_that_is_never_the_incumbent():
    tuner = make_tuner(LEGACY_SPACE, seed=0)
    strategy = tuner.strategy
    candidates = [strategy.ask() for _ in range(6)]
    for i, c in enumerate(candidates[:5]):
        strategy.tell(c, 70.0 + i)
    strategy.tell(candidates[5], 99.0, partial=True)  # an (impossible) high partial value
    strategy._fit()
    assert strategy._incumbent != candidates[5] and strategy._best < 80
    X, y, extra = strategy._training_set()
    assert extra.tolist() == [0.0] * 5 + [strategy.partial_noise]


def test_bad_options_are_one_line_errors_naming_the_option():
    tuner = make_tuner(LEGACY_SPACE, seed=0)
    for kwargs, word in [({"n_init": 0}, "n_init"), ({"max_points": 3}, "max_points"),
                         ({"partial_noise": -1}, "partial_noise")]:
        with pytest.raises(ValueError, match=word) as info:
            BayesOptStrategy(tuner.space, np.random.default_rng(0), tuner._is_free, **kwargs)
        assert "\n" not in str(info.value)


def test_the_strategy_is_exhausted_only_when_every_network_is_used():
    tuner = make_tuner(LEGACY_SPACE, seed=1)
    objective = SyntheticObjective("multimodal", 1)
    seen, built = set(), set()
    import nni

    with pytest.raises(nni.NoMoreTrialError):
        for pid in range(200):
            params = tuner.generate_parameters(pid)
            seen.add((params["alpha"], params["beta"], params["gamma"]))
            built.add(network_key(ArchSpec.parse(params["arch"])))
            tuner.receive_trial_result(pid, params, objective.value(params))
            tuner.trial_end(pid, True)
    space = tuner.space
    networks = {space.network(space.at(i)) for i in range(space.size)}  # the 109 points build 59 networks
    assert len(seen) == len(built) == pid == len(networks) < space.size and built == networks
    assert not math.isnan(objective.value(params))


def test_the_search_benchmark_gives_twins_one_value_as_training_would():
    """bench/search_efficiency.py reads its objectives on networks: the legacy grid's twins (points that build the
    same network) share the value of the first of them, whether read one at a time or as the space's columns."""
    from search_efficiency import Problem, objective_for  # bench/search_efficiency.py

    problem = Problem.build("legacy", objective_for("smooth", 3, "legacy"))
    space = make_tuner(LEGACY_SPACE, seed=0).space
    rows = [space.proposal(space.at(i)).to_parameters() for i in range(space.size)]
    values = [float(problem.objective.value(r)) for r in rows]
    by_network: dict = {}
    for i, value in enumerate(values):
        by_network.setdefault(space.network(space.at(i)), set()).add(value)
    assert len(by_network) == 59 and all(len(v) == 1 for v in by_network.values())  # 109 points at 64 px
    assert len(set(values)) == 59  # the plain objective tells twins apart; read on networks it does not
    assert len({float(problem.objective.objective.value(r)) for r in rows}) == 109
    assert np.allclose(problem.objective.value(problem.arch), values)  # the columns' path agrees
