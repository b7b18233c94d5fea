"""The pieces of a training loop: model preparation, optimizer, warm-up + cosine schedule, one step, evaluation.

What makes the step faster than a plain efficientnet-pytorch loop (``bench/train_throughput.py`` measures it):

* the model's own faster modules (:mod:`efficientnet.layers`: folded "same" padding, in-place activations);
* ``channels_last`` memory format for model and inputs (oneDNN and cuDNN run depthwise/pointwise convolutions
  faster in NHWC; measured about 1.7x on a 2-core CPU for a small model);
* no host synchronisation per step: the loss and accuracy stay on the device (read once per epoch), and the NaN
  check reads the loss every step on the CPU only (every 50th on a GPU);
* mixed precision on CUDA (bf16 where supported, else fp16 with a ``GradScaler``); fp32 on the CPU, where bf16
  autocast was measured much slower;
* foreach optimizer kernels, ``zero_grad(set_to_none=True)`` and no weight decay on BatchNorm/bias tensors.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from typing import Callable, Iterable

import torch
from torch import nn

__all__ = [
    "TrainingError",
    "NonFiniteLossError",
    "resolve_device",
    "gpu_problem",
    "amp_dtype",
    "use_channels_last",
    "prepare_model",
    "build_optimizer",
    "build_scheduler",
    "lr_at",
    "loss_check_interval",
    "read_loss",
    "train_step",
    "evaluate",
]


# torch's SequentialLR in older releases (seen with 2.4 and 2.5) steps the next scheduler with an epoch argument at each
# milestone, which warns that the argument is deprecated: torch's own call, nothing a user can act on
warnings.filterwarnings("ignore", message=r"The epoch parameter in `scheduler\.step\(\)` was not necessary",
                        category=UserWarning)


class TrainingError(RuntimeError):
    """Training cannot go on; the message names the fix."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; raised before the step touches the weights."""

    def __init__(self, value: float) -> None:
        super().__init__(f"loss is {value}")
        self.value = value


def resolve_device(device: str = "auto", gpu: int | None = None) -> tuple[torch.device, str | None]:
    """``auto`` -> CUDA when available, else CPU; ``--gpu N`` asks for ``cuda:N``.

    Returns the device and, when a requested GPU is not available, a warning to log (the run falls back to CPU).
    """
    if gpu is not None and device == "auto":
        device = f"cuda:{gpu}"
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda"), None
        problem = gpu_problem()
        return torch.device("cpu"), f"warning: {problem}" if problem else None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise TrainingError(f"--device {device!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        problem = gpu_problem()
        return torch.device("cpu"), f"warning: {device} is not available here; running on the CPU" + (
            f" ({problem})" if problem else "")
    return dev, None


def gpu_problem() -> str | None:
    """Why this machine's NVIDIA GPU is not usable by this torch (see :func:`efficientnet.environment.unusable_gpu`);
    None when there is no NVIDIA driver, or torch can use the GPU."""
    from .environment import nvidia_driver, unusable_gpu

    return unusable_gpu(torch.__version__, torch.version.cuda, torch.cuda.is_available(), nvidia_driver())


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """The autocast dtype: ``auto`` is bf16/fp16 on CUDA and none on the CPU; ``off``, ``bf16``, ``fp16`` force."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def use_channels_last(setting: str | bool = "auto") -> bool:
    """``auto``/``on`` -> True (faster on both CPU and CUDA for this family), ``off`` -> False."""
    if isinstance(setting, bool):
        return setting
    return setting in ("auto", "on", "true", "1")


def prepare_model(
    model: nn.Module, device: torch.device, channels_last: bool = True, bn_momentum: float | None = 0.1,
    cudnn_benchmark: bool = True,
) -> nn.Module:
    """Move ``model`` to ``device`` and set the memory format; on CUDA, with ``cudnn_benchmark``, let cuDNN time its
    kernels for each new batch shape and keep the fastest (else it takes its heuristics' pick, with no timing).

    ``bn_momentum`` replaces the TensorFlow-derived BatchNorm momentum (0.01 in PyTorch terms, tuned for 350
    ImageNet epochs): in a fine-tune of a few hundred steps the running statistics would otherwise stay close to
    the ImageNet ones and the model would evaluate badly. ``None`` keeps the library's value.
    """
    if bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = bn_momentum
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cudnn_benchmark
    return model


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(
    model: nn.Module,
    name: str = "sgd",
    lr: float = 0.05,
    weight_decay: float = 1e-5,
    momentum: float = 0.9,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum, AdamW or RMSprop (the paper's); no weight decay on BatchNorm and biases.

    ``fused`` asks for PyTorch's fused CUDA kernels (SGD and AdamW) when every parameter is on a CUDA device;
    elsewhere it is ignored."""
    groups = _param_groups(model, weight_decay)
    on_cuda = all(p.is_cuda for group in groups for p in group["params"])
    extra = {"fused": True} if fused and on_cuda else {}
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0, **extra)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **extra)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.9, eps=1e-3, momentum=momentum)
    raise TrainingError(f"unknown optimizer {name!r}: use sgd, adamw or rmsprop")


