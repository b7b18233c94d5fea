"""INT8 ONNX models: onnxruntime's static post-training quantisation, calibrated and checked on the trial's images.

``export CHECKPOINT --format onnx --int8`` writes ``<stem>.int8.onnx`` beside the fp32 ``<stem>.onnx``: weights as
int8 per output channel, activations as uint8, in the QDQ format (QuantizeLinear/DequantizeLinear pairs, which
onnxruntime, TensorRT and OpenVINO read). The activation ranges are calibrated on a seeded, class-stratified sample
of the trial's own training images, prepared as for validation: by default each activation's range is the 99.999th
percentile of its magnitudes (onnxruntime's ``Percentile``), which kept fp32's top-1 where plain min/max ranges lost
0.8-1.1 points (Lite0 at 224 px on the digits, ``docs/deploy.md``). The int8 model is then checked against the
fp32 one on the trial's validation images: the top-1 of each and how often they agree, and their batch-1 latency
in onnxruntime on this machine. EfficientNet-Lite was made for this (ReLU6, no squeeze-excitation).

A checkpoint that does not record its trial's data (``lite0``, a plain state dict) is calibrated on
``--calibration FOLDER`` (a sample of the images it will see), and checked by agreement on those images.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from .spec import ArchSpec

__all__ = ["CALIBRATION_IMAGES", "CALIBRATION_METHODS", "CHECK_IMAGES", "Int8Check", "Int8Error", "Int8Images",
           "compare_int8", "describe", "int8_images", "quantize_onnx"]

CALIBRATION_IMAGES = 256  # images whose activations set the int8 ranges
CALIBRATION_METHODS = ("percentile", "minmax", "entropy")  # onnxruntime's CalibrationMethod, the default first
CHECK_IMAGES = 1000  # validation images the int8 model is checked on, at most
LATENCY_RUNS = 30  # timed batch-1 runs of each model, after 3 warm-up runs
BATCH = 16


class Int8Error(RuntimeError):
    """An int8 export that cannot be done; the message is one line naming the fix."""


class _Images:
    """``(image, label)`` pairs read with a transform (label -1: none): the calibration and check images."""

    def __init__(self, pairs: Sequence[tuple[str, int]], transform) -> None:
        self.pairs = list(pairs)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        from .preprocess import load_image

        path, label = self.pairs[i]
        return self.transform(load_image(path)), label


@dataclass(frozen=True)
class Int8Images:
    """What an int8 export is calibrated and checked on, and where each came from (for the sidecar)."""

    calibration: Dataset
    calibration_from: str
    check: Dataset
    check_from: str
    labelled: bool  # whether the check images have labels (top-1 is measured), or only agreement


def int8_images(spec: ArchSpec, classes: Sequence[str] | None, settings: dict[str, Any],
                calibration: str | None = None, count: int = CALIBRATION_IMAGES, seed: int = 0) -> Int8Images:
    """The images to calibrate an int8 model of ``spec`` and ``classes`` on, and to check it on, from its trial's
    ``settings`` (its flags, as its checkpoint records them): ``count`` of its trial's training
    images (seeded, stratified by class, cut to whole batches: :func:`_batch_count`) and up to
    :data:`CHECK_IMAGES` of its validation images; or, with ``calibration`` (a folder of images, searched
    recursively), ``count`` of those, checked on the same images."""
    from torch.utils.data import Subset

    from .data import DataError, dataset_samples, load_trial_split, stratified_sample
    from .preprocess import eval_transform
    from .scan import image_files

    transform = eval_transform(spec)
    if calibration is not None:
        folder = Path(calibration).expanduser()
        if not folder.is_dir():
            raise Int8Error(f"--calibration {calibration}: not a folder; give a folder of images like those the "
                            "model will see")
        files = image_files(folder)
        if not files:
            raise Int8Error(f"--calibration {calibration} holds no image files (.jpg, .png, ...); give a folder of "
                            "images like those the model will see")
        picked = sorted(random.Random(seed).sample(range(len(files)), _batch_count(count, len(files))))
        images = _Images([(os.fspath(files[i]), -1) for i in picked], transform)
        where = f"{len(images)} images of {folder}"
        return Int8Images(images, where, images, f"the calibration images ({where})", labelled=False)
    data = settings.get("data")
    if not data or not classes:
        raise Int8Error("the checkpoint does not record its trial's data to calibrate on; pass --calibration FOLDER "
                        "with images like those the model will see")
    fix = "pass --calibration FOLDER with images like those the model will see"
    try:
        split = load_trial_split(data, spec, classes, settings, fix=fix)
    except DataError as exc:
        raise Int8Error(f"{exc}" if fix in str(exc) else f"{exc} (or {fix})") from None
    train = dataset_samples(split.train)
    want = _batch_count(count, len(train))  # a stratified sample of a few more, cut at random to that many
    spread = stratified_sample([t for _, t in train], min(1.0, (want + len(split.classes)) / len(train)), seed)
    keep = sorted(random.Random(seed).sample(spread, min(want, len(spread))))
    check = split.val
    if len(check) > CHECK_IMAGES:
        targets = [t for _, t in dataset_samples(check)]
        check = Subset(check, stratified_sample(targets, CHECK_IMAGES / len(check), seed)[:CHECK_IMAGES])
    return Int8Images(_Images([train[i] for i in keep], transform), f"{len(keep)} training images of {data}",
                      check, f"{len(check)} validation images of {data}", labelled=True)


def _batch_count(count: int, available: int) -> int:
    """How many images to calibrate on: ``count`` of ``available``, cut to whole batches of :data:`BATCH` (all of
    them when less than one): onnxruntime's percentile and entropy calibrators fail on a last batch of another size
    ("inhomogeneous shape", onnxruntime 1.32)."""
    n = min(count, available)
    return n if n <= BATCH else n // BATCH * BATCH


def image_batches(dataset: Dataset) -> Iterable[Any]:
    """The images of a dataset of ``(image, label)`` in batches of :data:`BATCH`, as numpy arrays."""
    return (images for images, _ in _batches(dataset))


def _batches(dataset: Dataset) -> Iterable[tuple[Any, Any]]:
    from torch.utils.data import DataLoader

    for images, labels in DataLoader(dataset, batch_size=BATCH, shuffle=False):
        yield images.numpy(), labels.numpy()


def quantize_onnx(fp32: Path, out: Path, batches: Iterable[Any], input_name: str = "input",
                  method: str = CALIBRATION_METHODS[0]) -> None:
    """Write the int8 model of the fp32 ONNX model ``fp32`` to ``out`` (atomically): onnxruntime's shape
    pre-processing, then ``quantize_static`` (QDQ, int8 weights per channel, uint8 activations, their ranges set by
    ``method`` on the input ``batches``, numpy arrays: :func:`image_batches` of the calibration images)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .atomic_files import OutputError, atomic_write

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the quantizer logs every tensor whose shape inference it skipped
    try:  # and its histogram calibrators print their progress: not on the command's stdout (export --json)
        with tempfile.TemporaryDirectory(prefix="int8-") as tmp, contextlib.redirect_stdout(io.StringIO()):
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(os.fspath(fp32), os.fspath(prepared))
            atomic_write(out, lambda path: quantize_static(
                os.fspath(prepared), os.fspath(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method={"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax,
                                  "entropy": CalibrationMethod.Entropy}[method]))
    except OutputError:
        raise
    except Exception as exc:  # onnxruntime's own errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise Int8Error(f"onnxruntime could not quantise {fp32.name}: {first}") from None
    finally:
        logging.disable(previous)


@dataclass(frozen=True)
class Int8Check:
    """The int8 model against the fp32 one on the check images: ``agreement`` (0-1, same top-1 class), top-1 of
    each (percent; None without labels), and each one's batch-1 latency in onnxruntime (median ms)."""

    images: int
    images_from: str
    agreement: float
    top1_fp32: float | None
    top1_int8: float | None
    latency_ms_fp32: float
    latency_ms_int8: float
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_int8(fp32: Path, int8: Path, images: Int8Images, open_session: Callable[[Path, int], Any],
                 input_name: str = "input", output_name: str = "logits", threads: int | None = None) -> Int8Check:
    """Run both models on ``images.check`` and time each at batch 1 (:class:`Int8Check`), in onnxruntime sessions
    that ``open_session(path, threads)`` makes."""
    from .environment import usable_cores
    from .profiler import timed_runs

    threads = usable_cores() if threads is None else threads
    sessions = [open_session(path, threads) for path in (fp32, int8)]
    n = agree = 0
    correct = [0, 0]
    first = None
    for batch, labels in _batches(images.check):
        # of tied logits (int8's often tie) the first, as the trial's metrics and evaluate pick it
        tops = [s.run([output_name], {input_name: batch})[0].argmax(axis=1) for s in sessions]
        agree += int((tops[0] == tops[1]).sum())
        for i, top in enumerate(tops):
            correct[i] += int((top == labels).sum())
        n += len(batch)
        first = batch[:1] if first is None else first
    latency = [round(statistics.median(timed_runs(lambda s=session: s.run([output_name], {input_name: first}),
                                                  LATENCY_RUNS, 3)), 3) for session in sessions]
    top1 = [round(100 * c / n, 2) if images.labelled else None for c in correct]
    return Int8Check(n, images.check_from, round(agree / n, 4), top1[0], top1[1], latency[0], latency[1],
                     int(threads))


def describe(check: Int8Check) -> str:
    """One line: what the int8 model keeps of the fp32 one, and what it gains."""
    scores = (f"top-1 {check.top1_int8:.2f} % (fp32 {check.top1_fp32:.2f} %), "
              if check.top1_int8 is not None else "")
    speed = check.latency_ms_fp32 / check.latency_ms_int8 if check.latency_ms_int8 else float("nan")
    return (f"int8 check on {check.images_from}: {scores}same top-1 class as fp32 for {100 * check.agreement:.1f} %; "
            f"batch-1 latency {check.latency_ms_int8:.2f} ms (fp32 {check.latency_ms_fp32:.2f} ms, {speed:.2f}x) in "
            f"onnxruntime here, {check.threads} threads")

