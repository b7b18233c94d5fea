"""Command line: ``python -m efficientnet COMMAND ...``, for the commands listed below.

Each subcommand is an argument builder and one function ``cmd_<name>(args) -> int``, listed in one table
(:func:`_commands`: ``profile``, ``latency-table``, ``data`` and ``export`` here, ``predict`` in
:mod:`efficientnet.predict`, ``evaluate`` in :mod:`efficientnet.evaluate`, ``create``/``resume``/``view`` in
:mod:`efficientnet.launcher`, ``report`` in :mod:`efficientnet.report`). Errors the user can fix are raised as
:class:`CLIError` (or the package's ``SpecError``/``WeightsError``) and printed as one line on stderr with exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from .arguments import CLIError, add_arch_arguments, arch_from_args
from .spec import SpecError, resolve_arch

__all__ = ["CLIError", "main", "make_parser", "arch_from_args", "add_arch_arguments"]


def _build_profile(p: argparse.ArgumentParser) -> None:
    add_arch_arguments(p)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--latency", action="store_true", help="also measure batch-1 CPU latency (and, with an "
                   "onnxruntime --latency-table, the exported model's in onnxruntime)")
    p.add_argument("--latency-table", metavar="FILE", help="also predict latency from a table built by latency-table")
    p.add_argument("--json", action="store_true", help="print JSON")


def cmd_profile(args: argparse.Namespace) -> int:
    """Print the profile of the architecture described by the flags."""
    from .latency_table import LatencyTable, LatencyTableError
    from .profiler import profile

    spec = arch_from_args(args)
    predicted = {}
    if args.latency_table:
        try:
            table = LatencyTable.load(args.latency_table)
            predicted = {"predicted_latency_ms": table.predict(spec, args.num_classes),
                         "latency_table": table.describe()}
        except LatencyTableError as exc:
            raise CLIError(str(exc)) from None
        if args.latency and table.backend.startswith("onnxruntime"):  # measured here as the table was, to compare
            from .latency_table import measure_onnxruntime_latency

            predicted["onnxruntime_latency_ms"] = measure_onnxruntime_latency(
                spec, args.num_classes, table.threads, table.batch_size, int8=table.backend == "onnxruntime-int8")
    prof = profile(spec, num_classes=args.num_classes, latency=args.latency)
    if args.json:
        print(json.dumps({"arch": str(spec), "spec": spec.to_dict(), **prof.to_dict(), **predicted}, indent=2))
    else:
        print(f"arch: {spec}\n{prof}")
        if predicted:
            print(f"predicted latency {predicted['predicted_latency_ms']:.1f} ms ({predicted['latency_table']})")
        if "onnxruntime_latency_ms" in predicted:
            print(f"onnxruntime latency here {predicted['onnxruntime_latency_ms']:.1f} ms (measured as the table was)")
    return 0


def _build_latency_table(p: argparse.ArgumentParser) -> None:
    from .latency_table import BACKENDS

    p.add_argument("--out", required=True, metavar="FILE", help="the table (JSON); an existing one is resumed")
    p.add_argument("--search-space", default="search_space.json", metavar="FILE",
                   help="search space whose candidates to cover (default %(default)s)")
    p.add_argument("--base", default="lite0", help="the tuner's classArg base (default %(default)s)")
    p.add_argument("--base-resolution", type=int, help="the tuner's classArg base_resolution")
    p.add_argument("--num-classes", type=int, default=1000, help="the tuner's classArg num_classes")
    p.add_argument("--phi", type=float, default=1.0, help="the tuner's classArg phi (default %(default)s)")
    p.add_argument("--sample", type=int, metavar="N", help="cover N random candidates only (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch or onnxruntime threads (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=1, help="(default %(default)s)")
    p.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="time the eager model, its ONNX export in onnxruntime (CPU), or that export quantised to int8 "
                   "as export --int8 quantises it (default %(default)s)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per layer, median kept (default %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per layer first (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_latency_table(args: argparse.Namespace) -> int:
    """Measure the per-layer latencies of every candidate of a search space on this device."""
    import time

    from .latency_table import LatencyTableError, build_table
    from .search.space import SearchSpaceError
    from .search.specs import search_space_specs

    for name in ("threads", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        raise CLIError(f"--device must be cpu or cuda[:N], got {args.device!r}")
    try:
        with open(args.search_space) as f:
            search_space = json.load(f)
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot read search space {args.search_space}: {exc}") from None
    start = time.perf_counter()
    try:
        specs = search_space_specs(search_space, args.base, args.base_resolution, args.num_classes, args.phi,
                                   args.sample, args.seed)
        table, measured, distinct = build_table(
            specs, args.out, args.num_classes, args.device, args.threads, args.batch_size, args.repeats,
            args.warmup, progress=not args.no_progress, backend=args.backend)
    except (LatencyTableError, SearchSpaceError, ValueError) as exc:
        raise CLIError(str(exc).splitlines()[0]) from None
    print(f"{len(specs)} architectures, {distinct} distinct layers, measured {measured} new "
          f"({distinct - measured} already in the table) in {time.perf_counter() - start:.1f} s; "
          f"wrote {args.out} ({table.describe()})")
    return 0


def _build_export(p: argparse.ArgumentParser) -> None:
    from .quantize import CALIBRATION_METHODS

    p.add_argument("checkpoint", metavar="CHECKPOINT", help="trial checkpoint (.pth.tar), state dict, or lite0")
    p.add_argument("--format", default="onnx", help="onnx or torchscript (default %(default)s)")
    p.add_argument("--out", help="output folder (default: the checkpoint's folder)")
    p.add_argument("--arch", help="architecture of a checkpoint that does not record it (preset, spec or JSON)")
    p.add_argument("--exporter", default="auto", help="ONNX exporter: dynamo, legacy, or auto: dynamo, else legacy "
                   "where dynamo fails on this torch (default %(default)s)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default %(default)s)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest allowed logit difference (default %(default)g)")
    p.add_argument("--int8", action="store_true", help="also write <stem>.int8.onnx: int8 weights and activations "
                   "(onnxruntime's static quantisation), calibrated on the trial's training images and checked on its "
                   "validation images")
    p.add_argument("--calibration", metavar="FOLDER", help="calibrate --int8 on this folder's images instead (needed "
                   "when the checkpoint does not record its trial's data)")
    p.add_argument("--calibration-images", type=int, metavar="N", help="images to calibrate --int8 on (default 256)")
    p.add_argument("--calibration-method", default=CALIBRATION_METHODS[0], choices=CALIBRATION_METHODS,
                   help="how --int8 sets each activation's range (default %(default)s: its 99.999th percentile)")
    p.add_argument("--json", action="store_true", help="print JSON")


def cmd_export(args: argparse.Namespace) -> int:
    """Write the exported model and its JSON sidecar; the export is checked against PyTorch."""
    from .export import ExportError, export_checkpoint

    try:
        result = export_checkpoint(
            args.checkpoint, args.format, out_dir=args.out, arch=resolve_arch(args.arch) if args.arch else None,
            opset=args.opset, exporter=args.exporter, tolerance=args.tolerance, int8=args.int8,
            calibration=args.calibration, calibration_images=args.calibration_images,
            calibration_method=args.calibration_method,
        )
    except ExportError as exc:
        raise CLIError(str(exc)) from None
    if result.note:
        print(f"note: {result.note}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"wrote {result.model_path} and {result.sidecar_path} ({result.exporter}, {result.seconds:.1f} s)")
        print(f"check: max |logit difference| {result.max_abs_diff:.2e} (tolerance {result.tolerance:g})")
        if result.int8 is not None:
            from .quantize import Int8Check, describe

            entry = result.int8
            print(f"wrote {Path(result.model_path).with_name(entry['file'])} ({entry['bytes'] / 1e6:.2f} MB, fp32 "
                  f"{entry['fp32_bytes'] / 1e6:.2f} MB), calibrated on {entry['calibration']}")
            print(describe(Int8Check(**entry["check"])))
    if result.int8 is not None:
        check = result.int8["check"]
        if check["top1_int8"] is not None and check["top1_int8"] < check["top1_fp32"] - 1.0:
            print(f"warning: the int8 model's top-1 is {check['top1_fp32'] - check['top1_int8']:.1f} points below "
                  "fp32's; deploy the fp32 model, or calibrate on more images (--calibration-images)", file=sys.stderr)
    return 0


def _build_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="dataset folder (ImageFolder: train/ and val/ class folders, or class folders), "
                   "or a CSV of image names and labels")
    p.add_argument("--label-column", help="a label CSV's label column (the trial's --label-column)")
    p.add_argument("--group-column", help="a label CSV's column of groups, kept whole by the split (the trial's "
                   "--group-column)")
    p.add_argument("--val-split", type=float, default=0.2, help="validation fraction when splitting (the trial's "
                   "--val-split)")
    p.add_argument("--seed", type=int, default=0, help="the split's seed (the trial's --seed)")
    p.add_argument("--json", action="store_true", help="print JSON")


def cmd_data(args: argparse.Namespace) -> int:
    """Read a dataset folder as a trial will: its layout, classes, images per class, and what is left out."""
    from .data import IMBALANCE_RATIO, DataError, class_counts, dataset_samples, load_dataset
    from .scan import identical_files, image_files
    from .spec import preset
    from .trial_log import warnings_on_stderr

    if not 0 < args.val_split < 1:
        raise CLIError(f"--val-split must be in (0, 1), got {args.val_split}")
    try:
        with warnings_on_stderr():
            split = load_dataset(args.data, preset("lite0"), val_split=args.val_split, seed=args.seed,
                                 label_column=args.label_column, group_column=args.group_column)
    except DataError as exc:
        raise CLIError(str(exc)) from None

    train = class_counts(split.train_targets, split.num_classes)
    val = class_counts([label for _, label in dataset_samples(split.val)], split.num_classes)
    ratio = max(train) / max(min(train), 1)
    test = _test_folder(args.data)
    test_images = image_files(test) if test is not None else []  # one walk of test/
    sides = {"train": [(p, split.classes[c]) for p, c in dataset_samples(split.train)],
             "val": [(p, split.classes[c]) for p, c in dataset_samples(split.val)],
             **({"test": [(str(p), p.relative_to(test).parts[0]) for p in test_images]} if test else {}),
             **_table_test_rows(args)}
    copies = identical_files(sides)
    if args.json:
        print(json.dumps({"root": str(split.root), "layout": split.layout, "classes": split.classes,
                          "train": train, "val": val, "skipped_unreadable": split.corrupt,
                          "imbalance": round(ratio, 2), "test": len(test_images) if test else None,
                          "identical": {f"{a}-{b}": len(v) for (a, b), v in copies.items()}}, indent=2))
        return 0
    print(f"data {split.root} ({split.layout}): {split.num_classes} classes, {sum(train)} train / {sum(val)} val "
          "images")
    width = max(5, *(len(c) for c in split.classes))
    print(f"  {'class':<{width}}  {'train':>7}  {'val':>7}")
    for name, n_train, n_val in zip(split.classes, train, val):
        print(f"  {name:<{width}}  {n_train:>7}  {n_val:>7}")
    if ratio >= IMBALANCE_RATIO:
        print(f"imbalanced: the largest class has {ratio:.1f}x the training images of the smallest; add "
              "--eval-metric f1 --class-weights balanced to the trial command")
    print(f"in the tuner's classArgs: num_classes: {split.num_classes}")
    if test is not None:
        print(f"{test.name}/: {len(test_images)} images no trial reads; after the search, python -m efficientnet "
              f"evaluate CHECKPOINT {args.data} scores a model on them")
    for (later, earlier), pairs in copies.items():
        path, copy, _ = pairs[0]
        relabelled = sum(differ for *_, differ in pairs)
        print(f"leak: {len(pairs)} {later} image(s) are byte-for-byte copies of {earlier} images (e.g. {path} = "
              f"{copy}){f', {relabelled} of them with another label' if relabelled else ''}: the {later} scores will "
              f"be optimistic; remove the copies from one side")
    return 0


def _table_test_rows(args: argparse.Namespace) -> dict[str, list[tuple[str, str]]]:
    """``{"test": (image, label) pairs}`` of a label CSV's rows marked test, or nothing."""
    from .label_table import is_label_table, read_test_table
    from .layout import DataError

    if not is_label_table(args.data):
        return {}
    try:
        table = read_test_table(args.data, args.label_column)
    except DataError:
        return {}
    return {"test": [(str(p), label) for p, label in table.pairs]} if table.split_column is not None else {}


