"""What a trial does when its output folder or its checkpoints go wrong: a full disk, a read-only folder, a damaged
checkpoint, an earlier run's best model, a --resume that names nothing. Each is one ``error:`` line, exit status 2,
and nothing that was in the folder is lost.

The full disk and the read-only folder are real: a small tmpfs mounted in a private mount namespace of the test's
own (``unshare --user --map-root-user --mount``), where the trial runs as a real process.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import main_efficientnet
from efficientnet.checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint
from efficientnet.data import export_digits
from efficientnet.environment import nvidia_driver, unusable_gpu
from efficientnet.proposal import Proposal
from efficientnet.spec import preset
from efficientnet.trial_config import overridden_flags, parse_config
from trial_process import hand_run_env, one_error_line, tiny_digits_command

UNSHARE = shutil.which("unshare")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    export_digits(cache)
    return cache


@pytest.fixture(scope="module")
def one_epoch(cache: Path, tmp_path_factory) -> Path:
    """A folder holding a 1-epoch run's checkpoint, best model, log and result."""
    out = tmp_path_factory.mktemp("one_epoch") / "run"
    proc = subprocess.run(tiny_digits_command(cache, out, epochs=1, subset=0.3), env=hand_run_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def run_in_tmpfs(tmp_path: Path, earlier: Path, command: list[str], size: int | None = None,
                 read_only: bool = False) -> tuple[subprocess.CompletedProcess, Path]:
    """Copy ``earlier`` into a fresh tmpfs (``size`` bytes; read-only after the copy if asked) and run ``command``
    there, with ``--output-dir`` the tmpfs; returns the process and a copy of the folder as the trial left it."""
    assert UNSHARE, "unshare (util-linux) is missing"
    mount, after = tmp_path / "mnt", tmp_path / "after"
    mount.mkdir()
    after.mkdir()
    script = (f'm="$1"; src="$2"; out="$3"; shift 3; mount -t tmpfs -o size={size or 64 << 20} tmpfs "$m" '
              '&& cp -a "$src"/. "$m"/ ' + ('&& mount -o remount,ro "$m" ' if read_only else "")
              + '&& { "$@"; echo "exit=$?"; cp -a "$m"/. "$out"/; }')
    cmd = [UNSHARE, "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(mount), str(earlier),
           str(after), *command, "--output-dir", str(mount)]
    proc = subprocess.run(cmd, env=hand_run_env(), capture_output=True, text=True, timeout=300)
    return proc, after


def exit_status(proc: subprocess.CompletedProcess) -> int:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("exit=")]
    assert lines, proc.stdout + proc.stderr
    return int(lines[-1].split("=")[1])


