#!/usr/bin/env bash
# The Triton kernels on a GPU machine, in one call each (see docs/performance.md for past results):
#   bash scripts/gpu_kernels.sh validate [--quick]   # scripts/validate_triton_gpu.py, SHARDS (default 3) processes
#                                                    # per (op, dtype): compiling dominates, so 12 compile at once
#   bash scripts/gpu_kernels.sh bench [args]         # python -m arena.bench kernels --fla-bypass-640 [args]
#   LIMIT=500 bash scripts/gpu_kernels.sh bench --ops kda --no-torch   # fla's KDA: autotuning may need 2 calls,
#                                                    # carrying $OUT/triton_autotune.tgz as .triton_autotune.tgz
# Results go to $OUT (the device tool's folder) or results/gpu/. Wheels for the GPU image, if .whl/ exists, are
# installed first: pure-Python wheels (hydra-core, omegaconf, antlr4 4.9.3, fla-core) that an offline GPU image
# lacks, fetched beforehand for its Python with `pip download --only-binary=:all: -d .whl ...`.
set -uo pipefail
mode=${1:-validate}; shift || true
out=${OUT:-results/gpu}; mkdir -p "$out"
# shellcheck source=scripts/gpu_env.sh
. "$(dirname "$0")/gpu_env.sh"  # carried wheels, PYTHONPATH, the card and stack, the autotuning cache
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw --format=csv,noheader
case "$mode" in
  validate)
    # SHARDS processes per (op, dtype), each on disjoint (K, V) groups: compiling dominates on a cold machine
    start=$(date +%s); extra=("$@"); shards=${SHARDS:-3}
    for job in "kda bf16" "gdn bf16" "kda fp16" "gdn fp16"; do
      set -- $job; op=$1; dt=$2
      for ((i = 0; i < shards; i++)); do
        train=(--skip-train); [[ $dt == bf16 && $i == 0 ]] && train=()  # one training check per op
        python3 scripts/validate_triton_gpu.py --ops "$op" --dtypes "$dt" --shard "$i/$shards" \
          --out "/tmp/v_${op}_${dt}_$i" "${train[@]}" "${extra[@]}" > "/tmp/v_${op}_${dt}_$i.log" 2>&1 &
      done
    done
    wait
    echo "validation wall $(( $(date +%s) - start ))s"
    cp /tmp/v_*/train_loss_*.csv "$out/" 2>/dev/null
    for f in /tmp/v_*.log; do echo "=== $f"; grep -v "^\[.*\] ok " "$f" | tail -30; done > "$out/validate.txt"
    python3 scripts/validate_triton_gpu.py --summarize /tmp/v_*/validate_kernels.csv --out "$out" "${extra[@]}" \
      | tee -a "$out/validate.txt"
    grep -h -A3 "^training" /tmp/v_*_bf16_0.log | tee -a "$out/validate.txt"
    ;;
  bench)
    # fla's first-call autotuning can outlast one device call: LIMIT stops the bench (it keeps a .partial.csv), and
    # the autotuning results found so far go back as triton_autotune.tgz for the next call (scripts/gpu_env.sh)
    timeout "${LIMIT:-500}" python3 -m arena.bench kernels --fla-bypass-640 --out "$out" "$@" 2>&1 | tee "$out/bench.log"
    pack_autotune
    ;;
  *) echo "usage: bash scripts/gpu_kernels.sh validate|bench [args]" >&2; exit 2 ;;
esac
