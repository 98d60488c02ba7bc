"""Stack: many independent LIFO stacks under push/pop ops (Kimi Linear §5.1; docs/probes.md#stack).

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
from arena.tasks.base import IGNORE, PAD, Batch, Symbols, Task, setting
from arena.tasks.shortcuts import keyed_last, last_where, shift

PUSH, POP = 1, 2
FIRST_ID = 3


@register_task("stack")
class Stack(Task):
    """Stack: push/pop ops on independent LIFO stacks; the element each pop gives back is scored."""

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
                f"task stack: seq_len={cfg.seq_len} cannot fit {setting('num_ops', cfg.num_ops, self.num_ops)}; "
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

    def symbols(self) -> list[Symbols]:
        S = self.cfg.num_stacks
        return [Symbols(PAD, ".", "PAD"), Symbols(PUSH, "PUSH", "push"), Symbols(POP, "POP", "pop"),
                Symbols(FIRST_ID, "s", "stack ids", count=S),
                Symbols(FIRST_ID + S, "x", "elements", count=self.num_elements)]

    def auto_settings(self) -> dict[str, object]:
        return {"num_ops": self.num_ops}

    def shortcut_predictions(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        # a stack id follows its op token; the token after a push's id is the element pushed
        op = shift(inputs, 1, PAD)
        pushed, element = op == PUSH, shift(inputs, -1)
        stack_id = np.where((op == PUSH) | (op == POP), inputs, -1)
        return {"last_pushed": keyed_last(stack_id, element, pushed),  # this stack's last push, pops ignored
                "last_pushed_any": last_where(pushed, element)}  # the last push to any stack

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        E, P, S, L = num_examples, self.num_ops, self.cfg.num_stacks, self.cfg.seq_len
        elems = rng.integers(0, self.num_elements, size=(E, P))  # overwritten by the popped element on pops
        coins = rng.random((E, P))
        push_ids = rng.integers(0, S, size=(E, P))
        picks = rng.random((P, E))  # the stream of one rng.random(E) per op, which earlier versions drew
        # whether op j pops depends only on the total height, a +-1 walk that pushes instead of popping at 0:
        # each such forced push lifts the free walk w by 2, so the height is w + 2 * ceil(-min(0, w so far) / 2)
        down = coins < self.cfg.pop_prob
        down[:, -1] = True  # the last op pops if it can
        free = np.zeros((E, P), dtype=np.int64)
        np.cumsum(np.where(down[:, :-1], -1, 1), axis=1, out=free[:, 1:])
        lowest = np.minimum.accumulate(np.minimum(free, 0), axis=1)
        pop = down & (free + 2 * ((1 - lowest) // 2) > 0)
        stack, elems = self._replay(pop, push_ids, elems, picks)

        inputs = np.full((E, L), PAD, dtype=np.int64)
        inputs[:, 0: 3 * P: 3] = np.where(pop, POP, PUSH)
        inputs[:, 1: 3 * P: 3] = stack + FIRST_ID
        inputs[:, 2: 3 * P: 3] = elems + FIRST_ID + S
        targets = np.full((E, L), IGNORE, dtype=np.int64)
        targets[:, 1: 3 * P: 3] = np.where(pop, elems + FIRST_ID + S, IGNORE)
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))

    def _replay(self, pop: np.ndarray, push_ids: np.ndarray, elems: np.ndarray, picks: np.ndarray):
        """Stack ids [E, P] and elements [E, P] of the ops once each pop has taken the r-th non-empty stack (id
        order, r = floor(picks[j] * number non-empty)) and given back its top element.

        The pop choices are sequential, so the loop runs over rounds: round k applies every example's pushes
        since its pop k - 1 (their stacks are known up front), then its pop k. Stacks are linked lists through
        the flat op indices e * P + j: top[slot] = the top push (-1 = empty), below[op] = the push under it."""
        E, P, S = pop.shape[0], pop.shape[1], self.cfg.num_stacks
        npop = pop.sum(axis=1)
        K = int(npop.max(initial=0))
        live = np.arange(K)[:, None] < npop  # [K, E] example e pops in round k
        rounds = np.cumsum(pop, axis=1) - pop  # [E, P] pops before op j = the round a push joins
        pick = np.zeros((K, E))
        pick.T[live.T] = picks.T[pop]  # the pick of pop k of example e

        # group the pushes by (round, slot), in time order: one round's pushes onto one stack chain directly.
        # Slots are e * W + s with W = S + 1: slot S of each example is a spare that never empties
        W = S + 1
        slot = (np.arange(E)[:, None] * W + push_ids).ravel()
        push_ops = np.flatnonzero(~pop)
        push_round = rounds.ravel()[push_ops]
        order = np.argsort(_narrow(slot[push_ops], E * W), kind="stable")  # 16-bit keys take a radix sort
        order = order[np.argsort(_narrow(push_round[order], P), kind="stable")]
        ops = push_ops[order]
        key = push_round[order] * (E * W) + slot[ops]
        head = np.ones(len(ops), dtype=bool)
        head[1:] = key[1:] != key[:-1]
        below = np.full(E * P + 1, E * P, dtype=np.int64)  # entry E * P: the spares' endless pile
        below[ops[1:][~head[1:]]] = ops[:-1][~head[1:]]
        heads = np.flatnonzero(head)
        tails = np.append(heads[1:], len(ops))[: len(heads)] - 1  # [:]: no pushes at all (no examples)
        h_slot, h_first, h_last = slot[ops[heads]], ops[heads], ops[tails]
        bounds = np.searchsorted(push_round[order][heads], np.arange(K + 1)).tolist()

        top = np.full(E * W, -1, dtype=np.int64)  # top[slot] = its top push; -1 = empty
        top[W - 1:: W] = E * P
        row_starts = np.arange(E + 1) * W
        taken = np.empty((K, E), dtype=np.int64)  # the push each pop undoes
        for k in range(K):
            hs = h_slot[bounds[k]: bounds[k + 1]]
            below[h_first[bounds[k]: bounds[k + 1]]] = top[hs]
            top[hs] = h_last[bounds[k]: bounds[k + 1]]
            nonempty = (top >= 0).nonzero()[0]  # sorted, so example e's non-empty slots form one run
            starts = nonempty.searchsorted(row_starts)
            # the rank among the real stacks (the spare comes last); an example with no pop left has pick 0
            # and pops its first non-empty slot, harmless as nothing of it is read any more
            rank = (pick[k] * (starts[1:] - starts[:-1] - 1)).astype(np.int64)
            c = nonempty.take(starts[:-1] + rank)
            t = taken[k] = top[c]
            top[c] = below[t]
        undone = taken.T[live.T]  # in op order within each example
        stack = push_ids.copy()
        stack[pop] = push_ids.ravel()[undone]
        elems = elems.copy()
        elems[pop] = elems.ravel()[undone]
        return stack, elems

    def at_length(self, seq_len: int) -> Stack:
        num_ops = self.cfg.num_ops and max(2, self.cfg.num_ops * seq_len // self.cfg.seq_len)
        return Stack(dataclasses.replace(self.cfg, seq_len=seq_len, num_ops=num_ops))


def _narrow(keys: np.ndarray, high: int) -> np.ndarray:
    """Non-negative `keys` below `high` in the narrowest unsigned dtype: numpy's stable argsort is a radix sort
    for 16-bit and narrower keys (linear time), a merge sort for wider ones."""
    return keys.astype(np.uint8 if high < 2**8 else np.uint16 if high < 2**16 else np.int64)

