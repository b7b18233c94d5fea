"""What a trial shows while it trains: log lines (stdout and ``log.txt``), progress bars, TensorBoard scalars."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from .atomic_files import OutputError

__all__ = ["log", "setup_logging", "remove_logging", "warnings_on_stderr", "epoch_line", "progress_bar", "Scalars"]

log = logging.getLogger("efficientnet.trial")


class _LogFile(logging.FileHandler):
    """``log.txt``: a line that cannot be written (a full disk) is dropped quietly; the checkpoint write that
    follows reports the folder's problem as the run's one error line."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def setup_logging(out_dir: Path, rank: int = 0) -> list[logging.Handler]:
    """Plain lines to stdout and ``out_dir/log.txt``; returns the handlers (for :func:`remove_logging`).

    Ranks other than 0 log only errors, to stderr, tagged with their rank.
    """
    if rank:
        handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
        handlers[0].setFormatter(logging.Formatter(f"[rank {rank}] %(message)s"))
        level = logging.ERROR
    else:
        try:
            handlers = [logging.StreamHandler(sys.stdout), _LogFile(out_dir / "log.txt", encoding="utf-8")]
        except OSError as exc:
            raise OutputError.writing(out_dir / "log.txt", exc) from None
        for h in handlers:
            h.setFormatter(logging.Formatter("%(message)s"))
        level = logging.INFO
    for h in handlers:
        log.addHandler(h)
    log.setLevel(level)
    log.propagate = False
    return handlers


@contextlib.contextmanager
def warnings_on_stderr() -> Iterator[None]:
    """While a command reads a dataset as a trial would, show the trial's warnings (skipped files, rows left out,
    unused folders, ...) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)


def remove_logging(handlers: Iterable[logging.Handler]) -> None:
    """Undo :func:`setup_logging` (a trial run in-process leaves the logger as it found it)."""
    for h in handlers:
        log.removeHandler(h)
        h.close()
    log.propagate = True


def epoch_line(r: dict[str, float], epochs: int, best_score: float, best_epoch: int, metric: str = "") -> str:
    """The log line of one epoch's record; ``best`` is named by ``metric`` unless that is top-1 (``""``)."""
    parts = [f"epoch {int(r['epoch'])}/{epochs}", f"train_loss {r['train_loss']:.4f}",
             f"train_top1 {r['train_top1']:.2f}", f"val_loss {r['val_loss']:.4f}", f"val_top1 {r['val_top1']:.2f}"]
    if "val_top5" in r:
        parts.append(f"val_top5 {r['val_top5']:.2f}")
    parts.append(f"val_f1 {r['val_f1']:.4f}")
    if "val_auc" in r:
        parts.append(f"val_auc {r['val_auc']:.4f}")
    parts += [f"lr {r['lr']:.5f}", f"time {r['time_s']:.1f}s",
              f"best {metric + ' ' if metric else ''}{best_score:.2f}@{best_epoch}"]
    if "stage" in r:
        parts.append(f"stage {int(r['stage'])} {int(r['train_res'])}px")
    return " | ".join(parts)


def progress_bar(iterable: Any, desc: str, enabled: bool) -> Any:
    """A tqdm bar over ``iterable`` when ``enabled``, else ``iterable`` itself."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)


class Scalars:
    """TensorBoard scalars in ``out_dir/tensorboard``: none without the tensorboard package, and none more once
    its folder cannot be written (one line says so each time; training goes on)."""

    def __init__(self, out_dir: Path, start_epoch: int) -> None:
        self.folder = out_dir / "tensorboard"
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("no TensorBoard logs: the tensorboard package is not installed (pip install tensorboard)")
            self.writer = None
            return
        self.writer = SummaryWriter(os.fspath(self.folder), purge_step=start_epoch + 1 if start_epoch else None)

    def write(self, record: dict[str, float]) -> None:
        """One epoch's record (every key but ``epoch``, as ``train/loss``, ``val/top1``, ...)."""
        if self.writer is None:
            return
        try:
            for key, value in record.items():
                if key != "epoch":
                    self.writer.add_scalar(key.replace("_", "/", 1), value, int(record["epoch"]))
            self.writer.flush()
        except OSError as exc:
            log.warning("warning: no more TensorBoard logs: %s", OutputError.writing(self.folder, exc))
            self.close()

    def close(self) -> None:
        """Close the writer (a folder that cannot be written is reported elsewhere)."""
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.close()
            except OSError:
                pass
