"""Checkpoints: atomic writes, weights_only loading, RNG round trips, the legacy project's helper names."""

from __future__ import annotations

import os
import pickle
import random
import stat
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import utils
from efficientnet.checkpoint import (BEST_NAME, CHECKPOINT_NAME, CheckpointError, atomic_save, is_trial_checkpoint,
                                     load_checkpoint, rng_state, save_checkpoint, set_rng_state)


def small_state() -> dict:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return {"spec": {"width": 0.5}, "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1,
            "history": [{"epoch": 1, "val_top1": 50.0}], "rng": rng_state(), "args": {"lr": 0.1, "data": None}}


def test_save_checkpoint_round_trips_with_weights_only_and_copies_the_best(tmp_path: Path):
    path = save_checkpoint(small_state(), tmp_path, is_best=True)
    assert path == tmp_path / CHECKPOINT_NAME and (tmp_path / BEST_NAME).is_file()
    loaded = load_checkpoint(path)  # torch.load(weights_only=True) inside
    assert is_trial_checkpoint(loaded) and loaded["epoch"] == 1 and loaded["history"][0]["val_top1"] == 50.0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left
    save_checkpoint(dict(small_state(), epoch=2), tmp_path, is_best=False)
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 2
    assert load_checkpoint(tmp_path / BEST_NAME)["epoch"] == 1


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)], ids=["022", "027", "077"])
def test_written_files_get_the_permissions_of_a_plain_open_not_mkstemps_0600(tmp_path: Path, umask, mode):
    """Checkpoints, results and reports are written through a temporary file: they get the mode a plain ``open``
    would give them under the umask (0644 usually, so a shared folder's users and a model server's account can
    read them), and a file they replace keeps the mode its owner gave it."""
    from efficientnet.atomic_files import atomic_write_json

    old = os.umask(umask)
    try:
        save_checkpoint(small_state(), tmp_path, is_best=True)
        atomic_write_json({"top1": 1.0}, tmp_path / "result.json")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("the mode open gives")
        assert os.umask(umask) == umask  # the umask was read, not changed
    finally:
        os.umask(old)
    for name in (CHECKPOINT_NAME, BEST_NAME, "result.json", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    os.chmod(tmp_path / "result.json", 0o604)
    atomic_write_json({"top1": 2.0}, tmp_path / "result.json")
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == 0o604


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path: Path):
    path = save_checkpoint(small_state(), tmp_path, is_best=False)
    before = path.read_bytes()
    with pytest.raises(Exception):
        atomic_save({"model": lambda: None}, path)  # cannot be pickled: fails mid-write
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]


def test_rng_state_round_trip_reproduces_random_draws(tmp_path: Path):
    state = rng_state()
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    atomic_save({"rng": state}, tmp_path / "rng.pth")
    set_rng_state(load_checkpoint(tmp_path / "rng.pth")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        (b"this is a text file, not a checkpoint\n", "cannot read checkpoint"),
        ("truncated", "cannot read checkpoint"),
        ("pickle", "cannot read checkpoint"),  # a plain pickle: torch warns of its protocol, the user sees one line
    ],
)
def test_unreadable_checkpoints_raise_one_line_errors(tmp_path: Path, content, message):
    path = tmp_path / "ckpt.pth.tar"
    if content == "truncated":
        save_checkpoint(small_state(), tmp_path, is_best=False)
        data = (tmp_path / CHECKPOINT_NAME).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "pickle":
        path.write_bytes(pickle.dumps(object()))
    elif content is not None:
        path.write_bytes(content)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(CheckpointError) as info:
        warnings.simplefilter("always")
        load_checkpoint(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not caught, [str(w.message) for w in caught]


def test_foreign_objects_are_not_trial_checkpoints(tmp_path: Path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pth")
    assert not is_trial_checkpoint(load_checkpoint(tmp_path / "plain.pth"))
    assert not is_trial_checkpoint([1, 2, 3])


def test_seed_helpers_accuracy_meter_save_and_lr(tmp_path: Path):
    output = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.3, 0.4, 0.35]])
    target = torch.tensor([1, 0, 0, 2])
    top1, top2 = utils.accuracy(output, target, topk=(1, 2))
    assert float(top1) == pytest.approx(50.0) and float(top2) == pytest.approx(75.0)
    meter = utils.AverageMeter("loss", ":.2f")
    meter.update(1.0, 3)
    meter.update(3.0, 1)
    assert meter.avg == pytest.approx(1.5) and meter.count == 4 and str(meter) == "loss 3.00 (1.50)"
    # the seed wrote model_best.pth.tar into the working directory; now it goes next to the checkpoint
    utils.save_checkpoint(small_state(), True, tmp_path / "trial" / "checkpoint.pth.tar")
    assert (tmp_path / "trial" / BEST_NAME).is_file() and not Path(BEST_NAME).exists()
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    args = SimpleNamespace(lr=0.1, epochs=8, warmup_epochs=1)
    assert utils.adjust_learning_rate(opt, 0, args) == pytest.approx(0.001)
    assert utils.adjust_learning_rate(opt, 1, args) == pytest.approx(0.1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    mid = utils.adjust_learning_rate(opt, 4.5, args)
    assert 0.04 < mid < 0.06
    assert utils.adjust_learning_rate(opt, 8, args) == pytest.approx(0.001)
