"""A trial killed with SIGKILL after its first checkpoint resumes at the next epoch when the command is rerun.

Real processes, no NNI in the environment (a hand run needs none).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from efficientnet.checkpoint import CHECKPOINT_NAME, load_checkpoint
from trial_process import hand_run_env, kill_after_first_checkpoint, tiny_digits_command
from efficientnet.data import export_digits

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
           f"{killed['best_top1']:.2f}% at epoch {killed['best_epoch']})" in rerun.stdout
    trained_again = [line.split(" |")[0] for line in rerun.stdout.splitlines() if line.startswith("epoch ")]
    assert trained_again == [f"epoch {e}/3" for e in range(done + 1, 4)]
    result = json.loads((out / "result.json").read_text())
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]
    assert result["history"][:done] == killed["history"]  # the epochs before the kill are kept as they were
    assert result["epochs"] == 3 and result["top1"] >= killed["best_top1"]
    assert "[A" not in rerun.stderr and "it/s" not in rerun.stderr  # no progress bars off a terminal
