"""bench/gpu_pack.py: what a bare GPU image gets beside its torch is enough to import what the GPU checks import."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_pack  # noqa: E402


def test_the_pack_holds_what_the_image_lacks_and_nothing_it_must_bring():
    copied = gpu_pack.to_copy()
    # each of these was missing on a GPU image once: NNI's lock needs filelock<3.12, its GPU scheduler pynvml
    for name in ("nni", "filelock", "nvidia-ml-py", "cloudpickle", "efficientnet-pytorch"):
        assert name in copied, name
    assert not [name for name in copied if gpu_pack.in_image(name) or name in gpu_pack.UNUSED]
    assert "torch" not in copied and gpu_pack.PROJECT not in copied


def run_pack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_pack.py"), *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    """A pack copied once for this module's tests (about 20 MB)."""
    folder = tmp_path_factory.mktemp("gpu")
    done = run_pack("copy", str(folder / "site"))
    assert done.returncode == 0, done.stderr
    return folder


def test_the_pack_imports_the_trial_tuner_and_nnictl_without_site_packages(pack):
    assert (pack / "site" / "pynvml.py").is_file() and (pack / "site" / "nni_assets").is_dir()
    assert not (pack / "site" / "nni_node").exists()  # NNI's manager travels compressed, not here
    assert not list((pack / "site").rglob("*.cpython-*.so"))  # built for this Python only
    done = run_pack("check", str(pack))
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"imports as on the GPU image: nni (\S+) filelock (\S+)", done.stdout)
    assert found and Version(found.group(2)) < Version("3.12"), done.stdout  # the filelock NNI 3.0 works with


def test_the_check_fails_when_the_pack_lacks_a_module(pack):
    module = pack / "site" / "pynvml.py"
    aside = module.rename(pack / "pynvml.py.aside")
    try:
        done = run_pack("check", str(pack))
    finally:
        aside.rename(module)
    assert done.returncode != 0 and "No module named 'pynvml'" in done.stderr


def test_the_tests_run_where_pytest_xdist_is_not_installed(tmp_path):
    """The GPU image has pytest without pytest-xdist, and bench/gpu_check.sh runs the CUDA tests there with
    ``-o addopts=`` and no plugin autoload: the project's conftest must not need xdist (an xdist hook in it once
    stopped pytest there). Here xdist is switched off with ``-p no:xdist``, as there."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:xdist", "-p", "no:cacheprovider",
                           "-q", "tests/test_spec.py", "-k", "round_trip", "--basetemp", str(tmp_path / "t")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and " passed" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
