"""Decoded-image cache with batched augmentation on the training device (the FFCV / airbench recipe).

With a per-image pipeline (PIL decode, resize, crop, flip, to tensor, normalise in DataLoader workers) a GPU waits
for the CPU: an EfficientNet-B0 step takes a few milliseconds for a batch that costs a core a second to decode.
For the datasets this package is usually pointed at (thousands to ~100k images), every image is instead decoded and
resized once, to ``uint8``:

* training images to a ``size x size`` square (the image's central square, resized; ``size`` is about 1.25x the
  largest training resolution) from which random-resized crops are cut;
* validation images exactly as the evaluation transform makes them (short side resized to the resolution,
  centre crop), so metrics are those of the uncached path.

The decoded arrays live in RAM (pinned when they feed a GPU) or on the GPU itself. Augmentation runs on whole
batches on the device: one ``affine_grid``/``grid_sample`` does the random-resized crop, the horizontal flip and the
resize for every image of the batch at once (bilinear), followed by one fused normalisation; RandAugment (progressive
learning) runs on groups of images with torchvision's tensor implementation. Mixup already works on batches.

The decoded arrays are also written once (atomically) to ``<cache>/decoded/<key>.npy``, keyed by the files, their
sizes and times, and the size, so the next trial of an experiment skips the decoding. ``--data-cache`` chooses:
``auto`` (GPU when the arrays fit in a quarter of its free memory, else RAM when they fit in a quarter of the
available memory, else off), ``ram``, ``gpu`` or ``off`` (the per-image DataLoader pipeline).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler, Subset
from torchvision import transforms

from .preprocess import load_image

log = logging.getLogger("efficientnet.trial")

__all__ = [
    "CACHE_MODES",
    "DataCache",
    "DataCacheError",
    "DecodedImages",
    "same_device",
    "BatchAugment",
    "CachedLoader",
    "cache_size",
    "choose_cache",
    "dataset_samples",
    "decode_images",
]

CACHE_MODES = ("auto", "ram", "gpu", "off")
CACHE_VERSION = 2  # 2: to_rgb (EXIF orientation applied, 16-bit images scaled to 8 bits, not clipped)
SIZE_MARGIN = 1.25  # decoded training squares are this much larger than the largest training resolution
DEVICE_SHARE = 0.25  # auto: the cache may take this share of the GPU's free memory, or of the available RAM


class DataCacheError(ValueError):
    """A cache setting that cannot work (e.g. ``gpu`` without a GPU); the message names the fix."""


# ------------------------------------------------------------------------------------------------ sizes and choice
def cache_size(resolution: int) -> int:
    """The side of the decoded training squares for a largest training ``resolution`` (a multiple of 8)."""
    return int(math.ceil(resolution * SIZE_MARGIN / 8) * 8)


def available_ram() -> int:
    """Bytes of RAM available to a new process (Linux's MemAvailable; elsewhere the free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def choose_cache(mode: str, nbytes: int, device: torch.device, gpu_room: int | None = None) -> tuple[str, str]:
    """Where ``nbytes`` of decoded images go under ``--data-cache mode``: ``gpu``, ``ram`` or ``off``, with the
    reason as a short phrase for the log. ``gpu_room``: the bytes of GPU memory this trial can spare beside
    training (its share less what training needs; None: not known). Raises :class:`DataCacheError` for ``gpu``
    without a CUDA device."""
    size = f"{nbytes / 2**30:.2f} GiB"
    if mode == "off":
        return "off", "--data-cache off"
    if mode == "gpu":
        if device.type != "cuda":
            raise DataCacheError(f"--data-cache gpu needs a CUDA device (training on {device}); use ram, auto or off")
        return "gpu", f"{size} decoded, --data-cache gpu"
    if mode == "ram":
        return "ram", f"{size} decoded, --data-cache ram"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        spare = "" if gpu_room is None else f" and in the {max(0, gpu_room) / 2**30:.1f} GiB training leaves"
        if nbytes <= DEVICE_SHARE * free and (gpu_room is None or nbytes <= gpu_room):
            return "gpu", f"{size} decoded fit in a quarter of the GPU's {free / 2**30:.1f} GiB free{spare}"
    ram = available_ram()
    if nbytes <= DEVICE_SHARE * ram:
        return "ram", f"{size} decoded fit in a quarter of the {ram / 2**30:.1f} GiB of available RAM"
    return "off", f"{size} decoded would not fit in a quarter of the available memory"


# ------------------------------------------------------------------------------------------------ decoding
def dataset_samples(ds: Dataset) -> list[tuple[str, int]]:
    """``(path, class index)`` of every image of an ``ImageFolder`` or of (nested) ``Subset``s of one, in order."""
    indices: Sequence[int] | None = None
    while isinstance(ds, Subset):
        indices = [ds.indices[i] for i in indices] if indices is not None else list(ds.indices)
        ds = ds.dataset
    samples = ds.samples  # torchvision DatasetFolder
    return [samples[i] for i in indices] if indices is not None else list(samples)


class _Decode(Dataset):
    """One image file -> ``uint8`` CHW tensor: short side resized to ``size``, centre crop ``size``."""

    def __init__(self, samples: Sequence[tuple[str, int]], size: int, draft: bool) -> None:
        self.paths = [p for p, _ in samples]
        self.size, self.draft = size, draft
        self.resize = transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC)
        self.crop = transforms.CenterCrop(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = load_image(self.paths[i], self.size if self.draft else None)  # JPEG decoded at 1/2, 1/4, 1/8 scale
        img = self.crop(self.resize(img))
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def _cache_key(samples: Sequence[tuple[str, int]], size: int, draft: bool) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}|{size}|{draft}".encode())
    for path, label in samples:
        st = os.stat(path)
        h.update(f"{os.path.abspath(path)}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _decode_all(samples: Sequence[tuple[str, int]], size: int, draft: bool, workers: int,
                out: np.ndarray) -> None:
    # a generator of its own: iterating a DataLoader draws a seed, which from the global RNG would make a run that
    # decodes (the first on a dataset) train differently from one that reads the saved copy
    loader = DataLoader(_Decode(samples, size, draft), batch_size=64, num_workers=workers,
                        persistent_workers=False, generator=torch.Generator())
    start = 0
    for batch in loader:
        out[start:start + len(batch)] = batch.numpy()
        start += len(batch)


