"""The GPU validation script's pure parts (scripts/validate_triton_gpu.py and validate_cases.py), on CPU, with no
Triton kernel involved.

Checks that the case list covers what issue 4 asks for, that the inputs follow the stated recipe, that the
comparison fails NaNs, wrong dtypes and leaked state, and that the loss comparison and report work. One case
runs end to end with the fp32 oracle standing in for the kernel (the script itself never does that).
Run: PYTHONPATH=. pytest tests/test_validate_script.py -q
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from arena.kernels.kda import naive_recurrent_kda
from arena.testing import load_script

REPO = Path(__file__).resolve().parents[1]
vt = load_script("validate_triton_gpu")


@pytest.mark.parametrize("op", ["kda", "gdn"])
def test_case_list_covers_the_issue(op):
    cases = vt.make_cases(op, ("bf16",))
    assert 40 <= len(cases) <= 60
    assert len({c.id for c in cases}) == len(cases)
    plain = [c for c in cases if not c.lengths]
    assert {1, 63, 64, 65, 500, 1024, 2048} <= {c.T for c in plain}
    assert {c.K for c in cases} == {c.V for c in cases} == {32, 64, 100, 128, 256}
    assert max(c.H for c in cases) == 8
    assert {c.gate for c in cases} >= {"logsig", "zero", "masked", "wide", "floor"}
    assert {c.beta for c in cases} == {"sigmoid", "small", "one"}
    assert {c.h0 for c in cases} == {c.neg for c in cases} == {c.final for c in cases} == {True, False}
    packed = [c for c in cases if c.lengths]
    assert packed and all(c.B == 1 and c.T == sum(c.lengths) for c in packed)
    assert any(c.lengths == (1, 63, 64, 200, 1000) and c.h0 for c in packed)
    assert all(c.B * c.H <= 2 for c in plain if c.T >= 2048)  # the token-loop oracle stays cheap
    quick = vt.make_cases(op, ("bf16", "fp16"), quick=True)
    assert 6 <= len(quick) <= 16 and any(c.lengths for c in quick)
    tiny = vt.make_cases(op, ("fp16",), tiny=True)
    assert max(c.K for c in tiny) <= 32 and max(c.T for c in tiny) <= 350 and 20 in {c.K for c in tiny}


def test_inputs_follow_the_recipe():
    case = vt.Case(op="kda", dtype="fp16", T=0, K=16, V=8, gate="masked", beta="one", lengths=(3, 1, 5))
    case = vt.Case(**{**vt.asdict(case), "T": 9})
    x = vt.make_inputs(case, per_channel=True, device="cpu")
    assert x["q"].dtype == x["v"].dtype == x["do"].dtype == torch.float16
    assert x["g"].dtype == x["beta"].dtype == x["h0"].dtype == torch.float32
    assert torch.allclose(x["k"].float().norm(dim=-1), torch.ones(1, 9, 2), atol=2e-3)
    assert x["g"].shape == (1, 9, 2, 16) and x["g"].max() <= 0 and (x["g"] == -1000).any()
    assert ((x["beta"] > 0.998) & (x["beta"] < 1)).all()
    assert x["h0"].shape == x["dht"].shape == (3, 2, 16, 8)
    assert x["cu_seqlens"].tolist() == [0, 3, 4, 9] and x["cu_seqlens"].dtype == torch.int64
    gdn = vt.make_inputs(vt.Case(op="gdn", dtype="bf16", T=50, gate="wide", beta="small"), False, "cpu")
    assert gdn["g"].shape == (1, 50, 2) and (gdn["g"] == 0).any() and gdn["g"].min() < -1
    assert gdn["beta"].max() < 0.01
    again = vt.make_inputs(vt.Case(op="gdn", dtype="bf16", T=50, gate="wide", beta="small"), False, "cpu")
    assert torch.equal(gdn["g"], again["g"])  # seeded: the same numbers every run


def _fake_kernel(leak: bool = False):
    """The fp32 oracle in the kernel's calling convention; leak=True carries state across packed sequences."""
    def fn(q, k, v, g, beta, initial_state=None, output_final_state=False, allow_neg_eigval=False,
           backend=None, cu_seqlens=None):
        assert backend == "triton"
        if cu_seqlens is None:
            return naive_recurrent_kda(q, k, v, g, beta, initial_state=initial_state,
                                       output_final_state=output_final_state, allow_neg_eigval=allow_neg_eigval)
        bounds, outs, states = cu_seqlens.tolist(), [], []
        for i, (bos, eos) in enumerate(zip(bounds[:-1], bounds[1:])):
            h0 = states[-1] if leak and states else (None if initial_state is None else initial_state[i: i + 1])
            o, S = naive_recurrent_kda(q[:, bos:eos], k[:, bos:eos], v[:, bos:eos], g[:, bos:eos],
                                       beta[:, bos:eos], initial_state=h0, output_final_state=True,
                                       allow_neg_eigval=allow_neg_eigval)
            outs.append(o)
            states.append(S)
        return torch.cat(outs, 1), (torch.cat(states, 0) if output_final_state else None)
    return fn


