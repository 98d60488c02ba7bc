#!/usr/bin/env bash
# Run several points files (scripts/run_points.py) at once on one GPU machine, each as a pool of its own size, and
# pack what a device call can bring back. On the GPU machine, from the repo root, with the wheels in .whl:
#
#     LIMIT=480 bash scripts/gpu_points.sh big.tsv:3 small.tsv:9 [more.tsv:N ...]
#
# Why pools: runs of very different memory share the card (an MQAR-1,024 run peaks at ~12 GB, a parity run at
# under 1 GB), so the large ones get a pool small enough that their peaks fit the 80 GB, and launch-bound small
# runs fill the remaining CPU cores (one process each). Each point's OpenMP / MKL / OpenBLAS threads: the host's
# cores over all the points of all pools (unless set), so the launch-bound runs do not oversubscribe the host.
# Every pool stops at LIMIT seconds (SIGTERM: each run checkpoints and a later call resumes it). Give LIMIT at most
# the device call's limit less what runs before this script and ~70 s (40 s of grace for the checkpoints, then the
# packing): a call killed before the packing returns none of the archives below. Idempotent: run
# directories stay on a warm machine's disk between calls (results/runs is git-ignored), so the same command goes
# on where the last one stopped; on a fresh machine, carried archives named in RESTORE (space-separated .tgz
# files of run directories, e.g. an earlier call's runs.tgz or resume.tgz) are unpacked first, for every run root
# that is not there yet.
#
# RUNNER, when set, is passed to run_points.py as --runner (the tests use a stand-in for arena.run). Into $OUT
# (default results/gpu): pools.log (each pool's run_points output), mem.log (GPU memory and
# utilisation every MEM_EVERY seconds, default 20), runs.tgz (every run directory of the points, without checkpoints), point_logs.tgz
# (each run's own log), resume.tgz (checkpoints of unfinished runs, smallest first, up to RESUME_MIB, default 15:
# what a device call returns is limited to 16 MiB a file), weights.tgz (the final weights of finished runs, their
# checkpoint/ without the optimizer's trainer.pt: what arena.model.load and scripts/accuracy_by_length.py read;
# smallest first, up to WEIGHTS_MIB, default 15; unpack it over runs.tgz). Exit status: the largest of the pools'
# exit statuses (run_points: 0 all finished, 1 some failed, 124 time limit, 2 malformed points file).
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: LIMIT=480 bash scripts/gpu_points.sh POINTS.tsv:JOBS [POINTS.tsv:JOBS ...]" >&2; exit 2; }
for pool in "$@"; do
  file=${pool%:*}; jobs=${pool##*:}
  [ -f "$file" ] || { echo "gpu_points: no points file '$file' (give POINTS.tsv:JOBS)" >&2; exit 2; }
  [[ "$jobs" =~ ^[1-9][0-9]*$ ]] && [ "$pool" != "$file" ] || {
    echo "gpu_points: '$pool' needs a pool size, e.g. $file:4" >&2; exit 2; }
done
. scripts/gpu_env.sh
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}  # less fragmentation across runs
# every pool's points share the host: thread pools of the cores over ALL the points (run_points alone would give
# each pool the cores over its own size), unless the caller set them
total_jobs=0; for pool in "$@"; do total_jobs=$((total_jobs + ${pool##*:})); done
threads=$(( $(nproc) / total_jobs )); [ "$threads" -ge 1 ] || threads=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads} MKL_NUM_THREADS=${MKL_NUM_THREADS:-$threads} \
  OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$threads}
OUT=${OUT:-results/gpu}; mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)  # absolute: the packing below changes folder
LIMIT=${LIMIT:-480}
LOGS=$(mktemp -d)  # each pool's output and each run's log

