"""Shared guarantees of every search strategy, driven through the tuner's NNI API, plus the search-space parser.

The closed-form costs are checked against the profiler in ``tests/test_costs.py``."""

from __future__ import annotations

import itertools
import math
import statistics

import nni
import numpy as np
import pytest

from efficientnet.builder import network_key
from efficientnet.profiler import profile
from efficientnet.proposal import Proposal
from efficientnet.search import SearchSpaceError, estimate_costs, parse_search_space
from efficientnet.search.costs import estimated_profile
from efficientnet.search.space import quniform_grid
from efficientnet.search.strategies import EvolutionStrategy
from efficientnet.spec import ArchSpec, preset
from spaces import DEFAULT_SPACE, LEGACY_SPACE
from tuner import EfficientNetTuner

STRATEGIES = ["grid", "random", "evolution", "predictor", "bo"]

# A small space (12 coefficient points x 8 block choices) that the tests can exhaust.
SMALL_SPACE = {
    "alpha": {"_type": "quniform", "_value": [1.0, 2.0, 0.1]},
    "beta": {"_type": "quniform", "_value": [1.0, 1.3, 0.1]},
    "gamma": {"_type": "quniform", "_value": [1.0, 1.3, 0.1]},
    "stage5_kernel": {"_type": "choice", "_value": [3, 5]},
    "stage6_expand": {"_type": "choice", "_value": [4, 6]},
    "stage6_se": {"_type": "choice", "_value": [0, 1]},
    "lr": {"_type": "loguniform", "_value": [0.001, 0.1]},
    "batch_size": {"_type": "choice", "_value": [16, 32]},
}


def make_tuner(strategy: str, **kwargs) -> EfficientNetTuner:
    kwargs.setdefault("profiler", estimated_profile)
    kwargs.setdefault("base_resolution", 64)
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("population_size", 8)
    kwargs.setdefault("sample_size", 3)
    return EfficientNetTuner(strategy=strategy, **kwargs)


def all_networks(space: dict, tuner: EfficientNetTuner) -> set[tuple]:
    """Brute force: what every (alpha, beta, gamma, choices...) meeting the constraint and the params budget
    builds (candidates whose repeats and channels round alike build the same network)."""
    parsed = parse_search_space(space, tuner.options.base)
    out = set()
    for point in itertools.product(*(d.values for d in parsed.coefficients)):
        if not tuner.options.constraint.satisfied(*point):
            continue
        for choices in itertools.product(*(d.values for d in parsed.choices)):
            params = dict(zip(("alpha", "beta", "gamma"), point), phi=1.0)
            params.update({d.key: v for d, v in zip(parsed.choices, choices)})
            spec = Proposal.from_parameters(params).spec_on(tuner.options.base, tuner.options.base_resolution)
            if tuner.options.budgets.max_params is None or estimate_costs(spec, 10).params <= tuner.options.budgets.max_params:
                out.add(network_key(spec))
    return out


def key_of(params: dict, space: dict) -> tuple:
    return tuple(params.get(k, 1.0) for k in ("alpha", "beta", "gamma")) + tuple(
        params[k] for k in sorted(k for k in space if k.startswith("stage"))
    )


def drain(tuner: EfficientNetTuner, objective, concurrency: int = 3, fail_every: int = 0, limit: int = 10_000):
    """Run the tuner like NNI does: ``concurrency`` trials in flight, results in random order, some failures."""
    rng = np.random.default_rng(0)
    running: dict[int, dict] = {}
    proposals = []
    next_id = 0
    exhausted = False
    while (running or not exhausted) and len(proposals) < limit:
        while not exhausted and len(running) < concurrency:
            try:
                params = tuner.generate_parameters(next_id)
            except nni.NoMoreTrialError:
                exhausted = True
                break
            running[next_id] = params
            proposals.append(params)
            next_id += 1
        if not running:
            break
        pid = list(running)[int(rng.integers(len(running)))]
        params = running.pop(pid)
        if fail_every and pid % fail_every == fail_every - 1:
            tuner.trial_end(pid, False)
            continue
        value = objective(params)
        tuner.receive_trial_result(pid, params, {"default": value, "top5": 1.0} if pid % 2 else value)
        tuner.trial_end(pid, True)
    return proposals, exhausted


