#!/usr/bin/env bash
# Time the embedded default job for each mixer, one run at a time, and print a Markdown table for the README.
#   bash scripts/measure_defaults.sh [results dir]     (default: results/runs/defaults)
set -euo pipefail
out=${1:-results/runs/defaults}
echo "| command | wall time (s) | steps | best validation accuracy | test accuracy | status |"
echo "| --- | --- | --- | --- | --- | --- |"
for args in "mixer=kda" "mixer=gdn" "mixer=mla" "model=hybrid_3to1" "mixer=mamba2" "mixer=mla_nope"; do
  dir="$out/${args//[=]/-}"
  rm -rf "$dir"
  start=$(date +%s.%N)
  python -m arena.run $args results_dir="$dir" 2>/dev/null || true
  end=$(date +%s.%N)
  python - "$dir" "$args" "$start" "$end" <<'PY'
import json, pathlib, sys
d, args, start, end = pathlib.Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
s = json.loads(next(d.rglob("summary.json")).read_text())
print(f"| `python -m arena.run {args}` | {end - start:.0f} | {s['steps']} | {s['valid_accuracy']:.3f} "
      f"| {s['test_accuracy']:.3f} | {s['status']} |")
PY
done
