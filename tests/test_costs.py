"""Closed-form costs against the meta-device profiler, and the feasibility checker's cross-check between them."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from efficientnet.profiler import profile
from efficientnet.search.budgets import Budgets, FeasibilityChecker
from efficientnet.search.costs import estimate_costs
from efficientnet.spec import ArchSpec, StageChoice, preset
from spaces import DEFAULT_SPACE
from tuner import EfficientNetTuner


def specs() -> list[ArchSpec]:
    """Both families, even and odd feature-map sizes (symmetric, folded and cropped padding), every block choice."""
    out = [preset(name).replace(resolution=r) for name, r in (("b0", 120), ("lite0", 96), ("b2", 68))]
    rng = np.random.default_rng(7)
    for i in range(9):
        choices = {
            int(stage): StageChoice(kernel=int(rng.choice([3, 5, 7])), expand=int(rng.choice([1, 3, 4, 6])),
                                    se=bool(rng.integers(2)), repeats_delta=int(rng.integers(0, 2)))
            for stage in rng.choice(7, size=3, replace=False)
        }
        spec = ArchSpec.from_compound(float(rng.choice([1.0, 1.3, 1.9])), float(rng.choice([1.0, 1.15, 1.4])),
                                      float(rng.choice([1.0, 1.1, 1.35])), 1.0, base=("b0", "lite0")[i % 2],
                                      base_resolution=int(rng.choice([32, 44, 56, 100])))
        out.append(spec.with_stage_choices(choices))
    return out


@pytest.mark.parametrize("spec", specs(), ids=lambda s: f"{s.activation}-r{s.resolution}-w{s.width}-d{s.depth}")
def test_closed_forms_equal_the_meta_profiler(spec):
    """Parameters and MACs exactly, model size and peak activation memory to the byte."""
    prof, est = profile(spec, num_classes=10), estimate_costs(spec, 10)
    assert (est.params, est.macs) == (prof.params, prof.macs)
    assert round(est.model_size_mb * 2**20) == round(prof.model_size_mb * 2**20)
    assert round(est.peak_memory_mb * 2**20) == round(prof.peak_memory_mb * 2**20)


def test_the_tuner_profiles_one_candidate_and_uses_closed_forms_for_the_rest():
    tuner = EfficientNetTuner(seed=0, base_resolution=64, num_classes=10, max_peak_memory_mb=2.0,
                              max_model_size_mb=20.0)
    tuner.update_search_space(DEFAULT_SPACE)
    proposals = [tuner.generate_parameters(pid) for pid in range(6)]
    assert tuner.checker.profiled == 1 and tuner.checker.closed_forms_agree
    for p in proposals:
        prof = profile(ArchSpec.parse(p["arch"]), num_classes=10)
        assert math.isclose(p["peak_memory_mb"], prof.peak_memory_mb, abs_tol=1e-3) and prof.peak_memory_mb <= 2.0
        assert math.isclose(p["model_size_mb"], prof.model_size_mb, abs_tol=1e-3) and p["params"] == prof.params


def test_when_the_profiler_disagrees_it_decides_from_then_on(caplog):
    """A profiler that measures another model (here: 8 px larger inputs) stands for a changed implementation."""
    tuner = EfficientNetTuner(seed=0, base_resolution=64, num_classes=10)
    tuner.update_search_space(DEFAULT_SPACE)

    def other_model(spec, num_classes):
        return profile(spec.replace(resolution=spec.resolution + 8), num_classes=num_classes)

    checker = FeasibilityChecker(tuner.space, Budgets(max_peak_memory_mb=5.0), 10, profiler=other_model)
    candidates = [tuner.space.at(i) for i in (0, 1, 2)]
    with caplog.at_level(logging.WARNING, logger="efficientnet.search.budgets"):
        first = checker.check(candidates[0])[0]
    assert not checker.closed_forms_agree and "disagree with the profiler on macs" in caplog.text
    assert first.macs == other_model(tuner.space.spec(candidates[0]), 10).macs
    second = checker.check(candidates[1])[0]
    assert second.macs == other_model(tuner.space.spec(candidates[1]), 10).macs and checker.profiled == 2
