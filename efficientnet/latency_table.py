"""Latency tables measured on the target device (ProxylessNAS / FBNet / OFA style).

A table maps each *layer* of an EfficientNet (the stem, one MBConv block repeat, the head with pooling and
classifier) to its median latency in ms on one device, thread count and batch size. The latency of an architecture
is predicted as the sum of its layers' entries: microseconds instead of the hundreds of milliseconds a measurement
of the whole model takes, so the tuner can check ``max_latency_ms`` for every candidate (classArg
``latency_table``).

A layer's key holds everything its latency depends on: input size, channels, kernel, stride, expansion, SE ratio
and activation (``block:56px:24>40:k5:s2:e6:se0.25:swish``). The table is built by
``python -m efficientnet latency-table``, which times the *real* modules of a built
:class:`~efficientnet.builder.SpecEfficientNet` (forward hooks check each layer's input against its key, then
timestamp each layer inside whole forward passes), saves its progress every ~10 s and skips, when run again, the
keys already in the file. With ``--backend onnxruntime`` it times the ONNX export of each model in onnxruntime
instead, and splits a run into layers by the node names of onnxruntime's profile; ``--backend onnxruntime-int8``
times that export quantised to int8 as ``export --int8`` quantises it.
"""

from __future__ import annotations

import json
import math
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic_files import atomic_write_json
from .spec import ArchSpec

if TYPE_CHECKING:
    import torch

__all__ = [
    "BACKENDS",
    "FORMAT",
    "LatencyTable",
    "LatencyTableError",
    "Layer",
    "build_table",
    "layer_keys",
    "layers",
    "measure_onnxruntime_latency",
]

FORMAT = "efficientnet-nni-latency/1"


class LatencyTableError(ValueError):
    """An unreadable or incompatible table, or one without an entry the prediction needs (one line)."""


@dataclass(frozen=True)
class Layer:
    """One timed unit of the model: ``kind`` stem/block/head, its input size and channels, and its key."""

    kind: str
    size: int  # input spatial size
    cin: int
    key: str


def layers(spec: ArchSpec, num_classes: int = 1000) -> list[Layer]:
    """The layers of the model :class:`~efficientnet.builder.SpecEfficientNet` builds for ``spec``, in order:
    the stem, one entry per block repeat (as ``model._blocks``), and the head (conv, pooling, classifier)."""
    # imported here: efficientnet-pytorch imports torch, which the tuner process loads only when it needs it
    from .builder import block_repeats, stem_head_channels

    act = spec.activation
    res = spec.resolution
    stem, head = stem_head_channels(spec, num_classes)
    out = [Layer("stem", res, 3, f"stem:{res}px:3>{stem}:{act}")]
    size, cout = math.ceil(res / 2), stem
    for args in block_repeats(spec, num_classes):
        se = args.se_ratio if args.se_ratio is not None and 0 < args.se_ratio <= 1 else 0
        cin = args.input_filters
        out.append(Layer("block", size, cin, f"block:{size}px:{cin}>{args.output_filters}:k{args.kernel_size}:"
                                             f"s{args.stride}:e{args.expand_ratio:g}:se{se:g}:{act}"))
        size, cout = math.ceil(size / args.stride), args.output_filters
    out.append(Layer("head", size, cout, f"head:{size}px:{cout}>{head}:fc{num_classes}:{act}"))
    return out


def layer_keys(spec: ArchSpec, num_classes: int = 1000) -> list[str]:
    """A key per layer of the model ``spec`` builds: stem, each block repeat, head (+ pooling + classifier)."""
    return [layer.key for layer in layers(spec, num_classes)]


def _machine() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{platform.machine()} {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}".strip()


