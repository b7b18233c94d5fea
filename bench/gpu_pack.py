"""What a bare GPU image needs beside its torch to run bench/gpu_check.sh, and a check that it is enough.

    python bench/gpu_pack.py copy .gpu/site    # copy the project's run-time dependencies the image lacks
    python bench/gpu_pack.py check .gpu        # import what the GPU checks import, seeing only .gpu, the project
                                               # and the image's packages

``copy`` walks the project's dependency closure (installed distributions' metadata, extras left out) and copies each
distribution's top-level modules from this environment, except those the image brings (``IMAGE``) and those no GPU
check imports (``UNUSED``). A pure-Python distribution is copied even where the image may have its own, at the
version installed here, which is the version the tests ran: NNI 3.0 needs ``filelock<3.12``, and the image's torch
brings a newer filelock, with which ``nnictl create`` waits for its lock forever. A compiled module must work on the
image's Python (3.12 there, perhaps not here): only the stable ABI (``abi3``) is copied, and a distribution with other
extensions only if it falls back to pure Python without them (``FALLBACK``).

``check`` runs ``python -S`` (no site-packages) with the path set to ``.gpu/site``, NNI's manager from
``.gpu/nni.tar.xz``, the project, and links to the image's distributions as installed here: what imports there
imports on the GPU machine, except for version differences of the image's own packages.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "efficientnet-nni"
# In the bare GPU image: torch, torchvision, timm, onnx, onnxruntime, scikit-learn and pytest with
# what they bring; CUDA builds and compiled packages must be the image's own.
IMAGE = {
    "torch", "torchvision", "triton", "numpy", "scipy", "scikit-learn", "joblib", "threadpoolctl", "pillow", "pyyaml",
    "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "fsspec", "typing-extensions", "packaging", "tqdm",
    "setuptools", "narwhals", "timm", "onnx", "onnxruntime", "pytest",
    # matplotlib, which captum (the heatmaps' Grad-CAM) imports, with what it needs (the image's package list)
    "matplotlib", "contourpy", "cycler", "fonttools", "kiwisolver", "pyparsing", "python-dateutil", "six",
}
IMAGE_PREFIXES = ("nvidia-", "cuda-")  # torch's CUDA libraries
NOT_IMAGE = {"nvidia-ml-py"}  # NNI's (pynvml, for its GPU scheduler), not torch's
# Run-time dependencies of TensorBoard logging and NNI's data export, which no GPU check uses.
UNUSED = {
    "tensorboard", "tensorboard-data-server", "absl-py", "grpcio", "markdown", "protobuf", "werkzeug", "pandas",
    "tzdata",
}
FALLBACK = {"charset-normalizer", "websockets", "simplejson"}  # their extensions are optional speed-ups
NNI_MANAGER = "nni_node"  # NNI's Node.js manager: packed into .gpu/nni.tar.xz by gpu_prepare.sh, not copied


def canonical(name: str) -> str:
    """A distribution's name as pip compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str = PROJECT) -> dict[str, Distribution]:
    """Every installed distribution ``root`` needs at run time (its extras left out), by canonical name."""
    found: dict[str, Distribution] = {}
    todo = [root]
    while todo:
        name = canonical(todo.pop())
        if name in found:
            continue
        try:
            found[name] = dist = distribution(name)
        except PackageNotFoundError:
            raise SystemExit(f"gpu_pack.py: {name} is not installed here; install the project first") from None
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def in_image(name: str) -> bool:
    """Whether the GPU image brings this distribution."""
    return name in IMAGE or (name.startswith(IMAGE_PREFIXES) and name not in NOT_IMAGE)


def top_levels(dist: Distribution) -> list[Path]:
    """The installed top-level modules and packages of ``dist`` (no metadata, scripts or caches)."""
    tops = set()
    for file in dist.files or []:
        first = file.parts[0]
        if first == ".." or first.endswith((".dist-info", ".egg-info", ".pth")) or first == "__pycache__":
            continue
        tops.add(first)
    return [Path(dist.locate_file(top)) for top in sorted(tops)]