def test_a_full_disk_is_one_error_line_naming_the_folder_and_the_last_checkpoint_stays(one_epoch, cache, tmp_path):
    checkpoint = (one_epoch / CHECKPOINT_NAME).stat().st_size
    used = sum(p.stat().st_size for p in one_epoch.rglob("*") if p.is_file())
    size = (used + checkpoint // 2) // 4096 * 4096 + 8 * 4096  # room for the logs, not for a second checkpoint
    command = tiny_digits_command(cache, Path("unused"), epochs=2, subset=0.3)[:-2]
    proc, after = run_in_tmpfs(tmp_path, one_epoch, command, size=size)
    assert exit_status(proc) == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert f"cannot write {CHECKPOINT_NAME} in {tmp_path / 'mnt'} (no space left on device)" in line, line
    assert "pass --output-dir on another disk" in line
    assert "resumed at epoch 2" in proc.stdout  # it got as far as training epoch 2
    assert load_checkpoint(after / CHECKPOINT_NAME)["epoch"] == 1  # the earlier checkpoint is intact
    assert (after / BEST_NAME).read_bytes() == (one_epoch / BEST_NAME).read_bytes()
    assert not list(after.glob(".*.tmp"))  # no half-written file left behind


def test_a_read_only_output_folder_is_one_error_line_and_nothing_changes(one_epoch, cache, tmp_path):
    command = tiny_digits_command(cache, Path("unused"), epochs=2, subset=0.3)[:-2]
    proc, after = run_in_tmpfs(tmp_path, one_epoch, command, read_only=True)
    assert exit_status(proc) == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert f"in {tmp_path / 'mnt'} (read-only file system)" in line, line
    assert {p.name: p.read_bytes() for p in after.iterdir() if p.is_file()} == \
        {p.name: p.read_bytes() for p in one_epoch.iterdir() if p.is_file()}


def run(args: list, capsys) -> tuple[int, str, str]:
    code = main_efficientnet.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def hand_args(cache: Path, out: Path, epochs: int) -> list:
    return tiny_digits_command(cache, out, epochs=epochs, subset=0.3)[2:]


def test_a_damaged_checkpoint_names_the_intact_best_model_and_the_run_continues_from_it(one_epoch, cache, tmp_path,
                                                                                      capsys):
    out = tmp_path / "run"
    shutil.copytree(one_epoch, out)
    data = (out / CHECKPOINT_NAME).read_bytes()
    (out / CHECKPOINT_NAME).write_bytes(data[: len(data) // 2])  # a truncated file, as a crash mid-copy leaves
    best = load_checkpoint(out / BEST_NAME)
    code, _, err = run(hand_args(cache, out, epochs=2), capsys)
    assert code == 2
    line = one_error_line(err)
    assert f"cannot read checkpoint {out / CHECKPOINT_NAME}" in line and "it is damaged" in line
    advice = f"--resume {out / BEST_NAME} --no-auto-resume"
    assert f"{out / BEST_NAME} is intact (epoch 1, best top-1 {best['best_score']:.2f}%)" in line and advice in line

    code, stdout, err = run(hand_args(cache, out, epochs=2) + advice.split(), capsys)  # what the line says to do
    assert code == 0, err
    assert f"resumed at epoch 2 from {out / BEST_NAME}" in stdout and "epoch 2/2" in stdout
    assert load_checkpoint(out / CHECKPOINT_NAME)["epoch"] == 2  # the damaged file is replaced
    assert load_checkpoint(out / BEST_NAME)["best_score"] >= best["best_score"]  # never replaced by a worse model


def test_a_fresh_run_never_overwrites_an_earlier_best_model(one_epoch, cache, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(one_epoch, out)
    (out / CHECKPOINT_NAME).unlink()  # as a user who deleted the damaged checkpoint
    before = (out / BEST_NAME).read_bytes()
    code, _, err = run(hand_args(cache, out, epochs=1), capsys)
    assert code == 2
    line = one_error_line(err)
    assert f"{out} holds {BEST_NAME} of an earlier run (epoch 1, best top-1" in line
    assert f"--resume {out / BEST_NAME} --no-auto-resume" in line
    assert (out / BEST_NAME).read_bytes() == before and not (out / CHECKPOINT_NAME).exists()


@pytest.mark.parametrize("target", ["missing", "folder"])
def test_resume_of_a_missing_path_or_a_folder_is_an_error_not_a_fresh_start(one_epoch, cache, tmp_path, capsys,
                                                                           target):
    path = tmp_path / "nothing.pth.tar" if target == "missing" else one_epoch
    code, _, err = run(hand_args(cache, tmp_path / "out", epochs=1) + ["--resume", path], capsys)
    assert code == 2
    line = one_error_line(err)
    if target == "missing":
        assert f"--resume {path} does not exist" in line
    else:
        assert f"--resume {path} is a folder: give a checkpoint file, e.g. {one_epoch / CHECKPOINT_NAME}" in line
    assert not (tmp_path / "out" / CHECKPOINT_NAME).exists()


def test_flags_the_proposal_overrides_get_one_line_each():
    cfg = parse_config(["custom", "--download-dir", "/data", "--resolution", "300", "--width", "0.5"])
    spec = preset("lite0").replace(resolution=38)
    notes = overridden_flags(cfg, Proposal.from_parameters({"arch": str(spec), "gamma": 1.2}), spec)
    assert notes == [
        "--resolution 300 is not used: the tuner's proposal trains at 38 px (its base_resolution x gamma 1.2); set "
        "base_resolution in the tuner's classArgs to change it",
        "--width 0.5 is not used: the tuner's proposal sets width 1; set the tuner's base (classArgs) to change it"]
    seeded = preset("lite0").replace(resolution=345)  # the legacy project's tuner: coefficients on --arch at --resolution
    assert overridden_flags(cfg, Proposal(coefficients={"alpha": 1.2, "beta": 1.1, "gamma": 1.15}), seeded) == [
        "--resolution 300 is the base resolution: the proposal's gamma 1.15 trains at 345 px"]
    assert overridden_flags(parse_config(["--data", "digits"]), Proposal(spec=spec), spec) == []


def test_a_gpu_that_torch_cannot_use_is_named_with_what_to_install(tmp_path, monkeypatch):
    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
                       "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    driver = nvidia_driver(version)
    assert driver == "535.104.05" and nvidia_driver(tmp_path / "absent") is None
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    line = unusable_gpu("2.14.1", "13.0", False, driver)
    assert "NVIDIA GPU (driver 535.104.05) but torch 2.14.1 (built for CUDA 13.0) cannot use it" in line
    assert "training runs on the CPU" in line and "download.pytorch.org/whl/" in line
    assert "is a CPU-only build" in unusable_gpu("2.14.1+cpu", None, False, driver)
    assert unusable_gpu("2.14.1", "13.0", True, driver) is None and unusable_gpu("2.14.1", "13.0", False, None) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # GPUs hidden on purpose: nothing to say
    assert unusable_gpu("2.14.1", "13.0", False, driver) is None
