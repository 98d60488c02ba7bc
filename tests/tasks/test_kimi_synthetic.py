"""Kimi Linear's synthetic probes (palindrome, mqar_kimi, stack): independent solvers agree with every label.

Each solver reads only the decoded tokens (plain Python, no generator internals) and computes what the model
must emit at every position; the labels must match it exactly, scored and unscored positions alike. One smoke
training per probe checks that a tiny GDN model's training loss falls. Run:
`PYTHONPATH=. pytest tests/tasks/test_kimi_synthetic.py -q` (~30 s on 2 CPU cores).
"""

from __future__ import annotations

import re

import pytest

from arena.errors import ConfigError
from arena.tasks import IGNORE, build_task

PAD = 0


def solve_palindrome(inputs: list[int]) -> list[int]:
    """After <sep> (1) the string comes back reversed; the next token is scored until the string is used up."""
    sep = inputs.index(1)
    string = inputs[:sep]
    answers = [IGNORE] * len(inputs)
    for k, token in enumerate(reversed(string)):
        answers[sep + k] = token
    return answers


def solve_mqar_kimi(inputs: list[int]) -> list[int]:
    """Read `k v` pairs up to <sep> (1); every key after it is answered by its value; PAD ends the queries."""
    sep = inputs.index(1)
    table = dict(zip(inputs[0:sep:2], inputs[1:sep:2]))
    answers = [IGNORE] * len(inputs)
    for t in range(sep + 1, len(inputs)):
        if inputs[t] == PAD:
            break
        answers[t] = table[inputs[t]]
    return answers


def solve_stack(inputs: list[int]) -> list[int]:
    """Replay the ops with Python lists: `<push>(1) id X` appends, `<pop>(2) id` must emit the list's last item."""
    stacks: dict[int, list[int]] = {}
    answers = [IGNORE] * len(inputs)
    for t in range(0, len(inputs) - 2, 3):
        op, stack_id, element = inputs[t: t + 3]
        if op == PAD:
            break
        if op == 1:
            stacks.setdefault(stack_id, []).append(element)
        else:
            assert op == 2, f"unknown op token {op} at position {t}"
            answers[t + 1] = stacks[stack_id].pop()
    return answers


SOLVERS = {"palindrome": solve_palindrome, "mqar_kimi": solve_mqar_kimi, "stack": solve_stack}

# name -> {setting id: config overrides}; settings include the defaults, a published-size instance and odd sizes
SETTINGS = {
    "palindrome": {
        "default": {},
        "L256-fill": {"seq_len": 256, "vocab_size": 32},
        "L40-n7-V4": {"seq_len": 40, "copy_len": 7, "vocab_size": 4},
    },
    "mqar_kimi": {
        "default": {},
        "L256-V8192-fill": {"seq_len": 256, "vocab_size": 8192},
        "L50-N12-Q5-V30": {"seq_len": 50, "num_kv_pairs": 12, "num_queries": 5, "vocab_size": 30},
    },
    "stack": {
        "default": {},
        "L256-S64-V128": {"seq_len": 256, "num_stacks": 64, "vocab_size": 128},
        "L61-ops11-S1-pop0.8": {"seq_len": 61, "num_ops": 11, "num_stacks": 1, "vocab_size": 6, "pop_prob": 0.8},
    },
}
CASES = [(name, sid, split) for name in SETTINGS for sid in SETTINGS[name] for split in ("train", "test")]


# positions scored per sequence by definition (stack: one per pop, which the solver already counts)
SCORED = {"palindrome": lambda task: task.copy_len, "mqar_kimi": lambda task: task.num_queries}


@pytest.mark.parametrize(("name", "setting", "split"), CASES, ids=[f"{n}-{s}-{sp}" for n, s, sp in CASES])
def test_labels_agree_with_independent_solver(name, setting, split):
    task = build_task(name, **SETTINGS[name][setting])
    batch = task.generate(200, seed=[7, 1], split=split)
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
        assert SOLVERS[name](inputs) == targets
        scored = sum(y != IGNORE for y in targets)
        assert scored >= 1
        if name in SCORED:
            assert scored == SCORED[name](task)


def test_palindrome_scores_exactly_the_reversed_half():
    task = build_task("palindrome", seq_len=12, copy_len=5)
    batch = task.generate(50, seed=0)
    scored = (batch.targets != IGNORE).nonzero()[:, 1].view(50, 5)
    assert scored.tolist() == [[5, 6, 7, 8, 9]] * 50
    assert (batch.inputs[:, 5] == 1).all() and (batch.inputs[:, 11] == PAD).all()


