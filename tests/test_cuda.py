"""The GPU path on a real CUDA device: trials with mixed precision and channels_last, kill and resume, progressive
learning, export, prediction and evaluation (Grad-CAM heatmaps too), the data cache in GPU memory, and data-parallel
training on NCCL.

Every test here is marked ``cuda``: on a machine without a CUDA GPU they are skipped and reported as skipped.
Tiny models (width 0.25, 32 px digits) keep each test to seconds on a GPU.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main_efficientnet
from efficientnet.builder import SpecEfficientNet
from efficientnet.checkpoint import CHECKPOINT_NAME, load_checkpoint
from efficientnet.cli import main as cli_main
from efficientnet.data import build_data_cache, export_digits, load_dataset
from efficientnet.datacache import BatchAugment
from efficientnet.spec import ArchSpec, preset
from trial_process import hand_run_env, kill_after_first_checkpoint, tiny_digits_command

pytestmark = pytest.mark.cuda

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--width", "0.25", "--resolution", "32", "--no-latency", "--device", "cuda"]


def trial(digits: Path, out: Path, capsys, *extra: str) -> tuple[int, str, dict]:
    code = main_efficientnet.main(["--data", "digits", "--download-dir", str(digits.parent), "--output-dir", str(out),
                                   *TINY, *extra])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stdout + stderr
    return code, stdout, json.loads((out / "result.json").read_text())


@pytest.mark.parametrize("cache", ["off", "gpu"])
def test_hand_trial_with_amp_and_channels_last(digits: Path, tmp_path: Path, capsys, cache: str):
    _, log, result = trial(digits, tmp_path / "run", capsys, "--epochs", "3", "--data-cache", cache, "-j", "2")
    assert "device cuda" in log and "channels_last" in log
    assert ("bfloat16 autocast" if torch.cuda.is_bf16_supported() else "float16 autocast") in log
    assert ("data cache in GPU memory" if cache == "gpu" else "data cache off") in log
    assert result["top1"] > 50.0  # 10 classes: a GPU run learns as the CPU one does
    ckpt = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)  # saved from the GPU, loaded on the CPU
    assert all(t.device.type == "cpu" for t in ckpt["model"].values())
    model = SpecEfficientNet(ArchSpec.from_dict(ckpt["spec"]), 10)
    model.load_state_dict(ckpt["model"])


def test_kill_and_resume_on_cuda(tmp_path: Path):
    cache = tmp_path / "cache"
    export_digits(cache)
    out = tmp_path / "run"
    epochs = 12  # a tiny model's epoch takes well under a second on a GPU: leave work for the kill to cut short
    cmd = tiny_digits_command(cache, out, epochs, 0.5, "--device", "cuda")
    proc = kill_after_first_checkpoint(cmd, out, cwd=tmp_path)
    assert proc.returncode == -signal.SIGKILL
    done = load_checkpoint(out / CHECKPOINT_NAME)["epoch"]
    assert 1 <= done < epochs and not (out / "result.json").exists()
    rerun = subprocess.run(cmd, cwd=tmp_path, env=hand_run_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resumed at epoch {done + 1}" in rerun.stdout
    history = json.loads((out / "result.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))


def test_progressive_learning_on_cuda(digits: Path, tmp_path: Path, capsys):
    _, log, result = trial(digits, tmp_path / "run", capsys, "--epochs", "2", "--progressive-stages", "2",
                           "--progressive-min-res", "24", "--progressive-randaug", "5", "9",
                           "--progressive-mixup", "0.2", "0.2", "--data-cache", "gpu")
    assert [h["train_res"] for h in result["history"]] == [24, 32]
    assert [h["train_randaug"] for h in result["history"]] == [5, 9]
    assert "stage 2/2" in log


def test_export_from_a_cuda_checkpoint_and_predict_on_cuda(digits: Path, tmp_path: Path, capsys, sample_photos):
    trial(digits, tmp_path / "run", capsys, "--epochs", "1")
    ckpt = tmp_path / "run" / CHECKPOINT_NAME
    assert cli_main(["export", str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "export")]) == 0
    assert "max |logit difference|" in capsys.readouterr().out
    photo = str(sample_photos["flower"])
    predictions = {}
    for device in ("cuda", "cpu"):
        assert cli_main(["predict", photo, "--weights", str(ckpt), "--device", device, "--json"]) == 0
        predictions[device] = json.loads(capsys.readouterr().out)[0]["predictions"]
    assert [p["class_id"] for p in predictions["cuda"]][:1] == [p["class_id"] for p in predictions["cpu"]][:1]
    for a, b in zip(predictions["cuda"], predictions["cpu"]):
        assert abs(a["probability"] - b["probability"]) < 1e-3


def test_evaluate_on_cuda_gives_the_trials_validation_scores(digits: Path, tmp_path: Path, capsys):
    """A CUDA trial's checkpoint scored on its validation images by ``evaluate`` on the GPU (autocast, loader
    worker processes reading the images) gives the trial's scores, up to the rounding of a batch shape or two."""
    _, _, result = trial(digits, tmp_path / "run", capsys, "--epochs", "2", "--data-cache", "off", "-j", "2")
    assert cli_main(["evaluate", str(tmp_path / "run" / "model_best.pth.tar"), str(digits / "val"), "--device",
                     "cuda", "--workers", "2", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["images"] == 359
    assert abs(got["metrics"]["top1"] - result["top1"]) <= 100 * 2 / 359 + 1e-9, (got["metrics"], result)
    assert abs(got["metrics"]["loss"] - result["loss"]) < 0.02


def test_grad_cam_heatmaps_on_cuda_are_the_cpus(digits: Path, tmp_path: Path, capsys):
    """Grad-CAM of a CUDA trial's model on the GPU (fp32, gradients on the device) draws what the CPU draws, and
    evaluate --heatmaps and predict --heatmaps write their pictures from the GPU."""
    from efficientnet.explain import grad_cam
    from efficientnet.export import read_source, model_for_export

    trial(digits, tmp_path / "run", capsys, "--epochs", "1")
    ckpt_path = tmp_path / "run" / "model_best.pth.tar"
    ckpt = read_source(ckpt_path)
    images = torch.randn(4, 3, 32, 32)
    heat = {}
    for device in ("cuda", "cpu"):
        model = model_for_export(ckpt.spec, ckpt.num_classes, ckpt.state).to(device)
        heat[device] = grad_cam(model, images, [0, 3, 5, 9])
    assert heat["cuda"].device.type == "cpu" and torch.allclose(heat["cuda"], heat["cpu"], atol=1e-3)
    assert cli_main(["evaluate", str(ckpt_path), str(digits / "val"), "--device", "cuda", "--heatmaps",
                     str(tmp_path / "mistakes.png")]) == 0
    assert cli_main(["predict", str(digits / "val" / "3"), "--weights", str(ckpt_path), "--device", "cuda",
                     "--heatmaps", str(tmp_path / "maps")]) == 0
    capsys.readouterr()
    assert (tmp_path / "mistakes.png").stat().st_size > 10_000
    assert len(list((tmp_path / "maps").glob("*.png"))) == len(list((digits / "val" / "3").glob("*.png")))


def test_data_cache_on_the_gpu_serves_what_the_ram_cache_serves(digits: Path, tmp_path: Path):
    spec = preset("lite0").replace(width=0.25, resolution=32)
    split = load_dataset("digits", spec, cache_dir=digits.parent, num_classes=10)
    device = torch.device("cuda")
    on_gpu, line = build_data_cache(split, spec, "gpu", device, cache_dir=tmp_path)
    in_ram, _ = build_data_cache(split, spec, "ram", device, cache_dir=tmp_path)
    assert on_gpu.train.images.is_cuda and "GPU memory" in line
    assert in_ram.train.images.is_pinned()
    _, val_gpu, _ = on_gpu.loaders(64, device, 32)
    _, val_ram, _ = in_ram.loaders(64, device, 32)
    for (xg, yg), (xr, yr) in zip(val_gpu, val_ram):
        assert xg.is_cuda and xr.is_cuda
        assert torch.equal(xg, xr) and torch.equal(yg, yr)
    images = on_gpu.train.images[:8]
    same = BatchAugment(40, (0.5,) * 3, (0.5,) * 3, min_scale=1.0, hflip=0.0)
    same.ratio = (1.0, 1.0)
    torch.testing.assert_close(same(images).cpu(), same(images.cpu()), rtol=0, atol=1e-4)


def test_torchrun_with_one_nccl_process(digits: Path, tmp_path: Path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           str(ROOT / "main_efficientnet.py"), "--data", "digits", "--download-dir", str(digits.parent),
           "--epochs", "2", "--output-dir", str(out), *TINY]
    env = {k: v for k, v in hand_run_env().items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "data parallel: 1 ranks (nccl)" in proc.stdout
    result = json.loads((out / "result.json").read_text())
    assert result["epochs"] == 2 and result["world_size"] == 1


def test_warm_started_trials_train_on_the_gpu(tmp_path: Path):
    """A trial forked from the warm-start server (which never touches CUDA) initialises the GPU itself, with and
    without the GPU data cache and loader processes, and trains as a cold trial does."""
    import shutil
    import tempfile

    from efficientnet import warm_start
    from test_warm_start import WARM, server_pid

    cache = export_digits(tmp_path / "cache")
    run = Path(tempfile.mkdtemp(prefix="ws-", dir="/tmp"))
    env = {**hand_run_env(), "NNI_PLATFORM": "local", "XDG_RUNTIME_DIR": str(run)}
    env.pop(warm_start.ENV_SWITCH, None)
    try:
        runs = {}
        for name, extra in (("cold", []), ("warm", []), ("warm-off-j2", ["--data-cache", "off", "-j", "2"])):
            proc = subprocess.run([sys.executable, str(ROOT / "main_efficientnet.py"), "--data", "digits",
                                   "--download-dir", str(cache.parent), "--output-dir", str(tmp_path / name), *TINY,
                                   "--epochs", "2", *extra], env=env, cwd=ROOT, capture_output=True, text=True,
                                  timeout=300)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert "device cuda" in proc.stdout
            assert (WARM in proc.stdout) == (name != "cold"), proc.stdout
            runs[name] = json.loads((tmp_path / name / "result.json").read_text())
            if name == "cold":
                server_pid(env)
        assert runs["warm"]["top1"] > 50.0 and runs["warm-off-j2"]["top1"] > 50.0
    finally:
        for lock in run.glob("*/*.lock"):
            if lock.read_text().strip():
                subprocess.run(["kill", lock.read_text().strip()], check=False)
        shutil.rmtree(run, ignore_errors=True)


def test_the_training_memory_estimate_covers_a_real_step_and_a_trial_over_its_share_stops(digits: Path, tmp_path: Path,
                                                                                          capsys):
    from efficientnet.memory import estimate_training_memory, memory_room, needed_bytes
    from efficientnet.training import build_optimizer, train_step

    spec = preset("b0").replace(resolution=128)
    need = estimate_training_memory(spec, 10, 64, dtype=torch.bfloat16)
    device = torch.device("cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    model = SpecEfficientNet(spec, 10).to(device, memory_format=torch.channels_last).train()
    opt = build_optimizer(model, "sgd")
    images, targets = torch.randn(64, 3, 128, 128, device=device), torch.randint(10, (64,), device=device)
    for _ in range(2):
        train_step(model, images, targets, opt, torch.nn.CrossEntropyLoss(), dtype=torch.bfloat16)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del model, opt, images, targets
    room = memory_room(device)
    assert 0.7 * peak < need.peak and needed_bytes(need, room) - room.overhead >= peak, (need, peak)

    _, log, _ = trial(digits, tmp_path / "fits", capsys, "--epochs", "1", "--trials-per-gpu", "2")
    assert "memory: about" in log and "1 of 2 trials" in log
    code = main_efficientnet.main(["--data", "digits", "--download-dir", str(digits.parent), "--output-dir",
                                   str(tmp_path / "over"), *TINY, "--epochs", "1", "--trials-per-gpu", "100000"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "its share of the GPU, 1 of 100000 trials" in err, err


def test_cudnn_benchmark_follows_its_flag(digits: Path, tmp_path: Path, capsys):
    for setting, expected in (("off", False), ("on", True)):
        trial(digits, tmp_path / setting, capsys, "--epochs", "1", "--cudnn-benchmark", setting)
        assert torch.backends.cudnn.benchmark is expected


@pytest.mark.e2e
def test_an_experiment_whose_trials_ask_for_every_gpu_runs_them_on_the_gpu(tmp_path: Path):
    """trialGpuNumber = the machine's GPU count (one GPU: trialGpuNumber 1), started through the launcher: NNI 3.0's
    scheduler alone never starts such a trial (efficientnet/nni_guard.js, fix 5); each trial trains on the GPU."""
    from nni_harness import experiment, write_config
    from test_e2e_nni import TINY_TRIAL_ARGS, describe, done, tiny_overrides

    overrides = {**tiny_overrides(2), "trialConcurrency": 1, "trialGpuNumber": torch.cuda.device_count(),
                 "trainingService": {"platform": "local", "useActiveGpu": True}}
    config = write_config(ROOT, tmp_path / "exp", overrides, trial_args=TINY_TRIAL_ARGS)
    with experiment(config) as exp:
        assert exp.client.wait(done, timeout=300, interval=2), describe(exp)
        trials = exp.client.trials()
        logs = [(exp.trials_dir() / t.id / "log.txt").read_text(errors="replace") for t in trials]
    assert [t.status for t in trials] == ["SUCCEEDED", "SUCCEEDED"], describe(exp, trials)
    assert all("device cuda" in log for log in logs), logs[0][-2000:]
