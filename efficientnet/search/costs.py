"""Closed-form parameter, MAC and model-size counts for an :class:`~efficientnet.spec.ArchSpec`.

The meta-device profiler (:func:`efficientnet.profiler.profile`) is the reference, but it builds and runs a model
(hundreds of milliseconds on a small CPU). This module walks the same efficientnet-pytorch layer layout with plain
integer arithmetic (microseconds), so the tuner can reject candidates that break a parameter, MAC or model-size
budget before paying for a profile. A test checks it against the profiler.
"""

from __future__ import annotations

import functools
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
    """Exact-arithmetic counts: trainable parameters, multiply-accumulates at the spec's resolution, fp32 size, and
    the batch-1 inference peak of live activation memory as the meta-device profiler measures it."""

    params: int
    macs: int
    model_size_mb: float
    peak_memory_mb: float = 0.0


@dataclass(frozen=True)
class _SameConv:
    """How :func:`efficientnet.layers.fold_same_padding` runs a TF-"same" convolution at one input size: the output
    size, the size the convolution itself computes (larger for a cropped one), and the side of the padded input copy
    a separate pad op makes (0 when there is none)."""

    out: int
    computed: int
    padded: int
    cropped: bool

    @classmethod
    @functools.lru_cache(maxsize=4096)  # a few hundred distinct geometries in a search space
    def at(cls, size: int, kernel: int, stride: int, depthwise: bool) -> "_SameConv":
        out = math.ceil(size / stride)
        pad = max((out - 1) * stride + kernel - size, 0)
        before, after = pad // 2, pad - pad // 2
        if before == after:  # symmetric: folded into the convolution
            return cls(out, out, 0, False)
        if depthwise:  # CroppedConv2d: symmetric padding before + stride * m, then the first m rows/columns dropped
            m = -(-(after - before) // stride)
            computed = (size + 2 * (before + stride * m) - kernel) // stride + 1
            return cls(out, computed, 0, True)
        return cls(out, out, size + pad, False)  # a pad op, then an unpadded convolution


class _Counter:
    def __init__(self, resolution: int) -> None:
        self.size = resolution
        self.params = 0
        self.macs = 0
        self.buffer_bytes = 0

    def conv(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False,
             spatial: int | None = None) -> None:
        geometry = _SameConv.at(self.size if spatial is None else spatial, kernel, stride,
                                depthwise=groups == cin == cout and groups > 1)
        weights = cout * (cin // groups) * kernel * kernel
        self.params += weights + (cout if bias else 0)
        self.macs += weights * geometry.computed**2
        if spatial is None:
            self.size = geometry.out

    def bn(self, channels: int) -> None:
        self.params += 2 * channels
        self.buffer_bytes += 2 * channels * _FP32 + _INT64


class _LiveBytes:
    """The meta profiler's bookkeeping, replayed: bytes of the tensors alive during an eval-mode forward pass of the
    model :class:`~efficientnet.builder.SpecEfficientNet` builds (batch 1, fp32).

    Each op's outputs are added (and the peak taken) before its inputs die, as Python frees them in the forward code
    of :mod:`efficientnet.layers`: a temporary dies when the op it feeds returns, a name keeps its tensor until it
    is rebound, and a block's input (and its SE scale) live until the block returns. Activations are in place (no
    bytes); a "same" padding that is symmetric is folded into the convolution; an asymmetric one (stride 2 at an
    even size) is, for a depthwise layer, a larger output cropped into a dense copy, otherwise a padded copy of the
    input that lives while the convolution runs.
    """

    def __init__(self, baseline: int) -> None:
        self.live = self.peak = baseline

    def alloc(self, nbytes: int) -> None:
        self.live += nbytes
        self.peak = max(self.peak, self.live)

    def free(self, nbytes: int) -> None:
        self.live -= nbytes

    def conv(self, cin: int, cout: int, kernel: int, stride: int, size: int, depthwise: bool = False
             ) -> tuple[int, int]:
        """A TF-"same" convolution; returns (output bytes, output size)."""
        g = _SameConv.at(size, kernel, stride, depthwise)
        padded = cin * g.padded**2 * _FP32
        self.alloc(padded)
        computed = cout * g.computed**2 * _FP32
        self.alloc(computed)
        self.free(padded)
        nbytes = cout * g.out**2 * _FP32
        if g.cropped:  # the dense copy of the kept window; the full output dies
            self.alloc(nbytes)
            self.free(computed)
        return nbytes, g.out

    def conv_bn(self, cin: int, cout: int, kernel: int, stride: int, size: int, depthwise: bool = False
                ) -> tuple[int, int]:
        """conv -> batch norm (output plus saved mean and inverse std, which die at once) -> in-place activation;
        the convolution output dies with the batch norm. Returns (output bytes, output size)."""
        nbytes, size = self.conv(cin, cout, kernel, stride, size, depthwise)
        self.alloc(nbytes + 2 * cout * _FP32)
        self.free(2 * cout * _FP32 + nbytes)
        return nbytes, size


@functools.lru_cache(maxsize=16384)  # the tuner asks again for the candidates it has seen; the estimate is frozen
def estimate_costs(spec: ArchSpec, num_classes: int = 1000) -> CostEstimate:
    """Parameters, MACs (batch 1), fp32 state-dict size and peak activation memory of the model
    :func:`build_model` makes for ``spec``."""
    # imported here: efficientnet-pytorch imports torch, which the tuner process loads only once it has connected
    from ..builder import block_repeats, stem_head_channels

    c = _Counter(spec.resolution)
    m = _LiveBytes(3 * spec.resolution**2 * _FP32)
    stem, head = stem_head_channels(spec, num_classes)
    c.conv(3, stem, 3, stride=2)
    c.bn(stem)
    x_bytes, size = m.conv_bn(3, stem, 3, 2, spec.resolution)
    out = stem
    for args in block_repeats(spec, num_classes):
        cin, stride = args.input_filters, args.stride
        mid = cin * args.expand_ratio
        expanded = 0
        if args.expand_ratio != 1:
            c.conv(cin, mid, 1)
            c.bn(mid)
            expanded, _ = m.conv_bn(cin, mid, 1, 1, size)
        c.conv(mid, mid, args.kernel_size, stride=stride, groups=mid)
        c.bn(mid)
        d_bytes, out_size = m.conv_bn(mid, mid, args.kernel_size, stride, size, depthwise=mid > 1)
        m.free(expanded)  # x rebound: the expanded map dies (the block input lives on)
        scale = 0
        if args.se_ratio is not None and 0 < args.se_ratio <= 1:
            squeezed = max(1, int(cin * args.se_ratio))
            c.conv(mid, squeezed, 1, bias=True, spatial=1)
            c.conv(squeezed, mid, 1, bias=True, spatial=1)
            m.alloc(mid * _FP32)       # mean over H, W
            m.alloc(squeezed * _FP32)  # reduce conv; the mean dies
            m.free(mid * _FP32)
            scale = mid * _FP32
            m.alloc(scale)             # expand conv: the SE scale, alive until the block returns
            m.free(squeezed * _FP32)
            m.alloc(scale)             # sigmoid
            m.alloc(d_bytes)           # x * sigmoid; the sigmoid and the old x die
            m.free(scale + d_bytes)
        c.conv(mid, args.output_filters, 1)
        c.bn(args.output_filters)
        p_bytes, _ = m.conv_bn(mid, args.output_filters, 1, 1, out_size)
        m.free(d_bytes)  # x rebound
        if stride == 1 and cin == args.output_filters:  # skip connection: x + inputs
            m.alloc(p_bytes)
            m.free(p_bytes)
        m.free(scale + x_bytes)  # the block returns; its caller rebinds x
        x_bytes, size = p_bytes, out_size
        out = args.output_filters
    c.conv(out, head, 1)
    c.bn(head)
    h_bytes, _ = m.conv_bn(out, head, 1, 1, size)
    m.free(x_bytes)  # the last block's output dies once extract_features returns
    m.alloc(head * _FP32)  # global average pool; the feature map dies
    m.free(h_bytes)
    m.alloc(num_classes * _FP32)  # classifier
    c.params += head * num_classes + num_classes
    c.macs += head * num_classes
    return CostEstimate(
        params=c.params, macs=c.macs, model_size_mb=(c.params * _FP32 + c.buffer_bytes) / _MB,
        peak_memory_mb=m.peak / _MB,
    )


def estimated_profile(spec: ArchSpec, num_classes: int = 1000) -> "Profile":
    """A :class:`~efficientnet.profiler.Profile` from the closed forms alone (no model is built)."""
    from ..profiler import Profile

    est = estimate_costs(spec, num_classes)
    return Profile(est.params, est.macs, est.model_size_mb, est.peak_memory_mb, spec.resolution)
