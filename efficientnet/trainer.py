"""One trial's training, in the steps that ``main_efficientnet.py``'s loop calls.

:meth:`Trial.setup` reads the flags and the proposal, loads the data, builds or restores the model and makes the
optimizer; then, for each epoch, :meth:`Trial.begin_epoch` (the progressive stage and the epoch's order),
:meth:`Trial.train_epoch`, :meth:`Trial.validate` and :meth:`Trial.close_epoch` (record the epoch, save the
checkpoint, log, report to NNI); at the end :meth:`Trial.finish` writes ``result.json`` and reports the final
result. A checkpoint is one dict (:meth:`Trial.checkpoint`).
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed, nni_io, warm_start
from .builder import SpecEfficientNet
from .atomic_files import OutputError, atomic_write_json
from .checkpoint import BEST_NAME, CHECKPOINT_NAME, CheckpointError, Start, continuation_source, plan_start, \
    rng_state, save_checkpoint, set_rng_state
from .data import IMBALANCE_RATIO, DatasetSplit, balanced_class_weights, build_data_cache, class_counts, \
    default_workers, load_dataset, make_loaders, seed_epoch, set_train_transform, subset_train, train_transform
from .distributed import Dist
from .memory import check_room, estimate_training_memory, memory_room, needed_bytes
from .metrics import EpochMetrics, TrainMeter, most_confused, per_class
from .progressive import Progressive, Stage, mixup_batch, mixup_loss
from .proposal import Proposal
from .spec import ArchSpec, resolve_arch
from .stopping import TrialStopped, critical
from .trial_config import EVAL_METRICS, TrialConfig, apply_hyperparameters, output_dir_for, overridden_flags, \
    resolve_spec
from .trial_log import Scalars, epoch_line, log, progress_bar, remove_logging, setup_logging
from .training import NonFiniteLossError, TrainingError, amp_dtype, build_optimizer, build_scheduler, evaluate, \
    loss_check_interval, prepare_model, read_loss, resolve_device, train_step, use_channels_last, warmup_steps_for
from .weights import WeightsError, build_model

__all__ = ["TrainState", "Trial", "final_result", "seed_everything"]

PROGRESS_EVERY = 20  # steps between progress-bar updates (each reads the running loss back from the device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainState:
    """What a checkpoint restores besides the model's, optimizer's, scheduler's and scaler's own states."""

    epoch: int = 0  # completed epochs
    best_score: float = -1.0  # the best epoch's --eval-metric, in percent (eval_score)
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_confusion: torch.Tensor | None = None  # the best epoch's validation confusion matrix (true x predicted)


@dataclass
class Trial:
    """Everything one run trains with; built by :meth:`setup`, used as a context manager (it closes its logs)."""

    cfg: TrialConfig
    spec: ArchSpec
    proposal: Proposal
    out_dir: Path
    dist: Dist
    device: torch.device
    split: DatasetSplit
    model: SpecEfficientNet
    net: nn.Module  # the model as trained: wrapped by DDP and/or torch.compile when asked
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None
    channels_last: bool
    state: TrainState
    plan: Progressive | None = None
    cache: Any = None  # the decoded-image cache, or None (per-image loading)
    workers: int = 0
    stage: Stage | None = None
    loaders: tuple[Any, Any, Any] = ()  # train loader, validation loader, the epoch order to seed
    loss_fn: nn.Module = field(default_factory=nn.CrossEntropyLoss)  # the training loss
    handlers: list = field(default_factory=list)
    scalars: Scalars | None = None
    bars: bool = False
    started: float = 0.0  # when the epoch in hand began
    first_epoch: int = 0  # completed epochs this run started from (resumed or continued)

    # ------------------------------------------------------------------------------------------ setup
    @classmethod
    def setup(cls, cfg: TrialConfig, proposal: Proposal, dist_info: Dist = Dist(),
              dist_device: torch.device | None = None, launched: float | None = None) -> "Trial":
        """Flags and proposal -> the settings and the architecture; then logs, data, model and optimizer.
        ``launched`` (a ``time.time()`` from the process's start) adds the imports to the log's start-up line."""
        began = time.time()
        cfg, ignored = apply_hyperparameters(cfg, proposal)
        spec = resolve_spec(cfg, proposal)
        out_dir = output_dir_for(cfg, spec, nni_io.output_dir())
        if dist_info.is_main:
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError.writing(out_dir, exc) from None
        distributed.barrier(dist_info)
        handlers = setup_logging(out_dir, dist_info.rank)
        try:
            device = _device(cfg, dist_device)
            for note in overridden_flags(cfg, proposal, spec):
                log.warning("note: %s", note)
            if ignored:
                log.warning("warning: ignoring proposal keys the trainer does not use: %s", ", ".join(sorted(ignored)))
            log.info("arch %s", spec)
            log.info("output %s | device %s | %s", out_dir, device, "NNI trial" if nni_io.under_nni() else "hand run")
            if dist_info.enabled:
                log.info("data parallel: %d ranks (%s), rank 0 writes checkpoints and reports", dist_info.world_size,
                         dist_info.backend)
            if cfg.threads:
                torch.set_num_threads(cfg.threads)
            seed_everything(cfg.seed + dist_info.rank)  # ranks draw different augmentations; DDP syncs the weights
            trial = cls._build(cfg, spec, proposal, out_dir, dist_info, device, handlers)
            now = time.time()
            log.info("started in %.1f s: %ssetup %.1f s (data, model, optimizer)%s", now - (launched or began),
                     f"imports {began - launched:.1f} s, " if launched else "", now - began,
                     "; warm: forked from a process that had imported torch" if warm_start.forked() else "")
            return trial
        except BaseException:
            remove_logging(handlers)
            raise

    @classmethod
    def _build(cls, cfg: TrialConfig, spec: ArchSpec, proposal: Proposal, out_dir: Path, dist_info: Dist,
               device: torch.device, handlers: list) -> "Trial":
        split = subset_train(load_dataset(cfg.data, spec, val_split=cfg.val_split, seed=cfg.seed,
                                          num_classes=cfg.num_classes, label_column=cfg.label_column,
                                          group_column=cfg.group_column,
                                          cache_dir=cfg.download_dir if cfg.data == "digits" else None,
                                          hflip=cfg.hflip, min_scale=cfg.min_scale), cfg.subset, cfg.seed)
        channels_last, dtype = use_channels_last(cfg.channels_last), amp_dtype(device, cfg.amp)
        gpu_room = _check_memory(cfg, spec, split.num_classes, device, dtype, channels_last)  # before any decoding
        workers = default_workers(device) if cfg.workers is None else cfg.workers
        cache, cache_line = build_data_cache(split, spec, cfg.data_cache, device, min_scale=cfg.min_scale,
                                             workers=workers, gpu_room=gpu_room)
        plan = None if not cfg.progressive_stages else Progressive(
            cfg.progressive_stages, _schedule_epochs(cfg), spec.resolution, cfg.progressive_min_res,
            tuple(cfg.progressive_dropout), tuple(cfg.progressive_randaug), tuple(cfg.progressive_mixup))
        start = plan_start(out_dir, spec, split.num_classes, resume=cfg.resume, auto_resume=cfg.auto_resume,
                           legacy_names=nni_io.under_nni(), weights=cfg.weights,
                           continue_from=_continuation(cfg, out_dir), schedule_epochs=_schedule_epochs(cfg),
                           classes=split.classes)
        if cfg.resume and start.path is None:  # the legacy --resume ./model_best.pth.tar, under NNI
            log.info("--resume %s: this trial has none yet in %s; starting from --weights %s", cfg.resume, out_dir,
                     cfg.weights)
        model = _start_model(cfg, spec, split.num_classes, start, dynamic_padding=plan is not None)
        model = prepare_model(model, device, channels_last, cfg.bn_momentum, cfg.cudnn_benchmark == "on")
        net: nn.Module = model
        if dist_info.enabled:
            net = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        if cfg.compile:
            net = torch.compile(net)
        loaders = _loaders(cfg, spec, split, cache, workers, device, dist_info)
        optimizer = build_optimizer(model, cfg.optimizer, cfg.peak_lr, cfg.weight_decay, cfg.momentum)
        steps_per_epoch = len(loaders[0])
        total_steps = _schedule_epochs(cfg) * steps_per_epoch  # a shorter run stops early on the same schedule
        scheduler = build_scheduler(optimizer, total_steps,
                                    warmup_steps_for(total_steps, steps_per_epoch, cfg.warmup_epochs))
        weight = None if cfg.class_weights == "none" else \
            balanced_class_weights(split.train_targets, split.num_classes).to(device)
        trial = cls(cfg, spec, proposal, out_dir, dist_info, device, split, model, net, optimizer, scheduler,
                    torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), dtype, channels_last,
                    TrainState(), plan, cache, workers, loaders=loaders, handlers=handlers,
                    loss_fn=nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing))
        trial._log_data(cache_line)
        log.info("precision %s | memory format %s%s", f"{str(dtype).replace('torch.', '')} autocast" if dtype
                 else "fp32", "channels_last" if channels_last else "NCHW", " | torch.compile" if cfg.compile else "")
        if start.restore is not None:
            trial._restore(start.restore, start.path)
            trial.first_epoch = trial.state.epoch
        starts = distributed.all_gather_object(trial.state.epoch, dist_info)
        if len(set(starts)) > 1:
            raise CheckpointError(f"the ranks found different checkpoints (completed epochs {starts}); the output "
                                  f"dir {out_dir} must be one directory that every node reads (a shared filesystem)")
        trial.scalars = Scalars(out_dir, trial.state.epoch) if dist_info.is_main else None
        trial.bars = _show_progress(cfg, dist_info)
        return trial

    def _log_data(self, cache_line: str) -> None:
        split, (train_loader, val_loader, _) = self.split, self.loaders
        log.info("data %s (%s): %d classes, %d train / %d val images", split.root, split.layout, split.num_classes,
                 len(split.train), len(split.val))
        balance = class_balance(self.cfg, split, self.loss_fn.weight)
        if balance:
            log.log(*balance)
        log.info("%s", cache_line)
        if self.dist.enabled:
            shards = distributed.all_gather_object((len(train_loader.sampler), len(val_loader.dataset)), self.dist)
            log.info("data shards: train %s = %d images per epoch (%d unique), val %s = %d images",
                     " + ".join(str(t) for t, _ in shards), sum(t for t, _ in shards), len(split.train),
                     " + ".join(str(v) for _, v in shards), sum(v for _, v in shards))
        if self.plan is not None:
            log.info("progressive learning: %s", "; ".join(st.describe() for st in self.plan.plan()))

    def _restore(self, ckpt: dict[str, Any], path: Path | None) -> None:
        """Continue from a checkpoint of this architecture: optimizer, schedule, scaler, progress and RNG."""
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        history, metric = list(ckpt["history"]), self.cfg.eval_metric
        best_epoch, best_score = best_of(history, metric)
        self.state = TrainState(ckpt["epoch"], best_score, best_epoch, history,
                                ckpt.get("best_confusion") if best_epoch == ckpt["best_epoch"] else None)
        if best_epoch != ckpt["best_epoch"]:  # a checkpoint whose best epoch was picked by another metric
            log.warning("warning: %s picked its best epoch (%d) by %s; by %s it is epoch %d, and %s keeps epoch %d "
                        "until a later epoch beats it", path, ckpt["best_epoch"],
                        EVAL_METRICS.get(ckpt.get("eval_metric", "top1"), "another metric"), EVAL_METRICS[metric],
                        best_epoch, BEST_NAME, ckpt["best_epoch"])
        if self.dist.is_main:
            set_rng_state(ckpt["rng"])
        else:  # the checkpoint holds rank 0's RNG; the others continue on their own seeded streams
            seed_everything(self.cfg.seed + self.dist.rank + 1_000 * self.state.epoch)
        log.info("resumed at epoch %d from %s (best %s so far %.2f%% at epoch %d)", self.state.epoch + 1, path,
                 EVAL_METRICS[metric], self.state.best_score, self.state.best_epoch)

    # ------------------------------------------------------------------------------------------ the epoch
    def epochs(self) -> range:
        """The epochs still to train (after a resume, from the first one not completed)."""
        return range(self.state.epoch, self.cfg.epochs)

    def begin_epoch(self, epoch: int) -> None:
        """Enter ``epoch``: a new progressive stage when one begins; the epoch's shuffling order."""
        plan = self.plan
        if plan is not None and (self.stage is None or plan.stage_index(epoch) != self.stage.index):
            self.stage = plan.stage(epoch)
            if self.cache is None:  # per-image loading: the transform of the stage (a cache takes it from the stage)
                set_train_transform(self.split, train_transform(self.spec, hflip=self.split.hflip,
                                                                min_scale=self.cfg.min_scale,
                                                                resolution=self.stage.resolution,
                                                                randaug=self.stage.randaug))
            self.model.set_dropout(self.stage.dropout)
            self.loaders = _loaders(self.cfg, self.spec, self.split, self.cache, self.workers, self.device, self.dist,
                                    self.stage)  # worker processes hold the old transform
            log.info("%s", self.stage.describe())
        seed_epoch(self.loaders[2], self.cfg.seed, epoch)  # the same order whether or not the run was resumed
        self.started = time.time()

    def train_epoch(self, epoch: int) -> tuple[float, float, float]:
        """One pass over the training data: the mean training loss and top-1 (%) over all ranks, and the seconds."""
        cfg, stage = self.cfg, self.stage
        loss_fn = self.loss_fn
        loss_value = distributed.mean_loss(self.dist) or read_loss
        check_every = loss_check_interval(self.device)
        self.net.train()
        meter = TrainMeter()  # loss and accuracy stay on the device until the epoch ends
        batches = progress_bar(self.loaders[0], f"epoch {epoch + 1}/{cfg.epochs}", self.bars)
        for step, (images, targets) in enumerate(batches):
            batch_loss = loss_fn
            if stage is not None and stage.mixup > 0:
                images, targets, mixed_with, lam = mixup_batch(images, targets, stage.mixup)
                batch_loss = mixup_loss(loss_fn, mixed_with, lam)
            try:
                loss, logits = train_step(self.net, images, targets, self.optimizer, batch_loss,
                                          scheduler=self.scheduler, scaler=self.scaler, dtype=self.dtype,
                                          clip_grad=cfg.clip_grad, channels_last=self.channels_last,
                                          check_loss=loss_value if step % check_every == 0 else None)
            except NonFiniteLossError as exc:
                raise TrainingError(f"loss became {exc.value} at epoch {epoch + 1}, step {step + 1}; "
                                    f"{self._nan_advice()}") from None
            meter.update(loss, logits, targets)
            if self.bars and step % PROGRESS_EVERY == 0:
                running_loss, running_top1 = meter.read()
                batches.set_postfix(loss=f"{running_loss:.3f}", top1=f"{running_top1:.1f}")
        loss_sum, correct, n = distributed.all_reduce_sum(meter.totals(), self.dist, self.device)  # waits for the steps
        train_loss, train_top1 = (loss_sum / n, 100.0 * correct / n) if n else (0.0, 0.0)
        if not math.isfinite(train_loss):  # a NaN between two checks: stop before it reaches a checkpoint
            raise TrainingError(f"loss became {train_loss} during epoch {epoch + 1}; {self._nan_advice()}")
        return train_loss, train_top1, time.time() - self.started

    def validate(self) -> EpochMetrics:
        """Validation over all ranks' shares: its metrics (top-1, top-5, precision, recall, F1, loss) and confusion
        matrix."""
        distributed.sync_buffers(self.model, self.dist)  # every rank validates with rank 0's BatchNorm statistics
        metrics = evaluate(self.model, progress_bar(self.loaders[1], "val", self.bars), nn.CrossEntropyLoss(),
                           EpochMetrics(self.split.num_classes, ranking=self.cfg.eval_metric == "auc"),
                           dtype=self.dtype, channels_last=self.channels_last,
                           batch_shape=validation_batch_shape(self.cfg, self.device))
        if self.dist.enabled:
            metrics = EpochMetrics.merged(distributed.all_gather_object(metrics.cpu(), self.dist))
        return metrics

    def close_epoch(self, train: tuple[float, float, float], metrics: EpochMetrics) -> None:
        """Record the epoch, then (rank 0) save the checkpoint, log, write TensorBoard and report to NNI. A stop
        signal waits until this is done: an epoch is saved and reported whole, or not at all."""
        state, stage = self.state, self.stage
        val = metrics.compute()
        with critical():
            state.epoch += 1
            record = {"epoch": state.epoch, "train_loss": train[0], "train_top1": train[1],
                      "lr": self.optimizer.param_groups[0]["lr"], "time_s": round(time.time() - self.started, 3),
                      "train_time_s": round(train[2], 3), **{f"val_{k}": v for k, v in val.items()}}
            if stage is not None:
                record.update(stage=stage.index + 1, train_res=stage.resolution, train_dropout=stage.dropout,
                              train_randaug=stage.randaug, train_mixup=stage.mixup)
            state.history.append(record)
            score = eval_score(record, self.cfg.eval_metric)
            if score > state.best_score:
                state.best_score, state.best_epoch, state.best_confusion = score, state.epoch, metrics.confusion()
            if self.dist.is_main:
                save_checkpoint(self.checkpoint(), self.out_dir, is_best=state.best_epoch == state.epoch)
                log.info(epoch_line(record, self.cfg.epochs, state.best_score, state.best_epoch,
                                    "" if self.cfg.eval_metric == "top1" else self.cfg.eval_metric))
                self.scalars.write(record)
                nni_io.report({"default": score, **{k: v for k, v in val.items()
                                                    if k in ("loss", "top5", "f1", "auc")},
                               "epoch": state.epoch})  # the epoch: what a continuation of this trial has left
        distributed.barrier(self.dist)  # nobody runs ahead of the checkpoint (a kill resumes every rank alike)

    def checkpoint(self) -> dict[str, Any]:
        """The one dict a checkpoint holds (tensors and plain values only; see :mod:`efficientnet.checkpoint`)."""
        state = self.state
        return {
            "spec": self.spec.to_dict(), "arch": str(self.spec), "num_classes": self.split.num_classes,
            "classes": list(self.split.classes), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "epoch": state.epoch, "eval_metric": self.cfg.eval_metric,
            "best_score": state.best_score, "best_epoch": state.best_epoch, "history": state.history,
            **({"best_confusion": state.best_confusion} if state.best_confusion is not None else {}),
            "rng": rng_state(), "args": self.cfg.to_dict(),
        }

    # ------------------------------------------------------------------------------------------ the end
    def finish(self) -> dict[str, Any]:
        """The final result: rank 0 writes ``result.json`` and reports it to NNI; every rank returns it."""
        result = None
        if self.dist.is_main:
            result = final_result(self.state, self.spec, self.split.num_classes, self.cfg, self.proposal,
                                  self.first_epoch)
            confusion = self.state.best_confusion
            classes = per_class(confusion, self.split.classes) if confusion is not None else None
            mistakes = most_confused(confusion, self.split.classes) if confusion is not None else None
            atomic_write_json({**result, "spec": self.spec.to_dict(), "classes": self.split.classes,
                               **({"per_class": classes, "most_confused": mistakes} if classes else {}),
                               "history": self.state.history,
                               "proposal": self.proposal.to_parameters(), "config": self.cfg.to_dict(),
                               **({"world_size": self.dist.world_size} if self.dist.enabled else {})},
                              self.out_dir / "result.json")
            if classes:
                low = sorted(classes, key=lambda c: (c["recall"], str(c["class"])))[:3]
                log.info("lowest recall at epoch %d: %s (per class in result.json)", self.state.best_epoch,
                         ", ".join(f"{c['class']} {100 * c['recall']:.1f}% of {c['support']}" for c in low))
            if mistakes:
                log.info("most confused at epoch %d: %s", self.state.best_epoch,
                         ", ".join(f"{m['true']} taken for {m['predicted']} {m['count']}x" for m in mistakes[:3]))
            log.info("final: best %s %.2f%% at epoch %d | params %d | MACs %d%s | %s",
                     EVAL_METRICS[self.cfg.eval_metric], result["default"], result["best_epoch"], result["params"],
                     result["macs"],
                     f" | latency {result['latency_ms']:.2f} ms" if "latency_ms" in result else "",
                     self.out_dir / "result.json")
            nni_io.report(result, final=True)
        return distributed.broadcast_object(result, self.dist)

    def __enter__(self) -> "Trial":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if isinstance(exc, TrialStopped):  # what a stopped trial leaves behind, for the one line main() prints
            done = self.state.epoch
            exc.detail = f" in epoch {done + 1}: " + (
                f"the checkpoint of epoch {done} is kept in {self.out_dir / CHECKPOINT_NAME}" if done
                else "no checkpoint was written yet")
        if self.scalars is not None:
            self.scalars.close()
        remove_logging(self.handlers)
        self.loaders = ()  # loader worker processes end here, not at the interpreter's exit
        # DistributedDataParallel's reducer works on the process group as it is destroyed: let that happen here,
        # while every rank is still in the group (left to the end of run(), it hung gloo's teardown on torch 2.6)
        self.net = self.model

    def _nan_advice(self) -> str:
        completed = self.state.epoch
        return (f"lower --lr (now {self.cfg.peak_lr:g}){' or pass --amp off' if self.dtype is not None else ''}; "
                + (f"the checkpoint of epoch {completed} is kept" if completed else "no checkpoint was written"))


def final_result(state: TrainState, spec: ArchSpec, num_classes: int, cfg: TrialConfig,
                 proposal: Proposal = Proposal(), first_epoch: int = 0) -> dict[str, Any]:
    """The final NNI metric: ``default`` = the best epoch's ``--eval-metric`` (:func:`eval_score`, percent), and
    that epoch's validation metrics: ``top1`` (percent), ``top5``, ``f1``, ``precision``, ``recall``, ``loss``.

    It also echoes the training budget: ``budget`` (the proposal's, else ``full``), ``subset`` and ``epochs`` as
    used, so proxy results can be told from full-budget ones; and what this run cost: ``epochs_trained`` (after
    ``first_epoch``, where it resumed or continued) and their ``train_seconds`` (training and validation), which the
    tuner's cost model learns from.
    """
    from .profiler import profile

    best = state.history[state.best_epoch - 1]
    prof = profile(spec, num_classes=num_classes, latency=cfg.latency)
    result: dict[str, Any] = {"default": eval_score(best, cfg.eval_metric), "top1": best["val_top1"]}
    for key in ("top5", "f1", "precision", "recall", "auc", "loss"):
        if f"val_{key}" in best:
            result[key] = best[f"val_{key}"]
    result.update(params=prof.params, macs=prof.macs)
    if prof.latency_ms is not None:
        result["latency_ms"] = round(prof.latency_ms, 3)
    result.update(epochs=state.epoch, best_epoch=state.best_epoch, eval_metric=cfg.eval_metric, arch=str(spec),
                  budget=proposal.budget_name, subset=cfg.subset, epochs_trained=state.epoch - first_epoch,
                  train_seconds=round(sum(r.get("time_s", 0.0) for r in state.history[first_epoch:]), 3))
    if cfg.continue_from:
        result["continued_from"] = cfg.continue_from
    return result


# ------------------------------------------------------------------------------------------ helpers
def class_balance(cfg: TrialConfig, split: DatasetSplit, weight: torch.Tensor | None) -> tuple[int, str] | None:
    """The log's word on the classes' balance, as ``(level, message)``: the loss weights of ``--class-weights
    balanced`` at both ends, or a note on an imbalanced training set ranked by top-1; None when there is none."""
    counts = class_counts(split.train_targets, split.num_classes)
    rare, common = counts.index(min(counts)), counts.index(max(counts))
    if weight is not None and rare == common:
        return logging.INFO, f"class weights balanced: 1 for every class (each has {counts[rare]} images)"
    if weight is not None:
        return logging.INFO, (f"class weights balanced: {float(weight[rare]):.3g} for {split.classes[rare]} "
                              f"({counts[rare]} images) to {float(weight[common]):.3g} for {split.classes[common]} "
                              f"({counts[common]})")
    if counts[common] >= IMBALANCE_RATIO * max(counts[rare], 1) and cfg.eval_metric == "top1":
        return logging.WARNING, (f"note: the classes are imbalanced ({counts[common]} training images of "
                                 f"{split.classes[common]}, {counts[rare]} of {split.classes[rare]}): top-1 rewards "
                                 "predicting the common classes; consider --eval-metric f1 and --class-weights "
                                 "balanced")
    return None


def eval_score(record: dict[str, Any], metric: str) -> float:
    """An epoch record's ``--eval-metric`` in percent: ``val_top1``, or ``val_f1`` or ``val_recall`` x 100."""
    value = float(record[f"val_{metric}"])
    return value if metric == "top1" else 100.0 * value


def best_of(history: list[dict[str, Any]], metric: str) -> tuple[int, float]:
    """The best epoch of ``history`` by ``metric`` (the first, among equals) and its score: ``(0, -1.0)`` when
    empty."""
    best_epoch, best_score = 0, -1.0
    for record in history:
        score = eval_score(record, metric)
        if score > best_score:
            best_epoch, best_score = int(record["epoch"]), score
    return best_epoch, best_score


def _schedule_epochs(cfg: TrialConfig) -> int:
    return cfg.schedule_epochs or cfg.epochs


def _continuation(cfg: TrialConfig, out_dir: Path) -> Path | None:
    """The checkpoint ``--continue-from`` names (None: none given, or this run resumes its own checkpoint); a
    lower-budget trial whose folder is on another machine is trained again, with one line saying so."""
    if not cfg.continue_from or (cfg.auto_resume and (out_dir / CHECKPOINT_NAME).is_file()):
        return None
    path = continuation_source(cfg.continue_from, nni_io.output_dir())
    if path is None:
        log.warning("warning: cannot continue trial %s: its checkpoint is not on this machine (trials on several "
                    "machines need a shared experiment folder, see docs/scaling.md); training all %d epochs",
                    cfg.continue_from, cfg.epochs)
    else:
        log.info("continuing %s to epoch %d", path, cfg.epochs)
    return path


def _device(cfg: TrialConfig, dist_device: torch.device | None) -> torch.device:
    if dist_device is not None:
        return dist_device
    device, warning = resolve_device(cfg.device, cfg.gpu)
    if warning:
        log.warning(warning)
    return device


def _check_memory(cfg: TrialConfig, spec: ArchSpec, num_classes: int, device: torch.device,
                  dtype: torch.dtype | None, channels_last: bool) -> int | None:
    """Under ``--memory-check`` (auto: on a GPU), estimate one training step's memory (autocast ``dtype``, the
    trial's memory format), log it and raise :class:`TrainingError` if it does not fit in this trial's room
    (:mod:`efficientnet.memory`). Returns the GPU memory left beside training for the data cache (None: not
    checked, or not on a GPU)."""
    if cfg.memory_check == "off" or (cfg.memory_check == "auto" and device.type != "cuda"):
        return None
    need = estimate_training_memory(spec, num_classes, cfg.batch_size, optimizer=cfg.optimizer,
                                    momentum=cfg.momentum, dtype=dtype, channels_last=channels_last)
    room = memory_room(device, cfg.trials_per_gpu)
    log.info("%s", check_room(need, room, on_gpu=device.type == "cuda"))
    return room.nbytes - needed_bytes(need, room) if device.type == "cuda" else None


def _start_model(cfg: TrialConfig, spec: ArchSpec, num_classes: int, start: Start,
                 dynamic_padding: bool = False) -> SpecEfficientNet:
    """The model as :func:`~efficientnet.checkpoint.plan_start` decided: restored, inherited or pretrained.
    ``dynamic_padding`` (progressive learning) pads "same" for every input size; the weights are the same."""
    if start.restore is not None:
        model = SpecEfficientNet(spec, num_classes)
        try:
            model.load_state_dict(start.restore["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint tensors do not fit the model ({str(exc).splitlines()[0][:120]}); "
                                  "the file is damaged") from None
        model.inheritance = None
    elif start.inherit is not None:
        try:
            model = build_model(spec, num_classes, weights=start.inherit)
        except WeightsError:
            raise CheckpointError(f"{start.path} is not a checkpoint of this trainer nor a state dict of a known "
                                  "EfficientNet; give one of this trainer's checkpoints or a model state dict") from None
        what = {"classes": f"has {start.inherit.get('num_classes')} classes, this dataset {num_classes}: only the "
                           "classifier head is re-initialised",
                "arch": f"is another architecture ({start.inherit.get('arch')}): its weights are inherited "
                        f"({model.inheritance.summary()})",
                "state dict": f"is a plain state dict: its weights are inherited ({model.inheritance.summary()})",
                }[start.kind]
        log.warning("warning: --resume %s %s; training starts at epoch 1", start.path, what)
    else:
        weights = None if cfg.weights.lower() == "none" else cfg.weights
        model = build_model(spec, num_classes, weights=weights,
                            weights_spec=resolve_arch(cfg.weights_arch) if cfg.weights_arch else None)
        if model.inheritance is not None:
            log.info("weights %s: %s", cfg.weights, model.inheritance.summary())
    if dynamic_padding:
        dynamic = SpecEfficientNet(spec, num_classes, dynamic_padding=True)
        dynamic.load_state_dict(model.state_dict())
        dynamic.inheritance = model.inheritance
        model = dynamic
    return model


def _loaders(cfg: TrialConfig, spec: ArchSpec, split: DatasetSplit, cache: Any, workers: int, device: torch.device,
             dist_info: Dist, stage: Stage | None = None) -> tuple[Any, Any, Any]:
    """Training and validation loaders for ``stage`` (None: no progressive learning), and the epoch order they
    share: batches from the decoded-image cache, else per-image loading by ``workers`` processes."""
    val_batch = validation_batch_shape(cfg, device)
    if cache is not None:
        return cache.loaders(cfg.batch_size, device, stage.resolution if stage else spec.resolution,
                             stage.randaug if stage else 0, rank=dist_info.rank, world_size=dist_info.world_size,
                             seed=cfg.seed, val_batch_size=val_batch)
    return make_loaders(split, cfg.batch_size, workers, device.type == "cuda", rank=dist_info.rank,
                        world_size=dist_info.world_size, seed=cfg.seed, val_batch_size=val_batch)


def validation_batch_shape(cfg: TrialConfig, device: torch.device) -> int | None:
    """The one batch shape validation runs at, or None for twice the training batch and a smaller last one.

    On CUDA with cuDNN's benchmark mode (``--cudnn-benchmark on``) every new input shape makes cuDNN time its
    algorithms for every convolution again, a cost paid in the trial's first epoch. Validating at the training
    batch size, the last batch padded (:func:`~efficientnet.training.evaluate`), reuses the training forward's
    choices and adds no shape of its own. Elsewhere a new shape costs nothing, and larger batches validate faster.
    """
    return cfg.batch_size if device.type == "cuda" and cfg.cudnn_benchmark == "on" else None


def _show_progress(cfg: TrialConfig, dist_info: Dist) -> bool:
    """tqdm bars: on a terminal by hand; never under NNI, never on ranks other than 0."""
    if not dist_info.is_main:
        return False
    if cfg.progress != "auto":
        return cfg.progress == "on"
    return sys.stderr.isatty() and not nni_io.under_nni()
