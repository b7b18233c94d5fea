"""Datasets: the digits export, stratified splits, folder validation and loaders (real files, real PIL, no mocks)."""

from __future__ import annotations

import collections
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from efficientnet.data import (DataError, export_digits, load_dataset, make_loaders,
                               stratified_sample, stratified_split, subset_train)
from efficientnet.image_check import _relative
from efficientnet.scan import identical_files, scan_class_folders
from efficientnet.spec import preset

SPEC = preset("lite0").replace(width=0.15, resolution=32)


def write_images(folder: Path, n: int, size: int = 12, seed: int = 0) -> None:
    """``n`` random RGB PNGs in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory) -> Path:
    return export_digits(tmp_path_factory.mktemp("cache"))


def test_stratified_split_is_seeded_disjoint_and_keeps_class_proportions():
    labels = [0] * 50 + [1] * 30 + [2] * 20 + [3]
    train, val = stratified_split(labels, 0.2, seed=7)
    assert stratified_split(labels, 0.2, seed=7) == (train, val)
    assert stratified_split(labels, 0.2, seed=8) != (train, val)
    assert set(train).isdisjoint(val) and sorted(train + val) == list(range(len(labels)))
    counts = collections.Counter(labels[i] for i in val)
    assert counts == {0: 10, 1: 6, 2: 4}  # the one-image class stays in training
    assert 100 in train


def test_stratified_sample_keeps_every_class():
    labels = [0] * 100 + [1] * 3
    picked = stratified_sample(labels, 0.1, seed=0)
    counts = collections.Counter(labels[i] for i in picked)
    assert counts == {0: 10, 1: 1}


def test_digits_export_is_a_complete_image_folder_written_once(digits_root: Path):
    assert (digits_root / ".complete").is_file()
    for split in ("train", "val"):
        assert sorted(p.name for p in (digits_root / split).iterdir()) == [str(d) for d in range(10)]
    n_train = sum(1 for _ in (digits_root / "train").rglob("*.png"))
    n_val = sum(1 for _ in (digits_root / "val").rglob("*.png"))
    assert n_train + n_val == 1797 and 350 <= n_val <= 370
    with Image.open(next((digits_root / "val" / "3").iterdir())) as img:
        assert img.size == (32, 32) and img.mode == "L"
        assert np.asarray(img).max() > 128  # a real digit, not a blank image
    mtime = (digits_root / ".complete").stat().st_mtime_ns
    assert export_digits(digits_root.parent) == digits_root
    assert (digits_root / ".complete").stat().st_mtime_ns == mtime
    assert not [p for p in digits_root.parent.iterdir() if p.name.startswith(".digits-export-")]


def test_load_digits_gives_normalised_tensors_at_the_spec_resolution(digits_root: Path):
    split = load_dataset("digits", SPEC, cache_dir=digits_root.parent, num_classes=10)
    assert split.layout == "train/val" and split.num_classes == 10 and split.classes[0] == "0"
    x, y = split.val[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    assert x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6 and x.min() < -0.9  # lite0 normalisation: mean/std 0.5
    train, val, gen = make_loaders(split, batch_size=64)
    gen.manual_seed(1)
    first = next(iter(train))[1]
    gen.manual_seed(1)
    assert torch.equal(next(iter(train))[1], first)  # the shuffle order follows the generator seed
    assert next(iter(val))[0].shape == (128, 3, 32, 32)


def test_flat_folder_is_split_stratified_and_subset(tmp_path: Path):
    for c, n in (("cat", 20), ("dog", 10), ("eel", 5)):
        write_images(tmp_path / c, n)
    split = load_dataset(str(tmp_path), SPEC, val_split=0.2, seed=3)
    assert split.layout == "split" and split.classes == ["cat", "dog", "eel"]
    assert len(split.train) + len(split.val) == 35 and len(split.val) == 7
    again = load_dataset(str(tmp_path), SPEC, val_split=0.2, seed=3)
    assert again.val.indices == split.val.indices
    small = subset_train(split, 0.5, seed=0)
    assert collections.Counter(small.train_targets) == {0: 8, 1: 4, 2: 2}
    x, _ = small.train[0]
    assert x.shape == (3, 32, 32)  # small images are resized to the spec's resolution


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "does not exist"),
        ("no_classes", "has no class sub-folders"),
        ("empty_class", "has no images"),
        ("single_class", "has only one class"),
        ("class_mismatch", "different class folders"),
    ],
)
def test_bad_datasets_raise_one_line_errors(tmp_path: Path, layout: str, message: str):
    root = tmp_path / "data"
    if layout == "no_classes":
        root.mkdir()
        (root / "readme.txt").write_text("no images here")
    elif layout == "empty_class":
        write_images(root / "a", 3)
        (root / "b").mkdir()
        (root / "b" / "notes.txt").write_text("x")
    elif layout == "single_class":
        write_images(root / "only", 5)
    elif layout == "class_mismatch":
        write_images(root / "train" / "a", 3)
        write_images(root / "train" / "b", 3)
        write_images(root / "val" / "a", 2)
        write_images(root / "val" / "c", 2)
    with pytest.raises(DataError) as info:
        load_dataset(str(root), SPEC)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_class_count_mismatch_names_both_counts(tmp_path: Path):
    write_images(tmp_path / "a", 3)
    write_images(tmp_path / "b", 3)
    with pytest.raises(DataError, match=r"--num-classes is 5 but .* has 2 class folders \(a, b\)"):
        load_dataset(str(tmp_path), SPEC, num_classes=5)


def test_a_few_corrupt_images_are_skipped_with_a_counted_warning(tmp_path: Path, caplog):
    write_images(tmp_path / "a", 20)
    write_images(tmp_path / "b", 20)
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (tmp_path / "b" / "empty.jpg").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        split = load_dataset(str(tmp_path), SPEC)
    assert split.corrupt == 2 and len(split.train) + len(split.val) == 40
    assert "skipping 2 unreadable image file(s) of 42" in caplog.text


def test_hidden_files_and_folders_are_not_images_or_classes(tmp_path: Path, caplog):
    """A dataset copied from a Mac holds a ``._name.jpg`` beside every image (not an image: half the files were
    "unreadable" and the dataset an error), and Jupyter leaves ``.ipynb_checkpoints`` folders (copies of images):
    hidden files and folders are left out, at every depth."""
    for split in ("train", "val"):
        for c in ("a", "b"):
            write_images(tmp_path / split / c, 6 if split == "train" else 2)
            for image in list((tmp_path / split / c).iterdir()):
                (image.parent / f"._{image.name}").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
            write_images(tmp_path / split / c / ".ipynb_checkpoints", 3)
        write_images(tmp_path / split / ".ipynb_checkpoints", 2)
        (tmp_path / split / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        split = load_dataset(str(tmp_path), SPEC)
    assert split.classes == ["a", "b"] and split.corrupt == 0 and "unreadable" not in caplog.text
    assert (len(split.train), len(split.val)) == (12, 4)
    paths = [path for path, _ in split.train.samples + split.val.samples]
    assert not any(part.startswith(".") for path in paths for part in Path(path).relative_to(tmp_path).parts)


def test_a_class_too_small_to_validate_is_named_in_a_warning(tmp_path: Path, caplog):
    write_images(tmp_path / "many", 10)
    write_images(tmp_path / "single", 1)
    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        split = load_dataset(str(tmp_path), SPEC)
    assert split.classes.index("single") in split.train_targets
    assert split.classes.index("single") not in [split.val.dataset.targets[i] for i in split.val.indices]
    assert "1 class(es) with a single image have none held out for validation (single)" in caplog.text
    caplog.clear()
    write_images(tmp_path / "single", 2)  # now two: one is held out, no warning
    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        load_dataset(str(tmp_path), SPEC)
    assert "held out" not in caplog.text


def test_mostly_corrupt_dataset_is_an_error(tmp_path: Path):
    write_images(tmp_path / "a", 3)
    write_images(tmp_path / "b", 3)
    for i in range(3):
        (tmp_path / "b" / f"bad{i}.png").write_bytes(os.urandom(64))
    with pytest.raises(DataError, match="3 of 9 image files cannot be read"):
        load_dataset(str(tmp_path), SPEC)


def test_a_class_of_only_corrupt_images_is_an_error(tmp_path: Path):
    write_images(tmp_path / "a", 30)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bad.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="has no readable images"):
        load_dataset(str(tmp_path), SPEC)


def test_an_image_over_pils_pixel_limit_is_named_as_too_large_not_damaged(tmp_path: Path, caplog, monkeypatch):
    """PIL refuses to open an image over twice ``Image.MAX_IMAGE_PIXELS`` (a decompression-bomb guard; 179
    Mpx by default, a large satellite or slide scan). Such an image was counted as damaged ("re-copy" the dataset);
    it is named as too large, with the fix, and a class of only such images says so."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # the real guard, at a limit a test image can pass
    write_images(tmp_path / "a", 6, size=12)
    write_images(tmp_path / "b", 6, size=12)
    write_images(tmp_path / "b" / "scans", 1, size=24)  # 576 pixels, over 2 x 200
    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        split = load_dataset(str(tmp_path), SPEC)
    assert split.corrupt == 0 and len(split.train) + len(split.val) == 12
    assert (f"skipping 1 image(s) too large to decode safely, e.g. {tmp_path / 'b' / 'scans' / 'img0.png'} "
            "(576 pixels, over PIL's decompression-bomb limit of 400); downscale them") in caplog.text
    assert "unreadable" not in caplog.text
    for image in (tmp_path / "b").glob("img*.png"):
        image.unlink()
    with pytest.raises(DataError, match=r"class folder .*/b has no readable images \(1 image\(s\) over PIL's pixel "):
        load_dataset(str(tmp_path), SPEC)


