"""Fine-tune one EfficientNet on an image folder: an NNI trial, or a script you run by hand.

By hand (no NNI needed)::

    python main_efficientnet.py --data digits --arch lite0 --width 0.25 --resolution 32 --epochs 3

As an NNI trial (``nni.get_next_parameter()`` supplies the architecture and hyperparameters)::

    trialCommand: python main_efficientnet.py --data digits --weights lite0 --request-from-nni

Outputs go to ``$NNI_OUTPUT_DIR`` under NNI, else ``--output-dir`` (default ``runs/<data>-<arch hash>``):
``checkpoint.pth.tar`` (every epoch, atomic), ``model_best.pth.tar``, ``result.json``, ``log.txt`` and TensorBoard
scalars in ``tensorboard/``. Rerunning a killed trial continues from its last completed epoch.
Errors the user can fix print one ``error:`` line on stderr and exit with status 2.

Progressive learning (EfficientNetV2): ``--progressive-stages 4`` trains in stages of growing image size, dropout,
RandAugment and mixup (``efficientnet/progressive.py``). Data-parallel on several GPUs or machines::

    python -m torch.distributed.run --standalone --nproc_per_node 2 main_efficientnet.py --data digits ...

Each rank trains on its shard; rank 0 alone talks to NNI and writes checkpoints, logs and results.
"""

from __future__ import annotations

if __name__ == "__main__":  # started by a Python without the project's packages: one line, not a traceback
    from efficientnet.environment import exit_if_incomplete

    exit_if_incomplete()

import logging
import math
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

from efficientnet import distributed
from efficientnet.builder import SpecEfficientNet
from efficientnet.checkpoint import (BEST_NAME, CHECKPOINT_NAME, CheckpointError, OutputError, UnreadableCheckpoint,
                                     atomic_write_json, describe_checkpoint, is_trial_checkpoint, load_checkpoint,
                                     rng_state, save_checkpoint, set_rng_state)
from efficientnet.data import (DataError, DatasetSplit, build_data_cache, default_workers, load_dataset, make_loaders,
                               seed_epoch, set_train_transform, subset_train, train_transform)
from efficientnet.datacache import DataCache, DataCacheError
from efficientnet.distributed import Dist
from efficientnet.metrics import EpochMetrics, TrainMeter
from efficientnet.progressive import Progressive, ProgressiveError, Stage, mixup_batch, mixup_loss
from efficientnet.spec import ArchSpec, SpecError, resolve_arch
from efficientnet.stopping import StopSignals, TrialStopped, critical, die_by
from efficientnet.trial_config import (ConfigError, TrialConfig, apply_hyperparameters, output_dir_for,
                                       overridden_flags, parse_config, resolve_spec)
from efficientnet.training import (NonFiniteLossError, TrainingError, amp_dtype, build_optimizer, build_scheduler,
                                   evaluate, loss_check_interval, prepare_model, read_loss, resolve_device, train_step,
                                   use_channels_last, warmup_steps_for)
from efficientnet.weights import WeightsError, build_model

log = logging.getLogger("efficientnet.trial")
USER_ERRORS = (ConfigError, DataError, DataCacheError, CheckpointError, OutputError, SpecError, WeightsError,
               TrainingError, ProgressiveError)
PROGRESS_EVERY = 20  # steps between progress-bar updates (each reads the running loss back from the device)
EXIT_USER_ERROR = 2


# ----------------------------------------------------------------------------------------------------- NNI
def under_nni() -> bool:
    """True when NNI launched this process: it sets ``NNI_TRIAL_JOB_ID`` (what ``nni.get_trial_id()`` reads; a
    hand run is ``STANDALONE``). Read from the environment, so ranks other than 0 never import ``nni``."""
    return (os.environ.get("NNI_TRIAL_JOB_ID") or "STANDALONE") != "STANDALONE"


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
    """``nni.report_intermediate_result`` / ``report_final_result`` under NNI; nothing by hand.

    When NNI no longer answers (``nnictl stop`` closes the channel before it stops the trials), the result is
    already in the checkpoint and ``result.json``: say so in one line and go on, until the stop signal comes.
    """
    if not under_nni():
        return
    import nni

    try:
        (nni.report_final_result if final else nni.report_intermediate_result)(metrics)
    except OSError as exc:  # requests' connection errors are OSErrors
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        log.warning("warning: NNI did not take the %s result (%s); it is kept in the output folder",
                    "final" if final else "epoch's", first)


