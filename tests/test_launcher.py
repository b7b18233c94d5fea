"""``python -m efficientnet create``: every check before an experiment starts, and what NNI's manager and
dispatcher do with an error once one runs (real nnictl experiments on loopback for the latter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from efficientnet.cli import main
from efficientnet.launcher import GUARD_JS, bind_addresses, guard_environment
from nni_harness import dispatcher_log, experiment, free_port, kill_manager, nnictl, processes, write_config
from test_e2e_nni import TINY_TRIAL_ARGS, describe, done, tiny_overrides
from trial_process import one_error_line

BAD_SPACE = {"alpha": {"_type": "quniform", "_value": [3.0, 3.5, 0.05]},
             "beta": {"_type": "quniform", "_value": [1.0, 1.5, 0.05]},
             "gamma": {"_type": "quniform", "_value": [1.0, 1.5, 0.05]}}


def config_with(root: Path, tmp_path: Path, class_args: dict | None = None, trial_args: str = TINY_TRIAL_ARGS,
                space: dict | None = None) -> Path:
    overrides = tiny_overrides(2, **(class_args or {}))
    if space is not None:
        (tmp_path / "space.json").write_text(json.dumps(space))
        overrides["searchSpaceFile"] = str(tmp_path / "space.json")
    return write_config(root, tmp_path / "exp", overrides, trial_args)


@pytest.mark.parametrize("case, expected", [
    ("space", "tuner: no grid point of alpha/beta/gamma meets alpha*beta^2*gamma^2 = 2.0 ± 0.1"),
    ("value", "tuner: classArg max_params must be a positive number or null, got 'lots'"),
    ("typo", "tuner: the tuner has no classArg 'max_parms' (did you mean 'max_params'?)"),
    ("strategy", "tuner: classArg strategy 'bayes' is unknown: use one of"),
    ("data", "trialCommand: --data /nonexistent/dataset does not exist on this machine"),
    ("layout", "trialCommand: dataset {tmp}/photos has only one class (images); a classifier needs at least two "
               "class folders: pass --data {tmp}/photos/images if its sub-folders are the classes"),
    ("classes", "trialCommand: --num-classes is 3 but {tmp}/photos/images has 2 class folders (cat, dog)"),
    ("tuner_classes", "tuner: classArg num_classes is 10 but --data {tmp}/photos/images has 2 class folders; set "
                      "num_classes: 2"),
    ("csv_labels", "tuner: classArg num_classes is 10 but --data {tmp}/photos/labels.csv has 2 labels; set "
                   "num_classes: 2"),
    ("csv_images", "trialCommand: no column of labels.csv names image files under {tmp}/photos (columns: image, "
                   "label; first row: cat1.jpg, cat); put the CSV in the folder that holds the images"),
    ("flag", "trialCommand: --epochs must be at least 1, got 0"),
    ("nni", "config.yml: "),
    ("assessor", "assessor: classArg min_epochs must be an integer >= 2, got 1"),
    ("share", "trialCommand: maxTrialNumberPerGpu is 4 but the trial command says --trials-per-gpu 1; "
              "add --trials-per-gpu 4"),
    ("busy", "trainingService: maxTrialNumberPerGpu is 4 but useActiveGpu is false, so NNI counts a GPU that runs "
             "a trial as taken and never starts a second trial there; set useActiveGpu: true"),
])
def test_bad_input_is_one_line_before_anything_starts(root, tmp_path, capsys, case, expected):
    class_args = {"value": {"max_params": "lots"}, "typo": {"max_parms": 5_000_000},
                  "strategy": {"strategy": "bayes"}}.get(case)
    trial_args = {"data": "--data /nonexistent/dataset", "flag": "--epochs 0",
                  "busy": f"{TINY_TRIAL_ARGS} --trials-per-gpu 4"}.get(case, TINY_TRIAL_ARGS)
    if case in ("layout", "classes", "tuner_classes"):  # the data folder's layout: one level too high, or a class
        for name in ("cat", "dog"):  # count unlike the trial's --num-classes or the tuner's (config.yml's 10)
            (tmp_path / "photos" / "images" / name).mkdir(parents=True)
        data = tmp_path / "photos" / {"layout": "", "classes": "images --num-classes 3"}.get(case, "images")
        trial_args = f"{TINY_TRIAL_ARGS} --data {data}"  # after config.yml's --data digits: it wins
    if case in ("csv_labels", "csv_images"):  # a label CSV: the tuner's 10 classes against its 2 labels, or a
        (tmp_path / "photos").mkdir()  # table whose images are elsewhere (files are found, not opened, here)
        for name in ("cat1.jpg", "dog1.jpg"):
            if case == "csv_labels":
                (tmp_path / "photos" / name).write_bytes(b"")
        (tmp_path / "photos" / "labels.csv").write_text("image,label\ncat1.jpg,cat\ndog1.jpg,dog\n")
        trial_args = f"{TINY_TRIAL_ARGS} --data {tmp_path / 'photos' / 'labels.csv'}"
    config = config_with(root, tmp_path, class_args, trial_args, BAD_SPACE if case == "space" else None)
    if case in ("nni", "assessor", "share", "busy"):
        raw = yaml.safe_load(config.read_text())
        if case == "nni":  # NNI's own validation of the config comes first
            raw["trialConcurrency"] = -1
        elif case in ("share", "busy"):  # four trials per GPU; "share": each trial would check its memory against
            # a whole GPU; "busy": NNI would place one trial per GPU
            raw["trialGpuNumber"] = 1
            raw["trainingService"] = {**raw.get("trainingService", {}), "platform": "local",
                                      "useActiveGpu": case == "share", "maxTrialNumberPerGpu": 4}
        else:  # this project's CurveAssessor, built with its classArgs before the start
            raw["assessor"] = {"codeDirectory": str(root), "className": "efficientnet.search.assessor.CurveAssessor",
                               "classArgs": {"min_epochs": 1}}
        config.write_text(yaml.safe_dump(raw))
    before = set((tmp_path / "exp").iterdir())
    assert main(["create", "--config", str(config), "--port", str(free_port())]) == 2
    out, err = capsys.readouterr()
    line = one_error_line(err)
    assert line.startswith(f"error: {config}: ") and expected.format(tmp=tmp_path) in line, line
    assert set((tmp_path / "exp").iterdir()) == before  # no experiment folder: nothing started


def test_a_local_experiments_trial_script_is_found_for_its_warm_starts(root, tmp_path):
    from efficientnet.launcher import load_config, local_trial_script

    config = load_config(config_with(root, tmp_path))
    assert local_trial_script(config) == root / "main_efficientnet.py"
    raw = yaml.safe_load((tmp_path / "exp" / "config.yml").read_text())
    raw["trialCommand"] = "python bench/trivial_trial.py"
    (tmp_path / "other.yml").write_text(yaml.safe_dump(raw))
    assert local_trial_script(load_config(tmp_path / "other.yml")) is None


def test_check_only_accepts_every_shipped_config(root, capsys, tmp_path, monkeypatch):
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa").write_text("")  # NNI checks that the remote config's key file exists
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("config.yml", "configs/remote.yml", "configs/kubeflow.yml", "configs/frameworkcontroller.yml"):
        assert main(["create", "--config", str(root / name), "--check-only"]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert f"{root / name}: OK" in out and "checked: tuner EfficientNetTuner (bo)" in out


def test_bind_addresses_and_the_guards_environment():
    assert bind_addresses([], None) == ["127.0.0.1", "::1"]
    assert bind_addresses([], "10.0.0.5") == ["127.0.0.1", "::1", "10.0.0.5"]  # remote workers reach nniManagerIp
    assert bind_addresses(["192.168.1.2"], "127.0.0.1") == ["127.0.0.1", "::1", "192.168.1.2"]
    assert bind_addresses(["0.0.0.0"], "10.0.0.5") == ["0.0.0.0"]  # the opt-out: every interface, as plain NNI
    env = guard_environment(["127.0.0.1", "::1"], {"NODE_OPTIONS": "--max-http-header-size=80000"})
    assert env["NODE_OPTIONS"] == f'--max-http-header-size=80000 --require "{GUARD_JS}"'
    assert env["EFFICIENTNET_NNI_BIND"] == "127.0.0.1,::1"
    assert guard_environment(["127.0.0.1"], env)["NODE_OPTIONS"] == env["NODE_OPTIONS"]  # not twice


def in_nni_node(script: str, **env: str):
    """Run ``script`` in NNI's own node with NNI's modules on its path (``require('core/...')``); the JSON value of
    its last line of output (the test fails if the script does)."""
    import nni_node

    folder = Path(nni_node.__path__[0])
    done = subprocess.run([str(folder / "node"), "-e", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NODE_PATH": str(folder), **env}, cwd=folder)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_guard_serves_only_files_inside_a_trials_folder():
    """nni_guard.js's own rule for /trial-file/<trial>/<name>, run by NNI's node."""
    cases = {("Gf3rN", "trial.log"): None, ("Gf3rN", "sub/model.onnx"): None, ("Gf3rN", "a/../b.txt"): None,
             ("Gf3rN", "../../../etc/hostname"): "outside", ("Gf3rN", "/etc/hostname"): "outside",
             ("Gf3rN", "a/../../x"): "outside", ("Gf3rN", ".."): "outside", ("Gf3rN", "..\\x"): "bad file name",
             ("..", "trial.log"): "no trial", ("../../x", "trial.log"): "no trial", ("Gf3rN", ""): "bad file name"}
    script = (f"const g = require({json.dumps(str(GUARD_JS))}); const cases = {json.dumps([list(k) for k in cases])};"
              "console.log(JSON.stringify(cases.map(([t, f]) => g.trialFileProblem(t, f) || null)))")
    for (key, expected), problem in zip(cases.items(), in_nni_node(script)):
        assert (problem is None) if expected is None else (expected in problem), (key, problem)


def test_the_guard_lets_a_trial_have_every_gpu_of_the_machine(tmp_path):
    """NNI's own GPU scheduler (with its own unit-test hook for the GPUs it sees) refuses a trial that asks for as
    many GPUs as the machine has, so with one GPU and trialGpuNumber 1 no trial ever started; the guard's patch lets
    it have them, one trial at a time, and leaves shared GPUs (a fraction per trial) to NNI, except that a shared GPU
    no trial may use now is a refusal where NNI threw a TypeError. A refusal returns after a second, letting the
    manager's other work run (NNI asks again at once, in a loop), and callers share one running GPU collector."""
    script = f"""
    require('common/globals/unittest').resetGlobals();
    const s = require('common/trial_keeper/task_scheduler/scheduler');
    const guard = require({json.dumps(str(GUARD_JS))});
    const gpus = n => ({{success: true, gpuNumber: n, processes: [],
        gpus: [...Array(n).keys()].map(index => ({{index, gpuCoreUtilization: 0, gpuMemoryUtilization: 0}}))}});
    const env = e => e && e.CUDA_VISIBLE_DEVICES;
    (async () => {{
        const out = {{}};
        s.UnitTestHelpers.mockGpuInfo({{...gpus(1), processes: [{{gpuIndex: 0, type: 'compute', pid: 1}}]}});
        let t = new s.TaskScheduler(); await t.init();
        out.nniShared = await t.schedule('exp', 'a', 0.5, {{rejectActive: true}}).then(String, e => e.name);
        s.UnitTestHelpers.mockGpuInfo(gpus(1));
        t = new s.TaskScheduler(); await t.init();
        out.nni = env(await t.schedule('exp', 'a', 1, {{}}));
        const status = {{patched: {{}}}};
        guard.patchScheduler(s, status);
        out.patched = status.patched.gpus;
        t = new s.TaskScheduler(); await t.init();
        out.first = env(await t.schedule('exp', 'a', 1, {{}}));
        let ticked = false;
        setTimeout(() => {{ ticked = true; }}, 0);
        const asked = Date.now();
        out.second = env(await t.schedule('exp', 'b', 1, {{}}));  // the GPU is taken
        out.waited = [Date.now() - asked, ticked];  // NNI asks again at once: the refusal waits, yielding
        await t.release('exp', 'a');
        out.after = env(await t.schedule('exp', 'c', 1, {{}}));
        out.onlyOthers = env(await t.schedule('exp', 'd', 1, {{onlyUseIndices: [1]}}));
        t = new s.TaskScheduler(); await t.init();
        out.half = [env(await t.schedule('exp', 'e', 0.5, {{}})), env(await t.schedule('exp', 'f', 0.5, {{}})),
                    env(await t.schedule('exp', 'g', 0.5, {{}}))];
        s.UnitTestHelpers.mockGpuInfo(gpus(2));
        t = new s.TaskScheduler(); await t.init();
        out.both = env(await t.schedule('exp', 'h', 2, {{}}));
        t = new s.TaskScheduler(); await t.init();
        out.one = [env(await t.schedule('exp', 'i', 1, {{}})), env(await t.schedule('exp', 'j', 1, {{}}))];
        const busy = {{...gpus(1), processes: [{{gpuIndex: 0, type: 'compute', pid: 1}}]}};  // a process on it
        s.UnitTestHelpers.mockGpuInfo(busy);
        t = new s.TaskScheduler(); await t.init();
        const refused = Date.now();
        out.busyShared = [env(await t.schedule('exp', 'k', 0.5, {{rejectActive: true}})), Date.now() - refused];
        let calls = 0;  // NNI's collector started a process per call; patched, callers share the running one
        const info = {{collectGpuInfo: () => new Promise(resolve => setTimeout(() => resolve(++calls), 50))}};
        guard.patchGpuInfo(info, status);
        out.collector = [await Promise.all([info.collectGpuInfo(), info.collectGpuInfo(true)]),
                         await info.collectGpuInfo(), calls, status.patched.gpuInfo];
        console.log(JSON.stringify(out));
    }})();
    """
    out = in_nni_node(script, HOME=str(tmp_path))
    assert out["nni"] is None, "NNI's scheduler now gives a trial every GPU: drop nni_guard.js's fix 5"
    assert out["nniShared"] == "TypeError", out  # NNI: a shared GPU that is active (useActiveGpu false) crashes it
    assert out["busyShared"][0] is None and out["busyShared"][1] >= 900, out  # patched: a wait
    assert out["patched"] is True
    assert (out["first"], out["second"], out["after"], out["onlyOthers"]) == ("0", None, "0", None), out
    assert out["waited"][0] >= 900 and out["waited"][1] is True, out
    assert out["half"] == ["0", "0", None], out  # two trials per GPU, as NNI schedules them
    assert out["both"] == "0,1" and out["one"] == ["0", "1"], out
    assert out["collector"] == [[1, 1], 2, 2, True], out