@pytest.mark.parametrize("val_name", ["valid", "validation"])
def test_a_validation_folder_by_another_common_name_is_used(tmp_path: Path, val_name: str, caplog):
    """Roboflow and many Kaggle datasets name the validation folder ``valid/``: it is the validation set, not
    ignored while a fifth of ``train/`` is held out instead."""
    for c in ("a", "b"):
        write_images(tmp_path / "train" / c, 6)
        write_images(tmp_path / val_name / c, 2)
        write_images(tmp_path / "test" / c, 3)
    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        split = load_dataset(str(tmp_path), SPEC)
    assert split.layout == f"train/{val_name}" and (len(split.train), len(split.val)) == (12, 4)
    assert {Path(path).parent.parent.name for path, _ in split.val.samples} == {val_name}
    assert "warning" not in caplog.text


def test_an_unused_folder_beside_a_lone_train_folder_is_named(tmp_path: Path, caplog):
    """``train/`` and ``test/`` (a common download): ``train/`` is split, and the warning says ``test/`` is unused
    and how to validate on it."""
    for c in ("a", "b"):
        write_images(tmp_path / "train" / c, 10)
        write_images(tmp_path / "test" / c, 3)
    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        split = load_dataset(str(tmp_path), SPEC)
    assert split.layout == "split" and (len(split.train), len(split.val)) == (16, 4)
    assert "(unused: test/); rename a folder val/ to validate on it" in caplog.text


