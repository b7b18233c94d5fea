"""Data-parallel training under ``torchrun``: process group, rank helpers and cross-rank reductions.

``torchrun`` (``python -m torch.distributed.run``) starts one process per GPU (or per CPU share) and sets
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`init` then joins the process group (NCCL on GPUs, gloo on the
CPU). Without those variables everything here is a no-op for a single process, so the same trial script runs by
hand, under NNI and under ``torchrun``.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Dist", "init", "shutdown", "broadcast_object", "all_gather_object", "all_reduce_sum", "barrier",
           "sync_buffers", "mean_loss"]

TIMEOUT = datetime.timedelta(minutes=10)  # a rank that never arrives fails the job instead of hanging it forever


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    launched: bool = False  # started by torchrun (a process group is joined, even of one process)

    @property
    def enabled(self) -> bool:
        return self.launched or self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that talks to NNI and writes checkpoints, logs and results."""
        return self.rank == 0


TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT")


def from_env() -> Dist:
    """Read ``torchrun``'s variables (a plain process is rank 0 of 1). A job of one process
    (``--nproc_per_node 1``) still joins its process group, so one GPU runs the same code path as eight."""
    if not all(os.environ.get(k) for k in TORCHRUN_VARIABLES):
        return Dist()
    try:
        world = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return Dist()
    return Dist(rank, world, local, launched=True)


def init(device: str = "auto") -> tuple[Dist, torch.device | None]:
    """Join the process group when launched by ``torchrun``; return the rank info and this rank's device.

    On CUDA each process takes ``cuda:LOCAL_RANK`` and NCCL; with ``device`` ``cpu`` or no GPU, gloo on the CPU.
    The device is ``None`` when not distributed (the caller's own choice applies).
    """
    info = from_env()
    if not info.enabled:
        return info, None
    use_cuda = device != "cpu" and torch.cuda.is_available() and info.local_rank < torch.cuda.device_count()
    backend = "nccl" if use_cuda else "gloo"
    dev = torch.device("cuda", info.local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT, **({"device_id": dev} if use_cuda else {}))
    return Dist(info.rank, info.world_size, info.local_rank, backend, launched=True), dev


def shutdown(info: Dist) -> None:
    """Leave the process group, every rank together (a final barrier first). Call it after a clean end only: after
    an error, some ranks may be inside a collective, and tearing down beside them can hang (the process's exit
    frees the group instead).

    A gloo group is not destroyed: the trial's process ends right after. On torch 2.6 its destructor can deadlock:
    the main thread, holding the GIL, joins gloo's worker thread while that thread frees a finished broadcast's
    tensors, which needs the GIL (``~ProcessGroupGloo`` -> ``std::thread::join`` against ``~AsyncBroadcastWork``
    -> ``PyObjectSlot::maybe_destroy_pyobj``: the stacks of a torchrun test that hung in CI)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        if info.backend != "gloo":
            dist.destroy_process_group()


def barrier(info: Dist) -> None:
    """Wait for every rank (no-op for one process)."""
    if info.enabled:
        dist.barrier()


def broadcast_object(obj: Any, info: Dist) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if not info.enabled:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any, info: Dist) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float], info: Dist, device: torch.device | None = None) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64)."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device if info.backend == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def sync_buffers(model: torch.nn.Module, info: Dist) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, e.g. before validation."""
    if not info.enabled:
        return
    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def mean_loss(info: Dist):
    """A ``loss_value`` for :func:`~efficientnet.training.train_step`: the batch loss averaged over ranks.

    Every rank then sees the same value, so a NaN on one rank stops all of them at the same step.
    """
    if not info.enabled:
        return None

    def reduce(loss: torch.Tensor) -> float:
        t = loss.detach().float().reshape(1).clone()
        if info.backend != "nccl":
            t = t.cpu()
        dist.all_reduce(t)
        return float(t) / info.world_size

    return reduce
