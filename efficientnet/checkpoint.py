"""Trial checkpoints: one dict per file, written atomically, read back with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors, dicts, lists, numbers, strings and ``None``, so it loads without unpickling code::

    {"format": "efficientnet-nni-trial/1", "spec": spec.to_dict(), "arch": str(spec), "num_classes": 10,
     "classes": [...], "model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ...,
     "epoch": completed epochs, "eval_metric": "top1", "best_score": ..., "best_epoch": ...,
     "history": [per-epoch metrics],
     "rng": {...}, "args": {...}}

Files are written to a temporary file in the destination directory and moved into place with ``os.replace``, so a
trial killed mid-write, or a write that fails (a full disk, a read-only folder), leaves the previous checkpoint
intact; a failed write is an :class:`OutputError` naming the folder. :func:`atomic_write_json` is the project's one
writer of JSON files beside its checkpoints.

Where a run starts from is decided here too (:func:`plan_start`): the output folder's own checkpoint, ``--resume``,
or the pretrained weights, with every case that would lose or waste work refused in one line.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .atomic_files import atomic_copy, atomic_write
from .spec import ArchSpec

__all__ = [
    "CHECKPOINT_NAME",
    "BEST_NAME",
    "FORMAT",
    "CheckpointError",
    "UnreadableCheckpoint",
    "atomic_save",
    "describe_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "is_trial_checkpoint",
    "rng_state",
    "set_rng_state",
    "Start",
    "plan_start",
    "continuation_source",
    "schedule_length",
]

CHECKPOINT_NAME = "checkpoint.pth.tar"
BEST_NAME = "model_best.pth.tar"
FORMAT = "efficientnet-nni-trial/1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or not one of this trainer's; the message names the fix."""


