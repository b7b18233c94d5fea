#!/usr/bin/env bash
# The GPU checks in one run (about 6 minutes on one H100): the CUDA tests, then the training-step and data
# benchmarks for the B and Lite families. Run from the project root on a CUDA machine; where $OUT is set (a
# folder that is copied back), every log goes there too.
#   bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PWD}/.gpu/site:${PWD}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-bench/results}"
mkdir -p "$out"
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
"$py" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" \
  | tee -a "$out/gpu.txt"

timeout 240 "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py -ra 2>&1 | tail -25 | tee "$out/tests.txt"

for arch in b0 lite0; do
  timeout 150 "$py" bench/train_throughput.py --arch "$arch" --width 1.0 --resolution 224 --batch-size 128 \
    --steps 20 --rounds 4 2>&1 | tail -8 | tee "$out/train_$arch.txt"
done
timeout 120 "$py" bench/train_throughput.py --arch lite0 --width 1.0 --resolution 224 --batch-size 128 \
  --steps 20 --rounds 3 --compile --no-plain 2>&1 | tail -6 | tee "$out/train_lite0_compile.txt"

timeout 200 "$py" bench/data_throughput.py --images 2000 --resolution 224 --batch-size 128 --epochs 3 \
  --modes auto,off 2>&1 | grep -v "^epoch\|^weights\|^arch\|^output\|^precision\|^final" | tail -12 \
  | tee "$out/data.txt"
