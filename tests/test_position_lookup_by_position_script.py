"""scripts/position_lookup_by_position.py splits position-lookup accuracy by the position each query names: an
oracle "model" that reads the named position's symbol from the inputs, but only for positions below a cut, must
score 1.0 below it and 0.0 above, and 1.0 everywhere without the cut.

    python -m pytest -q tests/test_position_lookup_by_position_script.py      (a second on a CPU)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from arena.tasks import build_task
from arena.tasks.position_lookup import FIRST_POSITION
from arena.testing import load_script


class LookupOracle:
    """At each query token P_j, the symbol at context position j (read from the inputs) for j < `cut`, another
    symbol for j >= cut; elsewhere anything (unscored)."""

    def __init__(self, vocab_size: int, cut: int):
        self.vocab_size, self.cut = vocab_size, cut

    def __call__(self, inputs: torch.Tensor):
        named = (inputs - FIRST_POSITION).clamp(min=0, max=inputs.shape[1] - 1)  # [B, T]
        answer = inputs.gather(1, named)  # the token at the named position
        wrong = torch.where(answer + 1 < self.vocab_size, answer + 1, answer - 1)
        answer = torch.where(named < self.cut, answer, wrong)
        return F.one_hot(answer, self.vocab_size).float(), None


def test_accuracy_is_split_by_the_named_position():
    script = load_script("position_lookup_by_position")
    task = build_task("position_lookup", seq_len=64, num_items=0)
    positions, orders = script.by_position(LookupOracle(task.vocab_size, cut=5), task, 64, 200, 0)
    assert positions == [1.0] * 5 + [0.0] * 11
    assert all(0.0 < a < 1.0 for a in orders)  # each query order names cut and uncut positions alike
    # 4,096 tokens: 32 sequences a forward, so 40 sequences take two (every answer still counted once)
    positions, orders = script.by_position(LookupOracle(task.vocab_size, cut=99), task, 4096, 40, 1)
    assert positions == [1.0] * 16 and orders == [1.0] * 4


def test_a_position_no_query_names_is_nan():
    script = load_script("position_lookup_by_position")
    task = build_task("position_lookup", seq_len=64, num_items=0)
    positions, _ = script.by_position(LookupOracle(task.vocab_size, cut=99), task, 64, 1, 0)  # 4 queries of 16
    assert sum(math.isnan(a) for a in positions) == 12
