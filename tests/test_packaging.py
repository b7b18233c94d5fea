"""What the install puts into the environment: the efficientnet package and its command, with torch kept when it is
in the supported range; no generic top-level modules (tuner, utils, main_efficientnet) on everyone's sys.path."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_only_the_efficientnet_package(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info/ next to the sources
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [wheel] = tmp_path.glob("efficientnet_nni-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"efficientnet", next(n for n in top if n.endswith(".dist-info"))}, sorted(top)
    assert "efficientnet/nni_guard.js" in names  # the launcher's preload ships with the package


def test_the_projects_scripts_are_not_importable_outside_the_project(tmp_path):
    code = "import importlib.util as u; print([m for m in ('tuner', 'utils', 'main_efficientnet') if u.find_spec(m)])"
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    found = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert found.stdout.strip() == "['tuner', 'utils', 'main_efficientnet']"  # from the project folder, as NNI runs them


def test_reinstalling_keeps_the_torch_in_the_environment(tmp_path):
    """pip's own resolution of the README's install in this environment: the torch and torchvision already here (in
    the supported range) stay; a pin would replace a user's CUDA build with another one. A machine-wide pip
    constraint (``global.constraint`` in pip's configuration, an administrator's cap) is lifted: the test is about
    what the project requires."""
    import json
    import os

    report = tmp_path / "report.json"
    no_constraints = tmp_path / "constraints.txt"
    no_constraints.write_text("")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "-q",
                           "--report", str(report), "-e", str(ROOT)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PIP_CONSTRAINT": str(no_constraints)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    would_install = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert not would_install & {"torch", "torchvision", "nni"}, would_install
    from importlib.metadata import requires

    deps = [d.replace(" ", "") for d in requires("efficientnet-nni")]
    assert "torch<2.16,>=2.6" in deps and "torchvision<0.30,>=0.21" in deps, deps  # exact versions: .ci/constraints.txt
