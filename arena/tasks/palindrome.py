"""Palindrome: copy a random string back in reverse after a separator (Kimi Linear §5.1; docs/probes.md#palindrome).

Isolates exact copying of a whole sequence (Jelassi et al.: "copying is hard for linear attention"): the state
must hold all `copy_len` random tokens until `<sep>`, then give them back last-first. The sequence is
`x_1 .. x_n <sep> x_n .. x_1`; only the reversed half is scored (the prefix is ϕ). The report's example table is
off by one slot, so this follows docs/probes.md: at `<sep>` the model emits x_n, after reading x_k it emits x_(k-1),
and the final x_1 (the last content token) is unscored, so exactly `copy_len` positions are scored.

Token ids: 0 = PAD, 1 = <sep>, symbols in [2, vocab_size) drawn uniformly with replacement.

Example (seq_len=12, copy_len=5, vocab_size=16), decoded (`.` = unscored):

    position:  0   1   2   3   4   5     6   7   8   9   10  11
    inputs  :  13  3   4   5   4   <sep> 4   5   4   3   13  0
    targets :  .   .   .   .   .   4     5   4   3   13  .   .      (scored: positions 5-9)

Knobs: `copy_len` (0 = as many as fit, (seq_len - 1) // 2, which is how the report's training lengths
256-2048 read: the string fills the sequence) and `vocab_size`. The report states no vocabulary size and no
length variation: this generator uses a fixed length per config, the simplest reading. Published setting
(Figure 4): seq_len in {256, 512, 1024, 2048} with copy_len 0, e.g. `task.seq_len=1024`.
Extrapolation: `at_length(L)` keeps the fraction of the sequence that the string fills.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks.base import IGNORE, PAD, Batch, Symbols, Task, setting
from arena.tasks.shortcuts import running_mode

SEP = 1
FIRST_SYMBOL = 2


@register_task("palindrome")
class Palindrome(Task):
    """Palindrome: random symbols, <sep>, then the same symbols reversed; the reversed half is scored."""

    @dataclass
    class Config(Task.Config):
        seq_len: int = 32  # L, total tokens per sequence
        vocab_size: int = 16  # symbols are [2, vocab_size); 0 = PAD, 1 = <sep>
        copy_len: int = 0  # n, random tokens before <sep> = scored positions; 0 = (seq_len - 1) // 2

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        if cfg.copy_len < 0:
            raise ConfigError(f"task palindrome: copy_len={cfg.copy_len} must be >= 1, or 0 for as many as fit")
        if self.copy_len < 1 or 2 * self.copy_len + 1 > cfg.seq_len:
            raise ConfigError(
                f"task palindrome: seq_len={cfg.seq_len} cannot fit "
                f"{setting('copy_len', cfg.copy_len, self.copy_len)}; "
                f"needs seq_len >= {2 * max(1, self.copy_len) + 1} (string, <sep>, reversed string)"
            )
        if cfg.vocab_size < FIRST_SYMBOL + 2:
            raise ConfigError(f"task palindrome: vocab_size={cfg.vocab_size} must be >= 4 (PAD, <sep>, 2+ symbols)")

    @property
    def copy_len(self) -> int:
        return self.cfg.copy_len or (self.cfg.seq_len - 1) // 2

    def symbols(self) -> list[Symbols]:
        return [Symbols(PAD, ".", "PAD"), Symbols(SEP, "<sep>", "separator"),
                Symbols(FIRST_SYMBOL, "x", "symbols", count=self.cfg.vocab_size - FIRST_SYMBOL)]

    def auto_settings(self) -> dict[str, object]:
        return {"copy_len": self.copy_len}

    def shortcut_predictions(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        # the most frequent symbol so far: a guess that keeps counts, not the order
        return {"context_mode": running_mode(inputs, 2, self.cfg.vocab_size)}

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        n, L = self.copy_len, self.cfg.seq_len
        symbols = rng.integers(FIRST_SYMBOL, self.cfg.vocab_size, size=(num_examples, n))  # [E, n]
        inputs = np.full((num_examples, L), PAD, dtype=np.int64)
        inputs[:, :n] = symbols
        inputs[:, n] = SEP
        inputs[:, n + 1: 2 * n + 1] = symbols[:, ::-1]
        targets = np.full((num_examples, L), IGNORE, dtype=np.int64)
        targets[:, n: 2 * n] = symbols[:, ::-1]  # next token of every position from <sep> to x_2
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))

    def at_length(self, seq_len: int) -> Palindrome:
        copy_len = self.cfg.copy_len and max(1, self.cfg.copy_len * seq_len // self.cfg.seq_len)
        return Palindrome(dataclasses.replace(self.cfg, seq_len=seq_len, copy_len=copy_len))
