"""Accuracy of trained position-lookup runs by the position each query names: which context positions a model
can find (the NoPE question, results/2026-12-06_nope_vs_rope/).

    python scripts/position_lookup_by_position.py RUN_DIR [RUN_DIR ...] [--length 256] [--num 1000]

For each run dir (its checkpoint, arena.model.load, the weights its test scored) the task is rebuilt from the run's
config.yaml (task position_lookup) and scored on `--num` fresh test sequences of `--length` tokens
(`task.at_length`): one row per run with the accuracy on the queries naming position j = 0, 1, ... of the context
(each answer is scored at its query token P_j, arena/tasks/position_lookup.py), then the accuracy by the query's
order in the sequence (the later queries see the earlier, teacher-forced answers). Runs on CPU in seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

from arena.model import load
from arena.tasks import IGNORE, build_task
from arena.tasks.position_lookup import FIRST_POSITION  # token id of P_0


def task_of(run_dir: Path):
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())["task"]
    name = cfg.pop("name")
    if name != "position_lookup":
        raise ValueError(f"{run_dir}: task {name!r} is not position_lookup")
    return build_task(name, **cfg)


@torch.no_grad()
def by_position(model, task, length: int, num: int, seed: int) -> tuple[list[float], list[float]]:
    """(accuracy by named position j < num_positions, accuracy by query order < num_queries); NaN where none."""
    batch = task.at_length(length).generate(num, seed, "test")
    rows = max(1, 2**17 // length)  # sequences per forward: attention's [T, T] scores stay small on a CPU
    guess = torch.cat([model(batch.inputs[i:i + rows])[0].argmax(-1) for i in range(0, num, rows)])  # [B, T]
    scored = batch.targets != IGNORE
    right = (guess == batch.targets.clamp(min=0)) & scored
    named = batch.inputs - FIRST_POSITION  # the query token at a scored position names its position
    order = scored.long().cumsum(1) - 1

    def rate(mask: torch.Tensor) -> float:
        total = (scored & mask).sum().item()
        return (right & mask).sum().item() / total if total else float("nan")

    return ([rate(named == j) for j in range(task.cfg.num_positions)],
            [rate(order == q) for q in range(task.cfg.num_queries)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--length", type=int, default=0, help="sequence length (default: the run's seq_len)")
    parser.add_argument("--num", type=int, default=1000, help="test sequences (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.num < 1 or args.length < 0:
        sys.exit(f"--num must be >= 1 (got {args.num}) and --length >= 0 (got {args.length})")
    torch.set_num_threads(1)  # small models: one thread is the fastest on a shared CPU
    for run_dir in args.run_dirs:
        try:
            task = task_of(run_dir)
        except (OSError, ValueError) as err:
            sys.exit(f"position_lookup_by_position: {err}")
        length = args.length or task.cfg.seq_len
        positions, orders = by_position(load(run_dir), task, length, args.num, args.seed)
        print(f"{run_dir.name} (length {length}, chance {task.chance_accuracy:.3f})")
        print("  by named position j: " + " ".join(f"{j}:{a:.2f}" for j, a in enumerate(positions)))
        print("  by query order:      " + " ".join(f"{q}:{a:.2f}" for q, a in enumerate(orders)))


if __name__ == "__main__":
    main()
