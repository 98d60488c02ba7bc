#!/usr/bin/env bash
# Any experiment preset (conf/experiment/<name>.yaml) on a GPU machine, resumable across device calls: each call
# runs until TIME_LIMIT, then packs every run directory of the preset into $OUT/<name>_runs.tgz. Carry
# `results/runs/<name>` (unpacked here from that archive) into the next call and the same command skips every
# finished point (config_hash) and goes on. Every call writes to the same sweep folder ($runs/sweep), so a point
# that TIME_LIMIT stopped (SIGTERM: it checkpoints at its next step) resumes from that checkpoint in its own run dir
# instead of starting again in a new folder. The archive leaves out every checkpoint (files come back from the device
# at 16 MiB at most); the checkpoints of the runs that did not finish go to $OUT/<name>_resume.tgz, to unpack beside
# it, where they fit in those 16 MiB (else those runs start again next call). REPORT=1 also runs `python -m
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
# a point stopped mid-run resumes from its checkpoint: pack those of unfinished run dirs (finished ones need none),
# where they fit in what the device returns (16 MiB a file; a 22M-parameter model's checkpoint is ~0.4 GB)
# (an interrupted run writes a summary.json too: sweep_throughput.py reads its status)
unfinished=()
while IFS= read -r run; do
  [ -d "$run/checkpoint" ] && unfinished+=("$run/checkpoint")
done < <(python3 scripts/sweep_throughput.py "$runs" --unfinished)
if [ "${#unfinished[@]}" -gt 0 ]; then
  mib=$(du -cm "${unfinished[@]}" | tail -n 1 | cut -f1)
  if [ "$mib" -le 16 ]; then
    tar czf "$out/${EXPERIMENT}_resume.tgz" "${unfinished[@]}"
    echo "checkpoints of ${#unfinished[@]} unfinished runs: $out/${EXPERIMENT}_resume.tgz ($(du -h "$out/${EXPERIMENT}_resume.tgz" | cut -f1))"
  else
    echo "checkpoints of ${#unfinished[@]} unfinished runs: ${mib} MiB, past the 16 MiB a file the device returns: those runs start again"
  fi
fi
grep -h "arena: \(completed\|diverged\|error\|lm-eval\|warning\)" "$out/${EXPERIMENT}_sweep.log" | tail -20
