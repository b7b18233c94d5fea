"""Export a trained model to ONNX or TorchScript, with a JSON sidecar that says how to feed it.

``python -m efficientnet export CHECKPOINT --format onnx|torchscript [--out DIR]`` writes ``<stem>.onnx`` (or
``<stem>.torchscript.pt``) and ``<stem>.json`` next to the checkpoint (or into ``--out``). The sidecar holds the
architecture (``spec.to_dict()`` and its compact string), the class count and names (when the checkpoint has them),
the input layout and the preprocessing (resize rule, centre crop, channel order, mean/std), the opset and the
exporter used, and the result of the check run after every export: the exported file is loaded back (onnxruntime
for ONNX, ``torch.jit.load`` for TorchScript), run on a random batch of a different size than the one it was
exported with (the batch axis is dynamic), and its logits compared with PyTorch's; an export whose largest absolute
difference exceeds the tolerance fails.

ONNX goes through ``torch.onnx.export``: the ``torch.export``-based exporter (``dynamo``, needs ``onnxscript``), or
the older TorchScript-based one (``legacy``), which is deprecated but faster. The default, ``auto``, uses ``dynamo``
and, where it fails (older torch releases beside a newer onnxscript: torch 2.6 with onnxscript 0.7 fails on
BatchNorm), ``legacy``, saying so; the sidecar records the exporter that wrote the file.
Both export efficientnet-pytorch's plain ``Swish`` (``set_swish(memory_efficient=False)``): the memory-efficient
one is a custom autograd Function that neither exporter can trace.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .builder import SpecEfficientNet
from .atomic_files import atomic_write_json
from .checkpoint import UnreadableCheckpoint, load_checkpoint
from .preprocess import normalization
from .spec import ArchSpec, SpecError
from .weights import WeightsError, build_model, load_weights

__all__ = [
    "FORMATS",
    "EXPORTERS",
    "ExportError",
    "ExportResult",
    "LoadedCheckpoint",
    "read_source",
    "model_for_export",
    "sidecar",
    "export_onnx",
    "export_torchscript",
    "export_checkpoint",
    "onnx_session",
    "ExportedModel",
    "load_exported",
]

FORMATS = ("onnx", "torchscript")
EXPORTERS = ("auto", "dynamo", "legacy")
DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-3
CHECK_BATCH = 3  # the exported files are traced with batch 2 and checked with 3, so a fixed batch axis fails
TRACE_BATCH = 2
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
INT8_SUFFIX = ".int8.onnx"
INT8_KEY = "onnx-int8"  # the int8 model's entry in the sidecar's "exports"


class ExportError(RuntimeError):
    """An export that cannot be done or did not reproduce PyTorch's output; the message is one line."""


@dataclass
class LoadedCheckpoint:
    """What an export needs from a checkpoint."""

    state: dict[str, torch.Tensor]
    spec: ArchSpec
    num_classes: int
    class_names: list[str] | None
    source: dict[str, Any]  # where it came from: path, epoch, best accuracy when recorded
    settings: dict[str, Any] = field(default_factory=dict)  # the trial's settings (its flags), when recorded


@dataclass
class ExportResult:
    """Paths written and the check that was run."""

    format: str
    model_path: str
    sidecar_path: str
    exporter: str
    max_abs_diff: float
    tolerance: float
    seconds: float
    note: str | None = None  # what the caller should hear (the auto exporter's fallback)
    int8: dict[str, Any] | None = None  # with int8: the sidecar's "onnx-int8" entry (file, calibration, check)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # torch's exporter colours its messages
    return text.splitlines()[0] if text else type(exc).__name__


def _class_names(obj: Mapping[str, Any], num_classes: int) -> list[str] | None:
    """Class names from ``classes``/``class_names`` at the top level or inside ``args``; None otherwise."""
    places = [obj]
    args = obj.get("args")
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if isinstance(args, Mapping):
        places.append(args)
    for place in places:
        for key in ("classes", "class_names"):
            names = place.get(key)
            if isinstance(names, (list, tuple)) and len(names) == num_classes and all(isinstance(n, str) for n in names):
                return list(names)
    return None


