#!/usr/bin/env bash
# The GPU checks in one run, in order of what is still unmeasured: a trial's first epoch per cuDNN variant
# (warmup, about 2 min), real nnictl experiments with 1, 2, 4 and 8 trials per GPU (sharing, about 5 min), the CUDA
# tests (about 3 min) and the training-memory estimate against real steps (memory). Also on demand: the
# training-step benchmark for the B and Lite families (train), the data benchmark (data), the demo trial at 224 px
# (hand), torch.compile (compile) and a step profile (profile), measured before (docs/benchmarks/gpu_h200.md).
# Run from the project root on a CUDA machine (on a bare torch image: bench/gpu_prepare.sh first, here, and carry
# .gpu); where $OUT is set (a folder that is copied back), every log goes there as it is written, so a run cut short
# still returns what it measured.
#   bash bench/gpu_check.sh            # BUDGET_S=560 by default: later steps are skipped when time runs short
#   GPU_CHECKS="warmup sharing" bash bench/gpu_check.sh   # then GPU_CHECKS="tests memory": two calls of <= 8 min
#   GPU_CHECKS="tests data" bash bench/gpu_check.sh   # some of: warmup sharing tests memory train data hand
#                                                     # compile profile
#   GPU_SHARING="1 4" bash bench/gpu_check.sh         # the trials-per-GPU counts of the sharing check
#   GPU_CHECK_DEVICE=cpu PYTHON=/tmp/image/bin/python bash bench/gpu_check.sh   # a rehearsal here, on the CPU, in
#     a venv like the GPU image (docs/gpu.md): the four default checks in a small CPU form, to find what the image
#     lacks before a GPU's minutes are spent
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PWD}/.gpu/site:${PWD}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1  # third-party pytest plugins of the image may choke on PYTHONPATH packages
checks=" ${GPU_CHECKS:-warmup sharing tests memory} "
want() { [[ "$checks" == *" $1 "* ]]; }
out="${OUT:-bench/results}"
mkdir -p "$out"
py=${PYTHON:-python3}
start=$SECONDS
budget=${BUDGET_S:-560}
device=${GPU_CHECK_DEVICE:-cuda}

# step SECONDS FILE CMD...: run CMD with at most SECONDS (less if the budget is short), appending to $out/FILE
step() {
  local want=$1 file=$2; shift 2
  local left=$(( budget - (SECONDS - start) - 5 ))
  if (( left < 20 )); then echo "skipped (budget spent): $*" | tee -a "$out/$file"; return; fi
  local limit=$(( want < left ? want : left ))
  echo "\$ $* (limit ${limit} s, at $(( SECONDS - start )) s)" >> "$out/$file"
  timeout "$limit" "$@" >> "$out/$file" 2>&1
  local status=$?
  echo "[exit $status after $(( SECONDS - start )) s]" >> "$out/$file"
  return $status
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c "import sys, torch, torchvision; print('python', sys.version.split()[0], 'torch', torch.__version__,
torchvision.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  nproc; } > "$out/gpu.txt" 2>&1

# the synthetic JPEGs for the experiments and the data benchmark are written on the CPU while the GPU warms up
"$py" -c "import sys; sys.path.insert(0, 'bench'); from pathlib import Path; import tempfile
from data_throughput import write_dataset
write_dataset(Path(tempfile.gettempdir()) / 'efficientnet-nni-bench-images', 2000)" > /dev/null 2>&1 &
writer=$!
jpegs() { [ -z "$writer" ] || wait "$writer"; writer=; }  # wait once for the writer
tmp=$(mktemp -d)
manager() {  # NNI's manager and pkg_resources from .gpu/nni.tar.xz, unpacked once outside .gpu (which must stay small
  # enough to carry) for the nnictl experiments
  [ -d "$tmp/manager" ] && return
  mkdir "$tmp/manager" && tar -C "$tmp/manager" -xJf .gpu/nni.tar.xz >> "$out/sharing.txt" 2>&1
  export PYTHONPATH="$PYTHONPATH:$tmp/manager"
}

if [ "$device" = cpu ]; then  # the rehearsal: each check small, on the CPU
  export PYTHONDONTWRITEBYTECODE=1  # .gpu stays as bench/gpu_prepare.sh left it, ready to carry
  want warmup && step 180 warmup.txt "$py" bench/first_epoch.py --device cpu --resolution 64 --epochs 2 \
    --download-dir "$tmp/data"
  if want sharing; then
    manager
    step 240 sharing.txt "$py" bench/experiment_throughput.py --trials 2 --concurrency 2 --epochs 2 --no-baseline \
      --no-assessor --timeout 200
  fi
  checks=${checks/ warmup / }; checks=${checks/ sharing / }
fi
want warmup && step 180 warmup.txt "$py" bench/first_epoch.py --device cuda --download-dir "$tmp/data"
if want sharing; then  # real nnictl experiments (NNI's manager from .gpu/nni.tar.xz), 2 trials per slot
  manager
  jpegs  # they train on the synthetic JPEGs
  for n in ${GPU_SHARING:-1 2 4 8}; do  # the first count that fails ends the check: the others would fail alike
    step 120 sharing.txt "$py" bench/experiment_throughput.py --gpu --trials-per-gpu "$n" \
      --trials $(( 2 * n )) --no-baseline --no-assessor --timeout 110 || break
  done
fi
if want tests; then  # in one process: pyproject's addopts ask for pytest-xdist, which the image lacks
  manager  # one test runs a real experiment
  step 210 tests.txt "$py" -m pytest -o addopts= -v -ra -p no:cacheprovider tests/test_cuda.py -k "not torchrun"
  step 60 tests.txt "$py" -m pytest -o addopts= -v -ra -p no:cacheprovider tests/test_cuda.py -k torchrun
fi
want memory && step 90 memory.txt "$py" bench/train_memory.py --device "$device"
if want train; then
  for arch in b0 lite0; do
    step 90 "train_$arch.txt" "$py" bench/train_throughput.py --arch "$arch" --width 1.0 --resolution 224 \
      --batch-size 128 --steps 20 --rounds 4 --variants
  done
fi
jpegs
want data && step 120 data.txt "$py" bench/data_throughput.py --images 2000 --resolution 224 --batch-size 128 --epochs 3 \
  --modes auto,off
want hand && step 60 hand.txt "$py" main_efficientnet.py --data digits --download-dir "$tmp/data" --weights lite0 \
  --resolution 224 --epochs 3 --device cuda --output-dir "$tmp/run" --progress off
want compile && step 150 compile.txt "$py" bench/train_throughput.py --arch lite0 --width 1.0 --resolution 224 --batch-size 128 \
  --steps 20 --rounds 3 --compile --no-plain
want profile && step 45 profile.txt "$py" bench/step_profile.py --arch b0 --resolution 224 --batch-size 128 --steps 5
[ -z "$writer" ] || kill "$writer" 2> /dev/null  # no check needed the JPEGs
echo "done in $(( SECONDS - start )) s" >> "$out/gpu.txt"
