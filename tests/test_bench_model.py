"""Tests of `python -m arena.bench model` (arena/bench/model.py, model_parts.py, model_report.py), all on CPU.

The CLI runs a tiny shape end to end; cache bytes from the formulas equal the bytes of the state tensors the
mixers really hold; bad keys are one line and exit code 2; the time box, the OOM handling and the claim lines
are checked on fakes. Whole file: a few seconds.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest
import torch

from arena.bench import model as bench_model
from arena.bench import model_parts as parts
from arena.bench import model_report as mr
from arena.bench.__main__ import main as bench_main
from tests.conftest import REPO

TINY = ["device=cpu", "train_lens=32", "prefill_lens=32", "decode_lens=16,64", "steps=2", "repeats=1", "budget_s=600"]


def test_cli_tiny_cpu_writes_csv_plot_and_section(tmp_path, capsys):
    assert bench_main(["model", *TINY, "mixers=mamba2,hybrid_3to1", f"out={tmp_path}"]) == 0
    (csv,) = tmp_path.glob("model_cpu_*.csv")
    assert csv.with_suffix(".png").stat().st_size > 0
    assert "### Claims and goals" in csv.with_suffix(".md").read_text()
    frame = pd.read_csv(csv)
    assert list(frame.columns) == [*mr.COLUMNS, "device", "d_model", "n_layers", "dtype", "torch", "triton"]
    assert frame["note"].isna().all(), frame[frame["note"].notna()][["mixer", "part", "L", "note"]]
    for mixer in ("mamba2", "hybrid_3to1"):
        rows = frame[frame["mixer"] == mixer]
        assert set(rows["part"]) == set(mr.PARTS)
        timed = rows[rows["part"] != "cache"]
        assert (timed["ms"] > 0).all() and (timed["tokens_per_s"] > 0).all()
        decode = rows[rows["part"] == "decode"]
        assert sorted(decode["batch"].unique()) == [1, 4]  # 1 and "max" (the CPU cap, 4)
        assert list(decode.drop_duplicates("L")["L"]) == [16, 64]
        cache = rows[rows["part"] == "cache"].set_index("L")
        assert (cache["cache_bytes"] == cache["cache_bytes_measured"]).all()
        steps = decode[decode["mode"] == "layer_step"]  # the recurrent layer's update alone, at the first length
        assert list(steps["batch"]) == [1, 4] and (steps["L"] == 16).all() and (steps["floor_ms"].isna()).all()
    cache = frame[frame["part"] == "cache"].pivot(index="L", columns="mixer", values="cache_bytes")
    assert cache.loc[16, "mamba2"] == cache.loc[64, "mamba2"]  # a recurrent state does not grow
    assert cache.loc[64, "hybrid_3to1"] > cache.loc[16, "hybrid_3to1"]  # its MLA layers' cache does
    train = frame[frame["part"] == "train"]
    assert (train["batch"] * train["L"] == 256).all()  # train_tokens 256 on CPU, packed into rows of T
    out = capsys.readouterr().out.splitlines()
    assert out[-3].startswith("mixer") and out[-2].startswith("mamba2") and out[-1].startswith("hybrid_3to1")


@pytest.mark.parametrize("mixer", bench_model.ALL_MIXERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cache_bytes_formula_equals_the_state_tensors(mixer, dtype):
    s = bench_model.settings({}, cuda_available=False)
    model = bench_model.build(s, mixer, "cpu").to(dtype).eval()
    act = dtype.itemsize
    L, B = 24, 2
    with torch.inference_mode():
        _, states = model(torch.randint(0, s["vocab"], (B, L)))  # a stateless prefill: plain tensors, no buffers
    held, written = mr.model_cache_bytes(model, L, act)
    assert mr.state_tensor_bytes(states) == B * held
    built = parts.decode_states(model, B, L, L, "cpu")  # the bench's direct construction at length L
    assert mr.state_tensor_bytes(built) == B * held
    with torch.inference_mode():  # one decode step adds exactly the bytes the formula says it writes to a cache
        _, after = model(torch.zeros(B, 1, dtype=torch.long), built)
    grown = mr.state_tensor_bytes(after) - B * held
    assert grown == B * (mr.model_cache_bytes(model, L + 1, act)[0] - held)
    if mixer.startswith("mla"):  # every layer an MLA layer: the step writes one latent slot per layer
        assert grown == B * written
    assert (grown > 0) == (mixer in ("mla", "mla_nope", "hybrid_3to1"))


@pytest.mark.parametrize("items,says", [
    (["bogus=1"], "unknown key 'bogus'; valid keys: mixers"),
    (["steps"], "'steps' is not key=value"),
    (["mixers=kda,xyz"], "mixers: 'xyz' is not valid; choose from kda"),
    (["parts="], "parts: '' is not valid"),
    (["decode_lens=1k,0"], "decode_lens: '0' must be a positive integer"),
    (["train_lens=abc"], "train_lens: 'abc' is not a positive integer"),
    (["decode_batches=1,big"], "decode_batches: 'big' is not a positive integer"),
    (["n_layers=6"], "n_layers=6 must be a multiple of 4 for hybrid_3to1"),
    (["d_model=300"], "d_model=300 must be a multiple of 128 (the head dim)"),
    (["dtype=int8"], "dtype='int8' is not valid; choose one of: bf16, fp16, fp32"),
    (["budget_s=0"], "budget_s='0' must be a number > 0"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, items, says):
    assert bench_main(["model", "device=cpu", f"out={tmp_path / 'out'}", *items]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("arena.bench model: error: ") and says in err, err
    assert not (tmp_path / "out").exists()


def test_module_runs_standalone_and_rejects_unknown_key(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "arena.bench.model", "bogus=1", f"out={tmp_path}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "unknown key 'bogus'" in proc.stderr


def test_parse_suffixes_and_lists():
    got = bench_model.parse(["decode_lens=[1M,4k,4k]", "decode_batches=1,max", "mlp_ratio=0", "mixers=gdn"])
    assert got == {"decode_lens": [4096, 1 << 20], "decode_batches": [1, "max"], "mlp_ratio": 0.0, "mixers": ["gdn"]}


def test_sweep_records_oom_and_the_time_box():
    def measure(L):
        if L == 4:
            raise torch.cuda.OutOfMemoryError("fake")
        return [{"ms": 1.0}]

    rows = []
    cpu = torch.device("cpu")
    parts.sweep([1, 2, 4, 8], measure, rows, {"mixer": "m"}, deadline=math.inf, exponent=1.0, device=cpu)
    assert [r.get("note") for r in rows] == [None, None, "OOM (stops here)", "skipped: after OOM at L=4"]
    rows = []
    parts.sweep([1, 2], lambda L: [{"ms": 1.0}], rows, {}, deadline=0.0, exponent=1.0, device=cpu)
    assert rows[0]["ms"] == 1.0 and rows[1]["note"].startswith("skipped: time box")  # the first point always runs


def test_claims_lines_give_the_ratios_and_verdicts():
    def row(mixer, part, L, **kw):
        return {"mixer": mixer, "part": part, "L": L, "batch": 1, "mode": "eager", **kw}

    rows = [row("mla_nope", "cache", 131072, cache_bytes=100.0), row("hybrid_3to1", "cache", 131072, cache_bytes=28.0),
            row("kda", "decode", 4096, ms=1.0), row("kda", "decode", 1 << 20, ms=1.3),
            row("kda", "decode", 1024, mode="layer_step", ms=0.01, floor_frac=0.1),
            {**row("kda", "decode", 1024, mode="layer_step", ms=0.1, floor_frac=0.6), "batch": 256},
            row("mla_nope", "decode", 4096, ms=2.0), row("hybrid_3to1", "decode", 4096, ms=1.0)]
    lines = mr.claims(pd.DataFrame(rows, columns=list(mr.COLUMNS)))
    assert "cache hybrid_3to1 / mla_nope: 128k 0.280 (Kimi: approaches 0.25)" in lines
    assert "goal hybrid cache <= 0.3x full MLA at 128k: 0.280 met" in lines
    assert any(line.startswith("decode speedup hybrid_3to1 over mla_nope") and "4k 2.00x" in line for line in lines)
    assert "goal kda decode latency flat (<= 1.2x from 4k to 1M): 1.30x NOT met" in lines
    assert "goal kda layer decode step within 2x of its memory floor (floor fraction >= 0.5): best 0.60 at batch " \
        "256 met (batches: 1: 0.10, 256: 0.60)" in lines


def test_decode_halves_the_max_batch_on_oom(monkeypatch):
    s = bench_model.settings(bench_model.parse(TINY + ["mixers=kda", "decode_lens=16"]), cuda_available=False)
    model = bench_model.build(s, "kda", "cpu").eval()
    real = parts.decode_states

    def tight(model, B, L, capacity, device):  # a card on which only 2 sequences fit
        if B > 2:
            raise torch.cuda.OutOfMemoryError("fake")
        return real(model, B, L, capacity, device)

    monkeypatch.setattr(parts, "decode_states", tight)
    rows = []
    parts.part_decode(s, model, torch.device("cpu"), rows, {"mixer": "kda"}, math.inf, math.nan, 4)
    steps = [(r["batch"], r["mode"], r.get("note")) for r in rows]  # "max" = the cap, 4, halved to 2
    assert steps == [(1, "eager", None), (2, "eager", None), (1, "layer_step", None), (2, "layer_step", None)]


def test_in_place_step_of_the_graph_chains_like_the_eager_step():
    """The body a CUDA graph replays (decode_step, in_place) must carry the states as the eager step does; checked
    on CPU, where there are no graphs. The hybrid only for one step: after it, the in-place MLA step attends the
    same L + 1 slots again (the captured shapes) while the eager one grows."""
    s = bench_model.settings({}, cuda_available=False)
    for mixer, n in (("kda", 3), ("mamba2", 3), ("hybrid_3to1", 1)):
        model = bench_model.build(s, mixer, "cpu").eval()
        states = parts.decode_states(model, 2, 8, 16, "cpu")
        fixed = [{k: v.clone() for k, v in st.items()} for st in states]
        for st in fixed:  # the clones' views must view the cloned buffers, as the originals do
            if "c_kv_buffer" in st:
                st["c_kv"], st["k_rope"] = st["c_kv_buffer"][:, :8], st["k_rope_buffer"][:, :8]
        eager = parts.decode_step(model, states, 2, "cpu", in_place=False)
        in_place = parts.decode_step(model, fixed, 2, "cpu", in_place=True)
        for _ in range(n):
            eager()
            in_place()
        assert in_place.holder[0] is fixed  # the captured tensors, never replaced
        for new, kept in zip(eager.holder[0], fixed):
            for key in ("recurrent", "ssm", "conv", "conv_q", "conv_k", "conv_v", "c_kv_buffer"):
                if key in new:
                    torch.testing.assert_close(kept[key], new[key], rtol=0, atol=0, msg=f"{mixer} {key}")


@pytest.mark.parametrize("impl,fused", [("triton", True), ("torch", False)])
def test_mamba2_layer_step_times_the_op_its_decode_path_takes(impl, fused, monkeypatch):
    """The layer_step row of Mamba2 must time what Mamba2's T = 1 path runs: the fused Triton step where the Triton SSD
    runs (impl=triton runs it under the CPU interpreter), the torch step otherwise."""
    from arena.bench.model_parts import layer_step
    from arena.kernels.ssd import recurrent
    from arena.mixers import build_mixer

    calls = []
    real = recurrent.fused_recurrent_ssd_decode_step
    monkeypatch.setattr(recurrent, "fused_recurrent_ssd_decode_step",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    mixer = build_mixer("mamba2", 32, impl=impl, d_state=16, headdim=16)
    fn, floor_bytes, state_bytes = layer_step(mixer, 2, torch.device("cpu"), torch.float32)
    fn()
    assert bool(calls) == fused
    assert state_bytes == 2 * mixer.nheads * 16 * 16 * 4
