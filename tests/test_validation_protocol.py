"""The validation and test protocol (issue 14, item 0): validation is held-out data of the TRAINING distribution,
the test distribution is scored only on the test split, and the test scores the weights of the best validation
evaluation (train.test_on=best, the default; final on request), also after a resume; the report says which.

    python -m pytest -q tests/test_validation_protocol.py

The trainer tests script the validation accuracy (arena.train.evaluate wrapped: the real evaluation, then an
accuracy chosen by step) so that the best evaluation is at step 6 of 14, before the checkpoint at step 8, and the
final weights are not the best; the test score must then be the best weights' score, computed here independently
from the checkpoint's best.safetensors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import arena.train
import arena.trainer
from arena import checkpoint
from arena.errors import ConfigError
from arena.evaluate import EvalConfig, evaluate, evaluate_length
from arena.model import load
from arena.protocol import SELECTIONS, selection_score
from arena.report import protocol  # (its tested_model_line, imported bare, would be collected as a test)
from arena.report.load import load_runs
from arena.report.render import build_blocks, build_tables
from arena.tasks import IGNORE, PAD, Task, build_task, list_tasks
from arena.tasks.base import split_seed
from arena.train import Run, train, validation_set

# ----------------------------------------------------------------------------------------------- the valid split
# tasks whose defaults are too large to draw quickly, made small (every other task runs at its defaults)
SMALL = {"memorization": {"vocab_size": 64}, "mqar_kimi": {"vocab_size": 256}}
LENGTH_PROBES = ("parity", "modular_arithmetic", "modular_arithmetic_brackets", "s3", "s5", "a5")


def small(name: str, **overrides):
    return build_task(name, **{**SMALL.get(name, {}), **overrides})


@pytest.mark.parametrize("name", [n for n in list_tasks() if n != "text"])
def test_valid_draws_the_training_distribution(name):
    """For one seed, the valid split's inputs ARE the train split's (the same draws from the training
    distribution; the trainer gives each split its own seed stream), and valid scores only positions that training
    scores, with the same targets (a MAD probe trains on every token but is validated on its recall answers)."""
    task = small(name)
    train_batch, valid = task.generate(24, [7, 3], "train"), task.generate(24, [7, 3], "valid")
    assert torch.equal(valid.inputs, train_batch.inputs), f"task {name}: valid inputs are not training-distribution"
    if valid.targets.dtype.is_floating_point:  # a regression task: targets are values, not token ids
        assert torch.equal(valid.targets, train_batch.targets), name
        return
    scored = valid.targets != IGNORE
    assert scored.any(), f"task {name}: the valid split scores nothing"
    assert torch.equal(valid.targets[scored], train_batch.targets[scored]), name


def content_length(batch) -> np.ndarray:
    """[N] index of the last non-PAD input + 1: how long each sequence's content is (PAD pads on the right)."""
    nonpad = (batch.inputs != PAD).numpy()
    return nonpad.shape[1] - np.argmax(nonpad[:, ::-1], axis=1)


@pytest.mark.parametrize("name", LENGTH_PROBES)
def test_valid_keeps_training_lengths_and_test_the_long_ones(name):
    """A length-extrapolation probe validates on its training lengths; only the test split is long."""
    task = small(name)  # defaults: train lengths 3-16 (s3/s5/a5: their own), test up to 64
    c = task.cfg
    valid, test = task.generate(300, [0, 2], "valid"), task.generate(300, [0, 1], "test")
    assert content_length(valid).max() <= c.train_max_len, name
    assert content_length(test).max() > c.train_max_len, name  # the test distribution is longer


def test_flip_flop_validates_on_the_training_density():
    task = small("flip_flop", seq_len=256, p_ignore=0.1, test_p_ignore=0.98)
    skips = {split: (task.generate(200, [0, 5], split).inputs[:, 2:-2:2] == 3).float().mean().item()
             for split in ("valid", "test")}
    assert abs(skips["valid"] - 0.1) < 0.03 and skips["test"] > 0.9, skips


