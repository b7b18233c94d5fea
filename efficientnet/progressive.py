"""Progressive learning (EfficientNetV2): train in stages of growing image size and growing regularisation.

Training is cut into ``stages`` equal runs of epochs. Stage ``k`` of ``N`` (0-based) sits at ``t = k / (N - 1)``
of the way from the first settings to the last and trains at

* image size ``min_res + t * (resolution - min_res)``, rounded to a multiple of 8 (4 below 64 px); the last stage
  uses the spec's resolution exactly;
* classifier dropout, RandAugment magnitude and mixup alpha interpolated linearly between their two end values.

The stage of an epoch is a pure function of the epoch number and the total epochs, so a run resumed from a
checkpoint lands in the stage it was killed in. Validation always runs at the spec's resolution.

Padding: efficientnet-pytorch builds static TF-"same" padding for the spec's resolution, and such a model fails
below 32 px (a 5x5 kernel meets a 4x4 padded map deep in the network) and pads some layers by a pixel too little or
too much at other sizes. A progressive run therefore builds the model with ``dynamic_padding=True``
(``Conv2dDynamicSamePadding``: "same" for whatever size comes in). The state dict is the same, and at the spec's
resolution the output is identical to the static model's, so checkpoints export and evaluate as usual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ProgressiveError", "Progressive", "Stage", "default_min_res", "round_res", "mixup_batch",
           "mixup_loss"]

FULL_SCALE_MIN = 128  # EfficientNetV2's smallest stage size for a 224 px model
FULL_SCALE_RES = 224


class ProgressiveError(ValueError):
    """Settings that cannot make a stage plan; the message names the flag."""


def round_res(size: float, resolution: int) -> int:
    """Round ``size`` to a multiple of 8 (of 4 when ``resolution`` is below 64 px), at least one multiple."""
    q = 8 if resolution >= 64 else 4
    return max(q, int(round(size / q)) * q)


def default_min_res(resolution: int) -> int:
    """The first stage's size: 128 px for a 224 px model, in proportion for others."""
    return min(resolution, round_res(resolution * FULL_SCALE_MIN / FULL_SCALE_RES, resolution))


@dataclass(frozen=True)
class Stage:
    """The settings of one stage (``index`` is 0-based; ``first_epoch``/``last_epoch`` are 1-based, inclusive)."""

    index: int
    stages: int
    first_epoch: int
    last_epoch: int
    resolution: int
    dropout: float
    randaug: int
    mixup: float

    def describe(self) -> str:
        """One log line, e.g. ``stage 2/4 (epochs 3-4): 24 px, dropout 0.17, RandAugment 8, mixup 0.07``."""
        return (f"stage {self.index + 1}/{self.stages} (epochs {self.first_epoch}-{self.last_epoch}): "
                f"{self.resolution} px, dropout {self.dropout:.2f}, RandAugment {self.randaug}, mixup {self.mixup:.2f}")


@dataclass(frozen=True)
class Progressive:
    """A stage plan for ``epochs`` epochs ending at the spec's ``resolution``."""

    stages: int
    epochs: int
    resolution: int
    min_res: int | None = None
    dropout: tuple[float, float] = (0.1, 0.3)
    randaug: tuple[float, float] = (5, 15)
    mixup: tuple[float, float] = (0.0, 0.2)

    def __post_init__(self) -> None:
        if self.stages < 1:
            raise ProgressiveError(f"--progressive-stages must be at least 1 to plan stages, got {self.stages}")
        if self.stages > self.epochs:
            raise ProgressiveError(f"--progressive-stages {self.stages} is more than --epochs {self.epochs}; "
                                   "give every stage at least one epoch")
        lo = self.first_res
        if not 8 <= lo <= self.resolution:
            raise ProgressiveError(f"--progressive-min-res must be between 8 and the resolution {self.resolution}, "
                                   f"got {lo}")
        checks = [(self.dropout, 0.0, 0.99, "--progressive-dropout"), (self.randaug, 0, 30, "--progressive-randaug"),
                  (self.mixup, 0.0, 10.0, "--progressive-mixup")]
        for pair, low, high, flag in checks:
            if len(pair) != 2 or not all(low <= float(v) <= high for v in pair):
                raise ProgressiveError(f"{flag} takes two values in [{low}, {high}], got {list(pair)}")

    @property
    def first_res(self) -> int:
        """The first stage's image size."""
        return default_min_res(self.resolution) if self.min_res is None else int(self.min_res)

    def stage_index(self, epoch: int) -> int:
        """The 0-based stage of the 0-based ``epoch``."""
        return min(self.stages - 1, max(0, epoch) * self.stages // self.epochs)

    def stage(self, epoch: int) -> Stage:
        """The settings for the 0-based ``epoch``."""
        k = self.stage_index(epoch)
        t = k / (self.stages - 1) if self.stages > 1 else 1.0
        lerp = lambda pair: float(pair[0]) + t * (float(pair[1]) - float(pair[0]))  # noqa: E731
        res = self.resolution if k == self.stages - 1 else min(self.resolution, round_res(
            self.first_res + t * (self.resolution - self.first_res), self.resolution))
        first = next(e for e in range(self.epochs) if self.stage_index(e) == k)
        last = max(e for e in range(self.epochs) if self.stage_index(e) == k)
        return Stage(k, self.stages, first + 1, last + 1, res, round(lerp(self.dropout), 4),
                     int(round(lerp(self.randaug))), round(lerp(self.mixup), 4))

    def plan(self) -> list[Stage]:
        """Every stage, in order."""
        return [self.stage(next(e for e in range(self.epochs) if self.stage_index(e) == k))
                for k in range(self.stages)]


def mixup_batch(images: torch.Tensor, targets: torch.Tensor,
                alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al.): ``lam ~ Beta(alpha, alpha)``, images mixed with a shuffled copy of the batch.

    Returns ``(mixed images, targets, shuffled targets, lam)``; ``alpha <= 0`` returns the batch unchanged with
    ``lam = 1``. Draws from torch's global RNGs (the batch's device for the pairing), which are seeded and saved in
    checkpoints; ``targets`` must be on the images' device.
    """
    if alpha <= 0 or images.shape[0] < 2:
        return images, targets, targets, 1.0
    lam = float(torch.distributions.Beta(float(alpha), float(alpha)).sample())
    perm = torch.randperm(images.shape[0], device=images.device)
    return lam * images + (1.0 - lam) * images[perm], targets, targets[perm], lam


def mixup_loss(loss_fn: nn.Module, targets_b: torch.Tensor, lam: float):
    """A loss ``f(logits, targets_a) = lam * loss(targets_a) + (1 - lam) * loss(targets_b)`` for :func:`train_step`."""
    if lam >= 1.0:
        return loss_fn

    def mixed(logits: torch.Tensor, targets_a: torch.Tensor) -> torch.Tensor:
        return lam * loss_fn(logits, targets_a) + (1.0 - lam) * loss_fn(logits, targets_b.to(logits.device))

    return mixed
