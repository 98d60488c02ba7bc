"""Positional probes (induction_heads, flip_flop, position_lookup): independent solvers agree with every label.

Each solver reads the decoded tokens only (no generator internals) and must reproduce every scored target, and
only the positions it answers may be scored. Also: split-dependent distributions, at_length, one-line knob
errors, and one short in-process training run showing the loss falls.

    PYTHONPATH=. pytest tests/tasks/test_positional.py -q
"""

from __future__ import annotations

import pytest

from arena.errors import ConfigError
from arena.tasks import IGNORE, build_task

SPLITS = ("train", "test")


def scored(targets: list[int]) -> dict[int, int]:
    return {t: y for t, y in enumerate(targets) if y != IGNORE}


def check_solver(task, solve, num_examples: int = 200):
    for split in SPLITS:
        batch = task.generate(num_examples, [7, 1], split)
        for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
            assert solve(inputs) == scored(targets)


# induction heads ------------------------------------------------------------------------------------------------

def solve_induction(inputs: list[int], trigger: int, copy_len: int) -> dict[int, int]:
    """The trigger occurs twice; from its second occurrence on, replay what followed the first."""
    where = [t for t, tok in enumerate(inputs) if tok == trigger]
    assert len(where) == 2, where
    first, second = where
    return {second + j: inputs[first + 1 + j] for j in range(copy_len)}


INDUCTION = {
    "default": {},
    "L16-copy2": {"seq_len": 16, "copy_len": 2},
    "L33-V5-copy3": {"seq_len": 33, "vocab_size": 5, "copy_len": 3},
}


@pytest.mark.parametrize("setting", INDUCTION, ids=list(INDUCTION))
def test_induction_labels_agree_with_solver(setting):
    task = build_task("induction_heads", **INDUCTION[setting])
    c = task.cfg
    check_solver(task, lambda x: solve_induction(x, c.vocab_size - 1, c.copy_len))


def test_induction_first_trigger_spans_the_prefix_and_extrapolates():
    task = build_task("induction_heads", seq_len=32)
    firsts = {x.index(15) for x in task.generate(2000, 0).inputs.tolist()}
    assert firsts == set(range(30))  # any position whose follower precedes the final trigger
    long = task.at_length(512)
    check_solver(long, lambda x: solve_induction(x, 15, 1), num_examples=20)


@pytest.mark.parametrize("overrides, message", [
    ({"copy_len": 0}, "copy_len=0 must be >= 1"),
    ({"vocab_size": 2}, "vocab_size=2 must be >= 3"),
    ({"seq_len": 8, "copy_len": 4}, "seq_len=8 cannot fit copy_len=4"),
], ids=["copy0", "V2", "L8-copy4"])
def test_induction_bad_knobs_fail_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_task("induction_heads", **overrides)


# flip-flop ------------------------------------------------------------------------------------------------------

def solve_flip_flop(inputs: list[int]) -> dict[int, int]:
    """Walk the instruction-bit pairs; each read's bit is the bit of the latest write."""
    names = {0: "PAD", 1: "w", 2: "r", 3: "i", 4: 0, 5: 1}
    answers, memory = {}, None
    for t in range(0, len(inputs) - 1, 2):
        op, bit = names[inputs[t]], names[inputs[t + 1]]
        if op == "w":
            memory = bit
        elif op == "r":
            assert memory is not None, "a read before any write"
            answers[t] = 4 + memory
    return answers


FLIP_FLOP = {
    "default": {},
    "L31-p0.5": {"seq_len": 31, "p_ignore": 0.5},
    "sparse-test": {"seq_len": 128, "test_p_ignore": 0.98},
}


@pytest.mark.parametrize("setting", FLIP_FLOP, ids=list(FLIP_FLOP))
def test_flip_flop_labels_agree_with_solver(setting):
    check_solver(build_task("flip_flop", **FLIP_FLOP[setting]), solve_flip_flop)


