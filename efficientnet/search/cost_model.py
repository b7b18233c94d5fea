"""What a trial will cost, in seconds: a fixed start-up plus epochs × seconds per epoch of its architecture.

Seconds per epoch are fitted on the trials seen so far (their final results carry ``train_seconds`` and
``epochs_trained``) as a power of the architecture's MACs, ``log s = a + b · log MACs``: with fewer than three
trials, ``b = 1`` (time in proportion to MACs). MACs come from the closed forms of :mod:`.costs`, which take
milliseconds per architecture; so that a strategy can price thousands of candidates at once, ``log MACs`` is
itself fitted, once per search space, as a linear function of the candidates' features (:class:`ArchEncoding`) on
a sample of 32 of them (median error about 14 % on ``search_space.json``).

Before the first result there is no scale and :meth:`TrainingCostModel.trial_seconds` returns None: a strategy
then ranks by expected improvement alone. The start-up keeps the prices honest: a network ten times cheaper per
epoch is not ten times cheaper to try when the trial spends most of its time starting.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import numpy as np

from .candidates import Candidate, CandidateSpace
from .costs import estimate_costs
from .encoding import ArchEncoding

__all__ = ["ObservedCost", "TrainingCostModel", "observed_cost"]


class ObservedCost(NamedTuple):
    """What a trial's final result says it cost."""

    epochs_trained: int  # by this trial (a continuation trains only the epochs its source had not)
    seconds: float  # of those epochs
    epochs: int  # the epoch the trial ended at (its source's included)


def observed_cost(value: Any) -> ObservedCost | None:
    """The cost a trial's final result reports (``epochs_trained``, ``train_seconds``, ``epochs``), when it has it."""
    if not isinstance(value, Mapping):
        return None
    trained, seconds, reached = value.get("epochs_trained"), value.get("train_seconds"), value.get("epochs")
    if not isinstance(trained, (int, float)) or not isinstance(seconds, (int, float)) or trained <= 0 or seconds <= 0:
        return None
    reached = reached if isinstance(reached, (int, float)) and reached >= trained else trained
    return ObservedCost(int(trained), float(seconds), int(reached))


class TrainingCostModel:
    """Predicted seconds of a trial of ``epochs`` epochs for candidates of ``space`` (see the module docstring)."""

    def __init__(self, space: CandidateSpace, startup_s: float, num_classes: int = 1000, seed: int = 0) -> None:
        self.space, self.startup_s, self.num_classes = space, float(startup_s), num_classes
        self.encoding = ArchEncoding(space)
        rng = np.random.default_rng(seed)
        sample = [space.sample(rng) for _ in range(min(32, space.size))]
        X = self._design(self.encoding.features_of(sample))
        y = np.array([self.log_macs_of(c) for c in sample])
        self._macs_coef = np.linalg.lstsq(X, y, rcond=None)[0]
        self._obs: list[tuple[float, float]] = []  # (log MACs, log seconds per epoch)
        self._fit: tuple[float, float] | None = None
        self._epochs: list[int] = []

    @staticmethod
    def _design(features: np.ndarray) -> np.ndarray:
        return np.hstack([np.ones((len(features), 1)), features])

    def log_macs_of(self, candidate: Candidate) -> float:
        """The closed-form log MACs of one candidate (milliseconds)."""
        return float(np.log(max(estimate_costs(self.space.spec(candidate), self.num_classes).macs, 1)))

    def log_macs(self, features: np.ndarray) -> np.ndarray:
        """Fitted log MACs of candidates given by their architecture features (microseconds for thousands)."""
        return self._design(np.atleast_2d(features)) @ self._macs_coef

    def observe(self, candidate: Candidate, epochs: int, seconds: float, reached: int | None = None) -> None:
        """A trial of ``candidate`` trained ``epochs`` epochs in ``seconds`` (start-up excluded), ending at epoch
        ``reached`` (default ``epochs``; more when it continued another trial's checkpoint)."""
        self._obs.append((self.log_macs_of(candidate), float(np.log(seconds / epochs))))
        self._epochs.append(max(epochs, reached or epochs))
        x, y = np.array(self._obs).T
        slope = 1.0
        if len(x) >= 3 and np.ptp(x) > 0.1:
            slope = float(np.clip(np.polyfit(x, y, 1)[0], 0.2, 1.5))
        self._fit = (float(np.mean(y - slope * x)), slope)

    @property
    def fitted(self) -> bool:
        return self._fit is not None

    def typical_epochs(self) -> float:
        """The median epoch the trials seen ended at (1 before any): a trial's length when no budget sets it."""
        return float(np.median(self._epochs)) if self._epochs else 1.0

    def epoch_seconds(self, features: np.ndarray) -> np.ndarray | None:
        """Predicted seconds per epoch (None before the first observation)."""
        if self._fit is None:
            return None
        a, b = self._fit
        return np.exp(a + b * self.log_macs(features))

    def trial_seconds(self, features: np.ndarray, epochs: float) -> np.ndarray | None:
        """Predicted seconds of a trial: start-up plus ``epochs`` epochs (None before the first observation)."""
        per_epoch = self.epoch_seconds(features)
        return None if per_epoch is None else self.startup_s + epochs * per_epoch
