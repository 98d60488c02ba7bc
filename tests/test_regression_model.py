"""Real-valued tasks through the model, the trainer and evaluation (Task.kind == "regression", icl_regression): linear
read-in / read-out, MSE loss and metric, the MSE curve and the closed-form baselines in summary.json; token models
untouched.

    python -m pytest -q tests/test_regression_model.py
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from arena.batches import StepBatch
from arena.config_schema import compose_option
from arena.errors import ConfigError
from arena.evaluate import evaluate
from arena.model import LanguageModel, ModelConfig
from arena.train import Run, Trainer, train

GDN = {"gdn": {"name": "gdn"}}


def config(steps: int = 4, **task) -> dict:
    return {
        "task": {"name": "icl_regression", "d_x": 3, "n_points": 6, "num_test": 32, **task},
        "model": {"d_model": 32, "n_layers": 2, "mlp_ratio": 1.0},
        "train": {"steps": steps, "eval_every": 2, "batch_size": 16, "warmup_steps": 1, "device": "cpu",
                  "lr": 3e-3, "eval_batch_size": 16},
        "logger": {"kind": "none"},
        "eval": {"lengths": []},
    }


def test_regression_model_reads_and_writes_vectors():
    model = LanguageModel(ModelConfig(d_model=16, n_layers=1, input_dim=5, output_dim=2), GDN)
    assert isinstance(model.embed, nn.Linear) and model.embed.in_features == 5 and model.lm_head.out_features == 2
    out, _ = model(torch.randn(3, 7, 5))
    assert out.shape == (3, 7, 2)
    with pytest.raises(ConfigError, match="model.input_dim=5 and model.output_dim=0 must both be > 0"):
        LanguageModel(ModelConfig(d_model=16, n_layers=1, input_dim=5), GDN)


def test_token_models_and_their_configs_are_unchanged():
    model = LanguageModel(ModelConfig(vocab_size=11, d_model=16, n_layers=1), GDN)
    assert isinstance(model.embed, nn.Embedding) and not model.regression
    assert model.lm_head.out_features == 11
    # the read-in / read-out widths are the task's, never in a composed config: token runs keep their config hashes
    assert not {"input_dim", "output_dim"} & set(compose_option("model", "tiny"))


def test_loss_decreases_in_a_few_cpu_steps():
    run = Run(config(steps=40), GDN, "gdn")  # the schedule's steps: 40, so the lr is still high at step 30
    trainer = Trainer(run)
    probe = StepBatch.from_batch(run.task.generate(64, [9, 9]))
    assert probe.scored_targets.shape == (64 * 6, 1) and probe.inputs.dtype == torch.float32

    def probe_loss() -> float:
        with torch.no_grad():
            hidden = run.model.hidden_states(probe.inputs)[0].flatten(0, 1)[probe.scored_index]
            return torch.nn.functional.mse_loss(run.model.lm_head(hidden), probe.scored_targets).item()

    before = probe_loss()
    for step in range(30):
        trainer.step(StepBatch.from_batch(run.task.generate(16, [0, 3, step])), step)
    loss, accuracy = trainer.read_window()
    assert probe_loss() < 0.9 * before, (before, probe_loss())
    assert accuracy == pytest.approx(-loss, rel=1e-5)  # the window's "accuracy" of a regression run is -MSE


def test_evaluation_curve_matches_a_direct_computation():
    run = Run(config(d_y=2), GDN, "gdn")  # d_y = 2: the MSE is per component (the mean over y's 2 numbers)
    data = run.task.generate(10, [1, 1], "test")
    result = evaluate(run.model, data, batch_size=4, amp=None)  # three batches, the last one short
    with torch.no_grad():
        pred = run.model(data.inputs)[0][:, 0::2]  # [N, n_points, 2] at the x-tokens
    per_k = ((pred - data.targets[:, 0::2]) ** 2).mean(dim=(0, 2))  # [n_points]
    assert result["mse_curve"] == pytest.approx(per_k.tolist(), rel=1e-5)
    assert result["mse"] == pytest.approx(per_k.mean().item(), rel=1e-5) == -result["accuracy"]


def test_summary_records_mse_curve_baselines_and_lower_is_better(tmp_path):
    summary = train(Run(config(steps=6), GDN, "gdn"), tmp_path, "tiny-gdn-icl_regression")
    assert summary["status"] == "completed" and summary["primary_metric"] == "neg_mse"
    assert len(summary["test_mse_curve"]) == 6 and summary["test_accuracy"] == -summary["test_mse"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [len(r["valid_mse_curve"]) for r in rows] == [6, 6, 6]
    # the best validation point is the LOWEST MSE (the accuracy slots hold -MSE)
    assert summary["valid_mse"] == min(r["valid_mse"] for r in rows) == -summary["valid_accuracy"]
    assert summary["best_step"] == min(rows, key=lambda r: r["valid_mse"])["step"]
    base = summary["baselines"]
    assert set(base["curves"]) == {"ridge", "least_squares", "one_step_gd", "zero"}
    assert all(len(c) == 6 for c in base["curves"].values()) and len(base["gd_step_sizes"]) == 6
    assert json.loads((tmp_path / "summary.json").read_text())["baselines"] == base


def test_eval_lengths_are_refused_for_regression_before_training():
    bad = config()
    bad["eval"] = {"lengths": [32]}
    with pytest.raises(ConfigError, match=r"eval.lengths=\[32\] is for token tasks; task icl_regression"):
        Run(bad, GDN, "gdn")