@pytest.mark.parametrize("test_p, expected", [(None, 0.8), (0.1, 0.1), (0.98, 0.98)], ids=["val", "dense", "sparse"])
def test_flip_flop_test_split_draws_its_own_ignore_rate(test_p, expected):
    task = build_task("flip_flop", seq_len=256, test_p_ignore=test_p)

    def ignore_rate(split):
        ops = task.generate(400, 0, split).inputs[:, 2:-2:2]  # the forced first write and last read excluded
        return (ops == 3).float().mean().item()

    assert ignore_rate("train") == pytest.approx(0.8, abs=0.01)
    assert ignore_rate("test") == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("overrides, message", [
    ({"p_ignore": 1.0}, r"p_ignore=1.0 must lie in \[0, 1\)"),
    ({"test_p_ignore": -0.1}, r"test_p_ignore=-0.1 must lie in \[0, 1\)"),
    ({"vocab_size": 5}, "vocab_size=5 must be >= 6"),
    ({"seq_len": 3}, "seq_len=3 cannot fit a write and a read"),
], ids=["p1", "test-p-neg", "V5", "L3"])
def test_flip_flop_bad_knobs_fail_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_task("flip_flop", **overrides)


# position lookup ------------------------------------------------------------------------------------------------

def solve_position_lookup(inputs: list[int]) -> dict[int, int]:
    """Symbols up to SEP (1); then each position id 2 + j asks for the j-th symbol."""
    sep = inputs.index(1)
    context = inputs[:sep]
    answers = {}
    for t in range(sep + 1, len(inputs) - 1, 2):
        if inputs[t] == 0:
            break
        answers[t] = context[inputs[t] - 2]
        assert inputs[t + 1] == answers[t], "the answer is fed back before the next query"
    return answers


POSITION = {
    "default": {},
    "N40-P8-q8": {"seq_len": 64, "num_items": 40, "num_positions": 8, "num_queries": 8, "vocab_size": 20},
    "N5-q5": {"seq_len": 16, "num_items": 5, "num_positions": 5, "num_queries": 5, "vocab_size": 9},
}


@pytest.mark.parametrize("setting", POSITION, ids=list(POSITION))
def test_position_lookup_labels_agree_with_solver(setting):
    task = build_task("position_lookup", **POSITION[setting])
    check_solver(task, solve_position_lookup)
    batch = task.generate(100, 0)
    context = batch.inputs[:, : task.cfg.num_items]
    assert (context >= 2 + task.cfg.num_positions).all(), "symbols never collide with position ids"


def test_position_lookup_at_length_keeps_vocabulary_and_grows_context():
    task = build_task("position_lookup")
    long = task.at_length(256)
    assert long.vocab_size == task.vocab_size and long.cfg.num_items == 256 - 1 - 2 * task.cfg.num_queries
    check_solver(long, solve_position_lookup, num_examples=50)


@pytest.mark.parametrize("overrides, message", [
    ({"num_queries": 0}, "num_queries=0 must be >= 1"),
    ({"num_positions": 20}, "num_positions=20 must be <= num_items=16"),
    ({"seq_len": 20}, "seq_len=20 cannot fit num_items=16 and num_queries=4"),
    ({"vocab_size": 19}, "vocab_size=19 leaves 1 symbols"),
], ids=["q0", "P20", "L20", "V19"])
def test_position_lookup_bad_knobs_fail_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_task("position_lookup", **overrides)


def test_position_lookup_fill_trains_at_its_length_and_its_curve_starts_there():
    """num_items=0 fills seq_len with context (conf/task/position_lookup_fill.yaml): no padding in training, and
    at_length(seq_len), the length curve's 1x point, draws the training distribution itself."""
    task = build_task("position_lookup", seq_len=64, num_items=0)
    assert task.auto_settings() == {"num_items": 64 - 1 - 2 * 4}
    batch = task.generate(50, 0)
    assert (batch.inputs != 0).all(), "the context, separator and queries fill the sequence"
    check_solver(task, solve_position_lookup, num_examples=50)
    same = task.at_length(64)
    assert same.generate(50, 3).inputs.equal(task.generate(50, 3).inputs)


def test_position_lookup_fill_error_names_the_derived_count():
    with pytest.raises(ConfigError, match=r"num_positions=16 must be <= num_items=auto \(11\)"):
        build_task("position_lookup", seq_len=20, num_items=0)
    with pytest.raises(ConfigError, match="num_items=-1 must be >= 1, or 0 to fill seq_len"):
        build_task("position_lookup", num_items=-1)


# learning -------------------------------------------------------------------------------------------------------

def test_gdn_learns_flip_flop_short_run(smoke_train):
    """A short run on an easy flip-flop: the last window's mean training loss is far below the first's."""
    task = {"name": "flip_flop", "seq_len": 16, "p_ignore": 0.5, "num_train": 1000, "num_test": 100}
    records = smoke_train(task, steps=40, eval_every=20, batch_size=16, warmup_steps=5)
    assert len(records) == 2
    assert records[-1]["train_loss"] < 0.6 * records[0]["train_loss"], records
