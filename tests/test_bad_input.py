"""Bad numbers and bad eval.lengths fail when the config is built, and a length that fails after training never
costs the trained result (issue 12, items 1 and 2). In-process and fast; the command-line twins of these cases
(one-line error, exit 2, no run dir) are in tests/test_run.py's BAD table.

    python -m pytest -q tests/test_bad_input.py
"""

from __future__ import annotations

import json

import pytest

from arena.errors import ConfigError
from arena.evaluate import EvalConfig
from arena.train import Run, TrainConfig, train

BAD_TRAIN = {
    "steps": [0, -5, 1.5], "batch_size": [0, -1], "lr": [0.0, -1e-3, float("nan"), float("inf")],
    "weight_decay": [-0.1], "beta1": [1.0, -0.1], "beta2": [1.5], "warmup_steps": [-1],
    "min_lr_ratio": [-0.1, 1.5], "grad_clip": [-1.0], "eval_every": [0, -1], "eval_batch_size": [0],
    "target_accuracy": [0.0, -0.5], "seed": [-1], "cpu_threads": [-1], "data_workers": [-2, "two"],
}


@pytest.mark.parametrize("key,value", [(k, v) for k, values in BAD_TRAIN.items() for v in values],
                         ids=lambda x: str(x))
def test_train_numbers_out_of_range_are_one_line_config_errors(key, value):
    with pytest.raises(ConfigError, match=rf"^train\.{key}=\S+ must be ") as err:
        TrainConfig(**{key: value})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides", [
    {"lengths": ["abc"]}, {"lengths": [1]}, {"lengths": [64, 2.5]}, {"lengths": 64}, {"lengths": [True]},
    {"num_examples": 0}, {"chunk_len": 0}, {"tokens_per_batch": -1},
], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_eval_numbers_out_of_range_are_one_line_config_errors(overrides):
    (key,) = overrides
    with pytest.raises(ConfigError, match=rf"^eval\.{key}=.+ must be "):
        EvalConfig(**overrides)


def test_defaults_and_edges_are_accepted():
    TrainConfig()
    TrainConfig(steps=1, warmup_steps=0, min_lr_ratio=1.0, grad_clip=0.0, target_accuracy=2.0, data_workers=-1,
                cpu_threads=0, lr=1)
    EvalConfig(lengths=[2, 1 << 20])


def make_config(**eval_cfg) -> dict:
    return {
        "task": {"name": "stack", "seq_len": 24, "num_train": 40, "num_test": 20},
        "train": {"steps": 4, "eval_every": 2, "batch_size": 8, "warmup_steps": 1, "device": "cpu",
                  "target_accuracy": 2.0},
        "model": {"d_model": 16, "n_layers": 1},
        "eval": {"num_examples": 8, **eval_cfg},
        "logger": {"kind": "none"},
    }


def test_every_length_is_built_before_training():
    with pytest.raises(ConfigError, match=r"^eval\.lengths=\[48, 4\]: length 4 is not possible for task stack"):
        Run(make_config(lengths=[48, 4]), {"m": {"name": "gdn"}}, "m")


def test_a_length_failing_after_training_keeps_the_trained_result(tmp_path):
    run = Run(make_config(lengths=[48, 96]), {"m": {"name": "gdn"}}, "m")
    at_length = run.task.at_length

    def failing_at_96(length):  # as a length that runs out of memory would, after training
        if length == 96:
            raise RuntimeError("out of memory at length 96")
        return at_length(length)

    run.task.at_length = failing_at_96
    summary = train(run, tmp_path, "length-fails")
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary, default=str))
    assert on_disk["status"] == "completed" and on_disk["steps"] == 4
    assert on_disk["test_accuracy"] is not None and on_disk["best_accuracy"] is not None
    assert set(on_disk["length_eval"]) == {"48"}
    assert on_disk["length_eval_error"] == {"96": "RuntimeError: out of memory at length 96"}
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["length"] for r in records if r.get("eval") == "length"] == [48]
