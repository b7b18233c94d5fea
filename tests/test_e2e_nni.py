"""End to end: real NNI experiments on a free loopback port, started as the README starts them
(``python -m efficientnet create``), read back through NNI's REST API.

The experiments use the project's own config.yml, search_space.json, tuner and trial script, shrunk to a tiny
model (width 0.15 of Lite0, 32 px, one epoch on a subset of the digits demo) so that the whole module stays within
a few minutes on two cores. Every experiment is stopped in a ``finally`` block, and every wait is bounded.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from efficientnet import ArchSpec, preset
from nni_harness import dispatcher_log, experiment, nnictl, resume, stop, write_config
from spaces import TWO_NETWORKS

pytestmark = pytest.mark.e2e

TINY_BASE = str(preset("lite0").replace(width=0.15, depth=0.5, resolution=32))
TINY_TRIAL_ARGS = "--epochs 1 --subset 0.5"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def tiny_overrides(max_trials: int, **class_args) -> dict:
    return {
        "maxTrialNumber": max_trials,
        "trialConcurrency": 2,
        "maxExperimentDuration": "10m",
        "tuner": {"classArgs": {"base": TINY_BASE, "base_resolution": 32, "seed": 7, **class_args}},
    }


def finished(n: int):
    return lambda c: sum(t.status in ("SUCCEEDED", "FAILED") for t in c.trials()) >= n


def done(c) -> bool:
    """The experiment has finished: every trial ended and no more will come (or it broke)."""
    status = c.status()
    if status in ("NO_MORE_TRIAL", "TUNER_NO_MORE_TRIAL"):  # the trial budget is spent, or the tuner has no more
        return not any(t.status in ("WAITING", "RUNNING") for t in c.trials())
    return status in ("DONE", "ERROR", "STOPPED")


def describe(exp, trials=None) -> str:
    """Status, trials and the tail of each failed trial's stderr, for assertion messages; after the experiment has
    stopped (no REST server), the ``trials`` read before."""
    from efficientnet.nni_rest import NNIUnavailable

    try:
        lines = [f"status {exp.client.status()}"]
        trials = exp.client.trials()
    except NNIUnavailable:
        lines = ["(the experiment has stopped)"]
    for t in trials or []:
        lines.append(f"{t.id} {t.status} final={t.final}")
        if t.status == "FAILED" and t.log_path:
            local = t.log_path.split(":", 1)[1] if t.log_path.startswith("127.0.0.1:") else t.log_path  # remote
            err = Path(local) / "trial.stderr"
            if err.exists():
                lines.append(err.read_text(errors="replace")[-1500:])
    return "\n".join(lines)


def chromium_dom(url: str, screenshot: Path) -> str:
    """Render ``url`` in headless Chromium; keep a screenshot; return the DOM after the page's scripts ran."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is missing: run .ci/setup-system (apt-get install chromium)"
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,900",
        "--virtual-time-budget=15000",
    ]
    profile_dir = screenshot.parent / f".chromium-{screenshot.stem}"
    base = [chromium, *flags, f"--user-data-dir={profile_dir}"]
    subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=90)
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=90).stdout
    shutil.rmtree(profile_dir, ignore_errors=True)
    return dom


def trial_commands(raw: dict) -> list[str]:
    """Every trial command of a config: top level, or per Kubernetes role."""
    service = raw["trainingService"]
    roles = [service.get(r) for r in ("worker", "ps", "master")] + service.get("taskRoles", [])
    return [c for c in [raw.get("trialCommand")] + [r["command"] for r in roles if r] if c]


