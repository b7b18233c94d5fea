"""The training step, evaluation and metrics never mix devices and never read values back per batch.

PyTorch's ``meta`` device stands in for a GPU on a CPU-only machine: the model lives there while the loader's
batches arrive on the CPU, as they do from a DataLoader on a GPU machine. An op that meets a CPU tensor and a meta
tensor raises (``Tensor on device cpu is not on the expected device meta``), and reading a meta tensor
(``float()``, ``.item()``, ``.tolist()``) raises too, so these tests fail on device mixing and on host
synchronisation alike. The CUDA versions are in ``test_cuda.py``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from efficientnet.builder import SpecEfficientNet
from efficientnet.metrics import EpochMetrics, TrainMeter
from efficientnet.progressive import mixup_batch, mixup_loss
from efficientnet.spec import preset
from efficientnet.training import NonFiniteLossError, build_optimizer, build_scheduler, evaluate, train_step

TINY = preset("lite0").replace(width=0.15, resolution=32)


def meta_model() -> SpecEfficientNet:
    with torch.device("meta"):
        model = SpecEfficientNet(TINY, 10)
    return model.to(memory_format=torch.channels_last)


def cpu_batches(n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    return [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(n)]


def test_evaluation_accumulates_on_the_model_device_without_reading_back():
    metrics = evaluate(meta_model(), cpu_batches(), nn.CrossEntropyLoss(), EpochMetrics(10))
    assert metrics.count == 12
    assert metrics._sums.device.type == "meta"
    assert {t.device.type for t in metrics._preds + metrics._targets} == {"meta"}


def test_training_steps_stay_on_the_device_until_the_epoch_is_read():
    model = meta_model().train()
    optimizer = build_optimizer(model, "sgd", lr=0.1)
    scheduler = build_scheduler(optimizer, total_steps=10, warmup_steps=2)
    meter = TrainMeter()
    for images, targets in cpu_batches():
        images, targets, mixed_with, lam = mixup_batch(images, targets, alpha=0.2)
        loss, logits = train_step(model, images, targets, optimizer, mixup_loss(nn.CrossEntropyLoss(), mixed_with, lam),
                                  scheduler=scheduler, clip_grad=5.0)
        assert loss.device.type == logits.device.type == "meta"
        meter.update(loss, logits, targets)
    assert meter.count == 12 and meter._sums.device.type == "meta"
    with pytest.raises(Exception, match="meta"):  # the one read per epoch is the caller's
        meter.read()


def test_mixup_pairs_images_on_their_own_device():
    images, targets = torch.randn(8, 3, 4, 4, device="meta"), torch.randint(0, 10, (8,), device="meta")
    mixed, a, b, lam = mixup_batch(images, targets, alpha=0.4)
    assert mixed.device.type == a.device.type == b.device.type == "meta" and 0.0 <= lam <= 1.0


def test_the_loss_check_reads_the_loss_only_when_asked():
    model = meta_model().train()
    optimizer = build_optimizer(model, "sgd", lr=0.1)
    images, targets = cpu_batches(1)[0]
    with pytest.raises(Exception, match="meta"):  # asked: it reads the loss (here impossible: a meta tensor)
        train_step(model, images, targets, optimizer, nn.CrossEntropyLoss(), check_loss=float)
    cpu = SpecEfficientNet(TINY, 10).train()
    before = [p.detach().clone() for p in cpu.parameters()]
    nan_images = torch.full_like(images, float("nan"))
    with pytest.raises(NonFiniteLossError):
        train_step(cpu, nan_images, targets, build_optimizer(cpu, "sgd", lr=0.1), nn.CrossEntropyLoss(),
                   check_loss=float)
    assert all(torch.equal(a, b) for a, b in zip(before, cpu.parameters()))  # raised before the weights moved


def test_metrics_give_the_same_numbers_on_any_device_and_when_merged():
    torch.manual_seed(0)
    logits, targets = torch.randn(40, 10), torch.randint(0, 10, (40,))
    whole = EpochMetrics(10)
    for lo, hi in ((0, 25), (25, 40)):
        whole.update(logits[lo:hi], targets[lo:hi], torch.tensor(0.5))
    result = whole.compute()
    top1 = 100.0 * float((logits.argmax(1) == targets).float().mean())
    assert result["top1"] == pytest.approx(top1) and result["loss"] == pytest.approx(0.5)
    assert EpochMetrics.merged([whole.cpu()]).compute() == pytest.approx(result)
