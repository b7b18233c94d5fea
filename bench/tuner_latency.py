"""Proposal latency with 1,000 results of history: this project's tuner (each strategy) vs NNI's built-in TPE.

Run from the repository root: ``python bench/tuner_latency.py [--history 1000] [--proposals 50] [--profiled 5]
[--latency-table FILE]``.

Every tuner gets the same search space (``search_space.json``: quniform alpha/beta/gamma, block choices, lr and
batch size — all standard NNI types, so TPE reads it too), ``--history`` proposals answered with a synthetic
objective, and then ``--proposals`` timed proposals (each answered, untimed). Our tuner runs end to end as NNI runs it:
the strategy, the constraint, the dedupe, and every budget checked (``max_params``, ``max_macs``,
``max_model_size_mb``, ``max_peak_memory_mb``) on the closed-form costs, with the meta-device profiler as the
cross-check of the first candidate. For comparison, the last row profiles every new candidate on the meta device
(what each proposal waited for before peak memory and model size had closed forms).

``--latency-table FILE`` (built for ``search_space.json`` with ``python -m efficientnet latency-table --out FILE
--base-resolution 64 --num-classes 10``) adds a latency budget, ``--max-latency-ms`` (default: the 75th percentile of the
table's predictions over the space, so about a quarter of the candidates are over it): once predicted from the table (classArg
``latency_table``), and once measured on this CPU for every new candidate (``--measured`` proposals; the old way).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nni.algorithms.hpo.tpe_tuner import TpeTuner  # noqa: E402

from tuner import EfficientNetTuner  # noqa: E402

BUDGETS = {"max_params": 6e6, "max_macs": 1.2e8, "max_model_size_mb": 24.0, "max_peak_memory_mb": 4.0}


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
        tuner.receive_trial_result(pid, params, {"default": objective(params), "epochs": 1})
        tuner.trial_end(pid, True)
    return out


def fill_history(tuner, history: int) -> None:
    for pid in range(history):
        params = tuner.generate_parameters(pid)
        tuner.receive_trial_result(pid, params, {"default": objective(params), "epochs": 1})
        tuner.trial_end(pid, True)


def latency_rows(space: dict, args: argparse.Namespace) -> list[tuple[str, list[float]]]:
    """bo with a latency budget: predicted from the table, then measured per new candidate (``--measured``)."""
    import torch

    from efficientnet.latency_table import LatencyTable
    from efficientnet.search.specs import search_space_specs

    table = LatencyTable.load(args.latency_table)
    torch.set_num_threads(table.threads)  # the measured budget times on this CPU as the table was built
    limit = args.max_latency_ms
    if limit is None:
        predictions = sorted(table.predict(s, 10) for s in search_space_specs(space, "lite0", 64, 10, sample=500))
        limit = predictions[3 * len(predictions) // 4]
    rows = []
    for name, extra, count in (("table", {"latency_table": args.latency_table}, args.proposals),
                               ("measured", {}, args.measured)):
        tuner = EfficientNetTuner(strategy="bo", seed=0, num_classes=10, base_resolution=64, max_latency_ms=limit,
                                  **BUDGETS, **extra)
        tuner.update_search_space(space)
        if name == "table":
            fill_history(tuner, args.history)
        else:  # the measured budget takes ~0.2 s a candidate: a short history, then the timed proposals
            fill_history(tuner, min(args.history, 20))
        rows.append((f"bo: max_latency_ms {limit:.2f} ({name})", timed(tuner, 10**6, count)))
        print(f"bo with max_latency_ms {limit:.2f} ms ({name}): {tuner.checker.rejected} candidates over budget",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=1000)
    parser.add_argument("--proposals", type=int, default=50)
    parser.add_argument("--profiled", type=int, default=5)
    parser.add_argument("--strategies", default="grid,random,evolution,bo")
    parser.add_argument("--space", default=str(ROOT / "search_space.json"))
    parser.add_argument("--latency-table", help="also time bo with a latency budget predicted from this table")
    parser.add_argument("--max-latency-ms", type=float, help="the latency budget (default: the 75th percentile)")
    parser.add_argument("--measured", type=int, default=5, help="proposals timed with the latency measured")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    space = json.loads(Path(args.space).read_text())
    # profiles stored by earlier runs (efficientnet/profile_store.py) would answer the "meta profile on every
    # candidate" row without profiling: this run stores its profiles in a folder of its own
    store = tempfile.TemporaryDirectory(prefix="tuner-latency-")
    os.environ["EFFICIENTNET_NNI_CACHE"] = store.name

    rows = []
    tpe = TpeTuner(optimize_mode="maximize", seed=0)
    tpe.update_search_space(space)
    fill_history(tpe, args.history)
    tpe_ms = timed(tpe, args.history, args.proposals)
    rows.append(("NNI TPE (built-in)", tpe_ms))

    for strategy in args.strategies.split(","):
        tuner = EfficientNetTuner(strategy=strategy, seed=0, num_classes=10, base_resolution=64, **BUDGETS)
        tuner.update_search_space(space)
        t0 = time.perf_counter()
        fill_history(tuner, args.history)
        fill_s = time.perf_counter() - t0
        rows.append((f"{strategy}: end to end, budgets checked", timed(tuner, 10**6, args.proposals)))
        print(f"{strategy}: {args.history} proposals of history took {fill_s:.1f} s; "
              f"{tuner.checker.profiled} profiled on the meta device, {tuner.checker.rejected} over budget",
              flush=True)
        if args.profiled and strategy == args.strategies.split(",")[-1]:
            tuner.checker.cross_check = 10**9  # profile every new candidate, as before the closed forms
            rows.append((f"{strategy}: meta profile on every candidate", timed(tuner, 2 * 10**6, args.profiled)))

    if args.latency_table:
        rows += latency_rows(space, args)

    ref = statistics.median(tpe_ms)
    print(f"\nms per proposal with {args.history} results of history "
          f"(median and mean of {args.proposals}; profiled: of {args.profiled} new candidates)")
    print(f"{'tuner':44s} {'median ms':>10s} {'mean ms':>9s} {'median vs TPE':>14s}")
    for name, ms in rows:
        med = statistics.median(ms)
        print(f"{name:44s} {med:10.2f} {statistics.mean(ms):9.2f} {med / ref:13.2f}x")


if __name__ == "__main__":
    main()