def test_the_guard_waits_for_the_tuner_while_its_process_lives():
    """NNI's own tuner server gives the tuner (NNI's dispatcher) 10 s to connect, then fails the experiment; a
    loaded machine reaches that (the dispatcher imports torch and builds the tuner). And a command for the tuner
    before it connects (nnictl update, a stop) is a TypeError. Patched: the server waits as long as the tuner's
    process lives (here with NNI's timers firing at once, as if 10 s had passed), ends the wait as soon as that
    process ends, and still has a limit for a process that never connects; a command waits for the connection and
    goes after the manager's first one, and a stop ends the tuner's process, leaving no error behind."""
    script = f"""
    require('common/globals/unittest').resetGlobals();
    const realTimeout = setTimeout;
    const channel = require('core/tuner_command_channel');
    const guard = require({json.dumps(str(GUARD_JS))});
    const {{spawn}} = require('child_process');
    const outcome = p => p.then(() => 'connected', e => e.message);
    const timed = async p => {{ const t = Date.now(); const r = await outcome(p); return [r, Date.now() - t]; }};
    const pause = ms => new Promise(resolve => realTimeout(resolve, ms));
    const server = pid => {{
        channel.UnitTestHelpers.reset();
        const s = channel.getTunerServer();
        if (pid !== undefined) guard.watchDispatcher(s, pid);
        return s;
    }};
    const sent = [];
    const connect = s => {{  // what NNI's websocket server does when the tuner connects
        s.channel = {{send: c => sent.push(c.type + ':' + c.content), getBufferedAmount: () => 0, close() {{}}}};
        s.connect.resolve();
    }};
    (async () => {{
        const out = {{}};
        const limits = [];
        global.setTimeout = (f, ms, ...a) => {{ limits.push(ms); return realTimeout(f, 0, ...a); }};
        out.nni = [(await timed(channel.getTunerServer().init()))[0], limits];
        try {{ server().sendCommand('SS', '{{}}'); out.nniEarly = 'sent'; }} catch (e) {{ out.nniEarly = e.name; }}
        const status = {{patched: {{}}}};
        guard.patchTunerStart(channel, status, {{log: 'LOG', limitS: 0.5, pollMs: 20}});
        out.patched = status.patched.tuner;
        const tuner = spawn('sleep', ['60']);
        let s = server(tuner.pid);
        realTimeout(() => connect(s), 300);
        out.late = await timed(s.init());
        global.setTimeout = realTimeout;
        out.hung = await timed(server(tuner.pid).init());
        tuner.kill();
        out.dead = await timed(server(spawn('sleep', ['0.2']).pid).init());
        s = server(spawn('sleep', ['60']).pid);
        const run = s.init().then(() => s.sendCommand('IN', 'first'));  // NNIManager.run's order
        s.sendCommand('SS', 'update');  // nnictl update searchspace while the tuner starts
        await pause(100);
        connect(s);
        await run;
        await pause(50);
        out.order = sent;
        const stopped = spawn('sleep 60; true', {{shell: true}});  // as NNI starts the tuner: a shell, Python under it
        const ended = new Promise(resolve => stopped.on('exit', (code, signal) => resolve(signal)));
        s = server(stopped.pid);
        let settled = 'pending';
        s.init().then(() => {{ settled = 'connected'; }}, e => {{ settled = e.message; }});
        await pause(200);
        const under = require('fs').readFileSync(`/proc/${{stopped.pid}}/task/${{stopped.pid}}/children`, 'utf8').trim();
        s.sendCommand('TE', '');  // nnictl stop while the tuner starts
        out.stop = [await ended, under !== ''];
        await pause(300);
        let alive = false;  // a zombie (ended, not yet reaped by init) counts as ended
        try {{ alive = !/\\) Z /.test(require('fs').readFileSync(`/proc/${{under}}/stat`, 'utf8')); }} catch (e) {{ }}
        out.stop.push(alive, settled);
        console.log(JSON.stringify(out));
        process.exit(0);
    }})();
    """
    out = in_nni_node(script)
    assert out["nni"] == ["tuner_command_channel: Tuner did not connect in 10 seconds. Please check tuner "
                          "(dispatcher) log.", [10000]], "NNI's wait for the tuner changed: revisit nni_guard.js's fix 6"
    assert out["nniEarly"] == "TypeError", "NNI now sends early commands itself: revisit nni_guard.js's fix 6"
    assert out["patched"] is True
    assert out["late"][0] == "connected" and out["late"][1] >= 290, out
    assert out["hung"][0] == "tuner_command_channel: the tuner did not connect in 0.5 s, though its process runs: " \
                             "see LOG" and out["hung"][1] >= 490, out
    assert out["dead"][0] == "tuner_command_channel: the tuner's process (NNI's dispatcher) ended before it " \
                             "connected: its error is in LOG" and out["dead"][1] < 450, out  # not at the limit
    assert out["order"] == ["IN:first", "SS:update"], out
    assert out["stop"] == ["SIGTERM", True, False, "pending"], out  # the shell and its child ended; no error


