"""Where a trial's first epoch goes: the real trial script, timed step by step, in a fresh process per variant.

    python bench/first_epoch.py --device cuda                  # the demo at 224 px, 3 epochs, 3 variants
    python bench/first_epoch.py --device cpu --resolution 64   # the same on the CPU

Each variant runs ``main_efficientnet.py``'s ``main`` in a new process (a new CUDA context, cuDNN's choices not yet
made, as an NNI trial starts) with ``train_step`` and ``evaluate`` wrapped to time every call (the device
synchronised after each one). It prints the process's start-up (imports, then setup: data, model, optimizer), the
first training step, the median of the other steps of epoch 1 and of the later epochs, the first validation pass
against the later ones, and the first epoch against a steady one: ``first/steady`` and ``first - 2 x steady``
(the warm-up target is first epoch <= 2 x steady + 3 s). The variants: cuDNN's benchmark mode on (the default; on
CUDA validation then runs at the training batch's shape), off, and on with validation at twice the training batch
and a smaller last batch (two more shapes for cuDNN to time). On the CPU the three run the same code.
"""

from __future__ import annotations

LAUNCHED = __import__("time").time()

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"benchmark": ["--cudnn-benchmark", "on"], "no-benchmark": ["--cudnn-benchmark", "off"],
            "benchmark-val-2x": ["--cudnn-benchmark", "on"]}  # the last: validation at twice the training batch
# and a smaller last batch, as before validation kept one shape (two shapes more for cuDNN to time)


def one(args: argparse.Namespace, variant: str) -> dict:
    """Run the trial once in this process; return the timings."""
    sys.path.insert(0, str(ROOT))
    import torch

    import main_efficientnet
    from efficientnet import trainer

    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    steps: list[tuple[int, float]] = []  # (epoch, seconds) of every training step
    vals: list[float] = []  # seconds of every validation pass; their count is the epoch a step belongs to

    def timed(fn, record):
        def wrapper(*a, **k):
            sync()
            started = time.perf_counter()
            out = fn(*a, **k)
            sync()
            record(time.perf_counter() - started)
            return out
        return wrapper

    trainer.train_step = timed(trainer.train_step, lambda s: steps.append((len(vals), s)))
    trainer.evaluate = timed(trainer.evaluate, vals.append)
    if variant == "benchmark-val-2x":
        trainer.validation_batch_shape = lambda cfg, device: None
    out = Path(tempfile.mkdtemp()) / "run"
    argv = ["--data", args.data, "--weights", "lite0", "--arch", args.arch, "--resolution", str(args.resolution),
            "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--device", args.device,
            "--output-dir", str(out), "--progress", "off", "--no-latency", *VARIANTS[variant]]
    if args.download_dir:
        argv += ["--download-dir", args.download_dir]
    code = main_efficientnet.main(argv, launched=LAUNCHED)
    if code != 0:
        raise SystemExit(f"{variant}: the trial failed with exit status {code}")
    history = json.loads((out / "result.json").read_text())["history"]
    epochs = [h["time_s"] for h in history]
    log = (out / "log.txt").read_text()
    started = next(line for line in log.splitlines() if "started in" in line)
    first_steps = [s for e, s in steps if e == 0]
    later_steps = [s for e, s in steps if e > 0]
    steady = statistics.median(epochs[1:]) if len(epochs) > 1 else float("nan")
    return {"variant": variant, "started": started.split("started in ", 1)[1],
            "first_step_s": first_steps[0], "epoch1_other_steps_s": statistics.median(first_steps[1:]),
            "later_steps_s": statistics.median(later_steps) if later_steps else float("nan"),
            "steps_per_epoch": len(first_steps), "first_val_s": vals[0],
            "later_val_s": statistics.median(vals[1:]) if len(vals) > 1 else float("nan"),
            "first_epoch_s": epochs[0], "steady_epoch_s": steady, "top1": history[-1]["val_top1"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--data", default="digits")
    p.add_argument("--download-dir", help="where the digits demo's images are written")
    p.add_argument("--arch", default="lite0")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args, args.one)))
        return 0
    print(f"{args.arch} at {args.resolution} px, batch {args.batch_size}, {args.epochs} epochs on {args.data}, "
          f"device {args.device}; each variant in a fresh process")
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--one", variant, *sys.argv[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(f"{variant}: failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        r = json.loads(lines[-1][len("RESULT "):])
        print(f"\n{variant}: started in {r['started']}")
        print(f"  first step {r['first_step_s']:.2f} s | other steps of epoch 1 {r['epoch1_other_steps_s'] * 1000:.1f}"
              f" ms | later steps {r['later_steps_s'] * 1000:.1f} ms | {r['steps_per_epoch']} steps per epoch")
        print(f"  first validation {r['first_val_s']:.2f} s | later ones {r['later_val_s']:.2f} s")
        print(f"  first epoch {r['first_epoch_s']:.2f} s | steady epoch {r['steady_epoch_s']:.2f} s | "
              f"first/steady {r['first_epoch_s'] / r['steady_epoch_s']:.1f}x | first - 2 x steady "
              f"{r['first_epoch_s'] - 2 * r['steady_epoch_s']:.2f} s (target <= 3 s) | top-1 {r['top1']:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
