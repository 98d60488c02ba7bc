"""GPU time of a sweep preset's grid, estimated from a measured `python -m arena.bench train` CSV.

    python scripts/estimate_grid_hours.py results/bench/2026-11-28_h200/train_after.csv
    python scripts/estimate_grid_hours.py CSV --experiment kimi_synthetic --steps 2000 --lengths 256,512,1024 --lrs 1e-3

The grid is read from conf/experiment/<experiment>.yaml (its sweeper params: task.seq_len, task, mixer, train.lr)
and can be cut down with the options. Every point is charged `steps` training steps (the preset's train.steps
unless --steps) at the measured single-process ms/step of its (mixer, T) row: no early stop (an upper bound;
points that reach the target accuracy stop sooner), evaluations not counted (every 1,000 steps on 1,000
sequences: under 1 % of a step budget), and every task charged the benchmark task's step time (the model is
the same; MQAR's 8,192-token vocabulary adds embedding and LM-head work that palindrome's 16 does not).
T missing from the CSV is interpolated linearly in T between the measured lengths. With `--sharing N:GAIN`
it also prints the time if N processes shared the GPU at that measured aggregate gain.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def step_ms(rows: dict[tuple[str, int], float], mixer: str, T: int) -> float:
    """Measured ms/step of (mixer, T), linearly interpolated (or extrapolated from the two nearest) in T."""
    if (mixer, T) in rows:
        return rows[(mixer, T)]
    lengths = sorted(t for m, t in rows if m == mixer)
    if len(lengths) < 2:
        raise SystemExit(f"estimate_grid_hours: no measured rows for mixer {mixer!r} near T={T} (the CSV has "
                         f"{', '.join(sorted({m for m, _ in rows}))}): bench it, or leave it out with --mixers")
    lo = max([t for t in lengths if t < T], default=lengths[0])
    hi = min([t for t in lengths if t > T], default=lengths[-1])
    if lo == hi:
        lo, hi = (lengths[-2], lengths[-1]) if T > lengths[-1] else (lengths[0], lengths[1])
    a, b = rows[(mixer, lo)], rows[(mixer, hi)]
    return a + (b - a) * (T - lo) / (hi - lo)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--experiment", default="kimi_synthetic")
    parser.add_argument("--steps", type=int, default=None, help="steps per point (default: the preset's)")
    parser.add_argument("--lengths", default=None)
    parser.add_argument("--lrs", default=None)
    parser.add_argument("--mixers", default=None)
    parser.add_argument("--sharing", default=None, help="N:GAIN, e.g. 4:3.2 (aggregate steps/s over one process)")
    args = parser.parse_args()
    preset = REPO / "conf" / "experiment" / f"{args.experiment}.yaml"
    if not args.csv.is_file() or not preset.is_file():
        print(f"estimate_grid_hours: need an existing CSV and preset, got {args.csv} and {preset}", file=sys.stderr)
        return 2
    spec = yaml.safe_load(preset.read_text())
    params = {k: str(v).split(",") for k, v in spec["hydra"]["sweeper"]["params"].items()}
    lengths = [int(t) for t in (args.lengths.split(",") if args.lengths else params["task.seq_len"])]
    lrs = args.lrs.split(",") if args.lrs else params["train.lr"]
    mixers = args.mixers.split(",") if args.mixers else params["mixer"]
    tasks = params["task"]
    steps = args.steps or int(spec["train"]["steps"])
    with open(args.csv) as f:
        records = list(csv.DictReader(f))
    rows = {(r["mixer"], int(r["T"])): float(r["step_ms"]) for r in records if r["step_ms"] != "nan"}
    device = records[0]["device"] if records else "?"
    points = len(lengths) * len(tasks) * len(mixers) * len(lrs)
    per_point = {(m, T): steps * step_ms(rows, m, T) / 1000 for m in mixers for T in lengths}
    seconds = sum(per_point.values()) * len(tasks) * len(lrs)
    print(f"{args.experiment}: {points} points ({len(lengths)} lengths x {len(tasks)} tasks x {len(mixers)} "
          f"mixers x {len(lrs)} learning rates) x {steps} steps, one seed, no early stop; step times from "
          f"{args.csv.name} ({device}, one process)")
    print(f"  one process at a time: {seconds / 3600:.2f} GPU-hours ({seconds / 60:.1f} minutes)")
    if args.sharing:
        n, gain = args.sharing.split(":")
        print(f"  {n} processes sharing the GPU at the measured {float(gain):.2f}x aggregate: "
              f"{seconds / float(gain) / 3600:.2f} GPU-hours ({seconds / float(gain) / 60:.1f} minutes)")
    print("  per point (s): " + ", ".join(f"{m}@{T} {s:.0f}" for (m, T), s in sorted(per_point.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
