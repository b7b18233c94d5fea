"""Image-folder datasets for a trial: the embedded digits demo, validation, stratified splits, transforms.

A dataset is a directory in torchvision's ``ImageFolder`` layout, either already split::

    DIR/train/<class>/*.png   DIR/val/<class>/*.png     (or valid/, validation/)

or as one folder of class sub-folders (``DIR/<class>/*.jpg``) that is split into train and validation here,
stratified by class and seeded, so every trial of an experiment sees the same split. A CSV file of image names
and labels (``--data train.csv``, :mod:`efficientnet.label_table`) serves as well. The image files are found and
checked by :mod:`efficientnet.scan`.

``--data digits`` is the offline demo: scikit-learn's real 8x8 handwritten digits (1,797 images, 10 classes)
upscaled and exported once as PNGs to an ``ImageFolder`` cache. The export goes to a temporary directory that is
renamed into place, so concurrent trials never see a half-written cache.

Every problem a user can fix (a missing or empty directory, a class folder without images, a single class,
unreadable images, a class-count mismatch) raises :class:`DataError` with one line naming it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset
from torchvision import transforms
from torchvision.datasets import ImageFolder

from .cache import default_cache_dir
from .datacache import (DataCache, cache_size, choose_cache, dataset_samples, decode_images)
from .environment import usable_cores
from .label_table import LabelTable, TestTable, is_label_table, read_label_table, read_test_table
from .layout import VAL_FOLDERS, DataError, find_layout, find_test_folder
from .preprocess import eval_transform, load_image, normalization, to_rgb
from .scan import ClassFolders, check_skipped, scan_class_folders, scan_label_table, scan_test_pairs
from .spec import ArchSpec

__all__ = [
    "DataError",
    "DatasetSplit",
    "DIGITS_NAME",
    "dataset_samples",
    "default_cache_dir",
    "export_digits",
    "stratified_sample",
    "stratified_split",
    "balanced_class_weights",
    "class_counts",
    "load_dataset",
    "TestSet",
    "load_test_set",
    "load_trial_split",
    "load_validation_set",
    "train_transform",
    "make_loaders",
    "default_workers",
    "build_data_cache",
    "set_train_transform",
    "seed_epoch",
]

log = logging.getLogger("efficientnet.trial")

DIGITS_NAME = "digits"
DIGITS_SIZE = 32
DIGITS_VAL_FRACTION = 0.2
IMBALANCE_RATIO = 5  # a training set whose largest class has this many times the images of its smallest is imbalanced


# ------------------------------------------------------------------------------------------------ splitting
def stratified_sample(labels: Sequence[int], fraction: float, seed: int) -> list[int]:
    """Indices of a seeded, class-stratified ``fraction`` of ``labels`` (at least one per class)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = min(len(idx), max(1, int(round(len(idx) * fraction))))
        picked.extend(rng.permutation(idx)[:n].tolist())
    return sorted(picked)


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded class-stratified split into ``(train indices, val indices)``.

    Each class with at least two images gives ``round(n * val_fraction)`` of them (at least one, at most n - 1)
    to validation; a class with a single image stays in training.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, int(round(len(idx) * val_fraction))))
        val.extend(idx[:n_val].tolist())
        train.extend(idx[n_val:].tolist())
    return sorted(train), sorted(val)


def stratified_group_split(labels: Sequence[int], groups: Sequence[str], val_fraction: float,
                           seed: int) -> tuple[list[int], list[int]]:
    """Seeded split into ``(train indices, val indices)`` that keeps each group (a patient, a lesion, a video) on
    one side, with each class's share of validation as near ``val_fraction`` as whole groups allow: scikit-learn's
    ``StratifiedGroupKFold`` with ``round(1 / val_fraction)`` folds, the first held out (so 0.2 holds out a fifth,
    0.3 a third)."""
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    folds = max(2, round(1 / val_fraction))
    if len(set(groups)) < folds:
        raise DataError(f"only {len(set(groups))} groups: too few to hold out whole groups for a "
                        f"{100 / folds:.0f} % validation split; add groups, raise --val-split (0.5 needs two "
                        "groups), or give the validation rows (a split column)")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "the least populated class in y has only 1 members": such a class's group
        warnings.simplefilter("ignore", UserWarning)  # stays in training, as stratified_split keeps it
        train, val = next(splitter.split(np.zeros(len(labels)), np.asarray(labels), np.asarray(groups)))
    return sorted(train.tolist()), sorted(val.tolist())


