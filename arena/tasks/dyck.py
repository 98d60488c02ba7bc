"""Bounded Dyck-(k, m): name the bracket that must close next (Hewitt et al. 2020, Yao et al. 2021;
docs/probes.md#dyck).

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
from arena.tasks.base import IGNORE, PAD, Batch, Symbols, Task
from arena.tasks.shortcuts import last_where


@register_task("dyck")
class Dyck(Task):
    """Bounded Dyck-(k, m) brackets: the bracket that must close next is scored wherever one is open."""

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
        # the depth walk over 8 positions from every start depth and every 8 coins (bit i = position i):
        # which of them open (a bit pattern) and the depth after them; depths stay <= min(m, seq_len)
        self._deepest = min(m, cfg.seq_len)
        depth = np.repeat(np.arange(self._deepest + 1), 256)
        coins = np.tile(np.arange(256), self._deepest + 1)
        opens = np.zeros_like(depth)
        for i in range(8):
            now = (depth == 0) | ((depth < m) & ((coins >> i) & 1 == 1))
            opens |= now << i
            depth += np.where(now, 1, -1)
        self._block_opens = opens.astype(np.uint8).reshape(-1, 256)
        self._block_end = depth.reshape(-1, 256)

    def symbols(self) -> list[Symbols]:
        k = self.cfg.num_types
        opens, closes = ("(", "[", "{", "<")[:k], (")", "]", "}", ">")[:k]
        if k > 4:  # more types than bracket characters: number them
            opens, closes = tuple(f"({j}" for j in range(k)), tuple(f"){j}" for j in range(k))
        return [Symbols(PAD, ".", "PAD"), Symbols(1, opens, "opening brackets"),
                Symbols(1 + k, closes, "closing brackets")]

    def shortcut_predictions(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        # close the latest OPENING bracket seen, ignoring closes (no stack: right only when nothing closed since)
        k = self.cfg.num_types
        opening = last_where((inputs >= 1) & (inputs <= k), inputs)
        return {"close_last_opened": np.where(opening >= 0, opening + k, -1)}

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        c, E = self.cfg, num_examples
        k, L = c.num_types, c.seq_len
        coins = rng.random((E, L)) < c.p_open
        kinds = rng.integers(0, k, size=(E, L))
        opens = self._opens(coins)
        inputs = np.empty((E, L), dtype=np.int64)
        targets = np.empty((E, L), dtype=np.int64)
        rows = max(1, 2**15 // L)  # row blocks of ~32k positions keep the working set in cache
        for r in range(0, E, rows):
            inputs[r: r + rows], targets[r: r + rows] = self._label(opens[r: r + rows], kinds[r: r + rows])
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))

    def _label(self, opens: np.ndarray, kinds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets [E, L] of the brackets `opens` (bool) of types `kinds`."""
        (E, L), k = opens.shape, self.cfg.num_types
        depth = np.cumsum(2 * opens.view(np.int8) - 1, axis=1, dtype=np.int64)  # after each bracket
        # the innermost open bracket after position t is the latest opening at level depth[t] - 1 (the depth
        # before it); sort each row by that level (stable: time order kept; 8-bit keys take a radix sort),
        # openings keyed by their own level, and carry the latest opening's kind forward through each run.
        # Flat gathers and masks-times-values instead of take_along_axis and np.where: several times faster
        level = np.where(depth > 0, depth - 1, self._deepest).astype(np.uint8 if self._deepest < 256 else np.int64)
        flat = np.argsort(level, axis=1, kind="stable") + L * np.arange(E)[:, None]
        kind = (kinds - (k + 1) * ~opens).take(flat)  # < 0 at a closing: it only reads
        bits = int(k).bit_length()  # a key (rank in the sorted row, kind) whose maximum is the latest opening
        key = np.arange(L, dtype=np.int32 if L << bits < 2**31 else np.int64) << bits
        latest = np.maximum.accumulate((kind >= 0) * (key + kind), axis=1)
        top = np.empty(E * L, dtype=np.int64)
        top[flat] = latest & ((1 << bits) - 1)

        targets = IGNORE + (depth > 0) * (1 + k - IGNORE + top.reshape(E, L))
        inputs = 1 + kinds
        # a closing closes the bracket the previous position's target named
        inputs[:, 1:] += ~opens[:, 1:] * (targets[:, :-1] - inputs[:, 1:])
        return inputs, targets

    def _opens(self, coins: np.ndarray) -> np.ndarray:
        """[E, L] bool: which brackets open, from the coins. The depth walk is sequential but has only m + 1
        states, so it steps 8 positions at a time through tables of every (depth, 8 coins) pattern."""
        E, L = coins.shape
        codes = np.packbits(coins, axis=1, bitorder="little")  # [E, ceil(L / 8)], position 8 b + i in bit i
        start = np.zeros((E, codes.shape[1]), dtype=np.int64)  # depth before each block of 8
        depth = start[:, 0]
        for b in range(codes.shape[1] - 1):
            depth = start[:, b + 1] = self._block_end[depth, codes[:, b]]
        return np.unpackbits(self._block_opens[start, codes], axis=1, count=L, bitorder="little").view(bool)
