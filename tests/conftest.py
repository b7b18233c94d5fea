"""Shared fixtures; puts the project root (tuner, utils, main_efficientnet) and bench/ (synthetic objectives) on
sys.path."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT, ROOT / "bench"):  # bench/synthetic.py: the synthetic objectives tests share with benchmarks
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

# Tiny models run fastest on one thread, and a second busy process on a 2-core machine makes multi-threaded
# PyTorch spin-wait (seen: a 25 ms step taking 5 s); trials the tests start pass --threads 1 as well.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The digits export and the decoded-image caches go to a folder of this test session, not the user's ~/.cache
# (trials and experiments the tests start inherit it).
if "EFFICIENTNET_NNI_CACHE" not in os.environ:
    os.environ["EFFICIENTNET_NNI_CACHE"] = tempfile.mkdtemp(prefix="efficientnet-nni-tests-")
    atexit.register(shutil.rmtree, os.environ["EFFICIENTNET_NNI_CACHE"], ignore_errors=True)


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``cuda`` are skipped (and reported so) on machines without a CUDA GPU."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """The embedded digits demo exported as an ImageFolder (train/ and val/, 32 px, classes 0-9), once per test
    module, into a folder of its own."""
    from efficientnet.data import export_digits

    return export_digits(tmp_path_factory.mktemp("cache"))


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
