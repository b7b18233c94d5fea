"""``CurveAssessor``: learning-curve extrapolation as an NNI assessor, so a hopeless trial costs fewer epochs.

NNI hands every intermediate result (one per epoch) to the assessor, which may stop the trial. This assessor
extrapolates a running trial's curve from the curves of the trials that finished (see :class:`CurveAssessor`) and
stops it once it cannot reach the best final value so far even if it learnt more slowly than any of them. A stopped
trial's last intermediate result reaches the tuner as a partial result (the tuner has NNI's dispatcher hand it
over, see :mod:`efficientnet.search.fidelity`), and its architecture may then be proposed once more, to continue the
stopped trial's checkpoint to the end, if the search wants it back.

Use it in ``config.yml`` instead of ``Medianstop``::

    assessor:
      codeDirectory: .
      className: efficientnet.search.assessor.CurveAssessor
      classArgs: {optimize_mode: maximize}

``bench/search_efficiency.py --curves`` measures the epochs it saves against no assessor and NNI's Medianstop on a
synthetic learning-curve model.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from nni.assessor import Assessor, AssessResult
from nni.utils import extract_scalar_reward

from .class_args import positive_int

__all__ = ["CurveAssessor"]

_logger = logging.getLogger(__name__)


class CurveAssessor(Assessor):
    """Learning-curve extrapolation across trials. For every trial that finished, its *progress* after ``e`` epochs
    is the share ``p`` of its total gain (from its first epoch to its best) already made. A running trial is
    extrapolated as if it learnt ``slack`` (25 %) slower than the slowest finished trial, i.e. with progress
    ``1 - (1 - p_min) ** (1 / (1 + slack))`` (for exponential curves, a time constant ``1 + slack`` times longer):
    ``first + (best so far - first) / progress``, plus twice the epoch-to-epoch noise of the finished curves (from the
    second differences of their second halves). It is
    stopped once even that stays below the best final value so far. Early on the progress is small, so the
    extrapolation is generous; later only trials that cannot catch up are stopped. A better architecture gains more
    in absolute terms, which a share (unlike a fixed number of points) allows for.

    classArgs: ``optimize_mode`` (maximize), ``min_epochs`` (2: no verdict before), ``min_trials`` (5 finished
    trials before any verdict), ``slack`` (0.25).
    """

    def __init__(self, optimize_mode: str = "maximize", min_epochs: int = 2, min_trials: int = 5,
                 slack: float = 0.25) -> None:
        if optimize_mode not in ("maximize", "minimize"):
            raise ValueError(f"classArg optimize_mode must be 'maximize' or 'minimize', got {optimize_mode!r}")
        positive_int("min_epochs", min_epochs, 2)
        positive_int("min_trials", min_trials)
        if not isinstance(slack, (int, float)) or isinstance(slack, bool) or not slack >= 0:
            raise ValueError(f"classArg slack must be a number >= 0, got {slack!r}")
        self.sign = 1.0 if optimize_mode == "maximize" else -1.0
        self.min_epochs, self.min_trials, self.slack = min_epochs, min_trials, float(slack)
        self.running: dict[Any, list[float]] = {}
        self.finished: list[list[float]] = []  # raw curves (higher is better) of the trials that finished
        self.noise = 0.0
        self.stopped = 0

    def _values(self, history: list) -> list[float]:
        return [self.sign * float(extract_scalar_reward(v)) for v in history]

    def slowest_progress(self, epoch: int) -> float | None:
        """The smallest share of its total gain a finished trial had made after ``epoch`` epochs."""
        shares = []
        for c in self.finished:
            if len(c) <= epoch:
                continue
            gain = max(c) - c[0]
            if gain > 0:
                shares.append(max(max(c[:epoch]) - c[0], 0.0) / gain)
        return min(shares) if len(shares) >= self.min_trials else None

    def extrapolate(self, curve: list[float]) -> float | None:
        """The optimistic final value of a running trial's ``curve`` (None before a verdict is possible)."""
        slowest = self.slowest_progress(len(curve))
        if slowest is None:
            return None
        progress = 1.0 - (1.0 - min(slowest, 1.0)) ** (1.0 / (1.0 + self.slack))
        if progress <= 0:
            return math.inf
        return curve[0] + max(max(curve) - curve[0], 0.0) / progress + 2.0 * self.noise

    def assess_trial(self, trial_job_id: Any, trial_history: list) -> AssessResult:
        """Good, unless even the optimistic extrapolation of the trial trails the best final value so far."""
        curve = self._values(trial_history)
        self.running[trial_job_id] = curve
        if len(curve) < self.min_epochs:
            return AssessResult.Good
        reach = self.extrapolate(curve)
        if reach is None:
            return AssessResult.Good
        best_final = max(max(c) for c in self.finished)
        if reach >= best_final:
            return AssessResult.Good
        self.stopped += 1
        _logger.info("stopping trial %s at epoch %d: it extrapolates to at most %.4g, below the best final value "
                     "%.4g", trial_job_id, len(curve), self.sign * reach, self.sign * best_final)
        return AssessResult.Bad

    def trial_end(self, trial_job_id: Any, success: bool) -> None:
        """A trial that ran to its end (successfully) joins the reference curves."""
        curve = self.running.pop(trial_job_id, None)
        if not success or not curve:
            return
        self.finished.append(curve)
        # a robust sd of one epoch's value from second differences (a smooth curve contributes little to them):
        # x[t+1] - 2 x[t] + x[t-1] has sd sqrt(6) * sd for independent noise; median absolute / 0.6745 estimates it
        d2 = sorted(abs(c[t + 1] - 2 * c[t] + c[t - 1]) for c in self.finished for t in range(len(c) // 2, len(c) - 1))
        if len(d2) >= 4:
            self.noise = d2[len(d2) // 2] / (0.6745 * math.sqrt(6.0))