# ------------------------------------------------------------------------------------------------ digits demo
def export_digits(cache_dir: str | os.PathLike | None = None, size: int = DIGITS_SIZE, seed: int = 0) -> Path:
    """Export scikit-learn's digits once as an ImageFolder (``train/`` and ``val/``) and return its root.

    The images (8x8, 17 grey levels) are upscaled bilinearly to ``size`` pixels and saved as PNGs; 20 % of each
    class goes to ``val/``. Writing happens in a temporary directory renamed into place at the end, so a
    concurrent or killed export never leaves a partial cache behind.
    """
    root = Path(cache_dir or default_cache_dir()).expanduser() / f"digits-{size}px"
    if (root / ".complete").is_file():
        return root
    from sklearn.datasets import load_digits  # here: importing scikit-learn takes a second

    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".digits-export-", dir=root.parent))
    except OSError as exc:
        raise DataError(f"cannot write the digits cache under {root.parent} ({exc.strerror}); "
                        "pass a writable --download-dir") from None
    try:
        digits = load_digits()
        pixels = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        train, val = stratified_split(digits.target, DIGITS_VAL_FRACTION, seed)
        for split, indices in (("train", train), ("val", val)):
            for i in indices:
                folder = tmp / split / str(int(digits.target[i]))
                folder.mkdir(parents=True, exist_ok=True)
                img = Image.fromarray(pixels[i], mode="L").resize((size, size), Image.BILINEAR)
                img.save(folder / f"{i:04d}.png")
        (tmp / ".complete").write_text(f"scikit-learn digits, {size}px, seed {seed}\n")
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / ".complete").is_file():  # not a concurrent exporter that won the race
                raise DataError(f"{root} exists but is not a complete digits export; delete it and rerun") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


# ------------------------------------------------------------------------------------------------ datasets
@dataclass
class DatasetSplit:
    """Train and validation datasets (each a torchvision ``ImageFolder`` or a ``Subset`` of one)."""

    train: Dataset
    val: Dataset
    classes: list[str]
    root: Path
    layout: str  # "<training folder>/<validation folder>" (train/val, ...), "split", or "csv: <its columns>"
    train_targets: list[int]
    corrupt: int = 0
    hflip: float = 0.5  # the training transform's flip probability (0 for digits)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def train_transform(spec: ArchSpec, hflip: float = 0.5, min_scale: float = 0.5, resolution: int | None = None,
                    randaug: int = 0) -> transforms.Compose:
    """Random resized crop at ``resolution`` (default: the spec's), optional horizontal flip, RandAugment
    (2 ops at magnitude ``randaug``; 0 = off), normalisation of the weights."""
    steps: list = [
        transforms.Lambda(to_rgb),
        transforms.RandomResizedCrop(resolution or spec.resolution, scale=(min_scale, 1.0),
                                     interpolation=transforms.InterpolationMode.BICUBIC),
    ]
    if hflip > 0:
        steps.append(transforms.RandomHorizontalFlip(hflip))
    if randaug > 0:
        steps.append(transforms.RandAugment(num_ops=2, magnitude=int(randaug)))
    steps += [transforms.ToTensor(), normalization(spec)]
    return transforms.Compose(steps)


class CheckedImageFolder(ImageFolder):
    """torchvision's ``ImageFolder`` restricted to what :func:`scan_class_folders` accepted.

    Hidden folders are not classes and unreadable files are left out: the samples are the scan's files, in its
    order. Images are read by :func:`load_image`, not
    torchvision's loader, whose ``convert("RGB")`` clips a 16-bit image to white before any transform sees it.
    """

    def __init__(self, scan: ClassFolders, transform=None) -> None:
        self._scan = scan
        super().__init__(os.fspath(scan.root), transform=transform, loader=load_image)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return list(self._scan.classes), {c: i for i, c in enumerate(self._scan.classes)}

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None,
                     allow_empty=False) -> list[tuple[str, int]]:  # type: ignore[override]
        """The scan's files, class by class: not a second walk of the folders (torchvision's follows every link
        again, and two links back up made it walk without end)."""
        return [(os.fspath(p), class_to_idx[c]) for c in self._scan.classes for p in self._scan.files[c]]


