"""How well a latency table predicts a whole model's latency: table sum against direct measurement.

Run from the repository root (a quiet machine: other jobs' load is noise of the same size as the error)::

    python bench/latency_table_accuracy.py --sample 20 --threads 1        # search_space.json, 224 px, 1000 classes
    python bench/latency_table_accuracy.py --sample 20 --backend onnxruntime --table /tmp/lt-ort.json

It builds (or resumes) a table for ``--sample`` random candidates of the search space with
``python -m efficientnet latency-table``'s code, then measures each candidate's batch-1 forward latency directly
(:func:`efficientnet.profiler.measure_latency`, same threads), twice, and prints each architecture's predicted and
measured latency, the median relative error, and the spread between the two direct measurements (the noise floor).
With ``--backend onnxruntime`` both the table and the direct measurement run the exported ONNX model in onnxruntime
(:func:`efficientnet.latency_table.measure_onnxruntime_latency`); with ``--backend onnxruntime-int8`` that model
quantised to int8.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from efficientnet.latency_table import BACKENDS, build_table, measure_onnxruntime_latency  # noqa: E402
from efficientnet.search.specs import search_space_specs  # noqa: E402
from efficientnet.profiler import measure_latency  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default=str(ROOT / "search_space.json"))
    p.add_argument("--sample", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base-resolution", type=int, default=None)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--backend", default="torch", choices=BACKENDS)
    p.add_argument("--table", default="/tmp/latency-table-accuracy.json", help="built or resumed here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    specs = search_space_specs(json.loads(Path(args.space).read_text()), "lite0", args.base_resolution,
                               args.num_classes, sample=args.sample, seed=args.seed)
    t0 = time.perf_counter()
    table, measured, distinct = build_table(specs, args.table, args.num_classes, "cpu", args.threads, 1,
                                            args.repeats, 3, progress=False, backend=args.backend)
    print(f"table: {len(specs)} architectures, {distinct} layers ({measured} measured now) in "
          f"{time.perf_counter() - t0:.1f} s; {table.describe()}")
    errors, noise = [], []
    t0 = time.perf_counter()
    predicted = [table.predict(s, args.num_classes) for s in specs]
    predict_ms = (time.perf_counter() - t0) * 1000 / len(specs)
    for spec, pred in zip(specs, predicted):
        a, b = (direct_ms(spec, args) for _ in range(2))
        direct = min(a, b)
        errors.append((pred - direct) / direct)
        noise.append(abs(a - b) / min(a, b))
        print(f"{spec.resolution:4d} px  width {spec.width:.3f}  depth {spec.depth:.3f}  predicted {pred:7.2f} ms  "
              f"measured {a:7.2f} / {b:7.2f} ms  error {100 * errors[-1]:+6.1f} %", flush=True)
    print(f"median |relative error| {100 * statistics.median(abs(e) for e in errors):.1f} % (signed median "
          f"{100 * statistics.median(errors):+.1f} %, largest {100 * max(abs(e) for e in errors):.1f} %); two direct "
          f"measurements differ by a median {100 * statistics.median(noise):.1f} %; prediction {predict_ms:.3f} ms "
          "per architecture")


def direct_ms(spec, args: argparse.Namespace) -> float:
    """One direct measurement of the whole model's batch-1 latency with the table's backend."""
    if args.backend.startswith("onnxruntime"):
        return measure_onnxruntime_latency(spec, args.num_classes, args.threads, 1, args.repeats, 3,
                                           int8=args.backend == "onnxruntime-int8")
    return measure_latency(spec, num_classes=args.num_classes, repeats=args.repeats, warmup=3)


if __name__ == "__main__":
    main()
