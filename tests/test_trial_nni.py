"""The trial under NNI with the legacy project's setup: a real experiment of the legacy FixedProductTuner (a grid on
the legacy search space) running the legacy command line, ``--resume ./model_best.pth.tar`` included, two trials at
a time in one shared code folder: each trial writes only to its own folder, and reports what NNI records for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from efficientnet.checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint
from efficientnet.data import export_digits
from efficientnet.spec import ArchSpec
from nni_harness import experiment, write_config
from test_e2e_nni import TINY_BASE, describe, done, replace_section

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def test_the_legacy_tuner_and_command_line_under_a_real_experiment(tmp_path: Path):
    digits = export_digits(tmp_path / "cache")  # an ImageFolder: the legacy 'custom' dataset
    legacy_command = (f"python main_efficientnet.py custom --download-dir {digits} -j 0 -a efficientnet "
                      "--batch-size 16 --lr 0.048 --wd 1e-5 --epochs 2 --request-from-nni --resume "
                      "./model_best.pth.tar --resolution 32 --num-classes 10 --gpu 0 --threads 1 --subset 0.25")
    overrides = {
        "searchSpaceFile": str(ROOT / "search_space_legacy.json"), "trialCommand": legacy_command,
        "trialConcurrency": 2, "maxTrialNumber": 2, "maxExperimentDuration": "10m",
    }
    config = write_config(ROOT, tmp_path / "exp", overrides)
    # the legacy tuner section: its classArgs {product: 2}, shrunk to a tiny base (a grid, the legacy default)
    replace_section(config, "tuner", {"codeDirectory": str(ROOT), "className": "tuner.FixedProductTuner",
                                      "classArgs": {"product": 2, "base": TINY_BASE, "base_resolution": 32,
                                                    "num_classes": 10}})
    before = {p.name for p in ROOT.iterdir()}
    with experiment(config) as exp:
        assert exp.client.wait(done, timeout=300), describe(exp)
        trials = exp.client.trials()
        jobs = {job["trialJobId"]: job for job in exp.client.get("/trial-jobs")}
    assert [t.status for t in trials] == ["SUCCEEDED", "SUCCEEDED"], describe(exp, trials)
    assert {p.name for p in ROOT.iterdir()} == before  # nothing written into the shared code folder
    for t in trials:
        out = Path(t.log_path)
        assert {CHECKPOINT_NAME, BEST_NAME, "result.json", "log.txt", "tensorboard"} <= {p.name for p in out.iterdir()}
        log = (out / "log.txt").read_text()
        # the legacy --resume ./model_best.pth.tar names the trial's own best model, which it has none of yet
        assert f"--resume ./model_best.pth.tar: this trial has none yet in {out}" in log
        assert "warning: cuda:0 is not available here; running on the CPU" in log or "device cuda" in log
        recorded = json.loads(jobs[t.id]["hyperParameters"][0])
        result = json.loads((out / "result.json").read_text())
        assert result["proposal"] == recorded["parameters"] == t.parameters  # the grid point NNI shows
        spec = ArchSpec.parse(t.final["arch"])
        assert spec == ArchSpec.parse(t.parameters["arch"]) and spec.compound.alpha == t.parameters["alpha"]
        if spec.resolution != 32:  # the proposal's resolution wins over --resolution 32, and a note says so
            assert f"note: --resolution 32 is not used: the tuner's proposal trains at {spec.resolution} px" in log
        assert len(t.intermediate) == 2 and all({"default", "loss", "top5", "f1"} <= set(m) for m in t.intermediate)
        assert [m["epoch"] for m in t.intermediate] == [1, 2]  # where a continuation of this trial would start
        assert t.final["default"] == max(m["default"] for m in t.intermediate) and t.final["epochs"] == 2
        assert (t.final["budget"], t.final["subset"]) == ("full", 0.25)
        assert load_checkpoint(out / CHECKPOINT_NAME)["arch"] == t.final["arch"]
    assert len({t.parameters["arch"] for t in trials}) == 2
    grid = sorted((t.parameters["alpha"], t.parameters["beta"], t.parameters["gamma"]) for t in trials)
    # the legacy grid's first two networks, in its order: on this tiny base, (1.0, 1.05, 1.35) builds the same
    # network as (1.0, 1.0, 1.4) (the same channels, 44 px), so it is skipped
    assert grid == [(1.0, 1.0, 1.4), (1.0, 1.1, 1.3)]
