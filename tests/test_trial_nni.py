"""The trial under NNI: the legacy project's command line, proposals from the tuner, metrics reported to NNI.

Two trials run at the same time through NNI's own file-based trial channel (``NNI_PLATFORM=local``: the SDK reads
``parameter.cfg`` from the trial's system dir and appends metrics to ``.nni/metrics``), both with the legacy project's
``--resume ./model_best.pth.tar`` in one shared working directory: each must write only to its own output dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from efficientnet.checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint
from efficientnet.data import export_digits
from efficientnet.spec import ArchSpec, preset

ROOT = Path(__file__).resolve().parents[1]


def read_metrics(sys_dir: Path) -> list[dict]:
    """Records of NNI's metrics file (``ME`` + 6-digit length + JSON line each)."""
    data = (sys_dir / ".nni" / "metrics").read_bytes()
    records, i = [], 0
    while i < len(data):
        assert data[i:i + 2] == b"ME"
        n = int(data[i + 2:i + 8])
        records.append(json.loads(data[i + 8:i + 8 + n]))
        i += 8 + n
    return records


def start_trial(name: str, params: dict, work: Path, digits: Path) -> tuple[subprocess.Popen, Path, Path]:
    sys_dir, out_dir = work / name / "sys", work / name / "output"
    sys_dir.mkdir(parents=True)
    (sys_dir / "parameter.cfg").write_text(json.dumps({"parameter_id": 0, "parameter_source": "algorithm",
                                                       "parameters": params}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNI_")}
    env.update(NNI_PLATFORM="local", NNI_EXP_ID="exp1", NNI_TRIAL_JOB_ID=name, NNI_SYS_DIR=str(sys_dir),
               NNI_OUTPUT_DIR=str(out_dir), NNI_TRIAL_SEQ_ID="0", PYTHONPATH=str(ROOT))
    seed_command = ["custom", "--download-dir", str(digits), "-j", "0", "-a", "efficientnet", "--batch-size", "16",
                    "--lr", "0.048", "--wd", "1e-5", "--epochs", "2", "--request-from-nni", "--resume",
                    "./model_best.pth.tar", "--resolution", "32", "--num-classes", "10", "--gpu", "0"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "main_efficientnet.py"), *seed_command, "--threads", "1"],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, sys_dir, out_dir


def test_two_concurrent_nni_trials_with_the_seed_command(tmp_path: Path):
    digits = export_digits(tmp_path / "cache")
    arch_b = preset("lite0").replace(width=0.15, resolution=32)
    proposals = {
        # the legacy project's tuner: coefficients only (base --arch, base --resolution), plus hyperparameters
        "trial_a": {"alpha": 1.0, "beta": 0.2, "gamma": 1.0, "lr": 0.02, "subset": 0.25},
        # this project's tuner: the compact spec is authoritative; profiled costs are for display
        "trial_b": {"arch": str(arch_b), "alpha": 1.1, "beta": 1.0, "gamma": 1.0, "stage2_kernel": 5,
                    "params": 123, "macs": 456, "batch_size": 32, "subset": 0.25, "dropout_schedule": "x",
                    "budget": "proxy"},
    }
    trials = {name: start_trial(name, p, tmp_path, digits) for name, p in proposals.items()}
    outputs = {}
    for name, (proc, _, out_dir) in trials.items():
        stdout, stderr = proc.communicate(timeout=400)
        assert proc.returncode == 0, stdout + stderr
        outputs[name] = (out_dir / "log.txt").read_text()  # NNI sends a local trial's stdout to trial.log
        assert "[A" not in stderr and "it/s" not in stderr  # no progress bars under NNI

    assert not (tmp_path / BEST_NAME).exists() and not (tmp_path / CHECKPOINT_NAME).exists()
    specs = {}
    for name, (_, sys_dir, out_dir) in trials.items():
        assert {"checkpoint.pth.tar", "model_best.pth.tar", "result.json", "log.txt", "tensorboard"} <= {
            p.name for p in out_dir.iterdir()}
        records = read_metrics(sys_dir)
        periodical = [json.loads(r["value"]) for r in records if r["type"] == "PERIODICAL"]
        final = [json.loads(r["value"]) for r in records if r["type"] == "FINAL"]
        assert [r["trial_job_id"] for r in records] == [name] * len(records)
        assert len(periodical) == 2 and len(final) == 1
        for m in periodical:
            assert isinstance(m["default"], float) and {"loss", "top5", "f1"} <= set(m)
        f = final[0]
        assert f["default"] == max(m["default"] for m in periodical)
        for key in ("top5", "f1", "loss", "params", "macs", "latency_ms", "epochs", "best_epoch"):
            assert isinstance(f[key], (int, float)) and not isinstance(f[key], bool), key
        assert f["epochs"] == 2 and isinstance(f["arch"], str)
        # the budget it trained with: the proposal's word (else "full"), the subset and epochs used
        assert (f["budget"], f["subset"]) == ({"trial_a": "full", "trial_b": "proxy"}[name], 0.25)
        result = json.loads((out_dir / "result.json").read_text())
        assert result["default"] == f["default"] and result["proposal"] == proposals[name]
        specs[name] = ArchSpec.parse(f["arch"])
        assert load_checkpoint(out_dir / CHECKPOINT_NAME)["arch"] == f["arch"]
        # the legacy project's --resume ./model_best.pth.tar names the trial's own best model, which it has none of yet
        assert f"--resume ./model_best.pth.tar: this trial has none yet in {out_dir}" in outputs[name]
        assert "warning: cuda:0 is not available here; running on the CPU" in outputs[name] or \
            "device cuda" in outputs[name]

    a, b = specs["trial_a"], specs["trial_b"]
    assert (a.width, a.depth, a.resolution, a.activation) == (0.2, 1.0, 32, "relu6")  # lite0 base, 32 px base
    assert a.compound is not None and a.compound.beta == 0.2
    assert b == arch_b
    cfg_a = json.loads((trials["trial_a"][2] / "result.json").read_text())["config"]
    cfg_b = json.loads((trials["trial_b"][2] / "result.json").read_text())["config"]
    assert (cfg_a["lr"], cfg_a["batch_size"], cfg_a["subset"]) == (0.02, 16, 0.25)
    assert (cfg_b["lr"], cfg_b["batch_size"]) == (0.048, 32)
    assert "ignoring proposal keys the trainer does not use: dropout_schedule" in outputs["trial_b"]