def sphere(params: dict) -> float:
    return -((params["alpha"] - 1.4) ** 2) - (params["beta"] - 1.1) ** 2


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_proposal_is_on_grid_within_constraint_and_budget_and_unique_until_exhausted(strategy):
    tuner = make_tuner(strategy, max_params=4.3e6, seed=3)
    tuner.update_search_space(SMALL_SPACE)
    proposals, exhausted = drain(tuner, sphere, fail_every=5)
    alpha_grid, bg_grid = quniform_grid(1.0, 2.0, 0.1), quniform_grid(1.0, 1.3, 0.1)
    keys = [key_of(p, SMALL_SPACE) for p in proposals]
    networks = [network_key(ArchSpec.parse(p["arch"])) for p in proposals]
    assert exhausted
    assert len(keys) == len(set(keys)), "duplicate proposal"
    assert len(networks) == len(set(networks)), "two proposals build the same network"
    assert set(networks) == all_networks(SMALL_SPACE, tuner), "every feasible network exactly once"
    for p in proposals:
        assert abs(p["alpha"] * p["beta"] ** 2 * p["gamma"] ** 2 - 2.0) <= 0.1 + 1e-9
        assert any(math.isclose(p["alpha"], v) for v in alpha_grid)
        assert any(math.isclose(p["beta"], v) for v in bg_grid) and any(math.isclose(p["gamma"], v) for v in bg_grid)
        assert p["params"] <= 4.3e6
        spec = ArchSpec.parse(p["arch"])
        assert Proposal.from_parameters(p).spec_on(tuner.options.base, 64) == spec
        assert Proposal.from_parameters({k: v for k, v in p.items() if k != "arch"}).spec_on(tuner.options.base, 64) == spec
        assert 0.001 <= p["lr"] <= 0.1 and p["batch_size"] in (16, 32)
    first = proposals[0]  # the proposal's costs are its architecture's, as the meta-device profiler counts them
    real = profile(ArchSpec.parse(first["arch"]), num_classes=10)
    assert (first["params"], first["macs"]) == (real.params, real.macs)
    with pytest.raises(nni.NoMoreTrialError):
        tuner.generate_parameters(10_000)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_failed_trials_are_never_parents_and_never_reproposed(strategy):
    tuner = make_tuner(strategy, seed=5)
    tuner.update_search_space(DEFAULT_SPACE)
    failed = set()
    for pid in range(40):
        params = tuner.generate_parameters(pid)
        if pid % 3 == 0:  # reports a great value, then fails
            tuner.receive_trial_result(pid, params, 100.0)
            tuner.trial_end(pid, False)
            failed.add(params["arch"])
        else:
            tuner.receive_trial_result(pid, params, {"default": sphere(params)})
            tuner.trial_end(pid, True)
    later = [tuner.generate_parameters(100 + i)["arch"] for i in range(20)]
    assert not failed & set(later)
    if isinstance(tuner.strategy, EvolutionStrategy):
        parents = {str(tuner.space.spec(c)) for c, _ in tuner.strategy.population}
        assert parents and not parents & failed
        assert all(value < 100 for _, value in tuner.strategy.population)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_minimize_mode_searches_as_maximize_mode_does_on_the_negated_objective(strategy):
    """Minimising -f is maximising f: with the same seed the strategy makes the same proposals in the same order."""
    runs = {}
    for mode, sign in (("maximize", 1.0), ("minimize", -1.0)):
        tuner = make_tuner(strategy, seed=2, optimize_mode=mode, max_params=4.3e6)
        tuner.update_search_space(SMALL_SPACE)
        proposals, _ = drain(tuner, lambda p: sign * sphere(p), limit=15)
        runs[mode] = [p["arch"] for p in proposals]
    assert runs["minimize"] == runs["maximize"] and len(set(runs["maximize"])) == 15


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_generate_multiple_parameters_stops_at_exhaustion(strategy):
    tuner = make_tuner(strategy, seed=2, max_params=4.3e6)
    tuner.update_search_space(SMALL_SPACE)
    batch = tuner.generate_multiple_parameters(list(range(500)))  # NNI's batch API stops at exhaustion
    assert len(batch) == len(all_networks(SMALL_SPACE, tuner))  # one proposal per network
    assert tuner.generate_multiple_parameters([999]) == []


def synthetic_objective(params: dict) -> float:
    """Smooth over the default space with a known optimum (alpha 1.5, beta 1.1, gamma ~1.15, fixed choices)."""
    value = -4 * (params["alpha"] - 1.5) ** 2 - 8 * (params["beta"] - 1.1) ** 2
    value -= 0.3 * abs(params["stage4_kernel"] - 5) / 2 + 0.3 * abs(params["stage4_expand"] - 4) / 2
    value -= 0.3 * abs(params["stage6_kernel"] - 3) / 2 + 0.3 * (params["stage6_se"] != 1)
    value -= 0.3 * abs(params["stage6_repeats"] - 1) / 2
    return value


