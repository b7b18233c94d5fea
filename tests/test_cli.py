"""``python -m efficientnet``: real subprocesses, exit codes and messages."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest

from efficientnet import ArchSpec
from efficientnet.cli import main
from trial_process import one_error_line


def run(root, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "efficientnet", *args], cwd=root, capture_output=True, text=True, timeout=120
    )


def test_help_names_every_command_in_plain_text(root):
    proc = run(root, "--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("profile", "latency-table", "data", "predict", "evaluate", "export", "create", "resume", "view", "report"):
        assert command in proc.stdout
    assert "``" not in proc.stdout and "COMMAND --help" in proc.stdout  # no docstring markup; where to look next


def test_the_command_line_loads_no_heavy_module_before_a_command_needs_it(root):
    """Building the parser (every command's options) imports neither torch nor NNI nor the search package: they
    took 2 s of every ``python -m efficientnet`` start, ``--help`` included, on a 2-core CPU."""
    code = ("import sys; from efficientnet.cli import make_parser; make_parser(); "
            "print(sorted(m for m in ('torch', 'nni', 'numpy', 'efficientnet.search') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_profile_json_for_compound_coefficients(root):
    out = run(root, "profile", "--arch", "lite0", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    spec = ArchSpec.parse(data["arch"])
    assert spec.compound.alpha == 1.2 and spec.resolution == 256 and spec.activation == "relu6"
    assert ArchSpec.from_dict(data["spec"]) == spec
    assert 5e6 < data["params"] < 7e6 and data["macs"] > 0.385e9


def test_profile_text_with_explicit_multipliers(root):
    out = run(root, "profile", "--arch", "b0", "--width", "0.5", "--depth", "0.5", "--resolution", "128")
    assert out.returncode == 0, out.stderr
    assert "w=0.5,d=0.5,r=128" in out.stdout and "MACs" in out.stdout


def test_predict_names_the_imagenet_classes(root, sample_photos):
    out = run(root, "predict", "--weights", "lite0", "--topk", "3", "--json", str(sample_photos["flower"]))
    assert out.returncode == 0, out.stderr
    [result] = json.loads(out.stdout)
    preds = result["predictions"]
    assert len(preds) == 3 and preds[0]["probability"] >= preds[1]["probability"] >= preds[2]["probability"]
    assert "daisy" in [p["name"] for p in preds]


def test_predict_a_folder_with_a_trained_checkpoint_names_its_classes(root, tmp_path, sample_photos):
    """A user's fine-tuned model names its own classes (the checkpoint's), not class ids; a folder stands for its
    image files, hidden ones left out, in name order."""
    from PIL import Image

    data = tmp_path / "data"
    for name, path in sorted(sample_photos.items()):
        (data / name).mkdir(parents=True)
        with Image.open(path) as img:
            for i in range(4):
                img.rotate(90 * i, expand=True).save(data / name / f"{i}.jpg")
        (data / name / "._0.jpg").write_bytes(b"\x00\x05\x16\x07Mac OS X")  # macOS's copy: not an image
    run_dir = tmp_path / "run"
    train = subprocess.run([sys.executable, "main_efficientnet.py", "--data", str(data), "--arch", "lite0", "--width",
                            "0.25", "--resolution", "32", "--weights", "none", "--epochs", "1", "--threads", "1",
                            "--output-dir", str(run_dir)], cwd=root, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr
    out = run(root, "predict", "--weights", str(run_dir / "model_best.pth.tar"), "--topk", "2", "--json",
              str(data / "flower"))
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert [r["image"] for r in results] == [str(data / "flower" / f"{i}.jpg") for i in range(4)]
    assert all({p["name"] for p in r["predictions"]} == set(sample_photos) for r in results)
    # --csv: a row per image with its label and every class's probability, as the JSON has them
    table = tmp_path / "out" / "predictions.csv"
    out = run(root, "predict", "--weights", str(run_dir / "model_best.pth.tar"), "--csv", str(table), str(data))
    assert out.returncode == 0, out.stderr
    with open(table, newline="") as f:
        rows = list(csv.reader(f))
    classes = sorted(sample_photos)
    assert rows[0] == ["image", "label", "probability", *classes] and len(rows) == 1 + 4 * len(classes)
    by_image = {r[0]: r for r in rows[1:]}
    for r in results:
        row, best = by_image[r["image"]], r["predictions"][0]
        probabilities = [float(v) for v in row[3:]]
        assert row[1] == best["name"] == classes[probabilities.index(max(probabilities))]
        assert abs(float(row[2]) - best["probability"]) < 1e-5 and abs(sum(probabilities) - 1) < 1e-4
    (tmp_path / "a_file").write_text("")
    out = run(root, "predict", "--csv", str(tmp_path / "a_file" / "p.csv"), str(data / "flower"))
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1] == (
        f"error: cannot write --csv {tmp_path / 'a_file' / 'p.csv'}: {tmp_path / 'a_file'} is a file, not a folder; "
        "give another path")
    out = run(root, "predict", "--csv", str(tmp_path / "out"), str(data / "flower"))  # a folder, not a file
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1] == (
        f"error: cannot write --csv {tmp_path / 'out'}: it is a folder; give a file path")
    assert table.is_file()  # nothing written before is lost
    (tmp_path / "empty").mkdir()
    out = run(root, "predict", str(tmp_path / "empty"))
    assert out.returncode == 2 and "holds no image files" in out.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["profile", "--arch", "b9"], "unknown preset 'b9'"),
        (["profile", "--arch", "b0", "--alpha", "1.2", "--width", "2"], "either --alpha/--beta/--gamma or --width"),
        (["profile", "--arch", "b0", "--alpha", "-1"], "alpha must be a positive number"),
        (["predict", "missing.jpg"], "image 'missing.jpg' does not exist"),
        (["predict", "--weights", "missing.pth", "x.jpg"], "weights file 'missing.pth' does not exist"),
        (["predict", "--topk", "0", "x.jpg"], "--topk must be at least 1"),
    ],
)
def test_bad_input_gives_one_error_line_and_status_2(args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert words in one_error_line(capsys.readouterr().err)


def test_an_unreadable_image_is_an_error_and_one_in_a_folder_is_skipped(root, tmp_path, sample_photos):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a JPEG")
    out = run(root, "predict", str(bad))
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error: cannot read image {str(bad)!r} (UnidentifiedImageError): is it a JPEG/PNG file?"]
    # in a folder of images (a test set), one damaged file is named and the others are predicted
    shutil.copy(sample_photos["flower"], tmp_path / "flower.jpg")
    out = run(root, "predict", "--topk", "1", "--json", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert [r["image"] for r in json.loads(out.stdout)] == [str(tmp_path / "flower.jpg")]
    assert out.stderr.strip().splitlines() == [
        f"warning: skipped 1 image(s) of the folder(s) that cannot be read, e.g. cannot read image {str(bad)!r} "
        "(UnidentifiedImageError): is it a JPEG/PNG file?"]
    (tmp_path / "flower.jpg").unlink()
    out = run(root, "predict", str(tmp_path))
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1] == (
        f"error: none of the 1 images could be read, e.g. cannot read image {str(bad)!r} (UnidentifiedImageError): "
        "is it a JPEG/PNG file?")


def test_predict_names_an_image_over_pils_pixel_limit(tmp_path, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL's real guard, at a limit a test image passes
    Image.new("RGB", (16, 16), "red").save(tmp_path / "scan.png")  # 256 pixels, over 2 x 100
    assert main(["predict", "--weights", "lite0", str(tmp_path / "scan.png")]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"error: image {str(tmp_path / 'scan.png')!r} is too large to decode safely (256 pixels, over PIL's "
        "decompression-bomb limit of 200); downscale it")


def test_data_reads_a_dataset_as_a_trial_will(tmp_path, capsys):
    """``python -m efficientnet data DIR``: the layout, the images per class of each split, what is left out and the
    tuner's num_classes, before an experiment; a bad folder is one error line."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, counts in (("train", (12, 2)), ("valid", (3, 1))):
        for name, n in zip(("common", "rare"), counts):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                image = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
                image.save(tmp_path / split / name / f"{i}.png")
    (tmp_path / "train" / "rare" / "IMG_1.AVIF").write_bytes(b"\x00\x00\x00\x1cftypavif")
    assert main(["data", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f"data {tmp_path} (train/valid): 2 classes, 14 train / 4 val images"
    assert [line.split() for line in lines[1:4]] == [["class", "train", "val"], ["common", "12", "3"], ["rare", "2", "1"]]
    assert "imbalanced: the largest class has 6.0x the training images" in out
    assert "in the tuner's classArgs: num_classes: 2" in out and "skipping 1 .avif files" in err
    assert "images no trial reads" not in out
    shutil.copytree(tmp_path / "valid", tmp_path / "test")  # held out for evaluate: named, never read by trials
    (tmp_path / "test" / "rare" / "0.png").unlink()
    assert main(["data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"data {tmp_path} (train/valid): 2 classes, 14 train / 4 val images"
    assert (f"test/: 3 images no trial reads; after the search, python -m efficientnet evaluate CHECKPOINT {tmp_path} "
            "scores a model on them") in out
    # images on two sides (a copy in val, one in test under another label): a leak the scores would hide
    copy, original = tmp_path / "test" / "common" / "0.png", tmp_path / "valid" / "common" / "0.png"
    assert out.splitlines()[-1] == (f"leak: 3 test image(s) are byte-for-byte copies of val images (e.g. {copy} = "
                                    f"{original}): the test scores will be optimistic; remove the copies from one side")
    shutil.copy(tmp_path / "train" / "common" / "5.png", tmp_path / "valid" / "rare" / "copy.png")
    assert main(["data", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["identical"] == {"val-train": 1, "test-val": 3}
    assert main(["data", str(tmp_path)]) == 0
    copy, original = tmp_path / "valid" / "rare" / "copy.png", tmp_path / "train" / "common" / "5.png"
    assert (f"leak: 1 val image(s) are byte-for-byte copies of train images (e.g. {copy} = {original}), 1 of them "
            "with another label: the val scores will be optimistic") in capsys.readouterr().out
    assert main(["data", str(tmp_path / "train" / "rare")]) == 2
    assert one_error_line(capsys.readouterr().err).startswith("error: dataset directory ")
