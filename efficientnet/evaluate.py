"""``python -m efficientnet evaluate CHECKPOINT DATA``: a trained model's scores on held-out labelled images.

The search ranks architectures by their validation score, which the search itself has looked at many times; a test
set that no trial has seen says what the chosen model will do. ``DATA`` is a dataset folder with a ``test/``
folder, a folder of class folders, or a label CSV (its ``split`` column's test rows, or every row of a table
without one). The images are read and checked as a trial reads its validation images, with the model's own
evaluation transform, and scored with the trial's metrics (top-1, top-5, macro precision, recall and F1, each
class's row, the largest mistakes) and with what the probabilities say: ROC AUC and average precision, and how well
they are calibrated, and the images it was surest of and wrong about. ``--plot`` draws the confusion matrix.
``--split val`` scores the trial's own validation images instead, split again as the trial split them, to look at
its mistakes. ``--heatmaps`` draws where the model looked in the images it was surest of and wrong about
(:mod:`efficientnet.explain`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .arguments import CLIError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["Evaluation", "Scored", "build", "calibration_error", "cmd_evaluate", "confusion_figure",
           "evaluate_checkpoint", "mistakes_figure", "ranking_metrics", "summary"]

MAX_CLASS_ROWS = 30  # classes printed; --json gives every one
MAX_PLOT_CLASSES = 30  # classes drawn by --plot; beyond, those of the largest mistakes


@dataclass(frozen=True)
class Evaluation:
    """A checkpoint's scores on a test set. ``metrics``: ``loss``, ``top1``, ``top5`` (5 or more classes; percent),
    ``precision``, ``recall`` and ``f1`` (0-1, macro over the classes the test set has or the model predicted, as
    scikit-learn's defaults give them), ``auc`` and ``average_precision`` (:func:`ranking_metrics`) and
    ``calibration_error`` (:func:`calibration_error`); ``per_class`` adds each class's ``auc`` and ``ap``;
    ``most_wrong``: :func:`most_wrong`; ``validation``: the checkpoint's own best validation record."""

    checkpoint: str
    data: str
    split: str  # "test", or "val": the trial's own validation images
    layout: str
    arch: str
    images: int
    classes: list[str]
    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    most_confused: list[dict[str, Any]]
    most_wrong: list[dict[str, Any]]
    confusion: list[list[int]]
    skipped: int
    seconds: float
    validation: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Scored:
    """What :func:`evaluate_checkpoint` gives: the :class:`Evaluation`, each image's ``(path, true class index)``,
    each image's class probabilities (a CPU tensor, in the same order) and the model scored (eval mode, on its
    device)."""

    evaluation: Evaluation
    samples: list[tuple[str, int]]
    probabilities: torch.Tensor
    model: nn.Module | None  # None for an exported ONNX model


def evaluate_checkpoint(checkpoint: str, data: str | None, *, split: str = "test", label_column: str | None = None,
                        batch_size: int = 64, device: str = "auto", workers: int | None = None, amp: str = "auto",
                        arch: str | None = None) -> Scored:
    """Score ``checkpoint`` (a trial's ``model_best.pth.tar``, or weights with ``arch``) on the test images of
    ``data``, or with ``split="val"`` on the validation images its trial scored (of ``data``, default the trial's
    ``--data``). Problems the user can fix raise :class:`CLIError` (one line)."""
    from torch import nn
    from torch.utils.data import DataLoader

    from .data import DataError, default_workers, load_test_set, load_validation_set
    from .datacache import dataset_samples
    from .export import ExportError, LoadedCheckpoint, load_exported, model_for_export, read_source
    from .metrics import EpochMetrics, macro_seen, most_confused, per_class
    from .predict import imagenet_categories
    from .spec import resolve_arch
    from .training import TrainingError, amp_dtype, evaluate, prepare_model, resolve_device
    from .trial_log import progress_bar

    started = time.perf_counter()
    try:
        dev, warning = resolve_device(device)
    except TrainingError as exc:
        raise CLIError(str(exc)) from None
    exported = None
    try:
        if checkpoint.lower().endswith(".onnx"):  # an exported model (fp32 or int8), run by onnxruntime
            if split == "val" or arch:
                raise CLIError(f"{'--split val' if split == 'val' else '--arch'} needs the checkpoint: an ONNX model "
                               "records neither its trial's data nor another architecture; pass DATA, or the "
                               ".pth.tar")
            exported = load_exported(checkpoint, dev.type)
            ckpt = LoadedCheckpoint({}, exported.spec, exported.num_classes, exported.class_names, exported.source)
        else:
            ckpt = read_source(checkpoint, resolve_arch(arch) if arch else None)
    except ExportError as exc:
        raise CLIError(str(exc)) from None
    names = ckpt.class_names or (imagenet_categories() if ckpt.num_classes == 1000 else None)
    if names is None:
        raise CLIError(f"checkpoint {checkpoint!r} records no class names, so its outputs cannot be matched to the "
                       "test labels; evaluate a trial's model_best.pth.tar")
    if split == "val":
        data = data or ckpt.settings.get("data")
        if not data:
            raise CLIError(f"checkpoint {checkpoint!r} does not record the trial's dataset; pass it as DATA")
    elif not data:
        raise CLIError("pass DATA, the held-out images to score (or --split val for the trial's own validation "
                       "images)")
    try:
        if split == "val":
            test = load_validation_set(data, ckpt.spec, names, {**ckpt.settings, **(
                {"label_column": label_column} if label_column else {})})
        else:
            test = load_test_set(data, ckpt.spec, names,
                                 label_column=label_column or ckpt.settings.get("label_column"))
    except DataError as exc:
        raise CLIError(str(exc)) from None
    if warning:
        print(warning, file=sys.stderr)
    workers = default_workers(dev) if workers is None else workers
    loader = DataLoader(test.dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=dev.type == "cuda" and exported is None)

    batches = progress_bar(loader, "evaluate", sys.stderr.isatty())  # a bar by hand on a terminal, none in a pipe
    model = None
    if exported is not None:  # the same metrics from onnxruntime's logits
        scores = EpochMetrics(len(names), ranking=True)
        for images, targets in batches:
            logits = exported.logits(images)
            scores.update(logits, targets, nn.functional.cross_entropy(logits, targets))
    else:
        model = prepare_model(model_for_export(ckpt.spec, ckpt.num_classes, ckpt.state), dev, bn_momentum=None)
        scores = evaluate(model, batches, nn.CrossEntropyLoss(), EpochMetrics(len(names), ranking=True),
                          dtype=amp_dtype(dev, amp))  # the trial's metrics, each image's probabilities on the device
    samples = dataset_samples(test.dataset)
    probabilities = scores.probabilities()
    targets = [target for _, target in samples]
    confusion = scores.confusion()
    ranking, by_class = ranking_metrics(probabilities.numpy(), targets, scores.class_aucs())
    trial_metrics = {k: v for k, v in scores.compute().items() if k != "auc"}  # ranking's: none when no class ranks
    metrics = {**trial_metrics, **macro_seen(confusion), **ranking,
               "calibration_error": calibration_error(probabilities.numpy(), targets)}
    rows = [{**row, **by_class.get(i, {})} for i, row in enumerate(per_class(confusion, names))]
    validation = {k: ckpt.source[k] for k in ("eval_metric", "best_score", "best_epoch") if k in ckpt.source}
    result = Evaluation(checkpoint, data, split, test.layout, str(ckpt.spec), scores.count, list(names),
                        {k: round(v, 6) for k, v in metrics.items()}, rows, most_confused(confusion, names),
                        most_wrong(samples, probabilities, names), confusion.tolist(), test.corrupt,
                        round(time.perf_counter() - started, 2), validation)
    return Scored(result, samples, probabilities, model)


def most_wrong(samples, probabilities, classes, k: int = 10) -> list[dict[str, Any]]:
    """The ``k`` wrong answers the model was surest of (fastai's top losses): the images whose true class had the
    lowest probability among those predicted wrong, with ``image``, ``true``, ``predicted``, ``probability`` (of the
    prediction) and ``true_probability``."""
    import torch

    targets = torch.tensor([target for _, target in samples])
    truth = probabilities[torch.arange(len(targets)), targets]
    predicted = probabilities.argmax(dim=1)
    wrong = (predicted != targets).nonzero().flatten()
    order = wrong[truth[wrong].argsort(stable=True)][:k].tolist()
    return [{"image": samples[i][0], "true": classes[int(targets[i])], "predicted": classes[int(predicted[i])],
             "probability": round(float(probabilities[i, predicted[i]]), 4),
             "true_probability": round(float(truth[i]), 4)} for i in order]


def ranking_metrics(probabilities, targets, aucs: dict[int, float] | None = None
                    ) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """How well each class's probability ranks its images above the others: the ROC AUC of each class against the
    rest (``aucs``, else :func:`~efficientnet.metrics.class_aucs`: the trial's) and scikit-learn's average
    precision, for the classes with test images and other images beside them; and their means, ``auc`` and
    ``average_precision`` (:func:`~efficientnet.metrics.one_vs_rest_mean`: for two classes, the second class's).
    Returns the means (none without such a class) and each class's ``auc``/``ap`` by index."""
    import numpy as np
    import torch
    from sklearn.metrics import average_precision_score

    from .metrics import class_aucs, one_vs_rest_mean

    y = np.asarray(targets)
    if aucs is None:
        aucs = class_aucs(torch.as_tensor(probabilities), torch.as_tensor(y))
    if not aucs:
        return {}, {}
    aps = {c: float(average_precision_score(y == c, probabilities[:, c])) for c in aucs}
    n = probabilities.shape[1]
    return ({"auc": one_vs_rest_mean(aucs, n), "average_precision": one_vs_rest_mean(aps, n)},
            {c: {"auc": round(float(aucs[c]), 4), "ap": round(aps[c], 4)} for c in aucs})


def calibration_error(probabilities, targets, bins: int = 15) -> float:
    """Expected calibration error (Guo et al., 2017): the images binned by their top-1 probability into ``bins``
    equal-width bins, and the gap between each bin's accuracy and its mean probability, weighted by its images.
    0 is a model whose 80 %-sure answers are right 80 % of the time."""
    import numpy as np

    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(targets)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gap = 0.0
    for b in np.unique(which):
        inside = which == b
        gap += abs(correct[inside].mean() - confidence[inside].mean()) * inside.sum()
    return float(gap / len(confidence))


def build(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a trial's model_best.pth.tar (or checkpoint.pth.tar), or "
                   "an exported .onnx model (fp32 or int8, with its sidecar), run by onnxruntime")
    p.add_argument("data", metavar="DATA", nargs="?", help="held-out labelled images: a dataset folder with test/, a "
                   "folder of class folders, or a label CSV (its test rows, or every row when it has no split column)")
    p.add_argument("--split", default="test", choices=("test", "val"), help="val: score the trial's own validation "
                   "images instead (DATA defaults to the trial's --data, split as the trial split it), to see its "
                   "mistakes (default %(default)s)")
    p.add_argument("--label-column", help="a label CSV's label column (default: the trial's, else found by name)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, help="image-loading processes (default: as a trial's: none on the CPU)")
    p.add_argument("--amp", default="auto", choices=("auto", "off", "bf16", "fp16"),
                   help="autocast, as the trial's --amp (default %(default)s: bf16/fp16 on CUDA, off on the CPU)")
    p.add_argument("--arch", help="architecture of a weights file that does not record it (preset or spec)")
    p.add_argument("--csv", metavar="FILE", help="also write a CSV: each image's path, true class, predicted class "
                   "and probability, and its probability of every class")
    p.add_argument("--plot", metavar="FILE", help="also draw the confusion matrix (rows: true classes, normalised to "
                   "each class's images) as a PNG")
    p.add_argument("--heatmaps", metavar="FILE", help="also draw, as a PNG, the images the model was surest of and "
                   "wrong about, with where it saw the predicted and the true class (Grad-CAM heatmaps)")
    p.add_argument("--json", action="store_true", help="print JSON")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Print the checkpoint's scores on the test images (and write ``--csv``, ``--plot``, ``--heatmaps``)."""
    from .predict import check_output, write_figure, write_predictions
    from .trial_log import warnings_on_stderr

    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.heatmaps and args.checkpoint.lower().endswith(".onnx"):
        raise CLIError("--heatmaps needs the PyTorch checkpoint (Grad-CAM takes gradients); pass the .pth.tar")
    for flag, path in (("--csv", args.csv), ("--plot", args.plot), ("--heatmaps", args.heatmaps)):
        if path:
            check_output(flag, path)  # before the work, not after it
    if args.workers is not None and args.workers < 0:
        raise CLIError(f"--workers must be 0 or more, got {args.workers}")
    with warnings_on_stderr():  # the data's warnings: skipped files, rows left out, ...
        scored = evaluate_checkpoint(
            args.checkpoint, args.data, split=args.split, label_column=args.label_column, batch_size=args.batch_size,
            device=args.device, workers=args.workers, amp=args.amp, arch=args.arch)
    result = scored.evaluation
    if args.csv:
        rows = []
        for (path, target), p in zip(scored.samples, scored.probabilities):
            best = int(p.argmax())
            rows.append({"image": path, "true": result.classes[target], "predictions": [
                {"class_id": best, "name": result.classes[best], "probability": round(float(p[best]), 6)}]})
        write_predictions(args.csv, rows, scored.probabilities, result.classes)
    if args.plot:
        write_figure("--plot", args.plot, confusion_figure(result))
    if args.heatmaps:
        if result.most_wrong:
            write_figure("--heatmaps", args.heatmaps, mistakes_figure(scored))
        else:
            print(f"warning: every image was classified right, so there is no mistake to draw; {args.heatmaps} was "
                  "not written", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print("\n".join(summary(result)))
    return 0


def mistakes_figure(scored: Scored):
    """The images the model was surest of and wrong about (:func:`most_wrong`), a row each, as fastai's
    ``plot_top_losses(heatmap=True)``: the image as the model saw it, then the Grad-CAM heatmap
    (:mod:`efficientnet.explain`) of the class it predicted and that of the true class."""
    import torch

    from .explain import Panel, cam_layer, grad_cam, heatmap_figure, shown_image
    from .predict import predict_input
    from .preprocess import eval_transform, normalization

    result, model = scored.evaluation, scored.model
    index = {c: i for i, c in enumerate(result.classes)}
    wrong = result.most_wrong
    norm, transform = normalization(model.spec), eval_transform(model.spec)
    images = torch.stack([predict_input(w["image"], transform) for w in wrong])
    layer = cam_layer(model, images)
    heat = grad_cam(model, torch.cat([images, images]), [index[w["predicted"]] for w in wrong]
                    + [index[w["true"]] for w in wrong], layer)  # the predicted classes', then the true ones'
    rows = []
    for i, (w, image) in enumerate(zip(wrong, images)):
        picture = shown_image(image, norm.mean, norm.std)
        rows.append([Panel(picture, None, _short(w["image"])),
                     Panel(picture, heat[i], f"predicted {w['predicted']} ({w['probability']:.2f})"),
                     Panel(picture, heat[len(wrong) + i], f"true {w['true']} ({w['true_probability']:.2f})")])
    return heatmap_figure(rows, f"the {len(rows)} images it was surest of and wrong about: where it saw each class "
                                f"(Grad-CAM, {layer.name}, {layer.cells} x {layer.cells})")


def _short(path: str, width: int = 40) -> str:
    """A path cut to its last ``width`` characters, for a panel's title."""
    return path if len(path) <= width else "..." + path[-(width - 3):]


def confusion_figure(result: Evaluation):
    """The confusion matrix as a matplotlib figure (scikit-learn's ``ConfusionMatrixDisplay``): rows are the true
    classes, each normalised to its test images (so the diagonal is each class's recall), over the classes tested or
    predicted; with more than :data:`MAX_PLOT_CLASSES` of them, over the classes of the largest mistakes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    matrix = np.array(result.confusion, dtype=float)
    keep = [i for i in range(len(result.classes)) if matrix[i].sum() or matrix[:, i].sum()]
    title = f"{result.images} test images"
    if len(keep) > MAX_PLOT_CLASSES:
        index = {c: i for i, c in enumerate(result.classes)}
        keep = sorted({index[m[k]] for m in result.most_confused for k in ("true", "predicted")})
        title += f": the {len(keep)} classes of the {len(result.most_confused)} largest mistakes"
    sub = matrix[np.ix_(keep, keep)]
    rows = sub.sum(axis=1, keepdims=True)
    recall = np.divide(sub, rows, out=np.zeros_like(sub), where=rows > 0)
    side = min(24.0, max(5.0, 0.45 * len(keep) + 2.5))
    fig, ax = plt.subplots(figsize=(side, side), dpi=100)
    ConfusionMatrixDisplay(recall, display_labels=[result.classes[i] for i in keep]).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation="vertical", values_format=".2f",
        include_values=len(keep) <= 20)
    ax.set_title(f"{title} (rows: true class, normalised)")
    return fig


def summary(result: Evaluation) -> list[str]:
    """The text report: the scores, the checkpoint's validation score beside them, each class, the mistakes."""
    m = result.metrics
    lines = [f"evaluate {result.checkpoint} on {result.data} ({result.layout}): {result.images} images, "
             f"{len(result.classes)} classes, {result.seconds:.1f} s",
             f"{result.split} top-1 {m['top1']:.2f} %" + (f", top-5 {m['top5']:.2f} %" if "top5" in m else "")
             + f", macro F1 {m['f1']:.3f} (precision {m['precision']:.3f}, recall {m['recall']:.3f}), "
             f"loss {m['loss']:.4f}"]
    if "auc" in m:
        lines.append(f"ROC AUC {m['auc']:.3f}, average precision {m['average_precision']:.3f} (each class against the "
                     f"rest, macro), calibration error {m['calibration_error']:.3f} (ECE, 15 bins)")
    val = result.validation
    if "best_score" in val:  # in percent, F1, recall and AUC too
        from .trial_config import EVAL_METRICS

        metric = val.get("eval_metric", "top1")
        score = f"{val['best_score']:.2f} %" if metric == "top1" else f"{val['best_score'] / 100:.3f}"
        lines.append(f"the checkpoint's best validation {EVAL_METRICS.get(metric, metric)}: {score}"
                     + (f" (epoch {val['best_epoch']})" if "best_epoch" in val else ""))
    rows = [r for r in result.per_class if r["support"] or r["precision"]]  # classes tested or predicted
    note = ""
    if len(rows) > MAX_CLASS_ROWS:
        note = f" (the {MAX_CLASS_ROWS} lowest F1 of {len(rows)}; --json gives all)"
        rows = sorted(rows, key=lambda r: r["f1"])[:MAX_CLASS_ROWS]
    width = max(5, *(len(r["class"]) for r in rows))
    lines += ["", f"  {'class':<{width}}  precision  recall     f1    auc  images{note}"]
    lines += [f"  {r['class']:<{width}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  "
              + (f"{r['auc']:5.3f}" if "auc" in r else "    -") + f"  {r['support']:6d}" for r in rows]
    if result.most_confused:
        lines += ["", "most confused (true -> predicted: images):"]
        lines += [f"  {c['true']} -> {c['predicted']}: {c['count']}" for c in result.most_confused]
    if result.most_wrong:
        lines += ["", "most wrong (sure of a wrong class; true -> predicted, probabilities):"]
        lines += [f"  {w['image']}: {w['true']} -> {w['predicted']} ({w['true_probability']:.3f} -> "
                  f"{w['probability']:.3f})" for w in result.most_wrong]
    return lines
