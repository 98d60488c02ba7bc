"""Sweeps: Hydra multirun goes on past a failed point, and a rerun skips finished configs (resume).

    python -m pytest -q tests/test_sweeps.py

The sweeps run in-process (Hydra's basic launcher runs points one after another in this process), so a test can
make one grid point fail by patching the training loop.
"""

from __future__ import annotations

import json
import sys

import pytest

import arena.train
from arena import run as arena_run

FAST = ["task.num_train=64", "task.num_test=32", "train.steps=4", "train.batch_size=16", "train.eval_every=2",
        "train.warmup_steps=1"]


def sweep(monkeypatch, results_dir, *overrides: str) -> None:
    """Run `python -m arena.run -m <overrides>` in this process."""
    monkeypatch.setattr(sys, "argv", ["arena.run", "-m", f"results_dir={results_dir}",
                                      f"hydra.sweep.dir={results_dir}/sweep", *FAST, *overrides])
    arena_run.main()


def summaries(results_dir) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results_dir.rglob("summary.json"))]


def test_failed_point_is_recorded_and_sweep_goes_on(monkeypatch, tmp_path, capsys):
    real_loop = arena.train._loop

    def flaky_loop(run, *args, **kwargs):
        if run.train_cfg.lr == 0.5:
            raise RuntimeError("injected failure")
        return real_loop(run, *args, **kwargs)

    monkeypatch.setattr(arena.train, "_loop", flaky_loop)
    sweep(monkeypatch, tmp_path, "train.lr=0.5,0.001")
    by_lr = {s["config_hash"]: s for s in summaries(tmp_path)}
    assert sorted(s["status"] for s in by_lr.values()) == ["completed", "failed"]
    failed = next(s for s in by_lr.values() if s["status"] == "failed")
    assert "injected failure" in failed["message"]
    assert "sweep continues" in capsys.readouterr().err


def test_rerun_skips_finished_and_retries_failed(monkeypatch, tmp_path, capsys):
    real_loop = arena.train._loop
    calls = []

    def failing_once(run, *args, **kwargs):
        calls.append(run.train_cfg.lr)
        if run.train_cfg.lr == 0.002 and calls.count(0.002) == 1:
            raise KeyboardInterrupt  # the first attempt at this point is interrupted
        return real_loop(run, *args, **kwargs)

    monkeypatch.setattr(arena.train, "_loop", failing_once)
    with pytest.raises(SystemExit) as stop:  # an interrupt stops the sweep (exit 130), as Ctrl-C should
        sweep(monkeypatch, tmp_path, "train.lr=0.001,0.002,0.003")
    assert stop.value.code == 130
    assert [s["status"] for s in summaries(tmp_path)] and calls == [0.001, 0.002]
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    sweep(monkeypatch, tmp_path, "train.lr=0.001,0.002,0.003")
    assert calls == [0.001, 0.002, 0.002, 0.003]  # 0.001 skipped, the interrupted 0.002 rerun, 0.003 new
    assert "skipping" in capsys.readouterr().err
    statuses = sorted(s["status"] for s in summaries(tmp_path))
    assert statuses == ["completed", "completed", "completed", "interrupted"]  # the interrupted attempt stays


def test_config_hash_ignores_paths_and_logger_but_not_settings():
    base = {"mixer": {"name": "kda"}, "train": {"lr": 0.001}, "results_dir": "a", "logger": {"name": "none"}}
    moved = {**base, "results_dir": "b", "logger": {"name": "wandb"}, "resume": False}
    other = {**base, "train": {"lr": 0.002}}
    assert arena_run.config_hash(base) == arena_run.config_hash(moved)
    assert arena_run.config_hash(base) != arena_run.config_hash(other)


@pytest.mark.slow
def test_joblib_launcher_runs_points_in_parallel_processes(tmp_path):
    """`hydra/launcher=joblib` (hydra-joblib-launcher): two points in two worker processes, both recorded; each
    point generates its fresh samples in a background data worker, as GPU sweeps do (a worker process started from
    inside a joblib worker once failed every point)."""
    import os
    import subprocess

    cmd = [sys.executable, "-m", "arena.run", "-m", f"results_dir={tmp_path}", *FAST, "train.lr=0.001,0.002",
           "task.num_train=0", "train.data_workers=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    done = summaries(tmp_path)
    assert [s["status"] for s in done] == ["completed", "completed"]
    assert len({s["config_hash"] for s in done}) == 2
