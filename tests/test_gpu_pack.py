"""bench/gpu_pack.py: what a bare GPU image gets beside its torch is enough to import what the GPU checks import."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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


def test_the_pack_imports_the_trial_tuner_and_nnictl_without_site_packages(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_pack.py"), "copy", str(tmp_path / "site")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "pynvml.py").is_file() and (tmp_path / "site" / "nni_assets").is_dir()
    assert not (tmp_path / "site" / "nni_node").exists()  # NNI's manager travels compressed, not here
    assert not list((tmp_path / "site").rglob("*.cpython-*.so"))  # built for this Python only
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_pack.py"), "check", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"imports as on the GPU image: nni (\S+) filelock (\S+)", done.stdout)
    assert found and Version(found.group(2)) < Version("3.12"), done.stdout  # the filelock NNI 3.0 works with


def test_the_check_fails_when_the_pack_lacks_a_module(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_pack.py"), "copy", str(tmp_path / "site")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (tmp_path / "site" / "pynvml.py").unlink()
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_pack.py"), "check", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "No module named 'pynvml'" in done.stderr
