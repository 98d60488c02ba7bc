"""MAD memorization (Poli et al. 2024, athms/mad-lab `generate_memorization_instance`; docs/probes.md#memorization):
recall values from a FIXED global key -> value table, i.e. in-weights (parametric) memory.

The table is built once from `kv_map_seed` (not from the split's random stream), so the train and test splits
share it and the sequence never shows a value: the model must have stored the map in its weights. Ids: keys
[0, n/2), values [n/2, n) with n = V - 1, insert token V - 1; the table is a random one-to-one map from the
keys onto values. A sequence is seq_len/2 `key insert` pairs (keys drawn with replacement); after reading an
insert token the model must emit the preceding key's value. Train and test are scored alike.

Example (seq_len=16, vocab_size=32, kv_map_seed=12345), decoded; `.` = unscored:

    position :   0   1   2   3   4   5   6   7   8   9  10  11  12  13  14  15
    inputs   :  12  31   9  31   7  31   4  31   4  31   0  31   1  31   0  31
    targets  :   .  22   .  16   .  29   .  18   .  18   .  19   .  30   .  19     (scored: odd positions)
Knobs: vocab_size (MAD baseline 256 = 127 keys; changes 512, 1024, 2048, 4096, 8192), seq_len (MAD 32),
num_train (MAD 256, the default here too: memorization is about few examples, many epochs), kv_map_seed (MAD
uses its config seed, 12345).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks.base import IGNORE, Batch, Symbols, Task


def key_value_table(vocab_size: int, seed: int) -> np.ndarray:
    """[num_keys] value of each key: keys [0, n/2) map one-to-one onto values in [n/2, n), n = vocab_size - 1."""
    n = vocab_size - 1
    num_keys = n // 2
    rng = np.random.default_rng(seed)  # its own stream: every split and every run seed sees the same table
    keys, values = rng.permutation(num_keys), rng.permutation(np.arange(num_keys, n))
    table = np.empty(num_keys, dtype=np.int64)
    table[keys] = values[:num_keys]
    return table


@register_task("memorization")
class Memorization(Task):
    """MAD memorization: a fixed key -> value table learned into the weights; each key's value is scored."""

    @dataclass
    class Config(Task.Config):
        seq_len: int = 32  # tokens (even): seq_len/2 `key insert` pairs; MAD baseline 32
        vocab_size: int = 256  # (V-1)//2 keys, the rest values, insert V-1; MAD baseline 256
        num_train: int = 256  # MAD baseline 256
        num_test: int = 1_000  # MAD 1280
        kv_map_seed: int = 12345  # seeds the fixed key -> value table; MAD's config seed

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        if cfg.seq_len % 2:
            raise ConfigError(f"task memorization: seq_len={cfg.seq_len} must be even (key insert pairs)")
        if cfg.vocab_size < 4:
            raise ConfigError(f"task memorization: vocab_size={cfg.vocab_size} must be >= 4 (key, values, insert)")
        self.table = key_value_table(cfg.vocab_size, cfg.kv_map_seed)

    def symbols(self) -> list[Symbols]:
        n = self.cfg.vocab_size - 1
        return [Symbols(0, "k", "keys", count=n // 2), Symbols(n // 2, "v", "values", count=n - n // 2),
                Symbols(n, "<ins>", "insert (emit the key's value)")]

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        c = self.cfg
        E, pairs = num_examples, c.seq_len // 2
        keys = rng.integers(0, len(self.table), size=(E, pairs))
        inputs = np.full((E, c.seq_len), c.vocab_size - 1, dtype=np.int64)
        inputs[:, 0::2] = keys
        targets = np.full((E, c.seq_len), IGNORE, dtype=np.int64)
        targets[:, 1::2] = self.table[keys]
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))
