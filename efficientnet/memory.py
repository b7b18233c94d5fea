"""How much memory one training step needs, counted before any training, and whether the device has room for it.

:func:`estimate_training_memory` runs two real training steps (:func:`efficientnet.training.train_step`, the trial's
own) on *fake* tensors (``torch._subclasses.FakeTensorMode``): every operator computes shapes and dtypes but
allocates nothing, whatever the batch size: a Lite0 or a B0 is counted in one to two seconds on the CPU, a B7 in
about ten. The tensors that the step creates are tracked as they are made and freed (the profiler's live-tensor
tracker), so the peak holds the weights, the gradients (still alive from the previous step during the next forward
pass), the optimizer's state and the activations that autograd saves for the backward pass, at the trial's batch
size, resolution, optimizer and autocast dtype. Mixed precision is counted under the CPU's autocast, whose lower-
precision operators (convolutions, linear layers) are CUDA's.

:func:`memory_room` is what the trial may use: on a GPU its share of the device (the whole device divided by the
trials that share it, NNI's ``maxTrialNumberPerGpu``, passed as ``--trials-per-gpu``), never more than is free; on
the CPU the available RAM. :func:`check_room` refuses a trial whose estimate, with the allocator's slack, does not
fit, in one line that names the fix, before any data is decoded or any epoch starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from .builder import SpecEfficientNet
from .datacache import available_ram
from .profiler import LiveTensorPeak
from .spec import ArchSpec
from .training import TrainingError, build_optimizer, train_step

__all__ = ["TrainingMemory", "MemoryRoom", "estimate_training_memory", "memory_room", "needed_bytes", "check_room",
           "size", "GIB"]

GIB = 2**30
# What a process holds beyond its tensors. Neither is calibrated on a GPU yet: ``bench/train_memory.py`` prints the
# estimate against ``torch.cuda.max_memory_allocated`` (and against the peak RSS on the CPU) to check them.
CUDA_SLACK = 1.2  # the caching allocator's block rounding and fragmentation, and cuDNN's workspaces
CUDA_CONTEXT = 1 * GIB  # the CUDA context and loaded kernels: outside torch's allocator, inside the device's memory
# glibc's arenas, oneDNN's scratch buffers and the libraries' own: in six runs of bench/train_memory.py's four CPU
# cases (two earlier, then one with torch 2.15 and three with 2.11) the peak RSS grew by 1.14x to 1.50x the
# estimate (76 to 386 MiB more). With torch 2.11, B0 at 128 px reached 1.35x and B2 at 160 px 1.36x, over the
# 1.25x that had covered the first two runs.
CPU_SLACK = 1.4
CPU_OVERHEAD = 64 * 2**20


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes of tensors that one training step holds, by kind, and at its peak."""

    weights: int  # parameters and buffers
    gradients: int
    optimizer: int  # the optimizer's state (momentum, Adam's moments)
    peak: int  # the largest total of live tensors during a step, the three above included
    batch_size: int
    resolution: int
    precision: str  # "fp32", "bfloat16", "float16"

    @property
    def activations(self) -> int:
        """What the peak holds beyond weights, gradients and optimizer state: mostly saved activations."""
        return max(0, self.peak - self.weights - self.gradients - self.optimizer)

    def __str__(self) -> str:
        return (f"{size(self.peak)} of tensors at batch {self.batch_size}, {self.resolution} px, {self.precision}: "
                f"activations {size(self.activations)}, weights {size(self.weights)}, "
                f"gradients {size(self.gradients)}, optimizer {size(self.optimizer)}")


