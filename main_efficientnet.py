"""Fine-tune one EfficientNet on an image folder: an NNI trial, or a script you run by hand.

By hand (no NNI needed)::

    python main_efficientnet.py --data digits --arch lite0 --width 0.25 --resolution 32 --epochs 3

As an NNI trial (``nni.get_next_parameter()`` supplies the architecture and hyperparameters)::

    trialCommand: python main_efficientnet.py --data digits --weights lite0 --request-from-nni

Outputs go to ``$NNI_OUTPUT_DIR`` under NNI, else ``--output-dir`` (default ``runs/<data>-<arch hash>``):
``checkpoint.pth.tar`` (every epoch, atomic), ``model_best.pth.tar``, ``result.json``, ``log.txt`` and TensorBoard
scalars in ``tensorboard/``. Rerunning a killed trial continues from its last completed epoch.
Errors the user can fix print one ``error:`` line on stderr and exit with status 2.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from efficientnet.builder import SpecEfficientNet, build_model
from efficientnet.checkpoint import (CHECKPOINT_NAME, CheckpointError, is_trial_checkpoint, load_checkpoint,
                                     rng_state, save_checkpoint, set_rng_state)
from efficientnet.data import DataError, load_dataset, make_loaders, subset_train
from efficientnet.metrics import EpochMetrics
from efficientnet.spec import ArchSpec, SpecError, resolve_arch
from efficientnet.trial_config import (ConfigError, TrialConfig, apply_hyperparameters, output_dir_for, parse_config,
                                       resolve_spec)
from efficientnet.training import (NonFiniteLossError, TrainingError, amp_dtype, build_optimizer, build_scheduler,
                                   evaluate, prepare_model, resolve_device, train_step, use_channels_last,
                                   warmup_steps_for)
from efficientnet.weights import WeightsError
from utils import AverageMeter, accuracy

log = logging.getLogger("efficientnet.trial")
USER_ERRORS = (ConfigError, DataError, CheckpointError, SpecError, WeightsError, TrainingError)
EXIT_USER_ERROR = 2


# ----------------------------------------------------------------------------------------------------- NNI
def under_nni() -> bool:
    """True when NNI launched this process (it sets the trial id); a hand run is ``STANDALONE``."""
    import nni

    return nni.get_trial_id() != "STANDALONE"


def get_proposal(cfg: TrialConfig) -> dict[str, Any]:
    """The tuner's proposal under NNI (or with ``--request-from-nni``); ``{}`` by hand."""
    if not (under_nni() or cfg.request_from_nni):
        return {}
    import nni

    with warnings.catch_warnings():  # standalone NNI warns that no tuner is running: the flags apply then
        warnings.simplefilter("ignore", RuntimeWarning)
        params = nni.get_next_parameter()
    return dict(params or {})


def report(metrics: dict[str, Any], final: bool = False) -> None:
    """``nni.report_intermediate_result`` / ``report_final_result`` under NNI; nothing by hand."""
    if not under_nni():
        return
    import nni

    (nni.report_final_result if final else nni.report_intermediate_result)(metrics)


