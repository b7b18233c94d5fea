"""Warm starts (efficientnet/warm_start.py): real trial processes, a real server, real fork, sockets and signals.

Each test gets its own socket folder (``XDG_RUNTIME_DIR``) and stops the servers it started. ``NNI_PLATFORM`` is
set without ``NNI_TRIAL_JOB_ID``: warm starts apply as under NNI, and the trial itself runs as a hand run. The NNI
experiments of the e2e tests start their trials warm the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from efficientnet import warm_start
from trial_process import one_error_line

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "main_efficientnet.py"
TINY = ["--data", "digits", "--arch", "lite0", "--width", "0.25", "--resolution", "32", "--threads", "1",
        "--no-latency"]
WARM = "warm: forked from a process that had imported torch"

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="warm starts need fork")


@contextlib.contextmanager
def trial_environment(digits_cache: Path) -> Iterator[dict[str, str]]:
    """The environment of a trial with warm starts on, a private socket folder (short: a socket's path is limited
    to about 100 bytes); stops its servers after."""
    run = Path(tempfile.mkdtemp(prefix="ws-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNI_") and k != warm_start.ENV_SWITCH}
    env.update(NNI_PLATFORM="local", XDG_RUNTIME_DIR=str(run), EFFICIENTNET_NNI_CACHE=str(digits_cache))
    try:
        yield env
    finally:
        for lock in run.glob("*/*.lock"):
            pid = lock.read_text().strip()
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGTERM)
        shutil.rmtree(run, ignore_errors=True)


@pytest.fixture
def runtime(digits_cache: Path) -> Iterator[dict[str, str]]:
    """A trial environment of this test alone: no server yet."""
    with trial_environment(digits_cache) as env:
        yield env


@pytest.fixture(scope="module")
def warm(digits_cache: Path) -> Iterator[tuple[dict[str, str], int]]:
    """A trial environment whose server was started as ``python -m efficientnet create`` starts it, shared by the
    tests of warm trials (a server serves trial after trial), and that server's pid."""
    with trial_environment(digits_cache) as env:
        assert warm_start.prestart(SCRIPT, env) is not None
        yield env, server_pid(env)


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory) -> Path:
    from efficientnet.data import export_digits

    cache = tmp_path_factory.mktemp("cache")
    export_digits(cache)
    return cache


def trial(env: dict[str, str], out: Path, *extra: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *TINY, "--output-dir", str(out), "--download-dir",
                           str(Path(env["EFFICIENTNET_NNI_CACHE"])), *extra], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def server_pid(env: dict[str, str], timeout: float = 60) -> int:
    """The pid of the server whose socket is up in this environment's folder (waits for it)."""
    folder = Path(env["XDG_RUNTIME_DIR"]) / f"efficientnet-nni-{os.getuid()}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for sock in folder.glob("*.sock"):
            pid = sock.with_suffix(".lock").read_text().strip()
            if pid:
                return int(pid)
        time.sleep(0.2)
    raise AssertionError(f"no warm-start server came up in {folder} within {timeout} s")


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_the_first_trial_starts_a_server_and_the_next_ones_start_warm_with_the_same_result(runtime, tmp_path):
    cold = trial(runtime, tmp_path / "a", "--epochs", "1")
    assert cold.returncode == 0, cold.stderr
    started = [line for line in cold.stdout.splitlines() if line.startswith("started in")]
    assert started and WARM not in started[0]
    server = server_pid(runtime)
    for name in ("b", "c"):
        warm = trial(runtime, tmp_path / name, "--epochs", "1")
        assert warm.returncode == 0, warm.stderr
        assert any(line.startswith("started in") and WARM in line for line in warm.stdout.splitlines())
        assert warm.stdout.splitlines()[-1].startswith("final: ")  # the child wrote to the trial's own stdout
    histories = [[{k: v for k, v in record.items() if not k.endswith("time_s")}
                  for record in json.loads((tmp_path / n / "result.json").read_text())["history"]] for n in "abc"]
    assert histories[0] == histories[1] == histories[2]  # same seed, same training, to the last digit
    assert server_pid(runtime) == server and not children_of(server)


def test_a_warm_trial_ends_with_its_childs_status_and_error_line(warm, tmp_path):
    runtime, server = warm
    bad = trial(runtime, tmp_path / "b", "--epochs", "1", "--lr", "-1")
    assert bad.returncode == 2
    assert "--lr" in one_error_line(bad.stderr)
    help_ = trial(runtime, tmp_path / "c", "--help")
    assert help_.returncode == 0 and "usage:" in help_.stdout
    assert server_pid(runtime) == server  # the server outlives its children's errors


def test_a_stop_signal_reaches_the_warm_child_and_the_trial_dies_by_it(warm, tmp_path):
    runtime, server = warm
    out = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *TINY, "--epochs", "30", "--output-dir", str(out),
                             "--download-dir", runtime["EFFICIENTNET_NNI_CACHE"]], env=runtime, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:  # bounded: the epoch line comes within seconds, or the process ends
            lines.append(line)
            if line.startswith("epoch 1/"):
                break
        assert any(WARM in line for line in lines), lines
        proc.send_signal(signal.SIGINT)  # as NNI's assessor and nnictl stop do
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGINT  # NNI records EARLY_STOPPED / USER_CANCELED only for this
    assert "stopped by SIGINT" in err and (out / "checkpoint.pth.tar").is_file()
    assert not children_of(server)


