"""Data-parallel training under torchrun on the CPU (gloo, 2 real processes): by hand and as an NNI trial.

Also the pieces without a process group: the per-rank shards of the loaders and merging validation metrics.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from efficientnet.checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint
from efficientnet.data import load_dataset, make_loaders, seed_epoch, subset_train
from efficientnet.metrics import EpochMetrics
from efficientnet.spec import ArchSpec, preset

ROOT = Path(__file__).resolve().parents[1]
TINY = preset("lite0").replace(width=0.15, resolution=32)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NNI_") and k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p), OMP_NUM_THREADS="1",
               **extra)
    return env


def test_loader_shards_cover_training_and_partition_validation(digits: Path):
    split = subset_train(load_dataset("digits", TINY, cache_dir=digits.parent, num_classes=10), 0.1, seed=0)
    n_train, n_val = len(split.train), len(split.val)
    shards = [make_loaders(split, 16, rank=r, world_size=2, seed=5) for r in (0, 1)]
    orders = []
    for train, _, sampler in shards:
        seed_epoch(sampler, 5, 3)
        orders.append(list(iter(sampler)))
    assert [len(o) for o in orders] == [math.ceil(n_train / 2)] * 2
    assert set(orders[0]) | set(orders[1]) == set(range(n_train))  # every image, a tail repeat at most
    assert len(shards[0][0]) == len(shards[1][0])  # the same number of steps on every rank
    seed_epoch(shards[0][2], 5, 4)
    assert list(iter(shards[0][2])) != orders[0]  # a new shuffle each epoch
    val_idx = [list(val.dataset.indices) for _, val, _ in shards]
    assert sorted(val_idx[0] + val_idx[1]) == list(range(n_val))


def test_merged_metrics_equal_one_pass_over_all_images():
    torch.manual_seed(0)
    logits, targets = torch.randn(50, 10), torch.randint(0, 10, (50,))
    whole = EpochMetrics(10)
    whole.update(logits, targets, 1.5)
    parts = [EpochMetrics(10), EpochMetrics(10)]
    parts[0].update(logits[:27], targets[:27], 1.5)
    parts[1].update(logits[27:], targets[27:], 1.5)
    assert EpochMetrics.merged(parts).compute() == pytest.approx(whole.compute())


def test_torchrun_two_cpu_processes_train_one_model(digits: Path, tmp_path: Path):
    out = tmp_path / "run"
    cmd = [*TORCHRUN, str(ROOT / "main_efficientnet.py"), "--data", "digits", "--download-dir", str(digits.parent),
           "--width", "0.15", "--resolution", "32", "--epochs", "1", "--subset", "0.4", "--threads", "1",
           "--no-latency", "--output-dir", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "data parallel: 2 ranks (gloo)" in proc.stdout
    m = re.search(r"data shards: train (\d+) \+ (\d+) = (\d+) images per epoch \((\d+) unique\), "
                  r"val (\d+) \+ (\d+) = (\d+) images", proc.stdout)
    assert m, proc.stdout
    t0, t1, t_sum, unique, v0, v1, v_sum = map(int, m.groups())
    assert t0 == t1 == math.ceil(unique / 2) and t_sum == t0 + t1 and unique <= t_sum < unique + 2
    assert v0 + v1 == v_sum == 359  # the digits val split, each image on exactly one rank
    assert sum(line.startswith("epoch 1/1 ") for line in proc.stdout.splitlines()) == 1  # rank 0 logs alone
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([CHECKPOINT_NAME, BEST_NAME, "log.txt", "result.json", "tensorboard"])  # no leftovers
    ckpt = load_checkpoint(out / CHECKPOINT_NAME)
    assert ckpt["epoch"] == 1 and not any(k.startswith("module.") for k in ckpt["model"])  # the bare model
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["epochs"] == 1 and result["subset"] == 0.4
    assert result["budget"] == "full"
    assert 0 <= result["top1"] <= result["top5"] <= 100 and 0 <= result["f1"] <= 1
    correct = result["top1"] * 359 / 100  # validated on all 359 images, not on one rank's half
    assert abs(correct - round(correct)) < 1e-6
    assert [h["epoch"] for h in result["history"]] == [1] and math.isfinite(result["history"][0]["train_loss"])


def read_metrics(sys_dir: Path) -> list[dict]:
    data = (sys_dir / ".nni" / "metrics").read_bytes()
    records, i = [], 0
    while i < len(data):
        n = int(data[i + 2:i + 8])
        records.append(json.loads(data[i + 8:i + 8 + n]))
        i += 8 + n
    return records


def test_torchrun_as_an_nni_trial_rank0_asks_and_reports(digits: Path, tmp_path: Path):
    sys_dir, out = tmp_path / "sys", tmp_path / "output"
    sys_dir.mkdir()
    arch = preset("lite0").replace(width=0.2, resolution=32)
    proposal = {"arch": str(arch), "lr": 0.03, "budget": "proxy", "subset": 0.3, "epochs": 1}
    (sys_dir / "parameter.cfg").write_text(json.dumps({"parameter_id": 7, "parameter_source": "algorithm",
                                                       "parameters": proposal}))
    env = clean_env(NNI_PLATFORM="local", NNI_EXP_ID="exp1", NNI_TRIAL_JOB_ID="ddp01", NNI_SYS_DIR=str(sys_dir),
                    NNI_OUTPUT_DIR=str(out), NNI_TRIAL_SEQ_ID="0")
    cmd = [*TORCHRUN, str(ROOT / "main_efficientnet.py"), "--data", "digits", "--download-dir", str(digits.parent),
           "--width", "0.15", "--resolution", "32", "--epochs", "3", "--threads", "1", "--request-from-nni"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = read_metrics(sys_dir)
    assert [r["type"] for r in records] == ["PERIODICAL", "FINAL"]  # one epoch, reported once, by rank 0
    assert {r["parameter_id"] for r in records} == {7} and {r["trial_job_id"] for r in records} == {"ddp01"}
    final = json.loads(records[-1]["value"])
    assert (final["budget"], final["subset"], final["epochs"]) == ("proxy", 0.3, 1)
    assert ArchSpec.parse(final["arch"]) == arch  # both ranks built the proposal's model (DDP checks shapes)
    assert isinstance(final["latency_ms"], float)
    result = json.loads((out / "result.json").read_text())
    assert result["proposal"] == proposal and result["config"]["lr"] == 0.03 and result["world_size"] == 2
    assert load_checkpoint(out / CHECKPOINT_NAME)["arch"] == str(arch)
    assert "data parallel: 2 ranks" in (out / "log.txt").read_text()  # NNI's output dir reached the ranks
