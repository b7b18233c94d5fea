"""Inference framerate: a found architecture against EfficientNet-B0..B3, PyTorch eager and ONNX Runtime.

Run from the repository root::

    python bench/framerate.py [--spec SPEC] [--quick] [--batch 8] [--runs 30] [--device auto] [--out bench/results]

Every model (random weights: speed does not depend on them; 1,000 classes) runs at its own resolution with batch 1
and with ``--batch``, on two backends: PyTorch eager (``torch.inference_mode``, optionally ``--channels-last``) and
ONNX Runtime on the model exported by :mod:`efficientnet.export` (checked against PyTorch before it is timed).
After ``--warmup`` untimed runs, each configuration is timed ``--runs`` times (or until ``--max-seconds`` have
passed, with at least 3 runs); images/s is images over total time, latencies are per batch (p50/p90/p99: with few
runs p99 is close to the maximum). Both backends get the same number of threads (``--threads``, default: PyTorch's).
``--device auto`` uses CUDA when there is a GPU (and ONNX Runtime's CUDA provider when installed), else the CPU.

The table is printed as Markdown and saved with the raw numbers as CSV, and a bar chart of images/s as PNG, in
``--out``. ``--spec`` takes a preset, a spec string, a JSON file (a spec dict, or any JSON with a ``spec`` key such
as an export sidecar or a report's ``best_spec.json``) or a training checkpoint; without it, "found" is a
representative result of the search: Lite0 compound-scaled by alpha 1.2, beta 1.1, gamma 1.15.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from efficientnet.export import ExportError, export_onnx, model_for_export, onnx_session  # noqa: E402
from efficientnet.profiler import profile  # noqa: E402
from efficientnet.spec import PRESETS, ArchSpec, SpecError, resolve_arch  # noqa: E402

DEFAULT_FOUND = ArchSpec.from_compound(1.2, 1.1, 1.15, 1.0, base="lite0")
BACKENDS = ("eager", "onnxruntime")


@dataclass
class Row:
    model: str
    resolution: int
    params_m: float
    macs_b: float
    backend: str
    batch: int
    images_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    runs: int
    device: str


def load_spec(text: str) -> ArchSpec:
    """A preset, spec string or JSON text, a JSON file (a spec dict or anything with a ``spec`` key), a checkpoint."""
    path = Path(text)
    if path.is_file():
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict) and isinstance(data.get("spec"), (dict, str)):
                data = data["spec"]
            return resolve_arch(data) if isinstance(data, str) else ArchSpec.from_dict(data)
        from efficientnet.export import read_source

        return read_source(path).spec
    return resolve_arch(text)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def time_runs(step, warmup: int, runs: int, max_seconds: float, sync=lambda: None) -> list[float]:
    """Seconds per call of ``step`` after ``warmup`` calls: ``runs`` calls or until ``max_seconds`` (at least 3)."""
    for _ in range(warmup):
        step()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs and (len(times) < 3 or time.perf_counter() - start < max_seconds):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def row(name: str, spec: ArchSpec, prof, backend: str, batch: int, times: list[float], device: str) -> Row:
    ms = [t * 1000.0 for t in times]
    return Row(
        model=name,
        resolution=spec.resolution,
        params_m=round(prof.params / 1e6, 2),
        macs_b=round(prof.macs / 1e9, 3),
        backend=backend,
        batch=batch,
        images_per_s=round(batch * len(times) / sum(times), 1),
        p50_ms=round(percentile(ms, 50), 2),
        p90_ms=round(percentile(ms, 90), 2),
        p99_ms=round(percentile(ms, 99), 2),
        runs=len(times),
        device=device,
    )


def bench_model(name: str, spec: ArchSpec, args, device: torch.device, tmp: Path) -> list[Row]:
    """Every backend and batch size for one model."""
    prof = profile(spec)
    model = model_for_export(spec, 1000)
    res = spec.resolution
    batches = sorted({1, args.batch})
    rows = []
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if "eager" in args.backends:
        eager = model.to(device)
        if args.channels_last:
            eager = eager.to(memory_format=torch.channels_last)
        for batch in batches:
            x = torch.randn(batch, 3, res, res, device=device)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                times = time_runs(lambda: eager(x), args.warmup, args.runs, args.max_seconds, sync)
            label = "eager" + ("+channels_last" if args.channels_last else "")
            rows.append(row(name, spec, prof, label, batch, times, device.type))
            print(f"  {name:>6} {label:<22} batch {batch:>3}: {rows[-1].images_per_s:8.1f} images/s", flush=True)
        model = eager.to("cpu", memory_format=torch.contiguous_format)
    if "onnxruntime" in args.backends:
        path = tmp / f"{name}.onnx"
        started = time.perf_counter()
        note = export_onnx(model, res, path, exporter=args.exporter)[2]
        if note:
            print(f"  note: {note}", flush=True)
        print(f"  {name:>6} exported to ONNX in {time.perf_counter() - started:.1f} s", flush=True)
        session = onnx_session(path, device=device.type, threads=args.threads)
        provider = session.get_providers()[0].removesuffix("ExecutionProvider").lower()
        label = f"onnxruntime-{provider}"
        for batch in batches:
            x = np.random.default_rng(0).standard_normal((batch, 3, res, res), dtype=np.float32)
            times = time_runs(lambda: session.run(["logits"], {"input": x}), args.warmup, args.runs, args.max_seconds)
            rows.append(row(name, spec, prof, label, batch, times, "cuda" if provider == "cuda" else "cpu"))
            print(f"  {name:>6} {label:<22} batch {batch:>3}: {rows[-1].images_per_s:8.1f} images/s", flush=True)
        del session
    return rows


def markdown(rows: list[Row]) -> str:
    head = "| model | res | params (M) | MACs (B) | backend | batch | images/s | p50 ms | p90 ms | p99 ms | runs |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.resolution} | {r.params_m:.2f} | {r.macs_b:.3f} | {r.backend} | {r.batch} | "
            f"{r.images_per_s:.1f} | {r.p50_ms:.1f} | {r.p90_ms:.1f} | {r.p99_ms:.1f} | {r.runs} |"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: Path, title: str) -> bool:
    """Grouped bars: images/s per model, one bar per backend and batch size (log scale). False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    models = list(dict.fromkeys(r.model for r in rows))
    series = list(dict.fromkeys((r.backend, r.batch) for r in rows))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(models)), 4.2))
    for i, (backend, batch) in enumerate(series):
        values = [
            next((r.images_per_s for r in rows if r.model == m and r.backend == backend and r.batch == batch), 0.0)
            for m in models
        ]
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(models))]
        bars = ax.bar(xs, values, width, label=f"{backend}, batch {batch}")
        ax.bar_label(bars, labels=[f"{v:.3g}" if v else "" for v in values], fontsize=7, padding=1)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels([f"{m}\n{next(r.resolution for r in rows if r.model == m)} px" for m in models])
    ax.set_ylabel("images / s")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", help="the found architecture: preset, spec string, JSON (file) or checkpoint")
    parser.add_argument("--models", default="found,b0,b1,b2,b3", help="comma-separated: found and presets")
    parser.add_argument("--batch", type=int, default=8, help="the larger batch size (batch 1 is always run)")
    parser.add_argument("--runs", type=int, help="timed runs per configuration (default 30; 8 with --quick)")
    parser.add_argument("--warmup", type=int, help="untimed runs first (default 3; 1 with --quick)")
    parser.add_argument("--max-seconds", type=float, help="stop timing a configuration after this (default 20; 3 quick)")
    parser.add_argument("--quick", action="store_true", help="fewer runs: the whole benchmark in a few minutes")
    parser.add_argument("--backends", default="eager,onnxruntime", help="comma-separated: eager, onnxruntime")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--threads", type=int, help="CPU threads for both backends (default: PyTorch's)")
    parser.add_argument("--channels-last", action="store_true", help="eager in channels_last memory format")
    parser.add_argument("--exporter", default="auto", help="ONNX exporter: auto, dynamo or legacy")
    parser.add_argument("--resolution-override", type=int, help="run every model at this resolution (smoke tests)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder for CSV and PNG")
    args = parser.parse_args(argv)
    args.runs = args.runs or (8 if args.quick else 30)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.max_seconds = args.max_seconds or (3.0 if args.quick else 20.0)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in args.backends if b not in BACKENDS]
    if bad or args.batch < 1 or args.runs < 1:
        parser.error(f"backends are {', '.join(BACKENDS)}; --batch and --runs must be positive")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            parser.error("--device cuda but no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = args.threads or torch.get_num_threads()

    try:
        found = load_spec(args.spec) if args.spec else DEFAULT_FOUND
    except (SpecError, ExportError, OSError, ValueError) as exc:
        print(f"error: --spec: {exc}", file=sys.stderr)
        return 2
    models: list[tuple[str, ArchSpec]] = []
    for name in (m.strip().lower() for m in args.models.split(",") if m.strip()):
        if name == "found":
            models.append(("found", found))
        elif name in PRESETS:
            models.append((name, PRESETS[name]))
        else:
            parser.error(f"unknown model {name!r}: use found or one of {', '.join(PRESETS)}")
    if args.resolution_override:
        models = [(n, s.replace(resolution=args.resolution_override)) for n, s in models]

    import onnxruntime

    cpu = platform.processor() or platform.machine()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({cpu}, {args.threads} threads)"
    print(f"device: {where}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    print(f"found: {found}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in models:
            rows.extend(bench_model(name, spec, args, device, Path(tmp)))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    print()
    print(table)
    csv_path = out / "framerate.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0]).keys()) + ["threads", "torch", "onnxruntime"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**asdict(r), "threads": args.threads, "torch": torch.__version__,
                             "onnxruntime": onnxruntime.__version__})
    (out / "framerate.md").write_text(f"device: {where}\n\nfound: `{found}`\n\n{table}\n")
    png = out / "framerate.png"
    drew = plot(rows, png, f"inference images/s on {where}")
    print(f"\nsaved {csv_path}" + (f", {png}" if drew else " (no PNG: pip install matplotlib)") +
          f", {out / 'framerate.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
