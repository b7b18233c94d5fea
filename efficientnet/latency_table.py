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
keys already in the file.
"""

from __future__ import annotations

import json
import math
import platform
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
    "FORMAT",
    "LatencyTable",
    "LatencyTableError",
    "Layer",
    "build_table",
    "layer_keys",
    "layers",
    "search_space_specs",
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


def search_space_specs(search_space: Any, base: str = "lite0", base_resolution: int | None = None,
                       num_classes: int = 1000, phi: float = 1.0, sample: int | None = None,
                       seed: int = 0) -> list[ArchSpec]:
    """The distinct architectures of a search space, as the tuner enumerates them (every candidate, or ``sample``
    random ones drawn with ``seed``)."""
    import numpy as np

    from .search.candidates import CandidateSpace
    from .search.options import TunerOptions
    from .search.space import parse_search_space

    options = TunerOptions.read(base=base, base_resolution=base_resolution, num_classes=num_classes, phi=phi)
    parsed = parse_search_space(search_space, options.base)
    space = CandidateSpace(parsed, options.constraint, options.base, options.phi, options.base_resolution)
    if sample is None or sample >= space.size:
        candidates: Iterable[Any] = (space.at(i) for i in range(space.size))
    else:
        rng = np.random.default_rng(seed)
        candidates = [space.at(int(i)) for i in rng.choice(space.size, size=sample, replace=False)]
    return list(dict.fromkeys(space.spec(c) for c in candidates))


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
    if len(model._blocks) != len(spec_layers) - 2:
        raise LatencyTableError(f"layer keys do not match the model of {spec}: {len(spec_layers) - 2} blocks "
                                f"expected, the model has {len(model._blocks)}")
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


def build_table(specs: Iterable[ArchSpec], out: str | Path, num_classes: int = 1000, device: str = "cpu",
                threads: int = 1, batch_size: int = 1, repeats: int = 20, warmup: int = 3,
                save_every_s: float = 10.0, progress: bool = True) -> tuple[LatencyTable, int, int]:
    """Measure every layer of ``specs`` that ``out`` lacks (created, or resumed when it exists) and save it.

    Returns ``(table, layers measured now, distinct layers of specs)``. The file is rewritten every
    ``save_every_s`` seconds, so an interrupted run loses little and a new run continues where it stopped.
    """
    import torch
    from tqdm import tqdm

    out = Path(out)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LatencyTableError("--device cuda but CUDA is not available on this machine")
    torch.set_num_threads(threads)
    machine = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _machine()
    if out.exists():
        table = LatencyTable.load(out)
        mine = {"device": str(dev), "threads": threads, "batch_size": batch_size, "backend": "torch"}
        theirs = {k: getattr(table, k) for k in mine}
        if theirs != mine:
            differ = ", ".join(f"{k} {theirs[k]} (not {mine[k]})" for k in mine if theirs[k] != mine[k])
            raise LatencyTableError(f"{out} was measured with {differ}: pass the same settings or another --out")
    else:
        table = LatencyTable({}, str(dev), threads, batch_size, "torch", torch.__version__, machine, out)
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
                _measure_spec(spec, num_classes, todo, dev, batch_size, repeats, warmup, done)
                missing -= keys
    finally:
        bar.close()
        if measured or not out.exists():
            table.save(out)
    return table, measured, len(distinct)
