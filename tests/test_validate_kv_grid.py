"""scripts/validate_kv_grid.py (issue 15's K x V sweep of the Triton delta-rule kernels) on CPU.

    python -m pytest -q tests/test_validate_kv_grid.py

The pure parts: the grid the issue asks for, the crash/timeout bookkeeping between worker processes, the table
and the CSV. One end-to-end run in the Triton interpreter: a single (K, V) group whose worker is made to abort on
its first case; the sweep must report that case as CRASH, resume in a fresh process and pass the next one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arena.testing import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "validate_kv_grid.py"
kv = load_script("validate_kv_grid")


def test_grid_covers_the_issue():
    assert kv.VALUES == (16, 32, 48, 64, 80, 96, 128, 192, 256)
    args = kv.parse_args(["--out", "/tmp/unused"])
    assert len(args.k_values) * len(args.v_values) == 81 and args.ops == ["kda", "gdn"]
    assert args.dtypes == ["bf16", "fp16"]
    cases = kv.grid_cases(64, 32, args.ops, args.dtypes, "cuda")
    assert len(cases) == 8 and len({c.id for c in cases}) == 8
    fixed = [c for c in cases if not c.lengths]
    packed = [c for c in cases if c.lengths]
    assert {(c.B, c.T, c.H) for c in fixed} == {(2, 192, 2)}
    # packed: the same 384 tokens as the fixed batch, so both layouts run the same compiled kernels
    assert {c.lengths for c in packed} == {(100, 92, 192)} and {(c.B, c.T) for c in packed} == {(1, 384)}
    assert all(c.K == 64 and c.V == 32 and c.h0 and c.final for c in cases)
    assert kv.schedule([(K, V) for K in kv.VALUES for V in kv.VALUES])[:15] == sorted(
        kv.schedule([(K, V) for K in kv.VALUES for V in kv.VALUES])[:15])  # one group per tile config first
    assert len({kv.tiles(*g) for g in kv.schedule([(K, V) for K in kv.VALUES for V in kv.VALUES])[:15]}) == 15


def test_tiles_mirror_the_kernels_block_sizes():
    """The schedule groups (K, V) by the tiles chunk._blocks picks; a change there must show here."""
    from arena.kernels.triton_delta import chunk as tri_chunk

    for K in kv.VALUES:
        for V in kv.VALUES:
            b = tri_chunk._blocks(K, V)
            assert kv.tiles(K, V) == (b["BK"], b["BV_fwd"])


def _rows_for(cases, statuses):
    return [{"index": i, "id": cases[i].id, "op": cases[i].op, "dtype": cases[i].dtype, "K": cases[i].K,
             "V": cases[i].V, "status": s, "worst": 0.5 if s == "ok" else 3.0, "problems": ""}
            for i, s in statuses.items()]


def test_settle_group_marks_crashes_and_resumes_after_them():
    cases = kv.grid_cases(64, 32, ["kda", "gdn"], ["bf16", "fp16"], "cuda")
    # all 8 done: finished
    rows, resume = kv.settle_group(cases, _rows_for(cases, {i: "ok" for i in range(8)}), 0, False, "")
    assert resume is None and len(rows) == 8
    # the worker died (signal) in case 2: case 2 is CRASH, resume at 3
    rows, resume = kv.settle_group(cases, _rows_for(cases, {0: "ok", 1: "FAIL"}), -11, False, "signal 11")
    assert resume == 3 and [r["status"] for r in rows] == ["ok", "FAIL", "CRASH"]
    assert rows[2]["id"] == cases[2].id and "signal 11" in rows[2]["problems"]
    # the worker reported a CUDA error itself (a CRASH row, CRASH_RC): resume after it, no second CRASH row
    rows, resume = kv.settle_group(cases, _rows_for(cases, {0: "ok", 1: "CRASH"}), kv.CRASH_RC, False, "x")
    assert resume == 2 and [r["status"] for r in rows] == ["ok", "CRASH"]
    # the last case crashed: nothing to resume
    rows, resume = kv.settle_group(cases, _rows_for(cases, {i: "ok" for i in range(7)}), 1, False, "boom")
    assert resume is None and rows[-1]["status"] == "CRASH" and rows[-1]["index"] == 7
    # a CUDA error ends the worker (its context is dead); a plain tolerance failure does not
    assert kv.is_fatal("RuntimeError: CUDA error: an illegal memory access was encountered")
    assert not kv.is_fatal("dq: 0.3 > 0.008; dg: NaN/inf")
    # past the timeout: every unfinished case TIMEOUT, no resume
    rows, resume = kv.settle_group(cases, _rows_for(cases, {0: "ok"}), -9, True, "timeout")
    assert resume is None and [r["status"] for r in rows] == ["ok"] + ["TIMEOUT"] * 7


def test_table_and_csv(tmp_path):
    rows = []
    for K, V, status in [(16, 16, "ok"), (16, 32, "FAIL"), (32, 16, "CRASH"), (32, 32, "ok")]:
        cases = kv.grid_cases(K, V, ["kda"], ["bf16"], "cuda")
        rows += _rows_for(cases, {0: "ok", 1: status})
    rows[3]["worst"] = 1.234
    table = kv.format_grid(rows, ["kda"], (16, 32), (16, 32))
    lines = table.splitlines()
    assert lines[1].split() == ["K", "\\", "V", "16", "32"]
    assert lines[2].split() == ["16", "ok", "F1.23"]
    assert lines[3].split() == ["32", "CRASH", "ok"]
    assert "6/8 cases ok" in table and sum(line.strip().startswith(("FAIL", "CRASH")) for line in lines) == 2
    path = tmp_path / "g.csv"
    kv.write_rows(rows, path)
    back = kv.read_rows(path)
    assert [(r["index"], r["status"], r["worst"]) for r in back] == [(r["index"], r["status"], r["worst"])
                                                                      for r in rows]


@pytest.mark.parametrize("argv,match", [
    (["--ops", "kda,mamba"], "--ops must be a comma-separated subset of kda,gdn"),
    (["--device", "cpu", "--dtypes", "bf16"], "--dtypes must be a subset of fp16,fp32 on cpu"),
    (["--values", "16,x"], "--values must be comma-separated integers"),
    (["--jobs", "0"], "--jobs must be >= 1"),
])
def test_bad_arguments_are_one_line_errors(argv, match, capsys):
    with pytest.raises(SystemExit):
        kv.parse_args(argv)
    assert match in capsys.readouterr().err


def test_cpu_run_reports_a_crash_and_goes_on(tmp_path):
    """One group (K = V = 16), GDN fp32, fixed and packed; the worker aborts at case 0 (as an illegal address would
    end it): case 0 is CRASH, a fresh worker runs case 1 against the oracle, and the exit status is 1."""
    out = tmp_path / "grid"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--values", "16", "--ops", "gdn",
                           "--dtypes", "fp32", "--crash-at", "16,16,0", "--jobs", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = kv.read_rows(out / "kv_grid.csv")
    assert [(r["index"], r["layout"], r["status"]) for r in rows] == [(0, "fixed", "CRASH"), (1, "packed", "ok")]
    assert "signal 6" in rows[0]["problems"]
    assert float(rows[1]["err_o"]) < 1e-4 and rows[1]["worst"] < 1
    text = (out / "kv_grid.txt").read_text()
    assert "CRASH" in text.splitlines()[2] and text.strip().endswith("FAIL")


def test_summarize_merges_groups_already_run(tmp_path, capsys):
    """--summarize builds the table from every group CSV under --out (e.g. the grid run in two parts)."""
    for K, V, status in [(16, 16, "ok"), (32, 64, "CRASH")]:
        cases = kv.grid_cases(K, V, ["gdn"], ["fp16"], "cuda")
        kv.write_rows(_rows_for(cases, {0: "ok", 1: status}), kv.group_csv(tmp_path, K, V))
    assert kv.main(["--summarize", "--out", str(tmp_path)]) == 1
    lines = (tmp_path / "kv_grid.txt").read_text().splitlines()
    assert lines[1].split() == ["K", "\\", "V", "16", "64"]
    assert lines[2].split() == ["16", "ok", "-"] and lines[3].split() == ["32", "-", "CRASH"]
    assert len(kv.read_rows(tmp_path / "kv_grid.csv")) == 4 and "FAIL" in capsys.readouterr().out


def test_budget_leaves_unstarted_groups_notrun(tmp_path):
    """Past --budget no group starts; the ones left are reported NOTRUN (here: all, no worker is launched)."""
    assert kv.main(["--device", "cpu", "--values", "16,32", "--budget", "1e-9", "--out", str(tmp_path)]) == 1
    rows = kv.read_rows(tmp_path / "kv_grid.csv")
    assert len(rows) == 4 * 8 and {r["status"] for r in rows} == {"NOTRUN"}
    assert not list((tmp_path / "groups").glob("*.log"))