def test_mqar_kimi_keys_values_and_queries_are_well_formed():
    task = build_task("mqar_kimi", seq_len=40, num_kv_pairs=10, num_queries=6, vocab_size=30)
    batch = task.generate(300, seed=0)
    keys, values, queries = batch.inputs[:, 0:20:2], batch.inputs[:, 1:20:2], batch.inputs[:, 21:27]
    assert (keys >= 2).all() and (keys < 16).all() and (values >= 16).all() and (values < 30).all()
    assert all(len(set(row)) == 10 for row in keys.tolist()) and all(len(set(row)) == 10 for row in values.tolist())
    assert all(len(set(row)) == 6 and set(row) <= set(k) for row, k in zip(queries.tolist(), keys.tolist()))
    assert (batch.inputs[:, 27:] == PAD).all() and (batch.targets[:, :21] == IGNORE).all()


def test_stack_pops_follow_pop_prob_and_use_every_stack():
    task = build_task("stack", seq_len=300, num_stacks=8, vocab_size=20, pop_prob=0.3)
    batch = task.generate(200, seed=0)
    ops, ids = batch.inputs[:, 0::3], batch.inputs[:, 1::3]
    assert set(ops.unique().tolist()) == {1, 2} and set(ids.unique().tolist()) == set(range(3, 11))
    pop_share = (ops == 2).float().mean().item()
    assert 0.25 < pop_share < 0.32  # pops happen at rate pop_prob, less the ops where every stack is empty
    scored = batch.targets != IGNORE
    assert scored[:, 1::3].sum() == scored.sum() == (ops == 2).sum()


def test_at_length_keeps_the_fill_fraction():
    assert build_task("palindrome", seq_len=32, copy_len=8).at_length(64).copy_len == 16
    assert build_task("palindrome").at_length(64).copy_len == 31
    longer = build_task("mqar_kimi", seq_len=32, num_kv_pairs=6, num_queries=4).at_length(64)
    assert (longer.num_kv_pairs, longer.num_queries) == (12, 8)
    assert build_task("stack", seq_len=48, num_ops=10).at_length(96).num_ops == 20


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("palindrome", {"seq_len": 10, "copy_len": 5}, "seq_len=10 cannot fit copy_len=5"),
        ("palindrome", {"copy_len": -1}, "copy_len=-1 must be >= 1"),
        ("palindrome", {"vocab_size": 3}, "vocab_size=3 must be >= 4"),
        ("mqar_kimi", {"seq_len": 20, "num_kv_pairs": 8},
         "seq_len=20 cannot fit num_kv_pairs=8 with num_queries=auto (8)"),
        ("mqar_kimi", {"num_kv_pairs": 4, "num_queries": 5}, "num_queries=5 must be <= num_kv_pairs=4"),
        ("mqar_kimi", {"seq_len": 64, "vocab_size": 32},
         "vocab_size=32 gives 15 keys, fewer than num_kv_pairs=auto (21)"),
        ("stack", {"seq_len": 30, "num_ops": 11}, "seq_len=30 cannot fit num_ops=11"),
        ("stack", {"num_stacks": 12}, "vocab_size=16 leaves 1 elements for num_stacks=12"),
        ("stack", {"pop_prob": 1.0}, "pop_prob=1.0 must lie in"),
        ("stack", {"num_stacks": 0}, "num_stacks=0 must be >= 1"),
    ],
    ids=["pal-too-long", "pal-neg", "pal-vocab", "mqk-too-long", "mqk-queries", "mqk-vocab", "stack-too-long",
         "stack-vocab", "stack-pop1", "stack-zero"],
)
def test_bad_knobs_fail_in_one_line(name, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        build_task(name, **overrides)
    assert "\n" not in str(err.value)


SMOKE = {
    "palindrome": {"seq_len": 12, "copy_len": 5, "vocab_size": 8},
    "mqar_kimi": {"seq_len": 16, "num_kv_pairs": 4, "vocab_size": 12},
    "stack": {"seq_len": 24, "num_stacks": 2, "vocab_size": 8},
}


@pytest.mark.parametrize("name", SMOKE)
def test_tiny_gdn_training_loss_falls(name, smoke_train):
    records = smoke_train({"name": name, **SMOKE[name], "num_train": 1000, "num_test": 100})
    first, last = records[0]["train_loss"], records[-1]["train_loss"]
    assert last < 0.7 * first, f"{name}: training loss {first:.3f} -> {last:.3f} did not fall"