@pytest.mark.parametrize("leak", [False, True], ids=["exact", "leaky"])
def test_one_packed_case_end_to_end(leak):
    case = vt.Case(op="kda", dtype="fp16", T=9, K=8, V=4, gate="zero", lengths=(3, 1, 5))
    inputs = vt.make_inputs(case, per_channel=True, device="cpu")
    out, caught = vt.run_kernel(_fake_kernel(leak), inputs, case)
    ref = vt.run_reference(naive_recurrent_kda, inputs, case)
    row = vt.compare(ref, out, torch.float16)
    assert row["passed"] is (not leak), row["problems"]
    assert set(out) == {"o", "ht", "dq", "dk", "dv", "dg", "dbeta", "dh0"} and not caught


def test_compare_fails_nan_missing_and_wrong_dtype():
    ref = {name: torch.randn(3, 5) for name in vt.QUANTITIES}
    ref["o"] = ref["o"].bfloat16()
    assert vt.compare(ref, dict(ref), torch.bfloat16)["passed"]
    poisoned = {**ref, "dg": ref["dg"].clone().fill_(math.nan)}
    row = vt.compare(ref, poisoned, torch.bfloat16)
    assert not row["passed"] and "dg: NaN" in row["problems"] and row["ratio_dg"] == math.inf
    row = vt.compare(ref, {**ref, "dh0": None, "ht": ref["ht"].double()}, torch.bfloat16)
    assert "dh0: missing" in row["problems"] and "final state dtype" in row["problems"]
    row = vt.compare({**ref, "dh0": None}, {**ref, "dh0": None, "dbeta": ref["dbeta"] * 1.05},
                     torch.bfloat16)
    assert not row["passed"] and row["ratio_dh0"] == "" and row["ratio_dbeta"] == pytest.approx(2.5, rel=1e-3)


