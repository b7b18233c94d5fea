"""main_efficientnet.py by hand: real training on the digits demo, resume semantics, and every bad input.

Runs go through ``main(argv)`` in this process (real torch, real files); ``--threads 1`` keeps them quick on a
small shared CPU. One test runs the script as a real process to check the exit status.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import main_efficientnet
from efficientnet.proposal import Proposal
from efficientnet.checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint
from efficientnet.spec import ArchSpec, preset
from trial_process import one_error_line
from efficientnet.trial_config import ConfigError, apply_hyperparameters, output_dir_for, parse_config, resolve_spec

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--width", "0.25", "--resolution", "32", "--threads", "1", "--no-latency"]


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main_efficientnet.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def digits_args(digits: Path, out: Path, *extra) -> list[str]:
    return ["--data", "digits", "--download-dir", digits.parent, "--output-dir", out, *TINY, *extra]


@pytest.fixture(scope="module")
def trained(digits: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    code = main_efficientnet.main([str(a) for a in digits_args(digits, out, "--epochs", "2")])
    assert code == 0
    return out


def test_hand_run_learns_digits_above_chance_and_writes_every_output(trained: Path, digits: Path):
    result = json.loads((trained / "result.json").read_text())
    assert result["default"] == result["top1"] > 20.0  # 10 classes: chance is 10 %
    assert result["epochs"] == 2 and result["best_epoch"] in (1, 2)
    assert (result["budget"], result["subset"]) == ("full", 1.0)  # no proposal: the full budget, echoed
    for key in ("top5", "f1", "precision", "recall", "loss", "params", "macs"):
        assert isinstance(result[key], (int, float)), key
    assert ArchSpec.from_dict(result["spec"]) == ArchSpec.parse(result["arch"])
    assert ArchSpec.parse(result["arch"]).width == 0.25 and result["classes"] == [str(d) for d in range(10)]
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    lines = (trained / "log.txt").read_text().splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 2
    assert any("val_top1" in line and "val_top5" in line and "val_f1" in line for line in lines)
    assert list((trained / "tensorboard").glob("events.out.tfevents.*"))
    ckpt = load_checkpoint(trained / CHECKPOINT_NAME)  # weights_only=True
    assert ckpt["epoch"] == 2 and ckpt["num_classes"] == 10 and ckpt["args"]["width"] == 0.25
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "best_score", "best_epoch", "eval_metric"} <= set(ckpt)
    assert load_checkpoint(trained / BEST_NAME)["epoch"] == result["best_epoch"]
    # the best epoch, class by class (scikit-learn's classification_report rows): macro means are the F1 and recall
    rows = result["per_class"]
    assert [r["class"] for r in rows] == result["classes"]
    assert sum(r["support"] for r in rows) == len(list((digits / "val").rglob("*.png")))
    for key in ("f1", "recall", "precision"):
        assert sum(r[key] for r in rows) / len(rows) == pytest.approx(result[key], abs=1e-3)
    assert ckpt["best_confusion"].shape == (10, 10)
    # its largest mistakes, from the same matrix: each class's mistakes are at most its images less its hits
    mistakes = result["most_confused"]
    assert 1 <= len(mistakes) <= 10 and all(m["true"] != m["predicted"] for m in mistakes)
    assert [m["count"] for m in mistakes] == sorted((m["count"] for m in mistakes), reverse=True)
    for m in mistakes:
        row = next(r for r in rows if r["class"] == m["true"])
        assert m["count"] <= round(row["support"] * (1 - row["recall"]))
    log = (trained / "log.txt").read_text().splitlines()
    assert "lowest recall at epoch" in log[-3] and "most confused at epoch" in log[-2]
    first = mistakes[0]
    assert f"{first['true']} taken for {first['predicted']} {first['count']}x" in log[-2]


def test_rerunning_a_finished_run_resumes_and_trains_no_further(trained: Path, digits: Path, capsys, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    code, stdout, _ = run(digits_args(digits, out, "--epochs", "2"), capsys)
    assert code == 0
    assert "resumed at epoch 3" in stdout and "\nepoch " not in stdout
    again, before = (json.loads((path / "result.json").read_text()) for path in (out, trained))
    assert again["top1"] == before["top1"] and again["per_class"] == before["per_class"]


def test_resume_of_the_same_spec_continues_training(trained: Path, digits: Path, capsys, tmp_path):
    code, stdout, _ = run(digits_args(digits, tmp_path, "--epochs", "3", "--subset", "0.2", "--resume",
                                      trained / CHECKPOINT_NAME), capsys)
    assert code == 0
    assert "resumed at epoch 3" in stdout and "epoch 3/3" in stdout and "epoch 1/3" not in stdout
    history = json.loads((tmp_path / "result.json").read_text())["history"]
    assert history[:2] == json.loads((trained / "result.json").read_text())["history"]
    assert not (trained / "result.json").read_text() == (tmp_path / "result.json").read_text()


@pytest.mark.parametrize("metric, name", [("f1", "macro F1"), ("auc", "macro ROC AUC")])
def test_the_eval_metric_picks_the_best_epoch_and_is_the_default(digits: Path, capsys, tmp_path, metric, name):
    """``--eval-metric f1`` or ``auc`` (for imbalanced classes): the best epoch, ``model_best.pth.tar`` and NNI's
    ``default`` follow macro F1 (or ROC AUC) in percent, and the log names it."""
    code, stdout, _ = run(digits_args(digits, tmp_path, "--epochs", "2", "--subset", "0.3", "--eval-metric", metric),
                          capsys)
    assert code == 0
    result = json.loads((tmp_path / "result.json").read_text())
    history = result["history"]
    key = f"val_{metric}"
    best = max(history, key=lambda h: (h[key], -h["epoch"]))
    assert result["eval_metric"] == metric and result["best_epoch"] == best["epoch"]
    assert result["default"] == pytest.approx(100 * best[key]) and result["top1"] == best["val_top1"]
    assert result[metric] == best[key] and 0 < best[key] <= 1
    assert load_checkpoint(tmp_path / BEST_NAME)["epoch"] == best["epoch"]
    assert f"| best {metric} {100 * best[key]:.2f}@{best['epoch']}" in stdout
    assert f"final: best {name} {100 * best[key]:.2f}% at epoch {best['epoch']}" in stdout
    assert ("val_auc" in history[0]) == (metric == "auc")  # probabilities are kept only when AUC ranks the epochs


def test_resuming_with_another_eval_metric_picks_the_best_epoch_by_it(trained: Path, digits: Path, capsys,
                                                                      tmp_path):
    """A checkpoint whose best epoch was picked by top-1, resumed with ``--eval-metric recall``: the best so far
    is recomputed from its history by recall, and a warning says when model_best.pth.tar holds another epoch."""
    from efficientnet.trainer import best_of

    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    history = json.loads((trained / "result.json").read_text())["history"]
    top1_epoch = load_checkpoint(trained / CHECKPOINT_NAME)["best_epoch"]
    recall_epoch, recall_score = best_of(history, "recall")
    code, stdout, _ = run(digits_args(digits, out, "--epochs", "2", "--eval-metric", "recall"), capsys)
    assert code == 0
    assert (f"(best macro recall so far {recall_score:.2f}% at epoch {recall_epoch})") in stdout
    assert ("picked its best epoch" in stdout) == (recall_epoch != top1_epoch)
    assert json.loads((out / "result.json").read_text())["default"] == pytest.approx(recall_score)


@pytest.fixture(scope="module")
def imbalanced(digits: Path, tmp_path_factory) -> Path:
    """Digits 0, 1 and 2 with 60, 8 and 8 training images (12, 2, 2 for validation)."""
    root = tmp_path_factory.mktemp("imbalanced")
    for split, counts in (("train", (60, 8, 8)), ("val", (12, 2, 2))):
        for label, n in enumerate(counts):
            (root / split / str(label)).mkdir(parents=True)
            for image in sorted((digits / split / str(label)).glob("*.png"))[:n]:
                shutil.copy(image, root / split / str(label) / image.name)
    return root


def test_balanced_class_weights_weigh_the_loss_and_imbalance_is_pointed_out(imbalanced: Path, capsys, tmp_path):
    """Without ``--class-weights`` an imbalanced training set gets a note naming both fixes; with ``balanced`` the
    training loss is weighted by inverse class frequency (the same seeded run trains to another loss)."""
    args = ["--data", imbalanced, *TINY, "--epochs", "1", "--batch-size", "16"]
    code, plain, _ = run([*args, "--output-dir", tmp_path / "plain"], capsys)
    assert code == 0
    assert ("note: the classes are imbalanced (60 training images of 0, 8 of 1): top-1 rewards predicting the "
            "common classes; consider --eval-metric f1 and --class-weights balanced") in plain
    code, weighted, _ = run([*args, "--output-dir", tmp_path / "weighted", "--class-weights", "balanced"], capsys)
    assert code == 0
    assert "class weights balanced: 3.17 for 1 (8 images) to 0.422 for 0 (60)" in weighted  # 76 / (3 * n_c)
    assert "the classes are imbalanced" not in weighted
    losses = [json.loads((tmp_path / name / "result.json").read_text())["history"][0]["train_loss"]
              for name in ("plain", "weighted")]
    assert losses[0] != losses[1]


def test_balanced_class_weights_on_balanced_classes_say_so():
    from efficientnet.data import DatasetSplit, balanced_class_weights
    from efficientnet.trainer import class_balance
    from efficientnet.trial_config import TrialConfig

    split = DatasetSplit(None, None, ["a", "b", "c"], Path("data"), "split", [0, 1, 2] * 5)
    weight = balanced_class_weights(split.train_targets, 3)
    assert class_balance(TrialConfig(), split, weight)[1] == ("class weights balanced: 1 for every class (each has "
                                                             "5 images)")
    split.train_targets = [0, 1, 1, 2, 2, 2]
    weight = balanced_class_weights(split.train_targets, 3)
    assert class_balance(TrialConfig(), split, weight)[1] == "class weights balanced: 2 for a (1 images) to 0.667 " \
        "for c (3)"


def test_balanced_class_weights_match_scikit_learn():
    from sklearn.utils.class_weight import compute_class_weight

    from efficientnet.data import balanced_class_weights

    targets = [0] * 50 + [1] * 7 + [2] * 3 + [3] * 40
    expected = compute_class_weight("balanced", classes=np.arange(4), y=np.array(targets))
    assert balanced_class_weights(targets, 4).numpy() == pytest.approx(expected, rel=1e-6)


def test_best_of_takes_the_first_best_epoch_by_the_chosen_metric():
    from efficientnet.trainer import best_of, eval_score

    history = [{"epoch": 1, "val_top1": 90.0, "val_f1": 0.60, "val_recall": 0.70},
               {"epoch": 2, "val_top1": 88.0, "val_f1": 0.75, "val_recall": 0.70},
               {"epoch": 3, "val_top1": 90.0, "val_f1": 0.74, "val_recall": 0.65}]
    assert best_of(history, "top1") == (1, 90.0)
    assert best_of(history, "f1") == (2, pytest.approx(75.0))
    assert best_of(history, "recall") == (1, pytest.approx(70.0))
    assert best_of([], "top1") == (0, -1.0) and eval_score(history[2], "f1") == pytest.approx(74.0)


def test_resume_of_another_spec_inherits_weights_with_a_warning(trained: Path, digits: Path, capsys, tmp_path):
    args = digits_args(digits, tmp_path, "--epochs", "1", "--subset", "0.1", "--resume", trained / BEST_NAME)
    args[args.index("--width") + 1] = "0.3"
    code, stdout, _ = run(args, capsys)
    assert code == 0
    assert "warning: --resume" in stdout and "is another architecture" in stdout and "epoch 1/1" in stdout
    assert ArchSpec.parse(json.loads((tmp_path / "result.json").read_text())["arch"]).width == 0.3


def test_resume_with_another_class_count_reinitialises_only_the_head(trained: Path, digits: Path, capsys,
                                                                     tmp_path):
    data = tmp_path / "three"
    for split in ("train", "val"):
        for c in ("0", "1", "2"):
            shutil.copytree(digits / split / c, data / split / c)
    args = ["--data", data, "--output-dir", tmp_path / "out", *TINY, "--epochs", "1", "--resume",
            trained / CHECKPOINT_NAME]
    code, stdout, _ = run(args, capsys)
    assert code == 0
    assert "has 10 classes, this dataset 3: only the classifier head is re-initialised" in stdout
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["classes"] == ["0", "1", "2"] and "top5" not in result  # top-5 needs at least 5 classes


def make_folder(root: Path, classes: dict[str, int]) -> Path:
    from PIL import Image

    for c, n in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (16, 16), (i * 20 % 255, 40, 90)).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no_data", "no dataset given"),
        ("missing", "does not exist"),
        ("empty", "has no class sub-folders"),
        ("empty_class", "has no images"),
        ("single_class", "has only one class"),
        ("class_count", "--num-classes is 3 but"),
        ("unreadable_resume", "cannot read checkpoint"),
        ("foreign_resume", "is not a checkpoint of this trainer nor a state dict"),
        ("bad_arch", "unknown preset"),
        ("bad_device", "--device 'foo' is not a device"),
        ("bad_momentum", "--momentum must be in [0, 1), got 5.0"),
    ],
)
def test_bad_input_prints_one_error_line_and_exits_2(case: str, expected: str, tmp_path: Path, capsys):
    data = tmp_path / "data"
    extra: list = []
    if case == "empty":
        data.mkdir()
    elif case == "empty_class":
        make_folder(data, {"a": 4})
        (data / "b").mkdir()
    elif case == "single_class":
        make_folder(data, {"a": 6})
    elif case in ("class_count", "unreadable_resume", "foreign_resume", "bad_arch", "bad_device", "bad_momentum"):
        make_folder(data, {"a": 6, "b": 6})
        if case == "class_count":
            extra = ["--num-classes", "3"]
        elif case == "unreadable_resume":
            (tmp_path / "bad.pth.tar").write_bytes(b"\x80\x02garbage")
            extra = ["--resume", tmp_path / "bad.pth.tar"]
        elif case == "foreign_resume":
            torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "foreign.pth")
            extra = ["--resume", tmp_path / "foreign.pth"]
        elif case == "bad_device":
            extra = ["--device", "foo"]
        elif case == "bad_momentum":
            extra = ["--momentum", "5"]
        else:
            extra = ["--arch", "resnet50"]
    args = ([] if case == "no_data" else ["--data", data]) + ["--output-dir", tmp_path / "out", *TINY, *extra]
    code, _, err = run(args, capsys)
    assert code == 2
    assert expected in one_error_line(err)
    assert not (tmp_path / "out" / CHECKPOINT_NAME).exists()


def test_errors_never_damage_an_earlier_checkpoint(trained: Path, digits: Path, capsys, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = {name: (out / name).read_bytes() for name in (CHECKPOINT_NAME, BEST_NAME)}
    code, _, err = run(digits_args(digits, out, "--epochs", "3", "--num-classes", "4"), capsys)
    assert code == 2 and "--num-classes is 4 but" in one_error_line(err)
    args = digits_args(digits, out, "--epochs", "3")
    args[args.index("--width") + 1] = "0.5"  # another architecture into the same directory
    code, _, err = run(args, capsys)
    assert code == 2 and "holds a checkpoint of another architecture" in one_error_line(err)
    # the same class count under other names is other data: it does not resume (nor report the old run as done)
    renamed = tmp_path / "renamed"
    shutil.copytree(digits, renamed)
    for split in ("train", "val"):
        (renamed / split / "9").rename(renamed / split / "nine")
    args = digits_args(digits, out, "--epochs", "3")
    args[args.index("--data") + 1] = renamed
    code, _, err = run(args, capsys)
    assert code == 2 and one_error_line(err) == (f"error: {out} holds a checkpoint trained on other classes (9 in the "
                                                 "checkpoint, nine in the data); use another --output-dir or pass "
                                                 "--no-auto-resume")
    assert {name: (out / name).read_bytes() for name in before} == before


def test_a_foreign_file_in_the_output_dir_is_reported_not_overwritten(digits: Path, capsys, tmp_path):
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    code, _, err = run(digits_args(digits, tmp_path, "--epochs", "1"), capsys)
    assert code == 2 and "cannot read checkpoint" in one_error_line(err)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == b"not a checkpoint"


def test_nan_loss_stops_with_an_error_and_writes_no_checkpoint(digits: Path, capsys, tmp_path):
    code, _, err = run(digits_args(digits, tmp_path, "--epochs", "1", "--subset", "0.2", "--lr", "1e30"), capsys)
    assert code == 2
    line = one_error_line(err)
    assert "loss became nan at epoch 1" in line and "lower --lr" in line
    assert not (tmp_path / CHECKPOINT_NAME).exists() and not (tmp_path / "result.json").exists()


def test_a_real_process_exits_with_status_2_and_one_line(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNI_")}
    proc = subprocess.run([sys.executable, str(ROOT / "main_efficientnet.py"), "--data", str(tmp_path / "nope"),
                           "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "does not exist" in one_error_line(proc.stderr)


def test_a_real_process_ends_at_once_with_everything_written_and_no_loader_left(digits: Path, tmp_path: Path):
    """The script ends by ``os._exit`` after training (no slow teardown): piped stdout and the log are flushed
    whole, and the loader processes ended with the training loop."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNI_")}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "main_efficientnet.py"),
                           *map(str, digits_args(digits, out, "--epochs", "1", "--data-cache", "off", "--workers", "2"))],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("started in ") and "imports" in line for line in lines)
    assert lines[-1].startswith("final: ") and (out / "log.txt").read_text().splitlines()[-1] == lines[-1]
    assert json.loads((out / "result.json").read_text())["epochs"] == 1
    left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if str(out) in p.read_bytes().decode(errors="replace")]
    assert not left, f"processes of the run still alive: {left}"