@dataclass
class DecodedImages:
    """Decoded images (``uint8 [N, 3, size, size]``) and their class indices (``int64 [N]``), on one device."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def nbytes(self) -> int:
        return self.images.numel()

    def to(self, device: torch.device | str, pin: bool = False) -> "DecodedImages":
        """This cache on ``device`` (``pin``: page-locked host memory, for fast copies to a GPU)."""
        images, targets = self.images.to(device), self.targets.to(device)
        if pin and images.device.type == "cpu":
            images, targets = images.pin_memory(), targets.pin_memory()
        return DecodedImages(images, targets)


def decode_images(samples: Sequence[tuple[str, int]], size: int, *, draft: bool = False, workers: int = 0,
                  cache_dir: str | os.PathLike | None = None) -> DecodedImages:
    """Decode ``samples`` once to ``uint8`` squares of ``size`` (see :class:`_Decode`), reusing the copy saved in
    ``cache_dir/decoded/`` by an earlier run when the files are unchanged; returns them in RAM.

    The saved copy is written to a temporary file and renamed into place, so concurrent trials never read half of
    one; when the disk lacks room (twice the size), nothing is saved. ``draft`` lets JPEGs decode at a reduced
    scale (training squares only: validation images are decoded exactly as the evaluation transform does).
    """
    n = len(samples)
    targets = torch.tensor([label for _, label in samples], dtype=torch.int64)
    shape = (n, 3, size, size)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir).expanduser() / "decoded" / f"{_cache_key(samples, size, draft)}.npy"
        if path.is_file():
            try:
                arr = np.load(path, mmap_mode="r")
                if arr.shape == shape and arr.dtype == np.uint8:
                    return DecodedImages(torch.from_numpy(np.array(arr)), targets)
            except (OSError, ValueError):
                pass  # damaged or foreign: decode again and replace it
    tmp = None
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if shutil.disk_usage(path.parent).free > 2 * math.prod(shape):
                fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy", dir=path.parent)
                os.close(fd)
                tmp = Path(tmp_name)
        except OSError:
            tmp = None
    try:
        if tmp is not None:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            _decode_all(samples, size, draft, workers, out)
            out.flush()
            images = torch.from_numpy(np.array(out))
            del out
            os.replace(tmp, path)
        else:
            buf = np.empty(shape, dtype=np.uint8)
            _decode_all(samples, size, draft, workers, buf)
            images = torch.from_numpy(buf)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return DecodedImages(images, targets)


# ------------------------------------------------------------------------------------------------ augmentation
class BatchAugment:
    """Random-resized crop, horizontal flip, optional RandAugment and normalisation of a ``uint8`` batch, on the
    batch's device.

    The crop follows torchvision's ``RandomResizedCrop``: an area fraction uniform in ``[min_scale, 1]``, a
    log-uniform aspect ratio in ``ratio`` (``[3/4, 4/3]``) and a uniform position, here clamped to the square instead of
    redrawn; it is resized to ``out_size`` bilinearly. ``out_size=None`` (evaluation) only normalises.
    Random numbers come from ``generator`` (on the batch's device), so an epoch's augmentation is seeded.
    """

    def __init__(self, out_size: int | None, mean: Sequence[float], std: Sequence[float], *,
                 min_scale: float = 0.5, hflip: float = 0.5, ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 randaug: int = 0, randaug_group: int = 16) -> None:
        self.out_size, self.min_scale, self.hflip, self.ratio = out_size, min_scale, hflip, ratio
        self.randaug, self.randaug_group = randaug, randaug_group
        self._scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, 3, 1, 1)
        self._shift = torch.tensor([-m / s for m, s in zip(mean, std)]).view(1, 3, 1, 1)
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # copied once per device
        self._randaug = None
        if randaug > 0:
            from torchvision.transforms import v2

            self._randaug = v2.RandAugment(num_ops=2, magnitude=int(randaug))

    def _normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.device not in self._on_device:
            self._on_device[pixels.device] = (self._scale.to(pixels.device), self._shift.to(pixels.device))
        scale, shift = self._on_device[pixels.device]
        return torch.addcmul(shift, pixels, scale)

    def crop_grid(self, batch: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        """The sampling grid of ``batch`` random-resized (and maybe flipped) crops, for ``grid_sample``."""
        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.empty(batch, device=device).uniform_(low, high, generator=generator)

        area = uniform(self.min_scale, 1.0)
        ratio = uniform(math.log(self.ratio[0]), math.log(self.ratio[1])).exp()
        w = (area * ratio).sqrt().clamp(max=1.0)  # crop width and height as fractions of the square
        h = (area / ratio).sqrt().clamp(max=1.0)
        cx = uniform(-1.0, 1.0) * (1.0 - w)  # crop centre in grid_sample's [-1, 1] coordinates
        cy = uniform(-1.0, 1.0) * (1.0 - h)
        flip = torch.where(uniform(0.0, 1.0) < self.hflip, -1.0, 1.0)
        theta = torch.zeros(batch, 2, 3, device=device)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
        return F.affine_grid(theta, [batch, 3, self.out_size, self.out_size], align_corners=False)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``uint8 [B, 3, S, S]`` -> normalised ``float32 [B, 3, out_size, out_size]`` on the same device."""
        if self.out_size is None:
            return self._normalize(images.float())
        grid = self.crop_grid(images.shape[0], images.device, generator)
        pixels = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self._randaug is not None:
            pixels = pixels.round_().clamp_(0, 255).to(torch.uint8)
            pixels = torch.cat([self._randaug(g) for g in pixels.split(self.randaug_group)]).float()
        return self._normalize(pixels)


# ------------------------------------------------------------------------------------------------ loading
def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether ``a`` and ``b`` name one device: ``cuda`` (the current GPU) is ``cuda:0`` when GPU 0 is current,
    though ``torch.device("cuda") != torch.device("cuda:0")``."""
    if a.type != b.type:
        return False
    if a.index == b.index:
        return True
    current = torch.cuda.current_device() if a.type == "cuda" and torch.cuda.is_available() else 0
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


class CachedLoader:
    """Batches ``(images, targets)`` from :class:`DecodedImages`, augmented on ``device``: a drop-in for the
    DataLoader of the training loop.

    ``sampler`` orders the indices (a seeded ``RandomSampler`` or ``DistributedSampler``; ``None``: in order).
    A cache in pinned RAM is gathered batch by batch into one of two pinned buffers and copied asynchronously.
    """

    def __init__(self, data: DecodedImages, batch_size: int, augment: BatchAugment, device: torch.device, *,
                 sampler: Sequence[int] | Sampler | None = None, drop_last: bool = False, seed: int = 0) -> None:
        self.data, self.batch_size, self.augment, self.device = data, batch_size, augment, device
        self.sampler, self.drop_last, self.base_seed = sampler, drop_last, seed
        self.generator = torch.Generator(device=device)
        self._resident = same_device(data.images.device, device)  # the cache already lives on the training device
        self._buffers: list[tuple[tuple[torch.Tensor, torch.Tensor], torch.cuda.Event | None]] = []
        self.dataset = range(len(sampler) if sampler is not None else len(data))  # as DataLoader.dataset's length

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _augment_seed(self) -> int:
        """This epoch's augmentation seed, drawn after the sampler's own order (so both follow ``seed_epoch``)."""
        s = self.sampler
        if isinstance(s, DistributedSampler):
            return self.base_seed + 1_000_003 * s.epoch + 7919 * s.rank
        if isinstance(s, RandomSampler) and s.generator is not None:
            return int(torch.randint(2**62, (1,), generator=s.generator))
        return self.base_seed

    def _indices(self) -> list[torch.Tensor]:
        """The epoch's batches of indices, on the cache's device (one copy per epoch, not one per batch)."""
        order = list(self.sampler) if self.sampler is not None else list(range(len(self.data)))
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        index = torch.tensor(order[:stop], dtype=torch.int64)
        if self._resident:
            index = index.to(self.data.images.device)
        return list(index.split(self.batch_size))

    def _to_device(self, idx: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = self.data.images, self.data.targets
        if self._resident:
            return images.index_select(0, idx), targets.index_select(0, idx)
        if self.device.type != "cuda" or not images.is_pinned():
            return images.index_select(0, idx).to(self.device), targets.index_select(0, idx).to(self.device)
        slot = step % 2  # gather into pinned buffers, copy without blocking; reuse them once those copies are done
        if len(self._buffers) <= slot:
            self._buffers.append(((torch.empty((self.batch_size, *images.shape[1:]), dtype=images.dtype).pin_memory(),
                                   torch.empty(self.batch_size, dtype=targets.dtype).pin_memory()), None))
        (image_buffer, target_buffer), done = self._buffers[slot]
        if done is not None:
            done.synchronize()
        n = len(idx)
        torch.index_select(images, 0, idx, out=image_buffer[:n])
        torch.index_select(targets, 0, idx, out=target_buffer[:n])
        on_device = (image_buffer[:n].to(self.device, non_blocking=True),
                     target_buffer[:n].to(self.device, non_blocking=True))
        event = torch.cuda.Event()
        event.record()
        self._buffers[slot] = ((image_buffer, target_buffer), event)
        return on_device

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self._indices()  # draws the sampler's order first
        self.generator.manual_seed(self._augment_seed())
        for step, idx in enumerate(indices):
            images, targets = self._to_device(idx, step)
            yield self.augment(images, self.generator), targets


class DataCache:
    """The decoded training and validation images of a dataset split, held where they are served from."""

    def __init__(self, train: DecodedImages, val: DecodedImages, where: str, mean: Sequence[float],
                 std: Sequence[float], *, min_scale: float = 0.5, hflip: float = 0.5) -> None:
        self.train, self.val, self.where = train, val, where
        self.mean, self.std, self.min_scale, self.hflip = tuple(mean), tuple(std), min_scale, hflip

    def loaders(self, batch_size: int, device: torch.device, resolution: int, randaug: int = 0, *, rank: int = 0,
                world_size: int = 1, seed: int = 0,
                val_batch_size: int | None = None) -> tuple[CachedLoader, CachedLoader,
                                                             torch.Generator | DistributedSampler]:
        """Train and validation loaders and the epoch-order object, with the contract of
        :func:`efficientnet.data.make_loaders`; training crops come out at ``resolution`` (a progressive stage's)."""
        n = len(self.train)
        generator = torch.Generator()
        if world_size > 1:
            sampler: Sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True,
                                                  seed=seed)
            val_order: Sequence[int] | None = range(rank, len(self.val), world_size)
        else:
            sampler, val_order = RandomSampler(range(n), generator=generator), None
        augment = BatchAugment(resolution, self.mean, self.std, min_scale=self.min_scale, hflip=self.hflip,
                               randaug=randaug)
        train = CachedLoader(self.train, batch_size, augment, device, sampler=sampler,
                             drop_last=len(sampler) > batch_size, seed=seed)
        val = CachedLoader(self.val, val_batch_size or batch_size * 2, BatchAugment(None, self.mean, self.std), device,
                           sampler=val_order)
        return train, val, sampler if world_size > 1 else generator
