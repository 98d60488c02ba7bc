"""The task contract: a seeded generator of (inputs, targets) token batches with scored positions marked.

A task is a next-token problem: `targets[i, t]` is what the model must predict after reading
`inputs[i, : t + 1]`, or `IGNORE` (-100) where position t is not scored. Every task owns a nested
`@dataclass Config` (difficulty knobs with commented defaults); its constructor validates the config and
raises `ConfigError` when the knobs cannot fit (e.g. too many items for the sequence length).

Data protocol: `generate(n, seed, split)` is deterministic in `seed`; the trainer draws the training set and
the held-out test set from disjoint seed streams (`split_seed`) and passes `split` ("train" or "test") so a
task with different train and test distributions (e.g. parity: train lengths 3-40, test 40-256) can tell
them apart; most tasks ignore it. `num_train > 0` trains on a fixed set (as Zoology does); `num_train = 0`
draws fresh samples every step. Every sequence of a batch has length `seq_len`; a task whose content is
shorter pads on the right with `PAD` (0 by convention unless the task documents another id), unscored.

Length extrapolation: `at_length(L)` returns the same task with sequence length L (by default `seq_len=L`;
a task whose difficulty knobs must scale with L overrides it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from arena.errors import ConfigError

IGNORE = -100  # target value of an unscored position (torch cross_entropy's ignore_index)
PAD = 0  # token id that fills a sequence past its content, by convention


@dataclass
class Batch:
    inputs: torch.Tensor  # [N, T] int64 token ids
    targets: torch.Tensor  # [N, T] int64 next-token targets, IGNORE where unscored

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, index) -> Batch:
        return Batch(self.inputs[index], self.targets[index])

    def to(self, device) -> Batch:
        return Batch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True))


SPLITS = {"train": 0, "test": 1, "valid": 2}


def split_seed(seed: int, split: str) -> list[int]:
    """Seed material for numpy's SeedSequence: splits of one run never share a random stream."""
    return [seed, SPLITS[split]]


class Task:
    registry_name: ClassVar[str] = "?"

    @dataclass
    class Config:
        seq_len: int = 64
        vocab_size: int = 256
        num_train: int = 20_000  # fixed training set size; 0 = fresh samples every step
        num_test: int = 1_000  # held-out examples

    def __init__(self, cfg: Config):
        self.cfg = cfg
        if cfg.seq_len < 2:
            raise ConfigError(f"task {self.registry_name}: seq_len={cfg.seq_len} must be >= 2")
        if cfg.num_train < 0 or cfg.num_test < 1:
            raise ConfigError(
                f"task {self.registry_name}: num_train={cfg.num_train} must be >= 0 and num_test={cfg.num_test} >= 1"
            )

    @property
    def vocab_size(self) -> int:
        """Size of the token vocabulary the model needs (ids lie in [0, vocab_size))."""
        return self.cfg.vocab_size

    @property
    def seq_len(self) -> int:
        return self.cfg.seq_len

    def generate(self, num_examples: int, seed, split: str = "train") -> Batch:
        """`num_examples` sequences of length `seq_len`, deterministic in `seed` (an int or list of ints)."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not one of {sorted(SPLITS)}")
        return self.sample(np.random.default_rng(seed), num_examples, split)

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        raise NotImplementedError

    def at_length(self, seq_len: int) -> Task:
        """This task with sequences of length `seq_len` (for length-extrapolation tests)."""
        return type(self)(dataclasses.replace(self.cfg, seq_len=seq_len))


def sample_distinct(rng: np.random.Generator, num_rows: int, low: int, high: int, count: int) -> np.ndarray:
    """[num_rows, count] ints from [low, high), distinct within each row, uniform over such ordered rows."""
    span = high - low
    if count * count <= span:
        # few ids from a wide range: draw freely and redraw the rows with a repeat (rejection sampling keeps
        # rows uniform over distinct tuples; with count^2 <= span at least ~60% of rows pass each round)
        out = rng.integers(low, high, size=(num_rows, count))
        while True:
            ordered = np.sort(out, axis=1)
            bad = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
            if not bad.any():
                return out
            out[bad] = rng.integers(low, high, size=(int(bad.sum()), count))
    out = np.empty((num_rows, count), dtype=np.int64)
    block = max(1, 2**24 // span)  # bound the [block, span] random matrix to ~128 MB
    for start in range(0, num_rows, block):
        stop = min(num_rows, start + block)
        out[start:stop] = np.argsort(rng.random((stop - start, span)), axis=1)[:, :count] + low
    return out


def sample_weighted_distinct(rng: np.random.Generator, num_rows: int, probs: np.ndarray, count: int) -> np.ndarray:
    """[num_rows, count] indices into `probs`, distinct per row, drawn one after another with probability
    proportional to `probs` among those left (Efraimidis-Spirakis keys: the top `count` of log(u) / p)."""
    keys = np.log(rng.random((num_rows, probs.shape[0]))) / probs
    top = np.argpartition(-keys, count - 1, axis=1)[:, :count]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1), axis=1)