def best_found(strategy: str, seed: int, trials: int = 80) -> float:
    tuner = make_tuner(strategy, seed=seed, population_size=16, sample_size=4)
    tuner.update_search_space(DEFAULT_SPACE)
    proposals, _ = drain(tuner, synthetic_objective, concurrency=4, limit=trials)
    return max(synthetic_objective(p) for p in proposals)


def test_evolution_beats_random_search_over_ten_seeds():
    evolution = [best_found("evolution", seed) for seed in range(10)]
    random = [best_found("random", seed) for seed in range(10)]
    wins = sum(e > r for e, r in zip(evolution, random))
    assert statistics.median(evolution) > statistics.median(random), (evolution, random)
    assert wins >= 7, (wins, evolution, random)


# ------------------------------------------------------------------------------------------- search-space checks
BAD_SPACES = [
    ({"alpha": {"_type": "qfoo", "_value": [1, 2, 0.1]}}, "alpha", "unknown _type"),
    ({"alpha": {"_type": "uniform", "_value": [1, 2]}}, "alpha", "quniform"),
    ({"beta": {"_type": "quniform", "_value": [1.5, 1.0, 0.05]}}, "beta", "low < high"),
    ({"gamma": {"_type": "quniform", "_value": [1.0, 1.0, 0.05]}}, "gamma", "low < high"),
    ({"gamma": {"_type": "quniform", "_value": [1.0, 1.5, 0]}}, "gamma", "q must be > 0"),
    ({"alpha": {"_type": "choice", "_value": []}}, "alpha", "non-empty"),
    ({"phi": {"_type": "choice", "_value": [1, 2]}}, "phi", "classArgs"),
    ({"arch": {"_type": "choice", "_value": ["b0"]}}, "arch", "reserved"),
    ({"stage3_kernal": {"_type": "choice", "_value": [3]}}, "stage3_kernal", "not a block choice"),
    ({"stage9_kernel": {"_type": "choice", "_value": [3]}}, "stage9_kernel", "stages 1..7"),
    ({"stage2_kernel": {"_type": "choice", "_value": [3, 4]}}, "stage2_kernel", "[3, 5, 7]"),
    ({"stage2_se": {"_type": "choice", "_value": [0, 2]}}, "stage2_se", "[0, 1]"),
    ({"stage1_repeats": {"_type": "choice", "_value": [-1, 0]}}, "stage1_repeats", "smallest delta is 0"),
    ({"stage2_expand": {"_type": "randint", "_value": [1, 6]}}, "stage2_expand", "choice"),
    ({"lr": {"_type": "loguniform", "_value": [0.1, 0.001]}}, "lr", "high > low"),
    ({"lr": {"_type": "gaussian", "_value": [0.1, 0.001]}}, "lr", "unsupported type"),
    ({"lr": [0.1]}, "lr", "_type"),
]


@pytest.mark.parametrize("bad,key,hint", BAD_SPACES)
def test_update_search_space_names_the_bad_key(bad, key, hint):
    tuner = make_tuner("evolution")
    with pytest.raises(SearchSpaceError) as info:
        tuner.update_search_space({**LEGACY_SPACE, **bad})
    message = str(info.value)
    assert key in message and hint in message and "\n" not in message


def test_no_grid_point_meets_the_product():
    tuner = make_tuner("grid", product=10.0)
    with pytest.raises(ValueError, match="alpha/beta/gamma.*product"):
        tuner.update_search_space(LEGACY_SPACE)
    tight = make_tuner("grid", product=2.0, tolerance=0.0)
    tight.update_search_space(LEGACY_SPACE)  # a zero tolerance still leaves the exact points (e.g. 2.0, 1.0, 1.0)
    assert all(math.isclose(a * b * b * g * g, 2.0) for a, b, g in tight.space.points)


def test_quniform_grid_follows_nni_semantics():
    assert quniform_grid(1.0, 2.0, 0.05)[:3] == (1.0, 1.05, 1.1) and len(quniform_grid(1.0, 2.0, 0.05)) == 21
    assert quniform_grid(1.02, 1.2, 0.1) == (1.02, 1.1, 1.2)  # clip(round(x / q) * q, low, high)
    parsed = parse_search_space(LEGACY_SPACE, preset("b0"))
    assert [len(d.values) for d in parsed.coefficients] == [21, 11, 11]
