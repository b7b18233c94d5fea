"""The training-memory estimate (fake tensors) against the same training steps on real CPU tensors, its parts, and
the trial that refuses to start when it would not fit (a real hand run of ``main_efficientnet.py``)."""

from __future__ import annotations

import subprocess

import pytest
import torch
from torch import nn

from efficientnet.builder import SpecEfficientNet
from efficientnet.memory import GIB, MemoryRoom, TrainingMemory, check_room, estimate_training_memory, memory_room
from efficientnet.profiler import LiveTensorPeak
from efficientnet.spec import resolve_arch
from efficientnet.training import TrainingError, build_optimizer, train_step
from trial_process import ROOT, hand_run_env, one_error_line, tiny_digits_command

SPEC = resolve_arch("lite0").replace(width=0.25, resolution=32)


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def measured_on_cpu(spec, num_classes: int, batch: int, optimizer: str, dtype) -> int:
    """The peak of live tensors over two real training steps on the CPU, tracked as the estimate tracks them."""
    torch.manual_seed(0)
    model = SpecEfficientNet(spec, num_classes).train()
    opt = build_optimizer(model, optimizer)
    images, targets = torch.randn(batch, 3, spec.resolution, spec.resolution), torch.randint(num_classes, (batch,))
    tracker = LiveTensorPeak(baseline=nbytes(model.parameters()) + nbytes(model.buffers()) + nbytes((images, targets)))
    with tracker:
        for _ in range(2):
            train_step(model, images, targets, opt, nn.CrossEntropyLoss(), dtype=dtype)
    return tracker.peak


@pytest.mark.parametrize("optimizer, dtype", [("sgd", None), ("adamw", torch.bfloat16), ("rmsprop", None)])
def test_the_estimate_on_fake_tensors_is_the_peak_of_real_training_steps(optimizer, dtype):
    estimate = estimate_training_memory(SPEC, 10, 16, optimizer=optimizer, dtype=dtype)
    real = measured_on_cpu(SPEC, 10, 16, optimizer, dtype)
    assert abs(estimate.peak - real) <= 0.01 * real, (estimate.peak, real)


def test_the_parts_are_the_models_weights_gradients_and_optimizer_state():
    model = SpecEfficientNet(SPEC, 10)
    params, buffers = nbytes(model.parameters()), nbytes(model.buffers())
    sgd = estimate_training_memory(SPEC, 10, 8, optimizer="sgd")
    adamw = estimate_training_memory(SPEC, 10, 8, optimizer="adamw")
    assert sgd.weights == adamw.weights == params + buffers
    assert sgd.gradients == adamw.gradients == params
    assert sgd.optimizer == params  # one momentum buffer per parameter
    assert adamw.optimizer == 2 * params  # Adam's two moments (its step counters are scalars)
    assert sgd.peak > sgd.weights + sgd.gradients + sgd.optimizer and sgd.activations > 0
    assert estimate_training_memory(SPEC, 10, 8, optimizer="sgd", momentum=0.0).optimizer == 0  # plain SGD: none


def test_activations_grow_with_the_batch_and_the_image_and_shrink_under_autocast():
    def per_16_images(spec, dtype=None) -> int:  # the peak's growth from batch 16 to 32: 16 images' activations
        return (estimate_training_memory(spec, 10, 32, dtype=dtype).peak
                - estimate_training_memory(spec, 10, 16, dtype=dtype).peak)

    base = per_16_images(SPEC)
    more = estimate_training_memory(SPEC, 10, 64).peak - estimate_training_memory(SPEC, 10, 32).peak
    assert 1.8 < more / base < 2.2  # 32 more images cost twice what 16 do
    assert 3.5 < per_16_images(SPEC.replace(resolution=64)) / base < 4.5  # and each image as its area
    assert per_16_images(SPEC, torch.bfloat16) < 0.75 * base  # bf16 autocast saves half-size activations
    assert estimate_training_memory(SPEC, 10, 16, dtype=torch.bfloat16).precision == "bfloat16"


def test_check_room_passes_what_fits_and_refuses_what_does_not_in_one_line():
    need = TrainingMemory(weights=GIB, gradients=GIB, optimizer=GIB, peak=4 * GIB, batch_size=64, resolution=224,
                          precision="bfloat16")
    gpu = MemoryRoom(8 * GIB, "its share of the GPU, 1 of 4 trials on 32.0 GiB, 30.0 GiB free", 1.25, GIB)
    line = check_room(need, gpu, on_gpu=True)
    assert line.startswith("memory: about 6.00 GiB to train (4.00 GiB of tensors at batch 64, 224 px, bfloat16: "
                           "activations 1.00 GiB, weights 1.00 GiB, gradients 1.00 GiB, optimizer 1.00 GiB)")
    with pytest.raises(TrainingError) as info:
        check_room(need, MemoryRoom(5 * GIB, gpu.source, 1.25, GIB), on_gpu=True)
    message = str(info.value)
    assert "\n" not in message and "needs about 6.00 GiB" in message and "has 5.00 GiB" in message
    assert "1 of 4 trials" in message and "lower --batch-size" in message and "maxTrialNumberPerGpu" in message


def test_the_cpus_room_is_the_available_ram():
    room = memory_room(torch.device("cpu"))
    assert 0 < room.nbytes and "available RAM" in room.source and room.overhead > 0 and room.slack > 1


def test_a_trial_that_would_not_fit_stops_before_its_data_with_one_line(tmp_path):
    out = tmp_path / "run"
    cmd = tiny_digits_command(tmp_path / "cache", out, 1, 0.2, "--memory-check", "on", "--batch-size", "1000000")
    done = subprocess.run(cmd, cwd=ROOT, env=hand_run_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert "this trial needs about" in line and "at batch 1000000, 32 px" in line and "available RAM" in line
    assert "lower --batch-size" in line
    assert not (out / "checkpoint.pth.tar").exists()
    assert "data cache" not in (out / "log.txt").read_text()  # stopped before any image was decoded

    fits = tmp_path / "fits"
    cmd = tiny_digits_command(tmp_path / "cache", fits, 1, 0.2, "--memory-check", "on", "--batch-size", "16")
    done = subprocess.run(cmd, cwd=ROOT, env=hand_run_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    log = (fits / "log.txt").read_text()
    assert "memory: about" in log and "at batch 16, 32 px, fp32: activations" in log and "room: the" in log
