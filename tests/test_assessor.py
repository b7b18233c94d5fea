"""CurveAssessor: learning-curve extrapolation as early stopping, loaded and run the way NNI runs an assessor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from nni.assessor import AssessResult
from nni.tools.package_utils.tuner_factory import create_customized_class_instance

from efficientnet.search.assessor import CurveAssessor
from synthetic import learning_curve  # bench/synthetic.py: objectives for tests and benchmarks, not shipped

ROOT = Path(__file__).resolve().parents[1]


def curve(final: float, tau: float, epochs: int = 20) -> list[dict]:
    """A noiseless exponential learning curve reaching ``final`` at the last epoch, as the trial reports it."""
    acc = learning_curve(final, tau, epochs, np.random.default_rng(0), noise=0.0)
    return [{"default": float(a), "loss": 1.0, "top5": 90.0, "f1": 0.5} for a in acc]


def run(assessor: CurveAssessor, trial: str, history: list) -> int:
    """Feed the history one epoch at a time, as NNI does; the epoch at which the trial was stopped, or 0."""
    for epoch in range(1, len(history) + 1):
        if assessor.assess_trial(trial, history[:epoch]) is AssessResult.Bad:
            assessor.trial_end(trial, False)
            return epoch
    assessor.trial_end(trial, True)
    return 0


def test_nni_loads_it_from_a_config():
    assessor = create_customized_class_instance({"codeDirectory": str(ROOT),
                                                 "className": "efficientnet.search.assessor.CurveAssessor",
                                                 "classArgs": {"optimize_mode": "maximize", "min_trials": 3}})
    assert isinstance(assessor, CurveAssessor) and assessor.min_trials == 3


def test_a_hopeless_trial_is_stopped_early_and_a_slow_better_one_runs_to_the_end():
    assessor = CurveAssessor(min_trials=3)
    for k, (final, tau) in enumerate([(70, 3.0), (72, 3.5), (75, 2.5)]):
        assert run(assessor, f"t{k}", curve(final, tau)) == 0  # the first ones teach it what curves look like
    assert run(assessor, "weak", curve(45, 3.0)) == 2  # far behind from the start
    assert 2 < run(assessor, "close", curve(73, 3.0)) < 20  # only once it is clear it cannot reach 75
    assert run(assessor, "slow", curve(80, 4.2)) == 0  # learns 20 % slower than any before: still the best


def test_no_verdict_before_min_trials_have_finished_or_before_min_epochs():
    assessor = CurveAssessor(min_trials=3, min_epochs=4)
    assert run(assessor, "a", curve(75, 3.0)) == 0 and run(assessor, "b", curve(20, 3.0)) == 0
    assert run(assessor, "c", curve(74, 3.0)) == 0
    assert run(assessor, "d", curve(20, 3.0)) == 4  # three finished: stopped at the first epoch it may be judged


def test_minimize_mode_extrapolates_losses_downwards():
    assessor = CurveAssessor(optimize_mode="minimize", min_trials=2)
    losses = lambda final, tau: [{"default": 100.0 - d["default"]} for d in curve(100.0 - final, tau)]  # noqa: E731
    assert run(assessor, "a", losses(30.0, 3.0)) == 0 and run(assessor, "b", losses(25.0, 3.0)) == 0
    assert run(assessor, "c", losses(60.0, 3.0)) == 2
    assert assessor.noise < 0.05  # smooth curves: almost no allowance for noise


def test_the_noise_allowance_is_the_curves_epoch_to_epoch_noise():
    assessor = CurveAssessor(min_trials=2)
    rng = np.random.default_rng(0)
    for k in range(6):
        noisy = [{"default": d["default"] + float(rng.normal(0, 0.5))} for d in curve(70 + k, 3.0)]
        run(assessor, f"t{k}", noisy)
    assert 0.3 < assessor.noise < 0.75


@pytest.mark.parametrize("kwargs,word", [({"optimize_mode": "max"}, "optimize_mode"), ({"min_epochs": 1}, "min_epochs"),
                                         ({"min_trials": 0}, "min_trials"), ({"slack": -1}, "slack")])
def test_bad_class_args_are_one_line_errors(kwargs, word):
    with pytest.raises(ValueError, match=word) as info:
        CurveAssessor(**kwargs)
    assert "\n" not in str(info.value)