@pytest.mark.parametrize("name", ["config.yml", "configs/kubeflow.yml", "configs/frameworkcontroller.yml"])
def test_configs_are_valid_nni_experiment_configs(root, name):
    from nni.experiment.config import ExperimentConfig

    path = root / name
    config = ExperimentConfig.load(str(path))
    config.validate()
    assert (path.parent / config.search_space_file).resolve() == root / "search_space.json"
    assert (path.parent / config.tuner.code_directory).resolve() == root
    assert config.tuner.class_name == "tuner.EfficientNetTuner"
    assert config.tuner.class_args["product"] == 2.0
    assert config.assessor.name == "Medianstop"
    commands = trial_commands(yaml.safe_load(path.read_text()))
    assert commands and all("main_efficientnet.py" in c and "--request-from-nni" in c for c in commands)


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on ``port``, from the kernel's socket tables."""
    found = set()
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            if family == 4:
                found.add(".".join(str(b) for b in raw[::-1]))
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                found.add(str(ipaddress.IPv6Address(words)))
    return found


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def assert_each_trial_trained_what_nni_records(exp, trials) -> None:
    """NNI's record of every trial (the WebUI's parameters, its parameter id) is what the trial trained and
    reported: result.json's proposal, the final metric's architecture and parameter id."""
    jobs = {job["trialJobId"]: job for job in exp.client.get("/trial-jobs")}
    for t in trials:
        job = jobs[t.id]
        recorded = json.loads(job["hyperParameters"][0])
        result = json.loads((Path(t.log_path) / "result.json").read_text())
        assert result["proposal"] == recorded["parameters"] == t.parameters, t.id
        assert t.final["arch"] == t.parameters["arch"] == result["arch"], t.id
        assert [int(m["parameterId"]) for m in job["finalMetricData"]] == [recorded["parameter_id"]], t.id
    exported = exp.client.get("/export-data")
    assert len(exported) == len(trials)
    for record in exported:  # what nnictl experiment export writes, and nnictl resume hands the tuner
        value = json.loads(record["value"]) if isinstance(record["value"], str) else record["value"]
        value = json.loads(value) if isinstance(value, str) else value
        parameter = json.loads(record["parameter"]) if isinstance(record["parameter"], str) else record["parameter"]
        assert value["arch"] == parameter["arch"], record


def test_concurrent_trials_train_what_nni_shows_nobody_else_can_reach_it_and_it_resumes(root, tmp_path):
    """8 trials at 4 at a time: each trains exactly the proposal NNI records for it (NNI 3.0 alone hands them out
    first come, first served). The port listens on loopback only, trial-file serves nothing outside a trial's
    folder, the WebUI shows the trials, and a resumed experiment's tuner receives only consistent pairs."""
    ARTIFACTS.mkdir(exist_ok=True)
    overrides = tiny_overrides(8)
    overrides["trialConcurrency"] = 4
    config = write_config(root, tmp_path / "exp", overrides, TINY_TRIAL_ARGS + " --subset 0.3")
    class_args = yaml.safe_load(config.read_text())["tuner"]["classArgs"]
    secret = tmp_path / "secret.txt"
    secret.write_text("do-not-serve-this")
    with experiment(config) as exp:
        assert f"WebUI http://127.0.0.1:{exp.port}: only this machine can connect" in exp.created.stdout
        assert listening_addresses(exp.port) <= {"127.0.0.1", "::1"} and "127.0.0.1" in listening_addresses(exp.port)
        assert exp.client.wait(done, timeout=420), describe(exp)
        first = exp.client.trials()
        assert [t.status for t in first] == ["SUCCEEDED"] * 8, describe(exp)
        assert_each_trial_trained_what_nni_records(exp, first)

        # trial-file: a file of the trial is served, nothing outside its folder is
        trial = first[0]
        up = "..%2F" * len(Path(trial.log_path).relative_to(tmp_path).parts)
        base = f"http://127.0.0.1:{exp.port}/api/v1/nni/trial-file"
        assert http_get(f"{base}/{trial.id}/trial.log")[0] == 200
        for path in (f"{trial.id}/{up}secret.txt", f"{trial.id}/{'%2F'.join(str(secret).split('/'))}",
                     f"{up}{'..%2F' * 3}/secret.txt", f"{trial.id}/..%2F{trial.id}%2F{up}secret.txt"):
            status, body = http_get(f"{base}/{path}")
            assert status == 404 and b"do-not-serve-this" not in body, (path, status, body[:200])

        # The WebUI shows the trials and their default metric.
        best = max(first, key=lambda t: t.default)
        dom = chromium_dom(f"http://127.0.0.1:{exp.port}/oview", ARTIFACTS / "webui-overview.png")
        assert best.id in dom and f"{best.default:.6f}"[:4] in dom, dom[:2000]
        detail = chromium_dom(f"http://127.0.0.1:{exp.port}/detail", ARTIFACTS / "webui-trials.png")
        assert all(t.id in detail for t in first)
        assert (ARTIFACTS / "webui-overview.png").stat().st_size > 10_000

        # Stop, resume, ask for two more trials: the tuner imports 8 consistent pairs and repeats no proposal.
        stop(exp)
        resume(exp)
        assert listening_addresses(exp.port) <= {"127.0.0.1", "::1"}
        update = nnictl("update", "trialnum", exp.id, "--value", "10", timeout=60)
        assert update.returncode == 0, update.stdout + update.stderr
        assert exp.client.wait(lambda c: done(c) and finished(10)(c), timeout=300), describe(exp)
        trials = exp.client.trials()
        assert [t.status for t in trials] == ["SUCCEEDED"] * 10, describe(exp)
        assert_each_trial_trained_what_nni_records(exp, trials)
        log = dispatcher_log(exp)

    assert "imported 8 trials (0 skipped" in log and "were left out" not in log, log[-3000:]
    assert "runs without this project's fixes" not in log
    assert len({t.parameters["arch"] for t in trials}) == 10  # no proposal repeated after the resume
    for t in trials:
        p = t.parameters
        product = p["alpha"] * p["beta"] ** 2 * p["gamma"] ** 2
        assert abs(product - class_args["product"]) <= class_args["tolerance"] + 1e-9, p
        spec = ArchSpec.parse(p["arch"])
        assert spec.compound is not None and spec.compound.alpha == p["alpha"]
        assert isinstance(t.final, dict) and 0 <= t.final["default"] <= 100, t.final
        assert t.final["params"] == p["params"] and t.final["macs"] == p["macs"]
        assert t.final["params"] <= class_args["max_params"] and t.final["macs"] <= class_args["max_macs"]
        assert t.intermediate and all(isinstance(m, dict) and "default" in m for m in t.intermediate)


