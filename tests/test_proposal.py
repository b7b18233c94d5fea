"""The proposal: one typed value from the tuner to the trial, carried by NNI as the flat dict it always was."""

from __future__ import annotations

import json

import pytest

from efficientnet.proposal import Budget, Proposal
from efficientnet.search.costs import estimated_profile
from efficientnet.spec import ArchSpec, SpecError, StageChoice, preset
from spaces import DEFAULT_SPACE
from tuner import EfficientNetTuner


@pytest.mark.parametrize("class_args", [
    {},
    {"proxy_trials": 2, "proxy_subset": 0.3, "proxy_epochs": 1, "promote_top": 1},
    {"full_epochs": 7},
])
def test_the_tuners_proposals_round_trip_through_nnis_dict_exactly(class_args):
    tuner = EfficientNetTuner(seed=3, base_resolution=32, num_classes=10, profiler=estimated_profile, **class_args)
    tuner.update_search_space(DEFAULT_SPACE)
    for pid in range(4):
        params = tuner.generate_parameters(pid)
        json.loads(json.dumps(params))  # what NNI carries is plain JSON
        proposal = Proposal.from_parameters(params)
        assert proposal.to_parameters() == params and list(proposal.to_parameters()) == list(params)  # key order too
        assert proposal.spec == ArchSpec.parse(params["arch"]) == proposal.spec_on(preset("b0"))
        assert set(proposal.costs) == {"params", "macs", "model_size_mb", "peak_memory_mb"}
        # full_epochs without proxy training is a plain setting, as the trial's --epochs
        assert set(proposal.hyper) == {"lr", "batch_size"} | ({"epochs"} if "full_epochs" in class_args else set())
    if class_args.get("proxy_trials"):  # the first proposals carry the proxy budget, the trial reads it as settings
        first = Proposal.from_parameters(tuner.ledger.proposals[0].to_parameters())
        assert first.budget == Budget("proxy", 0.3, 1) and first.budget_name == "proxy"
        assert first.training()["subset"] == 0.3 and first.training()["epochs"] == 1
    if class_args.get("full_epochs"):  # no proxy phase: only the epochs, a plain setting
        assert Proposal.from_parameters(params).training()["epochs"] == 7 and proposal.budget_name == "full"


def test_the_legacy_tuners_coefficients_apply_to_the_trials_base_architecture():
    """The legacy FixedProductTuner sent alpha, beta and gamma only: the trial scales its own --arch with them."""
    legacy = {"alpha": 1.2, "beta": 1.1, "gamma": 1.15, "lr": 0.02}
    proposal = Proposal.from_parameters(legacy)
    assert proposal.to_parameters() == legacy and proposal.names_architecture and proposal.spec is None
    spec = proposal.spec_on(preset("b0"), base_resolution=300)
    assert spec == ArchSpec.from_compound(1.2, 1.1, 1.15, 1.0, base="b0", base_resolution=300)
    assert proposal.training() == {"lr": 0.02}


def test_block_choices_hyperparameters_and_unknown_keys_keep_their_places():
    params = {"stage4_kernel": 5, "stage4_se": 0, "stage2_repeats": 1, "dropout_schedule": "x", "batch_size": 64}
    proposal = Proposal.from_parameters(params)
    assert proposal.choices == {"stage4_kernel": 5, "stage4_se": 0, "stage2_repeats": 1}
    assert proposal.stage_choices() == {1: StageChoice(repeats_delta=1), 3: StageChoice(kernel=5, se=False)}
    assert proposal.hyper == {"dropout_schedule": "x", "batch_size": 64}  # the trial says which it ignores
    assert not proposal.names_architecture and proposal.to_parameters() == params
    spec = proposal.spec_on(preset("lite0"))
    assert spec.stages[3].kernel == 5 and spec.stages[1].repeats == preset("lite0").stages[1].repeats + 1


def test_an_empty_proposal_and_a_damaged_arch():
    assert Proposal.from_parameters(None).empty and Proposal.from_parameters({}).to_parameters() == {}
    assert Proposal().budget_name == "full" and Proposal().spec_on(preset("b0")) == preset("b0")
    with pytest.raises(SpecError):
        Proposal.from_parameters({"arch": "not/a spec"})