def warmup_steps_for(total_steps: int, steps_per_epoch: int, warmup_epochs: float) -> int:
    """Warm-up length in steps: ``warmup_epochs`` epochs, but never more than a quarter of training."""
    return max(0, min(int(round(warmup_epochs * steps_per_epoch)), total_steps // 4))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.01
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up from 1 % of the lr, then cosine decay to ``min_lr_ratio`` of it; step once per iteration."""
    base_lr = optimizer.param_groups[0]["lr"]
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=base_lr * min_lr_ratio
    )
    if warmup_steps <= 0:
        return cosine
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup_steps)
    # Older torch (2.6; not 2.14) has SequentialLR call its own scheduler.step(0) at the milestone, which warns that
    # the epoch argument is deprecated: a warning about torch's code in every trial's output. Only that warning,
    # attributed to torch's lr_scheduler module, is ignored (2.14 attributes a caller's own step(epoch) to the caller).
    warnings.filterwarnings("ignore", message=re.escape("The epoch parameter in `scheduler.step()`"),
                            category=UserWarning, module=r"torch\.optim\.lr_scheduler\Z")
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


def lr_at(step: int, base_lr: float, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.01) -> float:
    """The learning rate :func:`build_scheduler` gives at ``step`` (closed form, for logs and old callers)."""
    if step < warmup_steps:
        return base_lr * (0.01 + 0.99 * step / warmup_steps)
    t = min(step - warmup_steps, max(1, total_steps - warmup_steps))
    eta_min = base_lr * min_lr_ratio
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / max(1, total_steps - warmup_steps))) / 2


def forward(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: nn.Module,
    *,
    dtype: torch.dtype | None = None,
    channels_last: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a batch to the model's device (channels_last when asked), run the model under autocast when ``dtype``
    is set; return ``(logits, loss)``."""
    device = next(model.parameters()).device
    images = images.to(device, non_blocking=True)
    targets = targets.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
        logits = model(images)
        return logits, loss_fn(logits, targets)


def loss_check_interval(device: torch.device) -> int:
    """Steps between reads of the loss for the NaN check: every step on the CPU, where reading it costs nothing;
    every 50th on a GPU, where each read stalls the host until the GPU has caught up."""
    return 1 if device.type == "cpu" else 50


def read_loss(loss: torch.Tensor) -> float:
    """The loss as a number (a host synchronisation)."""
    return float(loss)


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    dtype: torch.dtype | None = None,
    clip_grad: float = 0.0,
    channels_last: bool = True,
    check_loss: Callable[[torch.Tensor], float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step; returns ``(loss, logits)``, detached, on the model's device.

    Nothing is read back to the host, so a GPU never waits for Python, unless ``check_loss`` is given: it turns the
    loss into a number (e.g. :func:`read_loss`, or an average over data-parallel ranks, so that every rank stops
    together) and a non-finite one raises :class:`NonFiniteLossError` before the weights are touched.
    """
    logits, loss = forward(model, images, targets, loss_fn, dtype=dtype, channels_last=channels_last)
    if check_loss is not None:
        value = check_loss(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLossError(value)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        if clip_grad > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if clip_grad > 0:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach(), logits.detach()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    metrics,
    *,
    dtype: torch.dtype | None = None,
    channels_last: bool = True,
    batch_shape: int | None = None,
):
    """Run ``model`` in eval mode over ``batches`` and feed ``metrics`` (an ``EpochMetrics``, which keeps its sums on
    the model's device); return it.

    ``batch_shape`` pads every smaller batch (the last one) to that many images, copies of its first, whose outputs
    are dropped: the model then sees one batch shape, which cuDNN's benchmark mode times once instead of once per
    shape. Eval-mode BatchNorm treats every image on its own, so the metrics are the same."""
    model.eval()
    for images, targets in batches:
        rows = images.shape[0]
        if batch_shape is not None and rows < batch_shape:
            filler = batch_shape - rows
            padded = torch.cat([images, images[:1].expand(filler, *images.shape[1:])])
            logits, _ = forward(model, padded, torch.cat([targets, targets[:1].expand(filler)]), loss_fn,
                                dtype=dtype, channels_last=channels_last)
            logits = logits[:rows]
            loss = loss_fn(logits.float(), targets.to(logits.device))  # autocast computes the loss in fp32 too
        else:
            logits, loss = forward(model, images, targets, loss_fn, dtype=dtype, channels_last=channels_last)
        metrics.update(logits, targets, loss)
    return metrics
