"""Every strategy family in a real experiment, with a real assessor stopping trials: evolution with proxy training
and Medianstop, the predictor with Pareto search and CurveAssessor. (bo runs in test_e2e_nni.py, random in
test_report.py, the legacy grid in test_trial_nni.py.)

One trial at a time, seeded, so that each run takes the same path. The search space gives every architecture a good
learning rate or a useless one (1e-5: it stays at chance), so the assessor has weak trials to stop.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nni_harness import dispatcher_log, experiment, write_config
from test_e2e_nni import describe, done, replace_section, tiny_overrides

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "alpha": {"_type": "quniform", "_value": [1.0, 2.0, 0.1]},
    "beta": {"_type": "quniform", "_value": [1.0, 1.3, 0.1]},
    "gamma": {"_type": "quniform", "_value": [1.0, 1.3, 0.1]},
    "stage4_kernel": {"_type": "choice", "_value": [3, 5]},
    "lr": {"_type": "choice", "_value": [0.004, 0.00001]},
}
STOPPED = {"EARLY_STOPPED", "USER_CANCELED"}  # NNI 3.0 records an assessor's stop as USER_CANCELED


def run(tmp_path: Path, trials: int, class_args: dict, assessor: dict, epochs: int) -> tuple[list, str]:
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    overrides = tiny_overrides(trials, seed=3, **class_args)
    overrides.update(trialConcurrency=1, searchSpaceFile=str(tmp_path / "space.json"))
    config = write_config(ROOT, tmp_path / "exp", overrides, f"--epochs {epochs} --subset 0.5")
    replace_section(config, "assessor", assessor)
    with experiment(config) as exp:
        assert exp.client.wait(done, timeout=420), describe(exp)
        trials_seen = exp.client.trials()
        log = dispatcher_log(exp)
    return trials_seen, log


def test_evolution_with_proxy_training_promotes_the_best_proxy_architecture_and_medianstop_stops_trials(tmp_path):
    class_args = {"strategy": "evolution", "population_size": 2, "sample_size": 2, "proxy_trials": 3,
                  "proxy_subset": 0.3, "proxy_epochs": 1, "promote_top": 1}
    trials, log = run(tmp_path, 7, class_args, {"name": "Medianstop",
                                                "classArgs": {"optimize_mode": "maximize", "start_step": 1}}, 2)
    assert "strategy evolution" in log and "Traceback" not in log, log[-3000:]
    proxy, full = trials[:3], trials[3:]
    assert all(t.parameters["budget"] == "proxy" and t.parameters["subset"] == 0.3 for t in proxy)
    assert all(t.final["budget"] == "proxy" and t.final["epochs"] == 1 for t in proxy if t.final)
    best_proxy = max((t for t in proxy if t.final), key=lambda t: t.final["default"])
    promoted = full[0]  # the best proxy architecture, trained again under the full budget
    assert promoted.parameters["arch"] == best_proxy.parameters["arch"] and promoted.parameters["budget"] == "full"
    assert "promoting" in log and "to the full budget" in log
    assert all(t.parameters["budget"] == "full" for t in full)
    stopped = [t for t in trials if t.status in STOPPED]
    assert stopped and all(t.final is None and t.intermediate for t in stopped), [t.status for t in trials]
    assert log.count("partial result ") >= len(stopped)  # the tuner heard each stop as a partial result


def test_the_predictor_searches_a_pareto_front_and_curve_assessor_stops_hopeless_trials(tmp_path):
    class_args = {"strategy": "predictor", "warmup": 3, "population_size": 3, "sample_size": 2,
                  "objectives": ["accuracy", "macs"], "multi_objective": "pareto"}
    assessor = {"codeDirectory": str(ROOT), "className": "efficientnet.search.assessor.CurveAssessor",
                "classArgs": {"optimize_mode": "maximize", "min_epochs": 2, "min_trials": 2}}
    trials, log = run(tmp_path, 7, class_args, assessor, 3)
    assert "strategy predictor" in log and "objectives ['accuracy', 'macs'] (pareto)" in log, log[-3000:]
    assert "predictor: first fit on 3 results" in log  # after 3 random trials the model picks the proposals
    finished = [t for t in trials if t.status == "SUCCEEDED"]
    assert len(finished) >= 2 and all(t.final["macs"] == t.parameters["macs"] for t in finished)
    stopped = [t for t in trials if t.status in STOPPED]
    assert stopped and all(len(t.intermediate) < 3 for t in stopped), [(t.status, t.intermediate) for t in trials]
    assert log.count("it extrapolates to at most") >= len(stopped)  # CurveAssessor's own reason for each stop


def test_successive_halving_promotes_a_candidate_that_continues_its_checkpoint_and_trains_no_epoch_twice(tmp_path):
    """bo with successive halving over epochs 1 -> 2 (eta 2), two trials at a time: a promoted candidate's trial
    continues the checkpoint of its rung-0 trial, in that trial's folder, and trains only epoch 2."""
    import yaml

    (tmp_path / "space.json").write_text(json.dumps({k: v for k, v in SPACE.items() if k != "lr"}))
    overrides = tiny_overrides(6, seed=3, min_epochs=1, full_epochs=2, eta=2)
    overrides.update(searchSpaceFile=str(tmp_path / "space.json"))
    config = write_config(ROOT, tmp_path / "exp", overrides, "--epochs 5 --subset 0.5")
    raw = yaml.safe_load(config.read_text())
    raw.pop("assessor", None)  # every trial runs its rung to the end
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    with experiment(config) as exp:
        assert exp.client.wait(done, timeout=420), describe(exp)
        trials = {t.id: t for t in exp.client.trials()}
        log = dispatcher_log(exp)
    assert "successive halving over epochs [1, 2] (eta 2)" in log and "Traceback" not in log, log[-3000:]
    assert all(t.status == "SUCCEEDED" for t in trials.values()), [(t.id, t.status) for t in trials.values()]
    promoted = [t for t in trials.values() if t.parameters.get("continue_from")]
    assert promoted, [t.parameters for t in trials.values()]
    for t in promoted:
        source = trials[t.parameters["continue_from"]]  # a trial of this experiment: the rung below, same arch
        assert source.parameters["arch"] == t.parameters["arch"] and source.parameters["budget"] == "rung0"
        assert (t.parameters["budget"], t.parameters["epochs"], source.final["epochs"]) == ("full", 2, 1)
        assert (t.final["epochs"], t.final["epochs_trained"]) == (2, 1)
        assert len(t.intermediate) == 1  # it reported epoch 2 only
        result = json.loads((Path(t.log_path) / "result.json").read_text())
        before = json.loads((Path(source.log_path) / "result.json").read_text())
        assert result["history"][0] == before["history"][0]  # epoch 1 is the source's own record, not retrained
        trial_log = (Path(t.log_path) / "log.txt").read_text()
        assert f"continuing {Path(source.log_path) / 'checkpoint.pth.tar'} to epoch 2" in trial_log
    # no epoch of any architecture is trained twice: each trial trains epochs (epochs - epochs_trained, epochs]
    trained: dict[str, list[int]] = {}
    for t in trials.values():
        done_at, ran = t.final["epochs"], t.final["epochs_trained"]
        trained.setdefault(t.parameters["arch"], []).extend(range(done_at - ran + 1, done_at + 1))
    assert all(len(epochs) == len(set(epochs)) for epochs in trained.values()), trained
    assert any(len(epochs) == 2 for epochs in trained.values())
