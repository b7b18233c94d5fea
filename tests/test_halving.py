"""Successive halving over epochs (rungs, promotions that continue a checkpoint) and the cost of a trial in seconds
(the cost model, and bo ranking by expected improvement per second)."""

from __future__ import annotations

import numpy as np
import pytest

from efficientnet.search.cost_model import TrainingCostModel, observed_cost
from efficientnet.search.costs import estimated_profile
from efficientnet.search.halving import SuccessiveHalving
from spaces import DEFAULT_SPACE, LEGACY_SPACE, TWO_NETWORKS
from tuner import EfficientNetTuner


def make_tuner(strategy="bo", space=DEFAULT_SPACE, seed=0, **kwargs) -> EfficientNetTuner:
    tuner = EfficientNetTuner(strategy=strategy, seed=seed, base_resolution=64, num_classes=10,
                              profiler=estimated_profile, **kwargs)
    tuner.update_search_space(space)
    return tuner


@pytest.mark.parametrize("args, rungs", [((1, 3, 9), (1, 3, 9)), ((1, 2, 2), (1, 2)), ((2, 3, 5), (2, 5)),
                                         ((1, 3, 10), (1, 3, 9, 10)), ((1, 2, 5), (1, 2, 4, 5))])
def test_rungs_grow_by_eta_up_to_the_full_epochs(args, rungs):
    min_epochs, eta, full = args
    halving = SuccessiveHalving.from_class_args(min_epochs, eta, full)
    assert halving.rungs == rungs and halving.name(len(rungs) - 1) == "full" and halving.first == "rung0"
    budget = halving.budget("full", "T1")
    assert (budget.epochs, budget.schedule_epochs, budget.continue_from, budget.subset) == (full, full, "T1", 1.0)


@pytest.mark.parametrize("class_args, message", [
    ({"min_epochs": 1}, "min_epochs needs full_epochs"),
    ({"min_epochs": 3, "full_epochs": 3}, "must be below full_epochs"),
    ({"min_epochs": 1, "full_epochs": 3, "eta": 1}, "eta must be an integer >= 2"),
    ({"eta": 3, "full_epochs": 3}, "eta needs min_epochs"),
    ({"min_epochs": 1, "full_epochs": 3, "proxy_trials": 2, "proxy_epochs": 1}, "exclude each other"),
    ({"startup_s": -1}, "startup_s must be a number"),
    ({"cost_aware": "yes"}, "cost_aware must be true or false"),
])
def test_bad_successive_halving_or_cost_class_args_are_one_line(class_args, message):
    with pytest.raises(ValueError, match=message):
        EfficientNetTuner(**class_args)


def simulate(tuner: EfficientNetTuner, trials: int, accuracy) -> list[dict]:
    """Run ``trials`` trials one at a time; a trial that continues another trains only the epochs it lacks."""
    proposals, epochs_at = [], {}
    for pid in range(trials):
        p = tuner.generate_parameters(pid)
        start = epochs_at[p["continue_from"]] if p.get("continue_from") else 0
        p["_trained"] = list(range(start + 1, p["epochs"] + 1))
        epochs_at[f"T{pid}"] = p["epochs"]
        proposals.append(p)
        tuner.receive_trial_result(pid, p, {"default": accuracy(p), "epochs": p["epochs"],
                                            "epochs_trained": p["epochs"] - start,
                                            "train_seconds": 2.0 * (p["epochs"] - start)}, trial_job_id=f"T{pid}")
        tuner.trial_end(pid, True)
    return proposals


