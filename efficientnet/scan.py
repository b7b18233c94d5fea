"""Finding and checking a dataset's image files: class folders or the rows of a label CSV, walked once, each image
checked once by PIL (see :mod:`efficientnet.image_check`), with the files that cannot be read set aside and named.

Every problem a user can fix (a class folder without images, a class whose images are all damaged, a dataset that
looks damaged) raises :class:`~efficientnet.layout.DataError` with one line naming it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .image_check import DAMAGED, image_problems
from .label_table import LabelTable
from .layout import HEIF_EXTENSIONS, OTHER_IMAGE_EXTENSIONS, READ_EXTENSIONS, DataError, class_folders, walk_files
from .preprocess import heif_readable

__all__ = ["ClassFolders", "MAX_CORRUPT_FRACTION", "OTHER_IMAGE_EXTENSIONS", "check_skipped", "identical_files",
           "image_files", "scan_class_folders", "scan_label_table", "scan_test_pairs"]

log = logging.getLogger("efficientnet.trial")

MAX_CORRUPT_FRACTION = 0.1  # more unreadable images than this is an error, not a warning


def _walk(folder: Path) -> tuple[list[Path], list[Path]]:
    """The image files under ``folder`` (sub-folders too, as :func:`~efficientnet.layout.walk_files` walks them)
    and the files in :data:`OTHER_IMAGE_EXTENSIONS`."""
    images: list[Path] = []
    others: list[Path] = []
    for d, names in walk_files(folder):
        base = Path(d)  # one parse per folder, not per file: 10^5 files took 0.6 s of parsing
        for f in names:
            lower = f.lower()
            if lower.endswith(READ_EXTENSIONS) or (lower.endswith(HEIF_EXTENSIONS) and heif_readable()):
                images.append(base / f)
            elif lower.endswith(OTHER_IMAGE_EXTENSIONS + HEIF_EXTENSIONS):
                others.append(base / f)
    return sorted(images), sorted(others)


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (sub-folders too), hidden ones left out: macOS's ``._photo.jpg`` copies
    (not images), and folders such as ``.ipynb_checkpoints`` (copies of images)."""
    return _walk(folder)[0]


def _formats(paths: Sequence[Path]) -> str:
    """``"12 .heic, 2 .gif"``: how many files of each extension."""
    return ", ".join(f"{n} {ext}" for ext, n in Counter(p.suffix.lower() for p in paths).most_common())


@dataclass
class ClassFolders:
    """What :func:`scan_class_folders` found: class names and image files, with unreadable files set aside."""

    root: Path
    classes: list[str]
    files: dict[str, list[Path]]
    corrupt: list[Path] = field(default_factory=list)
    oversized: dict[Path, str] = field(default_factory=dict)  # readable, but over PIL's pixel limit: why
    other_formats: list[Path] = field(default_factory=list)  # images in formats not read here (.heic, ...)

    @property
    def num_images(self) -> int:
        return sum(len(v) for v in self.files.values())


def scan_class_folders(root: Path, verify: bool = True, record_dir: Path | None = None) -> ClassFolders:
    """Check one ImageFolder directory: class folders exist, each holds images that PIL can read (``verify``;
    remembered in ``record_dir`` while the files do not change, see :mod:`efficientnet.image_check`); list them."""
    classes = class_folders(root)
    found: dict[str, list[Path]] = {}
    others: list[Path] = []
    for c in classes:
        found[c], other = _walk(root / c)
        others += other
        if not found[c]:
            held = f" (it holds {_formats(other)} files, which are not read here: convert them to JPEG or PNG)" \
                if other else ""
            raise DataError(f"class folder {root / c} has no images ({', '.join(READ_EXTENSIONS[:4])}, ...){held}; "
                            "add images or remove the folder")
    every = [p for c in classes for p in found[c]]
    problems = image_problems(root, every, record_dir) if verify else {}
    return _readable(root, classes, found, others, problems, lambda c: f"class folder {root / c}",
                     "replace them or remove the folder")


def _readable(root: Path, classes: Sequence[str], found: dict[str, list[Path]], others: list[Path],
              problems: dict[Path, str], name: Callable[[str], str], fix: str | None) -> ClassFolders:
    """``found`` without the files in ``problems``; a class left without images is an error (``name(c)`` and
    ``fix`` say which and what to do) unless ``fix`` is None."""
    every = [p for c in classes for p in found[c]]
    corrupt = [p for p in every if problems.get(p) == DAMAGED]
    oversized = {p: why for p in every if (why := problems.get(p)) not in (None, DAMAGED)}
    files: dict[str, list[Path]] = {}
    for c in classes:
        files[c] = [p for p in found[c] if p not in problems]
        if not files[c] and fix is not None:
            held = [problems[p] for p in found[c]]
            why = _unreadable(held) if held else "its files are in formats not read here: convert them to JPEG or PNG"
            raise DataError(f"{name(c)} has no readable images ({why}); {fix}")
    return ClassFolders(root, list(classes), files, corrupt, oversized, others)


def scan_label_table(table: LabelTable, record_dir: Path | None = None) -> tuple[ClassFolders, ClassFolders | None]:
    """Check the images a label CSV lists, as :func:`scan_class_folders` checks a folder's: the training rows'
    and the validation rows' (None without a split column). A class with no training image is an error."""
    problems = _problems(table.path, [p for part in (table.train, table.val or ()) for p, _ in part], record_dir)

    def scan(pairs: Sequence[tuple[Path, int]], fix: str | None) -> ClassFolders:
        return _scan_pairs(table.path, table.classes, pairs, problems, fix)

    return scan(table.train, "replace them, or remove the label's rows"), \
        None if table.val is None else scan(table.val, None)


