"""Where a dataset's class folders are: ``train/`` beside a validation folder, or one folder to split.

No image is read here and nothing heavier than :mod:`pathlib` is imported, so the launcher checks a dataset's
layout before an experiment starts, with the same rules and messages as the trial.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

__all__ = ["DataError", "DatasetLayout", "HEIF_EXTENSIONS", "IMAGE_SUFFIXES", "OTHER_IMAGE_EXTENSIONS", "READ_EXTENSIONS",
           "VAL_FOLDERS", "class_folders", "find_layout", "find_test_folder", "test_folder", "walk_files"]

TRAIN_FOLDERS = ("train", "training")  # names of the training folder, first found wins
VAL_FOLDERS = ("val", "valid", "validation")  # names of a validation folder beside it, first found wins
TEST_FOLDERS = ("test", "testing")  # names of a held-out test folder, first found wins
# image files by suffix: those torchvision's ImageFolder reads (its IMG_EXTENSIONS, restated so that nothing here
# imports torchvision; a test keeps the two equal), iPhone photos (read once pillow-heif is installed), and formats
# not read here (named in a warning, not ignored)
READ_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
HEIF_EXTENSIONS = (".heic", ".heif")
OTHER_IMAGE_EXTENSIONS = (".avif", ".gif", ".jfif", ".jp2", ".dng", ".cr2", ".nef", ".arw", ".svg", ".dcm")
IMAGE_SUFFIXES = READ_EXTENSIONS + HEIF_EXTENSIONS + OTHER_IMAGE_EXTENSIONS
# names that say "a split of the dataset", not "a class": train/, test_set/, ...
_SPLIT_WORDS = {"train", "training", "val", "valid", "validation", "test", "testing", "dev", "eval"}


class DataError(ValueError):
    """A dataset problem the user can fix; the message is one line naming the problem and the fix."""


@dataclass(frozen=True)
class DatasetLayout:
    """The folders of a dataset: ``val_root`` is None when ``train_root`` is split into train and validation.

    ``unused`` names the folders beside a lone ``train/`` that nothing reads (a ``test/``, say)."""

    root: Path
    train_root: Path
    val_root: Path | None
    classes: tuple[str, ...]
    unused: tuple[str, ...] = ()


def class_folders(root: Path) -> list[str]:
    """The sorted names of ``root``'s class folders (its sub-folders, hidden ones left out)."""
    if not root.is_dir():
        raise DataError(f"dataset directory {root} does not exist; pass --data DIR with one sub-folder per class "
                        "(or train/ and val/), or --data digits for the demo")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        table = _label_table_beside(root, root.parent)  # Kaggle's train/ + train.csv
        fix = f"pass --data {table} if it lists each image's label, or put" if table else "put"
        raise DataError(f"dataset directory {root} has no class sub-folders; {fix} the images of each class in "
                        f"{root}/<class name>/")
    return classes


def walk_files(folder: str | os.PathLike) -> Iterator[tuple[str, list[str]]]:
    """``(folder, sorted file names)`` for ``folder`` and every folder under it, hidden files and folders left out
    (macOS's ``._photo.jpg`` copies, ``.ipynb_checkpoints``). Symbolic links are followed (a class folder may link
    to where its images are), but not into a folder seen before or one that holds ``folder``: a link to ``..`` gave
    a class every other class's images, over and over, until the path was too long."""
    start = os.path.realpath(folder)
    seen = {start}
    for d, dirs, names in os.walk(folder, followlinks=True):
        keep = []
        for name in sorted(dirs):
            real = os.path.realpath(os.path.join(d, name))
            if name.startswith(".") or real in seen or start.startswith(real + os.sep):
                continue
            seen.add(real)
            keep.append(name)
        dirs[:] = keep
        yield d, sorted(name for name in names if not name.startswith("."))