@pytest.mark.parametrize("strategy", ["bo", "random", "evolution"])
def test_promotions_continue_the_rung_below_and_no_epoch_is_trained_twice(strategy):
    tuner = make_tuner(strategy, min_epochs=1, full_epochs=9, eta=3)
    rank = {}
    proposals = simulate(tuner, 30, lambda p: rank.setdefault(p["arch"], len(rank) * 7 % 31) + p["epochs"])
    by_id = {f"T{i}": p for i, p in enumerate(proposals)}
    for p in proposals:
        assert p["schedule_epochs"] == 9 and p["subset"] == 1.0
        if p["budget"] == "rung0":
            assert p["epochs"] == 1 and "continue_from" not in p
        else:  # a promotion: the same architecture, one rung up, continuing that rung's trial
            below = by_id[p["continue_from"]]
            assert below["arch"] == p["arch"]
            assert (below["budget"], p["budget"]) in {("rung0", "rung1"), ("rung1", "full")}
    promoted = [p for p in proposals if p["budget"] != "rung0"]
    assert any(p["budget"] == "full" for p in promoted)
    trained: dict[str, list[int]] = {}
    for p in proposals:
        trained.setdefault(p["arch"], []).extend(p["_trained"])
    assert all(sorted(e) == list(range(1, len(e) + 1)) for e in trained.values()), trained
    rung0 = [p["arch"] for p in proposals if p["budget"] == "rung0"]
    assert len(rung0) == len(set(rung0))  # a new candidate every time


def test_only_the_top_third_of_a_rung_is_promoted_best_first():
    tuner = make_tuner("random", min_epochs=1, full_epochs=9, eta=3)
    first = [tuner.generate_parameters(pid) for pid in range(6)]
    for pid, score in enumerate([10, 60, 30, 50, 20, 40]):
        tuner.receive_trial_result(pid, first[pid], {"default": score}, trial_job_id=f"T{pid}")
        tuner.trial_end(pid, True)
    nxt = [tuner.generate_parameters(pid) for pid in range(6, 9)]
    assert [p.get("continue_from") for p in nxt[:2]] == ["T1", "T3"]  # 6 results: the best 2, best first
    assert nxt[2]["budget"] == "rung0"  # then a new candidate


def test_resumed_experiment_does_not_promote_an_imported_promotion_again():
    tuner = make_tuner("random", min_epochs=1, full_epochs=3, eta=3)
    first = [tuner.generate_parameters(pid) for pid in range(3)]
    data = [{"parameter": p, "value": {"default": s, "epochs": 1}} for p, s in zip(first, [10, 60, 30])]
    data.append({"parameter": {**first[1], "budget": "full", "epochs": 3}, "value": {"default": 70, "epochs": 3}})
    resumed = make_tuner("random", min_epochs=1, full_epochs=3, eta=3)
    resumed.import_data(data)
    assert resumed.options.halving.promotion(resumed.ledger) is None


def test_the_cost_model_learns_seconds_per_epoch_from_results_and_counts_the_start_up():
    tuner = make_tuner(space=LEGACY_SPACE, startup_s=5.0)
    model = tuner.cost_model
    assert isinstance(model, TrainingCostModel)
    rng = np.random.default_rng(1)
    cands = [tuner.space.sample(rng) for _ in range(40)]
    feats = model.encoding.features_of(cands)
    assert model.trial_seconds(feats, 3) is None  # no scale before the first result
    true_macs = np.exp([model.log_macs_of(c) for c in cands])
    assert np.median(np.abs(np.exp(model.log_macs(feats)) / true_macs - 1)) < 0.2  # the fitted MACs
    for c in cands[:6]:  # seconds per epoch in proportion to MACs: 1 s per 10 million
        model.observe(c, 2, 2 * np.exp(model.log_macs_of(c)) / 1e7)
    predicted = model.epoch_seconds(feats[6:])
    assert np.median(np.abs(predicted / (true_macs[6:] / 1e7) - 1)) < 0.25
    assert np.allclose(model.trial_seconds(feats[6:], 3), 5.0 + 3 * predicted)
    assert model.typical_epochs() == 2
    for c in cands[6:12]:  # continuations: one epoch trained, ending at epoch 4 (their source trained the rest)
        model.observe(c, 1, np.exp(model.log_macs_of(c)) / 1e7, reached=4)
    assert model.typical_epochs() == 3  # the median epoch trials end at (2 and 4), not the epochs they trained
    assert observed_cost({"epochs_trained": 2, "train_seconds": 3.5}) == (2, 3.5, 2)
    assert observed_cost({"epochs_trained": 1, "train_seconds": 3.5, "epochs": 3}).epochs == 3
    assert observed_cost({"default": 1.0}) is None and observed_cost(0.5) is None