def _image_folder(scan: ClassFolders, transform) -> ImageFolder:
    return CheckedImageFolder(scan, transform)


def load_dataset(
    data: str,
    spec: ArchSpec,
    *,
    val_split: float = 0.2,
    seed: int = 0,
    num_classes: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    hflip: float | None = None,
    min_scale: float = 0.5,
    label_column: str | None = None,
    group_column: str | None = None,
) -> DatasetSplit:
    """Resolve ``data`` (a directory, a label CSV or ``digits``), validate it and build train/val datasets.

    ``hflip`` defaults to 0.5, or 0 for the digits demo (mirrored digits are other digits). ``label_column``
    names a label CSV's label column when it is not found by its name; ``group_column`` its column of groups
    (a patient, a lesion), which a held-out validation split keeps whole.
    """
    if data == DIGITS_NAME:
        root = export_digits(cache_dir)
        hflip = 0.0 if hflip is None else hflip
    else:
        root = Path(data).expanduser()
        hflip = 0.5 if hflip is None else hflip
    train_tf = train_transform(spec, hflip=hflip, min_scale=min_scale)
    eval_tf = eval_transform(spec)
    records = Path(cache_dir or default_cache_dir()).expanduser() / "scans"  # which files PIL can read
    if is_label_table(root):
        table = read_label_table(root, num_classes, label_column, group_column)
        root = table.path
        _warn_table(table)
        train_scan, val_scan = scan_label_table(table, records)
        classes = table.classes
        kind = f"csv: images {table.image_column}, labels {table.label_column}" + \
            (f", groups {table.group_column}" if table.group_column else "") + \
            (f", validation {table.validation}" if table.validation else "")
        groups = table.groups
    else:
        layout, groups = find_layout(root, num_classes), None
        classes = layout.classes
        if layout.val_root is not None:
            train_scan = scan_class_folders(layout.train_root, record_dir=records)
            val_scan = scan_class_folders(layout.val_root, record_dir=records)
            kind = f"{layout.train_root.name}/{layout.val_root.name}"
        else:
            if layout.unused:
                train = layout.train_root.name
                log.warning("warning: %s has %s/ but no %s folder: a seeded %d %% of %s/ is held out for validation "
                            "(unused: %s); rename a folder val/ to validate on it", root, train,
                            ", ".join(f"{name}/" for name in VAL_FOLDERS), round(100 * val_split), train,
                            ", ".join(layout.unused))
            root = layout.train_root
            train_scan, val_scan = scan_class_folders(root, record_dir=records), None
            kind = "split"
    if val_scan is not None:
        corrupt = check_skipped([train_scan, val_scan])
        train_ds: Dataset = _image_folder(train_scan, train_tf)
        val_ds: Dataset = _image_folder(val_scan, eval_tf)
        train_targets = list(train_ds.targets)
        _warn_unseen(classes, set(val_ds.targets), "have no validation image", "add some")
    else:
        corrupt = check_skipped([train_scan])
        full_train = _image_folder(train_scan, train_tf)
        full_eval = _image_folder(train_scan, eval_tf)
        if groups is not None:
            train_idx, val_idx = stratified_group_split(full_train.targets, [groups[p] for p, _ in full_train.samples],
                                                        val_split, seed)
        else:
            train_idx, val_idx = stratified_split(full_train.targets, val_split, seed)
        if not val_idx:
            raise DataError(f"{root} has too few images to hold out a validation split; add images or a val/ folder")
        train_ds = Subset(full_train, train_idx)
        val_ds = Subset(full_eval, val_idx)
        train_targets = [full_train.targets[i] for i in train_idx]
        _warn_unseen(classes, {full_eval.targets[i] for i in val_idx},  # a class of one image stays in training
                     "with a single image have none held out for validation", "add images, or a val/ folder")
    return DatasetSplit(train_ds, val_ds, list(classes), root, kind, train_targets, corrupt, hflip)


