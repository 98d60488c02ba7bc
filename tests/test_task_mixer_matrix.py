"""Every probe trains with every mixer config for a couple of steps through the real trainer (its default
settings, tiny data), so `python -m arena.run task=<probe> mixer=<mixer>` works for the whole matrix."""

from __future__ import annotations

import functools

import pytest

from arena.config_schema import CONF, compose_options
from arena.tasks import list_tasks
from arena.train import Run, train

MIXERS = sorted(p.stem for p in (CONF / "mixer").glob("*.yaml"))


@functools.cache
def options(group: str) -> dict[str, dict]:
    """Every conf/<group> option on its schema, as a run has it (composed once for the whole matrix)."""
    return compose_options(group)


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("task", list_tasks())
def test_probe_trains_with_mixer(task, mixer, tmp_path):
    task_spec = {**options("task")[task], "num_train": 32, "num_test": 8}
    config = {
        "task": task_spec,
        "model": {"d_model": 32, "n_layers": 2, "mlp_ratio": 1.0},
        "train": {"steps": 2, "eval_every": 2, "batch_size": 8, "warmup_steps": 1, "device": "cpu"},
        "logger": {"kind": "none"},
        "eval": {"lengths": []},
    }
    spec = dict(options("mixer")[mixer])
    summary = train(Run(config, {mixer: spec}, mixer), tmp_path, f"{task}-{mixer}")
    assert summary["status"] == "completed" and summary["steps"] == 2
    if summary.get("primary_metric") == "neg_mse":  # a regression task: its accuracy slots hold -MSE
        assert summary["final_accuracy"] == -summary["final_mse"] <= 0.0
    else:
        assert 0.0 <= summary["final_accuracy"] <= 1.0