def test_trials_failing_the_same_way_stop_the_search_with_their_line(root, tmp_path):
    """A trial command that passes every check before the start but fails in every trial (the digits have 10
    classes, not 3): after 3 failures and no success the search stops, and once the trials still running have
    ended, the experiment ends in ERROR with the trials' own line, instead of spending all of maxTrialNumber."""
    overrides = tiny_overrides(12)
    overrides.pop("assessor", None)
    config = write_config(root, tmp_path / "exp", overrides, "--num-classes 3")
    with experiment(config) as exp:
        assert exp.client.wait(lambda c: c.status() == "ERROR", timeout=240), describe(exp)
        status = exp.client.get("/check-status")
        trials = exp.client.trials()  # the trials still running when the search stopped have ended too
    stderr = (Path(trials[0].log_path) / "trial.stderr").read_text()
    assert "error: --num-classes is 3 but" in stderr
    [error] = status["errors"]
    assert error.startswith("tuner error: 3 trials in a row failed, and none succeeded, with: error: --num-classes "
                            "is 3 but"), error
    assert "fix that, then start the experiment again" in error
    # the 3 failures and the few NNI asked for while the tuner read their errors, not all 12 of maxTrialNumber
    assert 3 <= len(trials) < 12 and {t.status for t in trials} == {"FAILED"}, describe(exp, trials)


def replace_section(config: Path, key: str, value) -> None:
    """Replace a whole top-level section of a written config (write_config merges sections instead)."""
    raw = yaml.safe_load(config.read_text())
    raw[key] = value
    config.write_text(yaml.safe_dump(raw, sort_keys=False))


def checkpoint_epoch(trial) -> int:
    """The completed epochs in a trial's checkpoint (its output folder is NNI's trial folder)."""
    from efficientnet.checkpoint import CHECKPOINT_NAME, load_checkpoint

    return load_checkpoint(Path(trial.log_path) / CHECKPOINT_NAME)["epoch"]