def read_source(path: str | os.PathLike, arch: ArchSpec | None = None) -> LoadedCheckpoint:
    """Read a trial checkpoint (``{"spec", "model", ...}``), a plain state dict, or ``lite0`` (bundled weights).

    ``arch`` is the architecture of a file that does not record one (it overrides a recorded one too).
    """
    text = os.fspath(path)
    source: dict[str, Any] = {"checkpoint": text}
    if not os.path.exists(text) and text.lower() in ("lite0", "efficientnet-lite0"):
        obj: Any = None
        state, spec = load_weights("lite0", weights_spec=arch)
    else:
        if not os.path.exists(text):
            raise ExportError(f"checkpoint {text!r} does not exist")
        if not os.path.isfile(text):
            raise ExportError(f"checkpoint {text!r} is not a file")
        try:
            obj = load_checkpoint(text)
        except UnreadableCheckpoint as exc:  # pickle errors, truncated files, foreign formats
            raise ExportError(
                f"cannot read checkpoint {text!r} ({exc.reason}): is it a .pth.tar written by training?"
            ) from None
        if not isinstance(obj, Mapping):
            raise ExportError(
                f"checkpoint {text!r} holds a {type(obj).__name__}, not a training checkpoint or state dict"
            )
        try:
            state, spec = load_weights(obj, weights_spec=arch)
        except WeightsError as exc:
            msg = str(exc).replace("the given weights", f"checkpoint {text!r}")
            if "cannot tell which architecture" in msg:
                msg = (
                    f"checkpoint {text!r} records no architecture and is no preset's: "
                    "give it with --arch (a preset, spec string or JSON)"
                )
            raise ExportError(msg) from None
        except SpecError as exc:
            raise ExportError(f"checkpoint {text!r} has a bad architecture: {exc}") from None
    if "_fc.weight" not in state:
        raise ExportError(f"checkpoint {text!r} has no classifier weights (_fc.weight): not an EfficientNet?")
    num_classes = int(state["_fc.weight"].shape[0])
    names, settings = None, {}
    if isinstance(obj, Mapping):
        names = _class_names(obj, num_classes)
        if isinstance(obj.get("args"), Mapping):
            settings = dict(obj["args"])
        for key in ("epoch", "best_score", "best_top1", "best_epoch", "best_acc1", "acc1"):
            value = obj.get(key)
            if isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1):
                source[key] = float(value) if not isinstance(value, int) else value
        if isinstance(obj.get("eval_metric"), str):  # what best_score measures
            source["eval_metric"] = obj["eval_metric"]
    return LoadedCheckpoint(state=state, spec=spec, num_classes=num_classes, class_names=names, source=source,
                            settings=settings)


def model_for_export(spec: ArchSpec, num_classes: int, state: Mapping[str, torch.Tensor] | None = None) -> SpecEfficientNet:
    """The model in eval mode with plain Swish, its weights loaded exactly (no inheritance, no missing keys)."""
    model = build_model(spec, num_classes)
    if state is not None:
        try:
            model.load_state_dict(dict(state), strict=True)
        except RuntimeError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
            detail = lines[0] if lines else _first_line(exc)
            detail = detail if len(detail) <= 160 else detail[:157] + "..."
            raise ExportError(f"the weights do not fit the architecture (wrong --arch?): {detail}") from None
    model.set_swish(memory_efficient=False)
    return model.eval()


