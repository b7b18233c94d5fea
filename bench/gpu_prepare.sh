#!/usr/bin/env bash
# Run here, from the project root, in the venv where the project is installed, before carrying .gpu to a GPU machine
# whose image has torch but not NNI's own dependencies: ../shared/gpu/prepare.sh fills .gpu/site with the project's
# pure-Python dependencies, and this adds what `import nni` needs beyond them (the GPU tests and benchmarks import the
# search package, which imports nni), and NNI's manager for real experiments (GPU_NNICTL=0 leaves it out). Then:
# bash bench/gpu_check.sh on that machine, with .gpu carried (at most 64 MiB travel: `du -sh .gpu` below).
set -eu
bash ../shared/gpu/prepare.sh
site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
for p in colorama psutil requests urllib3 certifi idna; do
  cp -r "$site/$p" .gpu/site/ || { echo "gpu_prepare.sh: $p not found in $site" >&2; exit 1; }
done
find .gpu/site -name __pycache__ -prune -exec rm -rf {} +
PYTHONPATH="$PWD/.gpu/site:$PWD" python -c "import nni, efficientnet.search" || exit 1
# For real nnictl experiments there (gpu_check.sh's "sharing" check): NNI's manager (Node.js, without its WebUI),
# websockets, and pkg_resources (nnictl imports it) with the packages it vendors, compressed to fit the carry limit.
if [ "${GPU_NNICTL:-1}" = 1 ]; then
  tar -C "$site" --exclude=nni_node/static --exclude=__pycache__ -cf - nni_node websockets pkg_resources \
    setuptools/_vendor | xz -T0 -9 > .gpu/nni.tar.xz
fi
du -sh .gpu
