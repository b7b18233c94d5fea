"""Validation at one batch shape: on CUDA with cuDNN's benchmark mode, validation batches have the training batch's
size and the last one is padded, so cuDNN times no new shape; the metrics are those of the unpadded batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from efficientnet.builder import SpecEfficientNet
from efficientnet.data import export_digits, load_dataset, make_loaders
from efficientnet.metrics import EpochMetrics
from efficientnet.spec import preset
from efficientnet.trainer import validation_batch_shape
from efficientnet.trial_config import TrialConfig
from efficientnet.training import evaluate

TINY = preset("lite0").replace(width=0.15, resolution=32)


def batches(sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(n, 3, 32, 32, generator=generator), torch.randint(0, 10, (n,), generator=generator))
            for n in sizes]


def test_a_padded_last_batch_gives_the_metrics_of_the_unpadded_one_at_one_shape():
    torch.manual_seed(0)
    model = SpecEfficientNet(TINY, 10)
    seen: list[int] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    data = batches([8, 8, 5])
    plain = evaluate(model, data, nn.CrossEntropyLoss(), EpochMetrics(10), channels_last=False)
    assert seen == [8, 8, 5]
    seen.clear()
    padded = evaluate(model, data, nn.CrossEntropyLoss(), EpochMetrics(10), channels_last=False, batch_shape=8)
    assert seen == [8, 8, 8]  # one shape: the last batch carries 3 copies of its first image
    assert padded.count == plain.count == 21  # ... whose outputs are not counted
    assert padded.compute() == pytest.approx(plain.compute(), rel=1e-5, abs=1e-6)


def test_padding_keeps_the_batch_on_the_model_device_without_reading_back():
    with torch.device("meta"):  # as in test_devices.py: a stand-in for a GPU that raises on any host read
        model = SpecEfficientNet(TINY, 10)
    metrics = evaluate(model, batches([4, 3]), nn.CrossEntropyLoss(), EpochMetrics(10), batch_shape=4)
    assert metrics.count == 7 and metrics._sums.device.type == "meta"


@pytest.mark.parametrize("device, benchmark, shape", [
    ("cuda", "on", 24),  # cuDNN times every new shape: validate at the training batch's
    ("cuda", "off", None),  # no timing: larger batches, and a smaller last one, cost nothing extra
    ("cpu", "on", None),
])
def test_validation_runs_at_the_training_batch_only_where_cudnn_times_shapes(device, benchmark, shape):
    cfg = TrialConfig(batch_size=24, cudnn_benchmark=benchmark)
    assert validation_batch_shape(cfg, torch.device(device)) == shape


def test_the_validation_loader_takes_its_batch_size(tmp_path):
    split = load_dataset(str(export_digits(tmp_path)), TINY, val_split=0.2, seed=0)
    _, val, _ = make_loaders(split, 16, val_batch_size=16)
    assert [len(t) for _, t in val][:-1] == [16] * (len(val) - 1)
    _, default, _ = make_loaders(split, 16)
    assert next(iter(default))[1].shape[0] == 32  # twice the training batch by default