def _warn_unseen(classes: Sequence[str], seen: set[int], what: str, fix: str) -> None:
    """Name the classes without a validation image: their accuracy is not measured."""
    unseen = sorted(set(range(len(classes))) - seen)
    if unseen:
        names = ", ".join(classes[c] for c in unseen[:5]) + (", ..." if len(unseen) > 5 else "")
        log.warning("warning: %d class(es) %s (%s): their accuracy is not measured and they count as 0 in the "
                    "macro F1; %s", len(unseen), what, names, fix)


def _warn_rows(table: LabelTable | TestTable) -> None:
    """Name the rows of a label CSV that no image comes from: missing files, no label, repeats."""
    name = table.path.name
    if table.missing:
        log.warning("warning: %s: %d row(s) name an image that was not found under %s (e.g. %r); they are left out",
                    name, len(table.missing), table.path.parent, table.missing[0])
    for n, why in ((table.unlabelled, f"have no {table.label_column}"),
                   (table.repeated, "repeat an image named before (with the same label)")):
        if n:
            log.warning("warning: %s: %d row(s) %s; they are left out", name, n, why)


def _warn_table(table: LabelTable) -> None:
    """Name the rows of a label CSV that are left out, and the groups a given split puts on both sides."""
    name = table.path.name
    _warn_rows(table)
    if table.group_hints and table.validation is None:
        column = table.group_hints[0]
        log.warning("warning: %s: its %s column gives several images one value: if they show one subject (a "
                    "patient, a lesion), pass --group-column %s, so that validation holds out subjects the model has "
                    "not seen", name, column, column)
    if table.shared_groups:
        log.warning("warning: %s: %d group(s) of the %s column have images in both training and validation (%s): "
                    "validation scores will be optimistic; keep each group on one side", name, table.shared_groups,
                    table.group_column, table.validation)
    if table.test_rows:
        log.warning("warning: %s: %d row(s) are in the test split (%s); they are left out (python -m efficientnet "
                    "evaluate CHECKPOINT %s scores a trained model on them)", name, table.test_rows, table.validation,
                    table.path)


@dataclass
class TestSet:
    """Held-out labelled images to evaluate a trained model on, labelled with the model's class indices."""

    dataset: Dataset  # (image, class index) with the model's evaluation transform
    root: Path
    layout: str  # "test/", "class folders" or "csv: <its columns and rows>"
    classes: list[str]  # the model's classes
    corrupt: int = 0


def load_test_set(data: str, spec: ArchSpec, classes: Sequence[str], *, label_column: str | None = None,
                  cache_dir: str | os.PathLike | None = None) -> TestSet:
    """The images of ``data`` to evaluate a model of ``classes`` on: a dataset folder's ``test/``, a folder of class
    folders, or a label CSV's test rows (every row without a split column); read and checked as a trial's are.
    A class the model does not know is an error; a class of the model without a test image is a warning."""
    root = Path(data).expanduser()
    records = Path(cache_dir or default_cache_dir()).expanduser() / "scans"
    index = {c: i for i, c in enumerate(classes)}
    if is_label_table(root):
        table = read_test_table(root, label_column)
        _check_known([label for _, label in table.pairs], classes, f"{table.path.name} has labels",
                     "leave their rows out")
        _warn_rows(table)
        scan = scan_test_pairs(table.path, classes, [(p, index[label]) for p, label in table.pairs], records)
        root, kind = table.path, f"csv: images {table.image_column}, labels {table.label_column}, {table.rows}"
    else:
        folder, kind = find_test_folder(root)
        folders = scan_class_folders(folder, record_dir=records)
        _check_known(folders.classes, classes, f"{folder} has class folders", "leave them out")
        scan = ClassFolders(folder, list(classes), {c: folders.files.get(c, []) for c in classes}, folders.corrupt,
                            folders.oversized, folders.other_formats)
        root = folder
    corrupt = check_skipped([scan], "score them")
    if not scan.num_images:
        raise DataError(f"{root} has no readable test images; add JPEG or PNG images")
    absent = [c for c in classes if not scan.files[c]]
    if absent:
        log.warning("warning: %d of the model's %d classes have no test image (%s): their recall is not measured",
                    len(absent), len(classes), ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else ""))
    return TestSet(CheckedImageFolder(scan, eval_transform(spec)), root, kind, list(classes), corrupt)