def find_layout(root: Path, num_classes: int | None = None) -> DatasetLayout:
    """Find ``root``'s train and validation class folders and check that they name two or more classes, the same
    in both, and ``num_classes`` of them when given. A ``train/`` without a validation folder is split like a flat
    folder of classes."""
    train_dir = next((root / name for name in TRAIN_FOLDERS if (root / name).is_dir()), None)
    val_root = next((root / name for name in VAL_FOLDERS if (root / name).is_dir()), None)
    unused: tuple[str, ...] = ()
    if train_dir is not None and val_root is not None:
        train_root = train_dir
        classes = class_folders(train_root)
        val_classes = class_folders(val_root)
        if classes != val_classes:
            only = sorted(set(classes) ^ set(val_classes))
            raise DataError(f"{train_root.name}/ and {val_root.name}/ of {root} have different class folders "
                            f"({', '.join(only)}); give both the same classes")
    else:
        val_root = None
        train_root = train_dir or root
        if train_root != root:
            unused = tuple(sorted(d.name + "/" for d in root.iterdir()
                                  if d.is_dir() and d != train_root and not d.name.startswith(".")))
        classes = class_folders(train_root)
        splits = sorted((c for c in classes if _looks_like_a_split(train_root / c)), key=lambda c: "train" not in c)
        if splits:  # the training split first, for the suggestion
            raise DataError(f"the class folders of {train_root} include {', '.join(f'{c}/' for c in splits)}, "
                            "which hold class folders of their own: splits of the dataset, not classes; name the "
                            f"training split train/ and the validation split val/ (or pass --data "
                            f"{train_root / splits[0]})")
    if len(classes) < 2:
        only_class = train_root / classes[0]
        inner = [d for d in only_class.iterdir() if d.is_dir() and not d.name.startswith(".")]
        table = _label_table_beside(root)
        fix = f"pass --data {only_class} if its sub-folders are the classes" if len(inner) >= 2 \
            else f"pass --data {table} if it lists each image's label" if table else "add class folders"
        raise DataError(f"dataset {root} has only one class ({classes[0]}); a classifier needs at least two class "
                        f"folders: {fix}")
    if num_classes is not None and num_classes != len(classes):
        names = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
        raise DataError(f"--num-classes is {num_classes} but {train_root} has {len(classes)} class folders "
                        f"({names}); fix --num-classes or the dataset")
    return DatasetLayout(root, train_root, val_root, tuple(classes), unused)


def test_folder(root: Path) -> Path | None:
    """``root``'s held-out ``test/`` (or ``testing/``) folder, or None."""
    return next((root / name for name in TEST_FOLDERS if (root / name).is_dir()), None)


def find_test_folder(root: Path) -> tuple[Path, str]:
    """The class folders to evaluate a model on, and how they were found: ``root``'s ``test/`` folder when it has
    one (``"test/"``), else ``root`` itself when its sub-folders are classes (``"class folders"``). A dataset of
    ``train/`` and ``val/`` without a ``test/`` is an error naming the folder to pass instead."""
    if not root.is_dir():
        raise DataError(f"test data {root} does not exist; pass a folder with one sub-folder per class (or a "
                        "dataset folder with test/), or a label CSV")
    test = test_folder(root)
    if test is not None:
        class_folders(test)
        return test, f"{test.name}/"
    splits = [root / name for name in TRAIN_FOLDERS + VAL_FOLDERS if (root / name).is_dir()]
    if splits:
        shown = ", ".join(f"{p.name}/" for p in splits)
        val = next((p for p in splits if p.name in VAL_FOLDERS), splits[-1])
        raise DataError(f"dataset {root} has {shown} but no test/ folder of held-out images; add one, or pass {val} "
                        "to evaluate on those images")
    class_folders(root)
    return root, "class folders"


def _label_table_beside(*folders: Path) -> Path | None:
    """A CSV in ``folders`` that may list the images' labels (``train.csv`` or ``labels.csv`` first), or None."""
    tables = [p for d in folders for p in sorted(d.glob("*.csv"))]
    return min(tables, key=lambda p: not any(w in p.name.lower() for w in ("train", "label")), default=None)


def _looks_like_a_split(folder: Path) -> bool:
    """A folder named like a split (``test/``, ``training_set/``) that holds two or more sub-folders."""
    words = set(folder.name.lower().replace("-", "_").split("_")) - {"set", "data", "images", "split"}
    if not words or not words <= _SPLIT_WORDS:
        return False
    return sum(1 for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")) >= 2
