"""The tuner through NNI's API with the real meta-device profiler: the seed config, budgets, resume/import."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nni
import pytest
from nni.tools.package_utils.tuner_factory import create_customized_class_instance

from efficientnet.profiler import profile
from efficientnet.search import BudgetError, SearchSpaceError
from efficientnet.search.costs import estimated_profile
from efficientnet.search.space import quniform_grid
from efficientnet.spec import ArchSpec
from tuner import EfficientNetTuner, FixedProductTuner

ROOT = Path(__file__).resolve().parents[1]
SEED_SPACE = json.loads((ROOT / "search_space_seed.json").read_text())
DEFAULT_SPACE = json.loads((ROOT / "search_space.json").read_text())


def on_grid(value: float, low: float, high: float, q: float) -> bool:
    return any(math.isclose(value, v) for v in quniform_grid(low, high, q))


def test_nni_loads_the_seed_config_and_every_point_meets_the_product():
    tuner = create_customized_class_instance(
        {"codeDirectory": str(ROOT), "className": "tuner.FixedProductTuner", "classArgs": {"product": 2}}
    )
    assert isinstance(tuner, nni.tuner.Tuner) and isinstance(tuner, FixedProductTuner)
    tuner.update_search_space(SEED_SPACE)
    for pid in range(3):  # real profiles (b0 at 224 px)
        p = tuner.generate_parameters(pid)
        assert abs(p["alpha"] * p["beta"] ** 2 * p["gamma"] ** 2 - 2.0) <= 0.1 + 1e-9
        assert on_grid(p["alpha"], 1.0, 2.0, 0.05) and on_grid(p["beta"], 1.0, 1.5, 0.05)
        assert on_grid(p["gamma"], 1.0, 1.5, 0.05)
        spec = ArchSpec.parse(p["arch"])
        assert spec == ArchSpec.from_compound(p["alpha"], p["beta"], p["gamma"], 1.0, base="b0")
        assert (p["params"], p["macs"]) == (profile(spec).params, profile(spec).macs)
        tuner.receive_trial_result(pid, p, {"default": 0.5})
        tuner.trial_end(pid, True)


def test_seed_grid_is_complete_then_exhausted():
    tuner = FixedProductTuner(product=2, profiler=estimated_profile)
    tuner.update_search_space(SEED_SPACE)
    points = set()
    with pytest.raises(nni.NoMoreTrialError):
        for pid in range(1000):
            p = tuner.generate_parameters(pid)
            points.add((p["alpha"], p["beta"], p["gamma"]))
    assert len(points) == pid == 109  # the seed grid's points within 2 ± 0.1, each once
    assert (1.2, 1.1, 1.15) in points  # the paper's coefficients


def test_budgets_are_respected_with_the_real_profiler():
    budgets = {"max_params": 4.4e6, "max_macs": 9e7, "max_peak_memory_mb": 1.6, "max_model_size_mb": 17.0}
    tuner = EfficientNetTuner(seed=0, base="lite0", base_resolution=64, num_classes=10, **budgets)
    tuner.update_search_space(DEFAULT_SPACE)
    for pid in range(4):
        p = tuner.generate_parameters(pid)
        prof = profile(ArchSpec.parse(p["arch"]), num_classes=10)
        assert prof.params <= 4.4e6 and prof.macs <= 9e7 and prof.model_size_mb <= 17.0
        assert prof.peak_memory_mb <= 1.6 and math.isclose(p["peak_memory_mb"], prof.peak_memory_mb, abs_tol=1e-3)
    assert tuner.checker.rejected > 0  # the budgets did bind


def test_latency_budget_is_measured():
    space = {"alpha": {"_type": "choice", "_value": [2.0]}, "lr": {"_type": "choice", "_value": [0.01]}}
    tuner = EfficientNetTuner(base_resolution=32, num_classes=10, max_latency_ms=10_000, seed=0)
    tuner.update_search_space(space)
    p = tuner.generate_parameters(0)
    assert 0 < p["latency_ms"] <= 10_000 and p["lr"] == 0.01
    with pytest.raises(nni.NoMoreTrialError):
        tuner.generate_parameters(1)


@pytest.mark.parametrize("budget,value", [("max_params", 1e5), ("max_macs", 1e6), ("max_model_size_mb", 1.0)])
def test_infeasible_budget_is_an_error_at_start_naming_the_budget(budget, value):
    tuner = EfficientNetTuner(base_resolution=64, num_classes=10, **{budget: value})
    with pytest.raises(BudgetError, match=f"no feasible architecture: {budget}=") as info:
        tuner.update_search_space(DEFAULT_SPACE)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_infeasible_peak_memory_is_found_with_the_profiler():
    space = {"alpha": {"_type": "choice", "_value": [2.0]}, "gamma": {"_type": "choice", "_value": [1.0]}}
    tuner = EfficientNetTuner(base_resolution=32, num_classes=10, max_peak_memory_mb=0.01)
    with pytest.raises(BudgetError, match="max_peak_memory_mb=0.01 but the smallest candidate needs"):
        tuner.update_search_space(space)


def test_bad_class_args_name_the_argument():
    for kwargs, word in [({"strategy": "anneal"}, "strategy"), ({"base": "b9"}, "base"),
                         ({"optimize_mode": "max"}, "optimize_mode"), ({"max_params": -1}, "max_params"),
                         ({"tolerance": -0.1}, "tolerance"), ({"population_size": 1}, "population_size")]:
        with pytest.raises(ValueError, match=word):
            EfficientNetTuner(**kwargs).update_search_space(SEED_SPACE)


def test_import_data_restores_the_population_and_prevents_duplicates():
    first = EfficientNetTuner(seed=1, population_size=10, sample_size=3, profiler=estimated_profile)
    first.update_search_space(DEFAULT_SPACE)
    records = []
    for pid in range(15):
        p = first.generate_parameters(pid)
        value = p["alpha"] - p["beta"]
        # NNI hands values over as numbers, dicts with "default", or JSON strings
        records.append({"parameter": p, "value": [value, {"default": value}, json.dumps({"default": value})][pid % 3]})
    records.append({"parameter": {"alpha": 1.23, "beta": 1.0, "gamma": 1.0}, "value": 0.9})  # off the grid: skipped
    records.append({"parameter": records[0]["parameter"], "value": "not a number"})  # skipped
    resumed = EfficientNetTuner(seed=2, population_size=10, sample_size=3, profiler=estimated_profile)
    resumed.update_search_space(DEFAULT_SPACE)
    resumed.import_data(records)
    imported = {r["parameter"]["arch"] for r in records[:15]}
    population = resumed.strategy.population
    assert len(population) == 10
    assert {str(resumed.space.spec(c)) for c, _ in population} <= imported
    expected = [r["parameter"]["alpha"] - r["parameter"]["beta"] for r in records[5:15]]  # the 10 newest
    assert all(math.isclose(v, e) for (_, v), e in zip(population, expected))
    fresh = [resumed.generate_parameters(100 + i)["arch"] for i in range(30)]
    assert not imported & set(fresh) and len(set(fresh)) == 30


def test_results_out_of_order_and_unknown_ids_are_handled():
    tuner = EfficientNetTuner(seed=4, population_size=4, sample_size=2, profiler=estimated_profile)
    tuner.update_search_space(DEFAULT_SPACE)
    proposals = {pid: tuner.generate_parameters(pid) for pid in range(6)}
    for pid in (5, 2, 0, 4, 1, 3):  # reverse-ish order, mixed metric forms
        tuner.receive_trial_result(pid, proposals[pid], {"default": float(pid)} if pid % 2 else pid)
    tuner.receive_trial_result(999, {"lr": 0.1}, 1.0)  # a customized trial outside the space: ignored
    tuner.trial_end(999, False)
    # aging follows arrival, not proposal order: the first two results to arrive (5 and 2) left the population
    assert [v for _, v in tuner.strategy.population] == [0.0, 4.0, 1.0, 3.0]
    with pytest.raises(RuntimeError, match="Incorrect final result"):
        tuner.receive_trial_result(0, proposals[0], {"top1": 0.3})


def test_generate_before_search_space_and_bad_space_type():
    tuner = EfficientNetTuner()
    with pytest.raises(RuntimeError, match="update_search_space"):
        tuner.generate_parameters(0)
    with pytest.raises(SearchSpaceError, match="JSON object"):
        tuner.update_search_space([1, 2])
