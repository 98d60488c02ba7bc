"""Checkpoints and resume (arena/checkpoint.py): a run stopped after a checkpoint and resumed ends bitwise equal to
one never stopped (CPU), checkpoints are atomic, arena.model.load rebuilds the trained model, bad input is one line.

    python -m pytest -q tests/test_checkpoint.py

In-process runs stop with a KeyboardInterrupt from inside the step; the command-line tests SIGKILL and SIGTERM a
real `python -m arena.run` once its first checkpoint is on disk and rerun the same command.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import arena.checkpoint
from arena import checkpoint
from arena import run as arena_run
from arena.errors import ConfigError
from arena.model import load
from arena.train import Run, train

REPO = Path(__file__).resolve().parents[1]
TIMING = {"tokens_per_s", "tokens_per_s_kind", "wall_time_s"}  # differ between any two runs
RESULT = ("status", "steps", "valid_accuracy", "best_accuracy", "best_step", "test_accuracy",
          "test_sequence_accuracy", "test_scaled_accuracy", "train_accuracy", "final_accuracy",
          "final_sequence_accuracy", "stopped_early", "test_model", "tested_step")
TASKS = {
    "fixed-set": {"name": "mqar", "seq_len": 32, "num_train": 40, "num_test": 20},  # 5 batches an epoch
    "fresh": {"name": "stack", "seq_len": 24, "num_train": 0, "num_test": 20},
}


def make_run(task: dict, **train_cfg) -> Run:
    config = {
        "task": dict(task),
        "train": {"steps": 14, "eval_every": 3, "batch_size": 8, "warmup_steps": 2, "device": "cpu",
                  "target_accuracy": 2.0, "checkpoint_every": 4, **train_cfg},
        "model": {"d_model": 16, "n_layers": 1, "mlp_ratio": 2.0},
        "logger": {"kind": "none"},
    }
    return Run(config, {"m": {"name": "gdn"}}, "m")


def rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def result(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {k: summary.get(k) for k in RESULT}


@pytest.mark.parametrize("task", list(TASKS))
def test_resumed_run_equals_an_uninterrupted_one(task, tmp_path, ctrl_c_at_step):
    """Stopped at step 10 (checkpoints at 4 and 8, an evaluation at 9 written after the last one, an open metrics
    window), resumed: the metrics rows and the summary equal the uninterrupted run's, bitwise."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    whole.mkdir(), stopped.mkdir()
    train(make_run(TASKS[task]), whole, "whole", {"config_hash": "h"})

    ctrl_c_at_step(10)
    with pytest.raises(KeyboardInterrupt):
        train(make_run(TASKS[task]), stopped, "stopped", {"config_hash": "h"})
    ctrl_c_at_step(None)
    assert checkpoint.read_meta(stopped)["step"] == 8
    assert [r["step"] for r in rows(stopped)] == [3, 6, 9]
    assert checkpoint.resumable_run(tmp_path, "h") == stopped  # interrupted, with a checkpoint; `whole` is final

    summary = train(make_run(TASKS[task]), stopped, "stopped", {"config_hash": "h"}, resume=True)
    assert summary["resumed_from_step"] == 8
    assert rows(stopped) == rows(whole)  # the row of step 9 written once, every loss and accuracy equal
    assert result(stopped) == result(whole) and result(whole)["status"] == "completed"
    assert checkpoint.read_meta(stopped)["final"] and checkpoint.resumable_run(tmp_path, "h") is None


def test_rng_states_are_restored(tmp_path):
    """torch, python and numpy global streams continue after a resume as they would have."""
    run = make_run(TASKS["fresh"])
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    checkpoint.save(tmp_path, run, {"step": 1}, {"step": 1, "config_hash": "h"})
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(9), random.seed(9), np.random.seed(9)
    checkpoint.load_into(tmp_path, make_run(TASKS["fresh"]))
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


def test_load_rebuilds_the_trained_model(tmp_path):
    run = make_run(TASKS["fixed-set"], steps=3, checkpoint_every=0)
    train(run, tmp_path, "load", {"config_hash": "h"})
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [
        "best.safetensors", "meta.json", "model.safetensors", "trainer.pt"]  # best: train.test_on=best
    model = load(tmp_path)  # the tested weights, which the run's model holds after train()
    tokens = torch.randint(0, run.task.vocab_size, (2, 32))
    assert not model.training
    with torch.no_grad():
        assert torch.equal(model(tokens)[0], run.model.eval()(tokens)[0])
    assert not torch.equal(model.lm_head.weight, make_run(TASKS["fixed-set"]).model.lm_head.weight)  # trained