def test_a_dataset_one_level_too_high_names_the_folder_to_pass(tmp_path: Path):
    write_images(tmp_path / "images" / "a", 3)
    write_images(tmp_path / "images" / "b", 3)
    with pytest.raises(DataError, match=rf"only one class \(images\).*: pass --data {tmp_path / 'images'} if its "):
        load_dataset(str(tmp_path), SPEC)


def test_the_scan_is_remembered_while_the_files_do_not_change(tmp_path: Path):
    """Every trial scans its dataset; PIL's check of each file is remembered by name, size and modification time,
    so the trials after the first only list the files. Any change checks the folder again."""
    root, records = tmp_path / "data", tmp_path / "records"
    write_images(root / "a", 6)
    write_images(root / "b", 6)
    assert scan_class_folders(root, record_dir=records).corrupt == []
    victim = root / "a" / "img0.png"
    st = victim.stat()
    victim.write_bytes(b"x" * st.st_size)  # damaged, with the same size and modification time: the record holds
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert scan_class_folders(root, record_dir=records).corrupt == []
    assert scan_class_folders(root).corrupt == [victim]  # without the record, every file is opened
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: checked again, and remembered
    assert scan_class_folders(root, record_dir=records).corrupt == [victim]
    assert scan_class_folders(root, record_dir=records).corrupt == [victim]
    (root / "b" / "img5.png").unlink()  # a file fewer: checked again
    scan = scan_class_folders(root, record_dir=records)
    assert scan.corrupt == [victim] and scan.num_images == 10 and len(list(records.iterdir())) == 1


