"""Where a training step spends its time: torch.profiler over our step and torchvision's (or timm's), same run.

    python bench/step_profile.py --arch b0 --resolution 224 --batch-size 128     # on a GPU
    python bench/step_profile.py --arch b0 --resolution 64 --batch-size 8 --device cpu
    python bench/step_profile.py --arch b0 --resolution 128 --batch-size 32 --device cpu --diff   # docs/gpu.md
    python bench/step_profile.py --arch b0 --resolution 128 --batch-size 32 --device cpu --diff --by-shape

``--diff`` puts our model in the baseline's own step (same optimizer, loss, layout), profiles ``--rounds``
alternating rounds of ``--steps`` steps of each, and prints the total self time of both, their ratio and the
operators whose time differs most: the model's own cost, with the machine's drift spread over both.

Builds the same steps as ``bench/train_throughput.py`` (``--no-plain``), warms them up, then profiles ``--steps``
steps of each and prints the operators that take the most device time (CPU time on the CPU), so a gap between the
two steps can be traced to the layers that make it.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import (OURS, amp_dtype, baseline_models, baseline_step, build_model,  # noqa: E402
                              our_step, resolve_arch, resolve_device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="b0")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rows", type=int, default=18, help="operators listed per step")
    p.add_argument("--device", default="auto")
    p.add_argument("--diff", action="store_true", help="alternate rounds; print the per-operator difference")
    p.add_argument("--rounds", type=int, default=3, help="--diff: alternating rounds")
    p.add_argument("--by-shape", action="store_true", help="--diff: one row per operator and input shape")
    args = p.parse_args(argv)
    device, _ = resolve_device(args.device)
    spec = resolve_arch(args.arch).replace(resolution=args.resolution)
    images = torch.randn(args.batch_size, 3, spec.resolution, spec.resolution)
    targets = torch.randint(0, 10, (args.batch_size,))
    dtype = amp_dtype(device)
    steps = {name: baseline_step(make(), images, targets, dtype, device)
             for name, make in list(baseline_models(spec, 10).items())[:1]}
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if args.diff:
        steps["our model in the same step"] = baseline_step(build_model(spec, 10), images, targets, dtype, device)
        return diff(steps, args, activities, cuda)
    steps[OURS], _ = our_step(spec, 10, images, targets, device, dtype)
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    for name, step in steps.items():
        for _ in range(3):
            step()
        prof = profiled(step, args.steps, activities, cuda)
        print(f"\n=== {name}: {args.arch} at {spec.resolution} px, batch {args.batch_size}, {device}, "
              f"{args.steps} steps")
        print(prof.key_averages().table(sort_by=sort, row_limit=args.rows, max_name_column_width=60))
    return 0


def profiled(step, steps: int, activities: list, cuda: bool, shapes: bool = False) -> profile:
    """``steps`` calls of ``step`` under the profiler (the device's queue drained before and after); ``shapes``
    records the operators' input shapes."""
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=activities, record_shapes=shapes) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    return prof


def diff(steps: dict, args, activities: list, cuda: bool) -> int:
    """Alternating profiled rounds of both steps; the per-operator self time (device time on CUDA) summed."""
    totals = {name: collections.Counter() for name in steps}
    calls = {name: collections.Counter() for name in steps}
    for step in steps.values():
        for _ in range(3):
            step()
    for _ in range(args.rounds):
        for name, step in steps.items():
            prof = profiled(step, args.steps, activities, cuda, shapes=args.by_shape)
            for e in prof.key_averages(group_by_input_shape=args.by_shape):
                key = f"{e.key} {e.input_shapes[:1]}" if args.by_shape else e.key
                totals[name][key] += (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1000
                calls[name][key] += e.count
    (base, ours) = list(steps)
    total = {name: sum(t.values()) for name, t in totals.items()}
    print(f"{args.rounds} x {args.steps} steps each, {'device' if cuda else 'CPU'} self time: {base} "
          f"{total[base]:.0f} ms, {ours} {total[ours]:.0f} ms, ratio {total[ours] / total[base]:.3f}x")
    keys = sorted(set(totals[base]) | set(totals[ours]), key=lambda k: totals[ours][k] - totals[base][k])
    width = 72 if args.by_shape else 48
    for key in keys[::-1][:args.rows // 2] + keys[:args.rows // 2][::-1]:
        print(f"  {key[:width]:{width}s} {totals[base][key]:9.1f} ms ({calls[base][key]:5d})  {totals[ours][key]:9.1f} ms "
              f"({calls[ours][key]:5d})  {totals[ours][key] - totals[base][key]:+8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
