"""MQAR, Kimi Linear's variant: all queries come after a separator (Kimi Linear §5.1; docs/probes.md#mqar_kimi).

Isolates associative recall of many pairs at once: N key-value pairs `k1 v1 .. kN vN`, then `<sep>`, then Q keys
of the context back to back; after each query key the model must emit that key's value. Unlike Zoology's MQAR
(task `mqar`) there is no filler and no power-law gap: the queries follow the separator in a
row, as in the report's `A 1 C 3 B 0 M 8 G 5 E 4 <sep> B G` -> `0 5`. Exactly Q positions are scored.

Token ids: 0 = PAD, 1 = <sep>, keys in [2, 2 + M), values in [2 + M, vocab_size) with M = (vocab_size - 2) // 2.
Keys are distinct within a sequence (else a query would be ambiguous) and so are values (as in Zoology); the
queries are Q distinct keys of the context in random order.

Example (seq_len=16, num_kv_pairs=5, num_queries=3, vocab_size=24), decoded (`.` = unscored):

    position:  0   1   2   3   4   5   6   7   8   9   10    11  12  13  14  15
    inputs  :  11  17  9   20  2   18  4   21  3   16  <sep> 2   3   9   0   0
    targets :  .   .   .   .   .   .   .   .   .   .   .     18  16  20  .   .     (scored: positions 11-13)

Knobs: `num_kv_pairs` (0 = as many as fit with one query per pair: (seq_len - 1) // 3), `num_queries`
(0 = num_kv_pairs, every key queried once), `vocab_size`. The report states neither N, Q nor the vocabulary;
the simplest reading of its training lengths 256-2048 is a context that fills the sequence, which the zero
defaults give. Published setting (Figure 4): seq_len in {256, 512, 1024, 2048}, e.g. `task.seq_len=1024
task.vocab_size=8192` (needs vocab_size >= 2 + 2N). Extrapolation: `at_length(L)` scales N and Q with L.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks.base import IGNORE, PAD, Batch, Symbols, Task, sample_distinct, setting
from arena.tasks.shortcuts import last_where

SEP = 1
FIRST_KEY = 2


def distinct_rows(rng: np.random.Generator, num_rows: int, low: int, high: int, count: int) -> np.ndarray:
    """[num_rows, count] ints from [low, high), distinct within each row. base.sample_distinct's rejection
    sampler never finishes when count**2 >> span (e.g. 341 keys of 4095: every row has a repeat), so dense
    draws take a shuffle of the range instead, in row blocks of bounded memory."""
    span = high - low
    if count * count <= span:
        return sample_distinct(rng, num_rows, low, high, count)
    out = np.empty((num_rows, count), dtype=np.int64)
    block = max(1, 2**22 // span)
    for start in range(0, num_rows, block):
        stop = min(num_rows, start + block)
        ranges = np.broadcast_to(np.arange(low, high), (stop - start, span))
        out[start:stop] = rng.permuted(ranges, axis=1)[:, :count]
    return out


@register_task("mqar_kimi")
class MQARKimi(Task):
    """MQAR, Kimi Linear's variant: key-value pairs, <sep>, then queried keys back to back; their values are scored."""

    @dataclass
    class Config(Task.Config):
        seq_len: int = 32  # L, total tokens per sequence
        vocab_size: int = 64  # keys [2, 2 + M), values [2 + M, V), M = (V - 2) // 2; 0 = PAD, 1 = <sep>
        num_kv_pairs: int = 0  # N pairs before <sep>; 0 = as many as fit with Q = N: (seq_len - 1) // 3
        num_queries: int = 0  # Q query keys after <sep> = scored positions; 0 = N

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        if cfg.num_kv_pairs < 0 or cfg.num_queries < 0:
            raise ConfigError(
                f"task mqar_kimi: num_kv_pairs={cfg.num_kv_pairs} and num_queries={cfg.num_queries} "
                "must be >= 1, or 0 for the default"
            )
        n, q = self.num_kv_pairs, self.num_queries
        pairs, queries = setting("num_kv_pairs", cfg.num_kv_pairs, n), setting("num_queries", cfg.num_queries, q)
        if n < 1 or 2 * n + 1 + q > cfg.seq_len:
            raise ConfigError(
                f"task mqar_kimi: seq_len={cfg.seq_len} cannot fit {pairs} with {queries}; "
                f"needs seq_len >= {2 * max(n, 1) + 1 + max(q, 1)} (context 2N, <sep>, Q queries)"
            )
        if q > n:
            raise ConfigError(f"task mqar_kimi: {queries} must be <= {pairs} (queries are distinct)")
        if self.num_keys < n:
            raise ConfigError(
                f"task mqar_kimi: vocab_size={cfg.vocab_size} gives {self.num_keys} keys, fewer than {pairs}; "
                f"needs vocab_size >= {2 * n + 2}"
            )

    @property
    def num_kv_pairs(self) -> int:
        return self.cfg.num_kv_pairs or (self.cfg.seq_len - 1) // 3

    @property
    def num_queries(self) -> int:
        return self.cfg.num_queries or self.num_kv_pairs

    @property
    def num_keys(self) -> int:
        return (self.cfg.vocab_size - FIRST_KEY) // 2

    def symbols(self) -> list[Symbols]:
        m = self.num_keys
        return [Symbols(PAD, ".", "PAD"), Symbols(SEP, "<sep>", "separator"), Symbols(FIRST_KEY, "k", "keys", count=m),
                Symbols(FIRST_KEY + m, "v", "values", count=self.cfg.vocab_size - FIRST_KEY - m)]

    def auto_settings(self) -> dict[str, object]:
        return {"num_kv_pairs": self.num_kv_pairs, "num_queries": self.num_queries}

    def shortcut_predictions(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        # the latest value token (the last pair's value): recency without a key lookup
        return {"last_value": last_where(inputs >= 2 + self.num_keys, inputs)}

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        n, q, L, m = self.num_kv_pairs, self.num_queries, self.cfg.seq_len, self.num_keys
        keys = distinct_rows(rng, num_examples, FIRST_KEY, FIRST_KEY + m, n)  # [E, N]
        values = distinct_rows(rng, num_examples, FIRST_KEY + m, self.cfg.vocab_size, n)  # [E, N]
        asked = distinct_rows(rng, num_examples, 0, n, q)  # [E, Q] which pairs are queried, in order

        inputs = np.full((num_examples, L), PAD, dtype=np.int64)
        inputs[:, 0: 2 * n: 2] = keys
        inputs[:, 1: 2 * n: 2] = values
        inputs[:, 2 * n] = SEP
        inputs[:, 2 * n + 1: 2 * n + 1 + q] = np.take_along_axis(keys, asked, axis=1)
        targets = np.full((num_examples, L), IGNORE, dtype=np.int64)
        targets[:, 2 * n + 1: 2 * n + 1 + q] = np.take_along_axis(values, asked, axis=1)
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))

    def at_length(self, seq_len: int) -> MQARKimi:
        def scaled(count: int) -> int:
            return count and max(1, count * seq_len // self.cfg.seq_len)

        c = self.cfg
        kv_pairs, queries = scaled(c.num_kv_pairs), scaled(c.num_queries)
        return MQARKimi(dataclasses.replace(c, seq_len=seq_len, num_kv_pairs=kv_pairs, num_queries=queries))
