"""Progressive learning: the stage plan, the model at every stage size, mixup, settings, and a killed run resumed
in the stage it was killed in (real processes, real files)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from efficientnet.weights import build_model
from efficientnet.checkpoint import CHECKPOINT_NAME, load_checkpoint
from trial_process import hand_run_env, kill_after_first_checkpoint, tiny_digits_command
from efficientnet.data import export_digits, load_dataset, set_train_transform, train_transform
from efficientnet.progressive import Progressive, ProgressiveError, default_min_res, mixup_batch, mixup_loss
from efficientnet.spec import preset
from efficientnet.trial_config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[1]
TINY = preset("lite0").replace(width=0.15, resolution=32)


def test_full_scale_plan_grows_size_and_regularisation_over_equal_epoch_runs():
    plan = Progressive(4, 8, 224)
    stages = plan.plan()
    assert [s.resolution for s in stages] == [128, 160, 192, 224]
    assert [(s.first_epoch, s.last_epoch) for s in stages] == [(1, 2), (3, 4), (5, 6), (7, 8)]
    assert [s.dropout for s in stages] == pytest.approx([0.1, 0.1667, 0.2333, 0.3], abs=1e-4)
    assert [s.randaug for s in stages] == [5, 8, 12, 15]
    assert stages[0].mixup == 0.0 and stages[-1].mixup == pytest.approx(0.2)
    assert [plan.stage_index(e) for e in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]  # epoch -> stage, nothing else
    uneven = Progressive(3, 7, 300, min_res=128)
    assert [uneven.stage_index(e) for e in range(7)] == [0, 0, 0, 1, 1, 2, 2]
    assert [s.resolution for s in uneven.plan()] == [128, 216, 300]  # multiples of 8, the last exactly the spec's
    assert default_min_res(224) == 128 and default_min_res(32) == 20  # small models: multiples of 4


@pytest.mark.parametrize("kwargs, message", [
    ({"stages": 5, "epochs": 4}, "more than --epochs"),
    ({"min_res": 64}, "--progressive-min-res must be between 8 and the resolution 32"),
    ({"dropout": (0.1, 1.5)}, "--progressive-dropout takes two values"),
    ({"randaug": (5, 40)}, "--progressive-randaug takes two values"),
])
def test_impossible_plans_name_the_flag(kwargs: dict, message: str):
    args = {"stages": 2, "epochs": 4, "resolution": 32, **kwargs}
    with pytest.raises(ProgressiveError, match=re.escape(message)):
        Progressive(**args)


def test_the_dynamic_padding_model_trains_at_every_stage_size_and_matches_the_static_one_at_full_size():
    torch.manual_seed(0)
    static = build_model(TINY, 10)
    with pytest.raises(RuntimeError):  # why progressive runs use dynamic padding: static fails below 32 px
        static.eval()(torch.randn(1, 3, 20, 20))
    model = build_model(TINY, 10, dynamic_padding=True)
    model.load_state_dict(static.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.eval()(x), static.eval()(x))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared small CPU: one thread is much faster than oversubscribed two
    try:
        for stage in Progressive(4, 4, 32).plan():
            images, targets = torch.randn(8, 3, stage.resolution, stage.resolution), torch.arange(8) % 10
            before = model._fc.weight.detach().clone()
            loss = nn.functional.cross_entropy(model(images), targets)
            opt.zero_grad()
            loss.backward()
            grads = [p.grad for p in model.parameters()]
            assert all(g is not None and torch.isfinite(g).all() for g in grads), stage.resolution
            assert any(float(g.abs().sum()) > 0 for g in grads[:3])  # the stem learns too
            opt.step()
            assert torch.isfinite(loss) and not torch.equal(model._fc.weight, before)
    finally:
        torch.set_num_threads(threads)


def test_stage_transform_gives_the_stage_size_and_mixup_mixes_pairs(tmp_path: Path):
    split = load_dataset("digits", TINY, cache_dir=tmp_path, num_classes=10)
    set_train_transform(split, train_transform(TINY, hflip=0.0, resolution=20, randaug=9))
    assert split.train[0][0].shape == (3, 20, 20) and split.val[0][0].shape == (3, 32, 32)
    torch.manual_seed(3)
    images, targets = torch.randn(6, 3, 4, 4), torch.arange(6)
    mixed, ta, tb, lam = mixup_batch(images, targets, 0.2)
    assert 0.0 < lam < 1.0 and torch.equal(ta, targets) and sorted(tb.tolist()) == list(range(6))
    assert torch.allclose(mixed, lam * images + (1 - lam) * images[tb])
    logits = torch.randn(6, 6)
    ce = nn.CrossEntropyLoss()
    assert float(mixup_loss(ce, tb, lam)(logits, ta)) == pytest.approx(
        lam * float(ce(logits, ta)) + (1 - lam) * float(ce(logits, tb)))
    same = mixup_batch(images, targets, 0.0)
    assert same[0] is images and same[3] == 1.0


def test_flags_and_the_env_yaml_section(tmp_path: Path):
    cfg = parse_config(["--data", "digits", "--progressive-stages", "3", "--progressive-dropout", "0.05", "0.25"])
    assert (cfg.progressive_stages, cfg.progressive_dropout, cfg.progressive_mixup) == (3, (0.05, 0.25), (0.0, 0.2))
    env = tmp_path / "env.yml"
    env.write_text("batch_size: 8\nprogressive:\n  stages: 4\n  min_res: 128\n  dropout: [0.1, 0.3]\n"
                   "  randaug: [5, 15]\n  mixup: [0, 0.2]\n")
    cfg = parse_config(["--data", "digits", "--env", str(env)])
    assert (cfg.progressive_stages, cfg.progressive_min_res, cfg.progressive_randaug) == (4, 128, (5.0, 15.0))
    assert parse_config(["--data", "digits", "--env", str(env), "--progressive-stages", "0"]).progressive_stages == 0
    env.write_text("progressive:\n  stages: 4\n  size: 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'progressive.size'"):
        parse_config(["--data", "digits", "--env", str(env)])
    example = parse_config(["--data", "digits", "--env", str(ROOT / "configs" / "env.example.yml")])
    assert example.progressive_stages == 0 and example.progressive_dropout == (0.1, 0.3)


def test_a_run_killed_in_stage_2_resumes_in_stage_2(tmp_path: Path):
    cache = tmp_path / "cache"
    export_digits(cache)
    out = tmp_path / "run"
    cmd = tiny_digits_command(cache, out, 4, 0.2, "--progressive-stages", "4")
    kill_after_first_checkpoint(cmd, out, cwd=tmp_path)  # epoch 1 (stage 1) done; epoch 2 (stage 2) running
    done = load_checkpoint(out / CHECKPOINT_NAME)["epoch"]
    assert 1 <= done < 4
    plan = {s.index + 1: s for s in Progressive(4, 4, 32).plan()}
    assert [plan[k].resolution for k in (1, 2, 3, 4)] == [20, 24, 28, 32]

    rerun = subprocess.run(cmd, cwd=tmp_path, env=hand_run_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    lines = rerun.stdout.splitlines()
    resumed = lines.index(next(line for line in lines if line.startswith(f"resumed at epoch {done + 1} ")))
    after = [line for line in lines[resumed + 1:] if not line.startswith("started in ")]  # set-up's last line
    assert after[0] == plan[done + 1].describe()  # the first thing after resuming: the killed stage
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line.split(" |")[0] for line in epoch_lines] == [f"epoch {e}/4" for e in range(done + 1, 5)]
    for line in epoch_lines:
        epoch = int(line.split()[1].split("/")[0])
        assert line.endswith(f"| stage {epoch} {plan[epoch].resolution}px")
    history = json.loads((out / "result.json").read_text())["history"]
    assert [(h["epoch"], h["stage"], h["train_res"]) for h in history] == [(e, e, plan[e].resolution)
                                                                           for e in (1, 2, 3, 4)]
    assert [h["train_dropout"] for h in history] == [plan[e].dropout for e in (1, 2, 3, 4)]
    assert all(0 <= h["val_top1"] <= 100 for h in history)