@pytest.mark.parametrize("root, files", [
    ("/data/set", ["/data/set/c0/1.png", "/data/set/a.png", "/data/x.png", "/other/y.png"]),
    ("set", ["set/c0/1.png", "set/./c1/b.png", "set//c2/c.png", "x.png"]),
    ("set/", ["set/c0/1.png"]),
    (".", ["a.png", "./b/c.png"]),
    ("/x/train.csv", ["/x/img/a.png", "/x/a.png"]),  # a label table's record: paths relative to the CSV file
])
def test_the_scan_records_paths_relative_to_the_root_as_relpath_does(root: str, files: list[str]):
    """The record's names (its digest) are computed once per folder; they must stay what :func:`os.path.relpath`
    gives, or every record written before would be checked again."""
    assert _relative(Path(root), [Path(f) for f in files]) == [os.path.relpath(f, root) for f in files]


def test_split_folders_are_not_taken_for_classes(tmp_path: Path):
    """``training/`` + ``validation/`` (a common naming) is a split dataset; Kaggle's ``training_set/`` +
    ``test_set/`` was taken as two classes, "training_set" and "test_set", and trained to tell them apart. A folder
    named like a split that holds class folders is named in an error; a class that happens to be called "test" and
    holds images is still a class."""
    for split, n in (("training", 6), ("validation", 2)):
        for c in ("cat", "dog"):
            write_images(tmp_path / "tv" / split / c, n)
    split = load_dataset(str(tmp_path / "tv"), SPEC)
    assert split.layout == "training/validation" and (len(split.train), len(split.val)) == (12, 4)
    for name in ("training_set", "test_set"):
        for c in ("cat", "dog"):
            write_images(tmp_path / "kaggle" / name / c, 3)
    with pytest.raises(DataError, match=r"include training_set/, test_set/, which hold class folders of their own: "
                                        r"splits of the dataset, not classes; .* \(or pass --data .*training_set\)"):
        load_dataset(str(tmp_path / "kaggle"), SPEC)
    write_images(tmp_path / "classes" / "test", 5)  # a class called "test", holding its images
    write_images(tmp_path / "classes" / "prod", 5)
    assert load_dataset(str(tmp_path / "classes"), SPEC).classes == ["prod", "test"]


def test_images_in_formats_not_read_here_are_named(tmp_path: Path, caplog):
    """Images in formats PIL does not read here (AVIF, GIF, raw camera files) were left out without a word, and a
    class of only such files "has no images". Both now name the files and the fix."""
    write_images(tmp_path / "a", 6)
    write_images(tmp_path / "b", 6)
    for i in range(3):
        (tmp_path / "a" / f"IMG_{i}.AVIF").write_bytes(b"\x00\x00\x00\x1cftypavif")
    (tmp_path / "b" / "clip.gif").write_bytes(b"GIF89a")
    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        split = load_dataset(str(tmp_path), SPEC)
    assert len(split.train) + len(split.val) == 12 and split.corrupt == 0
    assert (f"skipping 3 .avif, 1 .gif files, e.g. {tmp_path / 'a' / 'IMG_0.AVIF'}: formats not read here; convert "
            "them to JPEG or PNG") in caplog.text
    for image in (tmp_path / "a").glob("*.png"):
        image.unlink()
    with pytest.raises(DataError, match=r"a has no images .* \(it holds 3 .avif files, which are not read here: "
                                        r"convert them to JPEG or PNG\)"):
        load_dataset(str(tmp_path), SPEC)


