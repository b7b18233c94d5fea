"""Epoch metrics against scikit-learn: macro precision, recall and F1 from the confusion matrix, top-k, loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from efficientnet.metrics import EpochMetrics, confusion_matrix, macro_auc, macro_precision_recall_f1, macro_seen


def sklearn_macro(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict[str, float]:
    p, r, f, _ = precision_recall_fscore_support(targets.numpy(), preds.numpy(), labels=np.arange(num_classes),
                                                 average="macro", zero_division=0)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


@pytest.mark.parametrize("seed", range(6))
def test_macro_scores_match_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    num_classes = [2, 3, 10, 10, 37, 100][seed]
    n = [5, 40, 200, 7, 500, 300][seed]
    targets = torch.randint(0, num_classes, (n,), generator=g)
    # a mix of right and wrong answers; with few samples some classes are never present or never predicted
    preds = torch.where(torch.rand(n, generator=g) < 0.6, targets, torch.randint(0, num_classes, (n,), generator=g))
    ours, theirs = macro_precision_recall_f1(preds, targets, num_classes), sklearn_macro(preds, targets, num_classes)
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_edge_cases_match_sklearn():
    # one class only predicted, one never predicted nor present, all wrong, all right
    cases = [([0, 0, 0, 0], [0, 1, 2, 1], 4), ([1, 2, 0], [0, 1, 2], 3), ([2, 2, 1], [2, 2, 1], 3), ([0], [0], 1)]
    for preds, targets, num_classes in cases:
        preds, targets = torch.tensor(preds), torch.tensor(targets)
        assert macro_precision_recall_f1(preds, targets, num_classes) == pytest.approx(
            sklearn_macro(preds, targets, num_classes), abs=1e-12)


def test_epoch_metrics_over_batches_and_ranks():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(90, 10, generator=g), torch.randint(0, 10, (90,), generator=g)
    whole, parts = EpochMetrics(10), [EpochMetrics(10), EpochMetrics(10)]
    for i, start in enumerate(range(0, 90, 30)):
        batch = slice(start, start + 30)
        loss = torch.nn.functional.cross_entropy(logits[batch], targets[batch])
        whole.update(logits[batch], targets[batch], loss)
        parts[i % 2].update(logits[batch], targets[batch], loss)
    out = whole.compute()
    assert EpochMetrics.merged(parts).compute() == pytest.approx(out)
    top = logits.topk(5, dim=1).indices
    assert out["top1"] == pytest.approx(100.0 * (top[:, 0] == targets).float().mean().item())
    assert out["top5"] == pytest.approx(100.0 * (top == targets[:, None]).any(dim=1).float().mean().item())
    assert out["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item(), rel=1e-6)
    assert {k: out[k] for k in ("precision", "recall", "f1")} == pytest.approx(
        sklearn_macro(top[:, 0], targets, 10), abs=1e-12)
    # with ranking (--eval-metric auc): the macro ROC AUC, the same over the ranks' shares
    whole, parts = EpochMetrics(10, ranking=True), [EpochMetrics(10, ranking=True), EpochMetrics(10, ranking=True)]
    for i, start in enumerate(range(0, 90, 30)):
        batch = slice(start, start + 30)
        whole.update(logits[batch], targets[batch], 0.0)
        parts[i % 2].update(logits[batch], targets[batch], 0.0)
    auc = roc_auc_score(targets.numpy(), logits.softmax(1).numpy(), multi_class="ovr", average="macro")
    assert whole.compute()["auc"] == pytest.approx(auc) and EpochMetrics.merged(parts).compute()["auc"] == pytest.approx(auc)


@pytest.mark.parametrize("seed", range(8))
def test_roc_auc_matches_sklearn_with_ties_and_absent_classes(seed):
    g = torch.Generator().manual_seed(seed)
    n, num_classes = [6, 40, 200, 333, 50, 90, 17, 120][seed], [2, 3, 5, 10, 2, 4, 6, 12][seed]
    probabilities = torch.randn(n, num_classes, generator=g).round(decimals=1).softmax(1)  # many ties
    targets = torch.randint(0, num_classes - (seed % 2), (n,), generator=g)  # odd seeds: the last class absent
    present = [c for c in range(num_classes) if 0 < int((targets == c).sum()) < n]
    if num_classes == 2:  # scikit-learn's binary score: the second class's
        want = roc_auc_score(targets.numpy(), probabilities[:, 1].numpy()) if len(present) == 2 else 0.5
    else:
        want = np.mean([roc_auc_score((targets == c).numpy(), probabilities[:, c].numpy()) for c in present])
    assert macro_auc(probabilities, targets) == pytest.approx(want, abs=1e-12)
    assert macro_auc(probabilities, torch.zeros(n, dtype=torch.long)) == 0.5  # one class only: no ranking


@pytest.mark.parametrize("seed", range(3))
def test_per_class_rows_match_sklearn(seed):
    """``per_class`` (result.json's rows) against scikit-learn's per-class scores, on an epoch's confusion matrix."""
    from sklearn.metrics import confusion_matrix as sk_confusion

    from efficientnet.metrics import per_class

    g = torch.Generator().manual_seed(seed)
    num_classes, n = [4, 11, 30][seed], [60, 200, 25][seed]
    targets = torch.randint(0, num_classes, (n,), generator=g)
    preds = torch.where(torch.rand(n, generator=g) < 0.5, targets, torch.randint(0, num_classes, (n,), generator=g))
    metrics = EpochMetrics(num_classes)
    logits = torch.nn.functional.one_hot(preds, num_classes).float()
    metrics.update(logits, targets, 0.0)
    confusion = metrics.confusion()
    assert confusion.tolist() == sk_confusion(targets.numpy(), preds.numpy(), labels=np.arange(num_classes)).tolist()
    rows = per_class(confusion, [f"c{i}" for i in range(num_classes)])
    p, r, f, support = precision_recall_fscore_support(targets.numpy(), preds.numpy(), labels=np.arange(num_classes),
                                                       average=None, zero_division=0)
    assert [row["class"] for row in rows] == [f"c{i}" for i in range(num_classes)]
    assert [row["support"] for row in rows] == support.tolist()
    for key, theirs in (("precision", p), ("recall", r), ("f1", f)):
        assert [row[key] for row in rows] == pytest.approx(theirs.tolist(), abs=1e-4)  # rounded to 4 places


def test_most_confused_lists_the_largest_mistakes_first():
    from efficientnet.metrics import most_confused

    confusion = torch.tensor([[9, 3, 0], [1, 7, 3], [0, 5, 2]])  # true x predicted
    assert most_confused(confusion, ["cat", "dog", "fox"]) == [
        {"true": "fox", "predicted": "dog", "count": 5},
        {"true": "cat", "predicted": "dog", "count": 3},  # a tie: in class order
        {"true": "dog", "predicted": "fox", "count": 3},
        {"true": "dog", "predicted": "cat", "count": 1}]
    assert most_confused(confusion, ["cat", "dog", "fox"], k=1) == [{"true": "fox", "predicted": "dog", "count": 5}]
    assert most_confused(torch.eye(3, dtype=torch.long) * 4, ["cat", "dog", "fox"]) == []


@pytest.mark.parametrize("seed", range(5))
def test_macro_over_the_classes_seen_matches_sklearns_default_labels(seed):
    """A test set without some of the model's classes: those the model never predicts do not count as 0, as
    scikit-learn's default ``labels`` (the classes of the truth and the predictions) leaves them out."""
    rng = np.random.default_rng(seed)
    targets = torch.from_numpy(rng.choice([1, 4, 5], size=60))
    preds = torch.where(torch.from_numpy(rng.random(60) < 0.7), targets, torch.from_numpy(rng.choice([1, 4, 7], 60)))
    ours = macro_seen(confusion_matrix(preds, targets, 10))
    p, r, f, _ = precision_recall_fscore_support(targets.numpy(), preds.numpy(), average="macro", zero_division=0)
    assert ours == pytest.approx({"precision": p, "recall": r, "f1": f})
    assert ours["recall"] > macro_precision_recall_f1(preds, targets, 10)["recall"]  # all 10 classes: absent ones 0


def test_tied_logits_predict_the_first_class_as_numpy_does():
    """An int8 model's logits often tie (they come in 256 steps): of tied maxima the first class is the prediction,
    as numpy's and torch's argmax pick it, whatever the batch, so evaluate and the int8 export check agree on an
    ONNX model's top-1. Top-5 still counts a target among the first five."""
    rng = np.random.default_rng(0)
    logits = np.round(rng.normal(size=(512, 10)) * 2) / 2  # coarse steps: many rows have tied maxima
    targets = rng.integers(0, 10, size=512)
    assert sum((row == row.max()).sum() > 1 for row in logits) > 50
    for batch in (1, 7, 512):
        metrics = EpochMetrics(10)
        for i in range(0, 512, batch):
            chunk = torch.tensor(logits[i:i + batch], dtype=torch.float32)
            metrics.update(chunk, torch.tensor(targets[i:i + batch]), 0.0)
        got = metrics.compute()
        assert got["top1"] == pytest.approx(100 * (logits.argmax(axis=1) == targets).mean())
        fifth = np.sort(logits, axis=1)[:, -5]  # a target above the fifth-largest logit is in any top 5, one
        own = logits[np.arange(512), targets]  # below it in none; one tied with it may be left out
        assert 100 * (own > fifth).mean() <= got["top5"] <= 100 * (own >= fifth).mean()
        assert metrics.confusion().tolist() == confusion_matrix(
            torch.tensor(logits.argmax(axis=1)), torch.tensor(targets), 10).tolist()