@pytest.mark.parametrize("name", ["in_context_recall", "noisy_recall"])
def test_recall_probes_validate_as_they_test(name):
    """Train and test share one data distribution; valid is scored as the test is (recall answers only)."""
    task = small(name)
    valid, test = task.generate(50, [1, 2], "valid"), task.generate(50, [1, 2], "test")
    assert torch.equal(valid.inputs, test.inputs) and torch.equal(valid.targets, test.targets)


def test_fuzzy_recall_validation_scores_only_determined_answers():
    """Validation keeps training's mixed key sizes; the first value token after a key shorter than k_motif_size
    (the model cannot know that key has ended) is unscored, every other answered value token is scored."""
    task = small("fuzzy_recall")
    km, nk = task.cfg.k_motif_size, (task.cfg.vocab_size - 1) // 2
    valid = task.generate(200, [3, 2], "valid")
    inputs, targets = valid.inputs.numpy(), valid.targets.numpy()
    is_key = inputs < nk
    run = np.zeros_like(inputs)  # length of the run of key tokens ending at each position
    for t in range(inputs.shape[1]):
        run[:, t] = np.where(is_key[:, t], (run[:, t - 1] if t else 0) + 1, 0)
    first_value = is_key & (targets != IGNORE)  # scored at a key token: the first value token of its value
    assert (run[first_value] == km).all(), "a first value token after a short key is scored"
    assert ((run > 0) & (run < km) & np.roll(~is_key, -1, axis=1)).any()  # short keys do occur in validation
    assert (targets != IGNORE).sum() > (first_value.sum() + 200)  # later value tokens are scored too


def test_the_trainer_validates_on_the_valid_split(tmp_path, monkeypatch):
    """arena.train draws validation with split="valid" from its own seed stream, test with split="test"."""
    calls = []
    real = Task.generate

    def spy(self, n, seed, split="train"):
        calls.append((split, list(np.atleast_1d(seed))))
        return real(self, n, seed, split)

    monkeypatch.setattr(Task, "generate", spy)
    train(make_run(steps=2, task="parity"), tmp_path, "split")
    assert ("valid", split_seed(0, "valid")) in calls and ("test", split_seed(0, "test")) in calls
    assert {split for split, seed in calls if seed == split_seed(0, "valid")} == {"valid"}


def test_validation_holds_no_training_sequence():
    """A small parity space (train lengths 3-8, as state_tracking_mini): much of a first draw is in the 512-example
    training set; the trainer's validation set holds none of those, and still num_test training-length sequences.
    With nothing to replace (mqar), it is the first draw as it is."""
    task = build_task("parity", seq_len=16, train_min_len=3, train_max_len=8, test_min_len=8, test_max_len=16,
                      num_train=512, num_test=100)
    seen = {row.tobytes() for row in task.generate(512, split_seed(0, "train")).inputs.numpy()}
    first = task.generate(100, split_seed(0, "valid"), "valid")
    assert sum(row.tobytes() in seen for row in first.inputs.numpy()) > 30  # the case is real
    valid = validation_set(task, 0)
    assert len(valid) == 100 and not any(row.tobytes() in seen for row in valid.inputs.numpy())
    assert content_length(valid).max() <= 8 and (valid.targets != IGNORE).sum() == 100
    mqar = build_task("mqar", seq_len=32, num_train=40, num_test=20)
    kept, drawn = validation_set(mqar, 0), mqar.generate(20, split_seed(0, "valid"), "valid")
    assert torch.equal(kept.inputs, drawn.inputs) and torch.equal(kept.targets, drawn.targets)


def test_a_training_set_that_holds_every_sequence_is_one_line():
    task = build_task("parity", seq_len=8, train_min_len=3, train_max_len=4, test_min_len=4, test_max_len=8,
                      num_train=200, num_test=10)  # 6 possible sequences, all in the training set
    with pytest.raises(ConfigError, match=r"task parity: the training set \(num_train=200\) holds nearly every"):
        validation_set(task, 0)


