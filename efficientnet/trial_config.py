"""Configuration of one trial: defaults, command line, environment YAML and the NNI proposal, in that order.

Later sources override earlier ones: the :class:`TrialConfig` defaults, then an optional YAML of environment
settings (``--env FILE``), then command-line flags, then the hyperparameters of the tuner's proposal.

The legacy project's command line keeps working::

    python main_efficientnet.py custom --download-dir DIR -j 0 -a efficientnet --batch-size 16 --lr 0.048 \\
        --wd 1e-5 --epochs 5 --request-from-nni --resume ./model_best.pth.tar --resolution 300 --num-classes 2 --gpu 0

``custom`` means "the ImageFolder in --download-dir"; ``-a efficientnet`` is the default base architecture.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from .arguments import add_arch_arguments
from .label_table import is_label_table
from .proposal import Proposal
from .spec import ArchSpec, SpecError, resolve_arch, scaled_arch

__all__ = ["ConfigError", "TrialConfig", "make_parser", "parse_config", "apply_hyperparameters", "resolve_spec",
           "overridden_flags", "output_dir_for", "ENV_KEYS"]

DEFAULT_ARCH = "lite0"
ARCH_ALIASES = {"efficientnet": DEFAULT_ARCH}  # the legacy project's ``-a efficientnet``


# the peak learning rate when --lr is not given, by optimizer, for fine-tuning at batch 32: 3 epochs on the digits
# demo reached 97-98 % top-1 with each, and 16 % (RMSprop) or 22 % (AdamW) at SGD's 0.05
DEFAULT_LR = {"sgd": 0.05, "adamw": 0.003, "rmsprop": 0.002}


# the validation metric that picks the best epoch (model_best.pth.tar) and is NNI's ``default``: top-1 accuracy, or
# macro F1 or macro recall (balanced accuracy) for imbalanced classes, both in percent; the log's name of each
EVAL_METRICS = {"top1": "top-1", "f1": "macro F1", "recall": "macro recall", "auc": "macro ROC AUC"}


class ConfigError(ValueError):
    """A bad flag, environment file or proposal value; the message names it."""


@dataclass
class TrialConfig:
    """Every setting of a trial, with its default."""

    # data
    data: str | None = None  # ImageFolder directory, label CSV or "digits"
    label_column: str | None = None  # a label CSV's label column, when not found by its name
    group_column: str | None = None  # a label CSV's column of groups (a patient, a lesion): validation keeps them whole
    download_dir: str | None = None  # the legacy project's dataset dir for "custom"; also the digits cache
    val_split: float = 0.2
    subset: float = 1.0
    num_classes: int | None = None  # checked against the class folders
    workers: int | None = None  # None: auto (efficientnet.data.default_workers)
    data_cache: str = "auto"  # decoded-image cache: auto | ram | gpu | off
    hflip: float | None = None  # None: 0.5, or 0 for digits
    min_scale: float = 0.5  # RandomResizedCrop's smallest area fraction
    # model
    arch: str = DEFAULT_ARCH
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    phi: float = 1.0
    width: float | None = None
    depth: float | None = None
    resolution: int | None = None
    weights: str = "lite0"  # lite0 | PATH | none
    weights_arch: str | None = None  # architecture of a weights file that does not record it
    # optimisation
    epochs: int = 5
    schedule_epochs: int | None = None  # the learning-rate schedule's length (None: epochs); see continue_from
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float | None = None  # None: the optimizer's default (DEFAULT_LR)
    momentum: float = 0.9
    weight_decay: float = 1e-5
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    clip_grad: float = 5.0
    amp: str = "auto"
    channels_last: str = "auto"
    compile: bool = False  # torch.compile the model
    cudnn_benchmark: str = "on"  # on: cuDNN times its kernels for each new shape; off: its heuristics' pick
    bn_momentum: float = 0.1
    seed: int = 0
    eval_metric: str = "top1"  # one of EVAL_METRICS
    class_weights: str = "none"  # none | balanced: weight the training loss by inverse class frequency
    # progressive learning (EfficientNetV2): 0 stages = off
    progressive_stages: int = 0
    progressive_min_res: int | None = None  # None: 128 px for a 224 px model, in proportion for others
    progressive_dropout: tuple[float, float] = (0.1, 0.3)
    progressive_randaug: tuple[float, float] = (5, 15)
    progressive_mixup: tuple[float, float] = (0.0, 0.2)
    # run
    threads: int = 0  # CPU threads for torch (0: PyTorch's default)
    device: str = "auto"
    gpu: int | None = None
    trials_per_gpu: int = 1  # trials sharing one GPU (NNI's maxTrialNumberPerGpu): each may use that share
    memory_check: str = "auto"  # estimate the training memory and refuse a trial that does not fit: auto = on CUDA
    output_dir: str | None = None
    resume: str | None = None
    continue_from: str | None = None  # a lower-budget run to continue: a checkpoint file, or a trial id under NNI
    auto_resume: bool = True
    request_from_nni: bool = False
    latency: bool = True
    progress: str = "auto"  # tqdm bars: auto (terminal and not under NNI), on, off
    env: str | None = None

    @property
    def peak_lr(self) -> float:
        """The peak learning rate: ``lr`` when given, else the optimizer's default."""
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.optimizer, DEFAULT_LR["sgd"])

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON- and checkpoint-safe), with the learning rate the run trains at."""
        return {**dataclasses.asdict(self), "lr": self.peak_lr}


# keys of the environment YAML -> config fields (the legacy project's names first, then every field by name)
ENV_KEYS = {
    "download-dir": "download_dir",
    "download_dir": "download_dir",
    "worker_num": "workers",
    "workers": "workers",
    "base_resolution": "resolution",
    "gpu": "gpu",
    "resume": "resume",
    "batch_size": "batch_size",
    "num_classes": "num_classes",
}
# proposal keys -> config fields
HYPERPARAMETER_KEYS = {
    "lr": "lr",
    "learning_rate": "lr",
    "batch_size": "batch_size",
    "weight_decay": "weight_decay",
    "wd": "weight_decay",
    "epochs": "epochs",
    "schedule_epochs": "schedule_epochs",
    "continue_from": "continue_from",
    "label_smoothing": "label_smoothing",
    "subset": "subset",
    "momentum": "momentum",
    "optimizer": "optimizer",
    "warmup_epochs": "warmup_epochs",
    "clip_grad": "clip_grad",
    "seed": "seed",
}


def make_parser() -> argparse.ArgumentParser:
    """The trial's argument parser (modern flags plus the legacy project's)."""
    p = argparse.ArgumentParser(
        prog="main_efficientnet.py",
        description="Fine-tune one EfficientNet on an image folder: an NNI trial or a hand run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = TrialConfig()
    p.add_argument("dataset", nargs="?", help="the legacy project's positional dataset: 'custom' (= --download-dir), "
                   "'digits' or a directory; --data is the modern form")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="ImageFolder directory (train/ + val/, or class folders to split), a CSV of "
                   "image names and labels, or 'digits'")
    g.add_argument("--label-column", help="a label CSV's label column (default: the one named label, class, "
                   "category or target, the only other column, or one 0/1 column per class)")
    g.add_argument("--group-column", help="a label CSV's column of groups whose images belong together (a patient, a "
                   "lesion): the held-out validation split keeps each group whole")
    g.add_argument("--download-dir", help="dataset directory for 'custom'; cache directory for 'digits'")
    g.add_argument("--val-split", type=float, default=d.val_split, help="validation fraction when splitting")
    g.add_argument("--subset", type=float, default=d.subset, help="train on a stratified fraction (proxy)")
    g.add_argument("--num-classes", type=int, help="expected class count (checked against the folders)")
    g.add_argument("-j", "--workers", type=_workers, default=d.workers, metavar="N|auto",
                   help="data-loading worker processes (default auto: CPU cores - 1, at most 8, on a GPU; 0 on the CPU)")
    g.add_argument("--data-cache", choices=["auto", "ram", "gpu", "off"], default=d.data_cache,
                   help="decode every image once and augment batches on the device: in RAM, in GPU memory, or off "
                   "(per-image loading); auto picks by dataset size and device")
    g.add_argument("--hflip", type=float, help="horizontal-flip probability (default 0.5; 0 for digits)")
    g.add_argument("--min-scale", type=float, default=d.min_scale, help="smallest random-crop area fraction")
    m = p.add_argument_group("model")
    add_arch_arguments(p, default=d.arch)
    m.add_argument("-a", dest="arch", help=argparse.SUPPRESS)
    m.add_argument("--image-size", "--image_size", dest="resolution", type=int, help=argparse.SUPPRESS)
    m.add_argument("--weights", default=d.weights, help="pretrained weights to inherit: lite0, a .pth path or none")
    m.add_argument("--weights-arch", help="preset or spec of a --weights file that does not record its architecture")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=d.epochs)
    o.add_argument("--schedule-epochs", type=int, help="length of the learning-rate schedule in epochs (default: "
                   "--epochs); a run stopped at --epochs < this continues exactly with --continue-from")
    o.add_argument("-b", "--batch-size", type=int, default=d.batch_size)
    o.add_argument("--opt", "--optimizer", dest="optimizer", choices=["sgd", "adamw", "rmsprop"], default=d.optimizer)
    o.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=argparse.SUPPRESS,  # absent: by --opt
                   help="peak learning rate (default: " + ", ".join(f"{v:g} for {k}" for k, v in DEFAULT_LR.items())
                   + ")")
    o.add_argument("--momentum", type=float, default=d.momentum)
    o.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=d.weight_decay)
    o.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help="linear warm-up (<= 1/4 of training)")
    o.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    o.add_argument("--clip-grad", type=float, default=d.clip_grad, help="gradient-norm clip (0: off)")
    o.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default=d.amp,
                   help="mixed precision; auto = on for CUDA, off on the CPU")
    o.add_argument("--channels-last", choices=["auto", "on", "off"], default=d.channels_last)
    o.add_argument("--compile", action="store_true", help="torch.compile the model (slow first epoch, then faster)")
    o.add_argument("--cudnn-benchmark", choices=["on", "off"], default=d.cudnn_benchmark,
                   help="on a GPU, let cuDNN time its kernels for each new batch shape (on) or take its "
                   "heuristics' pick (off: no timing in the first steps)")
    o.add_argument("--bn-momentum", type=float, default=d.bn_momentum,
                   help="BatchNorm running-stats momentum for fine-tuning (the library's is 0.01)")
    o.add_argument("--seed", type=int, default=d.seed)
    o.add_argument("--eval-metric", choices=list(EVAL_METRICS), default=d.eval_metric,
                   help="validation metric that picks the best epoch and is NNI's default metric: top-1 accuracy, "
                   "or macro F1, macro recall (balanced accuracy) or macro one-vs-rest ROC AUC x 100, for imbalanced "
                   "classes")
    o.add_argument("--class-weights", choices=["none", "balanced"], default=d.class_weights,
                   help="weight the training loss by inverse class frequency (balanced), so that rare classes count "
                   "as much as common ones")
    g = p.add_argument_group("progressive learning (EfficientNetV2; also a 'progressive:' section of --env)")
    g.add_argument("--progressive-stages", type=int, default=d.progressive_stages,
                   help="train in N stages of growing image size and regularisation (0: off)")
    g.add_argument("--progressive-min-res", type=int,
                   help="first stage's image size (default: 128 px for a 224 px model, in proportion)")
    g.add_argument("--progressive-dropout", type=float, nargs=2, metavar=("FIRST", "LAST"),
                   default=d.progressive_dropout, help="classifier dropout of the first and last stage")
    g.add_argument("--progressive-randaug", type=float, nargs=2, metavar=("FIRST", "LAST"),
                   default=d.progressive_randaug, help="RandAugment magnitude of the first and last stage (0: off)")
    g.add_argument("--progressive-mixup", type=float, nargs=2, metavar=("FIRST", "LAST"),
                   default=d.progressive_mixup, help="mixup alpha of the first and last stage (0: off)")
    r = p.add_argument_group("run")
    r.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    r.add_argument("--threads", type=int, default=d.threads,
                   help="CPU threads for torch (0: PyTorch's default; 1 is faster when trials share a small CPU)")
    r.add_argument("--gpu", type=int, help="the legacy project's GPU index (= --device cuda:N; CPU with a warning if absent)")
    r.add_argument("--trials-per-gpu", type=int, default=d.trials_per_gpu,
                   help="trials that share one GPU (set it to NNI's maxTrialNumberPerGpu): each trial may use that "
                   "share of the GPU's memory")
    r.add_argument("--memory-check", choices=["auto", "on", "off"], default=d.memory_check,
                   help="estimate the memory training needs and stop at once if it does not fit (auto: on a GPU)")
    r.add_argument("--output-dir", help="where checkpoints, logs and result.json go (default: $NNI_OUTPUT_DIR under "
                   "NNI, else runs/<data>-<arch hash>)")
    r.add_argument("--resume", help="read a checkpoint: same arch resumes, another inherits its weights")
    r.add_argument("--continue-from", help="continue a shorter run of this architecture to --epochs: its "
                   "checkpoint file (under NNI the tuner names a trial id of the same experiment)")
    r.add_argument("--no-auto-resume", dest="auto_resume", action="store_false",
                   help="start over even if the output dir holds a checkpoint")
    r.add_argument("--request-from-nni", action="store_true", help="take the architecture from the NNI tuner")
    r.add_argument("--no-latency", dest="latency", action="store_false", help="skip the latency measurement")
    r.add_argument("--progress", choices=["auto", "on", "off"], default=d.progress, help="tqdm progress bars")
    r.add_argument("--env", "--env-config", dest="env", help="YAML of environment settings (download-dir, "
                   "worker_num, batch_size, base_resolution, num_classes, gpu, resume)")
    return p


def _workers(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None


def load_env_file(path: str) -> dict[str, Any]:
    """Read the environment YAML into config-field defaults."""
    import yaml

    try:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"environment file {path} does not exist") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read environment file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"environment file {path} must be a mapping of settings, e.g. 'batch_size: 16'")
    names = {f.name for f in fields(TrialConfig)}
    out = {}
    raw = dict(raw)
    section = raw.pop("progressive", None)
    if section is not None:
        out.update(_progressive_section(section, path))
    for key, value in raw.items():
        name = ENV_KEYS.get(str(key), str(key).replace("-", "_"))
        if name not in names or name == "env":
            raise ConfigError(f"unknown setting {key!r} in {path}; known: {', '.join(sorted(ENV_KEYS))} or any flag")
        out[name] = value
    return out


PROGRESSIVE_KEYS = ("stages", "min_res", "dropout", "randaug", "mixup")


def _progressive_section(section: Any, path: str) -> dict[str, Any]:
    """The YAML ``progressive:`` mapping -> ``progressive_*`` config fields."""
    if not isinstance(section, Mapping):
        raise ConfigError(f"'progressive' in {path} must be a mapping, e.g. 'progressive: {{stages: 4}}'")
    out = {}
    for key, value in section.items():
        name = str(key).replace("-", "_")
        if name not in PROGRESSIVE_KEYS:
            raise ConfigError(f"unknown setting 'progressive.{key}' in {path}; known: {', '.join(PROGRESSIVE_KEYS)}")
        if name in ("dropout", "randaug", "mixup"):
            if not (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2):
                raise ConfigError(f"'progressive.{key}' in {path} takes two values [first, last], got {value!r}")
            try:
                value = (float(value[0]), float(value[1]))
            except (TypeError, ValueError):
                raise ConfigError(f"'progressive.{key}' in {path} takes two numbers, got {value!r}") from None
        out[f"progressive_{name}"] = value
    return out


def parse_config(argv: Sequence[str] | None = None) -> TrialConfig:
    """Flags (over an optional environment YAML, over the defaults) -> :class:`TrialConfig`."""
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.env:
        parser.set_defaults(**load_env_file(args.env))
        args = parser.parse_args(argv)
    values = {k: v for k, v in vars(args).items() if k != "dataset"}
    if not values.get("data"):
        ds = args.dataset
        if ds in (None, ""):
            values["data"] = None
        elif ds == "custom":
            if not values.get("download_dir"):
                raise ConfigError("dataset 'custom' needs --download-dir DIR (the ImageFolder to train on)")
            values["data"] = values["download_dir"]
        else:
            values["data"] = ds
    for name in ("progressive_dropout", "progressive_randaug", "progressive_mixup"):
        values[name] = tuple(float(v) for v in values[name])
    cfg = TrialConfig(**values)
    validate(cfg)
    return cfg


def validate(cfg: TrialConfig) -> None:
    """Range checks with one-line messages."""
    if not cfg.data:
        raise ConfigError("no dataset given: pass --data DIR (an ImageFolder), --data labels.csv (image names and "
                          "labels) or --data digits for the demo")
    for flag, value in (("--label-column", cfg.label_column), ("--group-column", cfg.group_column)):
        if value and not is_label_table(cfg.data):
            raise ConfigError(f"{flag} {value} names a column of a label CSV, but --data {cfg.data} is not one; pass "
                              f"--data labels.csv, or drop {flag}")
    checks = [
        (cfg.epochs >= 1, f"--epochs must be at least 1, got {cfg.epochs}"),
        (cfg.schedule_epochs is None or cfg.schedule_epochs >= cfg.epochs,
         f"--schedule-epochs ({cfg.schedule_epochs}) must be at least --epochs ({cfg.epochs})"),
        (cfg.batch_size >= 1, f"--batch-size must be at least 1, got {cfg.batch_size}"),
        (cfg.lr is None or cfg.lr > 0, f"--lr must be positive, got {cfg.lr}"),
        (cfg.weight_decay >= 0, f"--wd must be >= 0, got {cfg.weight_decay}"),
        (0 < cfg.val_split < 1, f"--val-split must be in (0, 1), got {cfg.val_split}"),
        (0 < cfg.subset <= 1, f"--subset must be in (0, 1], got {cfg.subset}"),
        (cfg.num_classes is None or cfg.num_classes >= 2, f"--num-classes must be at least 2, got {cfg.num_classes}"),
        (cfg.threads >= 0, f"--threads must be >= 0, got {cfg.threads}"),
        (cfg.trials_per_gpu >= 1, f"--trials-per-gpu must be at least 1, got {cfg.trials_per_gpu}"),
        (0 < cfg.bn_momentum <= 1, f"--bn-momentum must be in (0, 1], got {cfg.bn_momentum}"),
        (cfg.workers is None or cfg.workers >= 0, f"--workers must be >= 0 or auto, got {cfg.workers}"),
        (cfg.data_cache in ("auto", "ram", "gpu", "off"),
         f"--data-cache must be auto, ram, gpu or off, got {cfg.data_cache!r}"),
        (0 <= cfg.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}"),
        (0 < cfg.min_scale <= 1, f"--min-scale must be in (0, 1], got {cfg.min_scale}"),
        (cfg.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {cfg.warmup_epochs}"),
        (cfg.clip_grad >= 0, f"--clip-grad must be >= 0 (0: off), got {cfg.clip_grad}"),
        (0 <= cfg.momentum < 1, f"--momentum must be in [0, 1), got {cfg.momentum}"),
        (cfg.optimizer in ("sgd", "adamw", "rmsprop"), f"unknown optimizer {cfg.optimizer!r}: use sgd, adamw, rmsprop"),
        (cfg.class_weights in ("none", "balanced"),
         f"unknown --class-weights {cfg.class_weights!r}: use none or balanced"),
        (cfg.eval_metric in EVAL_METRICS,
         f"unknown --eval-metric {cfg.eval_metric!r}: use {', '.join(EVAL_METRICS)}"),
        (isinstance(cfg.progressive_stages, int) and cfg.progressive_stages >= 0,
         f"--progressive-stages must be an integer >= 0, got {cfg.progressive_stages!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def apply_hyperparameters(cfg: TrialConfig, proposal: Proposal) -> tuple[TrialConfig, list[str]]:
    """Override config fields with the proposal's training settings (hyperparameters and budget); return the new
    config and the keys the trainer does not use."""
    changes: dict[str, Any] = {}
    ignored = []
    types = {f.name: f.type for f in fields(TrialConfig)}
    for key, value in proposal.training().items():
        name = HYPERPARAMETER_KEYS.get(key)
        if name is None:
            ignored.append(key)
            continue
        kind = str(types[name])
        try:
            if kind.startswith("int"):
                if float(value) != int(float(value)):
                    raise ValueError("not a whole number")
                changes[name] = int(float(value))
            else:
                changes[name] = float(value) if kind.startswith("float") else str(value)
        except (TypeError, ValueError):
            raise ConfigError(f"the tuner sent {key}={value!r}, which is not a valid {name}") from None
    cfg = dataclasses.replace(cfg, **changes)
    validate(cfg)
    return cfg, ignored


def resolve_spec(cfg: TrialConfig, proposal: Proposal = Proposal()) -> ArchSpec:
    """The architecture to train: the proposal's (its ``arch``, or its coefficients on ``--arch`` at
    ``--resolution``), else the flags' (``--arch`` scaled by ``--alpha/--beta/--gamma`` or ``--width/--depth``)."""
    arch = ARCH_ALIASES.get(cfg.arch.strip().lower(), cfg.arch)
    try:
        if proposal.names_architecture:
            return proposal.spec_on(resolve_arch(arch), base_resolution=cfg.resolution)
        flag_spec = scaled_arch(arch, alpha=cfg.alpha, beta=cfg.beta, gamma=cfg.gamma, phi=cfg.phi, width=cfg.width,
                                depth=cfg.depth, resolution=cfg.resolution)
        return proposal.spec_on(flag_spec)
    except SpecError:
        raise
    except (TypeError, ValueError) as exc:  # e.g. a coefficient or block choice that is not a number
        raise ConfigError(f"the proposal's architecture keys are not usable ({exc}); check the search space") from None