def size(nbytes: float) -> str:
    """``nbytes`` for people: GiB with two decimals from 1 GiB up, else whole MiB."""
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB else f"{nbytes / 2**20:.0f} MiB"


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def estimate_training_memory(
    spec: ArchSpec,
    num_classes: int,
    batch_size: int,
    *,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    dtype: torch.dtype | None = None,
    channels_last: bool = True,
) -> TrainingMemory:
    """Peak bytes of live tensors during a training step of ``spec`` at ``spec.resolution`` (see the module's
    docstring). ``optimizer`` and ``momentum`` as :func:`efficientnet.training.build_optimizer` takes them (SGD
    without momentum keeps no state); ``dtype`` is the autocast dtype (None: fp32). Nothing is allocated."""
    res = spec.resolution
    with FakeTensorMode():
        model = SpecEfficientNet(spec, num_classes).train()  # channels_last weights: the same bytes (and fake
        # parameters cannot be converted in place)
        opt = build_optimizer(model, optimizer, momentum=momentum)
        images = torch.empty(batch_size, 3, res, res)
        targets = torch.zeros(batch_size, dtype=torch.long)
        weights = _nbytes(model.parameters()) + _nbytes(model.buffers())
        tracker = LiveTensorPeak(baseline=weights + _nbytes((images, targets)))
        with tracker:
            for _ in range(2):  # the second step starts with the first one's gradients and optimizer state alive
                train_step(model, images, targets, opt, nn.CrossEntropyLoss(), dtype=dtype,
                           channels_last=channels_last)
        gradients = _nbytes(p.grad for p in model.parameters() if p.grad is not None)
        state = _nbytes(v for s in opt.state.values() for v in s.values()
                        if isinstance(v, torch.Tensor) and v.dim() > 0)
    return TrainingMemory(weights, gradients, state, int(tracker.peak), batch_size, res,
                          str(dtype).replace("torch.", "") if dtype is not None else "fp32")


@dataclass(frozen=True)
class MemoryRoom:
    """The memory a trial may use, and where that figure comes from (for the log and the error)."""

    nbytes: int
    source: str  # e.g. "its share of the GPU: 1 of 4 trials on 139.3 GiB, 120.2 GiB free"
    slack: float  # multiply the tensors' bytes by this ...
    overhead: int  # ... and add this, to compare with ``nbytes``


def memory_room(device: torch.device, trials_per_gpu: int = 1) -> MemoryRoom:
    """What a trial on ``device`` may use: a GPU's total memory divided by ``trials_per_gpu``, at most what is free
    now; on the CPU, the available RAM."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        held = torch.cuda.memory_reserved(device)  # blocks this process's allocator already holds: reusable
        room = min(total // max(1, trials_per_gpu), free + held)
        source = (f"its share of the GPU, 1 of {trials_per_gpu} trials on {total / GIB:.1f} GiB"
                  if trials_per_gpu > 1 else f"the GPU's {total / GIB:.1f} GiB")
        return MemoryRoom(room, f"{source}, {free / GIB:.1f} GiB free", CUDA_SLACK, CUDA_CONTEXT)
    ram = available_ram()
    return MemoryRoom(ram, f"the {ram / GIB:.1f} GiB of available RAM", CPU_SLACK, CPU_OVERHEAD)


def needed_bytes(need: TrainingMemory, room: MemoryRoom) -> int:
    """The estimate with the device's slack and fixed overhead."""
    return int(need.peak * room.slack) + room.overhead


def check_room(need: TrainingMemory, room: MemoryRoom, on_gpu: bool) -> str:
    """One line for the log if ``need`` fits in ``room``; else raise :class:`TrainingError` naming the fix."""
    total = needed_bytes(need, room)
    line = f"memory: about {size(total)} to train ({need}); room: {room.source}"
    if total <= room.nbytes:
        return line
    fix = ("lower --batch-size, use --amp bf16, or give each trial more of the GPU (a lower maxTrialNumberPerGpu "
           "and --trials-per-gpu)" if on_gpu else "lower --batch-size or the resolution")
    raise TrainingError(f"this trial needs about {size(total)} to train ({need}) but has "
                        f"{size(max(0, room.nbytes))}: {room.source}; {fix}")
