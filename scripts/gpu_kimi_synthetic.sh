#!/usr/bin/env bash
# Kimi Linear's Figure 4 (conf/experiment/kimi_synthetic.yaml) on a GPU machine, reduced to fit the device time,
# resumable across device calls: each call runs until TIME_LIMIT, then packs every run directory into
# $OUT/kimi_runs.tgz; carry `results/runs/kimi_synthetic` (unpacked here from that archive) into the next call
# and the same command skips every finished point (config_hash) and goes on.
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
N_JOBS=${N_JOBS:-4}
EXTRA=${EXTRA:-}                   # more overrides, e.g. EXTRA="train.eval_every=500"
TIME_LIMIT=${TIME_LIMIT:-540}      # seconds, inside the device tool's 600 s per call
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl 2>/dev/null
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
out=${OUT:-results/gpu}; mkdir -p "$out"
python3 scripts/sweep_throughput.py results/runs/kimi_synthetic --save /tmp/sweep_before.json
start=$(date +%s)
# shellcheck disable=SC2086
timeout "$TIME_LIMIT" python3 -m arena.run -m +experiment=kimi_synthetic \
  task.seq_len="$LENGTHS" train.lr="$LRS" mixer="$MIXERS" train.steps="$STEPS" \
  hydra/launcher=joblib hydra.launcher.n_jobs="$N_JOBS" $EXTRA > "$out/sweep.log" 2>&1
echo "sweep exit $? (124 = stopped at TIME_LIMIT; rerun with the archive carried to go on)"
# sweep throughput: this call's training steps (finished points or not, as far as their last evaluation) / wall
python3 scripts/sweep_throughput.py results/runs/kimi_synthetic --wall $(( $(date +%s) - start )) \
  --baseline /tmp/sweep_before.json
tar czf "$out/kimi_runs.tgz" results/runs/kimi_synthetic
grep -h "arena: \(completed\|diverged\|error\)" "$out/sweep.log" | tail -20
