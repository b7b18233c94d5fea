"""A trial killed with SIGKILL, or stopped with SIGINT/SIGTERM (as NNI stops trials), after its first checkpoint
resumes at the next epoch when the command is rerun; a trial started by a Python without the project says so.

Real processes, no NNI in the environment (a hand run needs none).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from efficientnet.checkpoint import CHECKPOINT_NAME, load_checkpoint
from efficientnet.data import export_digits
from trial_process import ROOT, hand_run_env, kill_after_first_checkpoint, one_error_line, tiny_digits_command

def test_sigkill_after_first_checkpoint_then_rerun_resumes_at_the_next_epoch(tmp_path: Path):
    cache = tmp_path / "cache"
    export_digits(cache)
    out = tmp_path / "run"
    cmd = tiny_digits_command(cache, out, epochs=3, subset=0.4)
    proc = kill_after_first_checkpoint(cmd, out, cwd=tmp_path)
    assert proc.returncode == -signal.SIGKILL
    killed = load_checkpoint(out / CHECKPOINT_NAME)  # intact: written atomically
    done = killed["epoch"]
    assert 1 <= done < 3
    log_before = (out / "log.txt").read_text()
    assert f"epoch {done + 1}/3 " not in log_before and not (out / "result.json").exists()

    rerun = subprocess.run(cmd, cwd=tmp_path, env=hand_run_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resumed at epoch {done + 1} from {out / CHECKPOINT_NAME} (best top-1 so far " \
           f"{killed['best_score']:.2f}% at epoch {killed['best_epoch']})" in rerun.stdout
    trained_again = [line.split(" |")[0] for line in rerun.stdout.splitlines() if line.startswith("epoch ")]
    assert trained_again == [f"epoch {e}/3" for e in range(done + 1, 4)]
    result = json.loads((out / "result.json").read_text())
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]
    assert result["history"][:done] == killed["history"]  # the epochs before the kill are kept as they were
    assert result["epochs"] == 3 and result["top1"] >= killed["best_score"]
    assert "[A" not in rerun.stderr and "it/s" not in rerun.stderr  # no progress bars off a terminal


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_ends_the_trial_by_that_signal_keeping_the_last_epoch(tmp_path: Path, sig: int):
    cache = tmp_path / "cache"
    export_digits(cache)
    out = tmp_path / "run"
    cmd = tiny_digits_command(cache, out, epochs=4, subset=0.4)
    proc = kill_after_first_checkpoint(cmd, out, cwd=tmp_path, sig=sig)
    stdout, stderr = (stream.read().decode() for stream in (proc.stdout, proc.stderr))
    assert proc.returncode == -sig, stdout + stderr  # died of the signal: NNI records EARLY_STOPPED/USER_CANCELED
    kept = load_checkpoint(out / CHECKPOINT_NAME)
    done = kept["epoch"]
    assert stderr.strip().splitlines() == [
        f"stopped by {signal.Signals(sig).name} in epoch {done + 1}: the checkpoint of epoch {done} is kept in "
        f"{out / CHECKPOINT_NAME}; rerun the same command to resume"]
    epoch_lines = [line for line in (out / "log.txt").read_text().splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == done == len(kept["history"])  # every saved epoch logged, no half epoch saved
    assert not list(out.glob(".*.tmp")) and not (out / "result.json").exists()

    rerun = subprocess.run(cmd, cwd=tmp_path, env=hand_run_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resumed at epoch {done + 1}" in rerun.stdout
    assert [h["epoch"] for h in json.loads((out / "result.json").read_text())["history"]] == [1, 2, 3, 4]


def test_a_python_without_the_project_fails_in_one_line_naming_it(tmp_path: Path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    python = bare / "bin" / "python"
    proc = subprocess.run([str(python), str(ROOT / "main_efficientnet.py"), "--data", "digits"], cwd=tmp_path,
                          env=hand_run_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert f"this Python ({python}) cannot import torch, torchvision, efficientnet_pytorch" in line
    assert "trialCommand: /path/to/venv/bin/python main_efficientnet.py" in line
