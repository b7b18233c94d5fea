"""Where the project keeps what it can make again: the digits demo's export, decoded-image caches
(:mod:`efficientnet.datacache`), which image files PIL can read (:mod:`efficientnet.image_check`) and stored
profiles (:mod:`efficientnet.profile_store`). Standard library only, so
that light modules can ask."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """``$EFFICIENTNET_NNI_CACHE``, else ``~/.cache/efficientnet-nni``."""
    return Path(os.environ.get("EFFICIENTNET_NNI_CACHE") or Path.home() / ".cache" / "efficientnet-nni")