# the points' run directories, and their parent folders, the run roots (results/runs/<study>)
point_dirs=$(for pool in "$@"; do grep -v '^\s*#' "${pool%:*}" | cut -f1 | grep .; done | sort -u)
roots=$(echo "$point_dirs" | xargs -r -n1 dirname | sort -u)
for archive in ${RESTORE:-}; do
  missing=$(for r in $roots; do [ -d "$r" ] || echo "$r"; done)
  [ -n "$missing" ] && [ -f "$archive" ] && { echo "gpu_points: restoring $archive"; tar xzf "$archive"; }
done

pids=(); logs=()
for pool in "$@"; do
  file=${pool%:*}; name=$(basename "$file" .tsv)
  python3 scripts/run_points.py "$file" --jobs "${pool##*:}" --time-limit "$LIMIT" --grace 40 \
    --log-dir "$LOGS/point_logs/$name" ${RUNNER:+--runner "$RUNNER"} > "$LOGS/pool_$name.log" 2>&1 &
  pids+=($!); logs+=("$LOGS/pool_$name.log")
done
while :; do
  alive=0; for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ $alive = 1 ] || break
  echo "$(date +%T) $(nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader)" >> "$OUT/mem.log"
  sleep "${MEM_EVERY:-20}"
done
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"; rc=$?; [ $rc -gt $status ] && status=$rc
  { echo "== ${logs[$i]} (exit $rc)"; cat "${logs[$i]}"; } >> "$OUT/pools.log"
done

dirs=$(for d in $point_dirs; do [ -d "$d" ] && echo "$d"; done)
[ -n "$dirs" ] && tar czf "$OUT/runs.tgz" --exclude=checkpoint $dirs
(cd "$LOGS" && tar czf "$OUT/point_logs.tgz" point_logs)
# the points' runs not finished (not earlier attempts beside them)
unfinished=$(for root in $roots; do [ -d "$root" ] && python3 scripts/sweep_throughput.py "$root" --unfinished; done |
  grep -Fxf <(echo "$point_dirs"))
# pack_smallest ARCHIVE CAP_KIB: stdin holds lines '<KiB> <path> [<path> ...]' (one run's files); packs whole lines,
# smallest first, while their total fits CAP_KIB (a device call returns at most 16 MiB a file); prints what it packed
pack_smallest() {
  local total=0 kib paths; local -a keep=()
  while read -r kib paths; do
    [ -n "$paths" ] && [ $((total + kib)) -le "$2" ] && { keep+=($paths); total=$((total + kib)); }
  done < <(sort -n)
  [ "${#keep[@]}" -gt 0 ] && tar czf "$1" "${keep[@]}" && printf '%s\n' "${keep[@]}"
}
packed=$(for d in $unfinished; do [ -d "$d/checkpoint" ] && echo "$(du -sk "$d/checkpoint" | cut -f1) $d/checkpoint"
  done | pack_smallest "$OUT/resume.tgz" $(( ${RESUME_MIB:-15} * 1024 )))
[ -n "$packed" ] && echo "gpu_points: resume.tgz holds" $packed
# finished runs' final weights: checkpoint/ without the optimizer's trainer.pt
packed=$(for d in $dirs; do
    echo "$unfinished" | grep -Fxq "$d" && continue
    files=$(find "$d/checkpoint" -maxdepth 1 -type f ! -name trainer.pt 2>/dev/null | sort)
    [ -n "$files" ] && echo "$(du -ck $files | tail -1 | cut -f1)" $files
  done | pack_smallest "$OUT/weights.tgz" $(( ${WEIGHTS_MIB:-15} * 1024 )))
[ -n "$packed" ] && echo "gpu_points: weights.tgz holds the final weights of" \
  "$(echo "$packed" | xargs -n1 dirname | sort -u | wc -l) finished run(s)"
echo "gpu_points: peak memory $(sort -k2 -n "$OUT/mem.log" | tail -1 | cut -d' ' -f2-)"
grep -h "^results/\|^run_points: [0-9]" "$OUT/pools.log" | grep -v "completed\|not started" | tail -40
grep -h "^run_points: [0-9]" "$OUT/pools.log"
exit $status
