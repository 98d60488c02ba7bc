"""Flip-flop language modelling, FFL(p) (Liu et al., NeurIPS 2023; HF `synthseq/flipflop`; docs/probes.md#flip_flop).

A sequence of instruction-bit pairs `w b` (write), `i b` (ignore) and `r b` (read). The bit after a read must
equal the bit of the most recent write; every other bit is random. Instructions are drawn i.i.d. with
P(i) = p_ignore and P(w) = P(r) = (1 - p_ignore) / 2, except that the first is always `w` (every read has a
write to recall) and the last always `r` (every sequence is scored), as in the paper. Only the read bits are
scored, at the `r` positions. An odd `seq_len` leaves one PAD at the end.

It isolates positional localisation of the *latest* matching event ("find the last write, skip the ignores"):
recency-biased mixers (decay, delta rule, LSTM) should reach ~0 errors, while attention shows sporadic
"attention glitches", mostly on the sparse split (long runs of ignores).

Token ids: PAD 0, w 1, r 2, i 3, bit 0 -> 4, bit 1 -> 5.
Example (seq_len=16, p_ignore=0.5), printed by this generator and decoded:

    position:  0  1  2  3  4  5  6  7  8  9  10 11 12 13 14 15
    inputs  :  w  0  i  1  i  0  i  0  w  1  w  1  i  0  r  1
    targets :  .  .  .  .  .  .  .  .  .  .  .  .  .  .  1  .      (scored: position 14)

Splits: train draws FFL(p_ignore) (published 0.8, 512 tokens); test draws FFL(test_p_ignore), default
p_ignore (the in-distribution val split); set test_p_ignore=0.1 for val_dense and 0.98 for val_sparse.
Validation (split="valid") always draws the training FFL(p_ignore).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks.base import IGNORE, PAD, Batch, Symbols, Task
from arena.tasks.shortcuts import last_where, shift

WRITE, READ, SKIP, BIT0 = 1, 2, 3, 4  # BIT0 + b is bit b


@register_task("flip_flop")
class FlipFlop(Task):
    """Flip-flop language FFL(p): write / ignore / read instructions with bits; the bit after each read is scored."""

    chance_accuracy = 0.5  # a read bit is 0 or 1

    @dataclass
    class Config(Task.Config):
        seq_len: int = 64  # tokens = 2 x instruction-bit pairs (published: 512, i.e. 256 pairs)
        vocab_size: int = 6  # PAD, w, r, i, 0, 1; a larger value leaves ids unused
        p_ignore: float = 0.8  # P(i) of the training distribution FFL(p) (published: 0.8)
        test_p_ignore: float | None = None  # P(i) on split="test"; None = p_ignore; 0.1 dense, 0.98 sparse

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        if cfg.vocab_size < 6:
            raise ConfigError(f"task flip_flop: vocab_size={cfg.vocab_size} must be >= 6 (PAD, w, r, i, 0, 1)")
        if cfg.seq_len < 4:
            raise ConfigError(f"task flip_flop: seq_len={cfg.seq_len} cannot fit a write and a read; needs >= 4")
        for key in ("p_ignore", "test_p_ignore"):
            p = getattr(cfg, key)
            if p is not None and not 0 <= p < 1:
                raise ConfigError(f"task flip_flop: {key}={p} must lie in [0, 1) (reads and writes need mass)")

    def symbols(self) -> list[Symbols]:
        return [Symbols(PAD, ".", "PAD"), Symbols(WRITE, ("w", "r", "i"), "write, read, ignore"),
                Symbols(BIT0, ("0", "1"), "bits")]

    def auto_settings(self) -> dict[str, object]:
        return {"test_p_ignore": self.cfg.p_ignore}  # None: the test split draws from the training FFL(p)

    def shortcut_predictions(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        # the bit of the latest write OR ignore: the rule that reads every bit and ignores the ignore flag
        op = shift(inputs, 1, PAD)
        return {"last_bit_any": last_where((op == WRITE) | (op == SKIP), inputs)}

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        c = self.cfg
        p = c.test_p_ignore if split == "test" and c.test_p_ignore is not None else c.p_ignore
        n = c.seq_len // 2  # instruction-bit pairs
        ops = rng.choice([WRITE, READ, SKIP], size=(num_examples, n), p=[(1 - p) / 2, (1 - p) / 2, p])
        ops[:, 0], ops[:, -1] = WRITE, READ
        bits = rng.integers(0, 2, size=(num_examples, n))
        idx = np.broadcast_to(np.arange(n), ops.shape)
        last_write = np.maximum.accumulate(np.where(ops == WRITE, idx, 0), axis=1)  # pair 0 is always a write
        is_read = ops == READ
        bits = np.where(is_read, np.take_along_axis(bits, last_write, axis=1), bits)

        inputs = np.zeros((num_examples, c.seq_len), dtype=np.int64)
        inputs[:, 0: 2 * n: 2] = ops
        inputs[:, 1: 2 * n: 2] = BIT0 + bits
        targets = np.full((num_examples, c.seq_len), IGNORE, dtype=np.int64)
        targets[:, 0: 2 * n: 2] = np.where(is_read, BIT0 + bits, IGNORE)
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))
