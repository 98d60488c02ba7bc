"""Position lookup: read the token at a named absolute position (a positional probe; docs/probes.md#position_lookup).

A context of `num_items` random symbols, a separator, then `num_queries` queries. A query is a dedicated
position-id token P_j naming position j of the context; after it the model must emit the symbol at j, which is
then fed in (teacher-forced) before the next query. Queried positions are distinct and drawn from
[0, num_positions); only the answers are scored, at the P_j positions.

Nothing in a symbol says where it stands, so the model has to know absolute positions: attention with RoPE or
absolute embeddings gets them for free, NoPE attention must build them (e.g. by counting through the causal
mask), and a recurrent mixer must write each symbol into its state keyed by a position it counts itself.
Position ids (one token per position) were chosen over a digit encoding so the probe asks only
"can you localise", not "can you parse a number".

Token ids: PAD 0, SEP 1, position ids P_j = 2 + j for j < num_positions, symbols the rest up to vocab_size.
Example (seq_len=16, num_items=8, num_positions=8, num_queries=3, vocab_size=14: symbols 10..13), printed by
this generator (P_j shown as @j):

    position:  0   1   2   3   4   5   6   7   8    9   10  11  12  13  14  15
    inputs  :  10  10  11  11  12  11  11  10  SEP  @4  12  @0  10  @3  11  PAD
    targets :  .   .   .   .   .   .   .   .   .    12  .   10  .   11  .   .    (scored: 9, 11, 13)

Length extrapolation: `at_length(L)` lengthens the context to fill L (num_items = L - 1 - 2 * num_queries)
while keeping the vocabulary, so queries still name positions in [0, num_positions) but the sequence and the
lookback distance grow. `num_items=0` fills the training sequence the same way (conf/task/position_lookup_fill.yaml),
so that the training length is the length trained on: with a fixed num_items a long seq_len is mostly padding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks.base import IGNORE, PAD, Batch, Symbols, Task, sample_distinct, setting
from arena.tasks.shortcuts import running_mode

SEP, FIRST_POSITION = 1, 2


@register_task("position_lookup")
class PositionLookup(Task):
    """Position lookup: symbols, <sep>, then position ids @j; the symbol at position j is scored after each @j."""

    @dataclass
    class Config(Task.Config):
        seq_len: int = 32  # L >= num_items + 1 + 2 * num_queries
        vocab_size: int = 34  # 2 + num_positions + symbols: here 16 symbols
        num_items: int = 16  # context length N (symbols before the separator); 0 = fill seq_len (L - 1 - 2 * q)
        num_positions: int = 16  # position-id tokens; queries name positions [0, num_positions), <= num_items
        num_queries: int = 4  # scored answers per sequence (distinct positions)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        p, q, L = cfg.num_positions, cfg.num_queries, cfg.seq_len
        if cfg.num_items < 0:
            raise ConfigError(f"task position_lookup: num_items={cfg.num_items} must be >= 1, or 0 to fill seq_len")
        # 0: the context fills the sequence, so training sees no padding and at_length(seq_len) is the training
        # distribution itself (a length curve's 1x point)
        self.num_items = n = cfg.num_items or L - 1 - 2 * q
        items = setting("num_items", cfg.num_items, n)
        if q < 1 or p < q:
            raise ConfigError(f"task position_lookup: num_queries={q} must be >= 1 and <= num_positions={p}")
        if n < p:
            raise ConfigError(f"task position_lookup: num_positions={p} must be <= {items}")
        if n + 1 + 2 * q > L:
            raise ConfigError(
                f"task position_lookup: seq_len={L} cannot fit {items} and num_queries={q}; "
                f"needs seq_len >= {n + 1 + 2 * q}"
            )
        if self.num_symbols < 2:
            raise ConfigError(
                f"task position_lookup: vocab_size={cfg.vocab_size} leaves {self.num_symbols} symbols; "
                f"needs >= {FIRST_POSITION + p + 2} (PAD, SEP, {p} position ids, >= 2 symbols)"
            )
        self.chance_accuracy = 1.0 / self.num_symbols  # a uniform guess among the symbols

    @property
    def num_symbols(self) -> int:
        return self.cfg.vocab_size - FIRST_POSITION - self.cfg.num_positions

    def symbols(self) -> list[Symbols]:
        p = self.cfg.num_positions
        return [Symbols(PAD, ".", "PAD"), Symbols(SEP, "<sep>", "separator"),
                Symbols(FIRST_POSITION, "@", "position ids (@j names position j)", count=p),
                Symbols(FIRST_POSITION + p, "x", "symbols", count=self.num_symbols)]

    def auto_settings(self) -> dict[str, object]:
        return {"num_items": self.num_items}

    def at_length(self, seq_len: int) -> Task:
        """Same vocabulary and query range; the context grows to fill `seq_len`."""
        items = seq_len - 1 - 2 * self.cfg.num_queries
        return type(self)(dataclasses.replace(self.cfg, seq_len=seq_len, num_items=items))

    def shortcut_predictions(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        # the most frequent symbol so far: a guess that needs no position
        return {"context_mode": running_mode(inputs, FIRST_POSITION + self.cfg.num_positions, self.cfg.vocab_size)}

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        c = self.cfg
        n, q = self.num_items, c.num_queries
        first_symbol = FIRST_POSITION + c.num_positions
        context = rng.integers(first_symbol, c.vocab_size, size=(num_examples, n))
        where = sample_distinct(rng, num_examples, 0, c.num_positions, q)  # [E, q]
        answers = np.take_along_axis(context, where, axis=1)  # [E, q]

        inputs = np.zeros((num_examples, c.seq_len), dtype=np.int64)
        inputs[:, :n] = context
        inputs[:, n] = SEP
        inputs[:, n + 1: n + 1 + 2 * q: 2] = FIRST_POSITION + where
        inputs[:, n + 2: n + 2 + 2 * q: 2] = answers
        targets = np.full((num_examples, c.seq_len), IGNORE, dtype=np.int64)
        targets[:, n + 1: n + 1 + 2 * q: 2] = answers
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))
