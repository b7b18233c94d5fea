"""Closed-form parameter, MAC and model-size counts for an :class:`~efficientnet.spec.ArchSpec`.

The meta-device profiler (:func:`efficientnet.profiler.profile`) is the reference, but it builds and runs a model
(hundreds of milliseconds on a small CPU). This module walks the same efficientnet-pytorch layer layout with plain
integer arithmetic (microseconds), so the tuner can reject candidates that break a parameter, MAC or model-size
budget before paying for a profile. A test checks it against the profiler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from typing import TYPE_CHECKING

from ..spec import ArchSpec

if TYPE_CHECKING:
    from ..profiler import Profile

__all__ = ["CostEstimate", "estimate_costs", "estimated_profile"]

_MB = 1024 * 1024
_FP32 = 4
_INT64 = 8


@dataclass(frozen=True)
class CostEstimate:
    """Exact-arithmetic counts: trainable parameters, multiply-accumulates at the spec's resolution, fp32 size."""

    params: int
    macs: int
    model_size_mb: float


class _Counter:
    def __init__(self, resolution: int) -> None:
        self.size = resolution
        self.params = 0
        self.macs = 0
        self.buffer_bytes = 0

    def conv(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False,
             spatial: int | None = None) -> None:
        out = math.ceil((self.size if spatial is None else spatial) / stride)
        weights = cout * (cin // groups) * kernel * kernel
        self.params += weights + (cout if bias else 0)
        self.macs += weights * out * out
        if spatial is None:
            self.size = out

    def bn(self, channels: int) -> None:
        self.params += 2 * channels
        self.buffer_bytes += 2 * channels * _FP32 + _INT64


def estimate_costs(spec: ArchSpec, num_classes: int = 1000) -> CostEstimate:
    """Parameters, MACs (batch 1) and fp32 state-dict size of the model :func:`build_model` makes for ``spec``."""
    # imported here: efficientnet-pytorch imports torch, which the tuner process loads only once it has connected
    from efficientnet_pytorch.utils import round_filters, round_repeats

    from ..builder import HEAD_CHANNELS, STEM_CHANNELS, blocks_args, global_params

    scaled = spec.stem == "scaled"
    gp = global_params(spec, num_classes, scaled=scaled)
    c = _Counter(spec.resolution)
    stem = round_filters(STEM_CHANNELS, gp) if scaled else STEM_CHANNELS
    c.conv(3, stem, 3, stride=2)
    c.bn(stem)
    out = stem
    for args in blocks_args(spec):
        if scaled:
            args = args._replace(
                input_filters=round_filters(args.input_filters, gp),
                output_filters=round_filters(args.output_filters, gp),
                num_repeat=round_repeats(args.num_repeat, gp),
            )
        for i in range(args.num_repeat):
            cin = args.input_filters if i == 0 else args.output_filters
            stride = args.stride if i == 0 else 1
            mid = cin * args.expand_ratio
            if args.expand_ratio != 1:
                c.conv(cin, mid, 1)
                c.bn(mid)
            c.conv(mid, mid, args.kernel_size, stride=stride, groups=mid)
            c.bn(mid)
            if args.se_ratio is not None and 0 < args.se_ratio <= 1:
                squeezed = max(1, int(cin * args.se_ratio))
                c.conv(mid, squeezed, 1, bias=True, spatial=1)
                c.conv(squeezed, mid, 1, bias=True, spatial=1)
            c.conv(mid, args.output_filters, 1)
            c.bn(args.output_filters)
        out = args.output_filters
    head = round_filters(HEAD_CHANNELS, gp) if scaled else HEAD_CHANNELS
    c.conv(out, head, 1)
    c.bn(head)
    c.params += head * num_classes + num_classes
    c.macs += head * num_classes
    return CostEstimate(
        params=c.params, macs=c.macs, model_size_mb=(c.params * _FP32 + c.buffer_bytes) / _MB
    )


def estimated_profile(spec: ArchSpec, num_classes: int = 1000) -> "Profile":
    """A :class:`~efficientnet.profiler.Profile` from the closed-form counts, for tests and benchmarks that must not
    pay for the meta profiler. Peak memory is not estimated (reported as 0.0)."""
    from ..profiler import Profile

    est = estimate_costs(spec, num_classes)
    return Profile(est.params, est.macs, est.model_size_mb, 0.0, spec.resolution)
