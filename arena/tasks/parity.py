"""Parity of a bit string, answered once at the end (Grazzi et al. 2025, xLSTM generator; docs/probes.md#parity).

Isolates the smallest state-tracking problem: one bit of state flipped by every `1`. A linear RNN whose
transition eigenvalues lie in [0, 1] cannot flip a sign, so this is the unit test of the eigenvalue range
(docs/probes.md). Scored at ONE position per sequence: the last bit.

Tokens: 0 PAD, 1 = bit 0, 2 = bit 1 (vocab 3, as Grazzi). A sequence of content length n (Grazzi's length,
n uniform in [min_len, max_len] of the split) holds n - 1 bits and then the answer slot, which stays PAD in
the inputs (xLSTM's `enable_mask`). The target at the last bit (position n - 2) is 1 + (number of 1-bits) % 2,
so the answer reuses the bit tokens: 1 = even, 2 = odd. Train lengths 3-40, test 40-256 in the paper.

Example (seq_len=12, train_min_len=train_max_len=8, test lengths 8-12), decoded:

    position:  0  1  2  3  4  5  6  7  8  9  10 11
    inputs  :  2  2  2  1  1  1  1  0  0  0  0  0      (bits 1 1 1 0 0 0 0, then the answer slot and PAD)
    targets :  .  .  .  .  .  .  2  .  .  .  .  .      (scored: position 6; three 1-bits -> odd -> token 2)

Knobs: train_min_len / train_max_len and test_min_len / test_max_len (lengths include the answer slot);
seq_len must fit the longest. `at_length(L)` tests exactly length L (accuracy-vs-length curves).
The helpers `check_lengths`, `draw_lengths` and `at_length_of` are shared with the other state-tracking probes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks._lengths import at_length_of, check_lengths, draw_lengths
from arena.tasks.base import IGNORE, PAD, Batch, Symbols, Task


@register_task("parity")
class Parity(Task):
    """Parity: a bit string, then its parity (0 even, 1 odd) scored once, at the last bit."""

    chance_accuracy = 0.5  # two possible answers

    @dataclass
    class Config(Task.Config):
        seq_len: int = 64  # L; must fit test_max_len (Grazzi: 256)
        vocab_size: int = 3  # fixed: PAD, bit 0, bit 1
        train_min_len: int = 3  # content length = bits + the answer slot (Grazzi: 3)
        train_max_len: int = 16  # (Grazzi: 40)
        test_min_len: int = 16  # held-out lengths, longer than training ones (Grazzi: 40)
        test_max_len: int = 64  # (Grazzi: 256)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        if cfg.vocab_size != 3:
            raise ConfigError(f"task parity: vocab_size={cfg.vocab_size} must be 3 (PAD, bit 0, bit 1)")
        check_lengths("parity", cfg, shortest=2)

    def symbols(self) -> list[Symbols]:
        return [Symbols(PAD, ".", "PAD and the answer slot"), Symbols(1, ("0", "1"), "bits (as a target: the parity)")]

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        L = self.cfg.seq_len
        lengths = draw_lengths(rng, self.cfg, num_examples, split)  # [E]
        bits = rng.integers(0, 2, size=(num_examples, L))
        col = np.arange(L)
        is_bit = col[None, :] < (lengths - 1)[:, None]  # [E, L]
        bits = bits * is_bit
        inputs = np.where(is_bit, bits + 1, PAD)
        targets = np.full((num_examples, L), IGNORE, dtype=np.int64)
        rows = np.arange(num_examples)
        targets[rows, lengths - 2] = 1 + bits.sum(axis=1) % 2
        return Batch(torch.from_numpy(inputs.astype(np.int64)), torch.from_numpy(targets))

    def at_length(self, seq_len: int) -> Task:
        return at_length_of(self, seq_len)