def test_an_assessor_stopped_trial_is_early_stopped_keeps_its_checkpoint_and_the_tuner_learns_from_it(root, tmp_path):
    """Every trial is stopped at its first epoch. The search space holds two architectures: the tuner hears each
    stopped trial's last intermediate result (NNI 3.0 passes it on only because the tuner asks), keeps it as a
    partial result instead of a failure, and proposes each architecture once more, continuing its stopped trial's
    checkpoint, for four trials in all; a tuner that took the stops for failures would end the search after two."""
    (tmp_path / "space.json").write_text(json.dumps(TWO_NETWORKS))
    overrides = tiny_overrides(6)
    overrides["trialConcurrency"] = 1
    overrides["searchSpaceFile"] = str(tmp_path / "space.json")
    config = write_config(root, tmp_path / "exp", overrides, "--epochs 30 --subset 0.5")
    replace_section(config, "assessor", {"codeDirectory": str(root / "tests" / "fixtures"),
                                         "className": "stop_assessor.StopAtFirstResult"})
    with experiment(config) as exp:
        assert exp.client.wait(done, timeout=300), describe(exp)
        trials = exp.client.trials()
        log = dispatcher_log(exp)
    # Stopped, not FAILED: the trial ends by NNI's SIGINT. NNI 3.0 records an assessor's stop as USER_CANCELED (its
    # v3 compat layer sets isEarlyStopped only after the trial's end was recorded); the trial cannot change that.
    assert {t.status for t in trials} <= {"EARLY_STOPPED", "USER_CANCELED"}, describe(exp)
    for t in trials:
        assert t.intermediate and t.final is None
        done_epochs = checkpoint_epoch(t)
        assert 1 <= done_epochs < 30
        stderr = (Path(t.log_path) / "trial.stderr").read_text()
        assert f"stopped by SIGINT in epoch {done_epochs + 1}: the checkpoint of epoch {done_epochs} is kept" in stderr
    assert "Traceback" not in log, log[-3000:]
    assert "stopped trials heard (partial results)" in log, log[-3000:]
    # The search went on after every stop: each architecture had its second chance, and no third.
    archs = [t.parameters["arch"] for t in trials]
    assert len(trials) == 4 and len(set(archs)) == 2 and all(archs.count(a) == 2 for a in archs), describe(exp)
    assert log.count("partial result ") == 4 and log.count("kept as a partial one") == 4, log[-3000:]
    assert log.count("second chance for") == 2, log[-3000:]
    # A second chance continues the stopped trial's checkpoint (rerun from epoch 0, it would repeat the same curve)
    by_id = {t.id: t for t in trials}
    for t in trials:
        if archs.index(t.parameters["arch"]) == trials.index(t):
            assert "continue_from" not in t.parameters
            continue
        source = by_id[t.parameters["continue_from"]]
        assert source.parameters["arch"] == t.parameters["arch"]
        trial_log = (Path(t.log_path) / "log.txt").read_text()
        assert f"continuing {Path(source.log_path) / 'checkpoint.pth.tar'} to epoch 30" in trial_log
        assert checkpoint_epoch(t) > checkpoint_epoch(source)


def test_a_cancelled_trial_is_user_canceled_and_nnictl_stop_ends_trials_without_a_traceback(root, tmp_path):
    overrides = tiny_overrides(2)
    overrides["trialConcurrency"] = 1
    overrides.pop("assessor", None)
    config = write_config(root, tmp_path / "exp", overrides, "--epochs 200 --subset 0.5")
    replace_section(config, "assessor", None)
    with experiment(config) as exp:
        reported = lambda c: [t for t in c.trials() if t.status == "RUNNING" and t.intermediate]  # noqa: E731
        assert exp.client.wait(reported, timeout=180), describe(exp)
        first = reported(exp.client)[0]
        exp.client.cancel(first.id)  # the WebUI's kill button
        assert exp.client.wait(lambda c: len(reported(c)) == 1 and reported(c)[0].id != first.id, timeout=180), \
            describe(exp)
        cancelled = next(t for t in exp.client.trials() if t.id == first.id)
        second = reported(exp.client)[0]
        stop(exp)  # nnictl stop: NNI closes the trial's channel, then stops it
    assert cancelled.status == "USER_CANCELED"
    assert checkpoint_epoch(cancelled) >= 1
    assert "stopped by SIGINT in epoch" in (Path(cancelled.log_path) / "trial.stderr").read_text()
    assert checkpoint_epoch(second) >= 1
    stderr = (Path(second.log_path) / "trial.stderr").read_text()
    assert "Traceback" not in stderr and "stopped by SIGINT in epoch" in stderr, stderr[-2000:]
