#!/usr/bin/env bash
# The Triton kernels on a GPU machine, in one call each (see docs/performance.md for past results):
#   bash scripts/gpu_kernels.sh validate [--quick]   # scripts/validate_triton_gpu.py, one process per (op, dtype):
#                                                    # compiling dominates, and four processes compile at once
#   bash scripts/gpu_kernels.sh bench [args]         # python -m arena.bench kernels --fla-bypass-640 [args]
# Results go to $OUT (the device tool's folder) or results/gpu/. Wheels for the GPU image, if .whl/ exists
# (../shared/device/wheels.sh), are installed first.
set -uo pipefail
mode=${1:-validate}; shift || true
out=${OUT:-results/gpu}; mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl 2>/dev/null
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw --format=csv,noheader
case "$mode" in
  validate)
    start=$(date +%s); extra=("$@")
    for job in "kda bf16" "gdn bf16" "kda fp16 --skip-train" "gdn fp16 --skip-train"; do
      set -- $job; op=$1; dt=$2; shift 2
      python3 scripts/validate_triton_gpu.py --ops "$op" --dtypes "$dt" --out "/tmp/v_${op}_${dt}" "$@" "${extra[@]}" \
        > "/tmp/v_${op}_${dt}.log" 2>&1 &
    done
    wait
    echo "validation wall $(( $(date +%s) - start ))s"
    head -1 /tmp/v_kda_bf16/validate_kernels.csv > "$out/validate_cases.csv"
    for d in /tmp/v_*/; do tail -n +2 "$d/validate_kernels.csv" >> "$out/validate_cases.csv" 2>/dev/null; done
    for f in /tmp/v_*.log; do echo "=== $f"; grep -v "^\[.*\] ok " "$f" | tail -30; done | tee "$out/validate.txt"
    ;;
  bench)
    python3 -m arena.bench kernels --fla-bypass-640 --out "$out" "$@" 2>&1 | tee "$out/bench.log"
    ;;
  *) echo "usage: bash scripts/gpu_kernels.sh validate|bench [args]" >&2; exit 2 ;;
esac