def test_a_half_written_checkpoint_is_never_trusted(tmp_path, monkeypatch):
    """A kill while writing leaves the previous checkpoint whole; a leftover temporary folder is ignored by
    resume and load, and removed by the next write."""
    run = make_run(TASKS["fresh"])
    checkpoint.save(tmp_path, run, {"step": 4}, {"step": 4, "config_hash": "h"})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(arena.checkpoint.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, run, {"step": 8}, {"step": 8, "config_hash": "h"})
    monkeypatch.undo()
    assert checkpoint.read_meta(tmp_path)["step"] == 4 and checkpoint.load_into(tmp_path, run)["step"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]

    other = tmp_path / "killed"  # a run whose only checkpoint write was cut: just the temporary folder
    (other / ".checkpoint.tmp-x").mkdir(parents=True)
    (other / ".checkpoint.tmp-x" / "meta.json").write_text(json.dumps({"step": 9, "config_hash": "h"}))
    assert checkpoint.resumable_run(tmp_path, "h") == tmp_path  # the whole one, never the temporary folder
    with pytest.raises(ConfigError, match="has no checkpoint"):
        load(other)
    checkpoint.save(other, run, {"step": 2}, {"step": 2, "config_hash": "h"})
    assert [p.name for p in other.iterdir()] == ["checkpoint"]


def test_bad_input_is_one_line(tmp_path):
    for bad, match in ((tmp_path / "nowhere", "does not exist"), (tmp_path, "has no checkpoint")):
        with pytest.raises(ConfigError, match=match) as err:
            load(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"train.checkpoint_every=-1 must be an integer >= 0"):
        make_run(TASKS["fresh"], checkpoint_every=-1)


# command line: the same command killed after its first checkpoint, then rerun
CLI = ("train.steps=60", "train.eval_every=1", "train.checkpoint_every=5", "train.target_accuracy=2",
       "train.batch_size=8", "train.warmup_steps=2", "task.num_test=20", "model.d_model=16", "model.n_layers=1",
       "mixer=gdn", "mixer.num_heads=2")
CLI_TASKS = {"fixed-set": ("task=mqar", "task.seq_len=32", "task.num_train=40"),
             "fresh": ("task=stack", "task.seq_len=24")}


def cli(monkeypatch, results: Path, *overrides: str) -> None:
    monkeypatch.setattr(sys, "argv", ["arena.run", f"results_dir={results}", *overrides])
    arena_run.main()


def kill_after_first_checkpoint(results: Path, sig: int, overrides, log: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "arena.run", f"results_dir={results}", *overrides], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        deadline = time.monotonic() + 120
        while not list(results.rglob("checkpoint/meta.json")):
            assert proc.poll() is None, f"exited with {proc.returncode} before a checkpoint: {log.read_text()}"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.02)
        proc.send_signal(sig)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("name,task", [("SIGKILL", "fixed-set"), ("SIGTERM", "fresh")])
def test_killed_command_resumes_to_the_uninterrupted_result(name, task, tmp_path, monkeypatch, capsys):
    sig = getattr(signal, name)
    overrides = (*CLI, *CLI_TASKS[task])
    cli(monkeypatch, tmp_path / "whole", *overrides)
    (whole,) = [p.parent for p in (tmp_path / "whole").rglob("summary.json")]

    results, log = tmp_path / "results", tmp_path / "stderr.txt"
    code = kill_after_first_checkpoint(results, sig, overrides, log)
    (stopped,) = [p.parent.parent for p in results.rglob("checkpoint/meta.json")]
    step = checkpoint.read_meta(stopped)["step"]
    assert 5 <= step < 60 and not checkpoint.read_meta(stopped)["final"]
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL and not (stopped / "summary.json").exists()
    else:  # SIGTERM: like Ctrl-C, with a checkpoint at the step it stopped at
        summary = json.loads((stopped / "summary.json").read_text())
        assert code == 130 and summary["status"] == "interrupted" and "(SIGTERM)" in summary["message"], summary
        assert summary["steps"] == step, "SIGTERM checkpoints the step it stops at"
        assert "Traceback" not in log.read_text()

    capsys.readouterr()
    cli(monkeypatch, results, *overrides)  # the same command again
    assert "arena: resuming " in capsys.readouterr().err
    assert [p.parent for p in results.rglob("summary.json")] == [stopped], "resumed in its own run dir"
    assert rows(stopped) == rows(whole)
    assert result(stopped) == result(whole) and result(whole)["status"] == "completed"


def test_resume_false_starts_from_scratch(tmp_path, monkeypatch, capsys, ctrl_c_at_step):
    """An interrupted run with a checkpoint is left alone by `resume=false`: a new run dir trains from step 0."""
    overrides = (*CLI, *CLI_TASKS["fresh"], "train.steps=12")
    ctrl_c_at_step(7)
    with pytest.raises(SystemExit) as stop:
        cli(monkeypatch, tmp_path, *overrides)
    assert stop.value.code == 130 and "resume it from step 5" in capsys.readouterr().err
    (first,) = [p.parent.parent for p in tmp_path.rglob("checkpoint/meta.json")]
    ctrl_c_at_step(None)
    cli(monkeypatch, tmp_path, *overrides, "resume=false", "hydra.run.dir=" + str(tmp_path / "again"))
    assert "arena: resuming" not in capsys.readouterr().err
    assert result(tmp_path / "again")["status"] == "completed" and result(first)["status"] == "interrupted"
    assert "resumed_from_step" not in json.loads((tmp_path / "again" / "summary.json").read_text())
