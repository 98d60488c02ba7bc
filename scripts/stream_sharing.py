"""Can several small runs share one GPU inside ONE process? Aggregate training throughput of K runs stepped
round-robin, each on its own CUDA stream, against one run alone.

    python scripts/stream_sharing.py [--mixers kda,mla] [--seq-lens 256,1024] [--ks 1,2,4,8] [--steps 100]
                                     [task=mqar_kimi] [train.cuda_graphs=auto] [model.d_model=...]

Why: with CUDA graphs (train.cuda_graphs) a small run is no longer bound by the host's launch rate, and several
PROCESSES on one card only time-slice it (results/2026-12-05_train_speed_h100: 12 graphed runs at T = 256 made
about the steps of one). Kernels of different streams of one process can run at the same time, so if a single
small run leaves most of the card's SMs idle, K runs in one process, one stream each, would multiply the
throughput. This measures that before anything is built on it: for each (mixer, T, K) it builds K copies of the
`python -m arena.bench train` row (arena/bench/train_config.py: kimi_2l, batch 64, the task given), one
arena.train.Trainer each on its own batch stream, steps them round-robin (each step queued on that run's stream)
and reports steps/s summed over the K runs, and that over K = 1. A ratio near K: the card had room; near 1: the
runs only share a saturated card. The table is printed last; `--out FILE.csv` also writes it.

On the CPU the path runs (no streams; the tests use it), but its timings mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when run as a file from anywhere


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be a positive integer")
    return values


def measure(row: dict, k: int, steps: int, warmup: int) -> float:
    """Steps/s summed over k copies of `row`'s run, each on its own stream, stepped round-robin."""
    import torch

    from arena.bench.train_steps import TrainerSteps, _sync
    from arena.train import Run

    runs = [Run(row["config"], row["specs"], row["chosen"]) for _ in range(k)]
    device = runs[0].device
    steppers = [TrainerSteps(run) for run in runs]
    streams = [torch.cuda.Stream(device) if device.type == "cuda" else None for _ in range(k)]

    def one_round(i: int) -> None:
        for stepper, stream in zip(steppers, streams):
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                stepper.full(i)

    try:
        for i in range(warmup):  # the first step captures the graphs (and autotunes)
            one_round(i)
        _sync(device)
        start = time.perf_counter()
        for i in range(warmup, warmup + steps):
            one_round(i)
        _sync(device)
        rate = k * steps / (time.perf_counter() - start)
        taken = [stepper.trainer.steps_in_window for stepper in steppers]  # no window was read: every step counted
        if taken != [warmup + steps] * k:
            raise RuntimeError(f"the {k} runs took {taken} steps, not {warmup + steps} each")
        return rate
    finally:
        for stepper in steppers:
            stepper.close()
        steppers.clear()  # drop the models and their graphs before the next K
        runs.clear()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixers", default="kda,mla", help="comma-separated bench rows (default kda,mla)")
    parser.add_argument("--seq-lens", type=_ints, default=[256, 1024])
    parser.add_argument("--ks", type=_ints, default=[1, 2, 4, 8], help="runs per process (default 1,2,4,8)")
    parser.add_argument("--steps", type=int, default=100, help="timed rounds (each steps every run once)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this CSV")
    parser.add_argument("overrides", nargs="*", help="bench keys or run-config overrides, as for arena.bench train")
    args = parser.parse_args(argv)
    import torch

    from arena.bench.train_config import check_rows, compose_rows, settings_from
    from arena.bench.train_report import write_csv

    try:
        s = settings_from([f"mixers=[{args.mixers}]", f"seq_lens=[{','.join(map(str, args.seq_lens))}]",
                           *args.overrides], torch.cuda.is_available())
        rows = compose_rows(s)
        check_rows(rows, s.cuda)
    except Exception as err:  # the bench's checks: one line, before anything runs
        print(f"stream_sharing: error: {err}", file=sys.stderr)
        return 2
    if not s.cuda:
        print("stream_sharing: no CUDA device: the path runs, the timings mean nothing", file=sys.stderr)
    table = []
    for row in rows:
        alone = None
        for k in args.ks:
            rate = measure(row, k, args.steps, args.warmup)
            alone = rate if alone is None else alone  # the first K's rate is the reference
            table.append({"mixer": row["mixer"], "T": row["T"], "runs": k, "steps_per_s": round(rate, 1),
                          "over_first": round(rate / alone, 2)})
            print(f"{row['mixer']} T={row['T']} K={k}: {rate:.1f} steps/s", file=sys.stderr, flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_csv(table, args.out)  # the bench's writer: atomic, a reader never sees half a table
    device = torch.cuda.get_device_name() if s.cuda else "CPU"
    print(f"\nK runs in one process, one CUDA stream each ({device}); over_first = steps/s over K = {args.ks[0]}")
    print(f"{'mixer':<12}{'T':>6}{'K':>4}{'steps/s':>10}{'over_first':>12}")
    for r in table:
        print(f"{r['mixer']:<12}{r['T']:>6}{r['runs']:>4}{r['steps_per_s']:>10}{r['over_first']:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