# ----------------------------------------------------------------------------------------------------- setup
class _LogFile(logging.FileHandler):
    """``log.txt``: a line that cannot be written (a full disk) is dropped quietly; the checkpoint write that
    follows reports the folder's problem as the run's one error line."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def setup_logging(out_dir: Path, rank: int = 0) -> list[logging.Handler]:
    """Plain lines to stdout and ``out_dir/log.txt``; returns the handlers (removed by :func:`main`).

    Ranks other than 0 log only errors, to stderr, tagged with their rank.
    """
    if rank:
        handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
        handlers[0].setFormatter(logging.Formatter(f"[rank {rank}] %(message)s"))
        log.addHandler(handlers[0])
        log.setLevel(logging.ERROR)
        log.propagate = False
        return handlers
    try:
        handlers = [logging.StreamHandler(sys.stdout), _LogFile(out_dir / "log.txt", encoding="utf-8")]
    except OSError as exc:
        raise OutputError.writing(out_dir / "log.txt", exc) from None
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


def show_progress(cfg: TrialConfig, dist_info: Dist = Dist()) -> bool:
    """tqdm bars: on a terminal by hand; never under NNI, never on ranks other than 0."""
    if not dist_info.is_main:
        return False
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


def initial_model(cfg: TrialConfig, spec: ArchSpec, num_classes: int, out_dir: Path,
                  dynamic_padding: bool = False) -> tuple[SpecEfficientNet, dict | None, Path | None]:
    """Build the model from (in order) the output dir's own checkpoint, ``--resume`` or ``--weights``.

    Returns the model and, for a full resume of the same architecture, the checkpoint to restore the rest from and
    its path. ``dynamic_padding`` (progressive learning) pads "same" for every input size; the weights are the same.
    """
    model, ckpt, source = _initial_model(cfg, spec, num_classes, out_dir)
    if dynamic_padding:
        dynamic = SpecEfficientNet(spec, num_classes, dynamic_padding=True)
        dynamic.load_state_dict(model.state_dict())
        dynamic.inheritance = model.inheritance
        model = dynamic
    return model, ckpt, source


def _initial_model(cfg: TrialConfig, spec: ArchSpec, num_classes: int,
                   out_dir: Path) -> tuple[SpecEfficientNet, dict | None, Path | None]:
    own = out_dir / CHECKPOINT_NAME
    if cfg.auto_resume and own.is_file():
        try:
            ckpt = load_checkpoint(own)
        except UnreadableCheckpoint as exc:
            raise CheckpointError(f"cannot read checkpoint {own} ({exc.reason}), which this run would resume from: it "
                                  f"is damaged; {_what_is_intact(out_dir)}") from None
        if not is_trial_checkpoint(ckpt):
            raise CheckpointError(f"{own} is not a checkpoint of this trainer; move it away or pass --no-auto-resume")
        if ArchSpec.from_dict(ckpt["spec"]) != spec or ckpt.get("num_classes") != num_classes:
            raise CheckpointError(f"{out_dir} holds a checkpoint of another architecture or class count "
                                  f"({ckpt.get('arch')}, {ckpt.get('num_classes')} classes); use another "
                                  "--output-dir or pass --no-auto-resume")
        return _model_from_checkpoint(ckpt, spec, num_classes), ckpt, own
    path = resume_path(cfg, out_dir)
    if path is not None:
        model, ckpt = _model_from_resume(path, spec, num_classes)
        if ckpt is None or path.parent.resolve() != out_dir.resolve():
            _keep_earlier_best(out_dir)
        return model, ckpt, path if ckpt is not None else None
    _keep_earlier_best(out_dir)
    weights = None if cfg.weights.lower() == "none" else cfg.weights
    weights_spec = resolve_arch(cfg.weights_arch) if cfg.weights_arch else None
    model = build_model(spec, num_classes, weights=weights, weights_spec=weights_spec)
    if model.inheritance is not None:
        log.info("weights %s: %s", cfg.weights, model.inheritance.summary())
    return model, None, None


def resume_path(cfg: TrialConfig, out_dir: Path) -> Path | None:
    """The checkpoint ``--resume`` names; a missing path or a folder is an error (a run asked to resume must not
    start afresh). Under NNI, the old seed's ``--resume ./model_best.pth.tar`` (a bare file name of this trainer's)
    means the trial's own file in its output folder, if it has one yet."""
    if not cfg.resume:
        return None
    path = Path(cfg.resume).expanduser()
    if path.is_file():
        return path
    if under_nni() and path.name in (BEST_NAME, CHECKPOINT_NAME) and not path.parent.name:
        own = out_dir / path.name
        if own.is_file():
            return own
        log.info("--resume %s: this trial has none yet in %s; starting from --weights %s", cfg.resume, out_dir,
                 cfg.weights)
        return None
    if path.is_dir():
        inside = [p for p in (path / CHECKPOINT_NAME, path / BEST_NAME) if p.is_file()]
        raise CheckpointError(f"--resume {path} is a folder: give a checkpoint file"
                              + (f", e.g. {inside[0]}" if inside else " (it holds no checkpoint of this trainer)"))
    raise CheckpointError(f"--resume {path} does not exist; check the path, or leave --resume out to start from "
                          f"--weights {cfg.weights}")


