"""Sweep throughput: training steps of all points in a results folder, over a wall time, and what it implies.

    python scripts/sweep_throughput.py results/runs/kimi_synthetic --wall 300

Counts each run directory's steps (summary.json's `steps` when the run finished, else the last evaluated step in
metrics.jsonl, so an interrupted point counts up to its last evaluation) and prints steps, points, steps/s over
`--wall` seconds, and by mixer and training length. Scripts/gpu_kimi_synthetic.sh calls it after each sweep.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def run_steps(run_dir: Path) -> tuple[int, bool]:
    """(steps trained, finished) of one run directory."""
    summary = run_dir / "summary.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        if data.get("status") in ("completed", "diverged"):
            return int(data.get("steps") or 0), True
    steps = 0
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            try:
                steps = max(steps, int(json.loads(line).get("step", 0)))
            except ValueError:
                continue  # a line being written
    return steps, False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--wall", type=float, required=True, help="wall time of the sweep, seconds")
    args = parser.parse_args()
    if not args.folder.is_dir() or args.wall <= 0:
        print(f"sweep_throughput: need an existing folder and --wall > 0, got {args.folder}, {args.wall}",
              file=sys.stderr)
        return 2
    total, finished, points = 0, 0, 0
    by_key: dict[str, int] = defaultdict(int)
    for config in sorted(args.folder.rglob("config.yaml")):
        if config.parent.name == ".hydra":
            continue
        steps, done = run_steps(config.parent)
        total += steps
        finished += done
        points += 1
        name = config.parent.name.split("_", 1)[-1]  # <job>_<mixer>-<task>-L<len>-lr<lr>
        by_key[name.split("-")[0] + " " + next((p for p in name.split("-") if p.startswith("L")), "?")] += steps
    print(f"sweep throughput: {total} training steps over {points} points ({finished} finished) in "
          f"{args.wall:.0f} s = {total / args.wall:.1f} steps/s")
    for key, steps in sorted(by_key.items()):
        print(f"  {key}: {steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
