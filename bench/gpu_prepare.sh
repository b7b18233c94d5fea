#!/usr/bin/env bash
# Run here, from the project root, in the venv where the project is installed, before carrying .gpu to a GPU machine
# whose image has torch but not NNI's own dependencies: ../shared/gpu/prepare.sh fills .gpu/site with the project's
# pure-Python dependencies, and this adds what `import nni` needs beyond them (the GPU tests and benchmarks import the
# search package, which imports nni). Then: bash bench/gpu_check.sh on that machine, with .gpu carried.
set -eu
bash ../shared/gpu/prepare.sh
site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
for p in colorama psutil requests urllib3 certifi idna; do
  cp -r "$site/$p" .gpu/site/ || { echo "gpu_prepare.sh: $p not found in $site" >&2; exit 1; }
done
find .gpu/site -name __pycache__ -prune -exec rm -rf {} +
PYTHONPATH="$PWD/.gpu/site:$PWD" python -c "import nni, efficientnet.search" && du -sh .gpu
