"""Input preprocessing that matches the pretrained weights of an architecture."""

from __future__ import annotations

import logging
import os
import re

import numpy as np
from PIL import Image, ImageFile, ImageOps
from torchvision import transforms

from .layout import HEIF_EXTENSIONS
from .spec import ArchSpec

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LITE_MEAN", "LITE_STD", "normalization", "eval_transform",
           "HEIF_EXTENSIONS", "heif_readable", "load_image", "to_rgb", "too_large"]

log = logging.getLogger("efficientnet.trial")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)


_ORIENTATION = 0x0112  # the EXIF tag
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit integer pixels (and 32-bit, taken as 16-bit)


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB, upright, for every path that reads an image (training, validation, the data cache,
    predict).

    * A photo whose EXIF orientation says it was stored sideways (as phone cameras do) is turned upright, as image
      viewers show it; PIL alone leaves it as stored.
    * PIL's own conversion clips a 16-bit image at 255: a 16-bit greyscale PNG or TIFF, common in medical and
      scientific imaging, came out nearly all white. Such images (and 32-bit integer ones, taken as 16-bit, the way
      older Pillow opens 16-bit PNGs) are scaled from 0-65535 to 0-255 instead; float images from 0-1 when they lie
      there, else clipped to 0-255.
    * A palette image with transparency goes through RGBA, which spares a warning per image."""
    if img.getexif().get(_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _WIDE_MODES or img.mode == "F":
        pixels = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode in _WIDE_MODES else 1.0 if pixels.size and pixels.max() <= 1.0 else 255.0
        img = Image.fromarray(np.clip(np.rint(pixels * (255.0 / top)), 0, 255).astype(np.uint8))  # mode L
    return img.convert("RGB")


_heif: list[bool] = []  # whether pillow-heif's opener is registered with PIL, once known


def heif_readable() -> bool:
    """Register pillow-heif's HEIC/HEIF opener with PIL on first use (30 ms, so only when such a file turns up);
    False when pillow-heif is not installed."""
    if not _heif:
        try:
            from pillow_heif import register_heif_opener
        except ImportError:
            _heif.append(False)
        else:
            register_heif_opener()
            _heif.append(True)
    return _heif[0]


_warned_truncated: set[str] = set()  # files this process has named as truncated (once each, not every epoch)


def load_image(path: str | os.PathLike, draft: int | None = None) -> Image.Image:
    """Read one image file as :func:`to_rgb` gives it: the loader of the per-image dataset, the data cache and
    ``predict``. ``draft``: let a JPEG decode at 1/2, 1/4 or 1/8 scale while its sides stay at least that size.

    A truncated JPEG, TIFF or BMP (an interrupted download or copy) passes the dataset scan, which does not decode
    every image, and PIL refuses it when it decodes: it ended a run in the middle of an epoch with a traceback.
    Such a file is read as far as it goes, the rest grey, with a warning that names it (once per process)."""
    def read() -> Image.Image:
        with Image.open(path) as img:
            if draft is not None and img.format == "JPEG":
                img.draft("RGB", (draft, draft))
            return to_rgb(img)

    if os.fspath(path).lower().endswith(HEIF_EXTENSIONS):
        heif_readable()
    try:
        return read()
    except OSError as exc:
        if "truncated" not in str(exc):
            raise
    if os.fspath(path) not in _warned_truncated:
        _warned_truncated.add(os.fspath(path))
        log.warning("warning: %s is truncated (an interrupted download or copy?); its missing part is read as grey: "
                    "copy it again", path)
    before, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, True  # global: one image at a time
    try:
        return read()
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def too_large(exc: Image.DecompressionBombError) -> str:
    """What PIL's refusal of an image over its pixel limit means, for a user's own (not hostile) image:
    ``"182,000,000 pixels, over PIL's decompression-bomb limit of 178,956,970"``."""
    pixels = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(pixels[1]):,} pixels" if pixels else "too many pixels"
    return f"{size}, over PIL's decompression-bomb limit of {2 * (Image.MAX_IMAGE_PIXELS or 0):,}"


def normalization(spec: ArchSpec) -> transforms.Normalize:
    """EfficientNet-Lite weights expect mean/std 0.5; the B family ImageNet's mean/std."""
    lite = spec.activation == "relu6"
    return transforms.Normalize(LITE_MEAN if lite else IMAGENET_MEAN, LITE_STD if lite else IMAGENET_STD)


def eval_transform(spec: ArchSpec, resolution: int | None = None) -> transforms.Compose:
    """Resize the short side to the model resolution, centre-crop a square, convert and normalise."""
    res = resolution or spec.resolution
    return transforms.Compose(
        [
            transforms.Lambda(to_rgb),
            transforms.Resize(res, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(res),
            transforms.ToTensor(),
            normalization(spec),
        ]
    )
