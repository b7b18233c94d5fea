"""Profiles kept between processes.

The meta-device profile of an architecture (:func:`efficientnet.profiler.profile`) depends only on the
architecture, the class count, and the code that builds and measures the model. The tuner profiles the first
candidate of every experiment to cross-check its closed-form costs (:mod:`efficientnet.search.budgets`), and in a
fresh process that profile costs about 3 s of CPU before the first trial can start: its first operation under a
dispatch mode imports torch's compiler front end. So the profile is stored, and the next experiment (or the same
one resumed) reads it instead.

A stored profile's key covers the spec, the class count, torch's version and the source of the modules that make
and measure the model (:data:`MODEL_SOURCES`, and efficientnet-pytorch's); a change to any of them is a new key, so
a changed model implementation is profiled afresh, as the cross-check needs. Files:
``<cache>/profiles/<key>.json`` (the cache folder of :func:`efficientnet.cache.default_cache_dir`), written whole
or not at all; a file that cannot be read is measured again, and a folder that cannot be written only costs the
time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from .cache import default_cache_dir
from .spec import ArchSpec

if TYPE_CHECKING:
    from .profiler import Profile

__all__ = ["MODEL_SOURCES", "LIBRARY_SOURCES", "stored_profile", "profile_path"]

MODEL_SOURCES = ("builder.py", "layers.py", "profiler.py", "spec.py")  # this package's modules behind a profile
LIBRARY_SOURCES = ("model.py", "utils.py")  # efficientnet-pytorch's


@lru_cache(maxsize=1)
def _code_key() -> str:
    import efficientnet_pytorch
    import torch

    h = hashlib.sha256(f"torch {torch.__version__}\0".encode())
    for folder, names in ((Path(__file__).parent, MODEL_SOURCES),
                          (Path(efficientnet_pytorch.__file__).parent, LIBRARY_SOURCES)):
        for name in names:
            h.update(f"{name}\0".encode() + (folder / name).read_bytes())
    return h.hexdigest()


def profile_path(spec: ArchSpec, num_classes: int, folder: Path | None = None) -> Path:
    """Where the profile of ``spec`` with ``num_classes`` classes is stored under this code."""
    key = hashlib.sha256(f"{_code_key()}\0{spec}\0{num_classes}".encode()).hexdigest()[:32]
    return (default_cache_dir() if folder is None else folder) / "profiles" / f"{key}.json"


def stored_profile(spec: ArchSpec, num_classes: int = 1000, folder: Path | None = None) -> "Profile":
    """The profile of ``spec`` at its resolution: read from the store (``folder``, default the cache folder), else
    measured and stored."""
    from .atomic_files import OutputError, atomic_write_json
    from .profiler import Profile, profile

    path = profile_path(spec, num_classes, folder)
    with contextlib.suppress(OSError, ValueError, TypeError):
        return Profile(**json.loads(path.read_text()))
    measured = profile(spec, num_classes=num_classes)
    with contextlib.suppress(OutputError):
        atomic_write_json(measured.to_dict(), path)
    return measured
