"""Search efficiency: trials needed to reach the best of 100 random trials, on a synthetic objective.

Run from the repository root: ``python bench/search_efficiency.py [--seeds 20] [--max-trials 100]``.

The objective is a smooth synthetic "accuracy" over the real search space (``search_space.json``: alpha/beta/gamma
on the compound constraint and the block choices) with interactions between choices; its optimum is known by
enumerating the whole candidate space. For each seed, the target is the best value of 100 random trials (an
independent random run); every method then runs up to ``--max-trials`` trials, one at a time, and we count the trials
until it first reaches the target (``>max`` when it never does; the median counts those as max + 1). Methods:
this tuner's ``random``, ``evolution`` and ``predictor`` strategies, and NNI's built-in TPE on the same search space
file. TPE draws alpha, beta and gamma independently; a draw that breaks alpha·beta²·gamma² ≈ 2 ± 0.1 is an
architecture the project would not train, so it counts as a trial that reached nothing (worst value).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nni.algorithms.hpo.tpe_tuner import TpeTuner  # noqa: E402

from efficientnet.search.costs import estimated_profile  # noqa: E402
from tuner import EfficientNetTuner  # noqa: E402

WORST = -1e9


def objective(p: dict) -> float:
    """Synthetic top-1 (%): a peak at alpha 1.45, beta 1.12, gamma 1.08, block-choice effects and interactions."""
    if abs(p["alpha"] * p["beta"] ** 2 * p["gamma"] ** 2 - 2.0) > 0.1 + 1e-9:
        return WORST
    value = 80.0 - 30 * (p["alpha"] - 1.45) ** 2 - 60 * (p["beta"] - 1.12) ** 2 - 40 * (p["gamma"] - 1.08) ** 2
    value += 0.6 * (p["stage4_kernel"] == 5) + 0.5 * (p["stage4_expand"] == 6)
    value += 0.8 * (p["stage6_se"] == 1) * (p["stage6_kernel"] == 5) + 0.3 * (p["stage6_kernel"] == 3) * (p["stage6_se"] == 0)
    value -= 0.4 * abs(p["stage6_repeats"] - 1) + 0.3 * (p["stage4_expand"] == 6) * (p["stage6_repeats"] == 1)
    return value


def make(method: str, seed: int, space: dict):
    if method == "tpe":
        tuner = TpeTuner(optimize_mode="maximize", seed=seed)
    else:
        tuner = EfficientNetTuner(strategy=method, seed=seed, base_resolution=64, num_classes=10,
                                  population_size=10, sample_size=3, profiler=estimated_profile)
    tuner.update_search_space(space)
    return tuner


def run(method: str, seed: int, space: dict, trials: int) -> list[float]:
    """The objective value of each of ``trials`` sequential trials."""
    tuner = make(method, seed, space)
    values = []
    for pid in range(trials):
        params = tuner.generate_parameters(pid)
        value = objective(params)
        values.append(value)
        tuner.receive_trial_result(pid, params, {"default": value if value > WORST else 0.0})
        tuner.trial_end(pid, True)
    return values


def optimum(space: dict) -> float:
    tuner = make("grid", 0, space)
    best = WORST
    for i in range(tuner.space.size):
        params = tuner.space.parameters(tuner.space.at(i))
        best = max(best, objective(params))
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--max-trials", type=int, default=100)
    parser.add_argument("--methods", default="random,evolution,predictor,tpe")
    parser.add_argument("--space", default=str(ROOT / "search_space.json"))
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    space = json.loads(Path(args.space).read_text())
    methods = args.methods.split(",")
    best = optimum(space)
    print(f"search space {args.space}: {make('grid', 0, space).space.size} candidates, known optimum {best:.3f}")
    needed: dict[str, list[int]] = {m: [] for m in methods}
    seconds: dict[str, float] = {m: 0.0 for m in methods}
    targets = []
    for seed in range(args.seeds):
        target = max(run("random", 1000 + seed, space, 100))
        targets.append(target)
        for m in methods:
            t0 = time.perf_counter()
            values = run(m, seed, space, args.max_trials)
            seconds[m] += time.perf_counter() - t0
            hit = next((i + 1 for i, v in enumerate(values) if v >= target - 1e-9), args.max_trials + 1)
            needed[m].append(hit)
        print(f"seed {seed}: target {target:.3f} (optimum {best:.3f}); trials needed: "
              + ", ".join(f"{m} {needed[m][-1] if needed[m][-1] <= args.max_trials else '>' + str(args.max_trials)}"
                          for m in methods), flush=True)
    print(f"\ntrials to reach the best of 100 random trials (median over {args.seeds} seeds; "
          f"targets {min(targets):.2f}..{max(targets):.2f}, optimum {best:.2f})")
    print(f"{'method':12s} {'median':>7s} {'reached':>8s} {'s/run':>7s}  per seed")
    for m in methods:
        reached = sum(n <= args.max_trials for n in needed[m])
        print(f"{m:12s} {statistics.median(needed[m]):7.1f} {reached:>4d}/{args.seeds:<3d} "
              f"{seconds[m] / args.seeds:7.2f}  {needed[m]}")


if __name__ == "__main__":
    main()
