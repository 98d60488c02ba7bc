"""Time every probe's batch generator on one CPU thread: can it keep up with a training step?

    python scripts/time_task_generation.py                        # 64 x 1024 and 64 x 2048, budget 10 ms
    python scripts/time_task_generation.py --seq-len 1024 --batch 64
    python scripts/time_task_generation.py --seq-len 512 --seq-len 4096 --calls 20 --budget-ms 5

Every conf/task/<name>.yaml (each registered task has one; stack_kimi is the stack task in Kimi's setting) is
built with its YAML values plus `seq_len=L`. When those knobs cannot fit L, the task built at its YAML length is
stretched with `at_length(L)` instead, and when even that fails a setting from the YAML's comments is applied
(both are named in the `setting` column). Tasks whose train and test content lengths differ (parity, modular
arithmetic, word problems) get a second row, `at_length/test`: `at_length(L)` sampled on the test split, whose
content fills the whole sequence, the worst case of such a generator.

Each row times `task.generate(batch, [0, 3, step], split=...)`: one warm-up call, then the median over `--calls`
calls (step = 0, 1, ...), and marks PASS or SLOW against the budget. Thread pools are pinned to one thread before
numpy and torch load, so the numbers are for one core.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and torch are imported, or their pools are already sized

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from arena.config_schema import compose_options  # noqa: E402
from arena.errors import ConfigError  # noqa: E402
from arena.tasks import build_task, list_tasks  # noqa: E402

# settings from the YAML comments for knobs that neither seq_len=L nor at_length(L) can fit
FALLBACKS = {"mqar_kimi": {"vocab_size": 8192}}  # N = (L - 1) // 3 keys need vocab_size >= 2 N + 2


def configs() -> list[tuple[str, dict]]:
    """(config name, settings) for every conf/task file (its YAML on its schema, as a run composes it), plus bare
    defaults for a task without one."""
    out, seen = [], set()
    for stem, spec in compose_options("task").items():
        seen.add(spec["name"])
        out.append((stem, spec))
    out += [(name, {"name": name}) for name in list_tasks() if name not in seen]
    return out


def build_at(spec: dict, seq_len: int) -> list[tuple[str, str, object]]:
    """[(setting, split, task)]: the YAML task at seq_len (see the module docstring for the fallbacks)."""
    spec = dict(spec)
    name = spec.pop("name")
    spec.pop("num_train", None)  # irrelevant to one batch
    rows = []
    try:
        rows.append(("yaml", "train", build_task(name, **{**spec, "seq_len": seq_len})))
    except ConfigError:
        try:
            rows.append(("at_length", "train", build_task(name, **spec).at_length(seq_len)))
        except ConfigError:
            extra = FALLBACKS.get(name)
            if extra is None:
                raise
            note = ",".join(f"{k}={v}" for k, v in extra.items())
            rows.append((f"yaml+{note}", "train", build_task(name, **{**spec, **extra, "seq_len": seq_len})))
    if "test_max_len" in spec:
        rows.append(("at_length/test", "test", build_task(name, **spec).at_length(seq_len)))
    return rows


def time_generate(task, batch: int, split: str, calls: int) -> float:
    """Median milliseconds of one generate call, after a warm-up call."""
    task.generate(batch, [0, 3, 10_000], split=split)
    times = []
    for step in range(calls):
        start = time.perf_counter()
        out = task.generate(batch, [0, 3, step], split=split)
        times.append(time.perf_counter() - start)
    if tuple(out.inputs.shape) != (batch, task.seq_len):
        raise ValueError(f"generate gave inputs of shape {tuple(out.inputs.shape)}, expected ({batch}, {task.seq_len})")
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, action="append", help="sequence length(s); default 1024 and 2048")
    parser.add_argument("--batch", type=int, default=64, help="sequences per batch")
    parser.add_argument("--calls", type=int, default=10, help="timed calls per row (the median is reported)")
    parser.add_argument("--budget-ms", type=float, default=10.0, help="PASS at or under this many milliseconds")
    parser.add_argument("--only", nargs="*", default=None, help="config names to time (default: all)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.calls < 1:
        raise ValueError(f"--batch={args.batch} and --calls={args.calls} must be >= 1")
    torch.set_num_threads(1)

    for seq_len in args.seq_len or [1024, 2048]:
        rows = []
        for conf, spec in configs():
            if args.only is not None and conf not in args.only:
                continue
            for setting, split, task in build_at(spec, seq_len):
                rows.append((time_generate(task, args.batch, split, args.calls), conf, setting, split))
        print(f"\n{args.batch} x {seq_len}, one thread, median of {args.calls} calls, budget {args.budget_ms:g} ms")
        print(f"{'config':<28} {'setting':<24} {'split':<6} {'ms':>9}  verdict")
        for ms, conf, setting, split in sorted(rows, reverse=True):
            verdict = "PASS" if ms <= args.budget_ms else "SLOW"
            print(f"{conf:<28} {setting:<24} {split:<6} {ms:>9.2f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
