"""`python -m arena.run` end to end, as a user runs it: the default job, a diverging job, and bad input.

The default-run test is the honest check of the README's claim: KDA on the default MQAR reaches >= 0.9
held-out accuracy (it runs the real default, ~1 minute on 2 CPU cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def arena_run(tmp_path: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, "-m", "arena.run", f"results_dir={tmp_path}", *overrides]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("config.yaml") if p.parent.name != ".hydra")


@pytest.mark.slow
def test_default_job_learns_mqar(tmp_path):
    proc = arena_run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = run_dirs(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["best_accuracy"] >= 0.9, summary
    assert summary["parameters"]["total"] > 0 and summary["state_size"] > 0 and summary["peak_memory_bytes"] > 0
    assert summary["cuda_graphs_used"] is False  # train.cuda_graphs=auto on the CPU: eager, and recorded as such
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = set(records[-1]) if records else set()
    assert {"step", "train_loss", "valid_loss", "accuracy", "tokens_per_s", "wall_time_s"} <= last
    assert [r["step"] for r in records] == sorted(r["step"] for r in records)
    env = json.loads((run / "env.json").read_text())
    assert {"git_sha", "git_dirty", "versions", "device_name"} <= set(env)
    assert "mixer:" in (run / "config.yaml").read_text()


@pytest.mark.parametrize("overrides", [
    ("mixer=mamba2",), ("mixer=mla_nope",), ("model=hybrid_3to1",), ("mixer=gdn", "mixer.impl=naive"),
    ("task=parity", "task.num_train=0"),  # fresh samples every step instead of a fixed training set
], ids=lambda o: "-".join(o))
def test_other_mixers_run_end_to_end(tmp_path, overrides):
    sizes = () if "task.num_train=0" in overrides else ("task.num_train=200",)
    proc = arena_run(tmp_path, *overrides, "train.steps=6", "train.eval_every=3", *sizes, "task.num_test=50")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = run_dirs(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 6
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_nan_loss_ends_as_diverged_without_traceback(tmp_path):
    proc = arena_run(tmp_path, "train.lr=1e30", "train.warmup_steps=1", "train.steps=50", "train.grad_clip=0",
                     "task.num_train=200", "task.num_test=50")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "diverged" in proc.stderr and "Traceback" not in proc.stderr
    (run,) = run_dirs(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged" and "train.lr" in summary["message"]


BAD = {
    "unknown-mixer": (("mixer=nope",), "mixer='nope'"),
    "unknown-task": (("task=nope",), "task='nope'"),
    "unknown-impl": (("mixer.impl=nope",), "impl='nope'"),
    "unknown-layout": (("model.layout=[kda,nope]",), "layout entry='nope'"),
    "heads-not-dividing": (("mixer.num_heads=3",), "d_model=64 is not divisible by num_heads=3"),
    "task-cannot-fit": (("task.seq_len=12",), "seq_len=12 cannot fit"),
    # keys and types: Hydra checks them against the schemas (arena/config_schema.py) while composing
    "unknown-train-key": (("train.lrr=1",), "train.lrr is not a key of TrainConfig (arena/train.py); valid keys: "),
    "added-train-key": (("+train.lrr=1",), "train.lrr is not a key of TrainConfig"),  # Hydra adds it; Run refuses
    "unknown-mixer-key": (("mixer=mla", "mixer.rop=false"), "mixer.rop is not a key of MLA.Config"),
    "unknown-eval-key": (("eval.length=[64]",), "eval.length is not a key of EvalConfig"),
    "mistyped-train-value": (("train.steps=abc",), "train.steps='abc' must be an integer"),
    "mistyped-mixer-value": (("mixer.num_heads=two",), "mixer.num_heads='two' must be an integer"),
    # numbers out of range, caught before the first step (issue 12, item 1; more cases in test_bad_input.py)
    "zero-steps": (("train.steps=0",), "train.steps=0 must be an integer >= 1"),
    "zero-lr": (("train.lr=0",), "train.lr=0.0 must be a finite number > 0"),
    "zero-eval-every": (("train.eval_every=0",), "train.eval_every=0 must be an integer >= 1"),
    # eval.lengths, checked before training (item 2)
    "length-not-a-number": (("eval.lengths=[abc]",), "eval.lengths[0]='abc' must be an integer"),
    "length-too-short": (("eval.lengths=[64,1]",), "eval.lengths=[64, 1] must be a list of integers >= 2"),
    "length-task-cannot-fit": (("task=stack", "eval.lengths=[64,4]"), "eval.lengths=[64, 4]: length 4 is not"),
    # the logger is checked with the rest of the config, before config.yaml is written
    "unknown-logger-kind": (("logger.kind=tensorboard",), "logger.kind='tensorboard'"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_one_line_nonzero_and_leaves_no_results(tmp_path, case):
    overrides, expected = BAD[case]
    proc = arena_run(tmp_path, *overrides)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("arena: error:"), proc.stderr
    assert expected in lines[0]
    assert not list(tmp_path.rglob("summary.json")) and not list(tmp_path.rglob("metrics.jsonl"))
    assert not list(tmp_path.iterdir()), f"left behind: {sorted(tmp_path.rglob('*'))}"


def test_bad_sweep_value_is_one_line_and_leaves_no_sweep_folder(tmp_path):
    """In a sweep Hydra makes the sweep folder before composing the grid's points; a bad one is still one line,
    exit 2, and the folder goes again (arena.config_utils.SweepDirNote)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, "-m", "arena.run", "-m", f"results_dir={tmp_path}", "mixer=kda,foo"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["arena: error: mixer='foo' is not valid; choose one of: gdn, kda, mamba2, mla, mla_conv, mla_nope"]
    assert not list(tmp_path.iterdir()), f"left behind: {sorted(tmp_path.rglob('*'))}"


def test_length_extrapolation_is_recorded(tmp_path):
    proc = arena_run(tmp_path, "mixer=gdn", "train.steps=4", "train.eval_every=2", "task.num_train=200",
                     "task.num_test=50", "eval.lengths=[64,200]", "eval.num_examples=20", "eval.chunk_len=50")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = run_dirs(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["length_eval"]) == {"64", "200"}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["length"] for r in records if r.get("eval") == "length"] == [64, 200]
