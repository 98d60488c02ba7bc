"""Shortcut baselines (arena/tasks/shortcuts.py): each rule on a hand-made example, every probe's declared set,
the numbers of arena issue 14 reproduced, and the fields a training run records.

    python -m pytest -q tests/tasks/test_shortcuts.py
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from arena.config_schema import compose_options
from arena.tasks import IGNORE, Batch, Task, build_task, list_tasks
from arena.tasks.shortcuts import (
    GENERIC,
    ShortcutTally,
    first_where,
    keyed_last,
    last_where,
    majority_token,
    running_mode,
    shift,
    shortcut_baselines,
)

# each probe's own heuristics (the task module's `shortcut_predictions`); a probe with none is listed in NO_OWN
OWN = {
    "stack": {"last_pushed", "last_pushed_any"},
    "flip_flop": {"last_bit_any"},
    "dyck": {"close_last_opened"},
    "mqar": {"last_value"}, "mqar_kimi": {"last_value"},
    "in_context_recall": {"last_value"}, "noisy_recall": {"last_value"}, "fuzzy_recall": {"last_value"},
    "induction_heads": {"context_mode"}, "compression": {"context_mode"}, "palindrome": {"context_mode"},
    "position_lookup": {"context_mode"}, "selective_copying": {"context_mode"},
    "variable_tracking": {"last_value", "first_value"},
    "modular_arithmetic": {"last_digit", "sum_as_plus"}, "modular_arithmetic_brackets": {"last_digit", "sum_as_plus"},
}
# no cheap heuristic of their own beyond the generic ones: a fixed table (memorization), a parity or group
# product where every single token is uninformative, and plain text
NO_OWN = {"memorization", "parity", "s3", "s5", "a5", "text"}


def batch(inputs: list[int], targets: dict[int, int]) -> Batch:
    """One sequence with the given targets at the given positions, IGNORE elsewhere."""
    t = torch.full((1, len(inputs)), IGNORE, dtype=torch.int64)
    for position, target in targets.items():
        t[0, position] = target
    return Batch(torch.tensor([inputs]), t)


# ---- the vectorized helpers


def test_helpers_on_hand_made_rows():
    mask = np.array([[False, True, False, True]])
    values = np.array([[1, 2, 3, 4]])
    assert last_where(mask, values).tolist() == [[-1, 2, 2, 4]]
    assert first_where(mask, values).tolist() == [[-1, 2, 2, 2]]
    assert shift(values, 1).tolist() == [[-1, 1, 2, 3]] and shift(values, -1).tolist() == [[2, 3, 4, -1]]
    # the latest EARLIER write of the same key; an unwritten occurrence (position 2) does not count
    keys = np.array([[1, 2, 1, 2, 1]])
    written = np.array([[True, True, False, True, True]])
    assert keyed_last(keys, np.array([[10, 20, 30, 40, 50]]), written).tolist() == [[-1, -1, 10, 20, 10]]
    # the most frequent id of [2, 6) so far, ties to the smaller id; id 1 lies outside and is not counted
    assert running_mode(np.array([[1, 3, 3, 5, 1, 5, 5]]), 2, 6).tolist() == [[-1, 3, 3, 3, 3, 3, 5]]


# ---- each probe's heuristic on a hand-made sequence with a known answer


def test_stack_last_pushed_ignores_pops():
    task = build_task("stack", seq_len=18, num_stacks=2, vocab_size=10)  # PUSH 1, POP 2, ids 3-4, elements 5-9
    # push s3 x7; push s4 x8; pop s3 -> 7; push s4 x9; pop s4 -> 9; pop s4 -> 8 (the 9 is gone)
    inputs = [1, 3, 7, 1, 4, 8, 2, 3, 7, 1, 4, 9, 2, 4, 9, 2, 4, 8]
    predictions = task.shortcut_predictions(np.array([inputs]))
    assert predictions["last_pushed"][0, [7, 13, 16]].tolist() == [7, 9, 9]
    assert predictions["last_pushed_any"][0, [7, 13, 16]].tolist() == [8, 9, 9]
    acc = shortcut_baselines(task, batch(inputs, {7: 7, 13: 9, 16: 8}))
    assert acc["last_pushed"] == pytest.approx(2 / 3) and acc["last_pushed_any"] == pytest.approx(1 / 3)
    assert acc["copy_previous"] == 0 and acc["copy_last"] == 0  # the pop token and the stack id


def test_flip_flop_copy_previous_and_last_bit_any():
    task = build_task("flip_flop", seq_len=8)  # w 1, r 2, i 3, bits 4 / 5
    inputs = [1, 5, 3, 4, 2, 5, 2, 5]  # w 1, i 0, r 1, r 1: both reads give the written 1
    acc = shortcut_baselines(task, batch(inputs, {4: 5, 6: 5}))
    assert acc["copy_previous"] == 0.5  # wrong after the ignore, right after the first read's bit
    assert acc["last_bit_any"] == 0.0  # the ignored 0 is the latest write-or-ignore bit at both reads
    assert acc["chance"] == 0.5


def test_dyck_closes_the_last_opened_bracket():
    task = build_task("dyck", num_types=2, vocab_size=5)  # ( [ = 1 2, ) ] = 3 4
    inputs = [1, 2, 4, 2]  # ( [ ] [ : the top after `]` is `(` again, the rule still names `]`
    acc = shortcut_baselines(task, batch(inputs, {0: 3, 1: 4, 2: 3, 3: 4}))
    assert acc["close_last_opened"] == 0.75


def test_mqar_last_value():
    task = build_task("mqar", seq_len=16, num_kv_pairs=3, vocab_size=32, random_non_queries=False)
    inputs = [8, 19, 14, 31, 15, 30, 8, 0, 0, 0, 14, 0, 15, 0, 0, 0]  # the module docstring's example
    acc = shortcut_baselines(task, batch(inputs, {6: 19, 10: 31, 12: 30}))
    assert acc["last_value"] == pytest.approx(1 / 3)  # only the last key's value is the latest value


def test_variable_tracking_first_and_last_value():
    task = build_task("variable_tracking", seq_len=20, num_hops=2, num_distractors=1, num_vars=8, vocab_size=15)
    inputs = [3, 13, 2, 2, 10, 11, 2, 2, 6, 10, 4, 3, 9, 6, 7, 4, 2, 2, 1, 9]  # the module docstring's example
    acc = shortcut_baselines(task, batch(inputs, {19: 11}))
    assert acc["last_value"] == 1.0 and acc["first_value"] == 0.0


def test_modular_arithmetic_last_digit_and_sum_as_plus():
    task = build_task("modular_arithmetic", seq_len=8, train_min_len=3, train_max_len=8, test_min_len=3,
                      test_max_len=8)
    inputs = [6, 1, 7, 4, 0, 0, 0, 0]  # 1 + 2 = ; answer 3 -> token 8
    predictions = task.shortcut_predictions(np.array([inputs]))
    assert predictions["last_digit"][0, 3] == 7 and predictions["sum_as_plus"][0, 3] == 8
    inputs = [9, 2, 8, 2, 7, 3, 6, 4]  # 4 - 3 - 2 * 1 = : 4 + 3 + 2 + 1 = 0 mod 5 -> token 5, last digit 1 -> 6
    predictions = task.shortcut_predictions(np.array([inputs]))
    assert predictions["sum_as_plus"][0, 7] == 5 and predictions["last_digit"][0, 7] == 6


def test_majority_comes_from_the_training_split_not_the_test_targets():
    class Skewed(Task):
        registry_name = "skewed"

        @dataclass
        class Config(Task.Config):
            seq_len: int = 4

        def sample(self, rng, num_examples, split):
            inputs = torch.zeros((num_examples, 4), dtype=torch.int64)
            targets = torch.full_like(inputs, IGNORE)
            targets[:, -1] = 7 if split == "train" else 9  # the test split's answers are all 9
            return Batch(inputs, targets)

    task = Skewed(Skewed.Config())
    assert majority_token(task) == 7
    assert shortcut_baselines(task, task.generate(8, 0, split="test"))["majority"] == 0.0


# ---- every probe declares its set


@pytest.mark.parametrize("name", list_tasks())
def test_every_probe_declares_chance_majority_copies_and_its_own_heuristics(name):
    task = build_task(name)
    data = task.generate(16, [0, 1], split="test")
    accuracies = task.shortcut_baselines(data)
    if data.targets.dtype.is_floating_point:  # a regression probe: no token to guess, no token shortcut
        assert accuracies == {}
        return
    assert name in OWN or name in NO_OWN, f"{name}: list its own shortcut heuristics in OWN (or NO_OWN)"
    assert set(accuracies) == set(GENERIC) | OWN.get(name, set())
    assert all(0.0 <= value <= 1.0 for value in accuracies.values())
    assert 0 < accuracies["chance"] < 1


# ---- the numbers of arena issue 14, at those settings (small N, loose tolerance)


def test_issue_numbers_flip_flop_and_stack_kimi():
    task = build_task("flip_flop", seq_len=512)  # FFL(0.8): copying the previous bit is right after w, r, half of i
    acc = task.shortcut_baselines(task.generate(200, [0, 1], split="test"))
    assert 0.57 <= acc["copy_previous"] <= 0.65  # the issue measured 0.62; 0.1 + 0.1 + 0.8 / 2 = 0.60 expected

    spec = compose_options("task", ["stack_kimi"])["stack_kimi"]
    for length, expected in ((256, 0.96), (1024, 0.92)):
        task = build_task("stack", **{**{k: v for k, v in spec.items() if k != "name"}, "seq_len": length})
        acc = task.shortcut_baselines(task.generate(100, [0, 1], split="test"))
        assert acc["last_pushed"] == pytest.approx(expected, abs=0.025), length


def test_stack_deep_is_not_dominated_by_last_pushed():
    spec = compose_options("task", ["stack_deep"])["stack_deep"]
    for length in (256, 2048):
        task = build_task("stack", **{**{k: v for k, v in spec.items() if k != "name"}, "seq_len": length})
        acc = task.shortcut_baselines(task.generate(50, [0, 1], split="test"))
        assert max(acc.values()) < 0.8, (length, acc)


# ---- what a run records


def test_tally_over_batches_equals_one_batch():
    task = build_task("stack")
    data = task.generate(64, [0, 1], split="test")
    tally = ShortcutTally(task)
    tally.add(data[:20])
    tally.add(data[20:])
    whole = shortcut_baselines(task, data)
    fields = tally.fields()
    assert fields["shortcuts"] == pytest.approx(whole, abs=1e-6)
    assert fields["best_shortcut"] == "last_pushed"


def test_a_training_run_records_shortcuts_on_test_and_every_length(tmp_path):
    from arena.train import Run, train

    config = {
        "task": {"name": "stack", "seq_len": 48, "num_train": 64, "num_test": 40},
        "train": {"steps": 2, "batch_size": 8, "eval_every": 2, "warmup_steps": 1, "device": "cpu", "seed": 0},
        "model": {"d_model": 16, "n_layers": 1},
        "eval": {"lengths": [48, 96], "num_examples": 20},
        "logger": {"kind": "none"},
    }
    train(Run(config, {"m": {"name": "gdn"}}, "m"), tmp_path, "t")
    summary = json.loads((tmp_path / "summary.json").read_text())
    test = build_task("stack", seq_len=48, num_test=40).generate(40, [0, 1], split="test")
    assert summary["shortcuts"] == pytest.approx(shortcut_baselines(build_task("stack"), test), abs=1e-6)
    assert summary["best_shortcut"] == "last_pushed"
    assert summary["best_shortcut_accuracy"] == max(summary["shortcuts"].values())
    for length in ("48", "96"):
        record = summary["length_eval"][length]
        assert record["best_shortcut"] == "last_pushed" and 0.5 < record["best_shortcut_accuracy"] <= 1


def test_show_prints_the_shortcuts_on_request(capsys):
    from arena.tasks.__main__ import main

    assert main(["show", "task=flip_flop", "--n", "1", "--shortcuts"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("shortcut baselines (test split, 1000 sequences") and "copy_previous 0.6" in line
    assert main(["show", "task=flip_flop", "--n", "1"]) == 0
    assert "shortcut baselines" not in capsys.readouterr().out
