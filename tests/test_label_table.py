"""Datasets labelled by a CSV file (Kaggle's ``train.csv`` + ``train_images/``, one-hot tables, split columns):
real files, real PIL and the trial's own loading path."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from efficientnet.data import DataError, dataset_samples, export_digits, load_dataset
from efficientnet.label_table import read_label_table
from efficientnet.spec import preset

SPEC = preset("lite0").replace(width=0.15, resolution=32)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, list[Path]]:
    """Real digit images by class (``"0"`` .. ``"9"``), 12 each, from the exported demo set."""
    root = export_digits(tmp_path_factory.mktemp("cache"))
    return {c: sorted((root / "train" / c).iterdir())[:12] for c in map(str, range(10))}


def write_table(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def kaggle(tmp_path: Path, digits, classes=("2", "10", "7"), n: int = 10) -> tuple[Path, dict[str, str]]:
    """``train.csv`` (ids without extension, integer labels) beside ``train_images/``, as Kaggle's competitions
    ship them; the digit image of class ``c`` is digit ``int(c) % 10``. Returns the table and each id's label."""
    images = tmp_path / "train_images"
    images.mkdir()
    truth = {}
    for c in classes:
        for i, src in enumerate(digits[str(int(c) % 10)][:n]):
            image_id = f"{int(c):03d}{i:04d}"
            shutil.copy(src, images / f"{image_id}.png")
            truth[image_id] = c
    return write_table(tmp_path / "train.csv", ["image_id", "label"], [[k, v] for k, v in truth.items()]), truth


def labels_by_file(split, part) -> dict[str, str]:
    """``{file stem: class name}`` of a split's train or val dataset, as the trial's loaders will read it."""
    return {Path(p).stem: split.classes[label] for p, label in dataset_samples(getattr(split, part))}


def test_a_kaggle_table_of_ids_and_integer_labels_trains_on_the_named_images(tmp_path: Path, digits, caplog):
    table, truth = kaggle(tmp_path, digits)
    split = load_dataset(str(table), SPEC, val_split=0.2, seed=0, cache_dir=tmp_path / "cache")
    assert split.classes == ["2", "7", "10"]  # numerically, not "10" < "2"
    assert split.layout == "csv: images image_id, labels label" and split.root == table
    train, val = labels_by_file(split, "train"), labels_by_file(split, "val")
    assert set(train).isdisjoint(val) and {**train, **val} == truth  # every image, with its own label
    assert sorted(val.values()) == ["10", "10", "2", "2", "7", "7"]  # a stratified 20 %
    assert [split.classes[t] for t in split.train_targets] == list(train.values())
    x, y = split.train[0]
    assert tuple(x.shape) == (3, 32, 32) and 0 <= y < 3
    # the same table in the same seed gives the same split: every trial of an experiment sees it
    again = load_dataset(str(table), SPEC, val_split=0.2, seed=0, cache_dir=tmp_path / "cache")
    assert labels_by_file(again, "val") == val
    assert "warning" not in caplog.text


def test_split_and_is_valid_columns_give_the_validation_rows(tmp_path: Path, digits, caplog):
    for name in ("a", "b"):
        (tmp_path / "img" / name).mkdir(parents=True)
    rows, split_rows = [], []
    for k, c in enumerate(("cat", "dog")):
        for i, src in enumerate(digits[str(k)][:9]):
            rel = f"img/{'ab'[i % 2]}/{c}{i}.png"  # paths relative to the table, in two folders
            shutil.copy(src, tmp_path / rel)
            part = ["train", "val", "test"][i % 3]
            split_rows.append([rel, c, part])
            rows.append([rel, c, str(part == "val").lower()])
    table = write_table(tmp_path / "labels.csv", ["file", "label", "split"], split_rows)
    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        split = load_dataset(str(table), SPEC, cache_dir=tmp_path / "cache")
    assert split.layout == "csv: images file, labels label, validation split column"
    val = labels_by_file(split, "val")
    assert sorted(val) == ["cat1", "cat4", "cat7", "dog1", "dog4", "dog7"] and val["dog4"] == "dog"
    assert len(labels_by_file(split, "train")) == 6
    assert "labels.csv: 6 row(s) are in the test split (split column); they are left out" in caplog.text
    fastai = write_table(tmp_path / "fastai.csv", ["name", "label", "is_valid"],
                         [r for r in rows if not r[0].endswith(("2.png", "5.png", "8.png"))])
    split = load_dataset(str(fastai), SPEC, cache_dir=tmp_path / "cache")
    assert split.layout == "csv: images name, labels label, validation is_valid column"
    assert labels_by_file(split, "val") == val


