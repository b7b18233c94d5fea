"""Start, watch and always stop real NNI experiments on a free loopback port (for the end-to-end tests, and for
``bench/experiment_throughput.py``).

Experiments start as the README starts them, ``python -m efficientnet create`` (``nnictl create`` after the project's
checks, with NNI's manager guarded); ``plain=True`` runs ``nnictl`` itself. Every guarded start checks that the guard
applied every fix to this NNI, so a future NNI that no longer has what it patches fails here, loudly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from efficientnet.nni_rest import NNIClient

ANSI = re.compile(r"\x1b\[[0-9;]*m")
NNICTL = [sys.executable, "-m", "nni.tools.nnictl.nnictl"]
LAUNCHER = [sys.executable, "-m", "efficientnet"]


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nnictl(*args: str, timeout: float = 120, env: dict[str, str] | None = None,
           launcher: bool = False) -> subprocess.CompletedProcess:
    """Run ``nnictl`` (or, with ``launcher``, ``python -m efficientnet``) with a bounded wait; output is returned
    without colour codes. pytest's name of the running test is left out of the environment, so that a test
    session's experiments share their trials' warm-start server (efficientnet/warm_start.py) as a user's
    experiments one after another do, instead of importing torch in a new one each."""
    env = {k: v for k, v in (os.environ if env is None else env).items() if k != "PYTEST_CURRENT_TEST"}
    proc = subprocess.run(
        [*(LAUNCHER if launcher else NNICTL), *args], capture_output=True, text=True, timeout=timeout, env=env,
        stdin=subprocess.DEVNULL
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
    created: subprocess.CompletedProcess | None = None  # what the create command printed

    def trials_dir(self) -> Path:
        """Where NNI keeps this experiment's trial folders (logs, and the trials' outputs)."""
        return self.workdir / self.id / "environments" / "local-env" / "trials"


def start(config: Path, port: int, timeout: float = 180, plain: bool = False,
          env: dict[str, str] | None = None) -> Experiment:
    """``python -m efficientnet create`` (``nnictl create`` with ``plain``), in ``env`` (default: this process's),
    and wait until the REST server answers; a guarded start must report every fix applied."""
    try:
        proc = nnictl("create", "--config", str(config), "--port", str(port), timeout=timeout, env=env,
                      launcher=not plain)
    except subprocess.TimeoutExpired:
        kill_manager(port=port)  # a create that hangs may have started the manager already
        raise
    match = re.search(r"Experiment ID: (\w+)", proc.stdout)
    if not match:
        kill_manager(port=port)
        raise RuntimeError(f"create failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    exp = Experiment(match.group(1), port, config.parent, config, NNIClient(port), proc)
    try:
        if not exp.client.wait(lambda c: c.status() is not None, timeout=60, interval=1):
            log = exp.workdir / exp.id / "log" / "nnimanager.log"
            tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else ["(no nnimanager.log)"]
            raise RuntimeError(f"experiment {exp.id} did not answer on port {port}; nnimanager.log ends:\n"
                               + "\n".join(tail))
        if not plain:
            assert_guarded(exp)
    except BaseException:
        stop(exp)  # a start that fails half-way leaves nothing running
        raise
    return exp


def assert_guarded(exp: Experiment) -> None:
    """The guard ran in this experiment's manager and applied every fix (see efficientnet/nni_guard.js)."""
    status = json.loads((exp.workdir / exp.id / "log" / "efficientnet_guard.json").read_text())
    assert status["problems"] == [] and all(status["patched"].values()), status


def resume(exp: Experiment, timeout: float = 180) -> Experiment:
    """``python -m efficientnet resume`` on the same port."""
    proc = nnictl("resume", exp.id, "--port", str(exp.port), timeout=timeout, launcher=True)
    if proc.returncode != 0:
        raise RuntimeError(f"resume failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    if not exp.client.wait(lambda c: c.status() is not None, timeout=60, interval=1):
        raise RuntimeError(f"resumed experiment {exp.id} did not answer on port {exp.port}")
    assert_guarded(exp)
    return exp


def stop(exp: Experiment) -> None:
    """``nnictl stop``; if that does not free the port in time, kill what still listens on it."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        nnictl("stop", exp.id, timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _port_busy(exp.port):
        time.sleep(0.5)
    if _port_busy(exp.port):
        kill_manager(experiment_id=exp.id)


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def processes(match: Callable[[list[str]], bool]) -> list[int]:
    """The processes whose command line (its arguments) ``match`` accepts."""
    found = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            if match((pid_dir / "cmdline").read_bytes().decode(errors="replace").split("\0")):
                found.append(int(pid_dir.name))
    return found


def kill_manager(experiment_id: str | None = None, port: int | None = None) -> None:
    """Last resort: SIGKILL the NNI manager (the node process) started with this experiment ID, or on this port."""
    wanted = {"--experiment-id": experiment_id, "--port": None if port is None else str(port)}

    def manager(args: list[str]) -> bool:
        return any(a.endswith("nni_node/main.js") for a in args) and any(
            value is not None and flag in args and args[args.index(flag) + 1] == value
            for flag, value in wanted.items())

    for pid in processes(manager):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def experiment(config: Path, port: int | None = None, plain: bool = False,
               env: dict[str, str] | None = None) -> Iterator[Experiment]:
    """Start an experiment (in ``env``) and stop it when the block ends, however it ends."""
    exp = start(config, port or free_port(), plain=plain, env=env)
    try:
        yield exp
    finally:
        stop(exp)


def dispatcher_log(exp: Experiment) -> str:
    """The tuner's log (NNI's dispatcher log) of an experiment."""
    path = exp.workdir / exp.id / "log" / "dispatcher.log"
    return path.read_text(errors="replace") if path.exists() else ""
