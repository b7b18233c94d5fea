"""NNI's remote (SSH) training service, against a real OpenSSH server on loopback started by the test.

configs/remote.yml is the template: its machine list is pointed at 127.0.0.1, its trial command at this test's
virtualenv Python (or a bare one) and the model shrunk. The remote machine's shell start-up files are this
machine's, pyenv and all, as on a real remote machine.
"""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nni_harness import experiment, free_port, write_config
from test_e2e_nni import TINY_TRIAL_ARGS, describe, done, tiny_overrides
from trial_process import one_error_line

pytestmark = pytest.mark.e2e

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.fixture
def sshd(tmp_path):
    """An sshd on a free loopback port that accepts one freshly generated key; stopped afterwards."""
    assert Path(SSHD).exists(), "OpenSSH server is missing: run .ci/setup-system (apt-get install openssh-server)"
    d = tmp_path / "ssh"
    d.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-f", d / "host_key", "-N", ""], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-f", d / "id_rsa", "-N", ""], check=True)
    shutil.copy(d / "id_rsa.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PermitRootLogin yes\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nPidFile {d / 'sshd.pid'}\n"
        "Subsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", d / "sshd_config"], stderr=open(d / "sshd.log", "w"))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                 "-i", d / "id_rsa", "-p", str(port), f"{getpass.getuser()}@127.0.0.1", "true"],
                capture_output=True, timeout=20,
            )
            if probe.returncode == 0:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"sshd did not accept the key: {(d / 'sshd.log').read_text()}")
        yield {"port": port, "key": str(d / "id_rsa"), "user": getpass.getuser()}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("python", ["venv", "bare"])
def test_remote_training_service_over_ssh_on_loopback(root, tmp_path, sshd, python):
    """The remote machine runs the project from a virtualenv (this test's own, which is not the system Python):
    four trials, two at a time, each training exactly the proposal NNI records for it; a trial command naming a
    Python without the project fails with one line naming it."""
    venv_bin = Path(sys.executable).parent
    assert (venv_bin.parent / "pyvenv.cfg").is_file(), "run the tests from a virtualenv, as the README says"
    interpreter = Path(sys.executable)
    if python == "bare":
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
        interpreter = tmp_path / "bare" / "bin" / "python"
    trials_wanted = 4 if python == "venv" else 1
    overrides = tiny_overrides(trials_wanted)
    overrides["trialConcurrency"] = 2
    overrides["trialGpuNumber"] = 0
    overrides["nniManagerIp"] = "127.0.0.1"  # the training machine is this one
    overrides["trainingService"] = {
        "platform": "remote",
        "machineList": [
            {"host": "127.0.0.1", "port": sshd["port"], "user": sshd["user"], "sshKeyFile": sshd["key"],
             "pythonPath": str(venv_bin)}
        ],
    }
    config = write_config(root, tmp_path / "exp", overrides, TINY_TRIAL_ARGS, template="configs/remote.yml")
    raw = yaml.safe_load(config.read_text())
    assert raw["trialCommand"].startswith("/home/alice/venv/bin/python main_efficientnet.py")
    raw["trialCommand"] = raw["trialCommand"].replace("/home/alice/venv/bin/python", str(interpreter)) + " --threads 1"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    remote_dirs = []
    try:
        with experiment(config) as exp:
            remote_dirs.append(Path.home() / "nni-experiments" / exp.id)
            assert exp.client.wait(done, timeout=300), describe(exp)
            trials = exp.client.trials()
            assert [t.status for t in trials] == ["SUCCEEDED" if python == "venv" else "FAILED"] * trials_wanted, \
                describe(exp)
            jobs = {job["trialJobId"]: job for job in exp.client.get("/trial-jobs")}
            folders = {t.id: remote_dirs[0] / t.log_path.split("/nni-experiments/" + exp.id + "/", 1)[1]
                       for t in trials}
            results = {t.id: json.loads((folders[t.id] / "result.json").read_text()) for t in trials
                       if python == "venv"}
            stderr = (folders[trials[0].id] / "trial.stderr").read_text()
    finally:
        for d in remote_dirs:
            shutil.rmtree(d, ignore_errors=True)
    if python == "bare":
        assert stderr.strip() == one_error_line(stderr)
        assert f"this Python ({interpreter}) cannot import torch" in stderr
        return
    for t in trials:  # NNI's record of each trial is what it trained and reported
        assert t.log_path.startswith("127.0.0.1:")
        recorded = json.loads(jobs[t.id]["hyperParameters"][0])
        assert results[t.id]["proposal"] == recorded["parameters"] == t.parameters
        assert t.final["arch"] == t.parameters["arch"] and t.final["params"] == t.parameters["params"]
        assert [int(m["parameterId"]) for m in jobs[t.id]["finalMetricData"]] == [recorded["parameter_id"]]
        assert t.intermediate and "default" in t.intermediate[0]
    assert len({t.parameters["arch"] for t in trials}) == 4