def test_environment_yaml_sets_defaults_that_flags_override(tmp_path: Path, capsys):
    from efficientnet.trial_config import parse_config

    env = tmp_path / "env.yml"
    env.write_text("download-dir: /data/cats\nworker_num: 3\nbatch_size: 8\nbase_resolution: 64\nnum_classes: 2\n"
                   "gpu: 0\nresume: ./model_best.pth.tar\n")
    cfg = parse_config(["custom", "--env", str(env), "--batch-size", "4"])
    assert (cfg.data, cfg.workers, cfg.batch_size, cfg.resolution, cfg.num_classes, cfg.gpu, cfg.resume) == (
        "/data/cats", 3, 4, 64, 2, 0, "./model_best.pth.tar")
    env.write_text("learning_speed: 3\n")
    code, _, err = run(["--data", "digits", "--env", env], capsys)
    assert code == 2 and "unknown setting 'learning_speed'" in one_error_line(err)


def test_under_nni_each_trial_writes_to_its_own_folder_even_with_output_dir():
    cfg = parse_config(["--data", "digits", "--output-dir", "/shared/out"])
    spec = preset("lite0")
    assert output_dir_for(cfg, spec, "/nni/trials/a") == Path("/nni/trials/a")
    assert output_dir_for(cfg, spec, "/nni/trials/b") == Path("/nni/trials/b")
    assert output_dir_for(cfg, spec, None) == Path("/shared/out")


