"""Proposal latency with 1,000 results of history: this project's tuner (each strategy) vs NNI's built-in TPE.

Run from the repository root: ``python bench/tuner_latency.py [--history 1000] [--proposals 50] [--profiled 5]``.

Every tuner gets the same search space (``search_space.json``: quniform alpha/beta/gamma, block choices, lr and
batch size — all standard NNI types, so TPE reads it too), 1,000 proposals answered with a synthetic objective, and
then ``--proposals`` timed proposals (each answered, untimed). Our tuner is timed twice: with the closed-form cost
model standing in for the profiler (the tuner's own decision time: strategy, constraint, dedupe, budget filters), and
end to end with the real meta-device profiler on ``--profiled`` new candidates (what a trial waits for in practice).
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

from efficientnet.search.budgets import cached_profile  # noqa: E402
from efficientnet.search.costs import estimated_profile  # noqa: E402
from tuner import EfficientNetTuner  # noqa: E402


def objective(p: dict) -> float:
    """Synthetic accuracy: best near alpha 1.5, beta 1.1, small stage-6 kernel."""
    value = 0.8 - (p["alpha"] - 1.5) ** 2 - 2 * (p["beta"] - 1.1) ** 2
    return value - 0.01 * (p.get("stage6_kernel", 3) - 3) - 0.02 * abs(float(p.get("lr", 0.01)) - 0.01)


def timed(tuner, start_id: int, count: int) -> list[float]:
    """ms per ``generate_parameters`` call, each result reported back (untimed)."""
    out = []
    for pid in range(start_id, start_id + count):
        t0 = time.perf_counter()
        params = tuner.generate_parameters(pid)
        out.append((time.perf_counter() - t0) * 1000.0)
        tuner.receive_trial_result(pid, params, {"default": objective(params)})
    return out


def fill_history(tuner, history: int) -> None:
    for pid in range(history):
        params = tuner.generate_parameters(pid)
        tuner.receive_trial_result(pid, params, {"default": objective(params)})
        tuner.trial_end(pid, True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=1000)
    parser.add_argument("--proposals", type=int, default=50)
    parser.add_argument("--profiled", type=int, default=5)
    parser.add_argument("--space", default=str(ROOT / "search_space.json"))
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    space = json.loads(Path(args.space).read_text())

    rows = []
    tpe = TpeTuner(optimize_mode="maximize", seed=0)
    tpe.update_search_space(space)
    fill_history(tpe, args.history)
    tpe_ms = statistics.median(timed(tpe, args.history, args.proposals))
    rows.append(("NNI TPE (built-in)", tpe_ms))

    cached_profile(EfficientNetTuner().base)  # warm torch up once, outside any timing
    for strategy in ("grid", "random", "evolution"):
        tuner = EfficientNetTuner(strategy=strategy, seed=0, num_classes=10, base_resolution=64,
                                  max_params=6e6, profiler=estimated_profile)
        tuner.update_search_space(space)
        fill_history(tuner, args.history)
        rows.append((f"{strategy}: decision (closed-form costs)", statistics.median(timed(tuner, 10**6, args.proposals))))
        tuner.checker.profiler = cached_profile
        if args.profiled:
            rows.append((f"{strategy}: end to end (meta profiler)",
                         statistics.median(timed(tuner, 2 * 10**6, args.profiled))))

    print(f"ms per proposal with {args.history} results of history "
          f"(median of {args.proposals}; end to end: median of {args.profiled} new candidates)")
    print(f"{'tuner':44s} {'ms/proposal':>12s} {'vs TPE':>8s}")
    for name, ms in rows:
        print(f"{name:44s} {ms:12.2f} {ms / tpe_ms:7.2f}x")


if __name__ == "__main__":
    main()
