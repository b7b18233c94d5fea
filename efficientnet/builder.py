"""Build an efficientnet-pytorch ``EfficientNet`` from an :class:`~efficientnet.spec.ArchSpec`.

The B family (``stem='scaled'``) is handed to the library as it is: base ``BlockArgs`` plus a ``GlobalParams`` with
the width/depth coefficients, so the library's own ``round_filters``/``round_repeats`` scale everything.
EfficientNet-Lite (``stem='fixed'``) keeps stem, head and first/last stage repeats unscaled: its ``BlockArgs`` are
scaled here with the same library functions and handed over with no coefficients, so the library leaves them alone.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from efficientnet_pytorch import EfficientNet
from efficientnet_pytorch.utils import BlockArgs, GlobalParams, round_filters, round_repeats
from torch import nn

from .spec import ArchSpec

__all__ = ["SpecEfficientNet", "global_params", "blocks_args", "build_model", "stage_of_blocks"]

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


class SpecEfficientNet(EfficientNet):
    """efficientnet-pytorch's ``EfficientNet`` that knows its :class:`ArchSpec` and can use ReLU6 (Lite).

    ``dynamic_padding=True`` (opt-in) pads every convolution "same" for the actual input size, for training at
    other image sizes than ``spec.resolution`` (progressive learning); the state dict is the same either way.
    """

    def __init__(self, spec: ArchSpec, num_classes: int = 1000, dynamic_padding: bool = False) -> None:
        super().__init__(blocks_args(spec), global_params(spec, num_classes, scaled=spec.stem == "scaled",
                                                          dynamic_padding=dynamic_padding))
        self.spec = spec
        self.num_classes = num_classes
        if spec.activation == "relu6":
            self._use_relu6()

    def _use_relu6(self) -> None:
        self._swish = nn.ReLU6()
        for block in self._blocks:
            block._swish = nn.ReLU6()

    def set_swish(self, memory_efficient: bool = True) -> None:
        """As the library's, but a ReLU6 model keeps ReLU6."""
        super().set_swish(memory_efficient)
        if self.spec.activation == "relu6":
            self._use_relu6()



def stage_of_blocks(spec: ArchSpec) -> list[tuple[int, int]]:
    """For each block of the built model, ``(stage index, index within the stage)``."""
    return [(s, j) for s, n in enumerate(spec.stage_repeats()) for j in range(n)]


def build_model(
    spec: ArchSpec,
    num_classes: int = 1000,
    weights: Any = None,
    weights_spec: ArchSpec | None = None,
    device: torch.device | str | None = None,
    dynamic_padding: bool = False,
) -> SpecEfficientNet:
    """Build the model for ``spec`` and, when ``weights`` is given, inherit pretrained weights into it.

    ``weights``: ``None`` (random init), ``"lite0"`` (embedded ImageNet EfficientNet-Lite0), an efficientnet-pytorch
    name such as ``"efficientnet-b0"`` (downloaded, needs a network), a local ``.pth``/checkpoint path, or a state
    dict. ``weights_spec`` names the architecture of a weights file that does not record its own. The inheritance
    report is kept as ``model.inheritance`` (``None`` without weights). ``dynamic_padding``: see
    :class:`SpecEfficientNet`.
    """
    from .weights import inherit_weights, load_weights  # local import: weights imports this module

    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = SpecEfficientNet(spec, num_classes, dynamic_padding=dynamic_padding)
    model.inheritance = None
    if weights is not None:
        state, source_spec = load_weights(weights, weights_spec=weights_spec)
        model.inheritance = inherit_weights(model, state, source_spec)
    return model
