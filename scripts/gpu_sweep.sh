#!/usr/bin/env bash
# Any experiment preset (conf/experiment/<name>.yaml) on a GPU machine, resumable across device calls: each call
# runs until TIME_LIMIT, then packs every run directory of the preset into $OUT/<name>_runs.tgz. Carry
# `results/runs/<name>` (unpacked here from that archive) into the next call and the same command skips every
# finished point (config_hash) and goes on. Every call writes to the same sweep folder ($runs/sweep), so a point
# that TIME_LIMIT stopped (SIGTERM: it checkpoints at its next step) resumes from that checkpoint in its own run dir
# instead of starting again in a new folder. The archive leaves out every checkpoint (files come back from the device
# at 16 MiB at most); the checkpoints of the runs that did not finish go to $OUT/<name>_resume_<i>.tgz (15 MiB each
# at most), to unpack beside it, where they fit (else those runs start again next call). REPORT=1 also runs `python -m
# arena.report` over the runs into results/runs/<name>_report, packed with them, its Markdown beside the archive.
#   EXPERIMENT=kda_vs_gdn bash scripts/gpu_sweep.sh                     # the whole preset grid
#   EXPERIMENT=kda_vs_gdn EXTRA="mixer=kda mixer.gate=bounded" bash scripts/gpu_sweep.sh   # a narrowed grid
# Afterwards, here: python -m arena.report results/runs/<name> --out results/<date>_<name>
set -uo pipefail
EXPERIMENT=${EXPERIMENT:?set EXPERIMENT to a conf/experiment name}
N_JOBS=${N_JOBS:-4}                # sweep points sharing the GPU as processes (small runs are launch-bound)
EXTRA=${EXTRA:-}                   # more overrides (narrow the grid, train.cuda_graphs=on, ...)
TIME_LIMIT=${TIME_LIMIT:-540}      # seconds, inside the device tool's 600 s per call
REPORT=${REPORT:-0}                # 1: the report too (up to 60 s more: leave room in TIME_LIMIT)
[ -f "conf/experiment/$EXPERIMENT.yaml" ] || { echo "gpu_sweep: no conf/experiment/$EXPERIMENT.yaml" >&2; exit 2; }
# shellcheck source=scripts/gpu_env.sh
. "$(dirname "$0")/gpu_env.sh"     # carried wheels, PYTHONPATH, the card and stack
out=${OUT:-results/gpu}; mkdir -p "$out"
runs=results/runs/$EXPERIMENT report=()
python3 scripts/sweep_throughput.py "$runs" --save /tmp/sweep_before.json  # steps per run so far (a resumed sweep)
start=$(date +%s)
# shellcheck disable=SC2086
timeout "$TIME_LIMIT" python3 -m arena.run -m +experiment="$EXPERIMENT" hydra/launcher=joblib \
  hydra.launcher.n_jobs="$N_JOBS" hydra.sweep.dir="$runs/sweep" $EXTRA > "$out/${EXPERIMENT}_sweep.log" 2>&1
echo "sweep exit $? (124 = stopped at TIME_LIMIT; rerun with the archive carried to go on)"
python3 scripts/sweep_throughput.py "$runs" --wall $(( $(date +%s) - start )) --baseline /tmp/sweep_before.json
if [ "$REPORT" = 1 ]; then
  report=("results/runs/${EXPERIMENT}_report")
  timeout 60 python3 -m arena.report "$runs" --out "${report[0]}" > "$out/${EXPERIMENT}_report.log" 2>&1 \
    && cp "${report[0]}/report.md" "$out/${EXPERIMENT}_report.md"
fi
tar czf "$out/${EXPERIMENT}_runs.tgz" --exclude=checkpoint "$runs" "${report[@]}"
# a point stopped mid-run resumes from its checkpoint: pack those of unfinished run dirs (finished ones need none)
# into archives of at most 15 MiB (the device returns files of 16 MiB at most, and 8 files a call: runs, log, report
# and up to RESUME_PARTS of these); a checkpoint past 15 MiB (a 22M-parameter model's is ~0.4 GB) starts again.
# (an interrupted run writes a summary.json too: sweep_throughput.py reads its status)
unfinished=()
while IFS= read -r run; do
  [ -d "$run/checkpoint" ] && unfinished+=("$run/checkpoint")
done < <(python3 scripts/sweep_throughput.py "$runs" --unfinished)
part=0 batch=() batch_mib=0 left=0
flush_batch() {
  if [ "${#batch[@]}" -gt 0 ]; then
    tar czf "$out/${EXPERIMENT}_resume_$part.tgz" "${batch[@]}"
    echo "checkpoints of ${#batch[@]} unfinished runs: $out/${EXPERIMENT}_resume_$part.tgz ($(du -h "$out/${EXPERIMENT}_resume_$part.tgz" | cut -f1))"
    part=$((part + 1)) batch=() batch_mib=0
  fi
}
for ckpt in "${unfinished[@]}"; do
  mib=$(du -sm "$ckpt" | cut -f1)
  if [ "$mib" -gt 15 ]; then left=$((left + 1)); continue; fi  # too large for any archive: no flush for it
  [ $((batch_mib + mib)) -gt 15 ] && flush_batch
  if [ "$part" -ge "${RESUME_PARTS:-5}" ]; then left=$((left + 1)); continue; fi
  batch+=("$ckpt") batch_mib=$((batch_mib + mib))
done
flush_batch
[ "$left" -gt 0 ] && echo "checkpoints of $left unfinished runs do not fit the archives the device returns: those runs start again"
grep -h "arena: \(completed\|diverged\|error\|lm-eval\|warning\)" "$out/${EXPERIMENT}_sweep.log" | tail -20