def _what_is_intact(out_dir: Path) -> str:
    """What a damaged checkpoint leaves in ``out_dir``, and how to continue from it."""
    best = out_dir / BEST_NAME
    described = describe_checkpoint(best) if best.is_file() else None
    if described is None:
        return f"no intact checkpoint is left in {out_dir}: move the damaged file away to start over"
    return (f"{best} is intact ({described}): continue from it with --resume {best} --no-auto-resume (the damaged "
            "file is replaced after the next epoch)")


def _keep_earlier_best(out_dir: Path) -> None:
    """A run that does not continue this folder's own checkpoint must not overwrite its ``model_best.pth.tar``."""
    best = out_dir / BEST_NAME
    if best.is_file():
        described = describe_checkpoint(best) or "unreadable"
        raise CheckpointError(f"{out_dir} holds {BEST_NAME} of an earlier run ({described}) and no checkpoint "
                              f"this run continues, so it would be overwritten: continue from it with --resume {best} "
                              "--no-auto-resume, or start over in another --output-dir (or move the file away)")


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
def final_result(state: TrainState, spec: ArchSpec, num_classes: int, cfg: TrialConfig,
                 proposal: dict[str, Any] | None = None) -> dict[str, Any]:
    """The final NNI metric: ``default`` = best validation top-1 (percent) and the best epoch's other metrics.

    It also echoes the training budget: ``budget`` (the proposal's, else ``full``), ``subset`` and ``epochs`` as
    used, so proxy results can be told from full-budget ones.
    """
    from efficientnet.profiler import profile

    best = state.history[state.best_epoch - 1]
    prof = profile(spec, num_classes=num_classes, latency=cfg.latency)
    result: dict[str, Any] = {"default": best["val_top1"], "top1": best["val_top1"]}
    for key in ("top5", "f1", "precision", "recall", "loss"):
        if f"val_{key}" in best:
            result[key] = best[f"val_{key}"]
    result.update(params=prof.params, macs=prof.macs)
    if prof.latency_ms is not None:
        result["latency_ms"] = round(prof.latency_ms, 3)
    result.update(epochs=state.epoch, best_epoch=state.best_epoch, arch=str(spec),
                  budget=str((proposal or {}).get("budget") or "full"), subset=cfg.subset)
    return result


# ----------------------------------------------------------------------------------------------------- training
def run(cfg: TrialConfig) -> dict[str, Any]:
    """Train one trial end to end; return the final result dict.

    Under ``torchrun`` every rank runs this: rank 0 asks NNI for the proposal and hands it to the others.
    """
    dist_info, dist_device = distributed.init(cfg.device)
    try:
        # -- configuration: flags, then the tuner's proposal (rank 0 asks NNI; every rank gets the same)
        proposal = distributed.broadcast_object(get_proposal(cfg) if dist_info.is_main else None, dist_info)
        cfg, ignored = apply_hyperparameters(cfg, proposal)
        spec = resolve_spec(cfg, proposal)
        out_dir = output_dir_for(cfg, spec, os.environ.get("NNI_OUTPUT_DIR") if under_nni() else None)
        if dist_info.is_main:
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError.writing(out_dir, exc) from None
        distributed.barrier(dist_info)
        handlers = setup_logging(out_dir, dist_info.rank)
        try:
            for note in overridden_flags(cfg, proposal, spec):
                log.warning("note: %s", note)
            return _train(cfg, spec, out_dir, proposal, ignored, dist_info, dist_device)
        finally:
            for h in handlers:
                log.removeHandler(h)
                h.close()
            log.propagate = True
    finally:
        distributed.shutdown(dist_info)


