"""Run the trial script as a real process and SIGKILL it once its first checkpoint is on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from efficientnet.checkpoint import CHECKPOINT_NAME

ROOT = Path(__file__).resolve().parents[1]


def hand_run_env() -> dict[str, str]:
    """This environment without NNI's variables (a hand run), with the project importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNI_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def kill_after_first_checkpoint(cmd: list[str], out: Path, cwd: Path, timeout: float = 240) -> subprocess.Popen:
    """Start ``cmd``, wait (at most ``timeout`` s) for ``out/checkpoint.pth.tar``, SIGKILL the process, return it."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=hand_run_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not (out / CHECKPOINT_NAME).exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, f"no checkpoint within {timeout:.0f} s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    return proc
