"""Classification metrics of one epoch: loss, top-1/top-5 accuracy (percent) and macro precision/recall/F1."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["topk_accuracy", "EpochMetrics"]


@torch.no_grad()
def topk_accuracy(output: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1,)) -> list[torch.Tensor]:
    """Percent of samples whose target is among the ``k`` highest logits, for each ``k`` in ``topk``."""
    maxk = min(max(topk), output.shape[1])
    pred = output.topk(maxk, dim=1).indices  # [batch, maxk]
    correct = pred.eq(target.view(-1, 1))
    return [correct[:, : min(k, maxk)].any(dim=1).float().sum() * (100.0 / target.shape[0]) for k in topk]


class EpochMetrics:
    """Accumulates batches of ``(logits, targets, loss)``; :meth:`compute` gives the epoch's metrics.

    Top-5 is reported only when there are at least 5 classes. Precision, recall and F1 are macro averages from
    scikit-learn (classes never predicted count as 0, without a warning).
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.loss_sum = 0.0
        self.count = 0
        self.top1_sum = 0.0
        self.top5_sum = 0.0
        self._preds: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss: float) -> None:
        """Add one batch (``loss`` is the batch mean)."""
        n = targets.shape[0]
        logits = logits.float()
        top1, top5 = topk_accuracy(logits, targets, (1, 5))
        self.loss_sum += loss * n
        self.top1_sum += float(top1) * n
        self.top5_sum += float(top5) * n
        self.count += n
        self._preds.append(logits.argmax(1).cpu().numpy())
        self._targets.append(targets.cpu().numpy())

    @classmethod
    def merged(cls, parts: Sequence["EpochMetrics"]) -> "EpochMetrics":
        """One accumulator holding every batch of ``parts`` (e.g. the validation shards of all ranks)."""
        out = cls(parts[0].num_classes)
        for p in parts:
            out.loss_sum += p.loss_sum
            out.count += p.count
            out.top1_sum += p.top1_sum
            out.top5_sum += p.top5_sum
            out._preds += p._preds
            out._targets += p._targets
        return out

    def compute(self) -> dict[str, float]:
        """``loss``, ``top1``, ``top5`` (>= 5 classes), ``precision``, ``recall``, ``f1`` (0-1, macro)."""
        from sklearn.metrics import precision_recall_fscore_support

        if not self.count:
            return {}
        out = {"loss": self.loss_sum / self.count, "top1": self.top1_sum / self.count}
        if self.num_classes >= 5:
            out["top5"] = self.top5_sum / self.count
        preds, targets = np.concatenate(self._preds), np.concatenate(self._targets)
        p, r, f, _ = precision_recall_fscore_support(
            targets, preds, labels=np.arange(self.num_classes), average="macro", zero_division=0
        )
        out.update(precision=float(p), recall=float(r), f1=float(f))
        return out
