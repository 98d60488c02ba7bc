"""Training batches as the step consumes them, made ahead of it: `StepBatch` and `batch_stream`.

Used by arena/train.py (which re-exports both); `batch_stream(run, start_step)` yields device batches for steps
start_step, start_step + 1, ... of a `arena.train.Run`: a fixed training set in shuffled epochs, or fresh samples
generated in background processes. Its content depends only on (seed, step), never on the worker count, so a run
resumed at step N sees the batches it would have seen. Tests: tests/test_train_loop.py.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from arena.tasks import IGNORE, Batch, Task
from arena.tasks.base import split_seed

if TYPE_CHECKING:
    from arena.train import Run, TrainConfig


@dataclass
class StepBatch:
    """One training batch as the step consumes it: tokens, and the scored positions as flat indices into [B*T]."""
    inputs: torch.Tensor  # [B, T] int64
    scored_index: torch.Tensor  # [S] int64, row-major positions whose target is not IGNORE
    scored_targets: torch.Tensor  # [S] int64

    @staticmethod
    def from_batch(batch: Batch, pin: bool = False) -> StepBatch:
        flat = batch.targets.reshape(-1)
        index = (flat != IGNORE).nonzero().squeeze(1)  # on the host: the device never has to report a count
        out = StepBatch(batch.inputs, index, flat[index])
        return out.pin_memory() if pin else out

    def pin_memory(self) -> StepBatch:  # the name DataLoader(pin_memory=True) calls
        return StepBatch(*(t.pin_memory() for t in (self.inputs, self.scored_index, self.scored_targets)))

    def to(self, device: torch.device) -> StepBatch:
        return StepBatch(*(t.to(device, non_blocking=True) for t in (self.inputs, self.scored_index,
                                                                     self.scored_targets)))


class _FreshBatches(torch.utils.data.Dataset):
    """Batch `step` of a fresh-sample run: task.generate(B, [seed, 3, step]), the same in any worker process."""

    def __init__(self, task: Task, batch_size: int, seed: int, start_step: int):
        self.task, self.batch_size, self.seed, self.start = task, batch_size, seed, start_step

    def __len__(self) -> int:
        return 1 << 40  # unbounded: the loop decides when to stop

    def __getitem__(self, index: int) -> StepBatch:
        batch = self.task.generate(self.batch_size, [self.seed, 3, self.start + index])
        return StepBatch.from_batch(batch)  # the DataLoader pins it (pin_memory=True on CUDA)


def _workers(cfg: TrainConfig, device: torch.device) -> int:
    return (1 if device.type == "cuda" else 0) if cfg.data_workers == -1 else cfg.data_workers


def batch_stream(run: Run, start_step: int = 0) -> Iterator[StepBatch]:
    """Device batches for steps start_step, start_step + 1, ... (endless).

    A fixed training set (task.num_train > 0) is drawn in shuffled epochs on the host. Fresh samples come from
    `train.data_workers` background processes (a torch DataLoader), generated and pinned ahead of the step, so
    generation overlaps the GPU's work; their content depends only on (seed, step), never on the worker count.
    """
    cfg, task, device = run.train_cfg, run.task, run.device
    seed, pin = cfg.seed, device.type == "cuda"
    if task.cfg.num_train:
        fixed = task.generate(task.cfg.num_train, split_seed(seed, "train"))
        order_rng = torch.Generator().manual_seed(seed)
        order, cursor = torch.randperm(len(fixed), generator=order_rng), 0
        for _ in range(start_step):  # replay the shuffles, so a stream started later sees the same batches
            if cursor + cfg.batch_size > len(order):
                order, cursor = torch.randperm(len(fixed), generator=order_rng), 0
            cursor += cfg.batch_size
        while True:
            if cursor + cfg.batch_size > len(order):  # new epoch: reshuffle
                order, cursor = torch.randperm(len(fixed), generator=order_rng), 0
            yield StepBatch.from_batch(fixed[order[cursor: cursor + cfg.batch_size]], pin).to(device)
            cursor += cfg.batch_size
    workers = _workers(cfg, device)
    data = _FreshBatches(task, cfg.batch_size, seed, start_step)
    if workers == 0:
        for index in range(len(data)):
            yield data[index].to(device)
    # fork where there is one: the default context inside a joblib (loky) sweep worker cannot start processes
    # ("'Process' object has no attribute 'env'"), and a forked worker never touches CUDA, so forking is safe
    context = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=workers,
                                         pin_memory=pin, prefetch_factor=4, persistent_workers=False,
                                         multiprocessing_context=context)
    for batch in loader:
        yield batch.to(device)