def overridden_flags(cfg: TrialConfig, proposal: Proposal, spec: ArchSpec) -> list[str]:
    """One line for each architecture flag that the tuner's proposal overrides: what is used, and where to change it.

    A proposal with ``arch`` decides the whole architecture; one with coefficients only (the legacy tuner) scales
    ``--arch`` at ``--resolution``, so those two flags are used there."""
    params = proposal.coefficients
    notes = []
    if proposal.spec is not None:
        gamma = params.get("gamma")
        if cfg.resolution is not None and cfg.resolution != spec.resolution:
            notes.append(f"--resolution {cfg.resolution} is not used: the tuner's proposal trains at "
                         f"{spec.resolution} px (its base_resolution"
                         + (f" x gamma {gamma}" if gamma is not None else "")
                         + "); set base_resolution in the tuner's classArgs to change it")
        for flag in ("width", "depth"):
            given = getattr(cfg, flag)
            if given is not None and given != getattr(spec, flag):
                notes.append(f"--{flag} {given} is not used: the tuner's proposal sets {flag} "
                             f"{getattr(spec, flag):g}; set the tuner's base (classArgs) to change it")
        arch = ARCH_ALIASES.get(cfg.arch.strip().lower(), cfg.arch)
        if arch != DEFAULT_ARCH:
            notes.append(f"--arch {cfg.arch} is not used: the tuner's proposal names the whole architecture; set "
                         "the tuner's base (classArgs) to change it")
    elif proposal.names_architecture and cfg.resolution is not None and cfg.resolution != spec.resolution:
        notes.append(f"--resolution {cfg.resolution} is the base resolution: the proposal's gamma "
                     f"{params.get('gamma', 1.0)} trains at {spec.resolution} px")
    if proposal.names_architecture:
        for flag in ("alpha", "beta", "gamma"):
            given = getattr(cfg, flag)
            if given is not None and flag in params and float(params[flag]) != given:
                notes.append(f"--{flag} {given} is not used: the tuner's proposal has {flag} {params[flag]}")
    return notes


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:40] or "data"


def output_dir_for(cfg: TrialConfig, spec: ArchSpec, nni_output_dir: str | None) -> Path:
    """``$NNI_OUTPUT_DIR`` under NNI (each trial its own folder, even when the trial command names
    ``--output-dir``), else ``--output-dir``, else ``runs/<data>-<8 hex of the arch>``.

    The default by hand depends only on the data and the architecture, so rerunning a killed command resumes it.
    """
    if nni_output_dir:
        return Path(nni_output_dir)
    if cfg.output_dir:
        return Path(cfg.output_dir).expanduser()
    from .data import DIGITS_NAME  # here, not at the top: the data module loads torch, parse_config needs none

    digest = hashlib.sha1(f"{spec}|{cfg.seed}".encode()).hexdigest()[:8]
    data = Path(str(cfg.data))
    name = DIGITS_NAME if cfg.data == DIGITS_NAME else _slug(data.name) if not is_label_table(data) \
        else _slug(f"{data.absolute().parent.name}-{data.stem}")  # train.csv of one dataset, not of another
    return Path("runs") / f"{name}-{digest}"

