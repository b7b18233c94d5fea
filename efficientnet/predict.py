"""``python -m efficientnet predict IMAGE...``: the top-k classes of images, from a trial's checkpoint (its own class
names) or pretrained ImageNet weights; ``--csv`` writes every image's probabilities, ``--heatmaps`` where the model
saw its top class in each image (:mod:`efficientnet.explain`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .arguments import CLIError
from .spec import resolve_arch

if TYPE_CHECKING:
    import torch

__all__ = ["HeatmapWriter", "build", "check_folder", "check_output", "cmd_predict", "imagenet_categories",
           "predict_input", "write_figure", "write_output", "write_predictions"]


def build(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders of them (searched recursively)")
    p.add_argument("--weights", default="lite0",
                   help="a trial's checkpoint (model_best.pth.tar), an exported .onnx model (fp32 or int8, with its "
                   "sidecar), lite0, efficientnet-bN (online), URL or .pth path")
    p.add_argument("--arch", help="architecture of a weights file that does not record it (preset or spec)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--csv", metavar="FILE", help="also write a CSV: each image's path, label and probability, and "
                   "its probability of every class (one column each)")
    p.add_argument("--heatmaps", metavar="DIR", help="also draw, for each image, where the model saw its top class "
                   "(a Grad-CAM heatmap) as DIR/<image name>.png")


def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet class names (shipped with torchvision's weight metadata; no download)."""
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def cmd_predict(args: argparse.Namespace) -> int:
    """The top-k classes of each image: the checkpoint's own, or ImageNet's for pretrained weights."""
    import torch

    from .preprocess import eval_transform
    from .scan import image_files
    from .training import TrainingError, resolve_device
    from .weights import build_model, load_weights

    if args.topk < 1:
        raise CLIError(f"--topk must be at least 1, got {args.topk}")
    if args.csv:
        check_output("--csv", args.csv)
    if args.heatmaps:
        check_folder("--heatmaps", args.heatmaps)
    paths: list[str] = []
    in_folders: set[str] = set()  # an image of a folder that cannot be read is skipped, one named is an error
    for given in args.images:  # a folder stands for its image files (hidden ones left out), in name order
        if os.path.isdir(given):
            found = image_files(Path(given))
            if not found:
                raise CLIError(f"folder {given!r} holds no image files (.jpg, .png, ...)")
            paths += [str(p) for p in found]
            in_folders.update(str(p) for p in found)
        else:
            paths.append(given)
    arch = resolve_arch(args.arch) if args.arch else None
    try:
        device, warning = resolve_device(args.device)
    except TrainingError as exc:
        raise CLIError(str(exc)) from None
    if warning:
        print(warning, file=sys.stderr)
    names = None
    drawn = None
    if args.weights.lower().endswith(".onnx"):  # an exported model: run by onnxruntime, as it will be deployed
        from .export import ExportError, load_exported

        if args.heatmaps:
            raise CLIError("--heatmaps needs the PyTorch checkpoint (Grad-CAM takes gradients); pass --weights "
                           "model_best.pth.tar")
        if arch is not None:
            raise CLIError("--arch: an ONNX model's architecture is in its sidecar; leave --arch out")
        try:
            exported = load_exported(args.weights, device.type)
        except ExportError as exc:
            raise CLIError(str(exc)) from None
        spec, names, num_classes = exported.spec, exported.class_names, exported.num_classes
        run: Callable[[torch.Tensor], torch.Tensor] = exported.probabilities
    else:
        if os.path.isfile(args.weights):  # a trial's checkpoint: read as export reads it, with its class names
            from .export import ExportError, read_source

            try:
                ckpt = read_source(args.weights, arch)
            except ExportError as exc:
                raise CLIError(str(exc)) from None
            state, spec, names = ckpt.state, ckpt.spec, ckpt.class_names
        else:
            state, spec = load_weights(args.weights, weights_spec=arch)
        num_classes = state["_fc.weight"].shape[0] if "_fc.weight" in state else 1000
        model = build_model(spec, num_classes, weights=state, weights_spec=spec).eval().to(device)
        drawn = HeatmapWriter(args.heatmaps, model, spec) if args.heatmaps else None

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model(x.to(device)).softmax(-1).float().cpu()

    if names is None and num_classes == 1000:
        names = imagenet_categories()
    transform = eval_transform(spec)
    results = []
    probabilities: list[torch.Tensor] = []  # each image's, for --csv
    skipped: list[str] = []
    for start in range(0, len(paths), PREDICT_BATCH):
        batch, inputs = [], []
        for path in paths[start:start + PREDICT_BATCH]:
            try:
                inputs.append(predict_input(path, transform))
                batch.append(path)
            except CLIError as exc:
                if path not in in_folders:
                    raise
                skipped.append(str(exc))
        if not batch:
            continue
        x = torch.stack(inputs)
        probs = run(x)
        for path, p in zip(batch, probs):
            top = p.topk(min(args.topk, num_classes))
            preds = [{"class_id": int(i), "name": names[int(i)] if names else None, "probability": round(float(q), 6)}
                     for q, i in zip(top.values, top.indices)]
            results.append({"image": path, "predictions": preds})
            probabilities.append(p)
        if drawn is not None:
            drawn.write(batch, x, [r["predictions"][0] for r in results[-len(batch):]])
    if skipped:
        print(f"warning: skipped {len(skipped)} image(s) of the folder(s) that cannot be read, e.g. {skipped[0]}",
              file=sys.stderr)
    if not results:
        raise CLIError(f"none of the {len(paths)} images could be read, e.g. {skipped[0]}")
    if args.csv:
        write_predictions(args.csv, results, probabilities, names or [str(i) for i in range(num_classes)])
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(r["image"])
            for p in r["predictions"]:
                print(f"  {p['probability']:7.2%}  {p['class_id']:4d}  {p['name'] or ''}")
    if drawn is not None:
        print(f"heatmaps of {len(drawn.written)} image(s) in {args.heatmaps}", file=sys.stderr)
    return 0


