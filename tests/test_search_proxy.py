"""Proxy training: budget keys in proposals, promotions of the best proxy architectures, per-budget bookkeeping."""

from __future__ import annotations

import pytest

from efficientnet.proposal import Proposal
from efficientnet.search.costs import estimated_profile
from efficientnet.search.proxy import FULL, PROXY
from spaces import DEFAULT_SPACE
from tuner import EfficientNetTuner


def make_tuner(strategy="evolution", **kwargs) -> EfficientNetTuner:
    tuner = EfficientNetTuner(strategy=strategy, seed=0, base_resolution=64, num_classes=10, population_size=4,
                              sample_size=2, profiler=estimated_profile, **kwargs)
    tuner.update_search_space(DEFAULT_SPACE)
    return tuner


@pytest.mark.parametrize("strategy", ["evolution", "predictor"])
def test_proxy_trials_then_promotions_then_full_budget(strategy):
    tuner = make_tuner(strategy, proxy_subset=0.3, proxy_epochs=1, proxy_trials=6, promote_top=2, full_epochs=5,
                       warmup=3)
    proxy = [tuner.generate_parameters(pid) for pid in range(6)]
    assert all(p["budget"] == PROXY and p["subset"] == 0.3 and p["epochs"] == 1 for p in proxy)
    scores = [50.0, 90.0, 10.0, 70.0, 20.0, 30.0]
    for pid in (5, 3, 1, 0, 2):  # one proxy trial (pid 4) still running when the full phase starts
        tuner.receive_trial_result(pid, proxy[pid], {"default": scores[pid], "epochs": 1})
    full = [tuner.generate_parameters(pid) for pid in range(6, 9)]
    assert all(p["budget"] == FULL and p["subset"] == 1.0 and p["epochs"] == 5 for p in full)
    assert [p["arch"] for p in full[:2]] == [proxy[1]["arch"], proxy[3]["arch"]]  # the two best, best first
    assert full[2]["arch"] not in {p["arch"] for p in proxy}  # then new architectures
    # full-budget results start the search afresh: proxy numbers are never ranked against them
    assert tuner.strategy_budget == FULL and len(tuner.strategy.population) == 0
    tuner.receive_trial_result(6, full[0], {"default": 60.0})
    tuner.receive_trial_result(4, proxy[4], {"default": 99.0})  # a late proxy result: filed under proxy ...
    assert [v for _, v in tuner.strategy.population] == [60.0]
    assert tuner.ledger.records[(tuner.space.candidate_of(Proposal.from_parameters(proxy[4])), PROXY)].score == 99.0
    late = tuner.generate_parameters(9)  # ... and, now among the top 2, promoted next
    assert late["arch"] == proxy[4]["arch"] and late["budget"] == FULL
    assert tuner.generate_parameters(10)["arch"] != proxy[1]["arch"]  # no architecture promoted twice


def test_failed_proxy_trials_are_not_promoted_and_import_restores_budgets():
    tuner = make_tuner(proxy_epochs=1, proxy_trials=3, promote_top=1)
    proxy = [tuner.generate_parameters(pid) for pid in range(3)]
    assert all(p["budget"] == PROXY and p["subset"] == 1.0 and p["epochs"] == 1 for p in proxy)
    tuner.receive_trial_result(0, proxy[0], 95.0)
    tuner.trial_end(0, False)  # reported, then failed
    tuner.receive_trial_result(1, proxy[1], 40.0)
    tuner.receive_trial_result(2, proxy[2], 30.0)
    promoted = tuner.generate_parameters(3)
    assert promoted["arch"] == proxy[1]["arch"] and promoted["budget"] == FULL and "epochs" not in promoted
    records = [{"parameter": p, "value": v} for p, v in zip(proxy[1:] + [promoted], [40.0, 30.0, 45.0])]
    resumed = make_tuner(proxy_epochs=1, proxy_trials=3, promote_top=1)
    resumed.import_data(records)
    assert resumed.ledger.proposed(PROXY) == 2 and resumed.options.proxy.next_budget(resumed.ledger) == PROXY
    assert resumed.generate_parameters(100)["budget"] == PROXY
    nxt = resumed.generate_parameters(101)  # proxy phase over; the best proxy result was already promoted
    assert nxt["budget"] == FULL and nxt["arch"] not in {p["arch"] for p in proxy}
    assert [v for _, v in resumed.strategy.population] == [45.0]


def test_without_proxy_training_proposals_carry_no_budget_keys():
    p = make_tuner().generate_parameters(0)
    assert not {"budget", "subset", "epochs"} & set(p)
    assert make_tuner(full_epochs=7).generate_parameters(0)["epochs"] == 7


@pytest.mark.parametrize("kwargs,word", [
    ({"proxy_subset": 0.0, "proxy_trials": 3}, "proxy_subset"), ({"proxy_epochs": 0, "proxy_trials": 3}, "proxy_epochs"),
    ({"proxy_trials": 3}, "proxy_subset and/or proxy_epochs"), ({"proxy_subset": 0.5}, "proxy_trials"),
    ({"proxy_subset": 0.5, "proxy_trials": 2, "promote_top": 3}, "promote_top"), ({"promote_top": 2}, "promote_top"),
])
def test_bad_proxy_class_args(kwargs, word):
    with pytest.raises(ValueError, match=word):
        EfficientNetTuner(**kwargs)
