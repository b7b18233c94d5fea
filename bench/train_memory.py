"""The training-memory estimate (``efficientnet.memory``, fake tensors) against what two real training steps use.

    python bench/train_memory.py                 # on the CPU: peak RSS of a fresh process
    python bench/train_memory.py --device cuda   # on a GPU: torch's peak allocated and reserved bytes

Each case (``ARCH:RESOLUTION:BATCH:PRECISION``) runs in its own process: the estimate, then two steps of the trial's
own ``train_step`` (SGD, channels_last). On the CPU the measure is the growth of the peak RSS over the steps and the
model's creation; on a GPU, ``torch.cuda.max_memory_allocated`` (the same tensors the estimate counts), the
allocator's ``max_memory_reserved`` and the device memory the process holds (``mem_get_info``, the CUDA context
included). The last columns are the ratios to the estimate and whether the check's figure (estimate x slack +
overhead, ``needed_bytes``) covers the process.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CPU_CASES = ["lite0:64:32:fp32", "b0:128:32:fp32", "b0:128:32:bf16", "b2:160:16:fp32"]
CUDA_CASES = ["lite0:224:256:bf16", "b0:224:128:bf16", "b0:224:64:fp32", "b3:300:64:bf16"]
MIB = 2**20


def measure(case: str, device_name: str) -> dict:
    """One case in this process: the estimate, then the real steps."""
    import torch
    from torch import nn

    from efficientnet.builder import SpecEfficientNet
    from efficientnet.memory import estimate_training_memory, memory_room, needed_bytes
    from efficientnet.spec import resolve_arch
    from efficientnet.training import build_optimizer, train_step

    arch, res, batch, precision = case.split(":")
    res, batch = int(res), int(batch)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    spec = resolve_arch(arch).replace(resolution=res)
    started = time.perf_counter()
    need = estimate_training_memory(spec, 10, batch, dtype=dtype)
    estimate_s = time.perf_counter() - started
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.init()
        free_before, _ = torch.cuda.mem_get_info(device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model = SpecEfficientNet(spec, 10).to(device, memory_format=torch.channels_last).train()
    opt = build_optimizer(model, "sgd")
    images = torch.randn(batch, 3, res, res, device=device)
    targets = torch.randint(10, (batch,), device=device)
    for _ in range(2):
        train_step(model, images, targets, opt, nn.CrossEntropyLoss(), dtype=dtype)
    out = {"case": case, "estimate_mb": need.peak / MIB, "estimate_s": estimate_s}
    room = memory_room(device)
    out["check_mb"] = needed_bytes(need, room) / MIB
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        free_after, _ = torch.cuda.mem_get_info(device)
        out["allocated_mb"] = torch.cuda.max_memory_allocated(device) / MIB
        out["reserved_mb"] = torch.cuda.max_memory_reserved(device) / MIB
        out["process_mb"] = (free_before - free_after) / MIB  # after the steps: the reserved blocks stay held
    else:
        out["rss_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before) / MIB
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--cases", nargs="*", help="ARCH:RESOLUTION:BATCH:fp32|bf16|fp16 (default: a set per device)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # run one case in this process, print its JSON
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.device)))
        return 0
    cases = args.cases or (CUDA_CASES if args.device.startswith("cuda") else CPU_CASES)
    measured = "allocated MiB  reserved MiB  process MiB" if args.device.startswith("cuda") else "peak RSS MiB"
    print(f"{'case':<20} {'estimate MiB':>12} {'(s)':>5}  {measured}  measured/estimate  check MiB  covered")
    for case in cases:
        done = subprocess.run([sys.executable, __file__, "--device", args.device, "--one", case],
                              capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            print(f"{case:<20} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else '?'}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        if "rss_mb" in r:
            used, columns = r["rss_mb"], f"{r['rss_mb']:>12.0f}"
        else:
            used = r["process_mb"]
            columns = f"{r['allocated_mb']:>13.0f} {r['reserved_mb']:>13.0f} {r['process_mb']:>12.0f}"
        first = r.get("allocated_mb", used)
        print(f"{case:<20} {r['estimate_mb']:>12.0f} {r['estimate_s']:>5.1f}  {columns}  "
              f"{first / r['estimate_mb']:>17.2f}  {r['check_mb']:>9.0f}  {'yes' if r['check_mb'] >= used else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
