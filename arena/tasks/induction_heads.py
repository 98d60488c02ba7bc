"""Induction heads with length extrapolation: trigger, then copy (Mamba paper, Gu & Dao 2023;
docs/probes.md#induction_heads).

Random symbols from [0, V-1) fill the sequence; the trigger token V-1 appears once at a random position p,
followed by `copy_len` symbols X; the sequence ends with the trigger again, after which the model must emit X.
Only the copy slots at the end are scored (one position with copy_len=1, as published). The trigger appears
exactly twice. The content fills `seq_len` (no padding), so id 0 is an ordinary symbol here.

It isolates the two-step induction circuit (find the earlier trigger, read what followed it) and, through
`at_length(L)`, length extrapolation: train at 256 and test at 2^6 ... 2^20 (published: Mamba is perfect to
1M tokens; RoPE/absolute attention fails beyond ~2x). The first trigger lies uniformly in the whole prefix, so
at test length L the lookback distance reaches L.

Example (seq_len=16, vocab_size=16, copy_len=1; trigger T = 15), printed by this generator:

    position:  0   1  2  3  4  5  6  7  8  9   10  11  12  13  14  15
    inputs  :  12  15 7  4  4  0  1  0  2  12  9   13  7   9   14  15
    targets :  .   .  .  .  .  .  .  .  .  .   .   .   .   .   .   7      (scored: position 15)

With copy_len=2 the tail reads `T X1` with targets X1 (at T) and X2 (at the teacher-forced X1).

Knobs: `seq_len` (published train 256), `vocab_size` (16: 15 symbols + the trigger), `copy_len` (tokens copied).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks.base import IGNORE, Batch, Symbols, Task
from arena.tasks.shortcuts import running_mode


@register_task("induction_heads")
class InductionHeads(Task):
    """Induction heads: a trigger, symbols, and the trigger again at the end; the symbol that followed it is scored."""

    @dataclass
    class Config(Task.Config):
        seq_len: int = 64  # L; the Mamba paper trains at 256 and tests at 2^6 ... 2^20 via at_length
        vocab_size: int = 16  # V: symbols [0, V-1) and the trigger V-1 (published: 16)
        copy_len: int = 1  # tokens after the trigger to copy at the end = scored positions per sequence

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        k, L, V = cfg.copy_len, cfg.seq_len, cfg.vocab_size
        if k < 1:
            raise ConfigError(f"task induction_heads: copy_len={k} must be >= 1")
        if V < 3:
            raise ConfigError(f"task induction_heads: vocab_size={V} must be >= 3 (>= 2 symbols plus the trigger)")
        if L < 2 * k + 1:
            raise ConfigError(
                f"task induction_heads: seq_len={L} cannot fit copy_len={k}; needs seq_len >= {2 * k + 1} "
                "(trigger + copy_len symbols, then trigger + copy_len - 1 teacher-forced symbols)"
            )
        self.chance_accuracy = 1.0 / (V - 1)  # a uniform guess among the symbols

    def symbols(self) -> list[Symbols]:
        V = self.cfg.vocab_size
        return [Symbols(0, tuple(map(str, range(V - 1))), "symbols"), Symbols(V - 1, "T", "trigger")]

    def shortcut_predictions(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        # the most frequent symbol so far: what a model that ignores the trigger could learn
        return {"context_mode": running_mode(inputs, 0, self.cfg.vocab_size - 1)}

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        k, L, V = self.cfg.copy_len, self.cfg.seq_len, self.cfg.vocab_size
        trigger = V - 1
        inputs = rng.integers(0, trigger, size=(num_examples, L))
        tail = L - k  # the second trigger; X1 .. X(k-1) follow it, teacher-forced
        first = rng.integers(0, tail - k, size=num_examples)  # the copied block p+1 .. p+k ends before the tail
        rows = np.arange(num_examples)
        inputs[rows, first] = trigger
        copied = inputs[rows[:, None], first[:, None] + 1 + np.arange(k)]  # [E, k]
        inputs[:, tail] = trigger
        inputs[:, tail + 1:] = copied[:, : k - 1]
        targets = np.full((num_examples, L), IGNORE, dtype=np.int64)
        targets[:, tail:] = copied
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))
