#!/usr/bin/env bash
# First run on a GPU (issue 23): everything about the op's CUDA kernels that CI cannot run, in one
# go, ending with a table. Needs an NVIDIA GPU and driver and `pip install -e ".[gpu,test]"`;
# no CUDA toolkit (steps that need nvcc say SKIP without one).
#
#   bench/gpu_check.sh             run it (about 5-15 min; logs in $GPU_CHECK_DIR, default a temp dir)
#   bench/gpu_check.sh --dry-run   print the steps, run nothing (no GPU needed)
#
# Steps: 0 what TF, the driver and the op build see; 1a the standalone GPU-vs-CPU kernel test
# launched as the op launches them (driver API, NVRTC images, pip's CUDA runtime, no nvcc); 1b the
# same test built by nvcc (runtime-API launches; only where a CUDA 12 nvcc exists); 2 the op on
# /GPU:0 vs /CPU:0, forward and gradients (tests/test_custom_op.py's GPU tests) and the op under op
# determinism; 3 bench/deform_conv.py and 4 bench/model.py on the GPU; 5 a 50-step
# `train.py --strategy mirrored` smoke run.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: bench/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
if ((DRY)); then
  LOGS=${GPU_CHECK_DIR:-/tmp/zsm_gpu_check.DRYRUN}
else
  LOGS=${GPU_CHECK_DIR:-$(mktemp -d -t zsm_gpu_check.XXXXXX)}
  mkdir -p "$LOGS"
fi
BUILD="$LOGS/build"
ROWS=()
FAILED=0

# step NAME SLUG CMD...: runs CMD (a bash string) with its output in $LOGS/SLUG.log; a command
# exiting 77 is a SKIP (its last line says why). The row holds the status, the seconds and the
# log's last line.
step() {
  local name=$1 slug=$2 cmd=$3 t0=$SECONDS status rc note
  if ((DRY)); then
    printf '[dry-run] %s\n    %s\n' "$name" "$cmd"
    ROWS+=("$name|DRY|0|-")
    return
  fi
  echo "== $name (log: $LOGS/$slug.log)"
  bash -c "$cmd" >"$LOGS/$slug.log" 2>&1
  rc=$?
  note=$(grep -v '^\s*$' "$LOGS/$slug.log" | tail -1 | cut -c1-90)
  case $rc in
    0) status=PASS ;;
    77) status=SKIP ;;
    *) status="FAIL($rc)"; FAILED=1 ;;
  esac
  ROWS+=("$name|$status|$((SECONDS - t0))|$note")
}

CC=""
if command -v nvidia-smi >/dev/null 2>&1; then
  CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
fi

step "0 GPU, driver, op build" info "nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv && \
  $PY -c \"
import json, tensorflow as tf
from zsm_tf.ops import custom_op
print('TF', tf.__version__, tf.sysconfig.get_build_info().get('cuda_version'), tf.config.list_physical_devices('GPU'))
info = custom_op.build_info()
print(json.dumps(info, indent=1))
assert info['cuda'] and 'GPU' in info['registered_devices'], 'no GPU kernels: ' + str(info.get('cuda_skipped'))
print('op built with', info['cuda_compiler'], info['cuda_compiler_version'], 'in', info.get('build_seconds'), 's, targets', info['cuda_archs'])
\""

step "1a kernels vs CPU, driver API (no nvcc)" driver_test \
  "make -s -C custom_ops driver-test BUILD='$BUILD' PYTHON='$PY' ARCHS='${CC:+sm_$CC }compute_90' && \
   { command -v compute-sanitizer >/dev/null && compute-sanitizer --tool memcheck '$BUILD/test_driver_launch' | tail -2 || true; }"

step "1b kernels vs CPU, nvcc build" nvcc_test \
  "if ! command -v nvcc >/dev/null || ! nvcc --version | grep -q 'release 12\.'; then echo 'SKIP: no CUDA 12 nvcc (not needed by the op)'; exit 77; fi; \
   make -s -C custom_ops cuda-test BUILD='$BUILD' PYTHON='$PY' ARCHS='sm_${CC:-80}'"

step "2 op /GPU:0 vs /CPU:0, fwd + grads" op_gpu_vs_cpu \
  "$PY -m pytest -q -n 0 -p no:cacheprovider tests/test_custom_op.py -k 'gpu_kernels_match_cpu or gpu_gradient_refuses' -rs && \
   $PY -c \"
import numpy as np, tensorflow as tf
from zsm_tf.ops import custom_op
x = tf.random.normal([2, 16, 16, 32]); off = tf.random.normal([2, 16, 16, 2*4*9]) * 3
m = tf.random.uniform([2, 16, 16, 4*9]); out = {}
for dev in ('/GPU:0', '/CPU:0'):
    with tf.device(dev), tf.GradientTape() as t:
        t.watch([x, off, m]); c = custom_op.deformable_im2col(x, off, m, 3, 1, 1, 1, 4)
        out[dev] = [c] + t.gradient(tf.reduce_sum(c * c), [x, off, m])
    assert dev[1:4] in c.device, c.device
err = [float(np.abs(a - b).max()) for a, b in zip(out['/GPU:0'], out['/CPU:0'])]
assert max(err) < 1e-3, err
print('max |GPU - CPU| columns, d_input, d_offsets, d_mask:', ' '.join(f'{e:.1e}' for e in err))
\""

step "3 bench/deform_conv.py (GPU)" deform_conv "$PY bench/deform_conv.py --runs 7"

step "4 bench/model.py (GPU)" model "$PY bench/model.py --runs 3"

step "5 train.py mirrored, 50 steps" train \
  "$PY train.py --strategy mirrored --steps 50 --batch-size 4 --lr-patch 32 --val-clips 0 \
     --checkpoint-every 50 --model nf=32 --model back_rbs=2 --output-dir '$LOGS/train' && \
   ls '$LOGS/train' && echo 'train: 50 steps done'"

echo
printf '%-40s | %-8s | %6s | %s\n' "step" "status" "sec" "last line of its log"
printf '%s\n' "-----------------------------------------+----------+--------+-------------------------------"
for row in "${ROWS[@]}"; do
  IFS='|' read -r name status sec note <<<"$row"
  printf '%-40s | %-8s | %6s | %s\n' "$name" "$status" "$sec" "$note"
done
echo "logs: $LOGS"
exit $FAILED
