#!/usr/bin/env bash
# The training-speed evidence in one GPU call: fused-op validation, the training-step benchmark after and
# BEFORE this work (its two files run inside the package of a baseline commit, side by side on the same card),
# the fast-loop equality check and a per-mixer profile. Results go to $OUT (or results/gpu).
#
#   git archive <base> arena conf pyproject.toml | tar -x -C .baseline     # here, once (.baseline is ignored)
#   bash scripts/gpu_train_speed.sh [validate] [bench] [check] [profile] [share] [streams] [graphtest] [bench_graphs] ...
#                                                                   # on the GPU machine; default:
#                                                                   # validate bench check profile
#
# Carry .whl (wheels of hydra-core, omegaconf and antlr4 for an offline GPU image, as in gpu_kernels.sh) and
# .baseline. Each part is time-boxed so a slow one cannot starve the rest; the tables come last in the output.
set -uo pipefail
parts=${*:-validate bench check profile}
# every part named must exist before any runs: a typo would otherwise be skipped silently after minutes of GPU time
known=$(grep -oE '^[a-z_]+\)' "$0" | tr -d ')' | tr '\n' ' ')
for part in $parts; do
  [[ " $known" == *" $part "* ]] || { echo "gpu_train_speed: unknown part '$part'; choose from: $known" >&2; exit 2; }
done
out=${OUT:-results/gpu}; mkdir -p "$out"
. "$(dirname "$0")/gpu_env.sh"  # carried wheels, PYTHONPATH, the card and the stack

for part in $parts; do case $part in
validate)  # every fused op, the Triton SSD and the fused layers against their fp32 twins, fwd + bwd, bf16 too
  timeout 150 python3 -m pytest -q -p no:cacheprovider -n 6 tests/kernels/test_fused_short_conv.py \
    tests/kernels/test_fused_gated_norm.py tests/kernels/test_triton_ssd.py tests/mixers/test_fused_layers.py \
    > "$out/validate.log" 2>&1
  echo "validate exit $?"; tail -4 "$out/validate.log" ;;
bench)  # the same benchmark file against this tree and against the baseline package
  timeout 170 python3 -m arena.bench train out="$out/bench_after" > "$out/bench_after.log" 2>&1
  echo "bench after exit $?"
  if [ -d .baseline/arena ]; then
    cp arena/bench/train*.py .baseline/arena/bench/  # the benchmark (train.py and its train_*.py), not its package
    (cd .baseline && PYTHONPATH=/tmp/site:$PWD timeout 170 python3 -m arena.bench.train out="$out/bench_before" \
      > "$out/bench_before.log" 2>&1; echo "bench before exit $?")
  fi ;;
graphtest)  # CUDA-graph replay against eager steps per mixer, and the short conv's final form, on the GPU
  timeout 120 python3 -m pytest -q -p no:cacheprovider -n 6 tests/test_train_loop.py \
    tests/kernels/test_fused_short_conv.py > "$out/graphtest.log" 2>&1
  echo "graphtest exit $?"; tail -4 "$out/graphtest.log" ;;
bench_graphs)  # this tree with train.cuda_graphs=on: the graphs' gain, side by side with `bench` (eager)
  timeout 170 python3 -m arena.bench train train.cuda_graphs=on out="$out/bench_graphs" > "$out/bench_graphs.log" 2>&1
  echo "bench graphs exit $?" ;;
check)
  timeout 240 python3 scripts/check_fast_loop.py --steps 200 --out "$out" > "$out/check.log" 2>&1
  echo "check exit $?" ;;
profile)
  timeout 100 python3 scripts/profile_train_step.py > "$out/profile.log" 2>&1
  echo "profile exit $?" ;;
streams)  # do graphed runs gain from sharing the GPU as streams of ONE process (K runs round-robin)? Each copy
         # takes ~10 s to build and capture: KDA at T = 256, K = 1, 2, 4, 8 took ~190 s on an H100 (2026-12-07)
  timeout 240 python3 scripts/stream_sharing.py --mixers ${STREAM_MIXERS:-mla} --seq-lens 256 --ks 1,4,8 \
    --out "$out/streams.csv" > "$out/streams.log" 2>&1
  echo "streams exit $?"; tail -12 "$out/streams.log" ;;
share)  # do small runs gain from sharing the GPU (N processes at once)?
  timeout 200 python3 scripts/sweep_sharing.py > "$out/share.log" 2>&1
  echo "share exit $?" ;;
hostprof)  # where the host's time per step goes (cProfile)
  timeout 60 python3 scripts/profile_train_step.py --host --mixers kda --seq-len 256 --steps 20 --top 18 \
    > "$out/hostprof.log" 2>&1
  echo "hostprof exit $?" ;;
variants)  # loop vs layers vs rounding noise, for the mixers whose curves differ most
  timeout 120 python3 scripts/check_fast_loop.py --variants --mixers hybrid_3to1 --steps 200 > "$out/variants.log" 2>&1
  echo "variants exit $?" ;;
sweep)  # a time-boxed sample of the reduced Figure 4 grid: its sweep throughput
  STEPS=2000 LENGTHS=256,512,1024 LRS=1e-3 N_JOBS=4 TIME_LIMIT=${SWEEP_S:-130} EXTRA="${EXTRA:-train.eval_every=500}" \
    OUT="$out" bash scripts/gpu_kimi_synthetic.sh > "$out/sweep_call.log" 2>&1
  echo "sweep exit $?"; tail -n 20 "$out/sweep_call.log" ;;
parity)  # arena's KDA, GDN and Mamba2 layers against fla 0.6's (docs/parity.md; .whl must hold fla-core and
         # flash-linear-attention 0.6.0)
  TRITON_F32_DEFAULT=ieee timeout 240 python3 scripts/fla_layer_parity.py > "$out/parity.log" 2>&1
  echo "parity exit $?"; tail -n 30 "$out/parity.log" ;;
revalidate)  # only the fused-layer tests and the softplus precision test
  timeout 100 python3 -m pytest -q -p no:cacheprovider -n 4 tests/mixers/test_fused_layers.py \
    tests/kernels/test_fused_gated_norm.py > "$out/validate.log" 2>&1
  echo "revalidate exit $?"; tail -3 "$out/validate.log" ;;
esac; done
for f in hostprof variants share profile check bench_before bench_after bench_graphs; do
  [ -f "$out/$f.log" ] && { echo "===== $f"; tail -n 40 "$out/$f.log"; }
done