def test_a_second_chance_is_priced_at_the_epochs_its_stopped_trial_has_left():
    """An assessor stops a 3-epoch trial after epoch 2: its second chance continues the checkpoint and trains one
    epoch, so bo's cost prices it at the start-up plus one epoch, not as a new 3-epoch trial."""
    tuner = make_tuner(space=LEGACY_SPACE, startup_s=5.0, n_init=4)
    for pid in range(3):
        p = tuner.generate_parameters(pid)
        tuner.receive_trial_result(pid, p, {"default": 50.0 + pid, "epochs": 3, "epochs_trained": 3,
                                            "train_seconds": 6.0}, trial_job_id=f"T{pid}")
        tuner.trial_end(pid, True)
    stopped = tuner.generate_parameters(3)
    tuner.receive_trial_result(3, stopped, {"default": 20.0, "loss": 2.0, "top5": 60.0, "f1": 0.1, "epoch": 2},
                               trial_job_id="T3")
    tuner.trial_end(3, False)
    record = tuner.ledger.of_trial(3)
    assert (record.state, record.stopped_at, record.second_chance) == ("partial", 2, "granted")
    space, model = tuner.space, tuner.cost_model
    indices = np.arange(space.size)
    features = model.encoding.features_of([space.at(i) for i in indices])
    seconds = tuner.strategy.cost(features, indices)  # what bo ranks by
    per_epoch = model.epoch_seconds(features)
    at = space.index(record.candidate)
    assert seconds[at] == pytest.approx(5.0 + 1 * per_epoch[at])
    others = indices != at
    assert np.allclose(seconds[others], 5.0 + 3 * per_epoch[others])  # a new trial: all 3 epochs
    assert np.allclose(tuner.strategy.cost(features, None), 5.0 + 3 * per_epoch)  # indices unknown: as new trials
    record.trial, trial = None, record.trial  # no trial id: nothing to continue, all 3 epochs again
    assert np.allclose(tuner.strategy.cost(features, indices), 5.0 + 3 * per_epoch)
    record.trial = trial
    again = None
    for pid in range(4, 4 + space.size):  # once the second chance is taken, its price is a new trial's again
        p = tuner.generate_parameters(pid)
        if p.get("continue_from") == "T3":
            again = p
            break
        tuner.receive_trial_result(pid, p, {"default": 40.0, "epochs": 3, "epochs_trained": 3, "train_seconds": 6.0},
                                   trial_job_id=f"T{pid}")
        tuner.trial_end(pid, True)
    assert again is not None and again["arch"] == stopped["arch"]
    assert np.allclose(tuner.strategy.cost(features, indices), 5.0 + 3 * model.epoch_seconds(features))


def test_bo_ranks_by_expected_improvement_per_second():
    """Every architecture scores alike, so expected improvement is alike everywhere, and deep networks are priced
    100x: the model's proposals avoid them when cost_aware, and not when blind to cost."""
    deep = {}
    for aware in (True, False):
        tuner = make_tuner(space=LEGACY_SPACE, cost_aware=aware, n_init=4, seed=1)
        rng = np.random.default_rng(1)
        chosen = []
        for pid in range(16):
            p = tuner.generate_parameters(pid)
            chosen.append(tuner.ledger.of_trial(pid).candidate.coefficients[0] >= 1.5)
            tuner.receive_trial_result(pid, p, {"default": 50.0 + 0.01 * rng.normal(), "epochs_trained": 1,
                                                "train_seconds": 1.0}, trial_job_id=f"T{pid}")
            tuner.trial_end(pid, True)
            if tuner.cost_model is not None:  # alpha >= 1.5 (its feature >= 0.5) costs 100 s, the rest 1 s
                tuner.cost_model.trial_seconds = lambda X, epochs: np.where(X[:, 0] >= 0.5, 100.0, 1.0)
        deep[aware] = sum(chosen[4:])  # after the 4 space-filling ones
    assert deep[True] == 0 and deep[False] >= 3, deep