def sidecar(
    spec: ArchSpec,
    num_classes: int,
    class_names: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The metadata written next to an exported model: architecture, input contract and preprocessing."""
    norm = normalization(spec)
    res = spec.resolution
    data: dict[str, Any] = {
        "arch": str(spec),
        "spec": spec.to_dict(),
        "num_classes": num_classes,
        "class_names": class_names,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, res, res],
            "dtype": "float32",
            "layout": "NCHW",
            "channel_order": "RGB",
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch", num_classes], "meaning": "logits (apply softmax)"},
        "preprocess": {
            "resize": {"short_side": res, "interpolation": "bicubic"},
            "center_crop": [res, res],
            "scale": "pixel / 255 (values in [0, 1])",
            "mean": [float(m) for m in norm.mean],
            "std": [float(s) for s in norm.std],
            "order": ["apply the EXIF orientation", "convert to 8-bit RGB (16-bit grey: x * 255 / 65535)",
                      "resize short side", "center crop", "scale to [0, 1]", "(x - mean) / std"],
        },
    }
    data.update(extra)
    return data


def _check(name: str, got: Any, want: torch.Tensor, tolerance: float) -> float:
    got = torch.as_tensor(got)
    if tuple(got.shape) != tuple(want.shape):
        raise ExportError(f"{name} output has shape {tuple(got.shape)}, PyTorch's {tuple(want.shape)}")
    diff = float((got.float() - want.float()).abs().max())
    if not diff <= tolerance:  # also catches NaN
        raise ExportError(f"{name} logits differ from PyTorch's by up to {diff:.3g} (tolerance {tolerance:g})")
    return diff


def onnx_session(path: str | os.PathLike, device: str = "cpu", threads: int | None = None):
    """An onnxruntime ``InferenceSession`` (CUDA provider first when ``device`` is cuda and it is available)."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(os.fspath(path), sess_options=options, providers=providers)


@dataclass
class ExportedModel:
    """An exported ONNX model (fp32 or int8) ready to run: its onnxruntime session and what its sidecar says."""

    path: Path
    session: Any
    spec: ArchSpec
    num_classes: int
    class_names: list[str] | None
    source: dict[str, Any] = field(default_factory=dict)  # the sidecar's record of the checkpoint it came from

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The logits of a batch of model inputs (a CPU tensor in, a CPU float tensor out)."""
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]).float()

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities of a batch of model inputs (CPU tensors in, CPU tensor out)."""
        return self.logits(images).softmax(dim=-1)


def load_exported(path: str | os.PathLike, device: str = "cpu") -> ExportedModel:
    """An ONNX model written by :func:`export_checkpoint` (``<stem>.onnx`` or ``<stem>.int8.onnx``), with the
    architecture and class names of its sidecar ``<stem>.json``; one-line :class:`ExportError` s otherwise."""
    path = Path(path)
    stem = path.name[: -len(INT8_SUFFIX)] if path.name.endswith(INT8_SUFFIX) else path.stem
    side = path.with_name(f"{stem}.json")
    try:
        meta = json.loads(side.read_text())
        files = {entry.get("file") for entry in meta.get("exports", {}).values() if isinstance(entry, dict)}
        spec = ArchSpec.parse(meta["arch"])
        num_classes, names, source = int(meta["num_classes"]), meta.get("class_names"), dict(meta.get("source") or {})
    except FileNotFoundError:
        raise ExportError(f"{path.name} has no sidecar {side.name} beside it (export writes one, with its classes "
                          "and preprocessing); export the checkpoint again, or pass the checkpoint") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SpecError) as exc:
        raise ExportError(f"cannot read {side} ({_first_line(exc)}); export the checkpoint again") from None
    if path.name not in files:
        raise ExportError(f"{side.name} does not describe {path.name} (it lists {', '.join(sorted(map(str, files)))}); "
                          "export the checkpoint again")
    if not path.is_file():
        raise ExportError(f"ONNX model {str(path)!r} does not exist")
    try:
        session = onnx_session(path, device)
    except ImportError as exc:
        raise ExportError(f"running an ONNX model needs onnxruntime ({exc.name} is missing): pip install "
                          "onnxruntime") from None
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot load {path.name}: {_first_line(exc)}") from None
    return ExportedModel(path, session, spec, num_classes, names, source)


