"""Does successive halving pay on the digits demo? Real ``nnictl`` experiments, full budget against halving.

Runs the demo's ``config.yml`` (as shipped: ``bo``, 3-epoch trials, Medianstop) through the README's launcher on a
free loopback port, and the same config with successive halving (classArgs ``min_epochs``, ``full_epochs``: rungs
of 1 and 3 epochs, promotions continuing their checkpoint), one after the other, with the same tuner seed and the
same number of trials. For each it prints, from NNI's REST API:

    wall time, trials (full-budget / lower-rung), epochs trained
    best full-budget accuracy, and when (seconds after create) the trial that reached it ended
    the best full-budget accuracy reached by 60 s, 120 s, ... (what a user stopping the search then would have)
    seconds until a full-budget trial reaches the lower of the two runs' best accuracies (the target both reach)

and, from the full-budget run's trials that trained every epoch, how well epoch 1 ranks them against their last
epoch (Spearman's rank correlation, as ``python -m efficientnet report`` prints it): successive halving pays only
where that is high.

    python bench/halving_digits.py                         # 16 trials each, about 7 min on 2 cores
    python bench/halving_digits.py --trials 24 --seeds 0,1
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(ROOT / "bench"))

from efficientnet.report import early_ranking  # noqa: E402  (the report's "does the first epoch rank" figure)
from experiment_throughput import trial_command  # noqa: E402
from nni_harness import experiment, write_config  # noqa: E402  (the end-to-end tests' start, stop and config)

ENDED = ("SUCCEEDED", "FAILED", "EARLY_STOPPED", "USER_CANCELED", "SYS_CANCELED")
DONE = ("DONE", "NO_MORE_TRIAL", "TUNER_NO_MORE_TRIAL", "STOPPED", "ERROR")


@dataclass
class Run:
    """One trial of an experiment: when it ended (seconds after create), its budget and its accuracy."""

    end: float
    epochs: int  # the epoch its checkpoint reached (the proposal's epochs; the trial command's without halving)
    full: bool
    accuracy: float | None  # the final result (best validation top-1 of the epochs it trained)
    trained: int  # epochs this trial trained (its result's epochs_trained; a promotion trains only the extra ones)
    status: str


def _value(metric: object) -> float | None:
    if isinstance(metric, dict):
        metric = metric.get("default")
    return float(metric) if isinstance(metric, (int, float)) else None


def run_variant(args: argparse.Namespace, seed: int, halving: bool, workdir: Path) -> tuple[float, list[Run], list]:
    """One experiment; returns its wall time (create to the last trial's end), its trials as runs and as NNI's
    records (:class:`efficientnet.nni_rest.Trial`)."""
    class_args: dict = {"seed": seed}
    if halving:
        class_args.update(min_epochs=args.min_epochs, full_epochs=args.epochs, eta=args.eta)
    command = yaml.safe_load((ROOT / "config.yml").read_text())["trialCommand"]
    overrides = {"maxTrialNumber": args.trials, "trialConcurrency": args.concurrency,
                 "maxExperimentDuration": f"{args.timeout}s", "tuner": {"classArgs": class_args},
                 "trialCommand": trial_command(command, args.epochs)}
    config = write_config(ROOT, workdir, overrides)
    created = time.time()
    with experiment(config) as exp:
        def ended(client) -> bool:
            jobs = client.get("/trial-jobs")
            return client.status() in DONE and bool(jobs) and all(j["status"] in ENDED for j in jobs)

        if not exp.client.wait(ended, args.timeout, interval=0.5):
            raise SystemExit(f"the experiment did not end within {args.timeout:.0f} s (--timeout)")
        jobs = {j["trialJobId"]: j for j in exp.client.get("/trial-jobs")}
        trials = exp.client.trials()
    runs = []
    for t in trials:
        epochs = int(t.parameters.get("epochs") or args.epochs)
        runs.append(Run(jobs[t.id]["endTime"] / 1000 - created, epochs, epochs >= args.epochs, _value(t.final),
                        int(t.final.get("epochs_trained", 0)) if isinstance(t.final, dict) else 0, t.status))
    return max(r.end for r in runs), sorted(runs, key=lambda r: r.end), trials


def best_full_by(runs: list[Run], t: float) -> float | None:
    """The best full-budget accuracy among the trials that ended by ``t``."""
    done = [r.accuracy for r in runs if r.full and r.accuracy is not None and r.end <= t]
    return max(done) if done else None


def reaches(runs: list[Run], target: float) -> float | None:
    """When the first full-budget trial reaching ``target`` ended."""
    return next((r.end for r in runs if r.full and r.accuracy is not None and r.accuracy >= target - 1e-9), None)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=16, help="maxTrialNumber of each experiment")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3, help="the full budget (the trial command's --epochs)")
    p.add_argument("--min-epochs", type=int, default=1)
    p.add_argument("--eta", type=int, default=3)
    p.add_argument("--seeds", default="0", help="the tuner's seed; each seed runs both experiments")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per experiment")
    args = p.parse_args(argv)
    summary: dict[str, list[float]] = {"speedup": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        results = {}
        for halving in (False, True):
            name = "halving" if halving else "full budget"
            with tempfile.TemporaryDirectory() as tmp:
                wall, runs, trials = run_variant(args, seed, halving, Path(tmp))
            results[name] = (wall, runs)
            if not halving:
                ranking = early_ranking(trials)
            full = [r for r in runs if r.full]
            best = max((r.accuracy for r in full if r.accuracy is not None), default=None)
            when = reaches(runs, best) if best is not None else None
            print(f"seed {seed}, {name}: wall {wall:.0f} s, {len(runs)} trials ({len(full)} full-budget, "
                  f"{len(runs) - len(full)} lower-rung), statuses "
                  + ", ".join(f"{s} {sum(r.status == s for r in runs)}" for s in sorted({r.status for r in runs}))
                  + f"; {sum(r.trained for r in runs)} epochs trained", flush=True)
            marks = "  ".join(f"{m} s: {best_full_by(runs, m) or float('nan'):.2f}"
                              for m in range(60, int(wall) + 60, 60))
            print(f"  best full-budget {best if best is None else round(best, 2)} % at {when or float('nan'):.0f} s; "
                  f"best so far at {marks}", flush=True)
        target = min(max((r.accuracy for r in runs if r.full and r.accuracy is not None), default=0.0)
                     for _, runs in results.values())
        times = {name: reaches(runs, target) for name, (_, runs) in results.items()}
        ratio = times["halving"] / times["full budget"] if all(times.values()) else float("nan")
        summary["speedup"].append(ratio)
        after = {name: "never" if t is None else f"{t:.0f} s" for name, t in times.items()}
        print(f"seed {seed}: a full-budget trial reaches {target:.2f} % (both runs' lower best) after "
              f"{after['full budget']} at full budget, {after['halving']} with halving: "
              f"halving/full {ratio:.2f}x", flush=True)
        print(f"seed {seed}: epoch 1 vs epoch {args.epochs}, Spearman rank correlation "
              + (f"{ranking[0]:.2f} over {ranking[1]} full-budget trials that trained every epoch" if ranking
                 else "unknown (fewer than 3 full-budget trials trained every epoch)"), flush=True)
    print(f"median halving/full time to the common target: {statistics.median(summary['speedup']):.2f}x")


if __name__ == "__main__":
    main()