def load_trial_split(data: str, spec: ArchSpec, classes: Sequence[str], settings: dict,
                     fix: str = "pass the test images as DATA instead") -> DatasetSplit:
    """The training and validation images of a trial of ``settings`` (its flags, as its checkpoint records them),
    for a model of ``classes``: the same dataset ``data``, split with the same ``--val-split``, ``--seed`` and
    columns. A dataset whose classes are no longer the model's is an error (ending with ``fix``)."""
    split = load_dataset(data, spec, val_split=settings.get("val_split") or 0.2, seed=settings.get("seed") or 0,
                         label_column=settings.get("label_column"), group_column=settings.get("group_column"),
                         cache_dir=settings.get("download_dir") if data == DIGITS_NAME else None)
    if list(split.classes) != list(classes):
        changed = sorted(set(split.classes) ^ set(classes)) or ["their order"]
        raise DataError(f"{data} no longer has the classes the model was trained on (they differ in "
                        f"{', '.join(changed[:5])}); {fix}")
    return split


def load_validation_set(data: str, spec: ArchSpec, classes: Sequence[str], settings: dict) -> TestSet:
    """The validation images a trial of ``settings`` scored (:func:`load_trial_split`), to score a model of
    ``classes`` on again."""
    split = load_trial_split(data, spec, classes, settings)
    return TestSet(split.val, split.root, f"the trial's validation split: {split.layout}", list(classes),
                   split.corrupt)


def _check_known(found: Sequence[str], classes: Sequence[str], what: str, fix: str) -> None:
    """A test class the model was not trained on is an error naming it."""
    unknown = sorted(set(found) - set(classes))
    if unknown:
        known = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
        raise DataError(f"{what} the model was not trained on ({', '.join(unknown[:5])}; it knows {known}); "
                        f"evaluate a model trained on them, or {fix}")


def class_counts(targets: Sequence[int], num_classes: int) -> list[int]:
    """How many of ``targets`` fall in each of the ``num_classes`` classes."""
    return torch.bincount(torch.as_tensor(list(targets), dtype=torch.long), minlength=num_classes).tolist()


def balanced_class_weights(targets: Sequence[int], num_classes: int) -> torch.Tensor:
    """Loss weights that give every class the same total weight, ``n / (num_classes * n_c)``, as scikit-learn's
    ``compute_class_weight("balanced")`` (a class without images counts as one)."""
    counts = torch.tensor(class_counts(targets, num_classes), dtype=torch.float32).clamp(min=1)
    return len(targets) / (num_classes * counts)


def subset_train(split: DatasetSplit, fraction: float, seed: int) -> DatasetSplit:
    """Keep a seeded, class-stratified ``fraction`` of the training set (proxy training)."""
    if fraction >= 1.0:
        return split
    keep = stratified_sample(split.train_targets, fraction, seed)
    split.train = Subset(split.train, keep)
    split.train_targets = [split.train_targets[i] for i in keep]
    return split


def set_train_transform(split: DatasetSplit, transform) -> None:
    """Give the training images a new transform (e.g. a progressive-learning stage's size and augmentation).

    Rebuild the loaders afterwards: worker processes keep a copy of the dataset.
    """
    ds = split.train
    while isinstance(ds, Subset):
        ds = ds.dataset
    ds.transform = transform


def default_workers(device: torch.device) -> int:
    """``--workers auto``: on a GPU, one loader process per CPU core but one (at most 8), so decoding keeps up with
    the GPU; on the CPU none, since the training itself uses every core."""
    if device.type != "cuda":
        return 0
    return max(1, min(8, usable_cores() - 1))


