"""Every task's token table (Task.symbols): one name per id, unique, a one-line legend, scored targets never shown
as the unscored marker; the default for a task without a table is the id; knobs left to derive themselves read
`auto (value)` in error messages."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from arena.errors import ConfigError
from arena.tasks import Task, build_task, get_task, list_tasks
from arena.tasks.base import Symbols, setting

# token tasks only: a regression task (icl_regression) reads real vectors, it has no token table
VARIANTS = [(name, {}) for name in list_tasks() if get_task(name).kind == "tokens"] + [
    ("stack", {"num_stacks": 1, "vocab_size": 8}),
    ("dyck", {"num_types": 6, "vocab_size": 13}),
    ("noisy_recall", {"vocab_size": 40, "noise_vocab_size": 8}),
    ("mqar_kimi", {"vocab_size": 65}),
]


@pytest.mark.parametrize(("name", "overrides"), VARIANTS, ids=[f"{n}-{len(o)}" for n, o in VARIANTS])
def test_every_id_has_one_unique_symbol(name, overrides):
    task = build_task(name, **overrides)
    names = task.token_names()
    assert len(names) == task.vocab_size and len(set(names)) == len(names), "one distinct name per id"
    legend = task.legend()
    assert "\n" not in legend and "unused" not in legend, legend  # the table covers the whole vocabulary
    for split in ("train", "test"):
        batch = task.generate(8, [1, 2], split=split)
        decoded = [task.decode(row.tolist()) for row in batch.inputs]
        assert all(len(row) == task.seq_len for row in decoded)
        scored = batch.targets[batch.targets >= 0].tolist()
        assert "." not in task.decode(scored), "a scored target must not look like an unscored one"


def test_symbols_of_particular_tasks():
    stack = build_task("stack", num_stacks=1, vocab_size=8)
    assert stack.decode([0, 1, 2, 3, 4, 7]) == [".", "PUSH", "POP", "s0", "x0", "x3"]
    assert build_task("dyck", num_types=6, vocab_size=13).decode([1, 6, 7, 12]) == ["(0", "(5", ")0", ")5"]
    assert build_task("dyck").decode([1, 2, 5, 6]) == ["(", "[", ")", "]"]
    assert build_task("s3").decode([0, 1, 6]) == [".", "012", "210"]
    mqar_kimi = build_task("mqar_kimi", seq_len=16, vocab_size=12)
    assert mqar_kimi.decode([0, 1, 2, 6, 7, 11]) == [".", "<sep>", "k0", "k4", "v0", "v4"]
    assert build_task("modular_arithmetic_brackets").decode([4, 5, 9, 10, 11]) == ["=", "0", "4", "(", ")"]
    assert build_task("stack").decode([99, -1]) == ["99", "-1"], "ids outside the vocabulary print as numbers"
    legend = build_task("stack").legend()
    assert legend.startswith(". (0) PAD | PUSH (1) push | POP (2) pop | s0 s1 s2 s3 (3-6) stack ids")
    assert "(9-12) unused" in build_task("dyck", vocab_size=13).legend()


def test_a_task_without_a_table_prints_ids():
    class Plain(Task):
        @dataclass
        class Config(Task.Config):
            vocab_size: int = 5

    task = Plain(Plain.Config())
    assert task.decode([0, 4]) == ["0", "4"] and task.legend() == "tokens print as their ids (0-4)"
    assert Symbols(3, "s", "stacks", count=1).labels() == ["s0"] and Symbols(1, "PUSH", "push").labels() == ["PUSH"]


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("stack", {"seq_len": 4}, "seq_len=4 cannot fit num_ops=auto (1)"),
        ("palindrome", {"seq_len": 2}, "seq_len=2 cannot fit copy_len=auto (0)"),
        ("mqar_kimi", {"num_kv_pairs": 4, "num_queries": 5}, "num_queries=5 must be <= num_kv_pairs=4"),
        ("mqar_kimi", {"num_queries": 11}, "num_queries=11 must be <= num_kv_pairs=auto (10)"),
    ],
)
def test_auto_knobs_read_auto_in_errors(name, overrides, message):
    with pytest.raises(ConfigError) as err:
        build_task(name, **overrides)
    assert message in str(err.value)


def test_auto_settings_name_the_value_in_use():
    assert build_task("stack").auto_settings() == {"num_ops": 16}
    assert build_task("mqar_kimi").auto_settings() == {"num_kv_pairs": 10, "num_queries": 10}
    assert build_task("palindrome").auto_settings() == {"copy_len": 15}
    assert setting("num_ops", 0, 16) == "num_ops=auto (16)" and setting("num_ops", 5, 5) == "num_ops=5"