def on_python_path(folder: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (this environment by default) with ``folder`` first on PYTHONPATH: every Python process started in it
    (NNI's dispatcher and GPU collector among them) imports the fixture modules there first."""
    base = dict(os.environ if base is None else base)
    return {**base, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), base.get("PYTHONPATH")]))}


COLLECTOR = "nni.tools.nni_manager_scripts.collect_gpu_info"  # NNI's GPU collector, run as python -m


@pytest.mark.e2e
def test_on_a_one_gpu_machine_trials_take_turns_on_the_gpu(root, tmp_path):
    """NNI's real manager and GPU scheduler, shown one idle GPU (tests/fixtures/one_gpu answers the NVML calls of
    NNI's GPU collector), trialGpuNumber 1 and two trials at a time: every trial runs, one at a time, while the
    other waits. Plain NNI 3.0 ran none ("Only have 1 GPUs, requesting 1"), and its wait for a GPU spun without
    yielding: the REST server stopped answering and GPU collectors piled up until memory ran out. So plain nnictl is
    not run here; tests/test_launcher.py's scheduler test shows NNI's refusal on NNI's own code."""
    env = on_python_path(root / "tests" / "fixtures" / "one_gpu")
    overrides = {**tiny_overrides(3), "trialConcurrency": 2, "trialGpuNumber": 1,
                 "trainingService": {"platform": "local", "useActiveGpu": True}}
    config = write_config(root, tmp_path / "exp", overrides, trial_args=TINY_TRIAL_ARGS)
    collectors = []  # how many of NNI's GPU collector processes ran, at each look

    def watched(client) -> bool:
        collectors.append(len(processes(lambda args: COLLECTOR in " ".join(args))))
        if collectors[-1] > 2:  # the manager's one, and the trial keeper's platform check as it starts
            raise AssertionError(f"{collectors[-1]} GPU collectors at once: the wait for a GPU spins")
        return done(client)

    with experiment(config, env=env) as exp:
        assert exp.client.wait(watched, timeout=300, interval=0.5), describe(exp)
        trials = exp.client.trials()
        jobs = sorted(exp.client.get("/trial-jobs"), key=lambda j: j["startTime"])
        log = (exp.workdir / exp.id / "log" / "nnimanager.log").read_text(errors="replace")
    assert [t.status for t in trials] == ["SUCCEEDED"] * 3, describe(exp, trials)
    spans = [(j["startTime"], j["endTime"]) for j in jobs]
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans  # one at a time
    assert "Only have 1 GPUs" not in log and "Scheduling failed because the GPU constraint" in log  # one waited


