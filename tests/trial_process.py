"""Helpers for tests of command-line programs: the one-line error contract, and the trial script run as a real
process (a tiny digits run, SIGKILLed once its first checkpoint is on disk)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from efficientnet.checkpoint import CHECKPOINT_NAME

ROOT = Path(__file__).resolve().parents[1]


def one_error_line(stderr: str) -> str:
    """The single ``error: ...`` line a user error must print on stderr (fails the test otherwise)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def tiny_digits_command(cache: Path, out: Path, epochs: int, subset: float, *extra: str) -> list[str]:
    """A hand run of the trial script: a width-0.15, 32 px model on a subset of the digits demo."""
    return [sys.executable, str(ROOT / "main_efficientnet.py"), "--data", "digits", "--download-dir", str(cache),
            "--width", "0.15", "--resolution", "32", "--epochs", str(epochs), "--subset", str(subset),
            "--threads", "1", "--no-latency", *extra, "--output-dir", str(out)]


def hand_run_env() -> dict[str, str]:
    """This environment without NNI's variables (a hand run), with the project importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNI_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def kill_after_first_checkpoint(cmd: list[str], out: Path, cwd: Path, timeout: float = 240,
                                sig: int = signal.SIGKILL) -> subprocess.Popen:
    """Start ``cmd``, wait (at most ``timeout`` s) for ``out/checkpoint.pth.tar``, send ``sig`` (SIGKILL by
    default) and wait for the process to end; return it (stdout and stderr apart, still to be read)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=hand_run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not (out / CHECKPOINT_NAME).exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"no checkpoint within {timeout:.0f} s"
            time.sleep(0.02)
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    return proc
