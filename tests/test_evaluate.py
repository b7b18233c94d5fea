"""``python -m efficientnet evaluate``: a trained checkpoint scored on held-out images, real training and real files.

The checkpoint is a real 1-epoch trial on the digits demo (in this process); scores are checked against the trial's
own validation record and against scikit-learn.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

import main_efficientnet
from efficientnet.cli import main
from efficientnet import evaluate as evaluate_module
from efficientnet.evaluate import (calibration_error, confusion_figure, evaluate_checkpoint, mistakes_figure,
                                   ranking_metrics)
from trial_process import one_error_line

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--arch", "lite0", "--width", "0.25", "--resolution", "32", "--weights", "lite0", "--epochs", "1",
        "--threads", "1", "--no-latency"]


@pytest.fixture(scope="module")
def trained(digits: Path, tmp_path_factory) -> Path:
    """A trial's folder: 1 epoch on the digits demo (train/ and val/, classes 0-9)."""
    out = tmp_path_factory.mktemp("run")
    assert main_efficientnet.main(["--data", str(digits), "--output-dir", str(out), *TINY]) == 0
    return out


def evaluate(capsys, *args) -> tuple[int, str, str]:
    code = main(["evaluate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_the_validation_images_give_the_trials_own_scores(trained: Path, digits: Path, capsys, tmp_path: Path):
    """Evaluated on the images it validated on, the checkpoint scores what the trial recorded: the same model, the
    same evaluation transform, the same metrics."""
    ckpt = trained / "model_best.pth.tar"
    code, out, err = evaluate(capsys, ckpt, digits / "val", "--json", "--csv", tmp_path / "out" / "p.csv")
    assert code == 0, err
    got = json.loads(out)
    result = json.loads((trained / "result.json").read_text())  # the best epoch's validation scores
    assert got["images"] == sum(r["support"] for r in result["per_class"]) == 359
    assert got["layout"] == "class folders" and got["classes"] == [str(i) for i in range(10)]
    for key in ("top1", "top5", "precision", "recall", "f1", "loss"):
        assert got["metrics"][key] == pytest.approx(result[key], abs=1e-5), key
    assert [{k: v for k, v in row.items() if k not in ("auc", "ap")} for row in got["per_class"]] == \
        result["per_class"] and got["most_confused"] == result["most_confused"]
    assert got["validation"] == {"eval_metric": "top1", "best_score": pytest.approx(result["top1"]),
                                 "best_epoch": 1}
    # --csv: each image, its folder's class, the predicted class (the most probable), and every probability
    rows = read_csv(tmp_path / "out" / "p.csv")
    assert rows[0] == ["image", "true", "label", "probability", *got["classes"]] and len(rows) == 360
    for row in rows[1:]:
        probabilities = [float(v) for v in row[4:]]
        assert row[1] == Path(row[0]).parent.name and row[2] == str(probabilities.index(max(probabilities)))
    correct = sum(r[1] == r[2] for r in rows[1:])
    assert 100 * correct / 359 == pytest.approx(got["metrics"]["top1"])
    # how the probabilities rank the images, as scikit-learn scores them from the same probabilities
    truth = [int(r[1]) for r in rows[1:]]
    probabilities = np.array([[float(v) for v in r[4:]] for r in rows[1:]])
    probabilities /= probabilities.sum(axis=1, keepdims=True)  # the CSV's 6 digits
    assert got["metrics"]["auc"] == pytest.approx(
        roc_auc_score(truth, probabilities, multi_class="ovr", average="macro"), abs=1e-4)
    assert got["metrics"]["average_precision"] == pytest.approx(np.mean(
        [average_precision_score(np.array(truth) == c, probabilities[:, c]) for c in range(10)]), abs=1e-4)
    assert 0 < got["metrics"]["calibration_error"] < 1 and all("auc" in row for row in got["per_class"])
    # the text report: the scores, the trial's own beside them, each class, the mistakes; --plot draws them
    code, out, err = evaluate(capsys, ckpt, digits / "val", "--plot", tmp_path / "cm.png")
    assert code == 0, err
    with Image.open(tmp_path / "cm.png") as img:
        assert img.format == "PNG" and min(img.size) > 400 and len(img.convert("RGB").getcolors(1 << 20)) > 50
    assert "359 images, 10 classes" in out and f"test top-1 {got['metrics']['top1']:.2f} %" in out
    assert f"the checkpoint's best validation top-1: {result['top1']:.2f} % (epoch 1)" in out
    assert "most confused (true -> predicted: images):" in out and out.count("\n  ") >= 10


def test_a_test_folder_beside_train_and_val_is_found_and_absent_classes_do_not_count(
        trained: Path, digits: Path, capsys, tmp_path: Path, caplog):
    root = tmp_path / "data"
    for split in ("train", "val"):
        shutil.copytree(digits / split / "0", root / split / "0")
    for c in ("3", "5", "8"):  # three of the model's ten classes
        shutil.copytree(digits / "val" / c, root / "test" / c)
    with caplog.at_level(logging.WARNING, logger="efficientnet.trial"):
        code, out, err = evaluate(capsys, trained / "model_best.pth.tar", root, "--json", "--csv", tmp_path / "p.csv")
    assert code == 0, err
    got = json.loads(out)
    assert got["layout"] == "test/" and got["images"] == sum(1 for _ in (root / "test").rglob("*.png")) == 108
    assert "7 of the model's 10 classes have no test image (0, 1, 2, 4, 6, ...)" in err
    rows = read_csv(tmp_path / "p.csv")[1:]
    assert {Path(r[0]).parent.parent.name for r in rows} == {"test"}
    truth, predicted = [r[1] for r in rows], [r[2] for r in rows]
    precision, recall, f1, _ = precision_recall_fscore_support(truth, predicted, average="macro", zero_division=0)
    assert got["metrics"]["precision"] == pytest.approx(precision, abs=1e-6)
    assert got["metrics"]["recall"] == pytest.approx(recall, abs=1e-6)
    assert got["metrics"]["f1"] == pytest.approx(f1, abs=1e-6)
    assert {r["class"]: r["support"] for r in got["per_class"]}["0"] == 0
    # train/ and val/ without test/: the folder to pass instead
    shutil.rmtree(root / "test")
    code, out, err = evaluate(capsys, trained / "model_best.pth.tar", root)
    assert code == 2 and one_error_line(err) == (
        f"error: dataset {root} has train/, val/ but no test/ folder of held-out images; add one, or pass "
        f"{root / 'val'} to evaluate on those images")


def write_table(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def test_a_label_table_gives_its_test_rows_and_the_trials_label_column(digits: Path, capsys, tmp_path: Path):
    """A model trained on a CSV (``--label-column digit``) is scored on the table's test rows, the label column
    taken from its checkpoint; a table without a split column is a test set of its own."""
    (tmp_path / "img").mkdir()
    rows = []
    for c in ("1", "4", "7"):
        for i, src in enumerate(sorted((digits / "train" / c).iterdir())[:15]):
            shutil.copy(src, tmp_path / "img" / f"{c}_{i}.png")
            rows.append([f"img/{c}_{i}.png", f"{c}.0", f"scan{i % 4}", ["train", "train", "val", "test", "test"][i % 5]])
    table = write_table(tmp_path / "labels.csv", ["file", "digit", "source", "split"], rows)
    out = tmp_path / "run"
    assert main_efficientnet.main(["--data", str(table), "--label-column", "digit", "--output-dir", str(out),
                                   "--batch-size", "8", *TINY]) == 0
    capsys.readouterr()  # the trial's output
    ckpt = out / "model_best.pth.tar"
    code, text, err = evaluate(capsys, ckpt, table, "--json", "--csv", tmp_path / "p.csv")
    assert code == 0, err
    got = json.loads(text)
    assert got["layout"] == "csv: images file, labels digit, test rows of its split column"
    assert got["classes"] == ["1", "4", "7"] and got["images"] == 18  # 6 test rows of each label
    assert sorted(Path(r[0]).name for r in read_csv(tmp_path / "p.csv")[1:]) == sorted(
        Path(r[0]).name for r in rows if r[3] == "test")
    # a test.csv of its own (no split column): every row; labels "4.0" are the model's class "4"
    test = write_table(tmp_path / "test.csv", ["file", "digit"], [r[:2] for r in rows if r[3] == "test"])
    code, text, err = evaluate(capsys, ckpt, test, "--json")
    assert code == 0, err
    again = json.loads(text)
    assert again["layout"] == "csv: images file, labels digit, every row" and again["metrics"] == got["metrics"]
    # --split val: the trial's own validation rows, found from its checkpoint (the table, its label column), with
    # the scores the trial recorded; and the images it was surest of and wrong about
    code, text, err = evaluate(capsys, ckpt, "--split", "val", "--json")
    assert code == 0, err
    val = json.loads(text)
    result = json.loads((out / "result.json").read_text())
    assert val["layout"] == ("the trial's validation split: csv: images file, labels digit, validation split column")
    assert val["images"] == 9 and val["metrics"]["top1"] == pytest.approx(result["top1"])
    probabilities = {r["image"]: r for r in val["most_wrong"]}
    assert all(w["true"] != w["predicted"] and w["true_probability"] < w["probability"] for w in val["most_wrong"])
    assert len(probabilities) == round(9 * (1 - result["top1"] / 100))  # every wrong answer, at most 10
    # what cannot be scored: one line each, naming the fix
    cases = [
        (write_table(tmp_path / "odd.csv", ["file", "digit"], [[rows[0][0], "9"], [rows[1][0], "1"]]), (),
         "odd.csv has labels the model was not trained on (9; it knows 1, 4, 7); evaluate a model trained on them, "
         "or leave their rows out"),
        (write_table(tmp_path / "notest.csv", ["file", "digit", "split"], [r[:2] + ["train"] for r in rows]), (),
         "notest.csv has no test rows in its split column; mark the held-out rows test, or pass a CSV that lists "
         "only the test images"),
        (table, ("--label-column", "label"), "--label-column label: labels.csv has no such column (columns: file, "
         "digit, source, split)"),
    ]
    for data, extra, message in cases:
        code, text, err = evaluate(capsys, ckpt, data, *extra)
        assert code == 2 and one_error_line(err) == f"error: {message}"


@pytest.mark.parametrize("args, words", [
    (["missing.pth.tar", "{digits}/val"], "checkpoint 'missing.pth.tar' does not exist"),
    (["{ckpt}"], "pass DATA, the held-out images to score (or --split val for the trial's own validation images)"),
    (["lite0", "--split", "val"], "checkpoint 'lite0' does not record the trial's dataset; pass it as DATA"),
    (["{ckpt}", "{tmp}/nowhere"], "test data {tmp}/nowhere does not exist"),
    (["{ckpt}", "{digits}/val", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["{ckpt}", "{digits}/val", "--plot", "{ckpt}/cm.png"], "cannot write --plot {ckpt}/cm.png: {ckpt} is a file, not "
     "a folder; give another path"),
    (["{ckpt}", "{digits}/val", "--csv", "{tmp}"], "cannot write --csv {tmp}: it is a folder; give a file path"),
    (["{ckpt}", "{digits}/val", "--heatmaps", "{tmp}"], "cannot write --heatmaps {tmp}: it is a folder; give a file "
     "path"),
    (["lite0", "{digits}/val"], "{digits}/val has class folders the model was not trained on (0, 1, 2, 3, 4; it "
     "knows tench, goldfish, great white shark, tiger shark, hammerhead, electric ray, ...)"),
])
def test_bad_input_is_one_error_line(args, words, trained: Path, digits: Path, tmp_path: Path, capsys):
    fill = {"digits": digits, "ckpt": trained / "model_best.pth.tar", "tmp": tmp_path}
    code, _, err = evaluate(capsys, *(a.format(**fill) for a in args))
    assert code == 2 and words.format(**fill) in one_error_line(err)


def test_heatmaps_show_where_the_model_saw_the_predicted_and_the_true_class_of_its_worst_mistakes(
        trained: Path, digits: Path, capsys, tmp_path: Path):
    """--heatmaps: a row per image of most_wrong, the image and two Grad-CAM heatmaps (the predicted class's, the true
    class's) computed on the model that was scored; with no mistake, nothing to draw is a warning, not a file."""
    ckpt = trained / "model_best.pth.tar"
    scored = evaluate_checkpoint(str(ckpt), str(digits / "val"))
    wrong = scored.evaluation.most_wrong
    assert len(wrong) == 10  # a 1-epoch model at width 0.25 gets more than 10 of 359 wrong
    figure = mistakes_figure(scored)
    try:
        titles = [ax.get_title() for ax in figure.axes]
        assert len(figure.axes) == 30 and "(Grad-CAM, block 2, 8 x 8)" in figure._suptitle.get_text()
        for i, w in enumerate(wrong):
            assert titles[3 * i].endswith(Path(w["image"]).name)
            assert titles[3 * i + 1] == f"predicted {w['predicted']} ({w['probability']:.2f})"
            assert titles[3 * i + 2] == f"true {w['true']} ({w['true_probability']:.2f})"
            image, predicted, true = (ax.images for ax in figure.axes[3 * i:3 * i + 3])
            assert len(image) == 1 and len(predicted) == len(true) == 2  # the picture, and a heatmap over it
            assert not np.allclose(predicted[1].get_array(), true[1].get_array())  # two classes, two maps
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)
    code, _, err = evaluate(capsys, ckpt, digits / "val", "--heatmaps", tmp_path / "out" / "mistakes.png")
    assert code == 0, err
    with Image.open(tmp_path / "out" / "mistakes.png") as img:
        assert img.format == "PNG" and img.size[1] > 10 * 250 and len(img.convert("RGB").getcolors(1 << 20)) > 100
    # one image the model classifies right: no mistake to draw
    right = next((path, target) for (path, target), p in zip(scored.samples, scored.probabilities)
                 if int(p.argmax()) == target)
    single = tmp_path / "one" / str(right[1])
    single.mkdir(parents=True)
    shutil.copy(right[0], single)
    code, out, err = evaluate(capsys, ckpt, tmp_path / "one", "--heatmaps", tmp_path / "none.png")
    assert code == 0 and "test top-1 100.00 %" in out
    assert "warning: every image was classified right, so there is no mistake to draw" in err
    assert not (tmp_path / "none.png").exists()


def test_the_command_runs_as_a_process(trained: Path, digits: Path, tmp_path: Path):
    sub = tmp_path / "test"
    shutil.copytree(digits / "val" / "2", sub / "2")
    (sub / "2" / "broken.png").write_bytes(b"not an image")
    proc = subprocess.run([sys.executable, "-m", "efficientnet", "evaluate", str(trained / "model_best.pth.tar"),
                           str(sub)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "warning: skipping 1 unreadable image file(s) of 36" in proc.stderr
    assert f"on {sub} (class folders): 35 images, 10 classes" in proc.stdout


def test_pretrained_imagenet_weights_are_scored_by_their_class_names_and_plotted_by_their_largest_mistakes(
        digits: Path, tmp_path: Path, monkeypatch):
    """ImageNet's 1,000 classes (the bundled Lite0): folders named by ImageNet classes are scored against them, and
    the plot of a model that predicts more classes than a plot can show keeps to those of its largest mistakes."""
    monkeypatch.setattr(evaluate_module, "MAX_PLOT_CLASSES", 8)
    for name, digit in (("tench", "0"), ("goldfish", "1")):
        shutil.copytree(digits / "val" / digit, tmp_path / "data" / name)
    scored = evaluate_checkpoint("lite0", str(tmp_path / "data"))
    result, samples = scored.evaluation, scored.samples
    assert len(result.classes) == 1000 and result.images == len(samples) == 72
    assert {result.classes[target] for _, target in samples} == {"tench", "goldfish"}
    predicted = sum(1 for j in range(1000) if any(row[j] for row in result.confusion))
    assert predicted > 8  # digits look like anything but fish to an ImageNet model
    figure = confusion_figure(result)
    shown = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    mistaken = {m[k] for m in result.most_confused for k in ("true", "predicted")}
    assert set(shown) == mistaken and len(shown) < predicted
    assert figure.axes[0].get_title().startswith(f"72 test images: the {len(shown)} classes of the 10 largest")
    figure.clf()


def test_calibration_error_and_ranking_by_hand():
    """ECE: two images 90 % sure (one right), two 60 % sure (both right): |0.5 - 0.9| / 2 + |1 - 0.6| / 2 = 0.4.
    A class that every test image has, or none, has no ROC AUC."""
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
    assert calibration_error(p, [0, 1, 1, 0]) == pytest.approx(0.4)
    assert calibration_error(np.array([[1.0, 0.0], [0.0, 1.0]]), [0, 1]) == 0.0
    means, by_class = ranking_metrics(p, [0, 1, 1, 0])
    assert means["auc"] == pytest.approx(roc_auc_score([0, 1, 1, 0], p[:, 1])) and set(by_class) == {0, 1}
    assert ranking_metrics(p, [1, 1, 1, 1]) == ({}, {})


def test_split_val_splits_a_folder_of_classes_as_the_trial_did(digits: Path, tmp_path: Path, capsys):
    """A folder of class folders is split by the trial (``--val-split``, ``--seed``): ``--split val`` holds out the
    same images again and gives the trial's scores, and its mistakes by name."""
    for c in ("2", "5", "7"):
        shutil.copytree(digits / "train" / c, tmp_path / "flat" / c)
    out = tmp_path / "run"
    assert main_efficientnet.main(["--data", str(tmp_path / "flat"), "--val-split", "0.3", "--seed", "3",
                                   "--output-dir", str(out), *TINY]) == 0
    capsys.readouterr()
    code, text, err = evaluate(capsys, out / "model_best.pth.tar", "--split", "val", "--json")
    assert code == 0, err
    got = json.loads(text)
    result = json.loads((out / "result.json").read_text())
    assert got["split"] == "val" and got["layout"] == "the trial's validation split: split"
    assert got["images"] == sum(r["support"] for r in result["per_class"])
    for key in ("top1", "f1", "loss"):
        assert got["metrics"][key] == pytest.approx(result[key], abs=1e-5), key
    (tmp_path / "flat" / "9").mkdir()  # the folder changed since: a class the model does not know
    for image in sorted((digits / "train" / "9").iterdir())[:3]:
        shutil.copy(image, tmp_path / "flat" / "9")
    code, _, err = evaluate(capsys, out / "model_best.pth.tar", "--split", "val")
    assert code == 2 and one_error_line(err) == (
        f"error: {tmp_path / 'flat'} no longer has the classes the model was trained on (they differ in 9); pass the "
        "test images as DATA instead")
