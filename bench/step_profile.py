"""Where a training step spends its time: torch.profiler over our step and torchvision's (or timm's), same run.

    python bench/step_profile.py --arch b0 --resolution 224 --batch-size 128     # on a GPU
    python bench/step_profile.py --arch b0 --resolution 64 --batch-size 8 --device cpu

Builds the same steps as ``bench/train_throughput.py`` (``--no-plain``), warms them up, then profiles ``--steps``
steps of each and prints the operators that take the most device time (CPU time on the CPU), so a gap between the
two steps can be traced to the layers that make it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import (OURS, amp_dtype, baseline_models, baseline_step, our_step,  # noqa: E402
                              resolve_arch, resolve_device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="b0")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rows", type=int, default=18, help="operators listed per step")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    device, _ = resolve_device(args.device)
    spec = resolve_arch(args.arch).replace(resolution=args.resolution)
    images = torch.randn(args.batch_size, 3, spec.resolution, spec.resolution)
    targets = torch.randint(0, 10, (args.batch_size,))
    dtype = amp_dtype(device)
    steps = {name: baseline_step(make(), images, targets, dtype, device)
             for name, make in list(baseline_models(spec, 10).items())[:1]}
    steps[OURS], _ = our_step(spec, 10, images, targets, device, dtype)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    for name, step in steps.items():
        for _ in range(3):
            step()
        if cuda:
            torch.cuda.synchronize()
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                step()
            if cuda:
                torch.cuda.synchronize()
        print(f"\n=== {name}: {args.arch} at {spec.resolution} px, batch {args.batch_size}, {device}, "
              f"{args.steps} steps")
        print(prof.key_averages().table(sort_by=sort, row_limit=args.rows, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
