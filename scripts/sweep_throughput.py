"""Sweep throughput: training steps of all points in a results folder, over a wall time, and what it implies.

    python scripts/sweep_throughput.py results/runs/kimi_synthetic --wall 300
    python scripts/sweep_throughput.py RUNS --save before.json          # before a sweep: steps per run so far
    python scripts/sweep_throughput.py RUNS --wall 300 --baseline before.json   # after it: only this sweep's steps
    python scripts/sweep_throughput.py RUNS --unfinished                # run dirs not finished, one a line

Counts each run directory's steps (summary.json's `steps` when the run finished, else the last evaluated step in
metrics.jsonl, so an interrupted point counts up to its last evaluation) and prints steps, points, steps/s over
`--wall` seconds, and by mixer and training length. A run is finished when its summary says completed or diverged
(an interrupted run writes a summary too). With a baseline, a resumed sweep counts only the steps trained since.
scripts/gpu_sweep.sh (and so scripts/gpu_kimi_synthetic.sh) calls it after each sweep.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def last_logged_step(run_dir: Path) -> int:
    """The last step metrics.jsonl records (0 without one): how far a run that has not finished got."""
    steps = 0
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            try:
                steps = max(steps, int(json.loads(line).get("step", 0)))
            except (ValueError, TypeError, AttributeError):
                continue  # a line being written
    return steps


def run_steps(run_dir: Path) -> tuple[int, bool]:
    """(steps trained, finished) of one run directory."""
    summary = run_dir / "summary.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        if data.get("status") in ("completed", "diverged"):
            return int(data.get("steps") or 0), True
    return last_logged_step(run_dir), False


def run_dirs(folder: Path) -> list[Path]:
    """The run directories under `folder`: those with a config.yaml, not Hydra's or a checkpoint's copy."""
    return [config.parent for config in sorted(folder.rglob("config.yaml"))
            if not {".hydra", "checkpoint"} & set(config.relative_to(folder).parts[:-1])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--wall", type=float, help="wall time of the sweep, seconds")
    parser.add_argument("--baseline", type=Path, help="a --save file from before the sweep: count only later steps")
    parser.add_argument("--save", type=Path, help="write {run dir: [steps, finished]} as JSON and print nothing")
    parser.add_argument("--unfinished", action="store_true", help="print the run dirs not finished, one a line")
    args = parser.parse_args()
    if args.save is None and not args.unfinished and (args.wall is None or args.wall <= 0):
        print(f"sweep_throughput: --wall must be > 0 seconds (or use --save / --unfinished), got {args.wall}",
              file=sys.stderr)
        return 2
    if not args.folder.is_dir():
        if args.save is not None:  # nothing ran yet: an empty baseline
            args.save.write_text("{}")
            return 0
        print(f"sweep_throughput: no such folder {args.folder}", file=sys.stderr)
        return 2
    runs = {str(run): run_steps(run) for run in run_dirs(args.folder)}
    if args.save is not None:
        args.save.write_text(json.dumps(runs))
        return 0
    if args.unfinished:
        print("\n".join(run for run, (_, done) in runs.items() if not done))
        return 0
    before = json.loads(args.baseline.read_text()) if args.baseline else {}
    total, finished = 0, 0
    by_key: dict[str, int] = defaultdict(int)
    for run, (steps, done) in runs.items():
        steps -= min(steps, before.get(run, (0, False))[0])  # a resumed run counts from where it stood
        total += steps
        finished += done
        point = Path(run) if not Path(run).name.startswith("attempt_") else Path(run).parent  # a rerun's own dir
        name = point.name.split("_", 1)[-1]  # <job>_<mixer>-<task>-L<len>-lr<lr>
        by_key[name.split("-")[0] + " " + next((p for p in name.split("-") if p.startswith("L")), "?")] += steps
    since = f", {sum(done for _, done in before.values())} before this sweep" if args.baseline else ""
    print(f"sweep throughput: {total} training steps over {len(runs)} points ({finished} finished{since}) in "
          f"{args.wall:.0f} s = {total / args.wall:.1f} steps/s")
    for key, steps in sorted(by_key.items()):
        print(f"  {key}: {steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
