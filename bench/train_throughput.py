"""Training throughput: main_efficientnet.py's training step against what a user could train instead.

Same architecture family, batch, resolution, device, precision and memory layout, in the same run:

* ``plain efficientnet-pytorch loop``: the legacy project's loop (the library's model, SGD, fp32, NCHW tensors);
* ``torchvision efficientnet_b0`` (B family at width and depth 1.0) and, when timm is installed, ``timm
  efficientnet_b0`` (B family) or ``timm tf_efficientnet_lite0`` (Lite family): channels_last, the same autocast
  dtype as ours (bf16/fp16 on CUDA, none on the CPU), SGD with Nesterov momentum, label-smoothed cross-entropy;
* ``main_efficientnet.py train step``: ``efficientnet.training.train_step`` on a model prepared by
  ``prepare_model``, with its optimizer, warm-up + cosine scheduler, label smoothing and gradient clipping.

    python bench/train_throughput.py --arch b0 --width 1.0 --resolution 128 --batch-size 32      # the CPU check
    python bench/train_throughput.py --arch b0 --width 1.0 --resolution 224 --batch-size 128     # on a GPU
    python bench/train_throughput.py --arch lite0 --width 1.0 --resolution 224 --batch-size 128  # Lite family

Rounds alternate between the loops and each loop's best round counts, which keeps a shared, noisy machine from
favouring any side. Prints images/s of every loop, then the ratios of ours to each: of the best rounds, and the
median (with quartiles) of the ratios within each round, which a machine whose speed drifts during the run
disturbs least.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from efficientnet.builder import SpecEfficientNet, blocks_args, global_params  # noqa: E402
from efficientnet.spec import resolve_arch  # noqa: E402
from efficientnet.weights import build_model  # noqa: E402
from efficientnet.training import (amp_dtype, build_optimizer, build_scheduler, prepare_model,  # noqa: E402
                                   resolve_device, train_step)

OURS = "main_efficientnet.py train step"
PLAIN = "plain efficientnet-pytorch loop"


def plain_model(spec, num_classes: int) -> nn.Module:
    """The library's own model for ``spec`` (its MBConv blocks, static-padding convs and swish)."""
    from efficientnet_pytorch import EfficientNet

    model = EfficientNet(blocks_args(spec), global_params(spec, num_classes, scaled=spec.stem == "scaled"))
    if spec.activation == "relu6":  # Lite: the library class with ReLU6, nothing else changed
        model._swish = nn.ReLU6()
        for block in model._blocks:
            block._swish = nn.ReLU6()
    return model


def baseline_models(spec, num_classes: int) -> dict[str, Callable[[], nn.Module]]:
    """The strongest alternatives a user could train for ``spec``'s family (constructors, by display name)."""
    out: dict[str, Callable[[], nn.Module]] = {}
    b_family = spec.stem == "scaled" and spec.activation == "swish"
    if b_family and spec.width == 1.0 and spec.depth == 1.0:
        import torchvision

        out["torchvision efficientnet_b0"] = lambda: torchvision.models.efficientnet_b0(num_classes=num_classes)
    try:
        import timm
    except ImportError:
        return out
    name = "efficientnet_b0" if b_family else "tf_efficientnet_lite0"
    if spec.width == 1.0 and spec.depth == 1.0:
        out[f"timm {name}"] = lambda: timm.create_model(name, num_classes=num_classes)
    return out


