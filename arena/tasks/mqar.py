"""Multi-query associative recall (MQAR), Zoology's layout (Arora et al. 2023; docs/probes.md#mqar).

A context of N key-value pairs, then a query region where each key appears once more; after a query key the
model must emit that key's value. Keys come from [1, V/2), values from [V/2, V), distinct within a sequence.
Query slots are two tokens wide; key i sits in slot gap_i, drawn without replacement with p(gap) ~ gap^(a-1)
(power_a = 0.01 puts most queries right after the context). Exactly N positions per sequence are scored.

Example (seq_len=16, num_kv_pairs=3, vocab_size=32, random_non_queries=False), decoded:

    position:  0  1   2   3   4   5  | 6   7  8  9  10  11 12  13 14 15
    inputs  :  8  19  14  31  15  30 | 8   0  0  0  14  0  15  0  0  0
    targets :  .  .   .   .   .   .  | 19  .  .  .  31  .  30  .  .  .     (scored: positions 6, 10, 12)

With random_non_queries=True (the default) the `_` filler is uniform random tokens instead of 0.

Length extrapolation: `at_length(L)` (the Task default) keeps num_kv_pairs and grows the query region, so the
filler grows and the query gaps, drawn from the same power law over more slots, reach further from the context.
Random filler may hold the sequence's own keys (Zoology's generator does), each followed by a random token: a
second, wrong "pair" for that key. At vocab_size 8192, 16 pairs, that hits 0.7% of the queries at 256 tokens and
10% at 8,192 (1,024 ids: 5% and 33%), so a length curve would fall for the data's sake, not the model's.
`filler_avoids_keys=True` draws the filler from the ids that are not this sequence's keys: a key then occurs only
in its pair and its query at every length (conf/task/mqar_filler.yaml, conf/experiment/nope_vs_rope.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks.base import IGNORE, Batch, Symbols, Task, sample_distinct, sample_weighted_distinct
from arena.tasks.shortcuts import last_where


@register_task("mqar")
class MQAR(Task):
    """Multi-query associative recall (Zoology): key-value pairs, then each key again; its value is scored there."""

    @dataclass
    class Config(Task.Config):
        seq_len: int = 64  # L, total tokens per sequence
        vocab_size: int = 8192  # V: keys in [1, V/2), values in [V/2, V)
        num_kv_pairs: int = 8  # N: pairs in the context = scored positions per sequence
        power_a: float = 0.01  # query-gap power law p(g) ~ g^(a-1); 1.0 = uniform placement
        num_passes: int = 1  # >1 repeats the context ("just read twice")
        random_non_queries: bool = True  # filler tokens uniform random (True) or 0 (False)
        filler_avoids_keys: bool = False  # random filler never holds this sequence's keys (for long test lengths)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        n, L, V = cfg.num_kv_pairs, cfg.seq_len, cfg.vocab_size
        needed = 2 * n * cfg.num_passes + 2 * n
        if n < 1 or cfg.num_passes < 1:
            raise ConfigError(f"task mqar: num_kv_pairs={n} and num_passes={cfg.num_passes} must be >= 1")
        if needed > L:
            raise ConfigError(
                f"task mqar: seq_len={L} cannot fit num_kv_pairs={n} with num_passes={cfg.num_passes}; "
                f"needs seq_len >= {needed} (context 2*N*passes + queries 2*N)"
            )
        if V // 2 - 1 < n:
            raise ConfigError(f"task mqar: vocab_size={V} gives {V // 2 - 1} keys, fewer than num_kv_pairs={n}")
        if not 0 < cfg.power_a <= 1:
            raise ConfigError(f"task mqar: power_a={cfg.power_a} must lie in (0, 1]")
        if cfg.filler_avoids_keys and not cfg.random_non_queries:
            raise ConfigError("task mqar: filler_avoids_keys=true needs random_non_queries=true (the filler is 0 "
                              "otherwise, never a key)")

    def symbols(self) -> list[Symbols]:
        half = self.cfg.vocab_size // 2  # filler between queries: id 0, or random ids (random_non_queries)
        return [Symbols(0, ".", "filler"), Symbols(1, "k", "keys", count=half - 1),
                Symbols(half, "v", "values", count=self.cfg.vocab_size - half)]

    def shortcut_predictions(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        # the latest value-range token (the last pair's value, or filler): recency without a key lookup
        return {"last_value": last_where(inputs >= self.cfg.vocab_size // 2, inputs)}

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        c = self.cfg
        n, L, V = c.num_kv_pairs, c.seq_len, c.vocab_size
        keys = sample_distinct(rng, num_examples, 1, V // 2, n)  # [E, N]
        values = sample_distinct(rng, num_examples, V // 2, V, n)  # [E, N]
        pairs = np.stack([keys, values], axis=2).reshape(num_examples, 2 * n)  # k1 v1 k2 v2 ...
        context = np.tile(pairs, (1, c.num_passes))
        ctx_len = context.shape[1]

        slots = (L - ctx_len) // 2
        probs = c.power_a * np.arange(1, slots + 1, dtype=np.float64) ** (c.power_a - 1)
        gaps = sample_weighted_distinct(rng, num_examples, probs / probs.sum(), n)  # [E, N] slot per key

        inputs = np.zeros((num_examples, L), dtype=np.int64)
        inputs[:, :ctx_len] = context
        query_pos = ctx_len + 2 * gaps  # [E, N]
        if c.random_non_queries and c.filler_avoids_keys:
            inputs[:, ctx_len:] = draw_avoiding(rng, V, np.sort(keys, axis=1), L - ctx_len)
        elif c.random_non_queries:
            inputs[:, ctx_len:] = rng.integers(0, V, size=(num_examples, L - ctx_len))
        np.put_along_axis(inputs, query_pos, keys, axis=1)
        targets = np.full((num_examples, L), IGNORE, dtype=np.int64)
        np.put_along_axis(targets, query_pos, values, axis=1)
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))


def draw_avoiding(rng: np.random.Generator, vocab_size: int, excluded: np.ndarray, length: int) -> np.ndarray:
    """[E, length] ids uniform over [0, vocab_size) minus each row's `excluded` ids ([E, N], sorted ascending,
    distinct): a draw from the V - N ids left, shifted past every excluded id at or below it (ascending order
    makes one pass enough)."""
    out = rng.integers(0, vocab_size - excluded.shape[1], size=(excluded.shape[0], length))
    for j in range(excluded.shape[1]):
        out += out >= excluded[:, j: j + 1]
    return out