# ----------------------------------------------------------------------------------------------- tested model
TASK = {"name": "mqar", "seq_len": 32, "num_train": 40, "num_test": 20}
SCRIPT = {3: 0.2, 6: 0.9, 9: 0.3, 12: 0.4, 14: 0.5}  # validation accuracy by step: the best at 6, the last 14


def make_run(steps: int = 14, task: str | dict = TASK, **train_cfg) -> Run:
    config = {
        "task": dict(task) if isinstance(task, dict) else {"name": task, "num_test": 20, "num_train": 40},
        "train": {"steps": steps, "eval_every": 3, "batch_size": 8, "warmup_steps": 2, "device": "cpu",
                  "lr": 1e-2, "target_accuracy": 2.0, **train_cfg},
        "model": {"d_model": 16, "n_layers": 1, "mlp_ratio": 2.0},
        "eval": {"lengths": [32]},
        "logger": {"kind": "none"},
    }
    return Run(config, {"m": {"name": "gdn"}}, "m")


@pytest.fixture
def scripted_validation(monkeypatch):
    """Validation accuracy follows SCRIPT by step; the test and length evaluations stay real."""
    clock = {"step": 0}
    real_lr_at, real_evaluate = arena.trainer.lr_at, arena.train.evaluate

    def lr_at(step, cfg):  # Trainer.step asks it first thing every step: the step clock
        clock["step"] = step
        return real_lr_at(step, cfg)

    valid = make_run().task.generate(TASK["num_test"], split_seed(0, "valid"), split="valid")

    def scripted(model, data, *args, **kwargs):
        result = real_evaluate(model, data, *args, **kwargs)
        if torch.equal(data.inputs.cpu(), valid.inputs):
            result = {**result, "accuracy": SCRIPT[clock["step"] + 1]}
        return result

    monkeypatch.setattr(arena.trainer, "lr_at", lr_at)  # the clock Trainer.step reads
    monkeypatch.setattr(arena.train, "evaluate", scripted)


def scores_of(run_dir: Path, kinds=("best", "last")) -> tuple[dict, dict]:
    """(summary.json, the test split's scores of the checkpoint's best and last weights, computed here)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    task = make_run().task
    test = task.generate(TASK["num_test"], split_seed(0, "test"), split="test")
    scores = {}
    for weights in kinds:
        model = load(run_dir, weights=weights)
        scores[weights] = {"accuracy": evaluate(model, test, 500, None)["accuracy"],
                           "length_loss": evaluate_length(model, task, 32, EvalConfig(lengths=[32]), 0,
                                                          None)["test_loss"]}
    return summary, scores



def test_the_best_validation_weights_are_tested(tmp_path, scripted_validation):
    summary = train(make_run(), tmp_path, "best", {"config_hash": "h"})
    assert (summary["best_step"], summary["steps"], summary["final_accuracy"]) == (6, 14, 0.5)
    assert summary["test_model"] == "best" and summary["tested_step"] == 6
    on_disk, scores = scores_of(tmp_path)
    assert on_disk["test_model"] == "best" and on_disk["tested_step"] == 6
    assert scores["best"]["length_loss"] != scores["last"]["length_loss"]  # final != best: the case is not trivial
    assert on_disk["test_accuracy"] == scores["best"]["accuracy"]
    assert on_disk["length_eval"]["32"]["test_loss"] == scores["best"]["length_loss"]  # eval.lengths: same model
    assert checkpoint.read_meta(tmp_path)["test_model"] == "best"
    tested = load(tmp_path)  # the default: the tested weights
    assert torch.equal(tested.lm_head.weight, load(tmp_path, weights="best").lm_head.weight)


def test_test_on_final_tests_the_last_weights(tmp_path, scripted_validation):
    summary = train(make_run(test_on="final"), tmp_path, "final", {"config_hash": "h"})
    assert summary["test_model"] == "final" and summary["tested_step"] == 14 and summary["best_step"] == 6
    on_disk, scores = scores_of(tmp_path, ["last"])
    assert on_disk["test_accuracy"] == scores["last"]["accuracy"]
    assert on_disk["length_eval"]["32"]["test_loss"] == scores["last"]["length_loss"]
    assert not (tmp_path / "checkpoint" / "best.safetensors").exists()
    with pytest.raises(ConfigError, match="no best weights"):
        load(tmp_path, weights="best")


def test_a_resumed_run_tests_the_same_best_weights(tmp_path, scripted_validation, ctrl_c_at_step):
    """Best at step 6, checkpoint at 8, stopped at 10, resumed: the best weights come back from the checkpoint
    and the result equals the uninterrupted run's, bitwise."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    whole.mkdir(), stopped.mkdir()
    expected = train(make_run(checkpoint_every=4), whole, "whole", {"config_hash": "h"})
    ctrl_c_at_step(10)
    with pytest.raises(KeyboardInterrupt):
        train(make_run(checkpoint_every=4), stopped, "stopped", {"config_hash": "h"})
    ctrl_c_at_step(None)
    assert (stopped / "checkpoint" / "best.safetensors").is_file()
    got = train(make_run(checkpoint_every=4), stopped, "stopped", {"config_hash": "h"}, resume=True)
    keys = ("test_model", "tested_step", "best_step", "test_accuracy", "test_sequence_accuracy", "length_eval",
            "valid_accuracy", "final_accuracy")
    assert {k: got[k] for k in keys} == {k: expected[k] for k in keys}
    assert got["test_model"] == "best" and got["tested_step"] == 6