def test_a_lower_rung_result_is_a_hint_on_the_full_scale_capped_at_the_median():
    from efficientnet.search.halving import rung_hint

    rung, full = [10.0, 20.0, 30.0, 40.0], [70.0, 80.0, 90.0]
    assert rung_hint(10.0, rung, full) == 70.0  # the worst of its rung: the worst full result
    assert rung_hint(40.0, rung, full) == 80.0  # the best: capped at the full results' median
    assert rung_hint(25.0, rung, []) is None  # no full result yet: no scale to put it on


def test_under_successive_halving_the_strategy_models_full_results_and_hears_rungs_as_hints():
    tuner = make_tuner("random", min_epochs=1, full_epochs=3, eta=3)
    told = []
    tell = tuner.strategy.tell
    tuner.strategy.tell = lambda c, v, partial=False: (told.append((c, v, partial)), tell(c, v, partial))[1]
    proposals = simulate(tuner, 8, lambda p: float(len(p["arch"]) % 7) + (50 if p["budget"] == "full" else 0))
    assert tuner.strategy_budget == "full"
    full = [p for p in proposals if p["budget"] == "full"]
    assert full and all(v >= 50 for _, v, partial in told if not partial)  # full-budget scores, told as such
    assert any(partial for _, _, partial in told)  # rung-0 results after the first full one, as hints
    assert all(v is None or v >= 50 for _, v, _ in told)  # every hint is on the full scale


def test_when_the_space_is_used_up_the_rest_of_a_rung_is_promoted_before_the_search_ends():
    import nni

    tuner = make_tuner("grid", space=LEGACY_SPACE, min_epochs=1, full_epochs=3, eta=3)
    space = tuner.space
    networks = len({space.network(space.at(i)) for i in range(space.size)})  # 59 of the 109 points' networks
    with pytest.raises(nni.NoMoreTrialError):
        simulate(tuner, 3 * space.size, lambda p: float(p["alpha"]) * 10 + p["epochs"])
    records = tuner.ledger.records.values()
    assert sum(r.budget == "rung0" for r in records) == networks < space.size  # every network once at rung 0
    assert sum(r.budget == "full" for r in records) == networks  # and every one promoted before the search ended


@pytest.mark.parametrize("strategy", ["bo", "evolution"])
def test_a_stopped_promotion_gets_its_second_chance_at_the_full_budget_continuing_it(strategy):
    """An assessor stops a full-budget trial (a promotion): its second chance continues that trial to the full
    epochs, with its learning rate, instead of training rung 0 again from scratch."""
    space = {**TWO_NETWORKS, "lr": DEFAULT_SPACE["lr"]}
    tuner = make_tuner(strategy, space, min_epochs=1, full_epochs=2, eta=2)
    proposals = []
    for pid in range(4):
        p = tuner.generate_parameters(pid)
        proposals.append(p)
        if pid == 2:  # the first promotion, stopped at epoch 1 of 2 (its last intermediate result is handed over)
            assert p["budget"] == "full"
            tuner.receive_trial_result(pid, p, {"default": 50.0, "loss": 1.0}, trial_job_id=f"T{pid}")
            tuner.trial_end(pid, False)
        else:
            tuner.receive_trial_result(pid, p, {"default": 60.0 + pid, "epochs": p["epochs"]}, trial_job_id=f"T{pid}")
            tuner.trial_end(pid, True)
    stopped, again = proposals[2], proposals[3]
    assert (again["budget"], again["epochs"], again["schedule_epochs"], again["continue_from"]) == ("full", 2, 2, "T2")
    assert (again["arch"], again["lr"]) == (stopped["arch"], stopped["lr"])
