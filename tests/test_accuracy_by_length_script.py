"""scripts/accuracy_by_length.py scores each length where the task scores it: oracle "models" that compute the
answers from the inputs alone (prefix products, running parity) must get 1.0, and one that is right only up to a
known token must get 1.0 up to it and 0 after it. The run's task is rebuilt from its config.yaml.

    python -m pytest -q tests/test_accuracy_by_length_script.py      (a second or two on a CPU)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from arena.tasks import build_task
from arena.testing import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "accuracy_by_length.py"


def _script():
    return load_script("accuracy_by_length")


class WordOracle:
    """Prefix products of the input letters (group table of the task), right for the first `right_until` tokens
    and a wrong element after them."""

    def __init__(self, task, right_until: int = 10**9, rotate: bool = False):
        self.task, self.right_until, self.rotate = task, right_until, rotate  # rotate: times a 3-cycle (even)

    def __call__(self, inputs: torch.Tensor):
        mul = torch.as_tensor(self.task.mul)
        letters = (inputs - 1).clamp(min=0)  # [B, T] element numbers (PAD rows end up unscored anyway)
        prefix = letters.clone()
        for t in range(1, inputs.shape[1]):
            prefix[:, t] = mul[prefix[:, t - 1], letters[:, t]]
        if self.rotate:
            cycle = [tuple(p) for p in self.task.perms.tolist()].index((1, 2, 0))
            prefix = mul[prefix, cycle]  # the right sign, never the right element
        answer = prefix + 1
        order = mul.shape[0]
        answer[:, self.right_until:] = answer[:, self.right_until:] % order + 1  # another element: wrong
        return F.one_hot(answer, order + 1).float(), None


def parity_oracle(inputs: torch.Tensor):
    """Running parity of the bits (token 2 = bit 1): the answer at every position, so also at the scored one."""
    odd = (inputs == 2).long().cumsum(1) % 2
    return F.one_hot(odd + 1, 3).float(), None


def test_word_problem_columns_are_the_lth_token():
    script = _script()
    task = build_task("s3")
    assert script.accuracies(WordOracle(task), "s3", task, [1, 5, 64], 50, 0) == [1.0, 1.0, 1.0]
    # right up to token 10: L = 10 is the 10th token (index 9), L = 11 the first wrong one
    assert script.accuracies(WordOracle(task, 10), "s3", task, [1, 10, 11, 40], 50, 0) == [1.0, 1.0, 0.0, 0.0]


def test_sign_columns_score_the_even_odd_part_only():
    script = _script()
    task = build_task("s3")
    lengths = [1, 7, 64]
    rotated = WordOracle(task, rotate=True)
    assert script.accuracies(rotated, "s3", task, lengths, 50, 0) == [0.0, 0.0, 0.0]
    assert script.accuracies(rotated, "s3", task, lengths, 50, 0, sign=True) == [1.0, 1.0, 1.0]
    assert script.odd_tokens(task).tolist() == [False, False, True, True, False, False, True]  # PAD, 012, 021, ...


def test_one_answer_tasks_score_the_answer_at_each_length():
    script = _script()
    task = build_task("parity")
    assert script.accuracies(parity_oracle, "parity", task, [3, 17, 100], 200, 0) == [1.0, 1.0, 1.0]

    def always_even(inputs):
        return F.one_hot(torch.ones_like(inputs), 3).float(), None

    for acc in script.accuracies(always_even, "parity", task, [17, 100], 400, 0):
        assert acc == pytest.approx(0.5, abs=0.1)  # chance, not 0 or 1: the answer position is the one scored


def test_task_is_rebuilt_from_the_run_config(tmp_path):
    config = {"task": {"name": "modular_arithmetic_brackets", "seq_len": 40, "train_max_len": 40,
                       "test_min_len": 40, "test_max_len": 40}, "model": {"d_model": 32}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    name, task = _script().task_of(tmp_path)
    assert name == "modular_arithmetic_brackets"
    assert (task.cfg.seq_len, task.cfg.train_max_len, task.cfg.test_min_len) == (40, 40, 40)


def test_open_gate_head_sets():
    from arena.model import LanguageModel, ModelConfig

    specs = {"kda": {"name": "kda", "num_heads": 2}}
    model = LanguageModel(ModelConfig(vocab_size=5, d_model=8, n_layers=2), specs)
    head_sets = _script().head_sets
    assert head_sets("each", model) == [[(0, 0)], [(0, 1)], [(1, 0)], [(1, 1)]]  # each head alone
    assert head_sets("all", model) == [[(0, 0), (0, 1), (1, 0), (1, 1)]]
    assert head_sets("1:1", model) == [[(1, 1)]]


def test_gate_scale_outside_zero_one_is_refused_before_any_run_is_read(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "no_such_run"), "--open-gate", "all",
                           "--gate-scale", "1.5"], capture_output=True, text=True)
    assert done.returncode != 0 and "--gate-scale=1.5 must be in [0, 1]" in done.stderr
