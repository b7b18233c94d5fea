#!/usr/bin/env bash
# Run here, from the project root, in the venv where the project is installed, before carrying .gpu to a GPU machine
# whose image has torch (with what torch, torchvision, timm, onnxruntime, scikit-learn and pytest bring) but not
# NNI's own dependencies. ../shared/gpu/prepare.sh fills .gpu/site with the project's first pure-Python
# dependencies; this copies every other one the GPU checks import (bench/gpu_pack.py: the project's dependency closure
# less what the image brings, each at the version installed here, so that NNI gets the filelock<3.12 it needs rather
# than the image's newer one), packs NNI's manager for real experiments into .gpu/nni.tar.xz (GPU_NNICTL=0 leaves it
# out), and checks the result in an interpreter that sees only .gpu, the project and the image's packages.
# Then: bash bench/gpu_check.sh on that machine, with .gpu carried (at most 64 MiB travel: `du -sh .gpu` below).
set -eu
bash ../shared/gpu/prepare.sh
python bench/gpu_pack.py copy .gpu/site
# For real nnictl experiments there (gpu_check.sh's "sharing" check): NNI's manager (Node.js, without its WebUI) and
# pkg_resources (nnictl imports it; setuptools 81 and later have none) with the packages it vendors, compressed to
# fit the carry limit.
if [ "${GPU_NNICTL:-1}" = 1 ]; then
  site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  tar -C "$site" --exclude=nni_node/static --exclude=__pycache__ -cf - nni_node pkg_resources setuptools/_vendor \
    | xz -T0 -9 > .gpu/nni.tar.xz
fi
python bench/gpu_pack.py check .gpu
du -sh .gpu