@pytest.mark.e2e
def test_a_tuner_error_in_a_running_experiment_ends_it_with_its_line(root, tmp_path):
    """A search space the tuner cannot use, sent to a running experiment (nnictl update searchspace): the
    experiment turns to ERROR and shows the tuner's line (NNI alone kept it RUNNING, with a dead tuner). As on a
    loaded machine, its manager starts 6 s late, which plain nnictl gives up on, and its tuner connects 12 s after
    the manager started it, where plain NNI ends the experiment after 10 s (see
    test_the_guard_waits_for_the_tuner_while_its_process_lives): the launcher and the guard wait for both."""
    (tmp_path / "bad.json").write_text(json.dumps(BAD_SPACE))
    config = config_with(root, tmp_path, trial_args="--epochs 1 --subset 0.1")
    with experiment(config, env=slow_tuner(root, slow_manager(root))) as exp:
        assert exp.client.wait(lambda c: c.status() == "ERROR" or c.trials(), timeout=120), describe(exp)
        assert exp.client.get("/check-status")["errors"] == [], describe(exp)  # the slow tuner's first trial
        update = nnictl("update", "searchspace", exp.id, "--filename", str(tmp_path / "bad.json"), timeout=60)
        assert update.returncode == 0, update.stdout + update.stderr
        assert exp.client.wait(lambda c: c.status() == "ERROR", timeout=60), describe(exp)
        errors = exp.client.get("/check-status")["errors"]
        log = dispatcher_log(exp)
    assert errors == ["tuner error: no grid point of alpha/beta/gamma meets alpha*beta^2*gamma^2 = 2.0 ± 0.1 (the "
                      "grid spans products 3.000 .. 17.719): widen the alpha/beta/gamma ranges, use a finer q, or "
                      "change the classArgs product/tolerance"], errors
    assert "the experiment stops: no grid point" in log