def time_steps(step: Callable[[], object], steps: int, batch: int, device: torch.device) -> float:
    """Images/s over ``steps`` calls of ``step`` (after the caller's warm-up)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def baseline_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype | None,
                  device: torch.device) -> Callable[[], None]:
    """A standard training step for a baseline: channels_last, autocast, SGD (Nesterov), label smoothing."""
    model = model.to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    x = images.to(device).contiguous(memory_format=torch.channels_last)
    y = targets.to(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def our_step(spec, num_classes: int, images: torch.Tensor, targets: torch.Tensor, device: torch.device,
             dtype: torch.dtype | None, *, compile: bool = False,
             fused: bool = False) -> tuple[Callable[[], object], nn.Module]:
    """main_efficientnet.py's training step (``train_step`` on a model prepared by ``prepare_model``, with its
    optimizer, warm-up + cosine scheduler, label smoothing and gradient clipping) on a batch already on the device,
    as the data cache delivers batches; returns the step and the (uncompiled) model."""
    model = prepare_model(build_model(spec, num_classes), device).train()
    net = torch.compile(model) if compile else model
    opt = build_optimizer(model, "sgd", lr=0.01, weight_decay=1e-5, fused=fused)
    sched = build_scheduler(opt, total_steps=10**6, warmup_steps=10)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    x, y = images.to(device), targets.to(device)

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        return train_step(net, x, y, opt, loss_fn, scheduler=sched, scaler=scaler, dtype=dtype, clip_grad=5.0)

    return step, model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="b0")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=3, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=8, help="rounds (each loop once per round, in turn)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: PyTorch's default)")
    p.add_argument("--compile", action="store_true", help="torch.compile every model (ours and the baselines)")
    p.add_argument("--no-plain", action="store_true", help="skip the plain efficientnet-pytorch loop")
    p.add_argument("--variants", action="store_true", help="on CUDA, also time our step with fused SGD")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, warning = resolve_device(args.device)
    if warning:
        print(warning)
    spec = resolve_arch(args.arch).replace(width=args.width, resolution=args.resolution)
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, spec.resolution, spec.resolution)
    targets = torch.randint(0, args.num_classes, (args.batch_size,))
    dtype = amp_dtype(device)
    maybe_compile = torch.compile if args.compile else (lambda m: m)
    steps: dict[str, Callable[[], object]] = {}

    if not args.no_plain:  # the legacy project's loop: library model, SGD, fp32, NCHW
        plain = maybe_compile(plain_model(spec, args.num_classes).to(device).train())
        plain_opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-5)
        criterion = nn.CrossEntropyLoss()
        x_dev, y_dev = images.to(device), targets.to(device)

        def plain_step() -> None:
            loss = criterion(plain(x_dev), y_dev)
            plain_opt.zero_grad()
            loss.backward()
            plain_opt.step()

        steps[PLAIN] = plain_step
    for name, make in baseline_models(spec, args.num_classes).items():
        model = make()
        steps[name] = baseline_step(maybe_compile(model) if args.compile else model, images, targets, dtype, device)

    steps[OURS], ours = our_step(spec, args.num_classes, images, targets, device, dtype, compile=args.compile)
    assert isinstance(ours, SpecEfficientNet)
    n_params = sum(q.numel() for q in ours.parameters())
    if args.variants and device.type == "cuda":  # the same step with PyTorch's fused SGD kernel
        steps[OURS + " (fused SGD)"], _ = our_step(spec, args.num_classes, images, targets, device, dtype,
                                                   compile=args.compile, fused=True)

    for step in steps.values():  # warm-up (allocator, oneDNN/cuDNN kernel selection, compilation)
        for _ in range(3):
            step()
    rounds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            rounds[name].append(time_steps(step, args.steps, args.batch_size, device))
    best = {name: max(rates) for name, rates in rounds.items()}
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"model: {args.arch} width {spec.width} at {spec.resolution} px, {n_params / 1e6:.2f} M params, "
          f"batch {args.batch_size}, {device}{gpu}, {str(dtype).replace('torch.', '') if dtype else 'fp32'}, "
          f"{torch.get_num_threads()} CPU threads{', torch.compile' if args.compile else ''}")
    for name, rate in best.items():
        print(f"{name}: {rate:8.1f} images/s")
    for our_name in (n for n in best if n.startswith(OURS)):  # our step first, then its variants
        for name, rate in best.items():
            if not name.startswith(OURS):
                paired = sorted(a / b for a, b in zip(rounds[our_name], rounds[name]))
                quartiles = statistics.quantiles(paired, n=4, method="inclusive") if len(paired) > 1 else paired * 3
                print(f"ratio{our_name[len(OURS):]} vs {name}: {best[our_name] / rate:.2f}x (best rounds); "
                      f"{quartiles[1]:.3f}x median of {len(paired)} paired rounds "
                      f"[{quartiles[0]:.3f}x-{quartiles[2]:.3f}x]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
