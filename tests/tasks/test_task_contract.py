"""The task contract, checked for every registered probe (parametrized over the registry: no edits per probe).

Per-probe tests (an independent solver that agrees with every label) live in tests/tasks/test_<name>.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from arena.config_schema import compose_option
from arena.tasks import IGNORE, build_task, get_task, list_tasks

CONF = Path(__file__).resolve().parents[2] / "conf" / "task"


@pytest.mark.parametrize("name", list_tasks())
def test_same_seed_same_data_and_different_seeds_differ(name):
    task = build_task(name)
    for split in ("train", "test"):
        a, b = task.generate(32, [3, 0], split), task.generate(32, [3, 0], split)
        c = task.generate(32, [4, 0], split)
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
        assert not (torch.equal(a.inputs, c.inputs) and torch.equal(a.targets, c.targets))


@pytest.mark.parametrize("name", list_tasks())
def test_shapes_vocabulary_and_scored_positions(name):
    task = build_task(name)
    if task.kind == "regression":  # real vectors in and out (RegressionBatch); details: tests/tasks/test_<name>.py
        for split in ("train", "test"):
            batch = task.generate(64, [0, 1], split)
            assert batch.inputs.shape == (64, task.seq_len, task.input_dim)
            assert batch.targets.shape == (64, task.seq_len, task.output_dim)
            assert batch.inputs.dtype == batch.targets.dtype == torch.float32
            assert batch.scored.shape == (64, task.seq_len) and batch.scored.any(dim=1).all()
            assert torch.isfinite(batch.inputs).all() and torch.isfinite(batch.targets).all()
        return
    assert task.kind == "tokens", f"{name}: Task.kind={task.kind!r} is neither tokens nor regression"
    for split in ("train", "test"):
        batch = task.generate(64, [0, 1], split)
        assert batch.inputs.shape == batch.targets.shape == (64, task.seq_len)
        assert batch.inputs.dtype == batch.targets.dtype == torch.int64
        assert batch.inputs.min() >= 0 and batch.inputs.max() < task.vocab_size
        scored = batch.targets != IGNORE
        assert scored.any(dim=1).all(), "every sequence must score at least one position"
        assert batch.targets[scored].min() >= 0 and batch.targets[scored].max() < task.vocab_size


@pytest.mark.parametrize("name", list_tasks())
def test_every_task_has_its_yaml_and_a_docstring_example(name):
    path = CONF / f"{name}.yaml"
    assert path.exists(), f"conf/task/{name}.yaml is missing"
    spec = compose_option("task", name)  # the YAML on its schema (arena/config_schema.py), as a run has it
    assert spec.pop("name") == name
    build_task(name, **spec)
    doc = __import__(get_task(name).__module__, fromlist=["_"]).__doc__ or ""
    assert "inputs" in doc and "targets" in doc, "the module docstring must show a decoded example"


@pytest.mark.parametrize("name", list_tasks())
def test_at_length_changes_the_sequence_length(name):
    task = build_task(name)
    longer = task.at_length(2 * task.seq_len)
    assert longer.seq_len == 2 * task.seq_len
    assert longer.generate(4, [0, 1], "test").inputs.shape[:2] == (4, 2 * task.seq_len)  # regression: [N, T, I]