def test_iphone_heic_photos_are_read_with_pillow_heif(tmp_path: Path):
    """HEIC photos (iPhones) are images when pillow-heif is installed (the test extra installs it): the scan takes
    them, and training and predict read them as PIL reads a JPEG."""
    from efficientnet.preprocess import heif_readable, load_image

    assert heif_readable()
    write_images(tmp_path / "b", 6)
    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    pixels = []
    for i in range(6):
        pixels.append(np.repeat(np.repeat(rng.integers(0, 255, (4, 6, 3), dtype=np.uint8), 8, 0), 8, 1))
        Image.fromarray(pixels[-1]).save(tmp_path / "a" / f"IMG_{i}.HEIC")  # 48 x 32, in 8-pixel blocks
    split = load_dataset(str(tmp_path), SPEC)
    assert split.corrupt == 0 and len(split.train) + len(split.val) == 12
    image = load_image(tmp_path / "a" / "IMG_0.HEIC")
    assert image.mode == "RGB" and image.size == (48, 32)
    assert np.abs(np.asarray(image).astype(int) - pixels[0]).mean() < 8  # lossy, but the same picture


def test_a_symbolic_link_loop_does_not_hand_a_class_other_images(tmp_path: Path):
    """Links are followed, so a class folder can link to where its images are; a link back up to the dataset gave
    its class every class's images, 40 times over (until the path was too long), and so wrong labels."""
    write_images(tmp_path / "data" / "a", 4)
    write_images(tmp_path / "data" / "b", 4, seed=1)
    write_images(tmp_path / "elsewhere" / "more_a", 2, seed=2)
    (tmp_path / "data" / "a" / "up").symlink_to("..")  # a loop to the dataset's root
    (tmp_path / "data" / "a" / "self").symlink_to(".")  # and to itself
    (tmp_path / "data" / "a" / "more").symlink_to(tmp_path / "elsewhere" / "more_a")  # images kept elsewhere
    split = load_dataset(str(tmp_path / "data"), SPEC)
    samples = sorted(Path(path).relative_to(tmp_path / "data").as_posix()
                     for path, _ in split.train.dataset.samples)
    assert samples == [*(f"a/img{i}.png" for i in range(4)), "a/more/img0.png", "a/more/img1.png",
                       *(f"b/img{i}.png" for i in range(4))]


def test_identical_files_counts_every_copy_on_a_later_side(tmp_path: Path):
    """Each file of a later side whose bytes an earlier side has is named once, against the first side that has
    them; files of equal size but other bytes are not copies."""
    def file(name: str, data: bytes) -> str:
        (tmp_path / name).write_bytes(data)
        return str(tmp_path / name)

    train = [(file("a", b"AAAA"), "x"), (file("b", b"BBBB"), "y"), (file("c", b"CCCCCC"), "x")]
    val = [(file("v1", b"AAAA"), "x"), (file("v2", b"AAAA"), "y"), (file("v3", b"DDDD"), "x")]
    test = [(file("t1", b"AAAA"), "x"), (file("t2", b"DDDD"), "x"), (file("t3", b"CCCCCD"), "x")]
    found = identical_files({"train": train, "val": val, "test": test})
    assert found == {("val", "train"): [(val[0][0], train[0][0], False), (val[1][0], train[0][0], True)],
                     ("test", "train"): [(test[0][0], train[0][0], False)],
                     ("test", "val"): [(test[1][0], val[2][0], False)]}
    assert identical_files({"train": train, "val": [val[2]]}) == {}
