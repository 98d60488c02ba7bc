"""Data parallelism (arena/parallel.py) on CPU: 2 torchrun processes over gloo train exactly as 1 process does.

    python -m pytest -q tests/test_parallel.py              # ~35 s on 2 free cores (FSDP's test, ~17 s, is slow)

Each test launches `python -m torch.distributed.run --nproc_per_node 2 -m arena.run ...` on a tiny model and
compares every evaluation row of metrics.jsonl (train loss and accuracy, validation loss and accuracy) with a
1-process run of the same global batch: equal within fp32 noise, since the ranks' rows together are the
1-process batch and the loss is the global batch's mean. AdamW's moments in the final checkpoints must match too
(the curve alone would not see gradients off by the world size). Only rank 0 may write: the results dir holds one
run dir and the other rank's scratch Hydra dir (under TMPDIR) is gone at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arena.errors import ConfigError
from arena.parallel import check

REPO = Path(__file__).resolve().parents[1]
# a tiny model and a short run: every 4th step an evaluation row; early stopping off so every row is there;
# no gradient clipping, which would hide gradients of the wrong scale (clipped to the same norm)
TINY = ["train.steps=16", "train.eval_every=4", "train.batch_size=8", "train.warmup_steps=4", "train.device=cpu",
        "train.target_accuracy=2.0", "train.grad_clip=0", "task.num_test=32", "model.d_model=32",
        "mixer.num_heads=2"]
ROW_KEYS = ("train_loss", "train_accuracy", "valid_loss", "accuracy")


def _env(tmp: Path) -> dict:
    scratch = tmp / "tmpdir"  # the scratch Hydra dirs of ranks > 0 go here: the test checks they are removed
    scratch.mkdir(exist_ok=True)
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # for the helper script too
    return {**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
            "PYTHONPATH": path}


def _command(results: Path, processes: int, *overrides: str) -> list[str]:
    head = [sys.executable]
    if processes > 1:
        # --standalone: a free local rendezvous port, so tests in parallel xdist workers never collide
        head += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return [*head, "-m", "arena.run", f"results_dir={results}", *TINY, *overrides]


def _launch(tmp: Path, results: Path, processes: int, *overrides: str, check_rc: bool = True):
    proc = subprocess.run(_command(results, processes, *overrides), cwd=REPO, env=_env(tmp), capture_output=True,
                          text=True, timeout=180)
    if check_rc:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _run_dir(results: Path) -> Path:
    dirs = [p.parent for p in results.rglob("config.yaml") if p.parent.name != ".hydra"]
    assert len(dirs) == 1, dirs  # one run dir: rank 1 made none
    return dirs[0]


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_curve(rows: list[dict], reference: list[dict]) -> None:
    assert [r["step"] for r in rows] == [r["step"] for r in reference] == [4, 8, 12, 16]
    for row, ref in zip(rows, reference):
        for key in ROW_KEYS:
            assert row[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6), (row["step"], key, row[key], ref[key])


def _moments(run_dir: Path) -> list:
    """AdamW's first and second moments in the final checkpoint, parameter by parameter in the optimizer's order
    (a plain state dict numbers the parameters, an FSDP one names them: the groups list both in the same order).
    Unlike the loss curve, they scale with the gradients: AdamW's update does not, so a gradient off by the world
    size would leave the curve as it is."""
    import torch

    state = torch.load(run_dir / "checkpoint" / "trainer.pt", weights_only=True)["trainer"]["optimizer"]
    return [(state["state"][p]["exp_avg"], state["state"][p]["exp_avg_sq"])
            for group in state["param_groups"] for p in group["params"]]


def _assert_same_gradients(run_dir: Path, reference: Path) -> None:
    import torch

    pairs = list(zip(_moments(run_dir), _moments(reference), strict=True))
    for (avg, sq), (ref_avg, ref_sq) in pairs:
        torch.testing.assert_close(avg, ref_avg, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(sq, ref_sq, rtol=1e-4, atol=1e-10)


def _assert_rank0_only(tmp: Path, results: Path) -> Path:
    run_dir = _run_dir(results)
    assert not list((tmp / "tmpdir").glob("arena-rank*")), "rank 1's scratch Hydra dir was left behind"
    names = {p.name for p in run_dir.iterdir()}
    assert names <= {".hydra", "config.yaml", "env.json", "metrics.jsonl", "summary.json", "checkpoint"}, names
    return run_dir


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """The run dir of the 1-process run the 2-process runs must equal."""
    tmp = tmp_path_factory.mktemp("one")
    _launch(tmp, tmp / "results", 1)
    return _run_dir(tmp / "results")


def test_ddp_two_processes_train_as_one(tmp_path, one_process):
    """2 gloo processes with train.parallel=ddp: the same loss curve and optimizer moments as 1 process, and only
    rank 0 wrote."""
    _launch(tmp_path, tmp_path / "results", 2, "train.parallel=ddp")
    run_dir = _assert_rank0_only(tmp_path, tmp_path / "results")
    _assert_same_curve(_rows(run_dir), _rows(one_process))
    _assert_same_gradients(run_dir, one_process)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 16


@pytest.mark.slow
def test_fsdp_run_stopped_by_sigterm_resumes_to_the_same_curve(tmp_path, one_process):
    """train.parallel=fsdp (FSDP2 per block, then the root), with SIGTERM reaching rank 1 alone during step 5 (a
    helper, tests/_sigterm_at_step.py, sends it): both ranks stop at the next step boundary, rank 0 writes the
    checkpoint the ranks gathered, and the same command resumes from it. The rows of both parts make the 1-process
    curve, the moments match, and the final checkpoint holds plain weights that arena.model.load reads."""
    from arena.model import load

    results = tmp_path / "results"
    command = _command(results, 2, "train.parallel=fsdp")
    at = command.index("-m", command.index("--nproc_per_node"))  # `-m arena.run` -> the helper script
    command[at: at + 2] = [str(REPO / "tests" / "_sigterm_at_step.py"), "5", "1"]
    proc = subprocess.run(command, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0  # interrupted: each rank exits 130
    run_dir = _run_dir(results)
    assert (run_dir / "summary.json").is_file(), proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == 6, (summary, proc.stderr[-3000:])
    assert [r["step"] for r in _rows(run_dir)] == [4]
    proc = _launch(tmp_path, results, 2, "train.parallel=fsdp")
    assert "resuming tiny-kda-mqar from step 6" in proc.stderr
    _assert_rank0_only(tmp_path, results)
    _assert_same_curve(_rows(run_dir), _rows(one_process))
    _assert_same_gradients(run_dir, one_process)
    assert json.loads((run_dir / "summary.json").read_text())["resumed_from_step"] == 6
    assert load(run_dir).lm_head.weight.shape[1] == 32  # d_model: whole weights, not one rank's shard


def test_bad_parallel_settings_are_one_line_errors(tmp_path, monkeypatch):
    """A global batch that does not divide by the processes, or torchrun with train.parallel=none: refused before
    any work, naming what is wrong and what is allowed."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match=r"train.batch_size=9 must divide by the 2 processes"):
        check("ddp", 9)
    with pytest.raises(ConfigError, match=r"train.parallel=none but torchrun started 2 processes"):
        check("none", 8)
    with pytest.raises(ConfigError, match=r"choose one of: none, ddp, fsdp"):
        check("zero3", 8)
    assert check("fsdp", 8) == (0, 2)
    monkeypatch.delenv("WORLD_SIZE")
    assert check("ddp", 9) == (0, 1)  # without torchrun: one process, the same computation (with a warning)