def compiled(dist: Distribution) -> list[str]:
    """The extension modules of ``dist`` that only work on the Python they were built for."""
    return [str(f) for f in dist.files or [] if str(f).endswith(".so") and ".abi3." not in str(f)
            and not str(f).startswith("..")]


def to_copy() -> dict[str, Distribution]:
    """The distributions ``copy`` copies."""
    deps = closure()
    deps.pop(PROJECT)
    return {name: dist for name, dist in sorted(deps.items()) if not in_image(name) and name not in UNUSED}


def copy(dest: Path) -> None:
    """Copy each distribution of ``to_copy`` into ``dest`` (replacing what is there of it)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, dist in to_copy().items():
        if (so := compiled(dist)) and name not in FALLBACK:
            raise SystemExit(f"gpu_pack.py: {name} has extensions built for this Python only ({so[0]}); the image "
                             f"must bring it (IMAGE) or the GPU checks must not need it (UNUSED)")
        for top in top_levels(dist):
            if top.name == NNI_MANAGER or (top.suffix == ".py" and top.stem == "example"):  # nvidia-ml-py's example
                continue
            target = dest / top.name
            if target.is_dir():
                shutil.rmtree(target)
            if top.is_dir():  # without the extensions of FALLBACK, built for this Python only
                shutil.copytree(top, target, ignore=shutil.ignore_patterns("__pycache__", "*.cpython-*.so"))
            else:
                shutil.copy2(top, target)
        print(f"copied {name} {dist.version}")


CHECK = """
import sys
import nni, efficientnet.search, efficientnet.launcher, main_efficientnet, tuner  # the trial and the tuner
from nni.tools.nnictl.nnictl import get_parser  # nnictl: pkg_resources, nni_assets
import nni.tools.nni_manager_scripts.collect_gpu_info  # NNI's GPU scheduler asks it for the GPUs (pynvml)
from nni.tools.nnictl.config_utils import Experiments
Experiments(home_dir=sys.argv[1])  # NNI's experiment list behind its file lock (waits forever with filelock>=3.12)
from captum.attr import LayerGradCam  # the heatmaps of evaluate and predict (with the image's matplotlib)
import filelock, torch
print("imports as on the GPU image: nni", nni.__version__, "filelock", filelock.__version__, "torch", torch.__version__)
"""


def check(gpu: Path) -> None:
    """Import what the GPU checks import with only ``gpu``'s packages, the project and the image's on the path."""
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "image"
        image.mkdir()
        for name, dist in closure().items():
            if in_image(name):
                for top in top_levels(dist):
                    if not (image / top.name).exists():  # nvidia/ and cuda/ are shared by several
                        (image / top.name).symlink_to(top)
        path = [gpu.resolve() / "site"]
        if (gpu / "nni.tar.xz").is_file():
            with tarfile.open(gpu / "nni.tar.xz") as tar:
                tar.extractall(Path(tmp) / "manager", filter="tar")
            path.append(Path(tmp) / "manager")
        path += [ROOT, image]
        env = {"PYTHONPATH": ":".join(map(str, path)), "HOME": tmp, "PATH": "/usr/bin:/bin",
               "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            done = subprocess.run([sys.executable, "-S", "-c", CHECK, tmp], env=env, cwd=tmp, timeout=120,
                                  capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            raise SystemExit("gpu_pack.py check: the imports did not finish in 120 s (NNI's file lock?)") from None
    if done.returncode != 0:
        raise SystemExit(f"gpu_pack.py check failed:\n{done.stderr[-3000:]}")
    print(done.stdout.strip())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["copy", "check"])
    p.add_argument("folder", type=Path, help="copy: where the packages go (.gpu/site); check: the .gpu folder")
    args = p.parse_args()
    copy(args.folder) if args.action == "copy" else check(args.folder)


if __name__ == "__main__":
    main()