@dataclass
class LatencyTable:
    """Per-layer latencies (ms) measured on one device; ``predict`` sums them for an architecture."""

    entries: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    threads: int = 1
    batch_size: int = 1
    backend: str = "torch"
    torch: str = ""
    machine: str = ""
    path: Path | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document."""
        return {"format": FORMAT, "device": self.device, "threads": self.threads, "batch_size": self.batch_size,
                "backend": self.backend, "torch": self.torch, "machine": self.machine,
                "entries": dict(sorted(self.entries.items()))}

    def save(self, path: str | Path | None = None) -> Path:
        """Write the table atomically (a reader never sees half a file)."""
        target = Path(path) if path is not None else self.path
        assert target is not None
        self.path = atomic_write_json(self.to_dict(), target)
        return self.path

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read a table; :class:`LatencyTableError` (one line) when it cannot be read or is not a latency table."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise LatencyTableError(f"latency table {path} does not exist: build it with "
                                    "python -m efficientnet latency-table --out FILE") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LatencyTableError(f"cannot read latency table {path}: {type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("entries"), dict):
            raise LatencyTableError(f"{path} is not a latency table (format {FORMAT!r} with entries expected)")
        try:
            entries = {str(k): float(v) for k, v in doc["entries"].items()}
            return cls(entries, str(doc.get("device", "cpu")), int(doc.get("threads", 1)),
                       int(doc.get("batch_size", 1)), str(doc.get("backend", "torch")), str(doc.get("torch", "")),
                       str(doc.get("machine", "")), path)
        except (TypeError, ValueError) as exc:
            raise LatencyTableError(f"latency table {path} has a malformed entry: {exc}") from None

    def describe(self) -> str:
        """Where the entries were measured, in words."""
        return (f"{self.backend} on {self.device} ({self.machine or 'unknown machine'}), {self.threads} thread(s), "
                f"batch {self.batch_size}")

    def predict(self, spec: ArchSpec, num_classes: int = 1000) -> float:
        """Predicted latency in ms of ``spec``: the sum of its layers' entries."""
        total = 0.0
        for key in layer_keys(spec, num_classes):
            value = self.entries.get(key)
            if value is None:
                raise LatencyTableError(
                    f"latency table {self.path or ''} has no entry {key!r} (architecture {spec}, {num_classes} "
                    "classes): re-run python -m efficientnet latency-table with this search space, base, "
                    "base_resolution and num_classes")
            total += value
        return total


def _measure_spec(spec: ArchSpec, num_classes: int, todo: set[str], device: torch.device, batch_size: int,
                  repeats: int, warmup: int, done: Callable[[str, float], None]) -> None:
    """Build the real model of ``spec`` and time each of its layers whose key is in ``todo``.

    One pass with forward hooks checks every layer's input against its key. Then whole forward passes are timed
    with a timestamp at the start of the stem, of each block and of the head and at the end of the pass: each
    layer is timed in the cache state it has in the real model (timing one block again and again on the same input
    keeps its weights and activations in cache and predicted ~40 % too little on a CPU). A layer's entry is its
    median over ``repeats`` passes after ``warmup`` ones.
    """
    import torch

    from .builder import SpecEfficientNet

    spec_layers = layers(spec, num_classes)
    model = SpecEfficientNet(spec, num_classes).eval().to(device)
    _check_blocks(model, spec_layers, spec)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    starts = [model._conv_stem, *model._blocks, model._conv_head]
    inputs: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for m in starts]
    x = torch.randn(batch_size, 3, spec.resolution, spec.resolution, device=device)
    with torch.inference_mode():
        model(x)
        for h in hooks:
            h.remove()
        for layer, inp in zip(spec_layers, inputs, strict=True):
            if tuple(inp.shape[1:]) != (layer.cin, layer.size, layer.size):
                raise LatencyTableError(f"layer key {layer.key} does not match the model's input "
                                        f"{tuple(inp.shape[1:])} for {spec}")
        inputs.clear()
        stamps: list[float] = []

        def stamp(*_: Any) -> None:
            sync()
            stamps.append(time.perf_counter())

        hooks = [m.register_forward_pre_hook(stamp) for m in starts] + [model.register_forward_hook(stamp)]
        times: list[list[float]] = [[] for _ in spec_layers]
        for i in range(warmup + repeats):
            stamps.clear()
            model(x)
            if i >= warmup:
                for t, (a, b) in zip(times, pairwise(stamps), strict=True):
                    t.append((b - a) * 1000.0)
        for h in hooks:
            h.remove()
    for layer, t in zip(spec_layers, times):
        if layer.key in todo:
            done(layer.key, statistics.median(t))
            todo.discard(layer.key)


_BLOCK_NODE = re.compile(r"^/_blocks\.(\d+)/")
_BLOCK_WEIGHT = re.compile(r"^_blocks\.(\d+)\.")  # an int8 model's dequantisation of a block's weight


def _layer_of_nodes(names: list[str], blocks: int) -> list[int]:
    """The layer (0 stem, 1..blocks a block repeat, blocks + 1 head) of each node an onnxruntime run executed, in
    execution order, from the names the legacy exporter gives (``/_blocks.3/_project_conv/Conv``): a block's nodes
    name it; a named node before the first block is the stem's, after it the head's; a node the runtime added
    (``ReorderOutput_token_7``, not starting with ``/``) belongs to the layer running around it. An int8 model's
    dequantisation of a block's weight (``_blocks.3._bn1.bias_DequantizeLinear``, run before the stem) is its
    block's."""
    out, current, seen_block = [], 0, False
    for name in names:
        weight = _BLOCK_WEIGHT.match(name)
        named = weight or _BLOCK_NODE.match(name)
        if named:
            block = int(named.group(1))
            if block >= blocks:
                raise LatencyTableError(f"onnxruntime ran node {name} of block {block}, but the model has {blocks} "
                                        "blocks")
            if weight:  # the layer running around it goes on
                out.append(block + 1)
                continue
            current, seen_block = block + 1, True
        elif name.startswith("/"):
            current = blocks + 1 if seen_block else 0
        out.append(current)
    return out