def export_onnx(
    model: torch.nn.Module,
    resolution: int,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    tolerance: float = DEFAULT_TOLERANCE,
) -> tuple[float, str, str | None]:
    """Write ``model`` as ONNX with a dynamic batch axis, validate it and compare onnxruntime with PyTorch.

    Returns the largest absolute logit difference on a random batch of ``CHECK_BATCH`` images, the exporter that
    wrote the file, and a note when ``auto`` fell back from ``dynamo`` to ``legacy`` (else None).
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown ONNX exporter {exporter!r}: choose one of {', '.join(EXPORTERS)}")
    try:
        import onnx
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"ONNX export needs onnx and onnxruntime ({exc.name} is missing): pip install onnx onnxruntime") from None
    path = Path(path)
    note = None
    if exporter == "auto":
        try:
            write_onnx(model, resolution, path, opset, "dynamo")
            exporter = "dynamo"
        except ExportError as exc:
            note = (f"the dynamo ONNX exporter failed on torch {torch.__version__} ({str(exc)[:200]}); the legacy "
                    "one wrote the file instead")
            exporter = "legacy"
            write_onnx(model, resolution, path, opset, exporter)
    else:
        write_onnx(model, resolution, path, opset, exporter)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"{path} does not pass onnx.checker: {_first_line(exc)}") from None
    check = torch.randn(CHECK_BATCH, 3, resolution, resolution)
    with torch.inference_mode():
        want = model(check)
    session = onnx_session(path)
    got = session.run([OUTPUT_NAME], {INPUT_NAME: check.numpy()})[0]
    return _check("onnxruntime", got, want, tolerance), exporter, note


def write_onnx(model: torch.nn.Module, resolution: int, path: Path, opset: int, exporter: str,
                static_batch: int | None = None) -> None:
    """``torch.onnx.export`` with one exporter (``dynamo`` or ``legacy``); an :class:`ExportError` if it fails.

    The batch axis is dynamic, or fixed at ``static_batch`` (legacy exporter only: what the latency table times).
    """
    x = torch.randn(static_batch or TRACE_BATCH, 3, resolution, resolution)
    torch_log = logging.getLogger("torch")  # torch.export logs its guards and schema guesses as warnings
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=4096)
                torch.onnx.export(
                    model, (x,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    opset_version=opset, dynamo=True, external_data=False, dynamic_shapes=({0: batch},),
                    verbose=False,
                )
            else:
                torch.onnx.export(
                    model, (x,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    opset_version=opset, dynamo=False, do_constant_folding=True,
                    dynamic_axes=None if static_batch else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                )
    except ImportError as exc:
        raise ExportError(
            f"the {exporter} ONNX exporter needs {exc.name or 'a missing package'}: pip install onnxscript, "
            "or use --exporter legacy"
        ) from None
    except Exception as exc:
        raise ExportError(f"torch.onnx.export ({exporter}) failed: {_first_line(exc)}") from None
    finally:
        torch_log.setLevel(level)


def export_torchscript(
    model: torch.nn.Module, resolution: int, path: str | os.PathLike, tolerance: float = DEFAULT_TOLERANCE
) -> float:
    """Trace ``model`` with ``torch.jit.trace``, save it, load it back and compare with the eager model."""
    path = Path(path)
    x = torch.randn(TRACE_BATCH, 3, resolution, resolution)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, x, check_trace=False)  # checked below, on the reloaded file
            torch.jit.save(traced, str(path))
    except Exception as exc:
        raise ExportError(f"torch.jit.trace failed: {_first_line(exc)}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
    check = torch.randn(CHECK_BATCH, 3, resolution, resolution)
    with torch.inference_mode():
        want = model(check)
        got = loaded(check)
    return _check("TorchScript", got, want, tolerance)


def export_checkpoint(
    checkpoint: str | os.PathLike,
    fmt: str = "onnx",
    out_dir: str | os.PathLike | None = None,
    arch: ArchSpec | None = None,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    tolerance: float = DEFAULT_TOLERANCE,
    stem: str | None = None,
    int8: bool = False,
    calibration: str | None = None,
    calibration_images: int | None = None,
    calibration_method: str = "percentile",
) -> ExportResult:
    """Export ``checkpoint`` as ``fmt`` into ``out_dir`` (default: the checkpoint's folder) with its JSON sidecar;
    with ``int8`` (ONNX only), also ``<stem>.int8.onnx``, calibrated on ``calibration_images`` of the trial's
    training images or of the folder ``calibration`` (:mod:`efficientnet.quantize`)."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ExportError(f"--int8 makes an int8 ONNX model; use it with --format onnx, not {fmt}")
    if calibration_images is not None and calibration_images < 1:
        raise ExportError(f"--calibration-images must be at least 1, got {calibration_images}")
    from .quantize import CALIBRATION_METHODS

    if calibration_method not in CALIBRATION_METHODS:
        raise ExportError(f"unknown --calibration-method {calibration_method!r}: choose one of "
                          f"{', '.join(CALIBRATION_METHODS)}")
    if not tolerance > 0:
        raise ExportError(f"tolerance must be positive, got {tolerance!r}")
    started = time.perf_counter()
    ckpt = read_source(checkpoint, arch)
    src = Path(os.fspath(checkpoint))
    if stem is None:
        stem = src.name
        for suffix in (".pth.tar", ".pth", ".pt", ".tar", ".ckpt"):
            if stem.endswith(suffix) and len(stem) > len(suffix):
                stem = stem[: -len(suffix)]
                break
    out = Path(out_dir) if out_dir is not None else (src.parent if src.is_file() else Path.cwd())
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create output folder {str(out)!r}: {exc.strerror or exc}") from None
    model_path = out / f"{stem}{SUFFIX[fmt]}"
    sidecar_path = out / f"{stem}.json"
    model = model_for_export(ckpt.spec, ckpt.num_classes, ckpt.state)
    res = ckpt.spec.resolution
    images = _int8_images(ckpt, calibration, calibration_images) if int8 else None  # the data's errors first
    note = None
    if fmt == "onnx":
        diff, used, note = export_onnx(model, res, model_path, opset=opset, exporter=exporter, tolerance=tolerance)
        runtime = "onnxruntime " + __import__("onnxruntime").__version__
        export_info = {"exporter": f"torch.onnx.export ({used})", "opset": opset}
    else:
        diff = export_torchscript(model, res, model_path, tolerance=tolerance)
        runtime = "torch.jit.load"
        export_info = {"exporter": "torch.jit.trace", "opset": None}
    this = {
        "file": model_path.name,
        **export_info,
        "check": {"runtime": runtime, "batch": CHECK_BATCH, "max_abs_diff": diff, "tolerance": tolerance},
    }
    exports = {fmt: this}
    int8_entry = None
    if images is not None:
        int8_entry = _export_int8(model_path, out / f"{stem}{INT8_SUFFIX}", images, calibration_method)
        exports[INT8_KEY] = int8_entry
    try:  # a sidecar left by exporting the same model to another format: keep its entries
        previous = json.loads(sidecar_path.read_text())
        if previous.get("arch") == str(ckpt.spec) and previous.get("num_classes") == ckpt.num_classes:
            exports = {k: v for k, v in previous.get("exports", {}).items()
                       if k in (*FORMATS, INT8_KEY) and k not in exports} | exports
    except (OSError, ValueError, AttributeError):
        pass
    meta = sidecar(
        ckpt.spec,
        ckpt.num_classes,
        ckpt.class_names,
        format=fmt,
        **this,
        exports=exports,
        torch_version=torch.__version__,
        source=ckpt.source,
    )
    atomic_write_json(meta, sidecar_path)
    return ExportResult(
        format=fmt,
        model_path=str(model_path),
        sidecar_path=str(sidecar_path),
        exporter=export_info["exporter"],
        max_abs_diff=diff,
        tolerance=tolerance,
        seconds=time.perf_counter() - started,
        note=note,
        int8=int8_entry,
    )


def _int8_images(ckpt: LoadedCheckpoint, calibration: str | None, count: int | None):
    from .quantize import CALIBRATION_IMAGES, Int8Error, int8_images

    try:
        return int8_images(ckpt.spec, ckpt.class_names, ckpt.settings, calibration, count or CALIBRATION_IMAGES)
    except Int8Error as exc:
        raise ExportError(str(exc)) from None


def _export_int8(fp32: Path, path: Path, images, method: str) -> dict[str, Any]:
    """Write the int8 model of the fp32 ONNX file ``fp32`` to ``path`` and check it; its sidecar entry."""
    from .atomic_files import OutputError
    from .quantize import Int8Error, compare_int8, image_batches, quantize_onnx

    try:
        quantize_onnx(fp32, path, image_batches(images.calibration), INPUT_NAME, method)
    except (Int8Error, OutputError) as exc:
        raise ExportError(str(exc)) from None
    check = compare_int8(fp32, path, images, lambda file, threads: onnx_session(file, threads=threads), INPUT_NAME,
                         OUTPUT_NAME)
    return {"file": path.name, "bytes": path.stat().st_size, "fp32_bytes": fp32.stat().st_size,
            "quantization": "onnxruntime quantize_static " + __import__("onnxruntime").__version__ + ": QDQ, int8 "
                            f"weights per output channel, uint8 activations, {method} calibration",
            "calibration": images.calibration_from, "check": check.to_dict()}