# ----------------------------------------------------------------------------------------------------- setup
def setup_logging(out_dir: Path) -> list[logging.Handler]:
    """Plain lines to stdout and ``out_dir/log.txt``; returns the handlers (removed by :func:`main`)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout),
                                       logging.FileHandler(out_dir / "log.txt", encoding="utf-8")]
    for h in handlers:
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handlers


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def show_progress(cfg: TrialConfig) -> bool:
    """tqdm bars: on a terminal by hand; never under NNI."""
    if cfg.progress != "auto":
        return cfg.progress == "on"
    return sys.stderr.isatty() and not under_nni()


# ----------------------------------------------------------------------------------------------------- state
@dataclass
class TrainState:
    """Everything a checkpoint restores."""

    model: SpecEfficientNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    epoch: int = 0  # completed epochs
    best_top1: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    rng: dict[str, Any] | None = None


def initial_model(cfg: TrialConfig, spec: ArchSpec, num_classes: int, out_dir: Path) -> tuple[SpecEfficientNet, dict | None]:
    """Build the model from (in order) the output dir's own checkpoint, ``--resume`` or ``--weights``.

    Returns the model and, for a full resume of the same architecture, the checkpoint to restore the rest from.
    """
    own = out_dir / CHECKPOINT_NAME
    if cfg.auto_resume and own.is_file():
        ckpt = load_checkpoint(own)
        if not is_trial_checkpoint(ckpt):
            raise CheckpointError(f"{own} is not a checkpoint of this trainer; move it away or pass --no-auto-resume")
        if ArchSpec.from_dict(ckpt["spec"]) != spec or ckpt.get("num_classes") != num_classes:
            raise CheckpointError(f"{out_dir} holds a checkpoint of another architecture or class count "
                                  f"({ckpt.get('arch')}, {ckpt.get('num_classes')} classes); use another "
                                  "--output-dir or pass --no-auto-resume")
        return _model_from_checkpoint(ckpt, spec, num_classes), ckpt
    if cfg.resume:
        path = Path(cfg.resume).expanduser()
        if path.is_file():
            return _model_from_resume(path, spec, num_classes)
        log.warning("warning: --resume %s does not exist; starting from --weights %s", path, cfg.weights)
    weights = None if cfg.weights.lower() == "none" else cfg.weights
    weights_spec = resolve_arch(cfg.weights_arch) if cfg.weights_arch else None
    model = build_model(spec, num_classes, weights=weights, weights_spec=weights_spec)
    if model.inheritance is not None:
        log.info("weights %s: %s", cfg.weights, model.inheritance.summary())
    return model, None


def _model_from_checkpoint(ckpt: dict, spec: ArchSpec, num_classes: int) -> SpecEfficientNet:
    model = SpecEfficientNet(spec, num_classes)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint tensors do not fit the model ({str(exc).splitlines()[0][:120]}); "
                              "the file is damaged") from None
    model.inheritance = None
    return model


def _model_from_resume(path: Path, spec: ArchSpec, num_classes: int) -> tuple[SpecEfficientNet, dict | None]:
    ckpt = load_checkpoint(path)
    if is_trial_checkpoint(ckpt):
        same_spec = ArchSpec.from_dict(ckpt["spec"]) == spec
        if same_spec and ckpt.get("num_classes") == num_classes:
            return _model_from_checkpoint(ckpt, spec, num_classes), ckpt
        model = build_model(spec, num_classes, weights=ckpt)
        if same_spec:
            log.warning("warning: --resume %s has %s classes, this dataset %d: only the classifier head is "
                        "re-initialised; training starts at epoch 1", path, ckpt.get("num_classes"), num_classes)
        else:
            log.warning("warning: --resume %s is another architecture (%s): its weights are inherited (%s); "
                        "training starts at epoch 1", path, ckpt.get("arch"), model.inheritance.summary())
        return model, None
    try:
        model = build_model(spec, num_classes, weights=ckpt)
    except WeightsError:
        raise CheckpointError(f"{path} is not a checkpoint of this trainer nor a state dict of a known "
                              "EfficientNet; give one of this trainer's checkpoints or a model state dict") from None
    log.warning("warning: --resume %s is a plain state dict: its weights are inherited (%s); training starts at "
                "epoch 1", path, model.inheritance.summary())
    return model, None


def checkpoint_state(state: TrainState, cfg: TrialConfig, spec: ArchSpec, classes: list[str]) -> dict[str, Any]:
    """The one dict a checkpoint holds (tensors and plain values only)."""
    return {
        "spec": spec.to_dict(),
        "arch": str(spec),
        "num_classes": len(classes),
        "classes": list(classes),
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "epoch": state.epoch,
        "best_top1": state.best_top1,
        "best_epoch": state.best_epoch,
        "history": state.history,
        "rng": rng_state(),
        "args": {k: v for k, v in cfg.to_dict().items()},
    }


# ----------------------------------------------------------------------------------------------------- metrics
def final_result(state: TrainState, spec: ArchSpec, num_classes: int, cfg: TrialConfig) -> dict[str, Any]:
    """The final NNI metric: ``default`` = best validation top-1 (percent) and the best epoch's other metrics."""
    from efficientnet.profiler import measure_latency, profile

    best = state.history[state.best_epoch - 1]
    prof = profile(spec, num_classes=num_classes)
    result: dict[str, Any] = {"default": best["val_top1"], "top1": best["val_top1"]}
    for key in ("top5", "f1", "precision", "recall", "loss"):
        if f"val_{key}" in best:
            result[key] = best[f"val_{key}"]
    result.update(params=prof.params, macs=prof.macs)
    if cfg.latency:
        result["latency_ms"] = round(measure_latency(spec, num_classes=num_classes), 3)
    result.update(epochs=state.epoch, best_epoch=state.best_epoch, arch=str(spec))
    return result