def test_killing_the_trial_process_kills_its_warm_child(warm, tmp_path):
    runtime, server = warm
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *TINY, "--epochs", "30", "--output-dir",
                             str(tmp_path / "b"), "--download-dir", runtime["EFFICIENTNET_NNI_CACHE"]], env=runtime,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("started in"):
            break
    assert children_of(server), "the trial is not running in the server's child"
    proc.kill()  # NNI's SIGKILL 5 s after a SIGINT that was not obeyed
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while children_of(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not children_of(server)


def test_switched_off_no_server_starts(runtime, tmp_path):
    """Switched off, a trial starts no server (switched on, the first trial starts one: see the test above), so no
    later trial can start warm."""
    runtime[warm_start.ENV_SWITCH] = "0"
    run = trial(runtime, tmp_path / "a", "--epochs", "1")
    assert run.returncode == 0 and WARM not in run.stdout
    assert not list(Path(runtime["XDG_RUNTIME_DIR"]).glob("*/*.sock"))


def test_what_a_server_must_share_with_a_trial():
    env = {"PATH": "/usr/bin", "OMP_NUM_THREADS": "2", "NNI_TRIAL_JOB_ID": "a", "CUDA_VISIBLE_DEVICES": "0", "_": "x"}
    key = warm_start.server_key(SCRIPT, env)
    per_trial = {**env, "NNI_TRIAL_JOB_ID": "b", "NNI_OUTPUT_DIR": "/o", "CUDA_VISIBLE_DEVICES": "1", "_": "y"}
    assert warm_start.server_key(SCRIPT, per_trial) == key
    assert warm_start.server_key(SCRIPT, {**env, "OMP_NUM_THREADS": "1"}) != key  # read when torch is imported
    assert warm_start.server_key(ROOT / "bench" / "trivial_trial.py", env) != key  # another script: its own server
    assert warm_start.enabled({"NNI_PLATFORM": "local"})
    assert warm_start.enabled({"NNI_PLATFORM": "remote"})
    assert not warm_start.enabled({"NNI_PLATFORM": "kubeflow"})  # one trial per pod: nothing to reuse
    assert not warm_start.enabled({})  # a hand run
    assert not warm_start.enabled({"NNI_PLATFORM": "local", "LOCAL_RANK": "0"})  # a torchrun rank
    assert not warm_start.enabled({"NNI_PLATFORM": "local", warm_start.ENV_SWITCH: "0"})


def test_no_socket_in_a_folder_others_can_enter_nor_past_the_path_limit(tmp_path, monkeypatch):
    short = Path(tempfile.mkdtemp(prefix="ws-", dir="/tmp"))
    try:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(short))
        assert warm_start.socket_path("k") == short / f"efficientnet-nni-{os.getuid()}" / "k.sock"
        (short / f"efficientnet-nni-{os.getuid()}").chmod(0o755)
        assert warm_start.socket_path("k") is None
    finally:
        shutil.rmtree(short)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / ("x" * 100)))
    assert warm_start.socket_path("k") is None  # cold starts, not a failed bind


def test_an_ending_server_removes_its_socket_lock_and_empty_log_and_a_second_one_exits_at_once(tmp_path):
    """Servers for one key, run as ``python -m efficientnet`` starts them (standard error appended to the key's
    log), with a 1 s idle time and without the imports a trial needs (they do not touch the files): a second
    server exits at once while the first serves; the first, idle, ends and leaves nothing in the folder; a log
    that has lines in it is kept, and so is the error of a server whose imports fail."""
    run = Path(tempfile.mkdtemp(prefix="ws-", dir="/tmp"))  # short: a socket's path is limited
    folder = run / f"efficientnet-nni-{os.getuid()}"  # where server_pid looks
    folder.mkdir()
    sock = folder / "k.sock"
    code = ("import sys; from pathlib import Path; from efficientnet import warm_start; "
            "warm_start._preload = lambda module: None if sys.argv[3] == 'ok' else 1 / 0; "
            "sys.exit(warm_start.serve(Path(sys.argv[1]), Path(sys.argv[2]), idle_seconds=1.0))")

    def server(preload: str = "ok") -> subprocess.Popen:
        with open(sock.with_suffix(".log"), "ab") as log:
            return subprocess.Popen([sys.executable, "-c", code, str(sock), str(SCRIPT), preload], cwd=ROOT,
                                    stderr=log, stdin=subprocess.DEVNULL)

    try:
        first = server()
        assert server_pid({"XDG_RUNTIME_DIR": str(run)}) == first.pid and first.poll() is None
        second = server()
        assert second.wait(timeout=60) == 0 and first.poll() is None  # the first one still serves
        assert sock.with_suffix(".lock").read_text().strip() == str(first.pid)
        assert first.wait(timeout=60) == 0
        assert sorted(p.name for p in folder.iterdir()) == []

        sock.with_suffix(".log").write_text("an earlier server's error\n")
        assert server().wait(timeout=60) == 0
        assert sorted(p.name for p in folder.iterdir()) == ["k.log"]

        sock.with_suffix(".log").unlink()
        assert server("fails").wait(timeout=60) == 1  # its imports failed: the log keeps why
        assert sorted(p.name for p in folder.iterdir()) == ["k.log"]
        assert "ZeroDivisionError" in sock.with_suffix(".log").read_text()
    finally:
        shutil.rmtree(run, ignore_errors=True)
