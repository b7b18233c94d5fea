"""How busy an experiment keeps its trial slots: a real ``nnictl`` experiment, timed end to end.

Runs an experiment through the README's launcher (``python -m efficientnet create``) on a free loopback port in a
temporary working directory, waits for every trial to end, then reads each trial's epoch times from its own
``log.txt`` and NNI's start and end times from the REST API. It prints::

    wall time          from ``create`` to the last trial's end
    steady seconds     each trial's epochs counted at its steady rate: the median of its epochs after the first
                       (a one-epoch trial: its epoch scaled by the median steady/first ratio of the others)
    busy fraction: X   steady seconds / (wall time x trial slots)

for the experiment as configured (trials start warm: ``efficientnet/warm_start.py``) and, as the baseline in the
same run, with cold trials (``EFFICIENTNET_NNI_WARM_START=0``: each trial a fresh process that imports torch);
and where the rest went, per trial on average: its time in NNI's record (start to end), its epochs, its start-up
(imports, data, model: the log's ``started in`` line), its first epoch's extra over a steady one, and the slots'
idle time (before the first trial, between trials and after the last one).

    python bench/experiment_throughput.py                       # the demo's config.yml, about 5 min on 2 cores
    python bench/experiment_throughput.py --trials 16 --concurrency 2 --epochs 3
    python bench/experiment_throughput.py --gpu --trials-per-gpu 4   # Lite0, 224 px, synthetic JPEGs, 16 trials

and the experiment's throughput (trials' epochs per minute of wall time, trials per hour), which compares runs with
different numbers of slots.

``--gpu`` needs a CUDA GPU: ``trialGpuNumber: 1`` and ``maxTrialNumberPerGpu: --trials-per-gpu`` on one GPU, so the
slots are ``trials-per-gpu``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from nni_harness import experiment, write_config  # noqa: E402  (the end-to-end tests' start, stop and config)

ENDED = ("SUCCEEDED", "FAILED", "EARLY_STOPPED", "USER_CANCELED", "SYS_CANCELED")
DONE = ("DONE", "NO_MORE_TRIAL", "TUNER_NO_MORE_TRIAL", "STOPPED", "ERROR")
EPOCH = re.compile(r"^epoch (\d+)/\d+ \|.* \| time ([0-9.]+)s \|")
STARTED = re.compile(r"^started in ([0-9.]+) s")
START_TIMEOUT = 90  # seconds from create to the first trial that leaves WAITING (NNI's GPU scheduler may wait forever)


@dataclass
class TrialTimes:
    """One trial as the benchmark saw it (seconds)."""

    id: str
    status: str
    start: float  # NNI's start time (epoch seconds)
    end: float
    epochs: list[float]  # each completed epoch's time, from the trial's log
    startup: float | None  # the log's "started in" figure

    @property
    def steady(self) -> float | None:
        """The median of the epochs after the first (None with fewer than two epochs)."""
        return statistics.median(self.epochs[1:]) if len(self.epochs) > 1 else None


def trial_command(command: str, epochs: int | None = None) -> str:
    """A config's trial command run by this Python (the benchmark's environment), with ``--epochs`` replaced."""
    if epochs:
        command = re.sub(r"--epochs \d+", f"--epochs {epochs}", command)
    return command.replace("python ", f"{sys.executable} ", 1)


def overrides(args: argparse.Namespace) -> dict:
    """What the benchmark changes in ``--config``: the sizes asked for, the trial command run by this Python and,
    with ``--gpu``, Lite0 at 224 px on synthetic JPEGs on one GPU."""
    command = yaml.safe_load(Path(args.config).read_text())["trialCommand"]
    out: dict = {}
    if args.gpu:
        sys.path.insert(0, str(ROOT / "bench"))
        from data_throughput import write_dataset  # 2,000 synthetic 500x375 JPEGs in 10 classes

        data = write_dataset(Path(tempfile.gettempdir()) / "efficientnet-nni-bench-images", 2000)  # kept: written
        # once for every run (and shared with data_throughput.py in bench/gpu_check.sh)
        command = (f"python main_efficientnet.py --data {data} --weights lite0 --batch-size 128 --epochs {args.epochs}"
                   f" --trials-per-gpu {args.trials_per_gpu} --request-from-nni")
        out["tuner"] = {"classArgs": {"base_resolution": 224, "num_classes": 10, "max_macs": 1_000_000_000,
                                      "max_peak_memory_mb": 4096}}
        out["trialGpuNumber"] = 1
        out["trainingService"] = {"platform": "local", "useActiveGpu": True,
                                  "maxTrialNumberPerGpu": args.trials_per_gpu, "gpuIndices": [0]}
        out["trialConcurrency"] = args.trials_per_gpu
    out["trialCommand"] = trial_command(command, None if args.gpu else args.epochs)
    if args.trials:
        out["maxTrialNumber"] = args.trials
    if args.concurrency and not args.gpu:
        out["trialConcurrency"] = args.concurrency
    if args.no_assessor:
        out["assessor"] = None
    return out


def run_experiment(config: Path, timeout: float, warm: bool = True) -> tuple[float, float, list[TrialTimes]]:
    """Create the experiment (its trials started warm, or cold: ``EFFICIENTNET_NNI_WARM_START=0``), wait for every
    trial to end (or ``timeout``), always stop it. Returns the create time, the last trial's end (epoch seconds)
    and the trials."""
    created = time.time()
    with experiment(config, env={**os.environ, "EFFICIENTNET_NNI_WARM_START": "1" if warm else "0"}) as exp:
        def ended(client) -> bool:
            jobs = client.get("/trial-jobs")
            return client.status() in DONE and bool(jobs) and all(j["status"] in ENDED for j in jobs)

        def started(client) -> bool:
            return any(j["status"] != "WAITING" for j in client.get("/trial-jobs")) or client.status() in DONE

        if not exp.client.wait(started, min(START_TIMEOUT, timeout), interval=0.5):
            raise SystemExit(f"no trial started within {min(START_TIMEOUT, timeout):.0f} s; NNI's manager logged:\n"
                             + manager_errors(exp.workdir / exp.id / "log" / "nnimanager.log"))
        if not exp.client.wait(ended, timeout, interval=0.5):
            raise SystemExit(f"the experiment did not end within {timeout:.0f} s (--timeout)")
        jobs = exp.client.get("/trial-jobs")
    folders = {j["trialJobId"]: exp.trials_dir() / j["trialJobId"] for j in jobs}
    missing = [job for job, folder in folders.items() if not (folder / "log.txt").is_file()]
    if missing:
        raise SystemExit(f"no log.txt for trials {missing}: NNI keeps trial folders elsewhere than this NNI version")
    trials = [read_trial(job, folders[job["trialJobId"]]) for job in jobs]
    return created, max(t.end for t in trials), trials


def manager_errors(log: Path, lines: int = 8) -> str:
    """The last ERROR and WARNING lines of NNI's manager log (where a GPU it cannot see, say, is reported)."""
    text = log.read_text(errors="replace").splitlines() if log.is_file() else ["(no nnimanager.log)"]
    return "\n".join([line for line in text if " ERROR " in line or " WARNING " in line][-lines:] or text[-lines:])