def write_json(obj: Any, path: Path) -> None:
    """Write JSON atomically (temporary file + ``os.replace``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------- training
def run(cfg: TrialConfig) -> dict[str, Any]:
    """Train one trial end to end; return the final result dict."""
    # -- configuration: flags, then the tuner's proposal
    proposal = get_proposal(cfg)
    cfg, ignored = apply_hyperparameters(cfg, proposal)
    spec = resolve_spec(cfg, proposal)
    out_dir = output_dir_for(cfg, spec, os.environ.get("NNI_OUTPUT_DIR") if under_nni() else None)
    out_dir.mkdir(parents=True, exist_ok=True)
    handlers = setup_logging(out_dir)
    try:
        return _train(cfg, spec, out_dir, proposal, ignored)
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()
        log.propagate = True


def _train(cfg: TrialConfig, spec: ArchSpec, out_dir: Path, proposal: dict, ignored: list[str]) -> dict[str, Any]:
    device, device_warning = resolve_device(cfg.device, cfg.gpu)
    if device_warning:
        log.warning(device_warning)
    if ignored:
        log.warning("warning: ignoring proposal keys the trainer does not use: %s", ", ".join(sorted(ignored)))
    log.info("arch %s", spec)
    log.info("output %s | device %s | %s", out_dir, device, "NNI trial" if under_nni() else "hand run")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)

    # -- data
    split = load_dataset(cfg.data, spec, val_split=cfg.val_split, seed=cfg.seed, num_classes=cfg.num_classes,
                         cache_dir=cfg.download_dir if cfg.data == "digits" else None, hflip=cfg.hflip,
                         min_scale=cfg.min_scale)
    split = subset_train(split, cfg.subset, cfg.seed)
    num_classes = split.num_classes
    train_loader, val_loader, shuffle_gen = make_loaders(split, cfg.batch_size, cfg.workers, device.type == "cuda")
    log.info("data %s (%s): %d classes, %d train / %d val images", split.root, split.layout, num_classes,
             len(split.train), len(split.val))

    # -- model, optimizer, schedule: fresh, inherited or resumed
    model, ckpt = initial_model(cfg, spec, num_classes, out_dir)
    channels_last = use_channels_last(cfg.channels_last)
    model = prepare_model(model, device, channels_last, cfg.bn_momentum)
    dtype = amp_dtype(device, cfg.amp)
    steps_per_epoch = len(train_loader)
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    scheduler = build_scheduler(optimizer, total_steps, warmup_steps_for(total_steps, steps_per_epoch,
                                                                         cfg.warmup_epochs))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    state = TrainState(model, optimizer, scheduler, scaler)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        state.epoch, state.best_top1, state.best_epoch = ckpt["epoch"], ckpt["best_top1"], ckpt["best_epoch"]
        state.history = list(ckpt["history"])
        set_rng_state(ckpt["rng"])
        log.info("resumed at epoch %d from %s (best top-1 so far %.2f%% at epoch %d)", state.epoch + 1,
                 out_dir / CHECKPOINT_NAME if (out_dir / CHECKPOINT_NAME).is_file() else cfg.resume,
                 state.best_top1, state.best_epoch)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    eval_loss = nn.CrossEntropyLoss()
    writer = _summary_writer(out_dir, state.epoch)
    bars = show_progress(cfg)

    # -- the loop
    for epoch in range(state.epoch, cfg.epochs):
        shuffle_gen.manual_seed(cfg.seed * 100_003 + epoch)  # the same order whether or not the run was resumed
        start = time.time()
        model.train()
        losses, top1 = AverageMeter("loss"), AverageMeter("top1")
        batches = _bar(train_loader, f"epoch {epoch + 1}/{cfg.epochs}", bars)
        for step, (images, targets) in enumerate(batches):
            try:
                loss, logits = train_step(model, images, targets, optimizer, loss_fn, scheduler=scheduler,
                                          scaler=scaler, dtype=dtype, clip_grad=cfg.clip_grad,
                                          channels_last=channels_last)
            except NonFiniteLossError as exc:
                raise TrainingError(
                    f"loss became {exc.value} at epoch {epoch + 1}, step {step + 1}; lower --lr (now {cfg.lr:g})"
                    f"{' or pass --amp off' if dtype is not None else ''}; "
                    + (f"the checkpoint of epoch {epoch} is kept" if epoch else "no checkpoint was written")
                ) from None
            losses.update(loss, targets.shape[0])
            top1.update(float(accuracy(logits, targets.to(logits.device))[0]), targets.shape[0])
            if bars:
                batches.set_postfix(loss=f"{losses.avg:.3f}", top1=f"{top1.avg:.1f}")
        val = evaluate(model, _bar(val_loader, "val", bars), eval_loss, EpochMetrics(num_classes), dtype=dtype,
                       channels_last=channels_last).compute()
        state.epoch = epoch + 1
        if val["top1"] > state.best_top1:
            state.best_top1, state.best_epoch = val["top1"], state.epoch
        record = {"epoch": state.epoch, "train_loss": losses.avg, "train_top1": top1.avg,
                  "lr": optimizer.param_groups[0]["lr"], "time_s": round(time.time() - start, 3),
                  **{f"val_{k}": v for k, v in val.items()}}
        state.history.append(record)
        save_checkpoint(checkpoint_state(state, cfg, spec, split.classes), out_dir,
                        is_best=state.best_epoch == state.epoch)
        log.info(_epoch_line(record, cfg.epochs, state))
        for key, value in record.items():
            if key != "epoch":
                writer.add_scalar(key.replace("_", "/", 1), value, state.epoch)
        writer.flush()
        report({"default": val["top1"], **{k: v for k, v in val.items() if k in ("loss", "top5", "f1")}})
    writer.close()

    # -- final metrics, once per trial
    result = final_result(state, spec, num_classes, cfg)
    write_json({**result, "spec": spec.to_dict(), "classes": split.classes, "history": state.history,
                "proposal": proposal, "config": cfg.to_dict()}, out_dir / "result.json")
    log.info("final: best top-1 %.2f%% at epoch %d | params %d | MACs %d%s | %s", result["top1"],
             result["best_epoch"], result["params"], result["macs"],
             f" | latency {result['latency_ms']:.2f} ms" if "latency_ms" in result else "", out_dir / "result.json")
    report(result, final=True)
    return result


def _summary_writer(out_dir: Path, start_epoch: int):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(os.fspath(out_dir / "tensorboard"), purge_step=start_epoch + 1 if start_epoch else None)


def _bar(iterable, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)


def _epoch_line(r: dict[str, float], epochs: int, state: TrainState) -> str:
    parts = [f"epoch {int(r['epoch'])}/{epochs}", f"train_loss {r['train_loss']:.4f}",
             f"train_top1 {r['train_top1']:.2f}", f"val_loss {r['val_loss']:.4f}", f"val_top1 {r['val_top1']:.2f}"]
    if "val_top5" in r:
        parts.append(f"val_top5 {r['val_top5']:.2f}")
    parts += [f"val_f1 {r['val_f1']:.4f}", f"lr {r['lr']:.5f}", f"time {r['time_s']:.1f}s",
              f"best {state.best_top1:.2f}@{state.best_epoch}"]
    return " | ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns 0, or 2 after one ``error:`` line on stderr for a problem the user can fix."""
    try:
        run(parse_config(argv))
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
