#!/usr/bin/env bash
# `python -m arena.bench model` on one GPU in one call (< 9 min on one H100): training tokens/s and peak memory,
# prefill, decode (batch 1 and the largest batch, eager and CUDA graph) and cache bytes against context, for kda,
# gdn, mamba2, mla, mla_nope and hybrid_3to1 at the GPU default of arena/bench/model.py (d_model 1024, 8 layers).
#
#   bash scripts/gpu_bench_model.sh [key=value ...]     # on the GPU machine; keys as `python -m arena.bench model`
#   SMOKE=1 bash scripts/gpu_bench_model.sh             # ~1-2 min: d_model 256, 4 layers, lengths to 4k
#
# Carry .whl (wheels of hydra-core, omegaconf and antlr4 for an offline GPU image, as in gpu_kernels.sh: arena's
# mixer configs import them). Results go to $OUT/model (or results/bench/model): model_<card>_<stamp>.csv, .png,
# .md (the report section); the bench's own log is $OUT/bench_model.log, whose last lines (the claims, goals and a
# short table) are printed last. The bench keeps to budget_s (default 420 s); `timeout` is the hard stop, and a cut
# off run leaves model_<card>_<stamp>.partial.csv with the mixers finished so far.
set -uo pipefail
out=${OUT:-results/bench}; mkdir -p "$out"
. "$(dirname "$0")/gpu_env.sh"  # carried wheels, PYTHONPATH, the card and the stack

extra=()
if [ "${SMOKE:-0}" = 1 ]; then
  extra=(d_model=256 n_layers=4 train_lens=1k,4k train_tokens=8k prefill_lens=1k,4k decode_lens=1k,4k budget_s=60)
fi
start=$(date +%s)
timeout "${LIMIT:-530}" python3 -m arena.bench model out="$out/model" "${extra[@]}" "$@" > "$out/bench_model.log" 2>&1
echo "bench model exit $? after $(( $(date +%s) - start )) s"
ls -la "$out/model" 2>/dev/null | tail -n +2
grep -E "error|Error|failed|OOM" "$out/bench_model.log" | head -n 20
echo "===== tail of $out/bench_model.log"
tail -n 45 "$out/bench_model.log"