def test_one_column_per_class_and_a_named_label_column(tmp_path: Path, digits):
    images = tmp_path / "images"
    images.mkdir()
    classes = ["healthy", "rust", "scab"]
    onehot, metadata = [], []
    for k, c in enumerate(classes):
        for i, src in enumerate(digits[str(k)][:5]):
            shutil.copy(src, images / f"{c}_{i}.png")
            onehot.append([f"{c}_{i}"] + ["1" if j == k else "0" for j in range(3)])
            metadata.append([f"lesion{i}", f"{c}_{i}", c, "histo", str(40 + i)])
    table = write_table(tmp_path / "plants.csv", ["image_id", *classes], onehot)
    split = load_dataset(str(table), SPEC, val_split=0.4, cache_dir=tmp_path / "cache")
    assert split.classes == classes
    assert all(stem.startswith(label) for stem, label in labels_by_file(split, "train").items())
    # HAM10000's metadata: several columns besides the image's; the label column must be named
    table = write_table(tmp_path / "metadata.csv", ["lesion_id", "image_id", "dx", "dx_type", "age"], metadata)
    with pytest.raises(DataError) as err:
        load_dataset(str(table), SPEC, cache_dir=tmp_path / "cache")
    assert str(err.value) == ("cannot tell which column of metadata.csv holds the labels (columns: lesion_id, "
                              "image_id, dx, dx_type, age); pass --label-column NAME")
    split = load_dataset(str(table), SPEC, val_split=0.4, cache_dir=tmp_path / "cache", label_column="dx")
    assert split.classes == classes and all(stem.startswith(label)
                                            for stem, label in labels_by_file(split, "val").items())


