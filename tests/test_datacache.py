"""The decoded-image cache and batched augmentation (efficientnet/datacache.py) on real image files, on the CPU."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from efficientnet.data import CheckedImageFolder, build_data_cache, load_dataset, seed_epoch, \
    train_transform
from efficientnet.datacache import (BatchAugment, DataCacheError, cache_size, choose_cache, dataset_samples,
                                    decode_images, same_device)
from efficientnet.preprocess import eval_transform, load_image, normalization, to_rgb
from efficientnet.scan import ClassFolders
from efficientnet.spec import preset

TINY = preset("lite0").replace(width=0.15, resolution=32)
CPU = torch.device("cpu")


@pytest.fixture()
def photo_folder(tmp_path: Path, sample_photos: dict[str, Path]) -> Path:
    """Two classes of real photos (JPEG, 640x427), three files each (flipped and rotated copies)."""
    root = tmp_path / "photos"
    for label, (name, path) in enumerate(sorted(sample_photos.items())):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        img = Image.open(path)
        for i, variant in enumerate((img, img.transpose(Image.FLIP_LEFT_RIGHT), img.rotate(90, expand=True))):
            variant.save(folder / f"{name}-{i}.jpg", quality=90)
    return root


def test_validation_images_are_decoded_exactly_as_the_evaluation_transform(photo_folder: Path, tmp_path: Path):
    spec = TINY.replace(resolution=48)
    split = load_dataset(str(photo_folder), spec, val_split=0.5, seed=0)
    samples = dataset_samples(split.val)
    decoded = decode_images(samples, spec.resolution, cache_dir=tmp_path / "c")
    assert decoded.images.dtype == torch.uint8 and decoded.images.shape == (len(samples), 3, 48, 48)
    norm = normalization(spec)
    augment = BatchAugment(None, norm.mean, norm.std)
    ours = augment(decoded.images)
    for i, (path, label) in enumerate(samples):
        want = eval_transform(spec)(Image.open(path))
        torch.testing.assert_close(ours[i], want, rtol=0, atol=1e-5)
        assert int(decoded.targets[i]) == label


def test_decoded_copy_is_reused_and_refreshed_when_a_file_changes(photo_folder: Path, tmp_path: Path):
    samples = sorted((str(p), int(p.parent.name[-1])) for p in photo_folder.rglob("*.jpg"))
    cache = tmp_path / "cache"
    first = decode_images(samples, 40, draft=True, cache_dir=cache)
    saved = list((cache / "decoded").glob("*.npy"))
    assert len(saved) == 1 and not list((cache / "decoded").glob(".*"))  # no temporary file left behind
    again = decode_images(samples, 40, draft=True, cache_dir=cache)
    assert torch.equal(first.images, again.images) and len(list((cache / "decoded").glob("*.npy"))) == 1
    path = Path(samples[0][0])
    Image.open(path).convert("L").convert("RGB").save(path)  # the user edits an image
    changed = decode_images(samples, 40, draft=True, cache_dir=cache)
    assert len(list((cache / "decoded").glob("*.npy"))) == 2
    assert not torch.equal(changed.images[0], first.images[0]) and torch.equal(changed.images[1:], first.images[1:])
    current = max((cache / "decoded").glob("*.npy"), key=lambda p: p.stat().st_mtime_ns)  # what the next call reads
    current.write_bytes(b"not an array")  # a damaged copy is decoded again, not trusted, and written anew
    repaired = decode_images(samples, 40, draft=True, cache_dir=cache)
    assert torch.equal(repaired.images, changed.images)
    assert current.read_bytes()[:6] == b"\x93NUMPY"


def test_identity_crop_returns_the_normalised_image_and_flip_mirrors_it():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    plain = BatchAugment(None, mean, std)(images)
    want = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(plain, want)
    # full-area crops with the aspect ratio pinned to 1 and no flip: the identity
    same = BatchAugment(16, mean, std, min_scale=1.0, hflip=0.0)
    same.ratio = (1.0, 1.0)
    torch.testing.assert_close(same(images), want, rtol=0, atol=1e-4)
    flipped = BatchAugment(16, mean, std, min_scale=1.0, hflip=1.0)
    flipped.ratio = (1.0, 1.0)
    torch.testing.assert_close(flipped(images), want.flip(-1), rtol=0, atol=1e-4)


def test_random_crops_are_seeded_varied_and_inside_the_image():
    images = torch.arange(64, dtype=torch.float32).repeat(64, 1).to(torch.uint8).expand(32, 3, 64, 64).contiguous()
    augment = BatchAugment(24, (0.0,) * 3, (1.0,) * 3, min_scale=0.25, hflip=0.5)
    g = torch.Generator().manual_seed(1)
    a = augment(images, g)
    g.manual_seed(1)
    assert torch.equal(a, augment(images, g))  # the same seed, the same crops
    g.manual_seed(2)
    assert not torch.equal(a, augment(images, g))
    assert a.shape == (32, 3, 24, 24)
    columns = a[:, 0, 0, :] * 255  # the image is a horizontal ramp 0..63: crops show ramps of various spans
    spans = (columns[:, -1] - columns[:, 0]).abs()
    assert spans.min() > 10 and spans.max() < 64 and len(set(spans.round().tolist())) > 10
    assert bool(((columns[:, -1] - columns[:, 0]) < 0).any() and ((columns[:, -1] - columns[:, 0]) > 0).any())


def test_cached_loaders_follow_the_epoch_seed_and_drop_the_ragged_batch(digits: Path, tmp_path: Path):
    split = load_dataset("digits", TINY, cache_dir=digits.parent, num_classes=10)
    cache, line = build_data_cache(split, TINY, "ram", CPU, cache_dir=tmp_path)
    assert cache is not None and "data cache in RAM" in line and f"{cache_size(32)} px squares" in line
    assert cache.train.images.shape[1:] == (3, 40, 40) and cache.val.images.shape[1:] == (3, 32, 32)
    train, val, order = cache.loaders(64, CPU, 32, seed=3)
    assert len(train) == len(split.train) // 64 and len(val) == -(-len(split.val) // 128)
    assert len(cache.loaders(64, CPU, 32, val_batch_size=64)[1]) == -(-len(split.val) // 64)

    def epoch(e: int) -> list[torch.Tensor]:
        seed_epoch(order, 3, e)
        return [torch.cat([x.flatten(), y.float()]) for x, y in train]

    first = epoch(0)
    assert len(first) == len(train) and all(b.numel() == 64 * 3 * 32 * 32 + 64 for b in first)
    assert all(torch.equal(a, b) for a, b in zip(first, epoch(0)))  # a resumed epoch sees the same batches
    assert not torch.equal(first[0], epoch(1)[0])
    seen = torch.cat([y for _, y in val])
    assert torch.equal(seen, cache.val.targets)  # validation: every image once, in order


def test_the_cache_choice_fits_the_device_and_memory():
    assert choose_cache("off", 10, CPU)[0] == "off"
    assert choose_cache("ram", 10, CPU)[0] == "ram"
    assert choose_cache("auto", 10 * 2**20, CPU)[0] == "ram"
    where, why = choose_cache("auto", 2**50, CPU)  # a petabyte: per-image loading
    assert where == "off" and "would not fit" in why
    with pytest.raises(DataCacheError, match="--data-cache gpu needs a CUDA device"):
        choose_cache("gpu", 10, CPU)


def test_draft_decoding_keeps_photos_recognisable(photo_folder: Path, tmp_path: Path):
    samples = sorted((str(p), 0) for p in photo_folder.rglob("*-0.jpg"))
    exact = decode_images(samples, 64, draft=False, cache_dir=None).images.float()
    draft = decode_images(samples, 64, draft=True, cache_dir=None).images.float()
    assert (exact - draft).abs().mean() < 6.0  # JPEG's reduced-scale decoding: the same picture
    assert np.corrcoef(exact.flatten().numpy(), draft.flatten().numpy())[0, 1] > 0.98


def test_same_device_treats_the_current_gpu_and_its_index_as_one():
    """torch.device("cuda") != torch.device("cuda:0"), yet a tensor made on "cuda" reports cuda:0: a cache in GPU
    memory must be recognised as on the training device, or batches are gathered with indices on the CPU."""
    cuda, cuda0, cuda1 = torch.device("cuda"), torch.device("cuda:0"), torch.device("cuda:1")
    assert cuda != cuda0  # why the helper exists
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    assert same_device(cuda, torch.device("cuda", current)) and same_device(torch.device("cuda", current), cuda)
    assert same_device(cuda1, cuda1) and not same_device(cuda0, cuda1)
    assert same_device(cuda, cuda1) == (current == 1)
    assert same_device(torch.device("cpu"), torch.device("cpu")) and not same_device(torch.device("cpu"), cuda0)


def test_16_bit_greyscale_images_keep_their_contrast_in_every_path(tmp_path: Path):
    """PIL's own RGB conversion clips a 16-bit image at 255: a 16-bit greyscale PNG or TIFF (medical, scientific
    imaging) came out nearly all white. Each path that reads images (the training and evaluation transforms, the
    data cache's decoding, the per-image dataset of ``--data-cache off``) sees the same image as its 8-bit copy
    instead."""
    ramp = np.tile(np.linspace(0, 65535, 40).astype(np.uint16), (30, 1))  # dark to bright, 40 x 30
    eight = Image.fromarray(np.rint(ramp / 257.0).astype(np.uint8))
    files = {"8-bit": tmp_path / "ramp8.png", "16-bit PNG": tmp_path / "ramp16.png",
             "16-bit TIFF": tmp_path / "ramp16.tif"}
    eight.save(files["8-bit"])
    Image.fromarray(ramp).save(files["16-bit PNG"])
    Image.fromarray(ramp).save(files["16-bit TIFF"])
    assert {name: Image.open(f).mode for name, f in files.items()} == {
        "8-bit": "L", "16-bit PNG": "I;16", "16-bit TIFF": "I;16"}
    assert np.asarray(Image.open(files["16-bit PNG"]).convert("RGB")).mean() > 240  # PIL alone: nearly all white
    spec = TINY.replace(resolution=24)
    samples = [(str(f), 0) for f in files.values()]
    decoded = decode_images(samples, spec.resolution).images
    for i, (name, path) in enumerate(files.items()):
        assert np.array_equal(np.asarray(to_rgb(Image.open(path))), np.asarray(eight.convert("RGB"))), name
        torch.testing.assert_close(eval_transform(spec)(Image.open(path)), eval_transform(spec)(eight))
        torch.manual_seed(0)
        trained = train_transform(spec, min_scale=0.5)(Image.open(path))
        torch.manual_seed(0)
        torch.testing.assert_close(trained, train_transform(spec, min_scale=0.5)(eight))
        assert torch.equal(decoded[i], decoded[0]), name
    assert int(decoded[0].min()) < 40 and int(decoded[0].max()) > 215  # the ramp, not a white square
    (tmp_path / "ramps").mkdir()
    copies = [shutil.copy(path, tmp_path / "ramps" / path.name) for path in files.values()]
    per_image = CheckedImageFolder(ClassFolders(tmp_path, ["ramps"], {"ramps": [Path(c) for c in copies]}),
                                   eval_transform(spec))  # torchvision's own loader clipped here
    assert len(per_image) == len(files)
    for i, (path, _) in enumerate(per_image.samples):
        torch.testing.assert_close(per_image[i][0], eval_transform(spec)(eight), msg=path)
    wide = Image.fromarray(ramp.astype(np.int32))  # mode I: how older Pillow opened 16-bit PNGs
    assert wide.mode == "I" and np.array_equal(np.asarray(to_rgb(wide)), np.asarray(eight.convert("RGB")))
    unit = Image.fromarray((ramp / 65535.0).astype(np.float32))  # mode F in [0, 1]
    assert np.abs(np.asarray(to_rgb(unit)).astype(int) - np.asarray(eight.convert("RGB"))).max() <= 1


def test_a_photo_stored_sideways_is_read_upright_in_every_path(tmp_path: Path):
    """Phone cameras store a portrait photo sideways with an EXIF orientation, which image viewers apply and PIL
    alone does not: the transforms, the data cache's decoding (JPEG draft decoding too) and predict read it
    upright, as its user sees it."""
    upright = np.zeros((48, 64), dtype=np.uint8)
    upright[:24, :32] = 255  # a bright top-left quadrant
    shown = Image.fromarray(upright).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    files = {"upright": tmp_path / "upright.png", "sideways PNG": tmp_path / "sideways.png",
             "sideways JPEG": tmp_path / "sideways.jpg"}
    shown.save(files["upright"])
    shown.transpose(Image.Transpose.ROTATE_90).save(files["sideways PNG"], exif=exif)
    shown.transpose(Image.Transpose.ROTATE_90).save(files["sideways JPEG"], exif=exif, quality=95)
    assert Image.open(files["sideways JPEG"]).size == (48, 64)  # stored sideways
    spec = TINY.replace(resolution=24)
    samples = [(str(f), 0) for f in files.values()]
    for draft in (False, True):
        decoded = decode_images(samples, spec.resolution, draft=draft).images.float()
        for i, name in enumerate(files):
            top_left, rest = decoded[i, :, :8, :8].mean(), decoded[i, :, 16:, 16:].mean()
            assert top_left > 200 and rest < 50, (name, draft)
    for name, path in files.items():
        assert np.abs(np.asarray(to_rgb(Image.open(path))).astype(int) - np.asarray(shown)).max() <= 8, name
        torch.testing.assert_close(eval_transform(spec)(Image.open(path)), eval_transform(spec)(shown),
                                   atol=0.1, rtol=0)
        torch.manual_seed(0)
        trained = train_transform(spec, min_scale=0.5)(Image.open(path))
        torch.manual_seed(0)
        torch.testing.assert_close(trained, train_transform(spec, min_scale=0.5)(shown), atol=0.1, rtol=0)


def test_a_palette_image_with_transparency_is_read_without_a_warning(tmp_path: Path):
    pixels = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).convert("P").save(tmp_path / "p.png", transparency=bytes([0] * 10))
    with Image.open(tmp_path / "p.png") as img, warnings.catch_warnings():
        assert img.mode == "P" and "transparency" in img.info
        warnings.simplefilter("error")
        assert to_rgb(img).mode == "RGB"


def test_a_truncated_image_is_read_as_far_as_it_goes_with_a_warning(tmp_path: Path, caplog):
    """A JPEG cut short (an interrupted download) passes the dataset scan, which decodes nothing, and PIL refused
    it when training decoded it: the run ended mid-epoch with a traceback. Every path that decodes images reads it
    as far as it goes and names it once."""
    rng = np.random.default_rng(0)
    whole = tmp_path / "whole.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)).save(whole, quality=95)
    cut = tmp_path / "c" / "cut.jpg"
    cut.parent.mkdir()
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(OSError, match="truncated"):
        Image.open(cut).convert("RGB")  # PIL alone
    with caplog.at_level("WARNING", logger="efficientnet.trial"):
        image = load_image(cut)
        decoded = decode_images([(str(cut), 0)], 32).images  # the data cache
        per_image = CheckedImageFolder(ClassFolders(tmp_path, ["c"], {"c": [cut]}))[0][0]  # --data-cache off
    assert image.size == (48, 64) and per_image.size == (48, 64) and decoded.shape == (1, 3, 32, 32)
    top = np.asarray(load_image(whole))[:8].astype(int)  # the first rows survive the cut
    assert np.abs(np.asarray(image)[:8].astype(int) - top).mean() < 1.0
    assert caplog.text.count(f"warning: {cut} is truncated") == 1 and "copy it again" in caplog.text