@pytest.mark.e2e
def test_plain_nnictl_with_a_bad_search_space_ends_in_error_instead_of_hanging(root, tmp_path):
    """Without the launcher's checks (plain nnictl, unguarded), the tuner's error still ends the experiment: NNI
    shows its generic message and dispatcher.log the tuner's line; the tuner says it runs unguarded."""
    config = config_with(root, tmp_path, space=BAD_SPACE)
    with experiment(config, plain=True) as exp:
        assert exp.client.wait(lambda c: c.status() == "ERROR", timeout=60), describe(exp)
        errors = exp.client.get("/check-status")["errors"]
        trials = exp.client.trials()
        log = dispatcher_log(exp)
    assert errors == ["Dispatcher stream error, tuner may have crashed."] and trials == []
    assert "the experiment stops: no grid point of alpha/beta/gamma meets" in log
    assert "NNI's manager runs without this project's fixes (started by plain nnictl)" in log


def slow_manager(root: Path, **env: str) -> dict[str, str]:
    """This environment with NNI's manager starting 6 s late (tests/fixtures/slow_manager.js), as on a loaded
    machine; ``env`` adds to it (SLOW_MANAGER_MS, SLOW_MANAGER_EXIT)."""
    return {**os.environ, "NODE_OPTIONS": f'--require "{root / "tests" / "fixtures" / "slow_manager.js"}"', **env}