def _check_blocks(model: Any, spec_layers: list[Layer], spec: ArchSpec) -> None:
    """The model has one block per block key (the keys' walk of the blocks is the builder's)."""
    if len(model._blocks) != len(spec_layers) - 2:
        raise LatencyTableError(f"layer keys do not match the model of {spec}: {len(spec_layers) - 2} blocks "
                                f"expected, the model has {len(model._blocks)}")


def _onnx_file(spec: ArchSpec, num_classes: int, batch_size: int, folder: str | Path, int8: bool = False) -> Path:
    """``spec``'s model (random weights) exported to ``folder`` as ``python -m efficientnet export`` writes it, by
    the legacy exporter (its node names give each node's module) with the batch fixed at ``batch_size`` (so
    onnxruntime folds the shape arithmetic of TF's "same" padding, as it does for a dynamo export); with ``int8``,
    quantised as ``export --int8`` quantises it (calibrated on random images: the ranges change the values, not the
    kernels that run)."""
    from .export import DEFAULT_OPSET, INPUT_NAME, model_for_export, write_onnx

    model = model_for_export(spec, num_classes)
    _check_blocks(model, layers(spec, num_classes), spec)
    path = Path(folder) / "model.onnx"
    write_onnx(model, spec.resolution, path, DEFAULT_OPSET, "legacy", static_batch=batch_size)
    if not int8:
        return path
    import numpy as np

    from .quantize import quantize_onnx

    rng = np.random.default_rng(0)
    shape = (batch_size, 3, spec.resolution, spec.resolution)
    quantized = Path(folder) / "model.int8.onnx"
    quantize_onnx(path, quantized, [rng.standard_normal(shape, np.float32) for _ in range(2)], INPUT_NAME, "minmax")
    return quantized


def _onnx_session(path: Path, threads: int, profile_prefix: str | None = None) -> Any:
    """A CPU onnxruntime session with ``threads`` intra-op threads, sequential, profiling when a prefix is given."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _run_times(session: Any, spec: ArchSpec, batch_size: int, repeats: int, warmup: int) -> list[float]:
    """Milliseconds of ``repeats`` runs of ``session`` on a random batch, after ``warmup`` untimed ones."""
    import numpy as np

    from .export import INPUT_NAME
    from .profiler import timed_runs

    x = np.random.default_rng(0).standard_normal((batch_size, 3, spec.resolution, spec.resolution), np.float32)
    return timed_runs(lambda: session.run(None, {INPUT_NAME: x}), repeats, warmup)


def measure_onnxruntime_latency(spec: ArchSpec, num_classes: int = 1000, threads: int = 1, batch_size: int = 1,
                                repeats: int = 20, warmup: int = 3, int8: bool = False) -> float:
    """Median latency in ms of ``spec``'s whole exported model (``int8``: quantised) in onnxruntime (what an
    ``onnxruntime`` or ``onnxruntime-int8`` table predicts)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="latency-table-") as tmp:
        session = _onnx_session(_onnx_file(spec, num_classes, batch_size, tmp, int8), threads)
        return statistics.median(_run_times(session, spec, batch_size, repeats, warmup))


