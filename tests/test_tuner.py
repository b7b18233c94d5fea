"""The tuner through NNI's API with the real meta-device profiler: the legacy config, budgets, resume/import."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import nni
import numpy as np
import pytest
from nni.tools.package_utils.tuner_factory import create_customized_class_instance

from efficientnet.builder import network_key
from efficientnet.proposal import Proposal
from efficientnet.profiler import profile
from efficientnet.search import BudgetError, SearchSpaceError
from efficientnet.search.candidates import Candidate
from efficientnet.search.costs import estimated_profile
from efficientnet.search.space import quniform_grid
from efficientnet.spec import ArchSpec
from spaces import DEFAULT_SPACE, LEGACY_SPACE, TWO_NETWORKS
from tuner import EfficientNetTuner, FixedProductTuner

ROOT = Path(__file__).resolve().parents[1]


def on_grid(value: float, low: float, high: float, q: float) -> bool:
    return any(math.isclose(value, v) for v in quniform_grid(low, high, q))


def test_nni_loads_the_seed_config_and_every_point_meets_the_product():
    tuner = create_customized_class_instance(
        {"codeDirectory": str(ROOT), "className": "tuner.FixedProductTuner", "classArgs": {"product": 2}}
    )
    assert isinstance(tuner, nni.tuner.Tuner) and isinstance(tuner, FixedProductTuner)
    tuner.update_search_space(LEGACY_SPACE)
    for pid in range(3):  # real profiles (b0 at 224 px)
        p = tuner.generate_parameters(pid)
        assert abs(p["alpha"] * p["beta"] ** 2 * p["gamma"] ** 2 - 2.0) <= 0.1 + 1e-9
        assert on_grid(p["alpha"], 1.0, 2.0, 0.05) and on_grid(p["beta"], 1.0, 1.5, 0.05)
        assert on_grid(p["gamma"], 1.0, 1.5, 0.05)
        spec = ArchSpec.parse(p["arch"])
        assert spec == ArchSpec.from_compound(p["alpha"], p["beta"], p["gamma"], 1.0, base="b0")
        assert (p["params"], p["macs"]) == (profile(spec).params, profile(spec).macs)
        tuner.receive_trial_result(pid, p, {"default": 0.5})
        tuner.trial_end(pid, True)


def test_seed_grid_is_complete_then_exhausted():
    """The legacy grid has 109 points within 2 ± 0.1, but on b0 they build only 65 networks: repeats round up and
    channels round to multiples of 8, so neighbouring points often build the same network. Each network is trained
    once, at the first of its points in grid order (the paper's coefficients are one)."""
    tuner = FixedProductTuner(product=2, profiler=estimated_profile)
    tuner.update_search_space(LEGACY_SPACE)
    points, networks = set(), set()
    with pytest.raises(nni.NoMoreTrialError, match="each network is proposed once, however many grid points build it"):
        for pid in range(1000):
            p = tuner.generate_parameters(pid)
            points.add((p["alpha"], p["beta"], p["gamma"]))
            networks.add(network_key(ArchSpec.parse(p["arch"])))
    grid = tuner.space
    every = {grid.network(grid.at(i)) for i in range(grid.size)}
    assert grid.size == 109 and len(every) == 65
    assert len(points) == len(networks) == pid == 65 and networks == every
    assert (1.2, 1.1, 1.15) in points  # the paper's coefficients


def test_twins_build_the_same_model_and_only_one_of_them_is_proposed():
    """On Lite0, alpha 1.6 and 1.65 (beta 1.0, gamma 1.1) round to the same repeats: two specs, one network, the
    same state dict. A tuner that proposed (or imported) one of them never proposes the other."""
    from efficientnet.builder import SpecEfficientNet

    twins = [ArchSpec.from_compound(a, 1.0, 1.1, 1.0, base="lite0") for a in (1.6, 1.65)]
    other = ArchSpec.from_compound(1.7, 1.0, 1.1, 1.0, base="lite0")
    assert str(twins[0]) != str(twins[1]) and network_key(twins[0]) == network_key(twins[1]) != network_key(other)
    shapes = [[(k, tuple(v.shape)) for k, v in SpecEfficientNet(s, num_classes=10).state_dict().items()]
              for s in (*twins, other)]
    assert shapes[0] == shapes[1] != shapes[2]

    space = {"alpha": {"_type": "choice", "_value": [1.6, 1.65, 1.7]}, "beta": {"_type": "choice", "_value": [1.0]},
             "gamma": {"_type": "choice", "_value": [1.1]}}
    tuner = FixedProductTuner(product=2, base="lite0", profiler=estimated_profile)
    tuner.update_search_space(space)
    # a mutation's grid step (evolution, the predictor, bo's local search) goes on past a twin: it changes the network
    move, rng = tuner.space.move_coefficient, np.random.default_rng(0)
    assert move(Candidate((1.6, 1.0, 1.1)), 0, 1, rng) == Candidate((1.7, 1.0, 1.1))
    assert move(Candidate((1.7, 1.0, 1.1)), 0, -1, rng) == Candidate((1.65, 1.0, 1.1))
    assert move(Candidate((1.65, 1.0, 1.1)), 0, -1, rng) is None  # past 1.6, its twin, the grid ends
    assert [tuner.generate_parameters(pid)["alpha"] for pid in range(2)] == [1.6, 1.7]
    with pytest.raises(nni.NoMoreTrialError):
        tuner.generate_parameters(2)
    resumed = FixedProductTuner(product=2, base="lite0", profiler=estimated_profile)
    resumed.update_search_space(space)
    twin = resumed.space.proposal(Candidate((1.65, 1.0, 1.1))).to_parameters()
    resumed.import_data([{"parameter": twin, "value": 0.5}])  # nnictl resume: the twin of 1.6 was trained already
    assert resumed.generate_parameters(0)["alpha"] == 1.7
    with pytest.raises(nni.NoMoreTrialError):
        resumed.generate_parameters(1)


def test_budgets_are_respected_with_the_real_profiler():
    budgets = {"max_params": 4.4e6, "max_macs": 9e7, "max_peak_memory_mb": 1.6, "max_model_size_mb": 17.0}
    tuner = EfficientNetTuner(seed=0, base="lite0", base_resolution=64, num_classes=10, **budgets)
    tuner.update_search_space(DEFAULT_SPACE)
    for pid in range(4):
        p = tuner.generate_parameters(pid)
        prof = profile(ArchSpec.parse(p["arch"]), num_classes=10)
        assert prof.params <= 4.4e6 and prof.macs <= 9e7 and prof.model_size_mb <= 17.0
        assert prof.peak_memory_mb <= 1.6 and math.isclose(p["peak_memory_mb"], prof.peak_memory_mb, abs_tol=1e-3)
    assert tuner.checker.rejected > 0  # the budgets did bind


def test_latency_budget_is_measured():
    space = {"alpha": {"_type": "choice", "_value": [2.0]}, "lr": {"_type": "choice", "_value": [0.01]}}
    tuner = EfficientNetTuner(base_resolution=32, num_classes=10, max_latency_ms=10_000, seed=0)
    tuner.update_search_space(space)
    p = tuner.generate_parameters(0)
    assert p["latency_ms"] > 0 and p["lr"] == 0.01
    with pytest.raises(nni.NoMoreTrialError):
        tuner.generate_parameters(1)


@pytest.mark.parametrize("budget,value", [("max_params", 1e5), ("max_macs", 1e6), ("max_model_size_mb", 1.0)])
def test_infeasible_budget_is_an_error_at_start_naming_the_budget(budget, value):
    tuner = EfficientNetTuner(base_resolution=64, num_classes=10, **{budget: value})
    with pytest.raises(BudgetError, match=f"no feasible architecture: {budget}=") as info:
        tuner.update_search_space(DEFAULT_SPACE)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_infeasible_peak_memory_is_found_with_the_profiler():
    space = {"alpha": {"_type": "choice", "_value": [2.0]}, "gamma": {"_type": "choice", "_value": [1.0]}}
    tuner = EfficientNetTuner(base_resolution=32, num_classes=10, max_peak_memory_mb=0.01)
    with pytest.raises(BudgetError, match="max_peak_memory_mb=0.01 but the smallest candidate needs"):
        tuner.update_search_space(space)


def test_bad_class_args_name_the_argument():
    for kwargs, word in [({"strategy": "anneal"}, "strategy"), ({"base": "b9"}, "base"),
                         ({"optimize_mode": "max"}, "optimize_mode"), ({"max_params": -1}, "max_params"),
                         ({"tolerance": -0.1}, "tolerance"),
                         ({"strategy": "evolution", "population_size": 1}, "population_size"),
                         ({"n_init": 0}, "n_init"), ({"n_init": 2.5}, "n_init"),
                         ({"strategy": "evolution", "n_init": 3}, "strategy bo")]:
        with pytest.raises(ValueError, match=word) as info:
            EfficientNetTuner(**kwargs).update_search_space(LEGACY_SPACE)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("strategy", ["evolution", "bo"])
def test_import_data_restores_what_the_strategy_learnt_and_prevents_duplicates(strategy):
    first = EfficientNetTuner(seed=1, population_size=10, sample_size=3, profiler=estimated_profile)
    first.update_search_space(DEFAULT_SPACE)
    records = []
    for pid in range(15):
        p = first.generate_parameters(pid)
        value = p["alpha"] - p["beta"]
        # NNI hands values over as numbers, dicts with "default", or JSON strings
        records.append({"parameter": p, "value": [value, {"default": value}, json.dumps({"default": value})][pid % 3]})
    records.append({"parameter": {"alpha": 1.23, "beta": 1.0, "gamma": 1.0}, "value": 0.9})  # off the grid: skipped
    records.append({"parameter": records[0]["parameter"], "value": "not a number"})  # skipped
    resumed = EfficientNetTuner(strategy=strategy, seed=2, population_size=10, sample_size=3,
                                profiler=estimated_profile)
    resumed.update_search_space(DEFAULT_SPACE)
    resumed.import_data(records)
    imported = {r["parameter"]["arch"] for r in records[:15]}
    if strategy == "evolution":
        population = resumed.strategy.population
        assert len(population) == 10
        assert {str(resumed.space.spec(c)) for c, _ in population} <= imported
        expected = [r["parameter"]["alpha"] - r["parameter"]["beta"] for r in records[5:15]]  # the 10 newest
        assert all(math.isclose(v, e) for (_, v), e in zip(population, expected))
    else:  # every result, with the hyperparameters it was trained with
        observations = resumed.strategy.observations
        assert {str(resumed.space.spec(c)) for c in observations} == imported
        for r in records[:15]:
            c = resumed.space.candidate_of(Proposal.from_parameters(r["parameter"]))
            assert math.isclose(observations[c].value, r["parameter"]["alpha"] - r["parameter"]["beta"])
            assert dict(observations[c].candidate.hyper) == {k: r["parameter"][k] for k in ("lr", "batch_size")}
    fresh = [resumed.generate_parameters(100 + i)["arch"] for i in range(30)]
    assert not imported & set(fresh) and len(set(fresh)) == 30


def test_results_out_of_order_and_unknown_ids_are_handled():
    tuner = EfficientNetTuner(strategy="evolution", seed=4, population_size=4, sample_size=2,
                              profiler=estimated_profile)
    tuner.update_search_space(DEFAULT_SPACE)
    proposals = {pid: tuner.generate_parameters(pid) for pid in range(6)}
    for pid in (5, 2, 0, 4, 1, 3):  # reverse-ish order, mixed metric forms
        tuner.receive_trial_result(pid, proposals[pid], {"default": float(pid)} if pid % 2 else pid)
    tuner.receive_trial_result(999, {"lr": 0.1}, 1.0)  # a customized trial outside the space: ignored
    tuner.trial_end(999, False)
    # aging follows arrival, not proposal order: the first two results to arrive (5 and 2) left the population
    assert [v for _, v in tuner.strategy.population] == [0.0, 4.0, 1.0, 3.0]
    with pytest.raises(RuntimeError, match="Incorrect final result"):
        tuner.receive_trial_result(0, proposals[0], {"top1": 0.3})


def test_generate_before_search_space_and_bad_space_type():
    tuner = EfficientNetTuner()
    with pytest.raises(RuntimeError, match="update_search_space"):
        tuner.generate_parameters(0)
    with pytest.raises(SearchSpaceError, match="JSON object"):
        tuner.update_search_space([1, 2])


# ------------------------------------------------------------------------------------------- early-stopped trials
INTERMEDIATE = {"default": 99.0, "loss": 0.1, "top5": 99.9, "f1": 0.99}  # the trial's per-epoch report


def test_a_per_epoch_report_is_told_from_a_final_one_by_its_shape_and_says_its_epoch():
    from efficientnet.search.fidelity import is_partial_result, partial_epoch

    report = {**INTERMEDIATE, "epoch": 2}
    assert is_partial_result(report) and is_partial_result(json.dumps(report))
    assert not is_partial_result({**report, "epochs": 2, "arch": "x"}) and not is_partial_result({"default": 1.0})
    assert partial_epoch(report) == partial_epoch(json.dumps(report)) == 2
    for unknown in (INTERMEDIATE, {**INTERMEDIATE, "epoch": True}, {**INTERMEDIATE, "epoch": 0}, 99.0, "not json"):
        assert partial_epoch(unknown) is None  # an older trial's report, or no report at all: nothing assumed


def finished(tuner, count, value=lambda pid: 70.0 + pid):
    proposals = {}
    for pid in range(count):
        proposals[pid] = tuner.generate_parameters(pid)
        tuner.receive_trial_result(pid, proposals[pid], {"default": value(pid), "epochs": 3, "best_epoch": 2})
        tuner.trial_end(pid, True)
    return proposals


@pytest.mark.parametrize("strategy", ["bo", "evolution"])
def test_an_early_stopped_trial_is_a_partial_result_not_a_failure(strategy):
    """NNI passes a stopped trial's last intermediate result as final, then ends the trial as unsuccessful."""
    tuner = EfficientNetTuner(strategy=strategy, seed=0, population_size=6, sample_size=2, profiler=estimated_profile)
    tuner.update_search_space(DEFAULT_SPACE)
    finished(tuner, 6)  # full results 70..75: median 72.5
    stopped = tuner.generate_parameters(6)
    tuner.receive_trial_result(6, stopped, dict(INTERMEDIATE))
    tuner.trial_end(6, False)
    record = tuner.ledger.of_trial(6)
    candidate = record.candidate
    assert record.state == "partial" and record.raw == 99.0
    assert record.score == 72.5  # capped at the median: it cannot outrank completed trials
    if strategy == "bo":
        obs = tuner.strategy.observations[candidate]
        assert obs.partial and obs.value == 72.5 and tuner.strategy._incumbent != candidate
    else:
        assert (candidate, 72.5) in list(tuner.strategy.population)
    later = [tuner.generate_parameters(100 + i)["arch"] for i in range(10)]
    assert later.count(stopped["arch"]) <= 1  # at most one more time (a second chance), never more


@pytest.mark.parametrize("strategy", ["bo", "evolution", "predictor", "random"])
def test_a_second_chance_continues_the_stopped_trial_with_its_hyperparameters(strategy):
    """Rerun from epoch 0 with the same seed, a stopped trial repeats its curve and is stopped where it was: its
    second chance continues its checkpoint instead (the trial id NNI gave with its last result), with the same
    learning rate and batch size, and the trial reads the continuation back from the proposal. Two architectures:
    once the other one is trained, only the second chance is left."""
    space = {**TWO_NETWORKS, "lr": DEFAULT_SPACE["lr"], "batch_size": DEFAULT_SPACE["batch_size"]}
    tuner = EfficientNetTuner(strategy=strategy, seed=0, profiler=estimated_profile)
    tuner.update_search_space(space)
    stopped = tuner.generate_parameters(0)
    tuner.receive_trial_result(0, stopped, dict(INTERMEDIATE), trial_job_id="Stop0")
    tuner.trial_end(0, False)
    other = tuner.generate_parameters(1)
    tuner.receive_trial_result(1, other, {"default": 60.0, "epochs": 3}, trial_job_id="Done1")
    tuner.trial_end(1, True)
    again = tuner.generate_parameters(2)
    assert other["arch"] != stopped["arch"] == again["arch"]
    assert (again["lr"], again["batch_size"]) == (stopped["lr"], stopped["batch_size"])
    assert again["continue_from"] == "Stop0" and again["budget"] == "full" and "continue_from" not in stopped
    assert Proposal.from_parameters(again).training() == {"lr": stopped["lr"], "batch_size": stopped["batch_size"],
                                                          "continue_from": "Stop0"}


def test_a_low_partial_result_is_floored_at_the_worst_full_one_and_a_real_failure_is_still_a_failure():
    tuner = EfficientNetTuner(seed=1, profiler=estimated_profile)
    tuner.update_search_space(DEFAULT_SPACE)
    finished(tuner, 5)
    low = tuner.generate_parameters(5)
    tuner.receive_trial_result(5, low, {**INTERMEDIATE, "default": 12.0})  # epoch-1 accuracy
    tuner.trial_end(5, False)
    assert tuner.ledger.of_trial(5).score == 70.0
    crashed = tuner.generate_parameters(6)
    tuner.receive_trial_result(6, crashed, {"default": 90.0, "epochs": 3})  # a final result, then a crash
    tuner.trial_end(6, False)
    assert tuner.ledger.of_trial(6).state == "failed" and tuner.ledger.of_trial(6).score is None
    assert tuner.ledger.of_trial(6).candidate not in tuner.strategy.observations


def test_an_intermediate_shaped_result_of_a_successful_trial_counts_in_full():
    tuner = EfficientNetTuner(seed=2, profiler=estimated_profile)
    tuner.update_search_space(DEFAULT_SPACE)
    finished(tuner, 4)
    p = tuner.generate_parameters(4)
    tuner.receive_trial_result(4, p, dict(INTERMEDIATE))
    tuner.trial_end(4, True)  # a trial whose own final result had only these keys
    record = tuner.ledger.of_trial(4)
    assert record.state == "scored" and record.score == 99.0
    assert not tuner.strategy.observations[record.candidate].partial


def test_imported_partial_results_stay_partial():
    tuner = EfficientNetTuner(seed=3, profiler=estimated_profile)
    tuner.update_search_space(DEFAULT_SPACE)
    source = EfficientNetTuner(seed=4, profiler=estimated_profile)
    source.update_search_space(DEFAULT_SPACE)
    records = [{"parameter": source.generate_parameters(i), "value": {"default": 60.0 + i, "epochs": 5}}
               for i in range(4)]
    stopped = source.generate_parameters(9)
    records.append({"parameter": stopped, "value": json.dumps(INTERMEDIATE)})
    tuner.import_data(records)
    candidate = tuner.space.candidate_of(Proposal.from_parameters(stopped))
    assert tuner.ledger.records[(candidate, "full")].score == 61.5 and tuner.strategy.observations[candidate].partial


@pytest.fixture
def inside_nnis_dispatcher(monkeypatch):
    """This process as NNI's environment marks its dispatcher (as nnictl starts it: no
    NNI_INCLUDE_INTERMEDIATE_RESULTS); what the tuner changes in NNI's dispatcher class there is undone afterwards."""
    from nni.runtime import msg_dispatcher

    base = msg_dispatcher.MsgDispatcherBase
    monkeypatch.setattr(msg_dispatcher, "dispatcher_env_vars", msg_dispatcher.dispatcher_env_vars._replace(
        SDK_PROCESS="dispatcher", NNI_INCLUDE_INTERMEDIATE_RESULTS=None))
    monkeypatch.setattr(base, "process_command", base.process_command)
    monkeypatch.setattr(base, "run", base.run)
    assert "stopping" not in vars(base)
    yield msg_dispatcher
    if "stopping" in vars(base):
        delattr(base, "stopping")


@pytest.mark.parametrize("learn_from_stopped", [True, False])
def test_the_early_stop_path_through_nnis_own_dispatcher(inside_nnis_dispatcher, learn_from_stopped):
    """NNI's real MsgDispatcher with its Medianstop assessor and this tuner, inside NNI's dispatcher; only the
    websocket to the NNI manager is replaced by a list of what would have been sent."""
    from nni.algorithms.hpo.medianstop_assessor import MedianstopAssessor
    from nni.common.serializer import dump, load
    from nni.runtime.tuner_command_channel import CommandType

    msg_dispatcher = inside_nnis_dispatcher

    class Recorded(msg_dispatcher.MsgDispatcher):
        def send(self, command, data):
            self.sent.append((command, data))

    tuner = EfficientNetTuner(seed=5, profiler=estimated_profile, learn_from_stopped=learn_from_stopped)
    assert tuner.hears_stopped_trials is learn_from_stopped
    assert (msg_dispatcher.dispatcher_env_vars.NNI_INCLUDE_INTERMEDIATE_RESULTS == "true") is learn_from_stopped
    dispatcher = Recorded("ws://_unittest_", tuner, MedianstopAssessor(optimize_mode="maximize", start_step=1))
    dispatcher.sent = []

    def process(command, data):
        dispatcher.process_command(command, data)
        while not dispatcher.default_command_queue.empty():  # what the dispatcher queued for itself
            dispatcher.process_command(*dispatcher.default_command_queue.get())

    process(CommandType.Initialize, DEFAULT_SPACE)
    process(CommandType.RequestTrialJobs, 4)
    jobs = [load(d) for c, d in dispatcher.sent if c is CommandType.NewTrialJob]
    assert len(jobs) == 4

    def report(job, kind, value, sequence=0):
        process(CommandType.ReportMetricData, {"parameter_id": job["parameter_id"], "type": kind, "sequence": sequence,
                                               "trial_job_id": f"t{job['parameter_id']}", "value": dump(value)})

    def end(job, event):
        process(CommandType.TrialEnd, {"trial_job_id": f"t{job['parameter_id']}", "event": event,
                                       "hyper_params": dump({"parameter_id": job["parameter_id"]})})

    for k, job in enumerate(jobs[:3]):  # three trials run their two epochs and finish
        for epoch, acc in enumerate((60.0 + k, 70.0 + k)):
            report(job, "PERIODICAL", {"default": acc, "loss": 1.0, "top5": 90.0, "f1": 0.5}, epoch)
        report(job, "FINAL", {"default": 70.0 + k, "epochs": 2, "best_epoch": 2, "loss": 1.0})
        end(job, "SUCCEEDED")
    weak = jobs[3]
    report(weak, "PERIODICAL", {"default": 20.0, "loss": 3.0, "top5": 50.0, "f1": 0.1}, 0)  # below the median
    assert (CommandType.KillTrialJob, dump(f"t{weak['parameter_id']}")) in dispatcher.sent
    end(weak, "EARLY_STOPPED")
    record = tuner.ledger.of_trial(weak["parameter_id"])
    if not learn_from_stopped:  # plain NNI 3.0: the tuner only hears that the trial did not succeed
        assert record.state == "failed" and record.score is None and record.candidate in tuner.strategy.failed
        return
    assert record.state == "partial"
    assert record.score == 70.0  # 20 % after one epoch, floored at the worst finished trial
    assert tuner.strategy.observations[record.candidate].partial


def test_a_tuner_error_inside_nnis_dispatcher_is_sent_to_the_manager_as_its_one_line(inside_nnis_dispatcher):
    """NNI's command worker only logs an exception in a handler, leaving the experiment RUNNING with a dead tuner;
    inside the dispatcher the tuner has NNI's own error command (ER) carry its line to the manager."""
    from nni.runtime.tuner_command_channel import CommandType

    msg_dispatcher = inside_nnis_dispatcher

    class Recorded(msg_dispatcher.MsgDispatcher):
        def send(self, command, data):
            self.sent.append((command, data))

    tuner = EfficientNetTuner(seed=5, profiler=estimated_profile)
    assert tuner.reports_errors
    dispatcher = Recorded("ws://_unittest_", tuner, None)
    dispatcher.sent = []
    bad = {**DEFAULT_SPACE, "alpha": {"_type": "quniform", "_value": [3.0, 3.5, 0.05]}}
    dispatcher.default_command_queue.put((CommandType.Initialize, bad))
    dispatcher.stopping = True  # the worker handles what is queued, then returns
    dispatcher.command_queue_worker(dispatcher.default_command_queue)
    assert len(dispatcher.worker_exceptions) == 1  # NNI's own handling of it is unchanged
    [(command, line)] = dispatcher.sent
    assert command is CommandType.Error
    assert line.startswith("no grid point of alpha/beta/gamma meets alpha*beta^2*gamma^2 = 2.0 ± 0.1") and "\n" not in line


def test_a_stop_wakes_nnis_command_workers_instead_of_waiting_for_their_poll(inside_nnis_dispatcher):
    """NNI's manager waits for the dispatcher to end before it stops the trials and itself, and NNI's two command
    workers see a stop only when their ``queue.get(timeout=3)`` returns. Inside the dispatcher the tuner has the stop
    wake them: NNI's real ``run()`` with this tuner and Medianstop, only the websocket replaced by a script."""
    import threading

    from nni.algorithms.hpo.medianstop_assessor import MedianstopAssessor
    from nni.common.serializer import dump
    from nni.runtime.tuner_command_channel import CommandType

    msg_dispatcher = inside_nnis_dispatcher
    plain = msg_dispatcher.MsgDispatcherBase("ws://_unittest_")  # NNI as it is
    plain.default_worker.start()
    plain.stopping = True
    plain.default_worker.join(timeout=1.0)
    assert plain.default_worker.is_alive(), "NNI's command worker now ends at once on a stop: stop_promptly is moot"
    plain.default_worker.join(timeout=10)

    tuner = EfficientNetTuner(seed=5, profiler=estimated_profile)
    assert tuner.stops_promptly

    class Scripted(msg_dispatcher.MsgDispatcher):
        def send(self, command, data):
            self.sent.append(command)
            initialized.set()

    def script():
        yield CommandType.Initialize, dump(DEFAULT_SPACE)
        initialized.wait(timeout=30)  # both workers now wait in queue.get
        yield CommandType.Terminate, None

    initialized = threading.Event()
    dispatcher = Scripted("ws://_unittest_", tuner, MedianstopAssessor(optimize_mode="maximize"))
    dispatcher.sent, woken = [], []
    dispatcher._channel._receive = script().__next__
    dispatcher._channel.disconnect = lambda: None
    dispatcher.handle_ping = lambda data: woken.append(threading.current_thread())
    runner = threading.Thread(target=dispatcher.run, daemon=True)
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive() and not dispatcher.worker_exceptions
    assert dispatcher.sent == [CommandType.Initialized]
    assert set(woken) == {dispatcher.default_worker, dispatcher.assessor_worker}  # each woken, not timed out


DISPATCHER_MAIN = """
import atexit, sys
from nni.runtime.msg_dispatcher import MsgDispatcher
from nni.runtime.tuner_command_channel import CommandType
from efficientnet.search.costs import estimated_profile
from tuner import EfficientNetTuner

atexit.register(print, "teardown ran")  # registered before the tuner, as torch's and logging's are
tuner = EfficientNetTuner(seed=0, profiler=estimated_profile)
dispatcher = MsgDispatcher("ws://_unittest_", tuner, None)
dispatcher._channel._receive = iter([(CommandType.Terminate, None)]).__next__
dispatcher._channel.disconnect = lambda: None
dispatcher.run()  # in the main thread, as NNI's dispatcher process runs it
print("stopped; prompt stop:", tuner.stops_promptly)  # stdout is a pipe: flushed only at exit
if sys.argv[1] == "raise":
    raise RuntimeError("an error after the stop")
"""


@pytest.mark.parametrize("process, after", [("dispatcher", "returns"), ("dispatcher", "raise"), ("", "returns")])
def test_a_stopped_dispatcher_process_ends_with_its_status_without_the_teardown(root, tmp_path, process, after):
    """After NNI's run() returns from a stop, NNI's dispatcher process skips Python's teardown of torch (NNI's
    manager waits for the process to end): its output and NNI's log are still flushed, an error after the stop
    still exits 1, and a process that is not NNI's dispatcher exits as Python does."""
    import subprocess
    import sys

    env = {**os.environ, "SDK_PROCESS": process, "NNI_TUNER_COMMAND_CHANNEL": "ws://_unittest_",
           "NNI_LOG_DIRECTORY": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", DISPATCHER_MAIN, after], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)
    prompt = process == "dispatcher"
    assert f"stopped; prompt stop: {prompt}" in done.stdout, done.stderr
    if prompt:
        assert "Dispatcher terminiated" in (tmp_path / "dispatcher.log").read_text()  # NNI's spelling
    assert ("teardown ran" in done.stdout) is not prompt
    assert done.returncode == (1 if after == "raise" else 0), done.stderr
    assert ("RuntimeError: an error after the stop" in done.stderr) is (after == "raise")


def test_trials_failing_the_same_way_stop_the_search_once_the_running_ones_end():
    from efficientnet.nni_dispatcher import ExperimentError

    errors = {0: ("a", "FAILED", "error: --num-classes is 3 but"), 1: ("b", "USER_CANCELED", ""),
              2: ("c", "FAILED", "error: --num-classes is 3 but"), 3: ("d", "FAILED", "error: --num-classes is 3 but"),
              4: ("e", "FAILED", "error: --num-classes is 3 but")}
    tuner = EfficientNetTuner(seed=1, profiler=estimated_profile, failure_reader=errors.get)
    tuner.update_search_space(DEFAULT_SPACE)
    for pid in range(5):
        tuner.generate_parameters(pid)
    for pid in (0, 1, 2):  # a cancelled trial is not a failure
        tuner.trial_end(pid, False)
    tuner.trial_end(3, False)  # the third failure: no more proposals, and trial 4 still runs
    assert tuner.first_failures.stopped.startswith("3 trials in a row failed, and none succeeded, with: error: "
                                                   "--num-classes is 3 but (trial.stderr of a, c, d)")
    with pytest.raises(nni.NoMoreTrialError):
        tuner.generate_parameters(5)
    with pytest.raises(ExperimentError, match="3 trials in a row failed"):  # the last running trial ended
        tuner.trial_end(4, False)

    lucky = EfficientNetTuner(seed=1, profiler=estimated_profile, failure_reader=errors.get)
    lucky.update_search_space(DEFAULT_SPACE)
    for pid in range(5):
        lucky.generate_parameters(pid)
    lucky.trial_end(0, False)
    lucky.trial_end(1, True)  # one success: the search goes on whatever fails later
    for pid in (2, 3, 4):
        lucky.trial_end(pid, False)
    assert lucky.first_failures.stopped is None and lucky.generate_parameters(5)
    with pytest.raises(ValueError, match="stop_after_failures must be an integer >= 0"):
        EfficientNetTuner(stop_after_failures=-1)


def test_an_unknown_class_arg_names_the_closest_known_one():
    with pytest.raises(ValueError, match=r"the tuner has no classArg 'max_parms' \(did you mean 'max_params'\?\)$"):
        EfficientNetTuner(max_parms=5e6)
    with pytest.raises(ValueError, match="no classArg 'colour'; its classArgs: base, base_resolution"):
        FixedProductTuner(colour="red")
    assert "5232 candidates" in EfficientNetTuner.check_experiment({"seed": 0}, DEFAULT_SPACE)


def test_imported_pairs_that_disagree_are_left_out():
    """A trial's final result echoes the architecture it trained; an imported record whose proposal names another
    (NNI's pairing under plain nnictl) would teach the tuner a wrong pair."""
    source = EfficientNetTuner(seed=4, profiler=estimated_profile)
    source.update_search_space(DEFAULT_SPACE)
    a, b = source.generate_parameters(0), source.generate_parameters(1)
    records = [{"parameter": a, "value": {"default": 70.0, "arch": a["arch"], "epochs": 3}},
               {"parameter": a, "value": {"default": 90.0, "arch": b["arch"], "epochs": 3}}]  # b's result beside a
    tuner = EfficientNetTuner(seed=4, profiler=estimated_profile)
    tuner.update_search_space(DEFAULT_SPACE)
    tuner.import_data(records)
    assert [r.score for r in tuner.ledger.records.values()] == [70.0]


def test_outside_nnis_dispatcher_the_tuner_leaves_nni_as_it_is(monkeypatch):
    from nni.runtime import msg_dispatcher

    monkeypatch.setattr(msg_dispatcher, "dispatcher_env_vars", msg_dispatcher.dispatcher_env_vars._replace(
        SDK_PROCESS=None, NNI_INCLUDE_INTERMEDIATE_RESULTS=None))
    process_command = msg_dispatcher.MsgDispatcherBase.process_command
    tuner = EfficientNetTuner(seed=5, profiler=estimated_profile)
    assert not tuner.hears_stopped_trials and not tuner.reports_errors and not tuner.stops_promptly
    assert "stopping" not in vars(msg_dispatcher.MsgDispatcherBase)
    assert msg_dispatcher.dispatcher_env_vars.NNI_INCLUDE_INTERMEDIATE_RESULTS is None
    assert msg_dispatcher.MsgDispatcherBase.process_command is process_command
    with pytest.raises(ValueError, match="learn_from_stopped must be true or false"):
        EfficientNetTuner(learn_from_stopped="yes")


def test_a_stopped_trials_result_arriving_after_its_final_one_is_ignored():
    """The assessor may stop a trial at its last epoch while its final result is on its way; if the final result
    reaches the tuner first, the stopped trial's intermediate one must not replace it."""
    tuner = EfficientNetTuner(seed=3, profiler=estimated_profile)
    tuner.update_search_space(DEFAULT_SPACE)
    finished(tuner, 3)
    p = tuner.generate_parameters(3)
    tuner.receive_trial_result(3, p, {"default": 80.0, "epochs": 3})
    tuner.receive_trial_result(3, p, {**INTERMEDIATE, "default": 79.0})
    tuner.trial_end(3, True)
    record = tuner.ledger.of_trial(3)
    assert record.score == 80.0 and record.state == "scored"
    assert not tuner.strategy.observations[record.candidate].partial


def test_the_tuner_module_loads_without_torch():
    """NNI gives a tuner 10 s to connect: torch (and the profiler) load on the first proposal, not at import."""
    import subprocess
    import sys

    code = "import sys, tuner; print('torch' in sys.modules, 'efficientnet.profiler' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_a_stopped_architecture_gets_one_second_chance_and_no_third():
    """A stopped trial may have been stopped wrongly: its architecture may be proposed once more (to be trained to
    the end); stopped again, it is never proposed a third time. The legacy grid (109 points, 65 networks on b0) is
    drained to check."""
    tuner = EfficientNetTuner(seed=0, base="b0", profiler=estimated_profile)
    tuner.update_search_space(LEGACY_SPACE)
    archs, stops = [], 0
    with pytest.raises(nni.NoMoreTrialError):
        for pid in range(300):
            p = tuner.generate_parameters(pid)
            archs.append(p["arch"])
            if p["arch"] == archs[0]:  # the first architecture is stopped early, every time
                stops += 1
                tuner.receive_trial_result(pid, p, {**INTERMEDIATE, "default": 50.0})
                tuner.trial_end(pid, False)
            else:
                tuner.receive_trial_result(pid, p, {"default": 60.0 + (pid % 7), "epochs": 3})
                tuner.trial_end(pid, True)
    networks = {tuner.space.network(tuner.space.at(i)) for i in range(tuner.space.size)}
    assert archs.count(archs[0]) == stops == 2 and len(archs) == 66 and len(set(archs)) == len(networks) == 65