class UnreadableCheckpoint(CheckpointError):
    """A file that ``torch.load`` cannot read: damaged (truncated, say) or not a PyTorch checkpoint."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot read checkpoint {path} ({reason}); it is damaged or not a PyTorch checkpoint: give "
                         "another path, or move it away")
        self.path, self.reason = path, reason


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, then ``os.replace`` it into place."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(state: Mapping[str, Any], directory: str | os.PathLike, is_best: bool) -> Path:
    """Write ``directory/checkpoint.pth.tar`` and, when ``is_best``, ``directory/model_best.pth.tar``."""
    directory = Path(directory)
    path = atomic_save(dict(state, format=FORMAT), directory / CHECKPOINT_NAME)
    if is_best:
        atomic_copy(path, directory / BEST_NAME)
    return path


def load_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU with a one-line :class:`CheckpointError` on failure: the
    project's one reader of checkpoints (a training script's ``argparse.Namespace`` of settings is allowed in)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        return read_torch_file(path, allowed_globals=[argparse.Namespace])
    except Exception as exc:  # truncated files, foreign pickles, text files...
        raise UnreadableCheckpoint(path, _load_reason(exc)) from None


def read_torch_file(path: str | os.PathLike, allowed_globals: Sequence[type] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, letting in ``allowed_globals`` besides tensors and plain
    containers: the project's one call of ``torch.load``, for checkpoints and weights files alike. torch's warning
    about a plain pickle's protocol is silenced, since the caller turns any failure into its own one-line error."""
    with torch.serialization.safe_globals(list(allowed_globals)), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def _load_reason(exc: BaseException) -> str:
    """A short reason for a failed ``torch.load(weights_only=True)``."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds a {found.group(1)} object, which weights-only loading refuses"
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if found:
        return f"not a PyTorch checkpoint: {found.group(1).strip()}"
    line = (text.strip().splitlines() or [type(exc).__name__])[0]
    return line if len(line) <= 120 else line[:117] + "..."


def describe_checkpoint(path: str | os.PathLike) -> str | None:
    """``epoch 3, best top-1 74.10%`` (or the checkpoint's other eval metric) for an intact checkpoint of this
    trainer at ``path``, else None."""
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError:
        return None
    if not is_trial_checkpoint(ckpt):
        return None
    from .trial_config import EVAL_METRICS

    metric = EVAL_METRICS.get(ckpt.get("eval_metric", "top1"), "score")
    best = ckpt.get("best_score", ckpt.get("best_top1", float("nan")))  # best_top1: before --eval-metric
    return f"epoch {ckpt.get('epoch')}, best {metric} {float(best):.2f}%"


def is_trial_checkpoint(obj: Any) -> bool:
    """True for a checkpoint written by this trainer (a full training state with its spec)."""
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT and isinstance(obj.get("spec"), Mapping) \
        and isinstance(obj.get("model"), Mapping)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states in ``weights_only``-loadable types."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (missing parts are left alone)."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------- where to start
@dataclass(frozen=True)
class Start:
    """Where a run's model and training state come from (see :func:`plan_start`): a full training state to
    ``restore`` (this architecture and class count), or weights to ``inherit`` (a checkpoint of another architecture
    or class count, or a plain state dict: ``kind`` says which), or neither (the pretrained ``--weights``)."""

    restore: Mapping[str, Any] | None = None
    inherit: Any = None
    path: Path | None = None
    kind: str = ""  # for inherit: "classes" (another class count), "arch" (another architecture), "state dict"


def plan_start(out_dir: Path, spec: ArchSpec, num_classes: int, *, resume: str | None = None,
               auto_resume: bool = True, legacy_names: bool = False, weights: str = "lite0",
               continue_from: Path | None = None, schedule_epochs: int | None = None,
               classes: Sequence[str] | None = None) -> Start:
    """Decide where a run in ``out_dir`` starts, in this order: the folder's own checkpoint (``auto_resume``), the
    ``resume`` file, else nothing (``weights``, named in messages). Refused, each in one line saying what to do: a
    damaged or foreign own checkpoint, one of another architecture, a ``resume`` that names nothing or a folder,
    and a start that would overwrite an earlier run's ``model_best.pth.tar``. With ``legacy_names`` (under NNI), the
    legacy ``--resume ./model_best.pth.tar`` means the trial's own file, if it has one yet. ``continue_from`` (a
    checkpoint of a shorter run of this architecture on the same ``schedule_epochs``, see
    :func:`continuation_source`) comes before ``resume``. ``classes``: the data's class names, which the folder's
    own checkpoint must have been trained on (the same count under other names is other data)."""
    own = out_dir / CHECKPOINT_NAME
    if auto_resume and own.is_file():
        try:
            ckpt = load_checkpoint(own)
        except UnreadableCheckpoint as exc:
            raise CheckpointError(f"cannot read checkpoint {own} ({exc.reason}), which this run would resume from: "
                                  f"it is damaged; {_what_is_intact(out_dir)}") from None
        if not is_trial_checkpoint(ckpt):
            raise CheckpointError(f"{own} is not a checkpoint of this trainer; move it away or pass --no-auto-resume")
        if ArchSpec.from_dict(ckpt["spec"]) != spec or ckpt.get("num_classes") != num_classes:
            raise CheckpointError(f"{out_dir} holds a checkpoint of another architecture or class count "
                                  f"({ckpt.get('arch')}, {ckpt.get('num_classes')} classes); use another "
                                  "--output-dir or pass --no-auto-resume")
        trained_on = ckpt.get("classes")
        if classes is not None and trained_on is not None and list(trained_on) != list(classes):
            gone, new = [c for c in trained_on if c not in classes], [c for c in classes if c not in trained_on]
            what = f"{', '.join(gone[:3])} in the checkpoint, {', '.join(new[:3])} in the data" if gone or new \
                else "in another order"
            raise CheckpointError(f"{out_dir} holds a checkpoint trained on other classes ({what}); use another "
                                  "--output-dir or pass --no-auto-resume")
        return Start(restore=ckpt, path=own)
    if continue_from is not None:
        return _continue(continue_from, out_dir, spec, num_classes, schedule_epochs)
    path = _resume_path(resume, out_dir, legacy_names, weights)
    start = Start()
    if path is not None:
        ckpt = load_checkpoint(path)
        if not is_trial_checkpoint(ckpt):
            start = Start(inherit=ckpt, path=path, kind="state dict")
        elif ArchSpec.from_dict(ckpt["spec"]) != spec:
            start = Start(inherit=ckpt, path=path, kind="arch")
        elif ckpt.get("num_classes") != num_classes:
            start = Start(inherit=ckpt, path=path, kind="classes")
        else:
            start = Start(restore=ckpt, path=path)
    if start.restore is None or path is None or path.parent.resolve() != out_dir.resolve():
        _keep_earlier_best(out_dir)
    return start


def schedule_length(args: Mapping[str, Any]) -> int:
    """The learning-rate schedule's length in epochs of a run with the settings ``args`` (a checkpoint's)."""
    return int(args.get("schedule_epochs") or args.get("epochs") or 0)


def continuation_source(continue_from: str, nni_output_dir: Path | None) -> Path | None:
    """The checkpoint that ``--continue-from`` names: a checkpoint file, a run's folder, or (under NNI, where the tuner
    names the lower-budget trial) the folder of that trial beside this one. None when a trial's folder is not there
    (the lower-budget trial ran on another machine); a missing file or folder given by hand is an error."""
    path = Path(continue_from).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if path.is_file():
        return path
    if nni_output_dir is not None and re.fullmatch(r"[A-Za-z0-9_-]+", continue_from):
        sibling = nni_output_dir.parent / continue_from / CHECKPOINT_NAME
        return sibling if sibling.is_file() else None
    raise CheckpointError(f"--continue-from {continue_from}: no checkpoint there; give the checkpoint file of the "
                          "shorter run to continue")


def _continue(path: Path, out_dir: Path, spec: ArchSpec, num_classes: int, schedule_epochs: int | None) -> Start:
    """Continue the shorter run whose checkpoint is ``path``: same architecture, classes and schedule length."""
    ckpt = load_checkpoint(path)
    if not is_trial_checkpoint(ckpt):
        raise CheckpointError(f"--continue-from {path} is not a checkpoint of this trainer; use --resume to inherit "
                              "its weights")
    if ArchSpec.from_dict(ckpt["spec"]) != spec or ckpt.get("num_classes") != num_classes:
        raise CheckpointError(f"--continue-from {path} is of another architecture or class count ({ckpt.get('arch')},"
                              f" {ckpt.get('num_classes')} classes); use --resume to inherit its weights")
    length = schedule_length(ckpt.get("args") or {})
    if schedule_epochs is not None and length != schedule_epochs:
        raise CheckpointError(f"--continue-from {path} was trained on a {length}-epoch learning-rate schedule and "
                              f"this run's is {schedule_epochs} epochs: continue it with --schedule-epochs {length} "
                              f"(--epochs at most {length}), or start a new schedule from its weights with --resume")
    _keep_earlier_best(out_dir)
    return Start(restore=ckpt, path=path)


def _resume_path(resume: str | None, out_dir: Path, legacy_names: bool, weights: str) -> Path | None:
    """The file ``--resume`` names; a missing path or a folder is an error (a run asked to resume must not start
    afresh)."""
    if not resume:
        return None
    path = Path(resume).expanduser()
    if path.is_file():
        return path
    if legacy_names and path.name in (BEST_NAME, CHECKPOINT_NAME) and not path.parent.name:
        own = out_dir / path.name
        return own if own.is_file() else None
    if path.is_dir():
        inside = [p for p in (path / CHECKPOINT_NAME, path / BEST_NAME) if p.is_file()]
        raise CheckpointError(f"--resume {path} is a folder: give a checkpoint file"
                              + (f", e.g. {inside[0]}" if inside else " (it holds no checkpoint of this trainer)"))
    raise CheckpointError(f"--resume {path} does not exist; check the path, or leave --resume out to start from "
                          f"--weights {weights}")


def _what_is_intact(out_dir: Path) -> str:
    """What a damaged checkpoint leaves in ``out_dir``, and how to continue from it."""
    best = out_dir / BEST_NAME
    described = describe_checkpoint(best) if best.is_file() else None
    if described is None:
        return f"no intact checkpoint is left in {out_dir}: move the damaged file away to start over"
    return (f"{best} is intact ({described}): continue from it with --resume {best} --no-auto-resume (the damaged "
            "file is replaced after the next epoch)")


def _keep_earlier_best(out_dir: Path) -> None:
    """A run that does not continue this folder's own checkpoint must not overwrite its ``model_best.pth.tar``."""
    best = out_dir / BEST_NAME
    if best.is_file():
        described = describe_checkpoint(best) or "unreadable"
        raise CheckpointError(f"{out_dir} holds {BEST_NAME} of an earlier run ({described}) and no checkpoint "
                              f"this run continues, so it would be overwritten: continue from it with --resume {best} "
                              "--no-auto-resume, or start over in another --output-dir (or move the file away)")