def test_rows_without_an_image_or_a_label_are_named_and_left_out(tmp_path: Path, digits, caplog):
    table, truth = kaggle(tmp_path, digits, classes=("0", "1"), n=12)
    # the first row's image is missing: the image column is still found, by the rows after it; the labels are
    # floats, as pandas writes an integer column with an empty cell
    rows = [["0000099", "0.0"]] + [[k, f"{v}.0"] for k, v in truth.items()] + [["0000000", "0.0"], ["0010001", ""]]
    write_table(table, ["image_id", "label"], rows)
    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        split = load_dataset(str(table), SPEC, cache_dir=tmp_path / "cache")
    assert len(split.train) + len(split.val) == 24 and split.classes == ["0", "1"]
    assert (f"train.csv: 1 row(s) name an image that was not found under {tmp_path} (e.g. '0000099'); they are "
            "left out") in caplog.text
    assert "train.csv: 1 row(s) have no label; they are left out" in caplog.text
    assert "train.csv: 1 row(s) repeat an image named before (with the same label)" in caplog.text
    # a damaged image named by the table is skipped like one in a class folder
    (tmp_path / "train_images" / "0000003.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        split = load_dataset(str(table), SPEC, cache_dir=tmp_path / "cache")
    assert split.corrupt == 1 and "0000003" not in labels_by_file(split, "train") | labels_by_file(split, "val")


@pytest.mark.parametrize("case, expected", [
    ("elsewhere", "no column of train.csv names image files under {tmp} (columns: image_id, label; first row: "
                  "0000000, 0); put the CSV in the folder that holds the images"),
    ("many_missing", "3 of the 24 images train.csv names were not found under {tmp} (e.g. 'x1', column image_id)"),
    ("two_labels", "train.csv gives 0000000 two labels (0, 1); one label per image (multi-label data is not "
                   "supported): keep one row per image"),
    ("one_label", "train.csv has only one label (0) in its label column; a classifier needs at least two classes"),
    ("num_classes", "--num-classes is 3 but train.csv has 2 labels (0, 1); fix --num-classes or the table"),
    ("same_name", "the image name '0000000.png' matches 3 files under {tmp} (a/0000000.png, b/0000000.png, "
                  "train_images/0000000.png); write each image's path relative to the CSV's folder"),
    ("split", "the split column of train.csv holds 'holdout'; use train, val or test"),
    ("no_rows", "label table {tmp}/train.csv has no rows under its header"),
    ("label_column", "--label-column dx: train.csv has no such column (columns: image_id, label)"),
    ("missing", "label table {tmp}/nothing.csv does not exist"),
    ("no_header", "train.csv has no header row: its first row names an image (0000000); add a first row naming the "
                  "columns, such as image,label"),
])
def test_bad_tables_are_one_line_errors(tmp_path: Path, digits, case: str, expected: str):
    table, truth = kaggle(tmp_path, digits, classes=("0", "1"), n=12)
    rows = [[k, v] for k, v in truth.items()]
    header = ["image_id", "label"]
    if case == "elsewhere":
        shutil.move(tmp_path / "train_images", tmp_path.parent / f"{tmp_path.name}-images")
    elif case == "many_missing":
        rows = rows[:21] + [["x1", "0"], ["x2", "1"], ["x3", "0"]]
    elif case == "two_labels":
        rows.append(["0000000", "1"])
    elif case == "one_label":
        rows = [r for r in rows if r[1] == "0"]
    elif case == "same_name":
        for sub in ("a", "b"):
            (tmp_path / sub).mkdir()
            shutil.copy(tmp_path / "train_images" / "0000000.png", tmp_path / sub / "0000000.png")
        rows[0][0] = "0000000.png"
    elif case == "split":
        header, rows = header + ["split"], [r + ["holdout" if i == 3 else "train"] for i, r in enumerate(rows)]
    elif case == "no_rows":
        rows = []
    elif case == "no_header":
        header, rows = rows[0], rows[1:]
    write_table(table, header, rows)
    with pytest.raises(DataError) as err:
        if case == "missing":
            read_label_table(tmp_path / "nothing.csv")
        read_label_table(table, num_classes=3 if case == "num_classes" else None,
                         label_column="dx" if case == "label_column" else None)
    assert "\n" not in str(err.value) and expected.format(tmp=tmp_path) in str(err.value), str(err.value)


def test_the_column_flags_need_a_label_table():
    from efficientnet.trial_config import ConfigError, parse_config

    assert parse_config(["--data", "labels.csv", "--label-column", "dx", "--group-column", "lesion_id"]).group_column \
        == "lesion_id"
    with pytest.raises(ConfigError) as err:
        parse_config(["--data", "my_data", "--group-column", "lesion_id"])
    assert str(err.value) == ("--group-column lesion_id names a column of a label CSV, but --data my_data is not one; "
                              "pass --data labels.csv, or drop --group-column")


def test_a_folder_of_unlabelled_images_beside_a_table_points_at_the_table(tmp_path: Path, digits):
    table, _ = kaggle(tmp_path, digits, classes=("0", "1"), n=3)
    for data in (tmp_path, tmp_path / "train_images"):
        with pytest.raises(DataError, match=f"pass --data {table} if it lists each image's label"):
            load_dataset(str(data), SPEC, cache_dir=tmp_path / "cache")


def test_a_trial_and_the_data_command_read_a_label_table(tmp_path: Path, digits):
    table, truth = kaggle(tmp_path, digits, classes=("3", "8"), n=12)
    env = {**os.environ, "EFFICIENTNET_NNI_CACHE": str(tmp_path / "cache")}
    shown = subprocess.run([sys.executable, "-m", "efficientnet", "data", str(table), "--json"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) | {"root": None} == {
        "root": None, "layout": "csv: images image_id, labels label", "classes": ["3", "8"], "train": [10, 10], "val": [2, 2],
        "skipped_unreadable": 0, "imbalance": 1.0, "test": None, "identical": {}}
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "main_efficientnet.py", "--data", str(table), "--arch", "lite0", "--width", "0.15",
         "--resolution", "32", "--weights", "none", "--epochs", "1", "--batch-size", "8", "--threads", "1",
         "--output-dir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (f"data {table} (csv: images image_id, labels label): 2 classes, 20 train / 4 val images"
            in done.stdout + done.stderr)
    result = json.loads((out / "result.json").read_text())
    assert [row["class"] for row in result["per_class"]] == ["3", "8"]
    assert sum(row["support"] for row in result["per_class"]) == 4
    with Image.open(next((tmp_path / "train_images").iterdir())) as img:
        assert img.size == (32, 32)  # the images the trial read are the exported digits


def test_a_validation_table_beside_the_training_table_gives_the_validation_rows(tmp_path: Path, digits, caplog):
    """Kaggle's train.csv + val.csv in one folder, and Roboflow's train/_classes.csv + valid/_classes.csv (one-hot
    columns, a space after each comma, the images beside each table)."""
    images = tmp_path / "kaggle" / "images"
    images.mkdir(parents=True)
    rows = {"train": [], "val": []}
    for k, c in enumerate(("ant", "bee")):
        for i, src in enumerate(digits[str(k)][:8]):
            shutil.copy(src, images / f"{c}{i}.png")
            rows["val" if i >= 6 else "train"].append([f"images/{c}{i}.png", c])
    table = write_table(tmp_path / "kaggle" / "train.csv", ["path", "class"], rows["train"])
    write_table(tmp_path / "kaggle" / "val.csv", ["path", "class"], rows["val"] + [rows["train"][0]])
    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        split = load_dataset(str(table), SPEC, cache_dir=tmp_path / "cache")
    assert split.layout == "csv: images path, labels class, validation val.csv"
    assert sorted(labels_by_file(split, "val")) == ["ant6", "ant7", "bee6", "bee7"]
    assert len(labels_by_file(split, "train")) == 12
    assert "train.csv: 1 row(s) repeat an image named before" in caplog.text  # the training image in val.csv

    roboflow = tmp_path / "roboflow"
    for part, picks in (("train", range(6)), ("valid", range(6, 8)), ("test", range(8, 10))):
        (roboflow / part).mkdir(parents=True)
        lines = ["filename, ant, bee"]
        for k, c in enumerate(("ant", "bee")):
            for i in picks:
                shutil.copy(digits[str(k)][i], roboflow / part / f"{c}{i}_jpg.rf.{k}{i}.png")
                lines.append(f"{c}{i}_jpg.rf.{k}{i}.png, {1 - k}, {k}")
        (roboflow / part / "_classes.csv").write_text("\n".join(lines) + "\n")
    split = load_dataset(str(roboflow / "train" / "_classes.csv"), SPEC, cache_dir=tmp_path / "cache")
    assert split.layout == "csv: images filename, labels one-hot, validation ../valid/_classes.csv"
    assert split.classes == ["ant", "bee"]
    val = labels_by_file(split, "val")
    assert len(val) == 4 and all(stem.startswith(label) for stem, label in val.items())
    assert len(labels_by_file(split, "train")) == 12

    # a label only the validation table has is named; so are several 1s in a row of one-hot columns
    write_table(tmp_path / "kaggle" / "val.csv", ["path", "class"], rows["val"] + [["images/ant0.png", "ant"],
                                                                                   ["images/bee0.png", "wasp"]])
    with pytest.raises(DataError, match=r"two labels \(bee, wasp\)"):
        read_label_table(table)
    write_table(tmp_path / "kaggle" / "val.csv", ["path", "class"], rows["val"][:2] + [["images/bee7.png", "wasp"]])
    with pytest.raises(DataError) as err:
        read_label_table(table)
    assert str(err.value) == ("train.csv has labels in val.csv that no training image has (wasp); give each class "
                              "training images too")
    (roboflow / "train" / "_classes.csv").write_text("filename, ant, bee\nant0_jpg.rf.00.png, 1, 1\n"
                                                     "ant1_jpg.rf.01.png, 1, 0\nbee0_jpg.rf.10.png, 0, 1\n")
    with pytest.raises(DataError) as err:
        read_label_table(roboflow / "train" / "_classes.csv")
    assert str(err.value) == ("the 0/1 columns of _classes.csv give ant0_jpg.rf.00.png 2 labels; multi-label data "
                              "is not supported: one 1 per row")


def test_a_table_names_images_in_formats_not_read_here(tmp_path: Path, digits, caplog):
    """DICOM scans (medical data) and GIFs a table names are left out with the warning a folder's get; the suffixes
    read (restated in the torch-free layout module, for the launcher) are torchvision's ImageFolder's."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from efficientnet.layout import READ_EXTENSIONS

    assert READ_EXTENSIONS == IMG_EXTENSIONS
    table, truth = kaggle(tmp_path, digits, classes=("0", "1"), n=10)
    (tmp_path / "train_images" / "scan1.dcm").write_bytes(b"\x00" * 128 + b"DICM")
    (tmp_path / "train_images" / "clip.gif").write_bytes(b"GIF89a")
    write_table(table, ["image_id", "label"], [[k, v] for k, v in truth.items()] + [["scan1", "1"], ["clip", "0"]])
    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        split = load_dataset(str(table), SPEC, cache_dir=tmp_path / "cache")
    assert len(split.train) + len(split.val) == 20
    assert (f"skipping 1 .dcm, 1 .gif files, e.g. {tmp_path / 'train_images' / 'scan1.dcm'}: formats not read here; "
            "convert them to JPEG or PNG") in caplog.text


def test_a_group_column_keeps_each_group_on_one_side_of_the_split(tmp_path: Path, digits, caplog):
    """HAM10000's metadata: several photos of one lesion. Split row by row, photos of one lesion land in both
    training and validation, and validation measures recall of a seen lesion; --group-column keeps lesions whole."""
    images = tmp_path / "HAM10000_images"
    images.mkdir()
    rows, lesion_of = [], {}
    for k, dx in enumerate(("bkl", "mel", "nv")):
        for lesion in range(10):
            for photo in range(1 + lesion % 3):  # 1 to 3 photos of each lesion
                image_id = f"ISIC_{k}{lesion:02d}{photo}"
                shutil.copy(digits[str(k)][(lesion + photo) % 12], images / f"{image_id}.png")
                lesion_of[image_id] = f"HAM_{k}{lesion:02d}"
                rows.append([lesion_of[image_id], image_id, dx, "histo"])
    table = write_table(tmp_path / "HAM10000_metadata.csv", ["lesion_id", "image_id", "dx", "dx_type"], rows)

    def sides(split) -> tuple[set[str], set[str]]:
        return tuple({lesion_of[stem] for stem in labels_by_file(split, part)} for part in ("train", "val"))

    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        plain = load_dataset(str(table), SPEC, seed=1, cache_dir=tmp_path / "cache", label_column="dx")
    assert sides(plain)[0] & sides(plain)[1]  # row by row, lesions leak into validation, and the log says what to do
    assert ("HAM10000_metadata.csv: its lesion_id column gives several images one value: if they show one subject "
            "(a patient, a lesion), pass --group-column lesion_id") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        split = load_dataset(str(table), SPEC, seed=1, cache_dir=tmp_path / "cache", label_column="dx",
                             group_column="lesion_id")
    train, val = sides(split)
    assert not train & val and len(train | val) == 30
    assert split.layout == "csv: images image_id, labels dx, groups lesion_id"
    assert "--group-column" not in caplog.text  # no hint once it is given
    assert {split.classes[label] for _, label in dataset_samples(split.val)} == {"bkl", "mel", "nv"}
    assert 0.1 <= len(split.val) / (len(split.train) + len(split.val)) <= 0.3  # a fifth, in whole lesions
    again = load_dataset(str(table), SPEC, seed=1, cache_dir=tmp_path / "cache", label_column="dx",
                         group_column="lesion_id")
    assert labels_by_file(again, "val") == labels_by_file(split, "val")  # seeded: every trial, the same split

    # a split the table gives is checked for lesions on both sides: here each lesion's second photo is validation,
    # so the 18 lesions of two or three photos leak
    write_table(table, ["lesion_id", "image_id", "dx", "split"],
                [r[:3] + ["val" if r[1].endswith("1") else "train"] for r in rows])
    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        load_dataset(str(table), SPEC, cache_dir=tmp_path / "cache", label_column="dx", group_column="lesion_id")
    assert ("HAM10000_metadata.csv: 18 group(s) of the lesion_id column have images in both training and validation "
            "(split column): validation scores will be optimistic") in caplog.text
    with pytest.raises(DataError, match="--group-column patient: HAM10000_metadata.csv has no such column"):
        read_label_table(table, label_column="dx", group_column="patient")
    few = [r for r in rows if r[0] in ("HAM_000", "HAM_001", "HAM_100", "HAM_101")]
    write_table(table, ["lesion_id", "image_id", "dx"], few)
    with pytest.raises(DataError) as err:
        load_dataset(str(table), SPEC, cache_dir=tmp_path / "cache", label_column="dx", group_column="lesion_id")
    assert str(err.value) == ("only 4 groups: too few to hold out whole groups for a 20 % validation split; add "
                              "groups, raise --val-split (0.5 needs two groups), or give the validation rows (a "
                              "split column)")


def test_labels_that_are_also_file_names_do_not_stop_the_image_column_being_found(tmp_path: Path, digits):
    """Grades 1 and 2 before the image's path, in folders of images numbered 1.png, 2.png, ...: the grades name
    files of two folders, which is not an error while the images' column is looked for."""
    rows = []
    for folder, k in (("a", 0), ("b", 1)):
        (tmp_path / "images" / folder).mkdir(parents=True)
        for i in range(1, 7):
            shutil.copy(digits[str(k)][i], tmp_path / "images" / folder / f"{i}.png")
            rows.append([str(1 + k), f"images/{folder}/{i}.png"])
    table = read_label_table(write_table(tmp_path / "grades.csv", ["grade", "picture"], rows))
    assert (table.image_column, table.label_column, table.classes) == ("picture", "grade", ("1", "2"))
    assert sorted(p.name for p, label in table.train if label == 1) == [f"{i}.png" for i in range(1, 7)]
    # the same table written on Windows: its paths' backslashes are folders, not a name two files share
    windows = read_label_table(write_table(tmp_path / "windows.csv", ["grade", "picture"],
                                           [[g, p.replace("/", "\\")] for g, p in rows]))
    assert windows.train == table.train


def test_only_a_column_named_for_a_subject_is_suggested_as_groups(tmp_path: Path, digits):
    table, truth = kaggle(tmp_path, digits, classes=("0", "1"), n=6)
    rows = [[k, v, f"p{i // 2}", "leaf", "ward 3", f"StudyUID{i // 3}"] for i, (k, v) in enumerate(truth.items())]
    write_table(table, ["image_id", "label", "PatientID", "plant_type", "anatom_site", "StudyInstanceUID"], rows)
    assert read_label_table(table).group_hints == ("PatientID", "StudyInstanceUID")
    assert read_label_table(table, group_column="PatientID").group_hints == ()


def test_the_data_command_names_test_rows_that_copy_training_images(tmp_path: Path, digits, capsys):
    """A table's test rows whose images are byte copies of training images (the same photo saved twice) would
    make ``evaluate`` optimistic: the ``data`` command names them."""
    (tmp_path / "img").mkdir()
    rows = []
    for c in ("3", "8"):
        for i, src in enumerate(digits[c][:10]):
            shutil.copy(src, tmp_path / "img" / f"{c}_{i}.png")
            rows.append([f"img/{c}_{i}.png", c, "train" if i < 8 else "val"])
    shutil.copy(digits["3"][0], tmp_path / "img" / "again.png")  # the first training image, once more
    rows.append(["img/again.png", "3", "test"])
    table = write_table(tmp_path / "labels.csv", ["image", "label", "split"], rows)
    from efficientnet.cli import main

    assert main(["data", str(table)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == (f"leak: 1 test image(s) are byte-for-byte copies of train images (e.g. "
                                    f"{tmp_path / 'img' / 'again.png'} = {tmp_path / 'img' / '3_0.png'}): the test "
                                    "scores will be optimistic; remove the copies from one side")


def test_has_test_images_only_for_a_test_folder_or_rows_marked_test(tmp_path: Path, digits):
    """What the report offers to evaluate: a folder's test/ or a table's test rows; a table without a split column
    is the training data, not a test set."""
    from efficientnet.label_table import has_test_images

    table, _ = kaggle(tmp_path, digits, classes=("3", "8"), n=4)
    assert not has_test_images(table)
    rows = [[f"train_images/{p.name}", "3", "test" if i == 0 else "train"]
            for i, p in enumerate(sorted((tmp_path / "train_images").iterdir()))]
    assert has_test_images(write_table(tmp_path / "split.csv", ["image", "label", "split"], rows))
    assert not has_test_images(tmp_path) and not has_test_images(tmp_path / "missing.csv")
    (tmp_path / "test" / "3").mkdir(parents=True)
    assert has_test_images(tmp_path)