def _test_folder(data: str) -> Path | None:
    """A dataset folder's ``test/`` (which trials never read), or None."""
    from .label_table import is_label_table
    from .layout import test_folder

    return None if is_label_table(data) else test_folder(Path(data).expanduser())


def _commands() -> dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int],
                                    str]]:
    """Every subcommand: its argument builder, the function that runs it, and its one-line help."""
    from . import evaluate, launcher, predict, report

    return {
        "profile": (_build_profile, cmd_profile, "params, MACs, model size and peak memory of an architecture"),
        "latency-table": (_build_latency_table, cmd_latency_table, "measure per-layer latencies of a search "
                          "space on this device, for the profile --latency-table and the tuner's latency_table"),
        "data": (_build_data, cmd_data, "read a dataset folder as a trial will: layout, classes, images per class "
                 "and what is left out"),
        "predict": (predict.build, predict.cmd_predict, "classify images with a trained checkpoint or pretrained "
                    "ImageNet weights"),
        "evaluate": (evaluate.build, evaluate.cmd_evaluate, "score a trained checkpoint on held-out labelled "
                     "images: top-1, top-5, F1, each class and the largest mistakes"),
        "export": (_build_export, cmd_export, "export a checkpoint to ONNX (fp32, or int8 too) or TorchScript with "
                   "its spec and preprocessing"),
        "create": (launcher.build_create, launcher.cmd_create, "check an experiment config, then start it with "
                   "nnictl, bound to this machine"),
        "resume": (launcher.build_resume, launcher.cmd_resume, "resume a stopped experiment with nnictl, bound to "
                   "this machine"),
        "view": (launcher.build_view, launcher.cmd_view, "show a stopped experiment in the WebUI, bound to this "
                 "machine"),
        "report": (report.build, report.cmd_report, "best trials, Pareto fronts and a plot of an NNI experiment"),
    }


def make_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m efficientnet",
        description="EfficientNet architecture search on NNI: profile architectures, measure latency tables, predict, "
                    "evaluate and export, and start, resume, view or report experiments.",
        epilog="python -m efficientnet COMMAND --help lists a command's options.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (build, run, help_text) in _commands().items():
        build(sub.add_parser(name, help=help_text, description=help_text))
        sub.choices[name].set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = make_parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as exc:
        weights = sys.modules.get(f"{__package__}.weights")  # loaded (with torch) only by the commands that use it
        if isinstance(exc, (CLIError, SpecError)) or (weights is not None and isinstance(exc, weights.WeightsError)):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
