"""Trial checkpoints: one dict per file, written atomically, read back with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors, dicts, lists, numbers, strings and ``None``, so it loads without unpickling code::

    {"format": "efficientnet-nni-trial/1", "spec": spec.to_dict(), "arch": str(spec), "num_classes": 10,
     "classes": [...], "model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ...,
     "epoch": completed epochs, "best_top1": ..., "best_epoch": ..., "history": [per-epoch metrics],
     "rng": {...}, "args": {...}}

Files are written to a temporary file in the destination directory and moved into place with ``os.replace``, so a
trial killed mid-write, or a write that fails (a full disk, a read-only folder), leaves the previous checkpoint
intact; a failed write is an :class:`OutputError` naming the folder.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_NAME",
    "BEST_NAME",
    "FORMAT",
    "CheckpointError",
    "UnreadableCheckpoint",
    "OutputError",
    "atomic_save",
    "atomic_copy",
    "atomic_write_json",
    "describe_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "is_trial_checkpoint",
    "rng_state",
    "set_rng_state",
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


class OutputError(RuntimeError):
    """The output folder cannot be written (full, read-only, not permitted); the message names the folder."""

    @classmethod
    def writing(cls, path: str | os.PathLike, exc: BaseException) -> "OutputError":
        """The error for a failed write of ``path`` (its folder is named, and what to do)."""
        path = Path(path)
        return cls(f"cannot write {path.name} in {path.parent} ({why_not_written(path.parent, exc)}); free space "
                   "there or pass --output-dir on another disk (what is already in the folder is intact)")


def why_not_written(directory: Path, exc: BaseException) -> str:
    """What stopped a write into ``directory``, in words: the OS error, or for torch's writer (which reports a full
    disk as ``unexpected pos ...``) what the folder says about itself."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower()
    try:
        if shutil.disk_usage(directory).free < 1 << 20:
            return os.strerror(errno.ENOSPC).lower()
        if not os.access(directory, os.W_OK):
            return os.strerror(errno.EACCES).lower()
    except OSError:
        pass
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:160]


def _temp_in(directory: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    return Path(tmp)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """``write`` a temporary file next to ``path``, flush it to disk, then ``os.replace`` it into place: a reader
    sees the old file or the new one, never half of one, and a failure leaves the old file as it was."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_in(path.parent, path.name)
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch's zip writer raises RuntimeError on a full disk
        raise OutputError.writing(path, exc) from None
    finally:
        if tmp is not None:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, then ``os.replace`` it into place."""
    return _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` to ``dst`` through a temporary file in ``dst``'s directory."""
    return _atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON through a temporary file next to ``path``."""
    text = json.dumps(obj, indent=2) + "\n"
    return _atomic_write(path, lambda tmp: tmp.write_text(text))


def save_checkpoint(state: Mapping[str, Any], directory: str | os.PathLike, is_best: bool) -> Path:
    """Write ``directory/checkpoint.pth.tar`` and, when ``is_best``, ``directory/model_best.pth.tar``."""
    directory = Path(directory)
    path = atomic_save(dict(state, format=FORMAT), directory / CHECKPOINT_NAME)
    if is_best:
        atomic_copy(path, directory / BEST_NAME)
    return path


def load_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU with a one-line :class:`CheckpointError` on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated files, foreign pickles, text files...
        raise UnreadableCheckpoint(path, (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]) from None


def describe_checkpoint(path: str | os.PathLike) -> str | None:
    """``epoch 3, best top-1 74.10%`` for an intact checkpoint of this trainer at ``path``, else None."""
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError:
        return None
    if not is_trial_checkpoint(ckpt):
        return None
    return f"epoch {ckpt.get('epoch')}, best top-1 {float(ckpt.get('best_top1', float('nan'))):.2f}%"


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
