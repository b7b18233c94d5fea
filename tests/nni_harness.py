"""Start, watch and always stop real ``nnictl`` experiments on a free loopback port (for the end-to-end tests)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from efficientnet.nni_rest import NNIClient

ANSI = re.compile(r"\x1b\[[0-9;]*m")
NNICTL = [sys.executable, "-m", "nni.tools.nnictl.nnictl"]


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nnictl(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``nnictl`` with a bounded wait; output is returned without colour codes."""
    proc = subprocess.run(
        [*NNICTL, *args], capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )
    proc.stdout, proc.stderr = ANSI.sub("", proc.stdout), ANSI.sub("", proc.stderr)
    return proc


def write_config(
    root: Path, workdir: Path, overrides: dict[str, Any], trial_args: str = "", template: str = "config.yml"
) -> Path:
    """A project config (``template``) with absolute paths, a private working directory and ``overrides``."""
    source = root / template
    config = yaml.safe_load(source.read_text())
    config["searchSpaceFile"] = str((source.parent / config["searchSpaceFile"]).resolve())
    config["trialCodeDirectory"] = str(root)
    config["experimentWorkingDirectory"] = str(workdir)
    if "codeDirectory" in config.get("tuner", {}):
        config["tuner"]["codeDirectory"] = str(root)
    if trial_args:
        config["trialCommand"] = f"{config['trialCommand']} {trial_args}"
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            merged = dict(config[key])
            for k, v in value.items():
                if isinstance(v, dict) and isinstance(merged.get(k), dict):
                    merged[k] = {**merged[k], **v}
                else:
                    merged[k] = v
            config[key] = merged
        else:
            config[key] = value
    path = workdir / "config.yml"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class Experiment:
    """A started experiment."""

    id: str
    port: int
    workdir: Path
    config: Path
    client: NNIClient

    def trials_dir(self) -> Path:
        """Where NNI keeps this experiment's trial folders (logs, and the trials' outputs)."""
        return self.workdir / self.id / "environments" / "local-env" / "trials"


def start(config: Path, port: int, timeout: float = 120) -> Experiment:
    """``nnictl create`` and wait until the REST server answers."""
    proc = nnictl("create", "--config", str(config), "--port", str(port), timeout=timeout)
    match = re.search(r"Experiment ID: (\w+)", proc.stdout)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"nnictl create failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    exp = Experiment(match.group(1), port, config.parent, config, NNIClient(port))
    if not exp.client.wait(lambda c: c.status() is not None, timeout=60, interval=1):
        raise RuntimeError(f"experiment {exp.id} did not answer on port {port}")
    return exp


def resume(exp: Experiment, timeout: float = 120) -> Experiment:
    """``nnictl resume`` on the same port."""
    proc = nnictl("resume", exp.id, "--port", str(exp.port), timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"nnictl resume failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    if not exp.client.wait(lambda c: c.status() is not None, timeout=60, interval=1):
        raise RuntimeError(f"resumed experiment {exp.id} did not answer on port {exp.port}")
    return exp


def stop(exp: Experiment) -> None:
    """``nnictl stop``; if that does not free the port in time, kill what still listens on it."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        nnictl("stop", exp.id, timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _port_busy(exp.port):
        time.sleep(0.5)
    if _port_busy(exp.port):
        _kill_listeners(exp.port)


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _kill_listeners(port: int) -> None:
    """Last resort: SIGKILL the processes whose command line names this experiment's port."""
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "nni" in cmdline and f"{port}" in cmdline and int(pid_dir.name) != os.getpid():
                os.kill(int(pid_dir.name), signal.SIGKILL)


@contextlib.contextmanager
def experiment(config: Path, port: int | None = None) -> Iterator[Experiment]:
    """Start an experiment and stop it when the block ends, however it ends."""
    exp = start(config, port or free_port())
    try:
        yield exp
    finally:
        stop(exp)


def dispatcher_log(exp: Experiment) -> str:
    """The tuner's log (NNI's dispatcher log) of an experiment."""
    path = exp.workdir / exp.id / "log" / "dispatcher.log"
    return path.read_text(errors="replace") if path.exists() else ""
