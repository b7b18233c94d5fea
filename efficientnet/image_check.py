"""Which of a dataset's image files PIL can read, remembered from one trial to the next.

Every trial scans its dataset before it trains: PIL opens and verifies each file, 50 to 250 µs a JPEG or PNG on a
2-core CPU, so seconds per trial for 10^5 images, and every trial of a search repeats it. The outcome is kept in
the cache directory (``scans/``, one small JSON file per folder) and reused while the files' names, sizes and
modification times, and PIL's pixel limit, are all unchanged; any change checks the whole folder again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Sequence

from PIL import Image

from .atomic_files import atomic_write_json
from .preprocess import too_large

__all__ = ["DAMAGED", "check_image", "image_problems"]

DAMAGED = "damaged"
RECORD_VERSION = 1


def check_image(path: Path) -> str | None:
    """None for an image PIL can read; else why not: :data:`DAMAGED`, or :func:`too_large`'s words for an image
    over PIL's decompression-bomb pixel limit (a real image, too large to decode safely)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.verify()
        return None
    except Image.DecompressionBombError as exc:
        return too_large(exc)
    except Exception:  # PIL raises many types for damaged files
        return DAMAGED


def _digest(rels: Sequence[str], files: Sequence[Path]) -> str:
    h = hashlib.sha1(f"v{RECORD_VERSION}|{Image.MAX_IMAGE_PIXELS}".encode())
    for rel, path in zip(rels, files):
        st = path.stat()
        h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _relative(root: Path, files: Sequence[Path]) -> list[str]:
    """``os.path.relpath(file, root)`` of each file, computed once per folder (per file, it took 0.8 s for 5 x 10^4
    files)."""
    folders: dict[str, str] = {}
    out = []
    for p in files:
        folder, name = os.path.split(os.fspath(p))
        rel = folders.get(folder)
        if rel is None:
            rel = folders[folder] = os.path.relpath(folder or os.curdir, root)
        out.append(name if rel == os.curdir else os.path.join(rel, name))
    return out


def image_problems(root: Path, files: Sequence[Path], record_dir: Path | None) -> dict[Path, str]:
    """The ``files`` (under ``root``) that PIL cannot read, with :func:`check_image`'s reason: checked once, then
    read from ``record_dir`` while nothing changed (``None``: check every time)."""
    if record_dir is None:
        return {p: why for p in files if (why := check_image(p))}
    where = os.path.abspath(root)
    rels = _relative(root, files)
    record = record_dir / f"{hashlib.sha1(where.encode()).hexdigest()[:20]}.json"
    digest = _digest(rels, files)
    try:
        saved = json.loads(record.read_text())
        if saved.get("digest") == digest:
            by_rel = dict(zip(rels, files))
            return {by_rel[rel]: why for rel, why in saved["problems"].items()}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass  # none yet, or damaged: check again
    problems = {p: why for p in files if (why := check_image(p))}
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json({"root": where, "digest": digest,
                           "problems": {rel: problems[p] for rel, p in zip(rels, files) if p in problems}}, record)
    except OSError:
        pass  # a read-only cache: check every time
    return problems