def _measure_spec_onnxruntime(spec: ArchSpec, num_classes: int, todo: set[str], threads: int, batch_size: int,
                              repeats: int, warmup: int, done: Callable[[str, float], None], int8: bool = False) -> None:
    """Time each layer of ``spec`` whose key is in ``todo`` inside whole onnxruntime runs of its exported model
    (:func:`_onnx_file`).

    ``repeats`` plain runs give the model's median latency; as many runs under onnxruntime's profiler give each
    layer's share of the kernel time. A layer's entry is its share of the median latency, so the entries of a model
    add up to its measured latency.
    """
    import tempfile

    import numpy as np

    spec_layers = layers(spec, num_classes)
    blocks = len(spec_layers) - 2
    with tempfile.TemporaryDirectory(prefix="latency-table-") as tmp:
        path = _onnx_file(spec, num_classes, batch_size, tmp, int8)
        latency = statistics.median(_run_times(_onnx_session(path, threads), spec, batch_size, repeats, warmup))
        profiled = _onnx_session(path, threads, str(Path(tmp) / "profile"))
        _run_times(profiled, spec, batch_size, repeats, warmup)
        events = json.loads(Path(profiled.end_profiling()).read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")[warmup:]
    if len(runs) != repeats:
        raise LatencyTableError(f"onnxruntime's profile holds {len(runs) + warmup} runs, not {warmup + repeats}")
    nodes = sorted((e["ts"], e["name"].removesuffix("_kernel_time"), e["dur"]) for e in events
                   if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
                   and runs[0][0] <= e["ts"] <= runs[-1][1])
    kernel_us = np.zeros(blocks + 2)
    for (_, _, dur), layer in zip(nodes, _layer_of_nodes([name for _, name, _ in nodes], blocks)):
        kernel_us[layer] += dur
    if not kernel_us.sum() > 0:
        raise LatencyTableError(f"onnxruntime's profile of {spec} holds no kernel times")
    for layer, part in zip(spec_layers, kernel_us / kernel_us.sum()):
        if layer.key in todo:
            done(layer.key, float(part * latency))
            todo.discard(layer.key)


BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")  # the eager model, its ONNX export, that quantised


def build_table(specs: Iterable[ArchSpec], out: str | Path, num_classes: int = 1000, device: str = "cpu",
                threads: int = 1, batch_size: int = 1, repeats: int = 20, warmup: int = 3,
                save_every_s: float = 10.0, progress: bool = True,
                backend: str = "torch") -> tuple[LatencyTable, int, int]:
    """Measure every layer of ``specs`` that ``out`` lacks (created, or resumed when it exists) and save it.

    ``backend`` ``torch`` times the eager model, ``onnxruntime`` the exported ONNX model (on the CPU),
    ``onnxruntime-int8`` that model quantised as ``export --int8`` quantises it.
    Returns ``(table, layers measured now, distinct layers of specs)``. The file is rewritten every
    ``save_every_s`` seconds, so an interrupted run loses little and a new run continues where it stopped.
    """
    import torch
    from tqdm import tqdm

    out = Path(out)
    if backend not in BACKENDS:
        raise LatencyTableError(f"unknown backend {backend!r}: use {', '.join(BACKENDS)}")
    dev = torch.device(device)
    onnx = backend.startswith("onnxruntime")
    if dev.type == "cuda" and onnx:
        raise LatencyTableError(f"--backend {backend} measures on the CPU only: use --backend torch for --device "
                                "cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LatencyTableError("--device cuda but CUDA is not available on this machine")
    runtime = torch.__version__
    if onnx:
        try:
            import onnxruntime
        except ImportError:
            raise LatencyTableError(f"--backend {backend} needs onnxruntime and onnx: pip install onnx "
                                    "onnxruntime") from None
        runtime = f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}"
    torch.set_num_threads(threads)
    machine = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _machine()
    if out.exists():
        table = LatencyTable.load(out)
        mine = {"device": str(dev), "threads": threads, "batch_size": batch_size, "backend": backend}
        theirs = {k: getattr(table, k) for k in mine}
        if theirs != mine:
            differ = ", ".join(f"{k} {theirs[k]} (not {mine[k]})" for k in mine if theirs[k] != mine[k])
            raise LatencyTableError(f"{out} was measured with {differ}: pass the same settings or another --out")
    else:
        table = LatencyTable({}, str(dev), threads, batch_size, backend, runtime, machine, out)
    specs = list(specs)
    keys_of = [set(layer_keys(s, num_classes)) for s in specs]
    distinct = set().union(*keys_of) if keys_of else set()
    missing = distinct - table.entries.keys()
    bar = tqdm(total=len(missing), desc="layers", unit="layer", disable=not progress, dynamic_ncols=True)
    last_save = time.monotonic()
    measured = 0

    def done(key: str, ms: float) -> None:
        nonlocal last_save, measured
        table.entries[key] = round(ms, 6)
        measured += 1
        bar.update(1)
        if time.monotonic() - last_save >= save_every_s:
            table.save(out)
            last_save = time.monotonic()

    try:
        for spec, keys in zip(specs, keys_of):
            todo = keys & missing
            if todo:
                if onnx:
                    _measure_spec_onnxruntime(spec, num_classes, todo, threads, batch_size, repeats, warmup, done,
                                              int8=backend == "onnxruntime-int8")
                else:
                    _measure_spec(spec, num_classes, todo, dev, batch_size, repeats, warmup, done)
                missing -= keys
    finally:
        bar.close()
        if measured or not out.exists():
            table.save(out)
    return table, measured, len(distinct)