def progressive_plan(cfg: TrialConfig, spec: ArchSpec) -> Progressive | None:
    """The stage plan of ``--progressive-stages`` (``None`` when off)."""
    if not cfg.progressive_stages:
        return None
    return Progressive(cfg.progressive_stages, cfg.epochs, spec.resolution, cfg.progressive_min_res,
                       tuple(cfg.progressive_dropout), tuple(cfg.progressive_randaug), tuple(cfg.progressive_mixup))


def apply_stage(stage: Stage, model: SpecEfficientNet, split: DatasetSplit, spec: ArchSpec, cfg: TrialConfig,
                cache: DataCache | None = None) -> None:
    """Set a progressive stage: the classifier dropout and, for per-image loading, the training images' size and
    RandAugment magnitude (a data cache takes them from the stage when its loaders are built)."""
    if cache is None:
        set_train_transform(split, train_transform(spec, hflip=split.hflip, min_scale=cfg.min_scale,
                                                   resolution=stage.resolution, randaug=stage.randaug))
    model._dropout.p = stage.dropout


def _train(cfg: TrialConfig, spec: ArchSpec, out_dir: Path, proposal: dict, ignored: list[str],
           dist_info: Dist = Dist(), dist_device: torch.device | None = None) -> dict[str, Any]:
    main_rank = dist_info.is_main
    if dist_device is not None:
        device = dist_device
    else:
        device, device_warning = resolve_device(cfg.device, cfg.gpu)
        if device_warning:
            log.warning(device_warning)
    if ignored:
        log.warning("warning: ignoring proposal keys the trainer does not use: %s", ", ".join(sorted(ignored)))
    log.info("arch %s", spec)
    log.info("output %s | device %s | %s", out_dir, device, "NNI trial" if under_nni() else "hand run")
    if dist_info.enabled:
        log.info("data parallel: %d ranks (%s), rank 0 writes checkpoints and reports", dist_info.world_size,
                 dist_info.backend)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed + dist_info.rank)  # ranks draw different augmentations; DDP syncs the weights
    plan = progressive_plan(cfg, spec)

    # -- data
    split = load_dataset(cfg.data, spec, val_split=cfg.val_split, seed=cfg.seed, num_classes=cfg.num_classes,
                         cache_dir=cfg.download_dir if cfg.data == "digits" else None, hflip=cfg.hflip,
                         min_scale=cfg.min_scale)
    split = subset_train(split, cfg.subset, cfg.seed)
    num_classes = split.num_classes

    workers = default_workers(device) if cfg.workers is None else cfg.workers
    cache, cache_line = build_data_cache(split, spec, cfg.data_cache, device, min_scale=cfg.min_scale,
                                         workers=workers)

    def loaders(stage: Stage | None = None):
        if cache is not None:
            return cache.loaders(cfg.batch_size, device, stage.resolution if stage else spec.resolution,
                                 stage.randaug if stage else 0, rank=dist_info.rank,
                                 world_size=dist_info.world_size, seed=cfg.seed)
        return make_loaders(split, cfg.batch_size, workers, device.type == "cuda", rank=dist_info.rank,
                            world_size=dist_info.world_size, seed=cfg.seed)

    train_loader, val_loader, order = loaders()
    log.info("data %s (%s): %d classes, %d train / %d val images", split.root, split.layout, num_classes,
             len(split.train), len(split.val))
    log.info("%s", cache_line)
    if dist_info.enabled:
        shards = distributed.all_gather_object((len(train_loader.sampler), len(val_loader.dataset)), dist_info)
        log.info("data shards: train %s = %d images per epoch (%d unique), val %s = %d images",
                 " + ".join(str(t) for t, _ in shards), sum(t for t, _ in shards), len(split.train),
                 " + ".join(str(v) for _, v in shards), sum(v for _, v in shards))
    if plan is not None:
        log.info("progressive learning: %s", "; ".join(st.describe() for st in plan.plan()))

    # -- model, optimizer, schedule: fresh, inherited or resumed
    model, ckpt, resumed_from = initial_model(cfg, spec, num_classes, out_dir, dynamic_padding=plan is not None)
    channels_last = use_channels_last(cfg.channels_last)
    model = prepare_model(model, device, channels_last, cfg.bn_momentum)
    net: nn.Module = model
    if dist_info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    dtype = amp_dtype(device, cfg.amp)
    log.info("precision %s | memory format %s%s", f"{str(dtype).replace('torch.', '')} autocast" if dtype else "fp32",
             "channels_last" if channels_last else "NCHW", " | torch.compile" if cfg.compile else "")
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
        if main_rank:
            set_rng_state(ckpt["rng"])
        else:  # the checkpoint holds rank 0's RNG; the others continue on their own seeded streams
            seed_everything(cfg.seed + dist_info.rank + 1_000 * state.epoch)
        log.info("resumed at epoch %d from %s (best top-1 so far %.2f%% at epoch %d)", state.epoch + 1, resumed_from,
                 state.best_top1, state.best_epoch)
    starts = distributed.all_gather_object(state.epoch, dist_info)
    if len(set(starts)) > 1:
        raise CheckpointError(f"the ranks found different checkpoints (completed epochs {starts}); the output dir "
                              f"{out_dir} must be one directory that every node reads (a shared filesystem)")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    eval_loss = nn.CrossEntropyLoss()
    writer = _summary_writer(out_dir, state.epoch) if main_rank else None
    bars = show_progress(cfg, dist_info)
    loss_value = distributed.mean_loss(dist_info) or read_loss
    check_every = loss_check_interval(device)
    stage: Stage | None = None

    # -- the loop
    try:
        for epoch in range(state.epoch, cfg.epochs):
            if plan is not None and (stage is None or plan.stage_index(epoch) != stage.index):
                stage = plan.stage(epoch)
                apply_stage(stage, model, split, spec, cfg, cache)
                train_loader, val_loader, order = loaders(stage)  # worker processes hold the old transform
                log.info("%s", stage.describe())
            seed_epoch(order, cfg.seed, epoch)  # the same order whether or not the run was resumed
            start = time.time()
            net.train()
            meter = TrainMeter()  # loss and accuracy stay on the device until the epoch ends
            batches = _bar(train_loader, f"epoch {epoch + 1}/{cfg.epochs}", bars)
            for step, (images, targets) in enumerate(batches):
                batch_loss = loss_fn
                if stage is not None and stage.mixup > 0:
                    images, targets, mixed_with, lam = mixup_batch(images, targets, stage.mixup)
                    batch_loss = mixup_loss(loss_fn, mixed_with, lam)
                try:
                    loss, logits = train_step(net, images, targets, optimizer, batch_loss, scheduler=scheduler,
                                              scaler=scaler, dtype=dtype, clip_grad=cfg.clip_grad,
                                              channels_last=channels_last,
                                              check_loss=loss_value if step % check_every == 0 else None)
                except NonFiniteLossError as exc:
                    raise TrainingError(f"loss became {exc.value} at epoch {epoch + 1}, step {step + 1}; "
                                        f"{_nan_advice(cfg, dtype, state.epoch)}") from None
                meter.update(loss, logits, targets)
                if bars and step % PROGRESS_EVERY == 0:
                    running_loss, running_top1 = meter.read()
                    batches.set_postfix(loss=f"{running_loss:.3f}", top1=f"{running_top1:.1f}")
            train_loss, train_top1 = _reduce_means(meter, dist_info, device)  # waits for the epoch's steps
            train_seconds = time.time() - start
            if not math.isfinite(train_loss):  # a NaN between two checks: stop before it reaches a checkpoint
                raise TrainingError(f"loss became {train_loss} during epoch {epoch + 1}; "
                                    f"{_nan_advice(cfg, dtype, state.epoch)}")
            distributed.sync_buffers(model, dist_info)  # every rank validates with rank 0's BatchNorm statistics
            metrics = evaluate(model, _bar(val_loader, "val", bars), eval_loss, EpochMetrics(num_classes),
                               dtype=dtype, channels_last=channels_last)
            if dist_info.enabled:
                metrics = EpochMetrics.merged(distributed.all_gather_object(metrics.cpu(), dist_info))
            val = metrics.compute()
            with critical():  # a stop signal waits: the epoch is saved and reported whole, or not at all
                state.epoch = epoch + 1
                if val["top1"] > state.best_top1:
                    state.best_top1, state.best_epoch = val["top1"], state.epoch
                record = {"epoch": state.epoch, "train_loss": train_loss, "train_top1": train_top1,
                          "lr": optimizer.param_groups[0]["lr"], "time_s": round(time.time() - start, 3),
                          "train_time_s": round(train_seconds, 3), **{f"val_{k}": v for k, v in val.items()}}
                if stage is not None:
                    record.update(stage=stage.index + 1, train_res=stage.resolution, train_dropout=stage.dropout,
                                  train_randaug=stage.randaug, train_mixup=stage.mixup)
                state.history.append(record)
                if main_rank:
                    save_checkpoint(checkpoint_state(state, cfg, spec, split.classes), out_dir,
                                    is_best=state.best_epoch == state.epoch)
                    log.info(_epoch_line(record, cfg.epochs, state))
                    writer = _write_scalars(writer, record, out_dir)
                    report({"default": val["top1"], **{k: v for k, v in val.items() if k in ("loss", "top5", "f1")}})
            distributed.barrier(dist_info)  # nobody runs ahead of the checkpoint (a kill resumes every rank alike)
    except TrialStopped as stop:
        stop.detail = f" in epoch {state.epoch + 1}: {_kept(state.epoch, out_dir)}"
        raise
    finally:
        if writer is not None:
            try:
                writer.close()
            except OSError:  # its folder cannot be written: the error that matters is reported elsewhere
                pass

    # -- final metrics, once per trial (rank 0 writes and reports; every rank returns them)
    result = None
    if main_rank:
        result = final_result(state, spec, num_classes, cfg, proposal)
        atomic_write_json({**result, "spec": spec.to_dict(), "classes": split.classes, "history": state.history,
                    "proposal": proposal, "config": cfg.to_dict(),
                    **({"world_size": dist_info.world_size} if dist_info.enabled else {})}, out_dir / "result.json")
        log.info("final: best top-1 %.2f%% at epoch %d | params %d | MACs %d%s | %s", result["top1"],
                 result["best_epoch"], result["params"], result["macs"],
                 f" | latency {result['latency_ms']:.2f} ms" if "latency_ms" in result else "",
                 out_dir / "result.json")
        report(result, final=True)
    return distributed.broadcast_object(result, dist_info)


