#!/usr/bin/env bash
# Kimi Linear's Figure 4 (conf/experiment/kimi_synthetic.yaml) on a GPU machine, reduced to fit the device time:
# scripts/gpu_sweep.sh (resumable across device calls; runs and unfinished runs' checkpoints packed into $OUT) with
# the grid narrowed by the variables below. Carry `results/runs/kimi_synthetic` (unpacked from
# $OUT/kimi_synthetic_runs.tgz and any kimi_synthetic_resume_*.tgz) into the next call: the same command skips every
# finished point (config_hash), resumes the stopped ones and goes on.
#   bash scripts/gpu_kimi_synthetic.sh                      # defaults below
#   STEPS=5000 LENGTHS=256,512,1024,2048 bash scripts/gpu_kimi_synthetic.sh
# Afterwards, here: python -m arena.report results/runs/kimi_synthetic --out results/<date>_kimi_synthetic
set -uo pipefail
STEPS=${STEPS:-3000}               # the paper: up to 20k (GDN needs 10-20k at L=1024, docs/probes.md#mqar_kimi)
LENGTHS=${LENGTHS:-256,512,1024}   # the paper: 256,512,1024,2048
LRS=${LRS:-5e-4,1e-3}              # the paper: 5e-5,1e-4,5e-4,1e-3
MIXERS=${MIXERS:-kda,gdn,mamba2,mla,mla_nope}
# sweep points sharing the GPU as separate processes: small runs are launch-bound, so they gain from sharing
# (measured on an H200 with scripts/sweep_sharing.py: KDA at T=256, 4 processes = 3.2x one process's steps/s)
export N_JOBS=${N_JOBS:-4} TIME_LIMIT=${TIME_LIMIT:-540}
export EXPERIMENT=kimi_synthetic
export EXTRA="task.seq_len=$LENGTHS train.lr=$LRS mixer=$MIXERS train.steps=$STEPS ${EXTRA:-}"
exec bash "$(dirname "$0")/gpu_sweep.sh"