def scan_test_pairs(table: Path, classes: Sequence[str], pairs: Sequence[tuple[Path, int]],
                    record_dir: Path | None = None) -> ClassFolders:
    """Check the test images of the label CSV ``table`` (``(image, class index)`` pairs), as
    :func:`scan_label_table` checks a training table's; a class may have none."""
    return _scan_pairs(table, classes, pairs, _problems(table, [p for p, _ in pairs], record_dir), None)


def _problems(table: Path, files: Sequence[Path], record_dir: Path | None) -> dict[Path, str]:
    """The files of a label CSV that PIL cannot read, or only over its pixel limit (formats not read here aside)."""
    readable = _readable_suffixes()
    return image_problems(table, [p for p in files if p.suffix.lower() in readable], record_dir)


def _readable_suffixes() -> tuple[str, ...]:
    return READ_EXTENSIONS + (HEIF_EXTENSIONS if heif_readable() else ())


def _scan_pairs(table: Path, classes: Sequence[str], pairs: Sequence[tuple[Path, int]], problems: dict[Path, str],
                fix: str | None) -> ClassFolders:
    """The ``(image, class index)`` pairs of the label CSV ``table`` as a scan: images in formats not read here and
    the files in ``problems`` set aside (a label left without images is an error saying ``fix``, unless None)."""
    found: dict[str, list[Path]] = {c: [] for c in classes}
    others = []
    readable = _readable_suffixes()
    for p, label in pairs:
        if p.suffix.lower() in readable:
            found[classes[label]].append(p)
        else:
            others.append(p)
    return _readable(table.parent, classes, found, others, problems, lambda c: f"label {c!r} of {table.name}", fix)


def _unreadable(problems: Sequence[str]) -> str:
    damaged = sum(why == DAMAGED for why in problems)
    big = len(problems) - damaged
    return ", ".join(f"{n} {what}" for n, what in ((damaged, "damaged files"),
                                                   (big, "image(s) over PIL's pixel limit")) if n)



def check_skipped(scans: Sequence[ClassFolders], use: str = "train on them") -> int:
    """Warn about the files ``scans`` set aside (formats not read here, images over PIL's pixel limit, damaged
    files; the fixes say what they are for: ``use``) and return how many are damaged; more than
    :data:`MAX_CORRUPT_FRACTION` of them is an error."""
    others = [p for s in scans for p in s.other_formats]
    if others:
        log.warning("warning: skipping %s files, e.g. %s: formats not read here; convert them to JPEG or PNG to "
                    "%s%s", _formats(others), others[0], use,
                    " (HEIC: or pip install pillow-heif)" if any(p.suffix.lower() in HEIF_EXTENSIONS for p in others)
                    else "")
    big = {p: why for s in scans for p, why in s.oversized.items()}
    if big:
        path, why = next(iter(big.items()))
        log.warning("warning: skipping %d image(s) too large to decode safely, e.g. %s (%s); downscale them to %s",
                    len(big), path, why, use)
    bad = [p for s in scans for p in s.corrupt]
    total = sum(s.num_images for s in scans) + len(bad)
    if bad and len(bad) > MAX_CORRUPT_FRACTION * total:
        raise DataError(f"{len(bad)} of {total} image files cannot be read (e.g. {bad[0]}); "
                        "the dataset looks damaged: re-copy it")
    if bad:
        shown = ", ".join(str(p) for p in bad[:3]) + (" ..." if len(bad) > 3 else "")
        log.warning("warning: skipping %d unreadable image file(s) of %d: %s", len(bad), total, shown)
    return len(bad)


def identical_files(sides: Mapping[str, Sequence[tuple[str, str]]]
                    ) -> dict[tuple[str, str], list[tuple[str, str, bool]]]:
    """Images of two sides of a dataset (``train``, ``val``, ``test``: ``(path, label)`` each) with the same bytes,
    which make the later side's scores optimistic. Returns, for each pair of sides ``(later, earlier)`` in the
    order given, ``(its file, the earlier side's copy, whether their labels differ)``. Files are compared by size
    first and only sizes found on two sides are read (SHA-1), so a dataset without copies costs one stat a file."""
    by_size: dict[int, list[tuple[int, str, str]]] = {}
    for rank, files in enumerate(sides.values()):
        for path, label in files:
            try:
                by_size.setdefault(os.stat(path).st_size, []).append((rank, path, label))
            except OSError:
                continue
    hashed: list[tuple[bytes, int, str, str]] = []
    first: dict[tuple[bytes, int], tuple[str, str]] = {}  # (digest, side) -> its first file with those bytes
    for same_size in by_size.values():
        if len({rank for rank, _, _ in same_size}) < 2:
            continue
        for rank, path, label in same_size:
            try:
                with open(path, "rb") as f:
                    digest = hashlib.sha1(f.read()).digest()
            except OSError:
                continue
            hashed.append((digest, rank, path, label))
            first.setdefault((digest, rank), (path, label))
    names = list(sides)
    found: dict[tuple[str, str], list[tuple[str, str, bool]]] = {}
    for digest, rank, path, label in sorted(hashed, key=lambda h: (h[1], h[2])):
        earlier = next((e for e in range(rank) if (digest, e) in first), None)
        if earlier is not None:
            copy, copy_label = first[digest, earlier]
            found.setdefault((names[rank], names[earlier]), []).append((path, copy, label != copy_label))
    return found
