"""Build an efficientnet-pytorch ``EfficientNet`` from an :class:`~efficientnet.spec.ArchSpec`.

The B family (``stem='scaled'``) is handed to the library as it is: base ``BlockArgs`` plus a ``GlobalParams`` with
the width/depth coefficients, so the library's own ``round_filters``/``round_repeats`` scale everything.
EfficientNet-Lite (``stem='fixed'``) keeps stem, head and first/last stage repeats unscaled: its ``BlockArgs`` are
scaled here with the same library functions and handed over with no coefficients, so the library leaves them alone.
"""

from __future__ import annotations

import torch
from efficientnet_pytorch import EfficientNet
from efficientnet_pytorch.utils import BlockArgs, GlobalParams, round_filters, round_repeats

from .layers import FastMBConvBlock, fold_same_padding, inplace_activation
from .spec import ArchSpec

__all__ = ["SpecEfficientNet", "global_params", "blocks_args", "block_repeats", "stem_head_channels", "network_key",
           "stage_of_blocks"]

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def global_params(spec: ArchSpec, num_classes: int = 1000, scaled: bool = True,
                  dynamic_padding: bool = False) -> GlobalParams:
    """efficientnet-pytorch ``GlobalParams`` for ``spec`` (coefficients omitted when ``scaled`` is False).

    ``dynamic_padding`` leaves ``image_size`` unset, so the library builds ``Conv2dDynamicSamePadding`` layers
    (TF "same" padding for whatever input size comes in) instead of static padding for ``spec.resolution``.
    """
    return GlobalParams(
        width_coefficient=spec.width if scaled else None,
        depth_coefficient=spec.depth if scaled else None,
        image_size=None if dynamic_padding else spec.resolution,
        dropout_rate=spec.dropout,
        num_classes=num_classes,
        batch_norm_momentum=0.99,
        batch_norm_epsilon=1e-3,
        drop_connect_rate=spec.drop_connect,
        depth_divisor=8,
        min_depth=None,
        include_top=True,
    )


def blocks_args(spec: ArchSpec) -> list[BlockArgs]:
    """One ``BlockArgs`` per stage, unscaled for the B family and pre-scaled for a fixed stem/head."""
    args = []
    in_ch = STEM_CHANNELS
    for s in spec.stages:
        args.append(
            BlockArgs(
                num_repeat=s.repeats,
                kernel_size=s.kernel,
                stride=s.stride,
                expand_ratio=s.expand,
                input_filters=in_ch,
                output_filters=s.channels,
                se_ratio=s.se if s.se > 0 else None,
                id_skip=True,
            )
        )
        in_ch = s.channels
    if spec.stem == "scaled":
        return args
    gp = global_params(spec)
    last = len(args) - 1
    return [
        a._replace(
            input_filters=STEM_CHANNELS if i == 0 else round_filters(a.input_filters, gp),
            output_filters=round_filters(a.output_filters, gp),
            num_repeat=a.num_repeat if i in (0, last) else round_repeats(a.num_repeat, gp),
        )
        for i, a in enumerate(args)
    ]


def stem_head_channels(spec: ArchSpec, num_classes: int = 1000) -> tuple[int, int]:
    """Output channels of the stem and of the head convolution of the model ``spec`` builds."""
    if spec.stem != "scaled":
        return STEM_CHANNELS, HEAD_CHANNELS
    gp = global_params(spec, num_classes)
    return round_filters(STEM_CHANNELS, gp), round_filters(HEAD_CHANNELS, gp)


def block_repeats(spec: ArchSpec, num_classes: int = 1000) -> list[BlockArgs]:
    """One ``BlockArgs`` per block of the built model (``model._blocks``), in order, with its own input channels and
    stride (``num_repeat`` 1): the stages scaled as the library scales them."""
    gp = global_params(spec, num_classes)
    out = []
    for args in blocks_args(spec):
        if spec.stem == "scaled":
            args = args._replace(input_filters=round_filters(args.input_filters, gp),
                                 output_filters=round_filters(args.output_filters, gp),
                                 num_repeat=round_repeats(args.num_repeat, gp))
        for i in range(args.num_repeat):
            out.append(args._replace(num_repeat=1, input_filters=args.input_filters if i == 0 else args.output_filters,
                                     stride=args.stride if i == 0 else 1))
    return out


class SpecEfficientNet(EfficientNet):
    """efficientnet-pytorch's ``EfficientNet`` that knows its :class:`ArchSpec`, can use ReLU6 (Lite) and runs the
    faster modules of :mod:`efficientnet.layers` (folded "same" padding, in-place activations, one-op
    drop-connect). Parameter names, shapes and outputs are the library's, so its state dicts load unchanged.

    ``dynamic_padding=True`` (opt-in) pads every convolution "same" for the actual input size, for training at
    other image sizes than ``spec.resolution`` (progressive learning); the state dict is the same either way.
    """

    def __init__(self, spec: ArchSpec, num_classes: int = 1000, dynamic_padding: bool = False) -> None:
        super().__init__(blocks_args(spec), global_params(spec, num_classes, scaled=spec.stem == "scaled",
                                                          dynamic_padding=dynamic_padding))
        self.spec = spec
        self.num_classes = num_classes
        self._conv_stem = fold_same_padding(self._conv_stem)
        self._conv_head = fold_same_padding(self._conv_head)
        self._swish = inplace_activation(spec.activation)
        for block in self._blocks:
            FastMBConvBlock.adopt(block, spec.activation)
        rate = self._global_params.drop_connect_rate or 0.0
        self._drop_rates = [rate * i / len(self._blocks) for i in range(len(self._blocks))]

    def set_dropout(self, p: float) -> None:
        """The classifier's dropout probability (progressive learning grows it stage by stage)."""
        self._dropout.p = float(p)

    def set_swish(self, memory_efficient: bool = True) -> None:
        """Kept for the library's API (export calls it): the in-place ``nn.SiLU``/``nn.ReLU6`` already is both the
        fastest and the exportable form, so nothing changes."""

    def extract_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """The last feature map (before pooling), as the library's, with each block's drop-connect rate
        precomputed."""
        x = self._swish(self._bn0(self._conv_stem(inputs)))
        for block, rate in zip(self._blocks, self._drop_rates):
            x = block(x, drop_connect_rate=rate)
        return self._swish(self._bn1(self._conv_head(x)))


def network_key(spec: ArchSpec) -> tuple:
    """What ``spec`` builds, as a hashable value: specs with equal keys build the same network, block for block.

    Compound coefficients a grid step apart often do: repeats are rounded up and channels to multiples of 8, so, on
    Lite0, alpha 1.6 and 1.65 give the same repeats. The compound coefficients recorded in the spec are not part of
    the key.
    """
    stem, head = stem_head_channels(spec)
    return (tuple(block_repeats(spec)), stem, head, spec.resolution, spec.activation, spec.dropout, spec.drop_connect)


def stage_of_blocks(spec: ArchSpec) -> list[tuple[int, int]]:
    """For each block of the built model, ``(stage index, index within the stage)``."""
    return [(s, j) for s, n in enumerate(spec.stage_repeats()) for j in range(n)]