def read_trial(job: dict, folder: Path) -> TrialTimes:
    """NNI's record of one trial plus the epoch times and start-up its own log gives."""
    log = folder / "log.txt"
    epochs: dict[int, float] = {}
    startup = None
    text = log.read_text(errors="replace") if log.is_file() else ""
    for line in text.splitlines():
        if m := EPOCH.match(line):
            epochs[int(m.group(1))] = float(m.group(2))  # a resumed epoch replaces its earlier line
        elif (m := STARTED.match(line)) and startup is None:
            startup = float(m.group(1))
    return TrialTimes(job["trialJobId"], job["status"], job["startTime"] / 1000, job["endTime"] / 1000,
                      [epochs[k] for k in sorted(epochs)], startup)


def summarise(created: float, finished: float, trials: list[TrialTimes], slots: int) -> dict[str, float]:
    """Wall time, steady seconds, busy fraction and where each trial's other seconds went (means per trial)."""
    ratios = [t.steady / t.epochs[0] for t in trials if t.steady]
    scale = statistics.median(ratios) if ratios else 1.0
    steady = 0.0
    first_extra = []
    for t in trials:
        if t.steady:
            steady += t.steady * len(t.epochs)
            first_extra.append(t.epochs[0] - t.steady)
        elif t.epochs:
            steady += t.epochs[0] * scale
            first_extra.append(t.epochs[0] * (1 - scale))
    wall = finished - created
    n = len(trials)
    in_trials = sum(t.end - t.start for t in trials)
    out = {"trials": n, "wall": wall, "steady": steady, "busy": steady / (wall * slots), "slots": slots,
           "trial_mean": in_trials / n, "epochs_mean": sum(sum(t.epochs) for t in trials) / n,
           "first_extra": statistics.mean(first_extra) if first_extra else 0.0,
           "idle_slots": (wall * slots - in_trials) / n}
    startups = [t.startup for t in trials if t.startup is not None]
    out["startup"] = statistics.mean(startups) if startups else float("nan")
    out["first_start"] = min(t.start for t in trials) - created
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config.yml"), help="the experiment's config (default: the demo)")
    p.add_argument("--trials", type=int, help="maxTrialNumber (default: the config's; --gpu: 16)")
    p.add_argument("--concurrency", type=int, help="trialConcurrency (default: the config's)")
    p.add_argument("--epochs", type=int, help="the trial command's --epochs (default: the config's; --gpu: 3)")
    p.add_argument("--no-assessor", action="store_true", help="run every trial to its end (no Medianstop)")
    p.add_argument("--gpu", action="store_true", help="Lite0 at 224 px on synthetic JPEGs, one GPU")
    p.add_argument("--trials-per-gpu", type=int, default=1, help="--gpu: maxTrialNumberPerGpu (the slots)")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--keep", help="run in this folder and keep it (NNI's logs, the trials' folders)")
    p.add_argument("--no-baseline", action="store_true", help="skip the same experiment with cold trials")
    args = p.parse_args(argv)
    if args.gpu:
        args.trials = args.trials or 16
        args.epochs = args.epochs or 3
    runs = [("cold trials (EFFICIENTNET_NNI_WARM_START=0)", False)] * (not args.no_baseline) + [("default", True)]
    summaries = []
    for label, warm in runs:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(args.keep or tmp).resolve() / ("warm" if warm else "cold")
            workdir.mkdir(parents=True, exist_ok=True)
            config = write_config(ROOT, workdir, overrides(args), template=str(Path(args.config).resolve()))
            slots = yaml.safe_load(config.read_text())["trialConcurrency"]
            created, finished, trials = run_experiment(config, args.timeout, warm)
        s = summarise(created, finished, trials, slots)
        summaries.append(s)
        statuses = ", ".join(f"{k} {sum(t.status == k for t in trials)}" for k in sorted({t.status for t in trials}))
        print(f"{label}: {s['trials']} trials ({statuses}), {slots} slots, {Path(args.config).name}"
              f"{' --gpu' if args.gpu else ''}")
        print(f"  wall time:      {s['wall']:7.1f} s (first trial started {s['first_start']:.1f} s after create)")
        print(f"  steady seconds: {s['steady']:7.1f} s (mean per trial {s['steady'] / s['trials']:.1f} s)")
        print(f"  per trial, mean: {s['trial_mean']:.1f} s in NNI's record, epochs {s['epochs_mean']:.1f} s, start-up "
              f"{s['startup']:.1f} s, first epoch's extra {s['first_extra']:.1f} s, slot idle between trials "
              f"{s['idle_slots']:.1f} s")
        print(f"  throughput: {sum(len(t.epochs) for t in trials) * 60 / s['wall']:.1f} epochs per minute, "
              f"{s['trials'] * 3600 / s['wall']:.0f} trials per hour")
        print(f"  busy fraction {s['busy']:.2f}")
    if len(summaries) == 2:
        cold, warm = summaries
        print(f"default vs cold trials: busy fraction {warm['busy'] / cold['busy']:.2f}x, wall time per steady "
              f"second {(warm['wall'] / warm['steady']) / (cold['wall'] / cold['steady']):.2f}x")
    print(f"busy fraction: {summaries[-1]['busy']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
