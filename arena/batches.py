"""Training batches as the step consumes them, made ahead of it: `StepBatch` and `batch_stream`.

Used by arena/train.py (which re-exports both); `batch_stream(run, start_step)` yields device batches for steps
start_step, start_step + 1, ... of a `arena.train.Run`: a fixed training set in shuffled epochs, or fresh samples
generated in background processes. Its content depends only on (seed, step), never on the worker count, so a run
resumed at step N sees the batches it would have seen. Under torchrun (arena/parallel.py) every rank draws the
whole global batch of a step and keeps its rows, so the ranks' rows together are the 1-process batch.
Tests: tests/test_train_loop.py, tests/test_parallel.py.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from arena.tasks import Batch, Task
from arena.tasks.base import RegressionBatch, scored_mask, split_seed

if TYPE_CHECKING:
    from arena.train import Run, TrainConfig


@dataclass
class StepBatch:
    """One training batch as the step consumes it: tokens, and the scored positions as flat indices into [B*T]."""
    inputs: torch.Tensor  # [B, T] int64 (a regression task: [B, T, I] float32)
    scored_index: torch.Tensor  # [S] int64, row-major positions whose target is not IGNORE
    scored_targets: torch.Tensor  # [S] int64 (a regression task: [S, O] float32)
    # scored positions of the whole global batch when this is one rank's part of it (the loss divides by it, so
    # that the ranks' losses add up to the global mean); None in a 1-process run
    global_scored: int | None = None

    @staticmethod
    def from_batch(batch: Batch | RegressionBatch, pin: bool = False, rank: int = 0, world: int = 1) -> StepBatch:
        """The step's form of `batch`; with world > 1 only rows [rank * B/W, (rank + 1) * B/W) of it, rank's part."""
        total = None
        if world > 1:
            total = int(scored_mask(batch).sum())
            rows = len(batch) // world
            batch = batch[rank * rows: (rank + 1) * rows]
        # on the host: the device never has to report a count
        index = scored_mask(batch).reshape(-1).nonzero().squeeze(1)
        out = StepBatch(batch.inputs, index, batch.targets.flatten(0, 1)[index], total)
        return out.pin_memory() if pin else out

    def pin_memory(self) -> StepBatch:  # the name DataLoader(pin_memory=True) calls
        return StepBatch(*(t.pin_memory() for t in (self.inputs, self.scored_index, self.scored_targets)),
                         self.global_scored)

    def to(self, device: torch.device) -> StepBatch:
        return StepBatch(*(t.to(device, non_blocking=True) for t in (self.inputs, self.scored_index,
                                                                     self.scored_targets)), self.global_scored)


class _FreshBatches(torch.utils.data.Dataset):
    """Batch `step` of a fresh-sample run: task.generate(B, [seed, 3, step]), the same in any worker process."""

    def __init__(self, task: Task, batch_size: int, seed: int, start_step: int, rank: int = 0, world: int = 1):
        self.task, self.batch_size, self.seed, self.start = task, batch_size, seed, start_step
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return 1 << 40  # unbounded: the loop decides when to stop

    def __getitem__(self, index: int) -> StepBatch:
        batch = self.task.generate(self.batch_size, [self.seed, 3, self.start + index])
        # the DataLoader pins it (pin_memory=True on CUDA)
        return StepBatch.from_batch(batch, rank=self.rank, world=self.world)


def _workers(cfg: TrainConfig, device: torch.device) -> int:
    return (1 if device.type == "cuda" else 0) if cfg.data_workers == -1 else cfg.data_workers


def training_set(task: Task, seed: int) -> Batch:
    """The fixed training set of a run (task.num_train examples from the "train" seed stream), drawn once per task
    and seed: the validation set (arena.protocol.validation_set) leaves out its sequences, and the stream shuffles
    it."""
    cached = getattr(task, "_training_set", None)
    if cached is None or cached[0] != seed:
        cached = (seed, task.generate(task.cfg.num_train, split_seed(seed, "train")))
        task._training_set = cached
    return cached[1]


def _leave_sigterm_to_parent(worker_id: int) -> None:
    """A SIGTERM sent to the whole process group (`timeout`, SLURM, a sweep being stopped) reaches the batch
    workers too; dying there would fail the run ("DataLoader worker ... killed by signal") before the trainer's
    handler checkpoints it. The trainer stops at the next step boundary and shuts the workers down itself."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def batch_stream(run: Run, start_step: int = 0) -> Iterator[StepBatch]:
    """Device batches for steps start_step, start_step + 1, ... (endless).

    A fixed training set (task.num_train > 0) is drawn in shuffled epochs on the host. Fresh samples come from
    `train.data_workers` background processes (a torch DataLoader), generated and pinned ahead of the step, so
    generation overlaps the GPU's work; their content depends only on (seed, step), never on the worker count.
    """
    cfg, task, device = run.train_cfg, run.task, run.device
    seed, pin = cfg.seed, device.type == "cuda"
    rank, world = getattr(run, "rank", 0), getattr(run, "world", 1)  # this process's part of the global batch
    if task.cfg.num_train:
        fixed = training_set(task, seed)
        order_rng = torch.Generator().manual_seed(seed)
        order, cursor = torch.randperm(len(fixed), generator=order_rng), 0
        for _ in range(start_step):  # replay the shuffles, so a stream started later sees the same batches
            if cursor + cfg.batch_size > len(order):
                order, cursor = torch.randperm(len(fixed), generator=order_rng), 0
            cursor += cfg.batch_size
        while True:
            if cursor + cfg.batch_size > len(order):  # new epoch: reshuffle
                order, cursor = torch.randperm(len(fixed), generator=order_rng), 0
            yield StepBatch.from_batch(fixed[order[cursor: cursor + cfg.batch_size]], pin, rank, world).to(device)
            cursor += cfg.batch_size
    workers = _workers(cfg, device)
    data = _FreshBatches(task, cfg.batch_size, seed, start_step, rank, world)
    if workers == 0:
        for index in range(len(data)):
            yield data[index].to(device)
    # fork where there is one: the default context inside a joblib (loky) sweep worker cannot start processes
    # ("'Process' object has no attribute 'env'"), and a forked worker never touches CUDA, so forking is safe
    context = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=workers,
                                         pin_memory=pin, prefetch_factor=4, persistent_workers=False,
                                         multiprocessing_context=context, worker_init_fn=_leave_sigterm_to_parent)
    for batch in loader:
        yield batch.to(device)
