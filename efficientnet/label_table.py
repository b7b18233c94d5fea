"""Datasets whose labels are in a CSV file, as Kaggle and most labelling tools give them.

``--data labels.csv`` reads a table with a header row: one column names each image (a path relative to the CSV's
folder, a file name, or an id without its extension, found anywhere under that folder), another holds its class::

    image_id,label                 id,breed                      image,cat,dog        (one column per class, 0/1)
    1000015157.jpg,0               000bec180eb18c77,boston_bull  img/001.png,0,1

The label column is the one named ``label``, ``class``, ``category`` or ``target`` (or the only column besides the
image's), or columns of 0/1 with exactly one 1 per row; ``--label-column`` names another. A ``split`` column
(train/val/test) or fastai's ``is_valid`` (true/false) gives the validation rows, and so does a validation table
beside the training one (``val.csv`` beside ``train.csv``; Roboflow's ``valid/_classes.csv`` beside
``train/_classes.csv``). Without either, a seeded, stratified ``--val-split`` of the rows is held out, as for a
folder of classes, and ``--group-column`` keeps the images of one subject (a patient, a lesion) on one side of it.

Only :mod:`csv` and :mod:`pathlib` are used here, so the launcher checks a table before an experiment starts, with
the same rules and messages as the trial.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .layout import IMAGE_SUFFIXES, VAL_FOLDERS, DataError, test_folder, walk_files

__all__ = ["LabelTable", "TestTable", "has_test_images", "is_label_table", "read_label_table", "read_test_table",
           "validation_table"]

LABEL_COLUMNS = ("label", "labels", "class", "class_name", "classname", "category", "target")
IMAGE_COLUMNS = ("image", "image_id", "image_name", "image_path", "img", "filename", "file_name", "file", "path",
                 "filepath", "id", "id_code", "name")
SPLIT_COLUMN = "split"
VALID_COLUMNS = ("is_valid", "is_val", "is_validation")
# a column that may tie several images to one subject (see LabelTable.group_hints): one of these words alone, or
# before an id (patient_id, lesion_id, StudyInstanceUID; not plant_type or anatom_site)
GROUP_WORDS = {"patient", "subject", "lesion", "person", "individual", "case", "study", "series", "video", "group",
               "animal", "specimen", "plant"}
_ID_WORDS = {"id", "uid", "name", "no", "number", "code"}
MAX_MISSING_FRACTION = 0.1  # more rows without an image file than this is an error, not a warning
_TRUE, _FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f", ""}
_SPLITS = {**{s: "train" for s in ("train", "training")}, **{s: "val" for s in VAL_FOLDERS},
           **{s: "test" for s in ("test", "testing")}}


@dataclass(frozen=True)
class LabelTable:
    """What a label CSV says: the classes, and each split's ``(image file, class index)`` pairs.

    ``val`` is None when nothing names the validation rows (the trial holds out ``--val-split`` of ``train``):
    neither a split column nor a validation table beside this one (``validation`` says which)."""

    path: Path
    image_column: str
    label_column: str  # a column's name, or "one-hot" when each class is a column
    classes: tuple[str, ...]
    train: tuple[tuple[Path, int], ...]
    val: tuple[tuple[Path, int], ...] | None
    missing: tuple[str, ...] = ()  # the image names of rows whose file was not found (left out)
    unlabelled: int = 0  # rows with an empty label (left out)
    test_rows: int = 0  # rows of a test split (left out)
    repeated: int = 0  # rows naming an image an earlier row named (left out)
    validation: str | None = None  # where ``val`` comes from: "split column", "is_valid column", "valid/labels.csv"
    group_column: str | None = None  # --group-column: rows of one group (a patient, a lesion) belong together
    groups: Mapping[str, str] | None = field(default=None, compare=False)  # each image's group (its path as key)
    shared_groups: int = 0  # groups with images on both sides of a given split (a leak)
    group_hints: tuple[str, ...] = ()  # columns named like a subject whose values repeat: --group-column candidates


def is_label_table(data: str | os.PathLike) -> bool:
    """Whether ``--data`` names a label CSV rather than a folder."""
    return os.fspath(data).lower().endswith((".csv", ".tsv"))


class _Files:
    """Finds the file an image column's value names: a path relative to the table's folder first, else a file of
    that name (or that name plus an image suffix) anywhere under the folder, indexed on first need."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._where = os.fspath(folder)
        self._by_name: dict[str, list[str]] | None = None

    def _index(self) -> dict[str, list[str]]:
        if self._by_name is None:
            self._by_name = defaultdict(list)
            for d, names in walk_files(self.folder):
                for name in names:
                    if not name.lower().endswith(IMAGE_SUFFIXES):
                        continue
                    path = os.path.join(d, name)
                    self._by_name[name].append(path)
                    self._by_name[os.path.splitext(name)[0]].append(path)  # an id without its suffix
        return self._by_name

    def find(self, value: str) -> str | None:
        """The file ``value`` names, or None; a name that matches two files is an error naming both. (Strings, not
        :class:`~pathlib.Path`: building 10^5 paths took seconds.)"""
        direct = os.path.join(self._where, value.replace("\\", "/") if os.sep == "/" else value)  # Windows' paths
        if os.path.isfile(direct):
            return direct
        matches = self._index().get(os.path.basename(value.replace("\\", "/")), [])
        if len(matches) > 1:
            shown = ", ".join(os.path.relpath(p, self._where) for p in matches[:3])
            raise DataError(f"the image name {value!r} matches {len(matches)} files under {self.folder} ({shown}); "
                            "write each image's path relative to the CSV's folder")
        return matches[0] if matches else None


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"label table {path} does not exist; pass --data with the CSV file that lists each "
                        "image and its label") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the label table {path} ({exc}); save it as UTF-8 CSV") from None
    first = text.split("\n", 1)[0]
    delimiter = "\t" if path.suffix.lower() == ".tsv" or ("\t" in first and "," not in first) else \
        ";" if ";" in first and "," not in first else ","
    rows = [row for row in csv.reader(text.splitlines(), delimiter=delimiter) if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise DataError(f"label table {path} has no rows under its header; list one image and its label per row")
    header = [cell.strip() for cell in rows[0]]
    if len(set(h.lower() for h in header)) != len(header):
        raise DataError(f"label table {path} repeats a column name in its header ({', '.join(header)}); give each "
                        "column its own name")
    return header, [[cell.strip() for cell in row] + [""] * (len(header) - len(row)) for row in rows[1:]]


def _image_column(header: list[str], rows: list[list[str]], files: _Files, path: Path) -> int:
    """The column that names files in most of the first 10 rows (a few images may be missing): the usual names
    first, then the columns in order."""
    shared: list[DataError] = []  # names two files share: an error only if they stand where the images should

    def names_a_file(value: str) -> bool:
        try:
            return bool(value) and files.find(value) is not None
        except DataError as exc:
            shared.append(exc)
            return False

    named = [i for name in IMAGE_COLUMNS for i, h in enumerate(header) if h.lower() == name]
    sample = rows[:10]
    for i in dict.fromkeys(named + list(range(len(header)))):
        if 2 * sum(names_a_file(row[i]) for row in sample) > len(sample):
            return i
    if shared:
        raise shared[0]
    raise DataError(f"no column of {path.name} names image files under {path.parent} (columns: {', '.join(header)}; "
                    f"first row: {', '.join(rows[0])}); put the CSV in the folder that holds the images, with their "
                    "paths or file names relative to it")


def _is_one_hot(rows: list[list[str]], columns: list[int]) -> bool:
    def value(cell: str) -> float | None:
        try:
            return float(cell)
        except ValueError:
            return None

    for row in rows:
        values = [value(row[i]) for i in columns]
        if any(v not in (0.0, 1.0) for v in values) or sum(values) != 1:  # type: ignore[misc]
            return False
    return True


def _integer_labels(parts: dict[str, list[tuple[str, str]]]) -> dict[str, list[tuple[str, str]]]:
    """Labels ``3.0`` as ``3`` when every label is a whole number: pandas writes an integer column with an empty
    cell as floats."""
    try:
        whole = {label: float(label) for part in parts.values() for _, label in part}
    except ValueError:
        return parts
    if not all(v.is_integer() for v in whole.values()):
        return parts
    return {name: [(f, str(int(whole[label]))) for f, label in part] for name, part in parts.items()}


def _names_a_subject(column: str) -> bool:
    """Whether a column's name says it ties images to a subject: ``patient_id``, ``lesion_id``, ``subject``."""
    words = [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", column)]
    return any(w in GROUP_WORDS for w in words) and (len(words) == 1 or words[-1] in _ID_WORDS)


def _class_order(names: set[str]) -> tuple[str, ...]:
    """Sorted; numerically when every class is an integer (``2`` before ``10``)."""
    try:
        return tuple(sorted(names, key=int))
    except ValueError:
        return tuple(sorted(names))


@dataclass
class _Rows:
    """One CSV file's rows, sorted into splits: ``(file, label)`` pairs."""

    image_column: str
    label_column: str
    split_column: str | None
    parts: dict[str, list[tuple[str, str]]]
    rows: int
    missing: list[str]
    unlabelled: int = 0
    repeated: int = 0
    groups: dict[str, str] = field(default_factory=dict)  # each file's group, with --group-column
    group_hints: list[str] = field(default_factory=list)  # see LabelTable.group_hints


def _read_table(path: Path, label_column: str | None, seen: dict[str, str], group_column: str | None = None) -> _Rows:
    """Sort ``path``'s rows into train, val and test; ``seen`` maps the files of rows read before (in this table
    or another of the dataset) to their labels: a repeat is left out, a second label is an error."""
    header, rows = _read_rows(path)
    lower = [h.lower() for h in header]
    files = _Files(path.parent)
    image = _image_column(header, rows, files, path)
    if files.find(header[image]) is not None:
        raise DataError(f"{path.name} has no header row: its first row names an image ({header[image]}); add a "
                        f"first row naming the columns, such as image,label")

    split = next((i for i, h in enumerate(lower) if h == SPLIT_COLUMN or h in VALID_COLUMNS), None)
    if split is not None:
        allowed, use = (_SPLITS, "train, val or test") if lower[split] == SPLIT_COLUMN else (_TRUE | _FALSE,
                                                                                           "true or false")
        odd = sorted({row[split] for row in rows if row[split].lower() not in allowed})
        if odd:
            raise DataError(f"the {header[split]} column of {path.name} holds {', '.join(map(repr, odd[:4]))}; "
                            f"use {use}")

    group = None
    if group_column is not None:
        if group_column.lower() not in lower:
            raise DataError(f"--group-column {group_column}: {path.name} has no such column (columns: "
                            f"{', '.join(header)})")
        group = lower.index(group_column.lower())
    rest = [i for i in range(len(header)) if i not in (image, split, group)]
    if label_column is not None:
        if label_column.lower() not in lower:
            raise DataError(f"--label-column {label_column}: {path.name} has no such column (columns: "
                            f"{', '.join(header)})")
        labels: list[int] | None = [lower.index(label_column.lower())]
    else:
        labels = next(([i] for name in LABEL_COLUMNS for i in rest if lower[i] == name), None)
        if labels is None and len(rest) == 1:
            labels = rest
        if labels is None and len(rest) >= 2 and _is_one_hot(rows, rest):
            labels = rest
    if not labels and len(rest) >= 2 and all(row[i] in ("0", "1") for row in rows for i in rest):
        several = next(row for row in rows if sum(row[i] == "1" for i in rest) != 1)
        raise DataError(f"the 0/1 columns of {path.name} give {several[image]} "
                        f"{sum(several[i] == '1' for i in rest)} labels; multi-label data is not supported: one 1 per "
                        "row")
    if not labels:
        raise DataError(f"cannot tell which column of {path.name} holds the labels (columns: {', '.join(header)}); "
                        "pass --label-column NAME")

    def label_of(row: list[str]) -> str:
        if len(labels) == 1:
            return row[labels[0]]
        return next(header[i] for i in labels if float(row[i]) == 1.0)

    out = _Rows(header[image], "one-hot" if len(labels) > 1 else header[labels[0]],
                header[split] if split is not None else None, {"train": [], "val": [], "test": []}, len(rows), [])
    if group is None:  # a column such as lesion_id or patient_id with a value several rows share
        out.group_hints = [header[i] for i in rest if i not in labels and _names_a_subject(header[i])
                           and len({row[i] for row in rows if row[i]}) < sum(1 for row in rows if row[i])]
    for row in rows:
        label = label_of(row)
        if not label:
            out.unlabelled += 1
            continue
        found = files.find(row[image]) if row[image] else None
        if found is None:
            out.missing.append(row[image])
            continue
        if found in seen:
            if seen[found] != label:
                raise DataError(f"{path.name} gives {row[image]} two labels ({seen[found]}, {label}); one label per "
                                "image (multi-label data is not supported): keep one row per image")
            out.repeated += 1
            continue
        seen[found] = label
        if group is not None:
            out.groups[os.fspath(Path(found))] = row[group] or found  # no group: the image is one of its own
        part = "train"
        if split is not None:
            value = row[split].lower()
            part = _SPLITS[value] if lower[split] == SPLIT_COLUMN else ("val" if value in _TRUE else "train")
        out.parts[part].append((found, label))
    return out


def _check_missing(path: Path, missing: list[str], rows: int, image_column: str) -> None:
    """More than :data:`MAX_MISSING_FRACTION` of a table's rows without an image file is an error, not a warning."""
    if len(missing) > MAX_MISSING_FRACTION * rows:
        raise DataError(f"{len(missing)} of the {rows} images {path.name} names were not found under "
                        f"{path.parent} (e.g. {missing[0]!r}, column {image_column}); put the CSV in the folder "
                        "that holds the images, or fix the names")


def validation_table(path: Path) -> Path | None:
    """The validation table that goes with the training table ``path``, if there is one: ``val.csv`` (or
    ``valid.csv``, ``validation.csv``) beside ``train.csv`` (``train_labels.csv`` gives ``val_labels.csv``), or a
    table of the same name in a validation folder beside a training folder (Roboflow's
    ``train/_classes.csv`` and ``valid/_classes.csv``)."""
    stem = path.stem.lower()
    if "train" in stem:
        for name in VAL_FOLDERS:
            other = path.with_name(path.name[:stem.index("train")] + name + path.name[stem.index("train") + 5:])
            if other.is_file():
                return other
    if path.parent.name.lower() in ("train", "training"):
        for name in VAL_FOLDERS:
            other = path.parent.parent / name / path.name
            if other.is_file():
                return other
    return None


def read_label_table(path: str | os.PathLike, num_classes: int | None = None, label_column: str | None = None,
                     group_column: str | None = None) -> LabelTable:
    """Read a label CSV (see the module's docstring), and the validation table beside it when it has no split
    column, and find their images; every problem a user can fix is a :class:`~efficientnet.layout.DataError` with
    one line. Files are found, not opened: the trial checks them. ``group_column`` names the column whose rows
    belong together (a patient, a lesion): the trial holds out whole groups, and a given split that puts a group on
    both sides is counted in ``shared_groups``."""
    path = Path(path).expanduser().absolute()  # messages name the folder images are looked for in
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a CSV file; pass --data with the CSV that lists the labels")
    seen: dict[str, str] = {}
    table = _read_table(path, label_column, seen, group_column)
    tables, validation = [table], f"{table.split_column} column" if table.split_column else None
    other = validation_table(path) if table.split_column is None else None
    if other is not None:
        val = _read_table(other, label_column, seen, group_column)
        table.parts["val"] = val.parts["train"] + val.parts["val"]  # its own test rows stay out
        table.parts["test"] += val.parts["test"]
        tables.append(val)
        validation = os.path.relpath(other, path.parent) if other.parent != path.parent else other.name
    missing = [name for t in tables for name in t.missing]
    _check_missing(path, missing, sum(t.rows for t in tables), table.image_column)
    parts = _integer_labels(table.parts)
    if not parts["train"]:
        raise DataError(f"{path.name} has no training rows in its {table.split_column} column; mark some rows train")
    if other is not None and not parts["val"]:
        raise DataError(f"{validation} (the validation table beside {path.name}) has no rows with an image and a "
                        f"label; fill it in, or remove it to hold out --val-split of {path.name}")
    if validation is not None and not parts["val"]:
        raise DataError(f"{path.name} has no validation rows in its {validation}; mark some rows val (or remove "
                        "the column to hold out --val-split of the rows)")
    classes = _class_order({label for _, label in parts["train"]})
    if len(classes) < 2:
        raise DataError(f"{path.name} has only one label ({''.join(classes) or 'none'}) in its {table.label_column} "
                        "column; a classifier needs at least two classes")
    unseen = sorted({label for _, label in parts["val"]} - set(classes))
    if unseen:
        where = "in its validation rows" if other is None else f"in {validation}"
        raise DataError(f"{path.name} has labels {where} that no training image has ({', '.join(unseen[:5])}); "
                        "give each class training images too")
    if num_classes is not None and num_classes != len(classes):
        names = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
        raise DataError(f"--num-classes is {num_classes} but {path.name} has {len(classes)} labels ({names}); fix "
                        "--num-classes or the table")
    index = {c: i for i, c in enumerate(classes)}

    def pairs(part: str) -> tuple[tuple[Path, int], ...]:
        return tuple((Path(f), index[label]) for f, label in parts[part])

    groups = {f: g for t in tables for f, g in t.groups.items()} if group_column is not None else None
    shared = 0
    if groups is not None and validation is not None:
        sides = [{groups[os.fspath(Path(f))] for f, _ in parts[part]} for part in ("train", "val")]
        shared = len(sides[0] & sides[1])
    return LabelTable(path, table.image_column, table.label_column, classes, pairs("train"),
                      pairs("val") if validation is not None else None, tuple(missing),
                      sum(t.unlabelled for t in tables), len(parts["test"]), sum(t.repeated for t in tables),
                      validation, group_column if groups is not None else None, groups, shared,
                      tuple(table.group_hints))


@dataclass(frozen=True)
class TestTable:
    """The labelled images of a label CSV to evaluate a model on: ``(image file, label)`` pairs of its test rows,
    or of every row when it has no split column (``rows`` says which)."""

    path: Path
    image_column: str
    label_column: str
    split_column: str | None  # the column whose test rows these are; None: every row
    pairs: tuple[tuple[Path, str], ...]
    missing: tuple[str, ...] = ()
    unlabelled: int = 0
    repeated: int = 0

    @property
    def rows(self) -> str:
        """Which rows: ``"test rows of its split column"`` or ``"every row"``."""
        return f"test rows of its {self.split_column} column" if self.split_column else "every row"


def read_test_table(path: str | os.PathLike, label_column: str | None = None) -> TestTable:
    """Read the test images of a label CSV (the module's docstring says how its columns are found): the rows its
    ``split`` column marks test, or every row of a table without a split column (a ``test.csv``). Problems the user
    can fix are one-line :class:`~efficientnet.layout.DataError` s."""
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a CSV file; pass the CSV that lists the test images' labels")
    table = _read_table(path, label_column, {})
    pairs = table.parts["train" if table.split_column is None else "test"]
    if table.split_column is not None:
        if not pairs:
            raise DataError(f"{path.name} has no test rows in its {table.split_column} column; mark the held-out "
                            "rows test, or pass a CSV that lists only the test images")
    _check_missing(path, table.missing, table.rows, table.image_column)
    labelled = _integer_labels({"test": pairs})["test"]
    return TestTable(path, table.image_column, table.label_column, table.split_column,
                     tuple((Path(f), label) for f, label in labelled), tuple(table.missing), table.unlabelled,
                     table.repeated)


def has_test_images(data: str | os.PathLike, label_column: str | None = None) -> bool:
    """Whether a trial's ``--data`` holds images no trial reads: a dataset folder's ``test/``, or a label CSV's rows
    that its split column marks test (a table without one is the training data, not a test set)."""
    if not is_label_table(data):
        return test_folder(Path(data).expanduser()) is not None
    try:
        return read_test_table(data, label_column).split_column is not None
    except DataError:
        return False