def test_loss_comparison_and_report(tmp_path):
    a = [4.0 - 0.01 * i for i in range(100)]
    close = vt.compare_losses(a, [x + 0.01 for x in a])
    assert close["passed"] and close["max_diff"] == pytest.approx(0.01)
    assert not vt.compare_losses(a, [x + 0.2 for x in a])["passed"]
    assert not vt.compare_losses(a, a[:-1] + [math.nan])["passed"]
    rows = [{"id": "kda-bf16-a", "op": "kda", "dtype": "bf16", "passed": True, "ratio_o": 0.4, "ratio_dh0": ""},
            {"id": "kda-bf16-b", "op": "kda", "dtype": "bf16", "passed": False, "ratio_o": 1.7, "ratio_dh0": 0.2}]
    (summary,) = vt.summarize(rows)
    assert (summary["cases"], summary["passed"], summary["o"], summary["dh0"]) == (2, 1, 1.7, 0.2)
    training = [{"mixer": "kda", **close, "final_acc_a": 0.5, "final_acc_b": 0.51},
                {"mixer": "gdn", "passed": False, "error": "KeyError: 'triton'"}]
    table = vt.format_table([summary], training)
    assert "1/2" in table and "FAILED kda-bf16-b" in table and "1.700" in table and "KeyError" in table
    vt.write_csv(rows, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("id,op,dtype,passed,ratio_o,ratio_dh0")


@pytest.mark.parametrize("count", [1, 3, 4])
def test_shards_partition_cases_by_head_dims(count):
    cases = vt.make_cases("kda", ("bf16", "fp16"))
    shards = [vt.shard_cases(cases, i, count) for i in range(count)]
    assert sorted(c.id for s in shards for c in s) == sorted(c.id for c in cases)  # each case exactly once
    dims = [{(c.K, c.V) for c in s} for s in shards]
    assert all(s for s in shards) and all(not (a & b) for i, a in enumerate(dims) for b in dims[i + 1:])


def test_bad_shard_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as err:
        vt.parse_args(["--shard", "3/3"])
    assert err.value.code == 2 and "--shard must be I/N" in capsys.readouterr().err


def test_summarize_merged_shards_flags_missing_and_failed(tmp_path):
    cases = vt.make_cases("gdn", ("fp16",), quick=True)
    rows = []
    for case in cases[:-1]:  # the last case is missing: its shard crashed
        row = {"id": case.id, **vt.asdict(case), "lengths": "", "passed": True}
        row.update({f"ratio_{q}": 0.5 for q in vt.QUANTITIES})
        rows.append(row)
    vt.write_csv(rows[:2], tmp_path / "a.csv")
    vt.write_csv(rows[2:], tmp_path / "b.csv")
    merged, table, ok = vt.summarize_files([tmp_path / "a.csv", tmp_path / "b.csv"], quick=True)
    assert not ok and len(merged) == len(cases) - 1 and "MISSING 1 cases" in table and cases[-1].id in table
    vt.write_csv([{**rows[0], "id": cases[-1].id}], tmp_path / "c.csv")
    merged, table, ok = vt.summarize_files([tmp_path / n for n in ("a.csv", "b.csv", "c.csv")], quick=True)
    assert ok and "MISSING" not in table
    rows[0]["passed"], rows[0]["ratio_dk"] = False, 1.7
    vt.write_csv(rows[:2], tmp_path / "a.csv")
    merged, table, ok = vt.summarize_files([tmp_path / n for n in ("a.csv", "b.csv", "c.csv")], quick=True)
    assert not ok and "FAILED " + cases[0].id in table and "1.700" in table


def test_summarize_cli_writes_the_merged_table(tmp_path, capsys):
    case = vt.make_cases("kda", ("bf16",), quick=True)[0]
    vt.write_csv([{"id": case.id, **vt.asdict(case), "passed": True, "ratio_o": 0.25}], tmp_path / "s.csv")
    assert vt.main(["--summarize", str(tmp_path / "s.csv"), "--out", str(tmp_path / "o")]) == 1  # cases missing
    assert "MISSING" in capsys.readouterr().out and (tmp_path / "o" / "validate_cases.csv").exists()


def test_ssd_cases_and_one_packed_case_end_to_end():
    """Op ssd: the delta-rule cases minus beta / allow_neg_eigval variants, packed ones kept; one tiny packed case
    runs the real Triton SSD (the interpreter here) against the token loop and passes, dbeta left empty."""
    cases = vt.make_cases("ssd", ("bf16",))
    assert cases and not any(c.neg for c in cases) and {c.beta for c in cases} == {"sigmoid"}
    assert any(c.lengths == (1, 63, 64, 200, 1000) for c in cases)
    chunk_fn, naive_fn, per_channel = vt.load_ops()["ssd"]
    case = next(c for c in vt.make_cases("ssd", ("fp32",), quick=True, tiny=True) if c.lengths)
    row = vt.check_case(case, chunk_fn, naive_fn, per_channel, torch.device("cpu"))
    assert row["passed"], row["problems"]
    assert row["ratio_dbeta"] == "" and isinstance(row["ratio_dh0"], float)