def test_the_default_learning_rate_is_the_optimizers_own(tmp_path: Path):
    """SGD's 0.05 for AdamW or RMSprop wrecks the pretrained weights (16-22 % top-1 after 3 epochs of the digits
    demo, against 97-98 % at their own rates): without --lr each optimizer gets its own."""
    rates = [parse_config(["--data", "digits", "--opt", name]).peak_lr for name in ("sgd", "adamw", "rmsprop")]
    assert rates == [0.05, 0.003, 0.002]
    assert parse_config(["--data", "digits", "--opt", "adamw"]).to_dict()["lr"] == 0.003  # recorded as trained
    assert parse_config(["--data", "digits", "--opt", "adamw", "--lr", "0.01"]).peak_lr == 0.01  # given: kept
    env = tmp_path / "env.yml"
    env.write_text("lr: 0.02\n")
    assert parse_config(["--data", "digits", "--opt", "adamw", "--env", str(env)]).peak_lr == 0.02
    sgd = parse_config(["--data", "digits"])
    assert apply_hyperparameters(sgd, Proposal(hyper={"optimizer": "adamw"}))[0].peak_lr == 0.003  # searched
    assert apply_hyperparameters(sgd, Proposal(hyper={"optimizer": "adamw", "lr": 0.004}))[0].peak_lr == 0.004
    for given in ("0.02", "0.05"):  # SGD's own default, given: kept too
        cfg = parse_config(["--data", "digits", "--lr", given])
        assert apply_hyperparameters(cfg, Proposal(hyper={"optimizer": "adamw"}))[0].peak_lr == float(given)


def test_bad_proposals_are_config_errors_not_tracebacks():
    cfg = parse_config(["--data", "digits"])
    with pytest.raises(ConfigError, match="batch_size=16.7"):
        apply_hyperparameters(cfg, Proposal(hyper={"batch_size": 16.7}))
    assert apply_hyperparameters(cfg, Proposal(hyper={"batch_size": 32.0}))[0].batch_size == 32
    with pytest.raises(ConfigError, match="architecture keys are not usable"):
        resolve_spec(cfg, Proposal.from_parameters({"alpha": 1.2, "stage2_kernel": "x"}))
