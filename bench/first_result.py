"""Time to first result: how long a user waits, after the README's ``python -m efficientnet create --config
config.yml``, for the first intermediate and the first final result, read from the experiment's REST API.

Runs the project's own config.yml (the demo) on a free loopback port in a temporary working directory, and in the
same run the same experiment with a trivial trial (``bench/trivial_trial.py``: it reports at once), started by plain
``nnictl create`` (NNI's floor: starting the manager, the tuner and a trial process) and by the launcher (the floor
plus the launcher's checks). ``--full`` waits for every trial of the demo and prints the total time and the best
result too.

    python bench/first_result.py            # about 2 minutes on a 2-core CPU
    python bench/first_result.py --full     # the whole demo experiment
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from efficientnet.nni_rest import NNIClient, NNIUnavailable  # noqa: E402

NNICTL = [sys.executable, "-m", "nni.tools.nnictl.nnictl"]
LAUNCHER = [sys.executable, "-m", "efficientnet"]
ENDED = ("SUCCEEDED", "FAILED", "EARLY_STOPPED", "USER_CANCELED")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(workdir: Path, trial_command: str | None) -> Path:
    """config.yml with absolute paths and a private working directory (and another trial command, if given)."""
    config = yaml.safe_load((ROOT / "config.yml").read_text())
    config["searchSpaceFile"] = str(ROOT / config["searchSpaceFile"])
    config["trialCodeDirectory"] = str(ROOT)
    config["tuner"]["codeDirectory"] = str(ROOT)
    config["experimentWorkingDirectory"] = str(workdir)
    if trial_command:
        config["trialCommand"] = trial_command
    path = workdir / "config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run(config: Path, full: bool, timeout: float, command: list[str] = LAUNCHER) -> dict[str, float | None]:
    """Seconds from ``create`` (by ``command``) to the first intermediate / first final result (and, with ``full``,
    to the last trial's end, with the best default metric)."""
    port = free_port()
    start = time.monotonic()
    proc = subprocess.run([*command, "create", "--config", str(config), "--port", str(port)], capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    match = re.search(r"Experiment ID: (\w+)", re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout))
    if proc.returncode != 0 or not match:
        raise SystemExit(f"create failed:\n{proc.stdout}\n{proc.stderr}")
    client = NNIClient(port)
    out: dict[str, float | None] = {"first intermediate": None, "first final": None}
    try:
        while time.monotonic() - start < timeout:
            try:
                trials = client.trials()
                status = client.status()
            except NNIUnavailable:
                time.sleep(0.25)
                continue
            now = time.monotonic() - start
            if out["first intermediate"] is None and any(t.intermediate for t in trials):
                out["first intermediate"] = now
            if out["first final"] is None and any(t.final is not None for t in trials):
                out["first final"] = now
            if not full and out["first final"] is not None:
                break
            if full and status in ("DONE", "NO_MORE_TRIAL", "TUNER_NO_MORE_TRIAL", "STOPPED", "ERROR") and trials \
                    and all(t.status in ENDED for t in trials):
                out["all trials"] = now
                finals = [t.default for t in trials if t.default is not None]
                out["best"] = max(finals) if finals else None
                out["trials"] = len(trials)
                out["statuses"] = ", ".join(sorted({t.status for t in trials}))
                break
            time.sleep(0.25)
    finally:
        subprocess.run([*NNICTL, "stop", match.group(1)], capture_output=True, timeout=120)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="wait for the whole demo experiment")
    p.add_argument("--timeout", type=float, default=1800)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        floor_dir, checked_dir, demo_dir = Path(tmp) / "floor", Path(tmp) / "checked", Path(tmp) / "demo"
        for d in (floor_dir, checked_dir, demo_dir):
            d.mkdir()
        trivial = f"{sys.executable} bench/trivial_trial.py"
        floor = run(write_config(floor_dir, trivial), False, 300, NNICTL)
        checked = run(write_config(checked_dir, trivial), False, 300)
        demo = run(write_config(demo_dir, None), args.full, args.timeout)

    def fmt(v):
        return "never" if v is None else f"{v:6.1f} s"

    print(f"NNI floor (trivial trial): first intermediate {fmt(floor['first intermediate'])}, "
          f"first final {fmt(floor['first final'])}")
    print(f"floor through the launcher: first intermediate {fmt(checked['first intermediate'])}, "
          f"first final {fmt(checked['first final'])}")
    print(f"demo (config.yml):         first intermediate {fmt(demo['first intermediate'])}, "
          f"first final {fmt(demo['first final'])}")
    if args.full:
        print(f"demo, all {demo.get('trials')} trials: {fmt(demo.get('all trials'))} ({demo.get('statuses')}), "
              f"best default {demo.get('best')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
