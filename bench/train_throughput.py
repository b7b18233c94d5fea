"""Training throughput: main_efficientnet.py's training step against a plain efficientnet-pytorch loop.

Same architecture, same batch, same device, in the same run. The plain loop is what the seed did: the library's
``EfficientNet.from_name`` model, SGD with momentum, fp32, contiguous (NCHW) tensors. The trainer's step is
``efficientnet.training.train_step`` on a model prepared by ``prepare_model`` (channels_last, fused SiLU, mixed
precision on CUDA), with its optimizer, warm-up + cosine scheduler, label smoothing and gradient clipping.

    python bench/train_throughput.py                      # B0 family at width 0.5, 64 px, batch 32
    python bench/train_throughput.py --arch lite0 --width 0.25 --resolution 32 --batch-size 64

Rounds alternate between the two loops and the best round of each counts, which keeps a shared, noisy machine
from favouring either side. Prints images/s of both and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from efficientnet.builder import SpecEfficientNet  # noqa: E402
from efficientnet.spec import resolve_arch  # noqa: E402
from efficientnet.weights import build_model  # noqa: E402
from efficientnet.training import (amp_dtype, build_optimizer, build_scheduler, prepare_model,  # noqa: E402
                                   resolve_device, train_step)


def plain_model(spec, num_classes: int) -> nn.Module:
    """The library's own model for ``spec`` (``EfficientNet.from_name`` for the B family)."""
    if spec.stem == "scaled" and spec.activation == "swish":
        from efficientnet_pytorch import EfficientNet

        return EfficientNet.from_name("efficientnet-b0", width_coefficient=spec.width, depth_coefficient=spec.depth,
                                      image_size=spec.resolution, num_classes=num_classes,
                                      dropout_rate=spec.dropout, drop_connect_rate=spec.drop_connect)
    return SpecEfficientNet(spec, num_classes)  # Lite: the library class with ReLU6, nothing else changed


def time_steps(step, steps: int, batch: int, device: torch.device) -> float:
    """Images/s over ``steps`` calls of ``step`` (after the caller's warm-up)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="b0")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: PyTorch's default)")
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

    # the plain loop (the seed's)
    plain = plain_model(spec, args.num_classes).to(device).train()
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-5)
    criterion = nn.CrossEntropyLoss()
    x_dev, y_dev = images.to(device), targets.to(device)

    def plain_step() -> None:
        loss = criterion(plain(x_dev), y_dev)
        plain_opt.zero_grad()
        loss.backward()
        plain_opt.step()

    # this script's step
    ours = prepare_model(build_model(spec, args.num_classes), device).train()
    n_params = sum(q.numel() for q in ours.parameters())
    assert n_params == sum(q.numel() for q in plain.parameters()), "the two loops must train the same model"
    opt = build_optimizer(ours, "sgd", lr=0.01, weight_decay=1e-5)
    sched = build_scheduler(opt, total_steps=10**6, warmup_steps=10)
    dtype = amp_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    def our_step() -> None:
        train_step(ours, images, targets, opt, loss_fn, scheduler=sched, scaler=scaler, dtype=dtype, clip_grad=5.0)

    for step in (plain_step, our_step):  # warm-up (allocator, oneDNN/cuDNN kernel selection)
        for _ in range(3):
            step()
    best = {"plain": 0.0, "trainer": 0.0}
    for r in range(args.rounds):
        best["plain"] = max(best["plain"], time_steps(plain_step, args.steps, args.batch_size, device))
        best["trainer"] = max(best["trainer"], time_steps(our_step, args.steps, args.batch_size, device))
    print(f"model: {args.arch} width {spec.width} at {spec.resolution} px, {n_params / 1e6:.2f} M params, "
          f"batch {args.batch_size}, {device}, {torch.get_num_threads()} CPU threads")
    print(f"plain efficientnet-pytorch loop: {best['plain']:8.1f} images/s")
    print(f"main_efficientnet.py train step: {best['trainer']:8.1f} images/s")
    print(f"speed-up: {best['trainer'] / best['plain']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
