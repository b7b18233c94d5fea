"""Is this Python the environment the project is installed in? Checked before anything imports torch.

A trial started by another interpreter than the one the project was installed into (a remote machine whose shell
start-up files put the system or pyenv/conda Python first on PATH, a trial command naming ``python3`` outside the
virtualenv) would otherwise die in a traceback on ``import torch``. This module imports nothing outside the
standard library.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

__all__ = ["REQUIRED", "missing_packages", "interpreter_problem", "exit_if_incomplete", "nvidia_driver",
           "unusable_gpu", "usable_cores"]

REQUIRED = ("torch", "torchvision", "efficientnet_pytorch", "numpy", "PIL", "sklearn", "yaml")


def missing_packages(need_nni: bool = False) -> list[str]:
    """The required top-level packages this interpreter cannot find (``nni`` too when ``need_nni``)."""
    names = REQUIRED + (("nni",) if need_nni else ())
    return [name for name in names if importlib.util.find_spec(name) is None]


def interpreter_problem(need_nni: bool | None = None) -> str | None:
    """One line naming this interpreter, what it lacks and what to set; ``None`` when nothing is missing.
    ``need_nni`` defaults to "launched by NNI" (``NNI_TRIAL_JOB_ID`` set)."""
    if need_nni is None:
        need_nni = (os.environ.get("NNI_TRIAL_JOB_ID") or "STANDALONE") != "STANDALONE"
    missing = missing_packages(need_nni)
    if not missing:
        return None
    return (f"this Python ({sys.executable}) cannot import {', '.join(missing)}: it is not the environment the "
            "project is installed in; start the trial with that environment's Python (in the experiment config: "
            "trialCommand: /path/to/venv/bin/python main_efficientnet.py ..., or a conda env's "
            "/path/to/conda/envs/ENV/bin/python), or pip install -e . into this one")


def exit_if_incomplete() -> None:
    """Print :func:`interpreter_problem` as one ``error:`` line and exit with status 2, if there is one."""
    problem = interpreter_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)


NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")


def nvidia_driver(version_file: Path = NVIDIA_DRIVER_FILE) -> str | None:
    """The loaded NVIDIA kernel driver's version (``535.104.05``), or None on a machine without one."""
    try:
        text = version_file.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", text) or re.search(r"\b(\d{3}\.\d+(?:\.\d+)?)\b", text)
    return match.group(1) if match else "unknown"


def unusable_gpu(torch_version: str, torch_cuda: str | None, cuda_available: bool, driver: str | None) -> str | None:
    """One line when this machine has an NVIDIA driver but torch cannot use the GPU: why, and what to install."""
    if driver is None or cuda_available or os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return None  # no driver, a usable GPU, or GPUs hidden on purpose
    if torch_cuda is None:
        why = f"torch {torch_version} is a CPU-only build"
    else:
        why = (f"torch {torch_version} (built for CUDA {torch_cuda}) cannot use it, most often because that CUDA is "
               "newer than the driver supports")
    return (f"this machine has an NVIDIA GPU (driver {driver}) but {why}, so training runs on the CPU: install the "
            "torch build for your driver's CUDA version (nvidia-smi shows it; https://pytorch.org/get-started/locally "
            "gives the pip command, e.g. pip install torch torchvision --index-url "
            "https://download.pytorch.org/whl/cu121), or pass --device cpu")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity on Linux, else every core)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