def make_loaders(
    split: DatasetSplit, batch_size: int, workers: int = 0, pin_memory: bool = False, *, rank: int = 0,
    world_size: int = 1, seed: int = 0, val_batch_size: int | None = None,
) -> tuple[DataLoader, DataLoader, torch.Generator | DistributedSampler]:
    """Train/val loaders and the object that orders an epoch (pass it to :func:`seed_epoch` every epoch).

    One process: shuffling draws from the returned generator. ``world_size > 1`` (data-parallel): a
    ``DistributedSampler`` gives rank ``rank`` its ``ceil(n / world_size)`` shuffled training images (the tail is
    padded with repeats so every rank runs the same number of steps), and validation gets every
    ``world_size``-th image from ``rank`` on, without repeats, so metrics summed over ranks count each image once.
    Worker processes stay alive between epochs and each keeps 4 batches ready; the last, ragged training batch is
    dropped, so every step has the same shape (cuDNN picks its kernels once). Validation batches hold
    ``val_batch_size`` images (default: twice ``batch_size``).
    """
    generator = torch.Generator()
    if world_size > 1:
        sampler = DistributedSampler(split.train, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        val_ds: Dataset = Subset(split.val, range(rank, len(split.val), world_size))
    else:
        sampler = RandomSampler(split.train, generator=generator)
        val_ds = split.val
    n = len(sampler)
    extra = {"persistent_workers": True, "prefetch_factor": 4} if workers > 0 else {}
    train = DataLoader(
        split.train,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=n > batch_size,  # fixed shapes, and never a last batch of one (BatchNorm cannot train on it)
        generator=generator,
        **extra,
    )
    val = DataLoader(val_ds, batch_size=val_batch_size or batch_size * 2, shuffle=False, num_workers=workers,
                     pin_memory=pin_memory, **extra)
    return train, val, sampler if world_size > 1 else generator


def build_data_cache(split: DatasetSplit, spec: ArchSpec, mode: str, device: torch.device, *,
                     max_resolution: int | None = None, min_scale: float = 0.5, workers: int = 0,
                     cache_dir: str | os.PathLike | None = None,
                     gpu_room: int | None = None) -> tuple[DataCache | None, str]:
    """Decode ``split`` once for :class:`~efficientnet.datacache.DataCache` under ``--data-cache mode``
    (``gpu_room``: see :func:`~efficientnet.datacache.choose_cache`).

    Returns the cache (``None`` when it is off) and a log line saying where it went and why. Training squares are
    sized for ``max_resolution`` (default: the spec's), validation images for the spec's resolution.
    """
    train_samples, val_samples = dataset_samples(split.train), dataset_samples(split.val)
    size = cache_size(max_resolution or spec.resolution)
    res = spec.resolution
    nbytes = 3 * (len(train_samples) * size * size + len(val_samples) * res * res)
    where, why = choose_cache(mode, nbytes, device, gpu_room)
    if where == "off":
        return None, f"data cache off ({why}): images are decoded every epoch by {workers} loader process(es)"
    started = time.perf_counter()
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    train = decode_images(train_samples, size, draft=True, workers=workers, cache_dir=cache_dir)
    val = decode_images(val_samples, res, workers=workers, cache_dir=cache_dir)
    target = device if where == "gpu" else torch.device("cpu")
    pin = where == "ram" and device.type == "cuda"
    norm = normalization(spec)
    cache = DataCache(train.to(target, pin), val.to(target, pin), where, norm.mean, norm.std, min_scale=min_scale,
                      hflip=split.hflip)
    return cache, (f"data cache in {'GPU memory' if where == 'gpu' else 'RAM'} ({why}): training images as "
                   f"{size} px squares, validation at {res} px, ready in {time.perf_counter() - started:.1f} s")


def seed_epoch(order: torch.Generator | DistributedSampler, seed: int, epoch: int) -> None:
    """Fix the shuffle of 0-based ``epoch`` (the same whether or not the run was resumed)."""
    if isinstance(order, DistributedSampler):
        order.set_epoch(epoch)
    else:
        order.manual_seed(seed * 100_003 + epoch)
