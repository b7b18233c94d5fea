"""Data throughput: does the input pipeline keep up with the model? One real trial, end to end, against the step.

Writes a synthetic ImageFolder once (photo-sized JPEGs: ``--images`` of 500x375 in 10 classes, smooth colour
fields with texture, so they decode like photos), then for each ``--data-cache`` mode runs the real trial script
(``main_efficientnet.main``: dataset scan, loaders, augmentation, training step, validation, checkpoint) for
``--epochs`` epochs at ``--resolution`` and reads the last epoch's training time from ``result.json``. In the same
run it times the training step alone on a batch already on the device (the model-only rate). The end-to-end rate
over the model-only rate says how much of the model's speed the data pipeline delivers: on a GPU it should be
>= 0.8.

    python bench/data_throughput.py                                              # B0, 224 px, batch 128
    python bench/data_throughput.py --images 256 --resolution 96 --batch-size 32 # a quick CPU run

Decoding into the cache happens once, before the first epoch (its time is printed), and the decoded copy is
reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import main_efficientnet  # noqa: E402
from efficientnet.spec import resolve_arch  # noqa: E402
from efficientnet.training import amp_dtype, resolve_device  # noqa: E402
from train_throughput import our_step, time_steps  # noqa: E402  (this folder is on sys.path when run as a script)

CLASSES = 10


def write_dataset(root: Path, images: int, seed: int = 0) -> Path:
    """``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg`` (80/20), 500x375 JPEGs at quality 90; kept
    when already complete."""
    done = root / f".complete-{images}"
    if done.is_file():
        return root
    rng = np.random.default_rng(seed)
    for i in range(images):
        split = "val" if (i // CLASSES) % 5 == 0 else "train"
        folder = root / split / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)  # smooth colour field
        field = np.asarray(Image.fromarray(coarse).resize((500, 375), Image.BICUBIC), dtype=np.float32)
        texture = rng.normal(0, 12, (375, 500, 1)).astype(np.float32)
        pixels = np.clip(field + texture, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    done.write_text("synthetic ImageFolder\n")
    return root


def trial_rate(data: Path, out: Path, args, cache: str) -> tuple[float, float]:
    """Images/s of the last epoch's training part, end to end, and the seconds the run took to start training."""
    argv = ["--data", str(data), "--arch", args.arch, "--resolution", str(args.resolution), "--weights", "none",
            "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--data-cache", cache,
            "--device", args.device, "--output-dir", str(out), "--no-auto-resume", "--no-latency", "--progress",
            "off", "--hflip", "0.5"]
    if args.workers is not None:
        argv += ["--workers", str(args.workers)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    started = time.perf_counter()
    code = main_efficientnet.main(argv)
    if code != 0:
        raise SystemExit(f"the trial failed with exit status {code}")
    total = time.perf_counter() - started
    result = json.loads((out / "result.json").read_text())
    history = result["history"]
    n_train = sum(1 for _ in (data / "train").rglob("*.jpg"))
    images = (n_train // args.batch_size) * args.batch_size  # full batches only (the ragged one is dropped)
    last = history[-1]
    epochs_time = sum(h["time_s"] for h in history)
    return images / last["train_time_s"], total - epochs_time


def model_rate(args, device: torch.device) -> float:
    """Images/s of the training step alone, on a batch already on the device."""
    spec = resolve_arch(args.arch).replace(resolution=args.resolution)
    images = torch.randn(args.batch_size, 3, args.resolution, args.resolution, device=device)
    targets = torch.randint(0, CLASSES, (args.batch_size,), device=device)
    step, _ = our_step(spec, CLASSES, images, targets, device, amp_dtype(device))
    for _ in range(3):
        step()
    return max(time_steps(step, args.steps, args.batch_size, device) for _ in range(3))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000, help="synthetic JPEGs to write (80%% train)")
    p.add_argument("--arch", default="b0")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2, help="the last epoch is timed (the first warms up)")
    p.add_argument("--modes", default="auto,off", help="--data-cache modes to run, comma-separated")
    p.add_argument("--workers", type=int, help="loader processes (default: the trial's auto)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round of the model-only rate")
    p.add_argument("--dir", help="where the synthetic dataset goes (default: a folder in the temp dir, reused)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, warning = resolve_device(args.device)
    if warning:
        print(warning)
    data = write_dataset(Path(args.dir or Path(tempfile.gettempdir()) / "efficientnet-nni-bench-images"),
                         args.images)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            rates[mode], startup = trial_rate(data, Path(tmp) / mode, args, mode)
            print(f"[data-cache {mode}: {startup:.1f} s before the first epoch]", flush=True)
    model = model_rate(args, device)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"\n{args.arch} at {args.resolution} px, batch {args.batch_size}, {args.images} JPEGs of 500x375, "
          f"{device}{gpu}, {os.cpu_count()} CPU cores")
    print(f"model-only training step: {model:8.1f} images/s")
    for mode, rate in rates.items():
        print(f"end to end, --data-cache {mode}: {rate:8.1f} images/s  ({rate / model:.2f}x the model-only rate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
