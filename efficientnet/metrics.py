"""Classification metrics of one epoch: loss, top-1/top-5 accuracy (percent), macro precision/recall/F1, and the
macro ROC AUC."""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["topk_accuracy", "EpochMetrics", "TrainMeter", "auc_scores", "confusion_matrix", "macro_auc",
           "class_aucs", "macro_precision_recall_f1", "macro_seen", "one_vs_rest_mean", "per_class", "most_confused"]


@torch.no_grad()
def topk_accuracy(output: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1,)) -> list[torch.Tensor]:
    """Percent of samples whose target is among the ``k`` highest logits, for each ``k`` in ``topk``."""
    maxk = min(max(topk), output.shape[1])
    pred = output.topk(maxk, dim=1).indices  # [batch, maxk]
    correct = pred.eq(target.view(-1, 1))
    return [correct[:, : min(k, maxk)].any(dim=1).float().sum() * (100.0 / target.shape[0]) for k in topk]


class EpochMetrics:
    """Accumulates batches of ``(logits, targets, loss)``; :meth:`compute` gives the epoch's metrics.

    Everything stays on the logits' device until :meth:`compute` (one transfer per epoch, no host synchronisation
    per batch); targets are moved to that device. Top-5 is reported only when there are at least 5 classes.
    Precision, recall and F1 are macro averages over all ``num_classes`` from the confusion matrix, as
    scikit-learn's ``precision_recall_fscore_support(average="macro", zero_division=0)`` gives them (a class never
    predicted, or never present, counts as 0; ``tests/test_metrics.py`` checks the two agree). They are computed in
    torch because importing scikit-learn cost every trial about a second of its first epoch.
    """

    def __init__(self, num_classes: int, ranking: bool = False) -> None:
        self.num_classes = num_classes
        self.ranking = ranking  # keep each image's probabilities for ``auc`` (memory: images x classes floats)
        self.count = 0
        self._sums: torch.Tensor | None = None  # [loss * n, top-1 correct, top-5 correct] on the logits' device
        self._preds: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._probabilities: list[torch.Tensor] = []
        self._confusion: torch.Tensor | None = None  # made by confusion(), until the next update
        self._aucs: dict[int, float] | None = None  # made by class_aucs(), until the next update

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor | float) -> None:
        """Add one batch (``loss`` is the batch mean, a tensor on the logits' device or a number)."""
        targets = targets.to(logits.device, non_blocking=True)
        n = targets.shape[0]
        logits = logits.float()
        predicted = logits.argmax(dim=1)  # of tied logits the first, as numpy and scikit-learn pick (topk: any)
        right = predicted.eq(targets)
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(targets.view(-1, 1)).any(dim=1) | right
        loss = torch.as_tensor(loss, dtype=torch.float32, device=logits.device).detach()
        batch = torch.stack([loss * n, right.sum(), top5.sum()]).to(torch.float64)
        self._sums = batch if self._sums is None else self._sums + batch
        self.count += n
        self._preds.append(predicted)
        self._targets.append(targets)
        if self.ranking:
            self._probabilities.append(logits.softmax(dim=1))
        self._confusion = self._aucs = None

    def cpu(self) -> "EpochMetrics":
        """This accumulator with its tensors on the CPU (e.g. to gather it from other ranks)."""
        out = EpochMetrics(self.num_classes, self.ranking)
        out.count = self.count
        out._sums = None if self._sums is None else self._sums.cpu()
        for name in ("_preds", "_targets", "_probabilities"):
            parts = getattr(self, name)
            setattr(out, name, [torch.cat(parts).cpu()] if parts else [])
        return out

    @classmethod
    def merged(cls, parts: Sequence["EpochMetrics"]) -> "EpochMetrics":
        """One accumulator holding every batch of ``parts`` (e.g. the validation shards of all ranks), on the CPU."""
        out = cls(parts[0].num_classes, parts[0].ranking)
        for p in (part.cpu() for part in parts):
            out.count += p.count
            if p._sums is not None:
                out._sums = p._sums if out._sums is None else out._sums + p._sums
            out._preds += p._preds
            out._targets += p._targets
            out._probabilities += p._probabilities
        return out

    def compute(self) -> dict[str, float]:
        """``loss``, ``top1``, ``top5`` (>= 5 classes), ``precision``, ``recall``, ``f1`` (0-1, macro), and with
        ``ranking`` ``auc`` (0-1, :func:`macro_auc`)."""
        if not self.count:
            return {}
        loss_sum, top1_sum, top5_sum = self._sums.tolist()
        out = {"loss": loss_sum / self.count, "top1": 100.0 * top1_sum / self.count}
        if self.num_classes >= 5:
            out["top5"] = 100.0 * top5_sum / self.count
        out.update(_macro(self.confusion()))
        if self.ranking:
            out["auc"] = one_vs_rest_mean(self.class_aucs(), self.num_classes, empty=0.5)
        return out

    def probabilities(self) -> torch.Tensor:
        """Each image's class probabilities in the order the batches came (CPU; with ``ranking`` only): one
        transfer."""
        if not self._probabilities:
            return torch.zeros(0, self.num_classes)
        return torch.cat(self._probabilities).cpu()

    def class_aucs(self) -> dict[int, float]:
        """Each class's one-vs-rest ROC AUC (:func:`class_aucs`; with ``ranking`` only), made once until more
        batches come."""
        if self._aucs is None:
            self._aucs = class_aucs(self.probabilities(), torch.cat(self._targets).cpu()) if self._targets else {}
        return self._aucs

    def confusion(self) -> torch.Tensor:
        """The epoch's confusion matrix (CPU, int64): rows are the true classes, columns the predicted ones. Made
        once (one transfer) until more batches come."""
        if self._confusion is None:
            self._confusion = confusion_matrix(torch.cat(self._preds), torch.cat(self._targets), self.num_classes) \
                if self._preds else torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        return self._confusion


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts of (true, predicted) class index pairs as a CPU int64 ``[num_classes, num_classes]`` matrix, made on
    the tensors' device (one transfer)."""
    counts = torch.bincount(targets.long() * num_classes + preds.long(), minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


def _ratios(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class precision, recall and F1 of a confusion matrix; a zero denominator gives 0."""
    confusion = confusion.double()
    tp, predicted, actual = confusion.diagonal(), confusion.sum(dim=0), confusion.sum(dim=1)

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))

    return {"precision": ratio(tp, predicted), "recall": ratio(tp, actual), "f1": ratio(2 * tp, predicted + actual)}


def macro_precision_recall_f1(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Macro-averaged ``precision``, ``recall`` and ``f1`` (0-1) of predicted against true class indices over
    ``num_classes`` classes; a class whose ratio has a zero denominator counts as 0 (scikit-learn's
    ``zero_division=0``)."""
    return _macro(confusion_matrix(preds, targets, num_classes))


def _macro(confusion: torch.Tensor) -> dict[str, float]:
    return {name: float(values.mean()) for name, values in _ratios(confusion).items()}


def macro_seen(confusion: torch.Tensor) -> dict[str, float]:
    """Macro ``precision``, ``recall`` and ``f1`` (0-1) over the classes that are a true or a predicted class of
    ``confusion`` (scikit-learn's default ``labels``): a class a test set lacks and the model never predicts does
    not count as 0, as it does in :func:`macro_precision_recall_f1`."""
    seen = (confusion.sum(dim=0) + confusion.sum(dim=1)) > 0
    return {name: float(values[seen].mean()) if bool(seen.any()) else 0.0
            for name, values in _ratios(confusion).items()}


def auc_scores(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """The ROC AUC of ``scores`` for the ``positive`` (bool) images against the others: the chance that a positive
    image scores above a negative one, ties counting half (Mann-Whitney's U over the two counts; scikit-learn's
    ``roc_auc_score`` gives the same, ``tests/test_metrics.py`` checks)."""
    _, inverse, counts = torch.unique(scores.double(), return_inverse=True, return_counts=True)
    ranks = counts.cumsum(0).double() - (counts.double() - 1) / 2  # average rank of each distinct value, from 1
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    u = float(ranks[inverse][positive].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def class_aucs(probabilities: torch.Tensor, targets: torch.Tensor) -> dict[int, float]:
    """Each class's one-vs-rest ROC AUC (:func:`auc_scores` of its probability), by class index, for the classes
    with images of their own and others beside them."""
    return {c: auc_scores(probabilities[:, c], targets == c) for c in torch.unique(targets).tolist()
            if 0 < int((targets == c).sum()) < targets.numel()}


def one_vs_rest_mean(scores: dict[int, float], num_classes: int, empty: float | None = None) -> float | None:
    """The macro score of per-class one-vs-rest ``scores``, as scikit-learn averages them: their mean, or for two
    classes the second class's (its binary score); ``empty`` when there is none."""
    if not scores:
        return empty
    return scores[1] if num_classes == 2 else sum(scores.values()) / len(scores)


def macro_auc(probabilities: torch.Tensor, targets: torch.Tensor) -> float:
    """Macro one-vs-rest ROC AUC, as scikit-learn's ``roc_auc_score`` gives it: the mean of :func:`class_aucs`; for
    two classes, the second class's AUC. 0.5 when no class can be ranked."""
    return one_vs_rest_mean(class_aucs(probabilities, targets), probabilities.shape[1], empty=0.5)


def per_class(confusion: torch.Tensor, classes: Sequence[str]) -> list[dict[str, float | int | str]]:
    """One row per class, as scikit-learn's ``classification_report`` gives them: ``class``, ``precision``,
    ``recall``, ``f1`` (0-1) and ``support`` (its validation images)."""
    ratios = _ratios(confusion)
    support = confusion.sum(dim=1).tolist()
    return [{"class": name, **{k: round(float(v[i]), 4) for k, v in ratios.items()}, "support": int(support[i])}
            for i, name in enumerate(classes)]


def most_confused(confusion: torch.Tensor, classes: Sequence[str], k: int = 10) -> list[dict[str, int | str]]:
    """The ``k`` largest mistakes of a confusion matrix (true x predicted), as fastai's ``most_confused``: ``true``,
    ``predicted`` and ``count`` (validation images), most first, ties in class order; no empty cell."""
    off = confusion.clone().long()
    off.fill_diagonal_(0)
    counts, order = torch.sort(off.flatten(), descending=True, stable=True)
    n = off.shape[1]
    return [{"true": classes[i // n], "predicted": classes[i % n], "count": count}
            for count, i in zip(counts[:k].tolist(), order[:k].tolist()) if count > 0]


class TrainMeter:
    """The training loss and top-1 of an epoch, summed on the device; :meth:`read` transfers them once."""

    def __init__(self) -> None:
        self.count = 0
        self._sums: torch.Tensor | None = None  # [loss * n, top-1 correct]

    @torch.no_grad()
    def update(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one step: its mean ``loss``, ``logits`` and (hard) ``targets``."""
        targets = targets.to(logits.device, non_blocking=True)
        n = targets.shape[0]
        correct = (logits.argmax(dim=1) == targets).sum()
        batch = torch.stack([loss.detach().float() * n, correct.float()]).to(torch.float64)
        self._sums = batch if self._sums is None else self._sums + batch
        self.count += n

    def totals(self) -> list[float]:
        """``[loss sum, top-1 correct, count]`` (a host synchronisation)."""
        sums = self._sums.tolist() if self._sums is not None else [0.0, 0.0]
        return [*sums, float(self.count)]

    def read(self) -> tuple[float, float]:
        """``(mean loss, top-1 %)`` so far (a host synchronisation)."""
        loss_sum, correct, n = self.totals()
        return (loss_sum / n, 100.0 * correct / n) if n else (0.0, 0.0)
