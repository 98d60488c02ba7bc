"""Variable tracking: follow a chain of assignments to its value (RULER `vt`, Hsieh et al. 2024;
docs/probes.md#variable_tracking).

Each chain assigns a value to a variable and copies it along `num_hops` more variables
(`a 7`, `b a`, `c b` reads a=7, b=a, c=b). The target chain and `num_distractors` other chains (distinct
variables, distinct values) are interleaved at random, each chain kept in order, and spread over a haystack
of NOISE filler as RULER spreads them over noise sentences. The sequence ends with `? v`, v the last variable
of the target chain; after v the model must emit the chain's value. Only that position is scored.

It isolates multi-hop retrieval: each hop is an associative lookup whose key was itself retrieved, so a model
must chain recalls (attention stacks them across layers; a recurrent state must keep every binding and
resolve the chain). Distractor chains make a "copy the only value" shortcut fail, and `num_hops` sets the
depth. RULER's question runs the other way (list every variable holding 12345); here the value is asked, so
one token is scored. With num_distractors=0 the single value in the context is the answer (the easiest
setting, used by the smoke test).

Token ids: PAD 0 (unused: the content fills seq_len), QUERY 1, NOISE 2, variables 3 .. 3 + num_vars - 1,
values the rest up to vocab_size. Example (seq_len=20, num_hops=2, num_distractors=1, num_vars=8,
vocab_size=15: values 11..14), printed by this generator (variables shown as v0..v7, NOISE as _):

    position:  0   1   2  3  4   5   6  7  8   9   10  11  12  13  14  15  16  17  18  19
    inputs  :  v0  13  _  _  v7  11  _  _  v3  v7  v1  v0  v6  v3  v4  v1  _   _   ?   v6
    targets :  .   .   .  .  .   .   .  .  .   .   .   .   .   .   .   .   .   .   .   11   (scored: 19)

(chains: v7 = 11, v3 = v7, v6 = v3 is the target; v0 = 13, v1 = v0, v4 = v1 is the distractor.)

Length extrapolation: `at_length(L)` keeps the chains and widens the haystack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks.base import IGNORE, PAD, Batch, Symbols, Task, sample_distinct
from arena.tasks.shortcuts import first_where, last_where

QUERY, NOISE, FIRST_VAR = 1, 2, 3


@register_task("variable_tracking")
class VariableTracking(Task):
    """Variable tracking: chains of assignments among distractors; the value of the queried variable is scored."""

    @dataclass
    class Config(Task.Config):
        seq_len: int = 32  # L: statement slots are the (L - 2) // 2 two-token slots before the query
        vocab_size: int = 35  # 3 + num_vars + values: here 16 values
        num_hops: int = 2  # copies after the first assignment (RULER vt: 4)
        num_distractors: int = 2  # other chains interleaved with the target chain (RULER vt: 0, plus noise)
        num_vars: int = 16  # variable-name tokens; each sequence uses (num_hops + 1) * (num_distractors + 1)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        h, d, L = cfg.num_hops, cfg.num_distractors, cfg.seq_len
        chains, statements = d + 1, (d + 1) * (h + 1)
        if h < 1 or d < 0:
            raise ConfigError(f"task variable_tracking: num_hops={h} must be >= 1 and num_distractors={d} >= 0")
        if cfg.num_vars < statements:
            raise ConfigError(
                f"task variable_tracking: num_vars={cfg.num_vars} is fewer than the {statements} variables "
                f"that num_hops={h} and num_distractors={d} need"
            )
        if self.num_values < max(2, chains):
            raise ConfigError(
                f"task variable_tracking: vocab_size={cfg.vocab_size} leaves {self.num_values} values; needs "
                f">= {FIRST_VAR + cfg.num_vars + max(2, chains)} (one distinct value per chain, at least 2)"
            )
        if 2 * statements + 2 > L:
            raise ConfigError(
                f"task variable_tracking: seq_len={L} cannot fit {statements} statements; "
                f"needs seq_len >= {2 * statements + 2}"
            )
        # the informed guess: one of the values written in the context, not a uniform draw over all values
        self.chance_accuracy = 1.0 / chains

    @property
    def num_values(self) -> int:
        return self.cfg.vocab_size - FIRST_VAR - self.cfg.num_vars

    def symbols(self) -> list[Symbols]:
        first_value = FIRST_VAR + self.cfg.num_vars
        return [Symbols(PAD, ".", "PAD"), Symbols(QUERY, "?", "query"), Symbols(NOISE, "_", "noise filler"),
                Symbols(FIRST_VAR, "v", "variables", count=self.cfg.num_vars),
                Symbols(first_value, "#", "values", count=self.num_values)]

    def shortcut_predictions(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        # a value written in the context, without following the chain: the latest one or the first one
        value = inputs >= FIRST_VAR + self.cfg.num_vars
        return {"last_value": last_where(value, inputs), "first_value": first_where(value, inputs)}

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        c, E = self.cfg, num_examples
        hops, chains, L = c.num_hops + 1, c.num_distractors + 1, c.seq_len
        S = chains * hops
        names = FIRST_VAR + sample_distinct(rng, E, 0, c.num_vars, S).reshape(E, chains, hops)
        values = FIRST_VAR + c.num_vars + sample_distinct(rng, E, 0, self.num_values, chains)  # [E, C]
        # source of hop j of chain k: the value for j = 0, else the previous variable of the chain
        sources = np.concatenate([values[:, :, None], names[:, :, :-1]], axis=2)  # [E, C, hops]

        # interleave: a random order of chain labels; the j-th occurrence of label k is hop j of chain k
        labels = np.argsort(rng.random((E, S)), axis=1) // hops  # [E, S]
        hop = np.cumsum(labels[:, :, None] == np.arange(chains), axis=1)  # [E, S, C] running counts
        hop = np.take_along_axis(hop, labels[:, :, None], axis=2)[:, :, 0] - 1  # [E, S]
        dst = names[np.arange(E)[:, None], labels, hop]
        src = sources[np.arange(E)[:, None], labels, hop]

        slots = np.sort(sample_distinct(rng, E, 0, (L - 2) // 2, S), axis=1)  # statement slots, in order
        inputs = np.full((E, L), NOISE, dtype=np.int64)
        np.put_along_axis(inputs, 2 * slots, dst, axis=1)
        np.put_along_axis(inputs, 2 * slots + 1, src, axis=1)
        inputs[:, L - 2] = QUERY
        inputs[:, L - 1] = names[:, 0, -1]  # chain 0 is the target
        targets = np.full((E, L), IGNORE, dtype=np.int64)
        targets[:, L - 1] = values[:, 0]
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))
