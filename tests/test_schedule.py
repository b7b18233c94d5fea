"""The learning-rate schedule: linear warm-up, then cosine decay, stepped once per iteration."""

from __future__ import annotations

import warnings

import pytest
import torch

from efficientnet.training import build_scheduler, lr_at


@pytest.mark.parametrize("warmup_steps", [0, 3])
def test_the_scheduler_follows_the_closed_form_at_every_step(warmup_steps):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    scheduler = build_scheduler(optimizer, total_steps=12, warmup_steps=warmup_steps)
    for step in range(12):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr_at(step, 0.2, 12, warmup_steps)), step
        optimizer.step()
        scheduler.step()


def test_passing_the_warm_up_milestone_prints_no_torch_warning():
    """Older torch (2.6; not 2.14) warns from inside SequentialLR at the milestone (its own ``step(0)`` call), and
    trials would show that warning in their output. Run on the oldest supported torch (CI's second stage), this fails
    without the filter in build_scheduler."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scheduler = build_scheduler(optimizer, total_steps=8, warmup_steps=2)
        for _ in range(8):
            optimizer.step()
            scheduler.step()
    assert not caught, [str(w.message) for w in caught]
