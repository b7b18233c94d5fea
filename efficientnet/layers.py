"""Faster drop-in equivalents of efficientnet-pytorch's modules: same parameters, same state dict, same outputs.

The library's model is written for clarity and TensorFlow parity, and three of its habits cost time on every
layer (``bench/train_throughput.py`` measures the whole step against torchvision's EfficientNet-B0):

* TF "same" padding as a separate op: every ``Conv2dStaticSamePadding`` with a k x k kernel pads its input with a
  ``ZeroPad2d`` (a full copy of the activation) before an unpadded convolution. For stride 1 and an odd kernel
  that padding is symmetric, ``k // 2`` on every side, which the convolution does by itself at no cost.
  :func:`fold_same_padding` turns such layers into plain ``nn.Conv2d`` layers sharing the same weights. Stride-2
  layers at even input sizes pad asymmetrically (TF pads the bottom/right more): a depthwise one becomes a
  :class:`CroppedConv2d`, which pads symmetrically by enough and drops its first output row and column (a copy of
  its output, a quarter of the input's size); the stem, whose 3-channel input is smaller than its output, keeps
  the pad op.
* activations that are not in place: :class:`FastMBConvBlock` applies SiLU (or ReLU6 for Lite) in place on the
  BatchNorm output, as torchvision does, which saves a full-size allocation per activation;
* drop-connect in three full-size ops (``x / keep * mask`` then ``+ inputs``): here one ``addcmul``
  (``inputs + x * mask``), the mask drawn with ``bernoulli_`` (the same distribution as the library's
  ``floor(keep + U[0, 1))``).

Parameters and buffers are the very same tensors under the same names, so the Lite0 and B-series state dicts load
unchanged and checkpoints stay efficientnet-pytorch's. ``tests/test_layers.py`` checks outputs and gradients
against the library's own model.
"""

from __future__ import annotations

import torch
from efficientnet_pytorch.model import MBConvBlock
from efficientnet_pytorch.utils import Conv2dDynamicSamePadding, Conv2dStaticSamePadding
from torch import nn
from torch.nn import functional as F

__all__ = ["fold_same_padding", "CroppedConv2d", "FastMBConvBlock", "inplace_activation"]


