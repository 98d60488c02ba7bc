#!/usr/bin/env bash
# Sourced (`. scripts/gpu_env.sh`) by the GPU drivers (gpu_kernels.sh, gpu_sweep.sh, gpu_text_lm.sh,
# gpu_train_speed.sh, gpu_bench_model.sh) on the GPU machine: installs the carried wheels (.whl: hydra-core,
# omegaconf, antlr4, ... for an offline image) into /tmp/site, puts it and the repo on PYTHONPATH, turns off
# progress bars and the Triton interpreter, and names the card and stack. A driver that another one runs
# (gpu_text_lm.sh runs gpu_sweep.sh) finds ARENA_GPU_ENV set and installs nothing twice.
if [ -z "${ARENA_GPU_ENV:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl 2>/dev/null
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1 TRITON_INTERPRET=0
# Triton's autotuning results (fla autotunes each kernel on its first call: over 5 minutes for chunk_kda's on an
# H100) are files <cache>/<hash>/<kernel>.autotune.json, valid for the same Triton and GPU architecture. A carried
# .triton_autotune.tgz (a previous call's $OUT/triton_autotune.tgz) is restored into the cache; `pack_autotune`
# writes the cache's results to $OUT/triton_autotune.tgz for the next call (the compiled kernels are not kept).
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$HOME/.triton/cache}
mkdir -p "$TRITON_CACHE_DIR"
if [ -z "${ARENA_GPU_ENV:-}" ] && [ -f .triton_autotune.tgz ]; then
  restored=$(tar tzf .triton_autotune.tgz | grep -c 'autotune.json$')
  tar xzf .triton_autotune.tgz -C "$TRITON_CACHE_DIR" && echo "restored $restored autotuning results into $TRITON_CACHE_DIR"
fi
pack_autotune() {
  local out=${OUT:-results/gpu}
  mkdir -p "$out"
  (cd "$TRITON_CACHE_DIR" && find . -name '*.autotune.json' | sort | tar czf "$out/triton_autotune.tgz" -T -) \
    && echo "packed $(tar tzf "$out/triton_autotune.tgz" | grep -c 'autotune.json$') autotuning results into" \
      "$out/triton_autotune.tgz (carry it as .triton_autotune.tgz)"
}
if [ -z "${ARENA_GPU_ENV:-}" ]; then
  nvidia-smi -L
  python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
fi
export ARENA_GPU_ENV=1
