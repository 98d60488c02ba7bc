"""MAD compression (Poli et al. 2024, athms/mad-lab `generate_compression_instance`; docs/probes.md#compression),
recast as a next-token probe: reproduce a random sequence from what was kept after reading it.

MAD feeds L - 1 random tokens from [0, V-1) and a compression token (V-1) to an AutoEncoder: the encoder's
representation at the last token, plus a sin-cos embedding of position i, is decoded by an MLP into token i, for
all L tokens (the compression token included). A language model has no such decoder, so here the same L tokens
are followed by L position-query tokens (ids V + i): after reading query i the model must emit content token i.
seq_len = 2 L. Scored: the L query positions, as MAD scores all L reconstructions; train and test alike.
Difference from MAD: the bottleneck is the mixer's state (recurrent mixers) rather than one d-vector, and an
attention mixer can simply look back at offset L, so attention finds this much easier than MAD's AutoEncoder.

Example (seq_len=16, vocab_size=8: L = 8, content ids 0-6, compression token 7, queries 8-15), decoded:

    position :   0   1   2   3   4   5   6   7   8   9  10  11  12  13  14  15
    inputs   :   5   4   3   1   2   0   0   7   8   9  10  11  12  13  14  15
    targets  :   .   .   .   .   .   .   .   .   5   4   3   1   2   0   0   7     (scored: 8-15)
Knobs: vocab_size (MAD baseline 16 incl. the compression token; changes 32, 64, 128; task vocabulary is
V + L), seq_len = 2 L (MAD L = 32, i.e. seq_len 64, the default; changes L 64, 128, 256), num_train (MAD 12,800;
changes 6400 ... 800).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks.base import IGNORE, Batch, Symbols, Task
from arena.tasks.shortcuts import running_mode


@register_task("compression")
class Compression(Task):
    """MAD compression as next-token prediction: L tokens, then L position queries; token i is scored at query i."""

    @dataclass
    class Config(Task.Config):
        seq_len: int = 64  # 2 L: L content tokens (compression token last) then L queries; MAD L = 32
        vocab_size: int = 16  # V: content [0, V-1), compression V-1; queries add L ids; MAD baseline 16

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        if cfg.seq_len % 2 or cfg.seq_len < 4:
            raise ConfigError(f"task compression: seq_len={cfg.seq_len} must be even and >= 4 (L content + L queries)")
        if cfg.vocab_size < 2:
            raise ConfigError(f"task compression: vocab_size={cfg.vocab_size} must be >= 2 (content, compression)")

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size + self.cfg.seq_len // 2  # one query id per content position

    def symbols(self) -> list[Symbols]:
        V, L = self.cfg.vocab_size, self.cfg.seq_len // 2
        return [Symbols(0, tuple(map(str, range(V - 1))), "content"), Symbols(V - 1, "<c>", "compression token"),
                Symbols(V, "?", "query for content position i", count=L)]

    def shortcut_predictions(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        # the most frequent content token (compression token included): a guess that keeps one symbol
        return {"context_mode": running_mode(inputs, 0, self.cfg.vocab_size)}

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        V, L = self.cfg.vocab_size, self.cfg.seq_len // 2
        content = np.full((num_examples, L), V - 1, dtype=np.int64)
        content[:, :-1] = rng.integers(0, V - 1, size=(num_examples, L - 1))
        inputs = np.concatenate([content, np.broadcast_to(V + np.arange(L), content.shape)], axis=1)
        targets = np.full((num_examples, 2 * L), IGNORE, dtype=np.int64)
        targets[:, L:] = content
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))
