"""Train/test length ranges shared by the state-tracking probes (parity, modular arithmetic, word problems).

Such a probe's Config has `train_min_len`, `train_max_len`, `test_min_len`, `test_max_len` (content lengths,
Grazzi et al.'s protocol: train short, test longer) beside `seq_len`, which must fit the longest.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from arena.errors import ConfigError
from arena.tasks.base import Task


def check_lengths(name: str, cfg, shortest: int) -> None:
    """ConfigError unless both splits' length ranges are ordered, >= `shortest`, and fit in seq_len."""
    for split in ("train", "test"):
        lo, hi = getattr(cfg, f"{split}_min_len"), getattr(cfg, f"{split}_max_len")
        if lo < shortest or hi < lo:
            raise ConfigError(
                f"task {name}: {split}_min_len={lo}, {split}_max_len={hi} must satisfy {shortest} <= min <= max"
            )
        if hi > cfg.seq_len:
            raise ConfigError(f"task {name}: seq_len={cfg.seq_len} cannot fit {split}_max_len={hi}; raise seq_len")


def draw_lengths(rng: np.random.Generator, cfg, num_examples: int, split: str) -> np.ndarray:
    """[E] content lengths, uniform over the split's [min_len, max_len]; "valid" draws training lengths (held-out
    data of the training distribution: the longer test lengths are for the test split alone)."""
    prefix = "test" if split == "test" else "train"
    lo, hi = getattr(cfg, f"{prefix}_min_len"), getattr(cfg, f"{prefix}_max_len")
    return rng.integers(lo, hi + 1, size=num_examples)


def at_length_of(task: Task, seq_len: int) -> Task:
    """`task` with sequences of `seq_len` tokens whose test content is exactly that long (one point of an
    accuracy-vs-length curve); the training range is clipped so it still fits."""
    c = task.cfg
    return type(task)(dataclasses.replace(
        c, seq_len=seq_len, test_min_len=seq_len, test_max_len=seq_len,
        train_min_len=min(c.train_min_len, seq_len), train_max_len=min(c.train_max_len, seq_len),
    ))