class HeatmapWriter:
    """``--heatmaps DIR``: for each image, ``DIR/<its name>.png`` (``<its name>-2.png`` for a second image of that
    name), the image as the model saw it beside the Grad-CAM heatmap of its top class."""

    def __init__(self, folder: str, model, spec) -> None:
        from .preprocess import normalization

        self.folder = Path(folder)
        self.model = model
        self.norm = normalization(spec)
        self.written: set[Path] = set()
        self._layer = None  # the feature map the heatmaps come from: the same for every batch (one input size)

    def write(self, paths: Sequence[str], inputs: torch.Tensor, top: Sequence[dict]) -> None:
        """Draw a batch: its image paths, its model inputs and each image's top prediction."""
        from .explain import Panel, cam_layer, grad_cam, heatmap_figure, shown_image

        layer = self._layer = self._layer or cam_layer(self.model, inputs)
        heat = grad_cam(self.model, inputs, [t["class_id"] for t in top], layer)
        for path, image, h, t in zip(paths, inputs, heat, top):
            picture = shown_image(image, self.norm.mean, self.norm.std)
            label = t["name"] if t["name"] is not None else t["class_id"]
            figure = heatmap_figure([[Panel(picture, None, Path(path).name),
                                      Panel(picture, h, f"{label} ({t['probability']:.2f})")]],
                                    f"Grad-CAM, {layer.name}, {layer.cells} x {layer.cells}")
            out = self._free(Path(path).stem)
            write_figure("--heatmaps", os.fspath(out), figure)
            self.written.add(out)

    def _free(self, stem: str) -> Path:
        out, n = self.folder / f"{stem}.png", 1
        while out in self.written:
            n += 1
            out = self.folder / f"{stem}-{n}.png"
        return out


# images per forward pass: one launch instead of 32 on a GPU; on a 2-core CPU the model's arithmetic is the time
# either way (200 images, Lite0 at 224 px: 10.7-12.3 s one at a time, 12.0-13.2 s in batches of 32)
PREDICT_BATCH = 32


def predict_input(path: str, transform) -> torch.Tensor:
    """One image as the model's input; an image that cannot be read is one ``error:`` line naming it."""
    from PIL import Image, UnidentifiedImageError

    from .preprocess import load_image, too_large

    try:
        return transform(load_image(path))
    except (FileNotFoundError, IsADirectoryError):
        raise CLIError(f"image {path!r} does not exist") from None
    except Image.DecompressionBombError as exc:
        raise CLIError(f"image {path!r} is too large to decode safely ({too_large(exc)}); downscale it") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise CLIError(f"cannot read image {path!r} ({type(exc).__name__}): is it a JPEG/PNG file?") from None


def write_predictions(path: str, results: Sequence[dict], probabilities: Sequence[torch.Tensor],
                      classes: Sequence[str]) -> None:
    """``--csv``: a row per image (its path, its ``true`` class when the results have one, the top-1 label and
    probability, then every class's probability), written atomically."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    truth = ["true"] if results and "true" in results[0] else []
    writer.writerow(["image", *truth, "label", "probability", *classes])
    for r, p in zip(results, probabilities):
        best = r["predictions"][0]
        writer.writerow([r["image"], *(r[t] for t in truth), best["name"] if best["name"] is not None
                         else best["class_id"], best["probability"], *(f"{float(q):.6g}" for q in p)])
    text = out.getvalue()
    write_output("--csv", path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def check_folder(flag: str, path: str) -> None:
    """Refuse, before any work, an output folder that is a file or lies under one."""
    above = next((p for p in [Path(path), *Path(path).parents] if p.exists()), None)
    if above is not None and not above.is_dir():
        raise CLIError(f"cannot write {flag} {path}: {above} is a file, not a folder; give a folder path")


def check_output(flag: str, path: str) -> None:
    """Refuse, before any work, an output path that cannot be a file: one under a file, or a folder."""
    above = next((p for p in Path(path).parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise CLIError(f"cannot write {flag} {path}: {above} is a file, not a folder; give another path")
    if Path(path).is_dir():
        raise CLIError(f"cannot write {flag} {path}: it is a folder; give a file path")


def write_figure(flag: str, path: str, figure) -> None:
    """Save a matplotlib ``figure`` as the PNG file ``flag`` names (:func:`write_output`), and close it."""
    import matplotlib.pyplot as plt

    try:
        write_output(flag, path, lambda tmp: figure.savefig(tmp, format="png", bbox_inches="tight"))
    finally:
        plt.close(figure)


def write_output(flag: str, path: str, write: Callable[[Path], object]) -> None:
    """Write the file a command's ``flag`` names (``write`` fills a temporary file, moved into place atomically);
    a path that cannot be written is one :class:`CLIError` line naming the flag, and an earlier file stays."""
    from .atomic_files import OutputError, atomic_write

    check_output(flag, path)
    try:
        atomic_write(path, write)
    except OutputError as exc:
        raise CLIError(f"cannot write {flag} {path} ({exc.why}); give a file path on a writable disk") from None
