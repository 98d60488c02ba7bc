"""Bounded Dyck-(k, m): name the bracket that must close next (Hewitt et al. 2020, Yao et al. 2021; tasks.md 7.6).

A random prefix of a Dyck word over k bracket types with nesting depth at most m: at depth 0 the walk must
open, at depth m it must close, otherwise it opens with probability p_open (type uniform) and closes the
innermost bracket otherwise. Target at every position where some bracket is open: the closing bracket that
matches the innermost open one, the only deterministic part of the next-token set (any opening bracket is also
legal below depth m). Positions with nothing open are unscored, so position 0 (always an opening) is scored.

Why it separates architectures: it is LIFO memory with unbounded lifetimes. The bracket to name may have
been opened arbitrarily long ago, under any number of balanced sub-words, and each close must *restore* the
previous top. Attention can find the latest unmatched opening (Yao et al.: 2 layers suffice, with a depth
count that NoPE can build); a recurrent mixer must hold a stack of m * log2(k) bits and undo pushes, which
decay-only (diagonal, positive) transitions do poorly and the delta rule can do by overwriting. Training short
and testing long (`at_length`, Chomsky protocol: train <= 40, test 41-500) stresses exactly those lifetimes;
it complements Kimi's Stack probe (many stacks, explicit push/pop tokens) with a single implicit stack.

Token ids: PAD 0, opening brackets 1 .. k, closing brackets k + 1 .. 2k (bracket j opens with 1 + j, closes with
1 + k + j). Example (seq_len=16, num_types=2, max_depth=3; ( [ open, ) ] close), printed by this generator:

    position:  0  1  2  3  4  5  6  7  8  9  10 11 12 13 14 15
    inputs  :  (  [  [  ]  ]  [  (  )  ]  )  [  (  [  ]  )  [
    targets :  )  ]  ]  ]  )  ]  )  ]  )  .  ]  )  ]  )  ]  ]     (scored: all but position 9)

Knobs: `num_types` k, `max_depth` m, `p_open` (higher = deeper, longer-lived stacks), `seq_len`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks.base import IGNORE, Batch, Task


@register_task("dyck")
class Dyck(Task):
    @dataclass
    class Config(Task.Config):
        seq_len: int = 64  # L, brackets per sequence (Chomsky protocol: train <= 40, test 41-500 via at_length)
        vocab_size: int = 9  # 1 + 2 * num_types; a larger value leaves ids unused
        num_types: int = 4  # k bracket types
        max_depth: int = 4  # m, bound on the nesting depth
        p_open: float = 0.5  # P(open) when both opening and closing are allowed

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        k, m = cfg.num_types, cfg.max_depth
        if k < 1 or m < 1:
            raise ConfigError(f"task dyck: num_types={k} and max_depth={m} must be >= 1")
        if cfg.vocab_size < 1 + 2 * k:
            raise ConfigError(f"task dyck: vocab_size={cfg.vocab_size} must be >= {1 + 2 * k} (PAD + 2 * num_types)")
        if not 0 < cfg.p_open < 1:
            raise ConfigError(f"task dyck: p_open={cfg.p_open} must lie in (0, 1)")
        self.chance_accuracy = 1.0 / k  # a uniform guess among the closing brackets

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        c, E = self.cfg, num_examples
        k, m, L = c.num_types, c.max_depth, c.seq_len
        coins = rng.random((E, L)) < c.p_open
        kinds = rng.integers(0, k, size=(E, L))
        stack = np.zeros((E, m + 1), dtype=np.int64)  # bracket types by depth; slot m is never read
        depth = np.zeros(E, dtype=np.int64)
        rows = np.arange(E)
        inputs = np.empty((E, L), dtype=np.int64)
        targets = np.full((E, L), IGNORE, dtype=np.int64)
        for t in range(L):  # a loop over positions only; every example advances at once
            opens = (depth == 0) | ((depth < m) & coins[:, t])
            stack[rows, depth] = np.where(opens, kinds[:, t], stack[rows, depth])
            closing = stack[rows, np.maximum(depth - 1, 0)]
            inputs[:, t] = np.where(opens, 1 + kinds[:, t], 1 + k + closing)
            depth += np.where(opens, 1, -1)
            targets[:, t] = np.where(depth > 0, 1 + k + stack[rows, np.maximum(depth - 1, 0)], IGNORE)
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))