@pytest.mark.e2e
def test_plain_nnictl_gives_up_on_a_manager_slower_than_3_s(root, tmp_path):
    """nnictl gives NNI's manager 3 s to answer, then kills it ("Create experiment failed: ..."; a manager that is up
    but not yet set up answers INITIALIZING, which is not JSON). The launcher waits for it: its experiments in
    test_a_tuner_error_in_a_running_experiment_ends_it_with_its_line start with this slow manager."""
    port = free_port()
    try:
        plain = nnictl("create", "--config", str(config_with(root, tmp_path)), "--port", str(port),
                       env=slow_manager(root), timeout=120)
    finally:
        kill_manager(port=port)  # nnictl kills the manager it gave up on; this makes sure
    assert plain.returncode != 0 and "Create experiment failed" in plain.stdout + plain.stderr, \
        "plain nnictl now waits for a slow manager: the launcher's wait (patient_manager_start) may be moot"


@pytest.mark.e2e
def test_a_manager_that_dies_at_start_is_one_error_line(root, tmp_path):
    """The launcher waits for a slow manager, not for a dead one: NNI's log says what failed, then one error line
    and exit status 1, with no traceback."""
    dead = slow_manager(root, SLOW_MANAGER_MS="0", SLOW_MANAGER_EXIT="3")
    proc = nnictl("create", "--config", str(config_with(root, tmp_path)), "--port", str(free_port()), env=dead,
                  launcher=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Create experiment failed" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert one_error_line(proc.stderr).startswith("error: nnictl create failed: ConnectionError: "), proc.stderr


def slow_tuner(root: Path, base: dict[str, str] | None = None, **env: str) -> dict[str, str]:
    """``base`` (this environment by default) with NNI's dispatcher (the tuner's process) starting 12 s late
    (tests/fixtures/slow_tuner/sitecustomize.py), as on a loaded machine; ``env`` adds to it (SLOW_TUNER_S,
    SLOW_TUNER_EXIT)."""
    return {**on_python_path(root / "tests" / "fixtures" / "slow_tuner", base), **env}


@pytest.mark.e2e
def test_a_tuner_that_dies_at_start_ends_the_experiment_with_where_to_look(root, tmp_path):
    """A tuner whose process ends before it connects: the experiment is in ERROR as soon as that is seen, and says
    where its error is, instead of NNI's 10 s wait and "did not connect"."""
    with experiment(config_with(root, tmp_path), env=slow_tuner(root, SLOW_TUNER_EXIT="3")) as exp:
        assert exp.client.wait(lambda c: c.status() == "ERROR", timeout=60), describe(exp)
        errors = exp.client.get("/check-status")["errors"]
    assert errors == ["tuner_command_channel: the tuner's process (NNI's dispatcher) ended before it connected: its "
                      f"error is in {exp.workdir / exp.id / 'log' / 'dispatcher.log'}"], errors


def tuner_processes(experiment_id: str) -> list[int]:
    """The pids of this experiment's tuner (NNI's dispatcher, ``python -m nni``; its environment names the
    experiment's log folder)."""
    def mine(pid: int) -> bool:
        try:
            return f"/{experiment_id}/log" in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        except OSError:
            return False
    return [pid for pid in processes(lambda args: args[1:3] == ["-m", "nni"]) if mine(pid)]


def running(pid: int) -> bool:
    """Whether the process runs (a zombie, ended but not yet reaped by its parent or init, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.e2e
def test_a_stop_while_the_tuner_starts_ends_it_and_the_create_waiting_for_it(root, tmp_path):
    """``nnictl stop`` while the tuner is still starting, and ``python -m efficientnet create`` waits for the first
    trial. NNI's stop sent the tuner a command with no channel to send it on (a TypeError in nnimanager.log), so it
    never ended the tuner's process; guarded, that process ends with the stop, the manager logs no error, and the
    waiting create returns at once with one line."""
    port = free_port()
    create = subprocess.Popen([sys.executable, "-m", "efficientnet", "create", "--config",
                               str(config_with(root, tmp_path)), "--port", str(port)],
                              env=slow_tuner(root, SLOW_TUNER_S="120"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        from efficientnet.nni_rest import NNIClient

        client = NNIClient(port)
        assert client.wait(lambda c: c.status() == "RUNNING", timeout=90, interval=0.5), create.poll()
        experiment_id = client.get("/experiment")["id"]
        deadline = time.monotonic() + 30
        while not (tuners := tuner_processes(experiment_id)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert tuners, "the tuner's process did not start"
        stop = nnictl("stop", experiment_id, timeout=60)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        _, stderr = create.communicate(timeout=30)
        time.sleep(0.5)
        left = [pid for pid in tuners if running(pid)]
    finally:
        if create.poll() is None:
            create.kill()
        kill_manager(port=port)
    log = (tmp_path / "exp" / experiment_id / "log" / "nnimanager.log").read_text(errors="replace")
    assert left == [], "the tuner's process outlived the stop"
    assert "Error during shutting down" not in log and "Experiment stopped." in log, log[-2000:]
    assert create.returncode == 1
    assert one_error_line(stderr) == (f"error: experiment {experiment_id} stopped: its manager stopped before the "
                                      "first trial (nnictl stop, or a failure: see its log/nnimanager.log); nothing "
                                      f"listens on port {port} any more"), stderr
