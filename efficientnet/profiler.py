"""Hardware cost of an architecture, measured before any training.

Parameters, MACs and peak activation memory are counted on PyTorch's ``meta`` device, so no weight is allocated
and a B7-size model profiles in well under a second. MACs come from ``torch.utils.flop_counter.FlopCounterMode``
(FLOPs / 2: multiply-accumulates, the EfficientNet paper's convention, in which B0 at 224 px is 0.39 B).
Peak activation memory is the largest total size of live tensors during a batch-1 inference forward pass, tracked
op by op as tensors are created and freed. Latency, when asked for, is measured on a real model on the CPU.
"""

from __future__ import annotations

import statistics
import time
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from .builder import SpecEfficientNet
from .spec import ArchSpec

__all__ = ["Profile", "profile", "measure_latency", "timed_runs", "LiveTensorPeak"]

MB = 1024 * 1024


@dataclass(frozen=True)
class Profile:
    """Costs of one architecture at one resolution (batch 1 for memory and latency)."""

    params: int
    macs: int
    model_size_mb: float
    peak_memory_mb: float
    resolution: int
    latency_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)

    def __str__(self) -> str:
        text = (
            f"params {self.params / 1e6:.2f} M, MACs {self.macs / 1e9:.3f} B, size {self.model_size_mb:.1f} MB, "
            f"peak activations {self.peak_memory_mb:.1f} MB at {self.resolution} px"
        )
        return text + (f", latency {self.latency_ms:.1f} ms" if self.latency_ms is not None else "")


class LiveTensorPeak(TorchDispatchMode):
    """Tracks the total bytes of tensors produced by ops and still alive; remembers the peak."""

    def __init__(self, baseline: int = 0) -> None:
        super().__init__()
        self.live = baseline
        self.peak = baseline
        self._seen: set[int] = set()

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        if func._schema.is_mutable or func.is_view:  # in-place ops and views allocate nothing new
            return out
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and id(t) not in self._seen:
                nbytes = t.numel() * t.element_size()
                self.live += nbytes
                key = id(t)
                self._seen.add(key)
                weakref.finalize(t, self._release, key, nbytes)
        self.peak = max(self.peak, self.live)
        return out

    def _release(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes


def _meta_model(spec: ArchSpec, num_classes: int) -> SpecEfficientNet:
    with torch.device("meta"):
        model = SpecEfficientNet(spec, num_classes)
    return model.eval()


def measure_latency(
    spec: ArchSpec, resolution: int | None = None, num_classes: int = 1000, repeats: int = 10, warmup: int = 2
) -> float:
    """Median CPU latency in ms of a batch-1 forward pass of a randomly initialised model."""
    res = resolution or spec.resolution
    model = SpecEfficientNet(spec.replace(resolution=res), num_classes).eval()
    x = torch.randn(1, 3, res, res)
    with torch.inference_mode():
        return statistics.median(timed_runs(lambda: model(x), repeats, warmup))


def timed_runs(run: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``run``, after ``warmup`` untimed ones."""
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        run()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000.0)
    return times


def profile(
    spec: ArchSpec, resolution: int | None = None, num_classes: int = 1000, latency: bool = False
) -> Profile:
    """Params, MACs, fp32 model size and batch-1 peak activation memory of ``spec`` (optionally CPU latency)."""
    res = resolution or spec.resolution
    if res != spec.resolution:
        spec = spec.replace(resolution=res)
    model = _meta_model(spec, num_classes)
    params = sum(p.numel() for p in model.parameters())
    size_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    x = torch.empty(1, 3, res, res, device="meta")
    counter = FlopCounterMode(display=False)
    tracker = LiveTensorPeak(baseline=x.numel() * x.element_size())
    with torch.no_grad(), counter, tracker:
        model(x)
    return Profile(
        params=int(params),
        macs=int(counter.get_total_flops() // 2),
        model_size_mb=size_bytes / MB,
        peak_memory_mb=tracker.peak / MB,
        resolution=res,
        latency_ms=measure_latency(spec, res, num_classes) if latency else None,
    )
