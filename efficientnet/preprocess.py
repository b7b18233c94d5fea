"""Input preprocessing that matches the pretrained weights of an architecture."""

from __future__ import annotations

from torchvision import transforms

from .spec import ArchSpec

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LITE_MEAN", "LITE_STD", "normalization", "eval_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)


def normalization(spec: ArchSpec) -> transforms.Normalize:
    """EfficientNet-Lite weights expect mean/std 0.5; the B family ImageNet's mean/std."""
    lite = spec.activation == "relu6"
    return transforms.Normalize(LITE_MEAN if lite else IMAGENET_MEAN, LITE_STD if lite else IMAGENET_STD)


def eval_transform(spec: ArchSpec, resolution: int | None = None) -> transforms.Compose:
    """Resize the short side to the model resolution, centre-crop a square, convert and normalise."""
    res = resolution or spec.resolution
    return transforms.Compose(
        [
            transforms.Lambda(lambda img: img.convert("RGB")),
            transforms.Resize(res, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(res),
            transforms.ToTensor(),
            normalization(spec),
        ]
    )
