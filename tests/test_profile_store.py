"""Stored profiles (efficientnet/profile_store.py): real profiles, real files, real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from efficientnet.profile_store import MODEL_SOURCES, profile_path, stored_profile
from efficientnet.profiler import profile
from efficientnet.spec import preset

TINY = preset("lite0").replace(width=0.15, depth=0.5, resolution=32)
ROOT = Path(__file__).resolve().parents[1]


def test_a_profile_is_measured_once_then_read_from_its_file(tmp_path):
    first = stored_profile(TINY, 10, folder=tmp_path)
    assert first == profile(TINY, num_classes=10)
    path = profile_path(TINY, 10, tmp_path)
    assert [p.name for p in (tmp_path / "profiles").iterdir()] == [path.name]
    assert json.loads(path.read_text()) == first.to_dict()

    stored = {**first.to_dict(), "params": 1}  # a value no measurement gives: a second call must read the file
    path.write_text(json.dumps(stored))
    assert stored_profile(TINY, 10, folder=tmp_path).params == 1
    assert profile_path(TINY, 11, tmp_path) != path and profile_path(TINY.replace(width=0.2), 10, tmp_path) != path


@pytest.mark.parametrize("content", ["{not json", '{"params": 3}', "[]"], ids=["garbled", "incomplete", "wrong"])
def test_a_file_that_cannot_be_read_is_measured_again_and_rewritten(tmp_path, content):
    path = profile_path(TINY, 10, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    measured = stored_profile(TINY, 10, folder=tmp_path)
    assert measured == profile(TINY, num_classes=10)
    assert json.loads(path.read_text()) == measured.to_dict()


def test_a_folder_that_is_a_file_only_costs_the_measurement(tmp_path):
    (tmp_path / "profiles").write_text("a file where the folder goes")
    assert stored_profile(TINY, 10, folder=tmp_path) == profile(TINY, num_classes=10)
    assert (tmp_path / "profiles").read_text() == "a file where the folder goes"


def test_the_key_covers_every_module_of_this_package_that_makes_or_measures_the_model():
    """The modules a fresh process loads to profile are MODEL_SOURCES: a new one behind the model must join the key,
    or a changed model would be read from a stale file instead of being cross-checked."""
    code = ("import sys; import efficientnet.profiler; "
            "print(sorted(m for m in sys.modules if m.startswith('efficientnet.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True).stdout
    loaded = {name.removeprefix("efficientnet.") + ".py" for name in json.loads(out.replace("'", '"'))}
    assert loaded == set(MODEL_SOURCES)


def test_the_key_changes_with_the_models_source(tmp_path):
    """A copy of the package whose builder differs by one comment stores under another key."""
    package = ROOT / "efficientnet"
    copies = []
    for name, extra in (("a", ""), ("b", "\n# changed\n")):
        copy = tmp_path / name / "efficientnet"
        shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
        (copy / "builder.py").write_text((copy / "builder.py").read_text() + extra)
        copies.append(copy.parent)
    code = ("from efficientnet import profile_store; from efficientnet.spec import preset; "
            "print(profile_store.__file__, profile_store.profile_path(preset('lite0'), 10).name)")
    runs = [subprocess.run([sys.executable, "-c", code], cwd=c, capture_output=True, text=True, timeout=120,
                           check=True, env={**os.environ, "PYTHONPATH": str(c)}).stdout.split() for c in copies]
    assert [Path(module).parents[1] for module, _ in runs] == copies  # each process ran its own copy
    assert runs[0][1] != runs[1][1] and all(name.endswith(".json") for _, name in runs)