def test_bad_test_on_is_one_line():
    with pytest.raises(ConfigError, match=r"train.test_on='last' is not valid; choose one of: best, final"):
        make_run(test_on="last")


# ----------------------------------------------------------------------------------------------- selection
# validation (accuracy, loss) by step where the two disagree: the highest accuracy is at step 12, the lowest loss
# at step 9 (as in the text_lm study, where the best-accuracy step was not the lowest-loss one)
DISAGREE = {3: (0.2, 1.4), 6: (0.9, 1.5), 9: (0.3, 1.0), 12: (0.95, 1.1), 14: (0.5, 1.3)}
TEXT = {"name": "text", "seq_len": 16, "num_test": 8}


def test_selection_is_the_tasks_own():
    """A fake sequence of validation results: the text task keeps the lowest-loss one, a probe the most accurate."""
    results = {step: {"accuracy": acc, "test_loss": loss} for step, (acc, loss) in DISAGREE.items()}
    for name, want in (("text", 9), ("mqar", 12), ("parity", 12)):
        task = build_task(name)
        assert task.selection == ("loss" if name == "text" else "accuracy")
        assert max(results, key=lambda step: selection_score(task, results[step])) == want, name
    assert {task.selection for task in map(small, list_tasks())} <= set(SELECTIONS)


@pytest.fixture
def disagreeing_validation(monkeypatch):
    """Validation accuracy and loss follow DISAGREE by step (the validation loss and its perplexity and bits per
    byte, where reported, alike); the test and length evaluations stay real (arena.protocol's own evaluate)."""
    clock = {"step": 0}
    real_lr_at, real_evaluate = arena.trainer.lr_at, arena.train.evaluate

    def lr_at(step, cfg):
        clock["step"] = step
        return real_lr_at(step, cfg)

    def scripted(model, data, *args, **kwargs):
        accuracy, loss = DISAGREE[clock["step"] + 1]
        result = {**real_evaluate(model, data, *args, **kwargs), "accuracy": accuracy, "test_loss": loss}
        if "bits_per_byte" in result:
            result.update(perplexity=math.exp(loss), bits_per_byte=loss / math.log(2))  # plain floats: checkpointed
        return result

    monkeypatch.setattr(arena.trainer, "lr_at", lr_at)  # the clock Trainer.step reads
    monkeypatch.setattr(arena.train, "evaluate", scripted)