def _symmetric_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """The ``(pad_h, pad_w)`` that the library's same-padding ``conv`` applies on every side, or ``None`` when its
    padding is asymmetric or depends on the input size."""
    if tuple(conv.dilation) != (1, 1):
        return None
    if isinstance(conv, Conv2dStaticSamePadding):
        pad = conv.static_padding
        if isinstance(pad, nn.Identity):
            return (0, 0)
        left, right, top, bottom = pad.padding
        return (top, left) if (left, top) == (right, bottom) else None
    if isinstance(conv, Conv2dDynamicSamePadding):
        kh, kw = conv.kernel_size
        if tuple(conv.stride) == (1, 1) and kh % 2 == 1 and kw % 2 == 1:  # "same" at stride 1: k // 2 each side
            return (kh // 2, kw // 2)
    return None


class CroppedConv2d(nn.Conv2d):
    """A strided convolution with TF's asymmetric "same" padding ``(before, after)`` per axis, done as symmetric
    padding ``before + stride * m`` (``m`` the smallest count with that >= ``after``) followed by dropping the
    first ``m`` output rows/columns: the very windows of the padded convolution, copying the (4x smaller) output
    instead of the input."""

    def __init__(self, conv: nn.Conv2d, pads: tuple[tuple[int, int], tuple[int, int]]) -> None:
        (bh, ah), (bw, aw) = pads
        sh, sw = conv.stride
        self.skip = (-(-(ah - bh) // sh), -(-(aw - bw) // sw))  # ceil division
        self.tf_pads = pads
        with torch.device("meta"):  # no throw-away allocation: the parameters are the old layer's
            super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                             padding=(bh + sh * self.skip[0], bw + sw * self.skip[1]), groups=conv.groups,
                             bias=conv.bias is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (bh, ah), (bw, aw) = self.tf_pads
        kh, kw = self.kernel_size
        sh, sw = self.stride
        out_h = (x.shape[-2] + bh + ah - kh) // sh + 1  # the TF-padded convolution's output size
        out_w = (x.shape[-1] + bw + aw - kw) // sw + 1
        y = super().forward(x)
        # Negative padding crops into a dense tensor of y's memory format, and so does its gradient. A slice's
        # gradient is always NCHW, which the channels_last convolution's backward had to convert first (B0's first
        # stride-2 layer, forward + backward: 1.45x-1.84x torchvision's symmetric layer with a slice, 1.31x-1.49x
        # with this; bench/stride2_depthwise.py on a 2-core Xeon).
        top, left = self.skip
        return F.pad(y, (-left, out_w + left - y.shape[-1], -top, out_h + top - y.shape[-2]))


def _share_parameters(new: nn.Conv2d, conv: nn.Conv2d) -> nn.Conv2d:
    new.weight = conv.weight
    if conv.bias is not None:
        new.bias = conv.bias
    new.train(conv.training)
    return new


def fold_same_padding(conv: nn.Module) -> nn.Module:
    """``conv`` as a plain ``nn.Conv2d`` that pads by itself when its TF "same" padding is symmetric, as a
    :class:`CroppedConv2d` when it is a depthwise layer with static asymmetric padding, otherwise unchanged. The
    new layer holds the same ``weight`` (and ``bias``) parameters."""
    if not isinstance(conv, (Conv2dStaticSamePadding, Conv2dDynamicSamePadding)):
        return conv
    padding = _symmetric_padding(conv)
    if padding is not None:
        with torch.device("meta"):  # no throw-away allocation: the parameters are the old layer's
            plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                              padding=padding, groups=conv.groups, bias=conv.bias is not None)
        return _share_parameters(plain, conv)
    depthwise = conv.groups == conv.in_channels == conv.out_channels
    if depthwise and isinstance(conv, Conv2dStaticSamePadding) and tuple(conv.dilation) == (1, 1):
        left, right, top, bottom = conv.static_padding.padding
        if top <= bottom and left <= right:
            return _share_parameters(CroppedConv2d(conv, ((top, bottom), (left, right))), conv)
    return conv


def inplace_activation(activation: str) -> nn.Module:
    """``nn.SiLU`` (EfficientNet's swish) or ``nn.ReLU6`` (Lite), in place."""
    return nn.ReLU6(inplace=True) if activation == "relu6" else nn.SiLU(inplace=True)


class FastMBConvBlock(MBConvBlock):
    """efficientnet-pytorch's ``MBConvBlock`` with folded padding, in-place activations and a one-op
    drop-connect. Built by :meth:`adopt` from a library block, whose modules and parameters it keeps."""

    @classmethod
    def adopt(cls, block: MBConvBlock, activation: str) -> "FastMBConvBlock":
        """Turn the library ``block`` into this class in place (same modules, same state dict) and return it."""
        block.__class__ = cls
        for name in ("_expand_conv", "_depthwise_conv", "_project_conv", "_se_reduce", "_se_expand"):
            if hasattr(block, name):
                setattr(block, name, fold_same_padding(getattr(block, name)))
        block._swish = inplace_activation(activation)
        args = block._block_args
        block.has_skip = bool(block.id_skip and args.stride == 1 and args.input_filters == args.output_filters)
        return block

    def set_swish(self, memory_efficient: bool = True) -> None:
        """Kept for the library's API: the in-place activation is already the fastest form of both."""

    def forward(self, inputs: torch.Tensor, drop_connect_rate: float | None = None) -> torch.Tensor:
        x = inputs
        if self._block_args.expand_ratio != 1:
            x = self._swish(self._bn0(self._expand_conv(x)))
        x = self._swish(self._bn1(self._depthwise_conv(x)))
        if self.has_se:
            squeezed = self._se_expand(self._swish(self._se_reduce(x.mean((2, 3), keepdim=True))))
            x = x * torch.sigmoid(squeezed)
        x = self._bn2(self._project_conv(x))
        if not self.has_skip:
            return x
        if drop_connect_rate and self.training:
            keep = 1.0 - drop_connect_rate
            mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep).div_(keep)
            return torch.addcmul(inputs, x, mask)
        return x + inputs
