"""Profiling speed: the meta-device profiler against building the real model, B0 to B7, in the same run.

    python bench/profile_speed.py

For each preset: seconds for ``efficientnet.profile`` (params, MACs, size and peak memory on the meta device, no
weights or activations allocated) next to the same count done the plain way, on the CPU: build the model with real
weights and run a batch-1 forward pass under ``FlopCounterMode``; and the ratio.
Target: a B7-size spec profiles in well under two seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from efficientnet import build_model, preset, profile  # noqa: E402


def count_on_cpu(spec) -> int:
    """MACs the plain way: a real model and a real forward pass."""
    model = build_model(spec, 1000).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.randn(1, 3, spec.resolution, spec.resolution))
    return counter.get_total_flops() // 2


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    profile(preset("b0"))  # warm-up: the first call pays for imports and dispatch set-up
    print("| preset | params (M) | MACs (B) | profile s | CPU count s | CPU / profile |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in [f"b{i}" for i in range(8)]:
        spec = preset(name)
        result = {}
        t_profile = seconds(lambda: result.setdefault("p", profile(spec)))
        t_build = seconds(lambda: result.setdefault("cpu", count_on_cpu(spec)))
        p = result["p"]
        assert result["cpu"] == p.macs, (name, result["cpu"], p.macs)
        print(f"| {name} | {p.params / 1e6:.2f} | {p.macs / 1e9:.3f} | {t_profile:.2f} | {t_build:.2f} | "
              f"{t_build / t_profile:.1f}x |")


if __name__ == "__main__":
    main()
