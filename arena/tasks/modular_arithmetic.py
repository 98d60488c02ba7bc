"""Modular arithmetic mod 5, without and with brackets (Grazzi et al. 2025, xLSTM; docs/probes.md#modular_arithmetic).

Isolates state tracking beyond one bit: `modular_arithmetic` is a regular language (a finite automaton over
Z_5 with `*` taking precedence, so the state is the running sum plus the pending product and its sign);
`modular_arithmetic_brackets` nests `( l op r )`, a context-free language that needs a stack. Scored at ONE
position per sequence: the `=` sign, whose target is the value. Chance = 1/modulus.

Tokens (both names): 0 PAD, 1 `+`, 2 `-`, 3 `*`, 4 `=`, 5 .. 4+m the digits 0 .. m-1 (m = modulus, 5);
brackets add 5+m `(` and 6+m `)`. So vocab 10 without and 12 with brackets, as Grazzi. The answer slot after
`=` stays PAD in the inputs (xLSTM's `enable_mask`); content lengths count it, as the source does.

- without brackets: numbers and operators (uniform over + - *, `mult` knob) alternate; lengths are odd,
  n = 2k - 1 with k uniform in [(min_len+1)//2, (max_len+1)//2] (xLSTM's rule, so n may be min_len - 1),
  holding k - 1 numbers, then `=` at n - 2.
- with brackets: n uniform in [min_len, max_len], raised to 5; an expression of e = n - 3 tokens is built
  recursively: e < 5 gives `x`, `-x`, `(x)`, `(-x)`; else `( l op r )` with len(l) uniform in [1, e - 4].
  `*` is off by default (`mult: false`). Then `=` at n - 3, the answer slot and one PAD (n tokens).

Example `modular_arithmetic` (seq_len=12, train lengths 9-9), decoded:

    position:  0  1  2  3  4  5  6  7  8  9  10 11
    inputs  :  9  2  8  2  7  3  6  4  0  0  0  0      (4 - 3 - 2 * 1 = , then the answer slot and PAD)
    targets :  .  .  .  .  .  .  .  9  .  .  .  .      (scored: position 7; 4 - 3 - 2 = 4 mod 5 -> token 9)

Example `modular_arithmetic_brackets` (seq_len=14, train lengths 12-12), decoded:

    position:  0  1  2  3  4  5  6  7  8  9  10 11 12 13
    inputs  :  10 5  2  10 6  2  7  11 11 4  0  0  0  0      (( 0 - ( 1 - 2 ) ) = , answer slot, PAD)
    targets :  .  .  .  .  .  .  .  .  .  6  .  .  .  .      (scored: position 9; 0 - (1 - 2) = 1 -> token 6)

Published setting: train lengths 3-40, test 40-256 (so seq_len 256); `at_length(L)` tests exactly length L.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks._lengths import at_length_of, check_lengths, draw_lengths
from arena.tasks.base import IGNORE, PAD, Batch, Symbols, Task
from arena.tasks.shortcuts import last_where

PLUS, MINUS, TIMES, EQUALS, DIGIT0 = 1, 2, 3, 4, 5


class _ModularArithmetic(Task):
    brackets = False
    chance_accuracy = 0.2  # 1 / modulus at the default modulus 5; instances hold their own

    @dataclass
    class Config(Task.Config):
        seq_len: int = 64  # L; must fit test_max_len (Grazzi: 256)
        vocab_size: int = 10  # must be 5 + modulus (Grazzi: 10)
        modulus: int = 5  # m: digits 0 .. m-1, arithmetic mod m (Grazzi: 5)
        mult: bool = True  # `*` among the operators (xLSTM's no-bracket generator always has it)
        train_min_len: int = 3  # content length incl. `=` and the answer slot (Grazzi: 3)
        train_max_len: int = 16  # (Grazzi: 40)
        test_min_len: int = 16  # held-out lengths, longer than training ones (Grazzi: 40)
        test_max_len: int = 64  # (Grazzi: 256)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        name, m = self.registry_name, cfg.modulus
        if m < 2:
            raise ConfigError(f"task {name}: modulus={m} must be >= 2")
        needed = DIGIT0 + m + (2 if self.brackets else 0)
        if cfg.vocab_size != needed:
            raise ConfigError(f"task {name}: vocab_size={cfg.vocab_size} must be {needed} for modulus={m}")
        check_lengths(name, cfg, shortest=3)
        if self.brackets and cfg.seq_len < 5:
            raise ConfigError(f"task {name}: seq_len={cfg.seq_len} cannot fit the shortest expression; needs >= 5")
        self.chance_accuracy = 1.0 / m

    def shortcut_predictions(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        # the last digit read, and the sum of every digit read as if each operator were `+` (no precedence,
        # no brackets, no signs)
        m = self.cfg.modulus
        digit = (inputs >= DIGIT0) & (inputs < DIGIT0 + m)
        total = np.cumsum(np.where(digit, inputs - DIGIT0, 0), axis=1) % m + DIGIT0
        return {"last_digit": last_where(digit, inputs), "sum_as_plus": np.where(digit.cumsum(1) > 0, total, -1)}

    def at_length(self, seq_len: int) -> Task:
        return at_length_of(self, seq_len)

    def symbols(self) -> list[Symbols]:
        m = self.cfg.modulus
        table = [Symbols(PAD, ".", "PAD and the answer slot"), Symbols(PLUS, ("+", "-", "*", "="), "operators"),
                 Symbols(DIGIT0, tuple(map(str, range(m))), "digits")]
        return table + ([Symbols(DIGIT0 + m, ("(", ")"), "brackets")] if self.brackets else [])


@register_task("modular_arithmetic")
class ModularArithmetic(_ModularArithmetic):
    """Modular arithmetic mod 5 without brackets (`*` before `+ -`); the value is scored at `=`."""

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        c = self.cfg
        E, L, m = num_examples, c.seq_len, c.modulus
        # "valid" draws training lengths, like "train" (held out by its seed stream, not by length)
        lo, hi = (c.test_min_len, c.test_max_len) if split == "test" else (c.train_min_len, c.train_max_len)
        lengths = 2 * rng.integers((lo + 1) // 2, (hi + 1) // 2 + 1, size=E) - 1  # [E] odd, n = 2k - 1
        count = (lengths - 1) // 2  # numbers per expression
        K = int(count.max())
        digits = rng.integers(0, m, size=(E, K))
        ops = rng.integers(PLUS, TIMES + 1 if c.mult else MINUS + 1, size=(E, K))  # ops[:, j] precedes number j

        # `*` binds tighter: the answer is the sum of the terms (runs of numbers joined by `*`), each term's
        # first number negated after a `-`. Term products come from a segmented scan that doubles its reach
        # each round (Hillis-Steele) until every position has seen its term's start: log2(longest term) rounds
        col = np.arange(K)
        live = col < count[:, None]
        starts = (ops != TIMES) | (col == 0) | ~live  # past the expression every number is its own (unused) term
        prod = np.where(starts & (ops == MINUS) & (col > 0), -digits % m, digits)
        seen = starts.copy()  # the window a position's product covers reaches back to its term's start
        times_table = (np.arange(m)[:, None] * np.arange(m) % m).ravel()
        reach = 1
        while not seen.all():
            joined = times_table.take(prod[:, :-reach] * m + prod[:, reach:])
            prod[:, reach:] = np.where(seen[:, reach:], prod[:, reach:], joined)
            seen[:, reach:] = seen[:, reach:] | seen[:, :-reach]
            reach *= 2
        ends = live & np.append(starts[:, 1:], np.ones((E, 1), bool), axis=1)  # the last number of each term
        answer = (prod * ends).sum(1) % m

        inputs = np.full((E, L), PAD, dtype=np.int64)
        inputs[:, 0: 2 * K: 2] = digits + DIGIT0
        inputs[:, 1: 2 * K - 1: 2] = ops[:, 1:]
        col = np.arange(L)[None, :]
        rows = np.arange(E)
        inputs[col >= (lengths - 2)[:, None]] = PAD  # drop the unused tail of the draws
        inputs[rows, lengths - 2] = EQUALS
        targets = np.full((E, L), IGNORE, dtype=np.int64)
        targets[rows, lengths - 2] = answer + DIGIT0
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))


@register_task("modular_arithmetic_brackets")
class ModularArithmeticBrackets(_ModularArithmetic):
    """Modular arithmetic mod 5 with nested brackets, a context-free language; the value is scored at `=`."""

    brackets = True

    @dataclass
    class Config(_ModularArithmetic.Config):
        vocab_size: int = 12  # must be 7 + modulus (Grazzi: 12)
        mult: bool = False  # `*` among the operators (Grazzi: off)

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        c = self.cfg
        L, m = c.seq_len, c.modulus
        lengths = np.maximum(draw_lengths(rng, c, num_examples, split), 5)  # [E]
        # an expression of n tokens makes at most n + 1 draws (3 per `( l op r )`, 1 per leaf)
        draws = rng.random((num_examples, int(lengths.max()) + 1)).tolist()
        inputs = np.full((num_examples, L), PAD, dtype=np.int64)
        targets = np.full((num_examples, L), IGNORE, dtype=np.int64)
        ops = (PLUS, MINUS, TIMES) if c.mult else (PLUS, MINUS)
        for i, n in enumerate(lengths.tolist()):
            tokens, value = _expression(n - 3, iter(draws[i]), m, ops)
            inputs[i, : n - 3] = tokens
            inputs[i, n - 3] = EQUALS
            targets[i, n - 3] = value + DIGIT0
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))


def _expression(n: int, u, m: int, ops: tuple[int, ...]) -> tuple[list[int], int]:
    """Token ids and value mod m of a random bracketed expression of exactly n tokens (u: uniform draws)."""
    open_, close = DIGIT0 + m, DIGIT0 + m + 1
    if n < 5:
        x = int(next(u) * m)
        leaf = {1: ([DIGIT0 + x], x), 2: ([MINUS, DIGIT0 + x], -x % m),
                3: ([open_, DIGIT0 + x, close], x), 4: ([open_, MINUS, DIGIT0 + x, close], -x % m)}
        return leaf[n]
    left_len = 1 + int(next(u) * (n - 4))  # [1, n - 4]
    op = ops[int(next(u) * len(ops))]
    left, a = _expression(left_len, u, m, ops)
    right, b = _expression(n - 3 - left_len, u, m, ops)
    value = (a + b) % m if op == PLUS else (a - b) % m if op == MINUS else a * b % m
    return [open_, *left, op, *right, close], value
