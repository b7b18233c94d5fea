"""``--continue-from``: a run stopped early on a longer learning-rate schedule (``--schedule-epochs``) continues to more
epochs as the same run trained from the start would, training only the epochs it lacks (successive halving's
promotions). Real trial processes on the digits, no NNI in the environment; the lookup of a trial folder beside this
one is what an NNI trial does."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from efficientnet.checkpoint import CHECKPOINT_NAME, CheckpointError, continuation_source
from efficientnet.data import export_digits
from trial_process import hand_run_env, one_error_line, tiny_digits_command


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=hand_run_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One epoch of a 3-epoch schedule, that run continued to 3 epochs, and 3 epochs from the start."""
    root = tmp_path_factory.mktemp("continue")
    cache = root / "cache"
    export_digits(cache)
    out = {name: root / name for name in ("short", "continued", "scratch")}
    for name, epochs, extra in (("short", 1, ["--schedule-epochs", "3"]),
                                ("continued", 3, ["--continue-from", str(root / "short" / CHECKPOINT_NAME)]),
                                ("scratch", 3, [])):
        done = run(tiny_digits_command(cache, out[name], epochs, 0.4, "--seed", "3", *extra), root)
        assert done.returncode == 0, done.stdout + done.stderr
        (out[name] / "stdout.txt").write_text(done.stdout)
    return out


def result(folder: Path) -> dict:
    return json.loads((folder / "result.json").read_text())


def test_a_continued_run_trains_only_the_missing_epochs_and_equals_a_run_from_the_start(runs):
    short, continued, scratch = (result(runs[k]) for k in ("short", "continued", "scratch"))
    assert (short["epochs"], short["epochs_trained"]) == (1, 1)
    assert (continued["epochs"], continued["epochs_trained"], scratch["epochs_trained"]) == (3, 2, 3)
    trained = [line.split(" |")[0] for line in (runs["continued"] / "stdout.txt").read_text().splitlines()
               if line.startswith("epoch ")]
    assert trained == ["epoch 2/3", "epoch 3/3"]  # epoch 1 is not trained again
    assert continued["history"][0] == short["history"][0]
    # the same schedule and restored RNG: the same run, epoch for epoch
    same = ("val_top1", "val_loss", "lr", "train_loss")
    assert [[h[k] for k in same] for h in continued["history"]] == [[h[k] for k in same] for h in scratch["history"]]
    assert continued["continued_from"].endswith(CHECKPOINT_NAME) and "continued_from" not in scratch
    assert 0 < continued["train_seconds"] < sum(h["time_s"] for h in continued["history"])


def test_continuing_a_run_of_another_schedule_or_a_missing_file_is_one_error_line(runs, tmp_path):
    cache = runs["short"].parent / "cache"
    ended = run(tiny_digits_command(cache, tmp_path / "a", 3, 0.4, "--seed", "3", "--continue-from",
                                    str(runs["scratch"] / CHECKPOINT_NAME), "--schedule-epochs", "6"), tmp_path)
    line = one_error_line(ended.stderr)
    assert ended.returncode == 2 and "was trained on a 3-epoch learning-rate schedule and this run's is 6" in line
    assert "--schedule-epochs 3" in line and not (tmp_path / "a" / CHECKPOINT_NAME).exists()
    missing = run(tiny_digits_command(cache, tmp_path / "b", 3, 0.4, "--continue-from", str(tmp_path / "nope.pth")),
                  tmp_path)
    assert missing.returncode == 2 and "--continue-from" in one_error_line(missing.stderr)
    assert "no checkpoint there" in missing.stderr


def test_under_nni_a_trial_id_names_the_folder_beside_this_trial(tmp_path):
    trials = tmp_path / "trials"
    (trials / "AbC12").mkdir(parents=True)
    (trials / "AbC12" / CHECKPOINT_NAME).write_bytes(b"x")
    me = trials / "XyZ99"
    assert continuation_source("AbC12", me) == trials / "AbC12" / CHECKPOINT_NAME
    assert continuation_source("Gone1", me) is None  # on another machine: the trial trains every epoch itself
    with pytest.raises(CheckpointError, match="no checkpoint there"):
        continuation_source("Gone1", None)  # by hand a name that is not there is a mistake