def test_text_keeps_the_lowest_validation_loss_and_a_probe_the_best_accuracy(tmp_path, disagreeing_validation):
    (tmp_path / "text").mkdir(), (tmp_path / "probe").mkdir()
    text = train(make_run(task=TEXT), tmp_path / "text", "text", {"config_hash": "t"})
    # the lowest loss (step 9) is the best evaluation, not the most accurate (step 12); the weights tested are its
    assert (text["best_step"], text["tested_step"], text["test_model"]) == (9, 9, "best")
    assert (text["selected_by"], text["selection_score"]) == ("loss", -1.0)
    assert text["valid_accuracy"] == text["best_accuracy"] == 0.3  # the accuracy at the selected evaluation
    assert text["valid_loss"] == 1.0 and text["valid_bits_per_byte"] == pytest.approx(1.0 / math.log(2))
    assert text["final_accuracy"] == 0.5
    # train.target_accuracy 2.0 (conf/experiment/text_lm.yaml) never stops a text run early
    assert text["steps"] == 14 and not text["stopped_early"]
    probe = train(make_run(), tmp_path / "probe", "probe", {"config_hash": "p"})
    assert (probe["best_step"], probe["tested_step"], probe["valid_accuracy"]) == (12, 12, 0.95)
    assert (probe["selected_by"], probe["selection_score"]) == ("accuracy", 0.95)


def test_a_resumed_text_run_keeps_selecting_by_loss(tmp_path, disagreeing_validation, ctrl_c_at_step):
    """Checkpoint at 8 (best so far: step 3, loss 1.4, accuracy 0.2), stopped at 10, resumed: the checkpoint's best
    is a loss, so the lower loss at step 9 replaces it (compared with the accuracy 0.2 it would not), the more
    accurate step 12 does not, and the result equals the uninterrupted run's."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    whole.mkdir(), stopped.mkdir()
    expected = train(make_run(task=TEXT, checkpoint_every=4), whole, "whole", {"config_hash": "h"})
    ctrl_c_at_step(10)
    with pytest.raises(KeyboardInterrupt):
        train(make_run(task=TEXT, checkpoint_every=4), stopped, "stopped", {"config_hash": "h"})
    ctrl_c_at_step(None)
    got = train(make_run(task=TEXT, checkpoint_every=4), stopped, "stopped", {"config_hash": "h"}, resume=True)
    keys = ("best_step", "tested_step", "selected_by", "selection_score", "valid_accuracy", "valid_loss",
            "test_accuracy", "test_loss")
    assert {k: got[k] for k in keys} == {k: expected[k] for k in keys}
    assert got["best_step"] == 9 and got["resumed_from_step"] == 8


# ----------------------------------------------------------------------------------------------- the report
def write_run(root: Path, name: str, summary: dict) -> None:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {"task": {"name": "mqar", "seq_len": 64}, "mixer": {"name": "gdn"}, "model": {"d_model": 16},
              "train": {"lr": 1e-3, "seed": len(list(root.iterdir()))}, "experiment": "x"}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "summary.json").write_text(json.dumps({
        "name": "tiny-gdn-mqar", "status": "completed", "steps": 10, "valid_accuracy": 0.9, "test_accuracy": 0.8,
        "config_hash": name, **summary}))


def test_the_report_names_the_tested_model(tmp_path):
    write_run(tmp_path, "a", {"test_model": "best", "tested_step": 6})
    write_run(tmp_path, "b", {"test_model": "best", "tested_step": 8})
    write_run(tmp_path, "c", {"test_model": "final", "tested_step": 10})
    write_run(tmp_path, "d", {})  # from before train.test_on
    runs = load_runs(tmp_path)
    assert sorted(runs["test_model"]) == ["best", "best", "final", "legacy"]
    line = protocol.tested_model_line(runs)
    assert "best validation evaluation (train.test_on=best) in 2 runs" in line
    assert "final weights (train.test_on=final) in 1 run;" in line and "rerun them" in line
    blocks = build_blocks(tmp_path, build_tables(tmp_path), {})
    assert any(block.text == line for block in blocks if block.kind == "p")
