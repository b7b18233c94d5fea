"""Profiler: params and MACs against the EfficientNet paper, memory and speed of profiling."""

from __future__ import annotations

import math

import pytest
import torch

from efficientnet import build_model, preset, profile
from efficientnet.profiler import measure_latency


@pytest.mark.parametrize(
    "name, params_m, macs_b",
    [("b0", 5.3, 0.39), ("b1", 7.8, 0.70), ("b2", 9.2, 1.0), ("b3", 12.0, 1.8), ("b4", 19.0, 4.2)],
)
def test_params_and_macs_match_the_paper(name, params_m, macs_b):
    p = profile(preset(name))
    assert p.params / 1e6 == pytest.approx(params_m, rel=0.04)
    assert p.macs / 1e9 == pytest.approx(macs_b, rel=0.06)


def test_params_are_those_of_the_real_model_and_size_is_fp32():
    spec = preset("lite0").replace(width=0.5, resolution=64)
    p = profile(spec, num_classes=10)
    model = build_model(spec, 10)
    assert p.params == sum(t.numel() for t in model.parameters())
    state_bytes = sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())
    assert p.model_size_mb * 2**20 >= state_bytes and p.model_size_mb * 2**20 < state_bytes * 1.01


def test_macs_grow_with_resolution_squared_and_memory_with_resolution():
    small, big = profile(preset("b0"), resolution=128), profile(preset("b0"), resolution=256)
    assert big.macs / small.macs == pytest.approx(4.0, rel=0.05)
    assert big.params == small.params
    assert 3.0 < big.peak_memory_mb / small.peak_memory_mb < 4.5


def test_peak_memory_is_at_least_the_largest_activation_pair():
    # B0 at 224: the first expanded stage holds 96 x 112 x 112 floats, twice (input and output of a layer)
    p = profile(preset("b0"))
    assert p.peak_memory_mb >= 2 * 96 * 112 * 112 * 4 / 2**20
    assert p.peak_memory_mb < 64


def test_b7_profiles_on_the_meta_device_without_allocating_weights():
    p = profile(preset("b7"))
    assert p.params / 1e6 == pytest.approx(66, rel=0.03) and p.macs / 1e9 == pytest.approx(37, rel=0.05)
    assert p.model_size_mb > 250  # 66 M fp32 parameters and buffers, counted, never allocated


def test_latency_is_measured_on_a_real_model():
    spec = preset("b0").replace(width=0.25, depth=0.5, resolution=32)
    ms = measure_latency(spec, repeats=3)
    assert 0.0 < ms and math.isfinite(ms)  # how fast is for bench/, not for a test
    assert profile(spec, latency=True).latency_ms > 0.0
    assert torch.get_default_device().type == "cpu"
