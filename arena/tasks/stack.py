"""Stack: many independent LIFO stacks under push/pop ops (Kimi Linear §5.1; ../shared/docs/tasks.md 1.2 and 4.5).

Isolates state tracking with overwrites: the model must keep, for each of `num_stacks` stacks, the whole pile
of pushed elements and give back the most recent one on a pop, after which the one below it is on top again.
A sequence is a run of 3-token ops, `<push> id X` (push X onto stack id) and `<pop> id X` (X is the element
popped). After reading `<pop> id` the model must emit X; only those slots are scored.

Token ids: 0 = PAD, 1 = <push>, 2 = <pop>, stack ids in [3, 3 + S), elements in [3 + S, vocab_size).

Op sampling (the report gives none; this is the simplest reading): each op is a pop with probability
`pop_prob` when some stack is non-empty, on a stack chosen uniformly among the non-empty ones; otherwise it is
a push of a uniform element onto a uniformly chosen stack (stacks are unbounded). The last op pops whenever
some stack is non-empty, so every sequence scores at least one position (a sequence with no earlier pop
still has all its pushes on the stacks).

Example (seq_len=19, num_ops=6, num_stacks=2, vocab_size=10), decoded (`.` = unscored): stack 4 gets 8 then
9, so its first pop gives 9 and its second the 8 beneath.

    position:  0      1  2  3     4  5  6      7  8  9      10 11 12    13 14 15    16 17 18
    inputs  :  <push> 3  7  <pop> 3  7  <push> 4  8  <push> 4  9  <pop> 4  9  <pop> 4  8  0
    targets :  .      .  .  .     7  .  .      .  .  .      .  .  .     9  .  .     8  .  .   (scored: 4, 13, 16)

Knobs: `num_ops` (0 = as many as fit, seq_len // 3), `num_stacks` S, `pop_prob`, `vocab_size`. Published
setting (Figure 4): 64 stacks, seq_len in {256, 512, 1024, 2048}, e.g. `task.num_stacks=64 task.vocab_size=128
task.seq_len=1024` (the report gives no element vocabulary). Extrapolation: `at_length(L)` scales num_ops with L.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks.base import IGNORE, PAD, Batch, Task

PUSH, POP = 1, 2
FIRST_ID = 3


@register_task("stack")
class Stack(Task):
    @dataclass
    class Config(Task.Config):
        seq_len: int = 48  # L, total tokens per sequence
        vocab_size: int = 16  # stack ids [3, 3 + S), elements [3 + S, V); 0 = PAD, 1 = <push>, 2 = <pop>
        num_stacks: int = 4  # S independent stacks
        num_ops: int = 0  # 3-token ops per sequence; 0 = as many as fit, seq_len // 3
        pop_prob: float = 0.5  # chance an op pops when some stack is non-empty

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        if cfg.num_stacks < 1:
            raise ConfigError(f"task stack: num_stacks={cfg.num_stacks} must be >= 1")
        if cfg.num_ops < 0:
            raise ConfigError(f"task stack: num_ops={cfg.num_ops} must be >= 2, or 0 for as many as fit")
        if self.num_ops < 2 or 3 * self.num_ops > cfg.seq_len:
            raise ConfigError(
                f"task stack: seq_len={cfg.seq_len} cannot fit num_ops={self.num_ops}; "
                f"needs seq_len >= {3 * max(2, self.num_ops)} (3 tokens per op, at least a push and a pop)"
            )
        if self.num_elements < 2:
            raise ConfigError(
                f"task stack: vocab_size={cfg.vocab_size} leaves {self.num_elements} elements for num_stacks="
                f"{cfg.num_stacks}; needs vocab_size >= {FIRST_ID + cfg.num_stacks + 2}"
            )
        if not 0 <= cfg.pop_prob < 1:
            raise ConfigError(f"task stack: pop_prob={cfg.pop_prob} must lie in [0, 1)")

    @property
    def num_ops(self) -> int:
        return self.cfg.num_ops or self.cfg.seq_len // 3

    @property
    def num_elements(self) -> int:
        return self.cfg.vocab_size - FIRST_ID - self.cfg.num_stacks

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        E, P, S, L = num_examples, self.num_ops, self.cfg.num_stacks, self.cfg.seq_len
        rows = np.arange(E)
        # every stack is a linked list through the ops: top[e, s] = op index of its top push (-1 = empty),
        # below[e, j] = the push under push j; memory O(E * (S + P)) instead of a [E, S, depth] array
        top = np.full((E, S), -1, dtype=np.int64)
        below = np.full((E, P), -1, dtype=np.int64)
        height = np.zeros(E, dtype=np.int64)  # total elements over all stacks
        ops = np.empty((E, P), dtype=np.int64)
        ids = np.empty((E, P), dtype=np.int64)
        elems = rng.integers(0, self.num_elements, size=(E, P))  # overwritten by the popped element on pops
        coins = rng.random((E, P))
        push_ids = rng.integers(0, S, size=(E, P))
        for j in range(P):  # ops depend on the stacks so far: loop over ops, vectorized over examples
            pop = (height > 0) & ((coins[:, j] < self.cfg.pop_prob) | (j == P - 1))
            # uniform among non-empty stacks: the r-th non-empty one for a uniform rank r
            filled = np.cumsum(top >= 0, axis=1)  # [E, S]
            rank = (rng.random(E) * filled[:, -1]).astype(np.int64)
            stack = np.where(pop, (filled <= rank[:, None]).sum(1), push_ids[:, j])
            popped = top[rows, stack]  # op index of the push being undone (junk where pushing)
            elems[:, j] = np.where(pop, elems[rows, np.maximum(popped, 0)], elems[:, j])
            below[:, j] = np.where(pop, -1, top[rows, stack])
            top[rows, stack] = np.where(pop, below[rows, np.maximum(popped, 0)], j)
            height += np.where(pop, -1, 1)
            ops[:, j] = np.where(pop, POP, PUSH)
            ids[:, j] = stack

        inputs = np.full((E, L), PAD, dtype=np.int64)
        inputs[:, 0: 3 * P: 3] = ops
        inputs[:, 1: 3 * P: 3] = ids + FIRST_ID
        inputs[:, 2: 3 * P: 3] = elems + FIRST_ID + S
        targets = np.full((E, L), IGNORE, dtype=np.int64)
        targets[:, 1: 3 * P: 3] = np.where(ops == POP, elems + FIRST_ID + S, IGNORE)
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))

    def at_length(self, seq_len: int) -> Stack:
        num_ops = self.cfg.num_ops and max(2, self.cfg.num_ops * seq_len // self.cfg.seq_len)
        return Stack(dataclasses.replace(self.cfg, seq_len=seq_len, num_ops=num_ops))
