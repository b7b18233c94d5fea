"""The legacy project's helper names (``accuracy``, ``AverageMeter``, ``save_checkpoint``,
``adjust_learning_rate``), for scripts written against it: thin, documented functions over the ``efficientnet``
package, which the project's own code uses directly. ``tests/test_checkpoint.py`` keeps them working.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from efficientnet.atomic_files import atomic_copy
from efficientnet.checkpoint import BEST_NAME, atomic_save
from efficientnet.metrics import topk_accuracy
from efficientnet.training import lr_at

__all__ = ["accuracy", "AverageMeter", "save_checkpoint", "adjust_learning_rate"]


def accuracy(output: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1,)) -> list[torch.Tensor]:
    """Top-k accuracy in percent for each ``k`` in ``topk`` (as in the seed; ``k`` is capped at the class count)."""
    return topk_accuracy(output, target, topk)


class AverageMeter:
    """Running average of a value (``update(val, n)``; ``val``, ``avg``, ``sum``, ``count``), as in the seed."""

    def __init__(self, name: str = "", fmt: str = ":f") -> None:
        self.name = name
        self.fmt = fmt
        self.reset()

    def reset(self) -> None:
        self.val = 0.0
        self.avg = 0.0
        self.sum = 0.0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        self.val = float(val)
        self.sum += float(val) * n
        self.count += n
        self.avg = self.sum / self.count if self.count else 0.0

    def __str__(self) -> str:
        return ("{name} {val" + self.fmt + "} ({avg" + self.fmt + "})").format(**self.__dict__)


def save_checkpoint(state: Mapping[str, Any], is_best: bool, filename: str | os.PathLike = "checkpoint.pth.tar") -> Path:
    """Save ``state`` to ``filename`` atomically; when ``is_best`` also copy it to ``model_best.pth.tar``.

    Unlike the seed, the best copy goes into ``filename``'s own directory (not the working directory), so
    concurrent trials writing to their own directories never share a file.
    """
    path = atomic_save(dict(state), filename)
    if is_best:
        atomic_copy(path, path.parent / BEST_NAME)
    return path


def adjust_learning_rate(optimizer: torch.optim.Optimizer, epoch: float, args: Any) -> float:
    """Set every param group's lr to the warm-up + cosine schedule at ``epoch`` (may be fractional); return it.

    ``args`` needs ``lr`` and ``epochs`` (``warmup_epochs`` defaults to 1). The trainer itself steps torch's
    ``SequentialLR(LinearLR, CosineAnnealingLR)`` per iteration; this is the same curve in closed form.
    """
    epochs = float(args.epochs)
    warmup = min(float(getattr(args, "warmup_epochs", 1.0)), epochs / 4)
    scale = 1000  # evaluate the per-step formula at a fine grid of "steps" per epoch
    lr = lr_at(int(epoch * scale), float(args.lr), int(epochs * scale), int(warmup * scale))
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
