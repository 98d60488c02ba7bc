"""MAD selective copying (Poli et al. 2024, athms/mad-lab `generate_selective_copying_instance`;
docs/probes.md#selective_copying): copy the data tokens scattered among blanks, in order, after a copy token.

Isolates content-selective memory: num_tokens_to_copy data tokens from [0, V-2) are interleaved with blanks
(id V-2); then the copy token (V-1) and num_tokens_to_copy more blanks follow. The targets are the data tokens
in order at the final num_tokens_to_copy positions, aligned as MAD aligns them (the first answer comes after the
copy token AND the first trailing blank have been read). As in MAD, each of the seq_len - 2n - 1 leading blanks
is inserted before a uniformly drawn data token, so no blank falls between the last data token and the copy
token. Train and test splits are scored alike (only the final n positions).

Example (seq_len=16, vocab_size=16, num_tokens_to_copy=4), decoded; `.` = unscored:

    position :   0   1   2   3   4   5   6   7   8   9  10  11  12  13  14  15
    inputs   :  14  14  14  14  11  14   8  14   7  14   3  15  14  14  14  14
    targets  :   .   .   .   .   .   .   .   .   .   .   .   .  11   8   7   3     (scored: 12-15)
Knobs: vocab_size (MAD baseline 16 incl. blank and copy; changes 32, 64, 128), seq_len (MAD 256; changes 512,
1024), num_tokens_to_copy (MAD 16; changes 32, 64, 96), num_train (MAD 12,800; changes 6400 ... 800).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks._mad import check_positive
from arena.tasks.base import IGNORE, Batch, Symbols, Task
from arena.tasks.shortcuts import running_mode


@register_task("selective_copying")
class SelectiveCopying(Task):
    """MAD selective copying: data tokens among blanks, then a copy token; the data tokens are scored, in order."""

    @dataclass
    class Config(Task.Config):
        seq_len: int = 64  # total tokens; MAD baseline 256
        vocab_size: int = 16  # data ids [0, V-2), blank V-2, copy V-1; MAD baseline 16
        num_tokens_to_copy: int = 8  # n data tokens = scored positions; MAD baseline 16

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        n, L = cfg.num_tokens_to_copy, cfg.seq_len
        check_positive("selective_copying", num_tokens_to_copy=n)
        if L <= 2 * n + 1:
            raise ConfigError(
                f"task selective_copying: seq_len={L} cannot fit num_tokens_to_copy={n}; needs seq_len > {2 * n + 1} "
                f"(n data tokens, >= 1 blank, copy token, n answer slots)"
            )
        if cfg.vocab_size < 3:
            raise ConfigError(f"task selective_copying: vocab_size={cfg.vocab_size} must be >= 3 (data, blank, copy)")

    def symbols(self) -> list[Symbols]:
        V = self.cfg.vocab_size
        return [Symbols(0, "x", "data tokens", count=V - 2), Symbols(V - 2, "_", "blank"),
                Symbols(V - 1, "<copy>", "copy token")]

    def shortcut_predictions(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        # the most frequent data token so far: a guess that keeps counts, not the order
        return {"context_mode": running_mode(inputs, 0, self.cfg.vocab_size - 2)}

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        c = self.cfg
        E, n, L, V = num_examples, c.num_tokens_to_copy, c.seq_len, c.vocab_size
        blanks = L - 2 * n - 1
        data = rng.integers(0, V - 2, size=(E, n))
        before = rng.integers(0, n, size=(E, blanks))  # each blank goes in front of this data token
        counts = np.bincount((np.arange(E)[:, None] * n + before).ravel(), minlength=E * n).reshape(E, n)
        positions = np.cumsum(counts, axis=1) + np.arange(n)  # data token j follows j tokens and its blanks

        inputs = np.full((E, L), V - 2, dtype=np.int64)
        np.put_along_axis(inputs, positions, data, axis=1)
        inputs[:, n + blanks] = V - 1
        targets = np.full((E, L), IGNORE, dtype=np.int64)
        targets[:, L - n:] = data
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))
