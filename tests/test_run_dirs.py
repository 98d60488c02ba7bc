"""Run and sweep directories as colleagues read them: file modes, the skip line, sweep folders that account for
every point of their grid, names by split, and nothing created for nothing.

    python -m pytest -q tests/test_run_dirs.py

The runs go through `python -m arena.run`'s entry point in this process (Hydra's basic launcher runs sweep points
one after another here), with a model and data small enough for a second per run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import arena.train
from arena import run as arena_run
from arena.provenance import write_atomic, write_json_atomic
from arena.report.load import ReportWarning, load_curves, load_runs

FAST = ["task.num_train=64", "task.num_test=32", "train.steps=4", "train.batch_size=16", "train.eval_every=2",
        "train.warmup_steps=1", "model.d_model=32"]


def cli(monkeypatch, results_dir: Path, *overrides: str, multirun: bool = False) -> None:
    """`python -m arena.run [-m] [overrides]` in this process."""
    flag = ["-m"] if multirun else []
    monkeypatch.setattr(sys, "argv", ["arena.run", *flag, f"results_dir={results_dir}", *FAST, *overrides])
    arena_run.main()


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("summary.json"))


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_atomic_writes_respect_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a.txt", "a\n")
        write_json_atomic(tmp_path / "b.json", {"b": 1})
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {"a.txt": 0o640, "b.json": 0o640}


def test_run_files_are_readable_by_others_and_named_by_split(monkeypatch, tmp_path, capsys, umask_022):
    """Item 4 (modes), item 11 (names by split; no run.log). A recording progress bar stands in for tqdm (which
    TQDM_DISABLE may silence) to read the postfix the trainer sets."""
    postfixes = []

    class Bar(arena.train.tqdm):
        def set_postfix(self, *args, **kwargs):
            postfixes.append(kwargs)
            return super().set_postfix(*args, **kwargs)

    monkeypatch.setattr(arena.train, "tqdm", Bar)
    cli(monkeypatch, tmp_path, "eval.lengths=[40]", "eval.num_examples=8")
    (run,) = run_dirs(tmp_path)
    modes = {name: (run / name).stat().st_mode & 0o777 for name in arena_run.RUN_FILES}
    assert modes == dict.fromkeys(arena_run.RUN_FILES, 0o644)
    assert not (run / "run.log").exists()  # Hydra's job log was always empty: not written at all

    assert postfixes and set(postfixes[-1]) == {"train_loss", "valid_acc", "tok_s"}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["split"] == "valid"]
    test = [r for r in records if r["split"] == "test"]
    assert valid and test
    for record in valid:
        assert {"train_loss", "train_accuracy", "valid_loss", "accuracy"} <= set(record), record
        assert not {"loss", "test_loss"} & set(record), record
    assert all("test_loss" in r and "valid_loss" not in r for r in test)
    curves = load_curves(tmp_path, load_runs(tmp_path))
    assert curves[["train_loss", "valid_loss"]].notna().all().all() and len(curves) == len(valid)


def test_skip_names_the_twin_and_its_test_accuracy_and_creates_nothing(monkeypatch, tmp_path, capsys):
    """Items 5 and 11: a rerun of a finished config prints one line with the twin's path and test accuracy, and
    leaves no empty run dir or date folder behind."""
    cli(monkeypatch, tmp_path / "results")
    (twin,) = run_dirs(tmp_path / "results")
    test_accuracy = json.loads((twin / "summary.json").read_text())["test_accuracy"]
    before = tree(tmp_path)
    capsys.readouterr()
    # the rerun's run dir would land in another date folder (a run just after midnight): it must go too
    cli(monkeypatch, tmp_path / "results", "hydra.run.dir=" + str(tmp_path / "results" / "later" / "run"))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("arena:")]
    assert len(lines) == 1 and lines[0].startswith("arena: skipping"), lines
    assert str(twin) in lines[0] and f"test accuracy {round(test_accuracy, 4)}" in lines[0], lines[0]
    assert tree(tmp_path) == before


def test_sweep_folder_accounts_for_points_skipped_elsewhere(monkeypatch, tmp_path, capsys):
    """Item 7: a point whose twin finished elsewhere leaves skipped.json in the sweep folder, the report of the
    folder follows it (every learning rate of the grid), a report of the whole tree counts each run once, a
    rerun in the same folder skips every point again, and a grid point that left nothing is listed as missing."""
    results = tmp_path / "results"
    cli(monkeypatch, results, "train.lr=0.001")  # the twin, outside the sweep folder
    (twin,) = run_dirs(results)
    sweep = results / "sweep"
    grid = ("train.lr=0.001,0.002", f"hydra.sweep.dir={sweep}")
    cli(monkeypatch, results, *grid, multirun=True)
    (record_path,) = sweep.rglob("skipped.json")
    record = json.loads(record_path.read_text())
    assert (record_path.parent / record["twin"]).resolve() == twin.resolve()
    assert record["config_hash"] == json.loads((twin / "summary.json").read_text())["config_hash"]

    runs = load_runs(sweep)
    assert sorted(runs["lr"]) == [0.001, 0.002] and set(runs["status"]) == {"completed"}
    assert len(load_curves(sweep, runs)) == 4  # the twin's curve is read through the record
    assert len(load_runs(results)) == 2  # the twin once, though both it and the record lie below

    capsys.readouterr()
    cli(monkeypatch, results, *grid, multirun=True)  # the same folder again: every point skips
    assert capsys.readouterr().err.count("arena: skipping") == 2
    assert len(list(results.rglob("summary.json"))) == 2 and len(load_runs(sweep)) == 2

    for point in sweep.iterdir():  # a point the sweep never reached (interrupted, say)
        if point.is_dir() and not (point / "skipped.json").exists():
            for p in sorted(point.rglob("*"), reverse=True):
                p.rmdir() if p.is_dir() else p.unlink()
            point.rmdir()
    with pytest.warns(ReportWarning, match=r"grid point #1 \(train.lr=0.002\) has no run"):
        runs = load_runs(sweep)
    missing = runs[runs["status"] == "missing"]
    assert len(runs) == 2 and len(missing) == 1, runs[["run_dir", "status", "message"]]
    assert missing["lr"].iloc[0] == 0.002 and "train.lr=0.002" in missing["message"].iloc[0]
    assert missing["mixer"].iloc[0] == runs["mixer"].iloc[0]  # composed as the point would have run: same group


def test_rerun_of_a_whole_sweep_leaves_only_skip_records(monkeypatch, tmp_path, capsys):
    """Item 11 with item 7: a rerun that skips everything leaves a sweep folder of skip records (how it accounts
    for its grid), never empty folders; the report of it covers the grid."""
    results = tmp_path / "results"
    cli(monkeypatch, results, "train.lr=0.001,0.002", f"hydra.sweep.dir={results / 'first'}", multirun=True)
    cli(monkeypatch, results, "train.lr=0.001,0.002", f"hydra.sweep.dir={results / 'again'}", multirun=True)
    points = [p for p in (results / "again").iterdir() if p.is_dir()]
    assert len(points) == 2 and all((p / "skipped.json").is_file() for p in points)
    assert not list((results / "again").rglob("summary.json"))
    assert all(any(d.iterdir()) for d in results.rglob("*") if d.is_dir())
    assert sorted(load_runs(results / "again")["lr"]) == [0.001, 0.002]