def _kept(completed: int, out_dir: Path) -> str:
    """What a stopped or failed trial leaves behind."""
    if not completed:
        return "no checkpoint was written yet"
    return f"the checkpoint of epoch {completed} is kept in {out_dir / CHECKPOINT_NAME}"


def _nan_advice(cfg: TrialConfig, dtype: torch.dtype | None, completed: int) -> str:
    return (f"lower --lr (now {cfg.lr:g}){' or pass --amp off' if dtype is not None else ''}; "
            + (f"the checkpoint of epoch {completed} is kept" if completed else "no checkpoint was written"))


def _reduce_means(meter: TrainMeter, dist_info: Dist, device: torch.device) -> tuple[float, float]:
    """The epoch's training loss and top-1 (%) over all ranks (sample-weighted): one read from the device."""
    loss_sum, correct, n = distributed.all_reduce_sum(meter.totals(), dist_info, device)
    return (loss_sum / n, 100.0 * correct / n) if n else (0.0, 0.0)


def _summary_writer(out_dir: Path, start_epoch: int):
    """TensorBoard's writer for ``out_dir/tensorboard``; ``None`` (with one line saying so) without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("no TensorBoard logs: the tensorboard package is not installed (pip install tensorboard)")
        return None

    return SummaryWriter(os.fspath(out_dir / "tensorboard"), purge_step=start_epoch + 1 if start_epoch else None)


def _write_scalars(writer, record: dict[str, float], out_dir: Path):
    """One epoch's scalars to TensorBoard; the writer, or None once its folder cannot be written (one line says so;
    training goes on)."""
    if writer is None:
        return None
    try:
        for key, value in record.items():
            if key != "epoch":
                writer.add_scalar(key.replace("_", "/", 1), value, int(record["epoch"]))
        writer.flush()
        return writer
    except OSError as exc:
        log.warning("warning: no more TensorBoard logs: %s", OutputError.writing(out_dir / "tensorboard", exc))
        return None


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
    if "stage" in r:
        parts.append(f"stage {int(r['stage'])} {int(r['train_res'])}px")
    return " | ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns 0, or 2 after one ``error:`` line on stderr for a problem the user can fix.

    SIGINT (Ctrl-C, NNI's assessor or ``nnictl stop``) and SIGTERM stop the trial at a safe point: one line says
    what was kept, then the process ends by that signal (NNI records EARLY_STOPPED or USER_CANCELED, not FAILED).
    """
    stopped: TrialStopped | None = None
    with StopSignals():
        try:
            run(parse_config(argv))
        except USER_ERRORS as exc:
            if distributed.from_env().is_main:  # every rank meets the same bad input: one line, from rank 0
                print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        except TrialStopped as exc:
            stopped = exc
    if stopped is not None:
        if distributed.from_env().is_main:
            print(f"stopped by {stopped.name}{stopped.detail}; rerun the same command to resume", file=sys.stderr)
        die_by(stopped.signum)
    return 0


if __name__ == "__main__":
    sys.exit(main())
