#!/usr/bin/env bash
# Sourced (`. scripts/gpu_env.sh`) by the GPU drivers gpu_train_speed.sh and gpu_bench_model.sh on the GPU machine:
# installs the carried wheels (.whl: hydra-core, omegaconf, antlr4, ... for an offline image) into /tmp/site, puts
# it and the repo on PYTHONPATH, turns off progress bars and the Triton interpreter, and names the card and stack.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl 2>/dev/null
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1 TRITON_INTERPRET=0
nvidia-smi -L
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
