"""Reasoning probes (variable_tracking, dyck): independent solvers agree with every label.

Each solver reads the decoded tokens only (no generator internals) and must reproduce every scored target, and
only the positions it answers may be scored. Also: the chains really have the configured depth, one-line knob
errors, and one short in-process training run showing the loss falls.

    PYTHONPATH=. pytest tests/tasks/test_reasoning.py -q
"""

from __future__ import annotations

import pytest

from arena.errors import ConfigError
from arena.tasks import IGNORE, build_task


def scored(targets: list[int]) -> dict[int, int]:
    return {t: y for t, y in enumerate(targets) if y != IGNORE}


def check_solver(task, solve, num_examples: int = 200):
    for split in ("train", "test"):
        batch = task.generate(num_examples, [7, 1], split)
        for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
            assert solve(inputs) == scored(targets)


# variable tracking ----------------------------------------------------------------------------------------------

def resolve_variables(inputs: list[int], num_vars: int) -> tuple[dict[int, int], int]:
    """Run the program `dst src` pairs (NOISE 2 skipped) up to QUERY (1); return {query position: value} and the
    number of lookups the query took. A source below 3 + num_vars is a variable, otherwise a value."""
    query = inputs.index(1)
    env = {}
    for t in range(0, query - 1, 2):
        if inputs[t] == 2:
            continue
        dst, src = inputs[t], inputs[t + 1]
        assert dst not in env, "every variable is assigned once"
        assert src >= 3 + num_vars or src in env, "a variable is read only after its assignment"
        env[dst] = src
    name, lookups = inputs[query + 1], 0
    while name < 3 + num_vars:
        name, lookups = env[name], lookups + 1
    return {query + 1: name}, lookups


VARIABLES = {
    "default": {},
    "ruler-like-4hops": {"seq_len": 64, "num_hops": 4, "num_distractors": 0, "num_vars": 8, "vocab_size": 21},
    "L31-1hop-5distractors": {"seq_len": 31, "num_hops": 1, "num_distractors": 5, "num_vars": 12, "vocab_size": 21},
}


@pytest.mark.parametrize("setting", VARIABLES, ids=list(VARIABLES))
def test_variable_tracking_labels_agree_with_solver(setting):
    task = build_task("variable_tracking", **VARIABLES[setting])
    c = task.cfg

    def solve(inputs):
        answer, lookups = resolve_variables(inputs, c.num_vars)
        assert lookups == c.num_hops + 1  # the queried variable is the end of a full chain
        values = {tok for tok in inputs if tok >= 3 + c.num_vars}
        assert len(values) == c.num_distractors + 1  # one distinct value per chain
        return answer

    check_solver(task, solve)


def test_variable_tracking_at_length_widens_the_haystack():
    task = build_task("variable_tracking").at_length(512)
    check_solver(task, lambda x: resolve_variables(x, task.cfg.num_vars)[0], num_examples=50)
    last_statement = (task.generate(200, 0).inputs[:, :-2] != 2).nonzero()[:, 1].max().item()
    assert last_statement > 400, "statements spread over the whole haystack"


@pytest.mark.parametrize("overrides, message", [
    ({"num_hops": 0}, "num_hops=0 must be >= 1"),
    ({"num_vars": 8}, "num_vars=8 is fewer than the 9 variables"),
    ({"vocab_size": 20}, "vocab_size=20 leaves 1 values"),
    ({"seq_len": 18}, "seq_len=18 cannot fit 9 statements"),
], ids=["hops0", "vars8", "V20", "L18"])
def test_variable_tracking_bad_knobs_fail_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_task("variable_tracking", **overrides)


# Dyck -------------------------------------------------------------------------------------------------------------

def solve_dyck(inputs: list[int], num_types: int, max_depth: int) -> dict[int, int]:
    """Push openings (1..k), pop on closings (k+1..2k, which must match); name the top's closing bracket."""
    stack, answers = [], {}
    for t, tok in enumerate(inputs):
        if tok <= num_types:
            stack.append(tok)
        else:
            assert stack and stack.pop() == tok - num_types, "a closing bracket must match the innermost opening"
        assert len(stack) <= max_depth
        if stack:
            answers[t] = stack[-1] + num_types
    return answers


DYCK = {
    "default": {},
    "k2-m3-L16": {"seq_len": 16, "num_types": 2, "max_depth": 3, "vocab_size": 5},
    "k8-m10-deep": {"seq_len": 200, "num_types": 8, "max_depth": 10, "p_open": 0.7, "vocab_size": 17},
}


@pytest.mark.parametrize("setting", DYCK, ids=list(DYCK))
def test_dyck_labels_agree_with_solver(setting):
    task = build_task("dyck", **DYCK[setting])
    check_solver(task, lambda x: solve_dyck(x, task.cfg.num_types, task.cfg.max_depth))


def test_dyck_reaches_its_depth_bound():
    batch = build_task("dyck", seq_len=128, max_depth=6, p_open=0.7).generate(100, 0)
    opens = (batch.inputs <= 4).long() - (batch.inputs > 4).long()
    assert opens.cumsum(1).max().item() == 6 and opens.cumsum(1).min().item() >= 0


@pytest.mark.parametrize("overrides, message", [
    ({"num_types": 0}, "num_types=0 and max_depth=4 must be >= 1"),
    ({"vocab_size": 8}, "vocab_size=8 must be >= 9"),
    ({"p_open": 1.0}, r"p_open=1.0 must lie in \(0, 1\)"),
], ids=["k0", "V8", "p1"])
def test_dyck_bad_knobs_fail_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_task("dyck", **overrides)


# learning -------------------------------------------------------------------------------------------------------

def test_gdn_learns_dyck_short_run(smoke_train):
    """A short run on a shallow Dyck: the last window's mean training loss is far below the first's."""
    task = {"name": "dyck", "seq_len": 16, "num_types": 2, "max_depth": 2, "vocab_size": 5,
            "num_train": 1000, "num_test": 100}
    records = smoke_train(task, steps=40, eval_every=20, batch_size=16, warmup_steps=5)
    assert len(records) == 2
    assert records[-1]["train_loss"] < 0.6 * records[0]["train_loss"], records
