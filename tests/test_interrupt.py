"""Ctrl-C during training (issue 12, item 3): one line, exit 130, summary.json `interrupted` with the steps done and
the validation accuracy so far, a sweep stops, and rerunning the command runs the point again.

    python -m pytest -q tests/test_interrupt.py

The command-line test sends SIGINT to a real `python -m arena.run` once its first evaluation is on disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arena.run import FINISHED, finished_twin
from arena.train import Run, train

REPO = Path(__file__).resolve().parents[1]


def test_interrupt_in_training_records_the_progress(tmp_path, ctrl_c_at_step):
    config = {
        "task": {"name": "mqar", "seq_len": 32, "num_train": 40, "num_test": 20},
        "train": {"steps": 50, "eval_every": 2, "batch_size": 8, "warmup_steps": 1, "device": "cpu",
                  "target_accuracy": 2.0},
        "model": {"d_model": 16, "n_layers": 1},
        "logger": {"kind": "none"},
    }
    ctrl_c_at_step(5)
    with pytest.raises(KeyboardInterrupt):
        train(Run(config, {"m": {"name": "gdn"}}, "m"), tmp_path, "ctrl-c", {"config_hash": "abc"})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == 5, summary
    assert summary["best_step"] in (2, 4) and summary["best_accuracy"] is not None
    assert summary["valid_accuracy"] == summary["best_accuracy"] and summary["train_accuracy"] is not None
    assert summary["test_accuracy"] is None, "an interrupted run never scores the test split"
    # resume skips only FINISHED twins: an interrupted run is run again
    assert "interrupted" not in FINISHED and finished_twin(tmp_path, "abc") is None


FAST = ("train.steps=100000", "train.eval_every=1", "train.target_accuracy=2", "task.num_train=200",
        "task.num_test=20", "model.d_model=32", "mixer.num_heads=2")


def start(results: Path, log: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    flags = [o for o in overrides if o.startswith("-")]  # Hydra wants -m before the overrides
    cmd = [sys.executable, "-m", "arena.run", *flags, f"results_dir={results}",
           *(o for o in overrides if not o.startswith("-"))]
    # a child of a shell's background job inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def interrupt_once_training(proc: subprocess.Popen, results: Path, seen: set, timeout: float = 120) -> Path:
    """Wait for a metrics.jsonl not in `seen` to get its first line, send SIGINT, wait for the exit; its run dir."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            fresh = [p for p in results.rglob("metrics.jsonl") if p not in seen and p.stat().st_size > 0]
            if fresh:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=60)
                return fresh[0].parent
            assert proc.poll() is None, f"exited with {proc.returncode} before training"
            time.sleep(0.1)
        pytest.fail("training did not start in time")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def arena_lines(log: Path) -> list[str]:
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    return [line for line in text.replace("\r", "\n").splitlines() if line.startswith("arena:")]


def test_ctrl_c_stops_the_sweep_and_a_rerun_runs_the_point_again(tmp_path):
    results, log = tmp_path / "results", tmp_path / "stderr.txt"
    proc = start(results, log, "-m", "train.seed=0,1", *FAST)
    first = interrupt_once_training(proc, results, set())
    assert proc.returncode == 130
    (line,) = arena_lines(log)
    summary = json.loads((first / "summary.json").read_text())
    steps = f"{summary['steps']} step{'' if summary['steps'] == 1 else 's'}"
    assert line.startswith(f"arena: interrupted after {steps}; rerun the same command"), line
    assert summary["status"] == "interrupted" and summary["steps"] >= 1
    assert summary["best_accuracy"] is not None and summary["valid_accuracy"] is not None
    assert [p.parent for p in results.rglob("summary.json")] == [first], "the sweep went on to its next point"
    assert not [p for p in results.rglob("1_*") if p.is_dir()], "the sweep started its next point"

    # the same point as a single run (same config hash): not skipped as finished, it trains again
    proc = start(results, log, "train.seed=0", *FAST)
    second = interrupt_once_training(proc, results, {first / "metrics.jsonl"})
    assert proc.returncode == 130 and second != first
    (line,) = arena_lines(log)
    assert line.startswith("arena: interrupted after "), line
    again = json.loads((second / "summary.json").read_text())
    assert again["status"] == "interrupted" and again["config_hash"] == summary["config_hash"]
