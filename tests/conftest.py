"""Shared fixtures; puts the project root on sys.path so tests import tuner, utils and main_efficientnet."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tiny models run fastest on one thread, and a second busy process on a 2-core machine makes multi-threaded
# PyTorch spin-wait (seen: a 25 ms step taking 5 s); trials the tests start pass --threads 1 as well.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def root() -> Path:
    """The project root."""
    return ROOT


@pytest.fixture(scope="session")
def sample_photos(tmp_path_factory) -> dict[str, Path]:
    """scikit-learn's two real sample photos (a Chinese temple, a flower) saved as JPEG files."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    out = tmp_path_factory.mktemp("photos")
    data = load_sample_images()
    paths = {}
    for name, image in zip(data.filenames, data.images):
        stem = Path(name).stem
        paths[stem] = out / f"{stem}.jpg"
        Image.fromarray(image).save(paths[stem])
    return paths
