"""Where a model looked: Grad-CAM heatmaps (Selvaraju et al., 2017) of a trained model's classes on its images.

A heatmap weighs each channel of a feature map by the mean gradient of a class's logit over it, keeps the positive
sum (Captum's ``LayerGradCam``) and is scaled up to the image. It is drawn on the image as the model saw it (resized
and centre-cropped by the evaluation transform), so that a model that learned the background, a ruler or a scanner's
label instead of the object shows it. ``evaluate --heatmaps`` draws them for the images the model was surest of and
wrong about, as fastai's ``plot_top_losses(heatmap=True)``; ``predict --heatmaps`` for every image.

The feature map is the last one of at least :data:`MIN_CELLS` x :data:`MIN_CELLS` cells: the head's (the input of
the final pooling) at 224 px and above, where it is 7 x 7; at lower resolutions an earlier block's, since the head's
map is only resolution / 32 cells wide (1 x 1 at 32 px, which would say nothing about where).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["MIN_CELLS", "CamLayer", "Panel", "cam_layer", "grad_cam", "heatmap_figure", "shown_image"]

MIN_CELLS = 7  # cells per side of the feature map a heatmap is made from, where the model has one that large


@dataclass(frozen=True)
class CamLayer:
    """The feature map heatmaps are made from: ``module``'s output (or its input, ``on_input``), ``cells`` wide."""

    module: nn.Module
    on_input: bool
    name: str  # "head", or "block N"
    cells: int


def cam_layer(model: nn.Module, image: torch.Tensor) -> CamLayer:
    """The feature map the heatmaps of ``model`` (an efficientnet-pytorch ``EfficientNet``) on images of ``image``'s
    size are made from: the head's (the final pooling's input) when it has at least :data:`MIN_CELLS` cells per
    side, else that of the last block whose output has, else the first block's (the largest there is)."""
    import torch

    sizes: dict[str, int] = {}
    blocks = list(model._blocks)
    hooks = [block.register_forward_hook(lambda _m, _i, out, i=i: sizes.__setitem__(f"block {i}", out.shape[-1]))
             for i, block in enumerate(blocks)]
    hooks.append(model._avg_pooling.register_forward_pre_hook(
        lambda _m, inputs: sizes.__setitem__("head", inputs[0].shape[-1])))
    try:
        with torch.no_grad():
            model(image[:1].to(next(model.parameters()).device).float())
    finally:
        for hook in hooks:
            hook.remove()
    if sizes["head"] >= MIN_CELLS:
        return CamLayer(model._avg_pooling, True, "head", sizes["head"])
    deep = [i for i in range(len(blocks)) if sizes[f"block {i}"] >= MIN_CELLS]
    i = deep[-1] if deep else 0
    return CamLayer(blocks[i], False, f"block {i}", sizes[f"block {i}"])


def grad_cam(model: nn.Module, images: torch.Tensor, targets: Sequence[int],
             layer: CamLayer | None = None) -> torch.Tensor:
    """Grad-CAM heatmaps of class ``targets[i]`` on ``images[i]`` (a batch as the model takes it), from ``layer``'s
    map (default: :func:`cam_layer`'s): a CPU tensor ``[N, H, W]`` at the images' size, each scaled to a peak of 1
    (all 0 where no part of the map speaks for the class). ``model`` must be in eval mode; it runs in fp32, with
    gradients, on its own device."""
    import torch
    from captum.attr import LayerAttribution, LayerGradCam

    device = next(model.parameters()).device
    images = images.to(device).float()
    layer = layer or cam_layer(model, images)
    with torch.enable_grad():
        maps = LayerGradCam(model, layer.module).attribute(images, target=[int(t) for t in targets],
                                                           attribute_to_layer_input=layer.on_input,
                                                           relu_attributions=True)
    heat = LayerAttribution.interpolate(maps.detach().float(), tuple(images.shape[-2:]),
                                        interpolate_mode="bilinear")[:, 0].clamp(min=0)
    peak = heat.flatten(1).amax(dim=1).clamp(min=1e-12)
    return (heat / peak[:, None, None]).cpu()


def shown_image(tensor: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """A normalised ``[3, H, W]`` model input as the picture it was: ``[H, W, 3]`` in 0-1 (the evaluation
    transform's normalisation undone)."""
    import torch

    m = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (tensor.detach().float().cpu() * s + m).clamp(0, 1).permute(1, 2, 0)


@dataclass(frozen=True)
class Panel:
    """One picture of a heatmap figure: an image (``[H, W, 3]``, 0-1), a heatmap over it or None, a title."""

    image: torch.Tensor
    heat: torch.Tensor | None
    title: str


def heatmap_figure(rows: Sequence[Sequence[Panel]], caption: str = ""):
    """A matplotlib figure of ``rows`` of panels (each heatmap drawn half-transparent in the ``jet`` colours over
    its image: red where the class's evidence is), titled ``caption``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(row) for row in rows)
    width = 3.2 * columns
    caption = textwrap.fill(caption, int(width * 13))  # about 13 characters an inch at 10 points
    top = 0.2 * (caption.count("\n") + 1) + 0.15 if caption else 0.0  # inches kept above the panels for it
    height = 3.6 * len(rows) + top
    fig, axes = plt.subplots(len(rows), columns, figsize=(width, height), squeeze=False, dpi=100)
    for r, row in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(row):
                continue
            panel = row[c]
            ax.imshow(panel.image.numpy(), interpolation="bilinear")
            if panel.heat is not None:
                ax.imshow(panel.heat.numpy(), cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, interpolation="bilinear")
            ax.set_title(panel.title, fontsize=8)
    if caption:
        fig.suptitle(caption, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - top / height))
    return fig
