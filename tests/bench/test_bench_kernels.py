"""`python -m arena.bench kernels` without a GPU: byte floors, table and goal formatting, files, the CLI's errors.

    python -m pytest -q tests/bench/test_bench_kernels.py

The byte counts are checked against the hand numbers of docs performance.md section 6 (B=8, T=4096, H=16,
K=V=128, bf16: one [B, T, H, 128] bf16 tensor is 134,217,728 bytes). The timing itself needs CUDA and is
exercised on the GPU machine, not here.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from arena.bench import floors, kernels, report
from arena.bench.__main__ import build_parser, main

REPO = Path(__file__).resolve().parents[2]
B, T, H, D = 8, 4096, 16, 128
ONE = B * T * H * D * 2  # one bf16 [8, 4096, 16, 128] tensor
BETA = B * T * H * 2  # beta (or dbeta) in bf16
MIB = 2 ** 20
NAN = math.nan


# ------------------------------------------------------------------------------------------------------ floors

def test_kda_forward_bytes_match_performance_md():
    # 5 bf16 tensors (q, k, v, g read, o written) = 0.671 GB, plus beta.
    nbytes = floors.delta_rule_bytes(B, T, H, D, D, io_bytes=2, g_bytes=2, per_channel=True)
    assert nbytes == 5 * ONE + BETA
    assert nbytes == pytest.approx(0.671e9, rel=5e-3)
    assert floors.floor_ms(nbytes, 3.0e12) == pytest.approx(0.224, rel=5e-3)


def test_kda_forward_bytes_with_fp32_gate():
    # section 6: "0.27 ms if g is fp32" at 3.0 TB/s
    nbytes = floors.delta_rule_bytes(B, T, H, D, D, io_bytes=2, g_bytes=4, per_channel=True)
    assert nbytes == 4 * ONE + 2 * ONE + BETA
    assert floors.floor_ms(nbytes, 3.0e12) == pytest.approx(0.27, rel=1e-2)


def test_kda_forward_backward_bytes_match_performance_md():
    # 14 tensors = 1.88 GB, floor 0.63 ms: fwd 5, then dO read, q k v g reread, dq dk dv dg written.
    nbytes = floors.delta_rule_bytes(B, T, H, D, D, io_bytes=2, g_bytes=2, per_channel=True, backward=True)
    assert nbytes == 14 * ONE + 3 * BETA  # beta read twice, dbeta written once
    assert nbytes == pytest.approx(1.88e9, rel=5e-3)
    assert floors.floor_ms(nbytes, 3.0e12) == pytest.approx(0.63, rel=5e-3)


def test_gdn_bytes_match_performance_md():
    # 4 tensors = 0.537 GB forward (floor 0.179 ms), 11 tensors = 1.48 GB forward+backward (0.49 ms);
    # the per-head g (fp32 here) and beta add under 1 %.
    g = B * T * H * 4
    fwd = floors.delta_rule_bytes(B, T, H, D, D, io_bytes=2, g_bytes=4, per_channel=False)
    both = floors.delta_rule_bytes(B, T, H, D, D, io_bytes=2, g_bytes=4, per_channel=False, backward=True)
    assert fwd == 4 * ONE + g + BETA
    assert both == 11 * ONE + 3 * (g + BETA)
    assert fwd == pytest.approx(0.537e9, rel=1e-2)
    assert both == pytest.approx(1.48e9, rel=1e-2)
    assert floors.floor_ms(fwd, 3.0e12) == pytest.approx(0.179, rel=1e-2)
    assert floors.floor_ms(both, 3.0e12) == pytest.approx(0.49, rel=2e-2)  # 1.48 / 3.0 = 0.493, rounded


def test_delta_rule_bytes_with_unequal_head_dims_and_fp32():
    # K=64, V=32, fp32 everything: q, k, g have K per token-head; v, o have V.
    tokens = 2 * 10 * 3
    fwd = floors.delta_rule_bytes(2, 10, 3, 64, 32, io_bytes=4, g_bytes=4, per_channel=True)
    assert fwd == tokens * 4 * (64 + 64 + 32 + 64 + 1) + tokens * 4 * 32


def test_attention_bytes_and_flops():
    assert floors.attention_bytes(B, T, H, D, io_bytes=2) == 4 * ONE
    assert floors.attention_bytes(B, T, H, D, io_bytes=2, backward=True) == 12 * ONE
    # section 5: causal forward 2 B H T^2 d = 550 GFLOP, backward about 2.5x (1.37 TFLOP)
    fwd = floors.attention_flops(B, T, H, D)
    assert fwd == pytest.approx(550e9, rel=1e-3)
    assert floors.attention_flops(B, T, H, D, backward=True) - fwd == pytest.approx(1.37e12, rel=5e-3)
    assert floors.attention_flops(B, T, H, D, causal=False) == 2 * fwd


def test_achieved_bandwidth_and_floor_fraction():
    assert floors.achieved_gbps(3.0e9, 1.0) == pytest.approx(3000.0)
    assert floors.floor_fraction(3.0e9, 2.0, 3.0e12) == pytest.approx(0.5)
    assert math.isnan(floors.floor_fraction(3.0e9, NAN, 3.0e12))


# ------------------------------------------------------------------------------------------------------- report

def fake_row(op, impl, T, fwd, both, note="", B_=None, peak=NAN):
    return {"op": op, "impl": impl, "T": T, "B": B_ or 32768 // T, "H": H, "D": D, "dtype": "bf16",
            "g_dtype": "" if op == "sdpa" else "fp32", "fwd_ms": fwd, "fwdbwd_ms": both, "fwdbwd_peak_bytes": peak,
            "o_rel_rms": NAN, "o_ref": "", "detail": "", "note": note}


def fake_frame(with_fla: bool) -> pd.DataFrame:
    rows = []
    for T_ in (2048, 4096):
        rows.append(fake_row("kda", "arena.triton", T_, 0.5, 2.0, peak=100 * MIB))
        rows.append(fake_row("kda", "arena.torch", T_, NAN, NAN, note="skipped (--no-torch)"))
        rows.append(fake_row("kda", "fla", T_, 1.0, 4.0, peak=200 * MIB) if with_fla
                    else fake_row("kda", "fla", T_, NAN, NAN, note="fla-core is not installed (pip install fla-core)"))
        rows.append(fake_row("gdn", "fla", T_, 0.8, 3.6, peak=100 * MIB) if with_fla
                    else fake_row("gdn", "fla", T_, NAN, NAN, note="fla-core is not installed (pip install fla-core)"))
        rows.append(fake_row("gdn", "arena.triton", T_, 1.0, 4.0 if T_ == 2048 else 3.0, peak=150 * MIB))
        rows.append(fake_row("sdpa", "sdpa.flash", T_, 1.0, 4.0))
    return report.derive(pd.DataFrame(rows), bandwidth=3.0e12)


def test_derive_ratios_bandwidth_and_order():
    frame = fake_frame(with_fla=True)
    kda = frame[(frame["op"] == "kda") & (frame["T"] == 4096)].set_index("impl")
    assert list(frame["op"].unique()) == ["kda", "gdn", "sdpa"]
    assert list(kda.index) == ["arena.triton", "arena.torch", "fla"]  # sorted, whatever the run order
    assert kda.loc["arena.triton", "fwd_vs_fla"] == pytest.approx(2.0)
    assert kda.loc["arena.triton", "fwdbwd_vs_fla"] == pytest.approx(2.0)
    assert kda.loc["fla", "fwd_vs_fla"] == pytest.approx(1.0)
    assert math.isnan(kda.loc["arena.torch", "fwd_vs_fla"])
    nbytes = floors.delta_rule_bytes(8, 4096, H, D, D, io_bytes=2, g_bytes=4, per_channel=True)
    assert kda.loc["arena.triton", "fwd_bytes"] == nbytes
    assert kda.loc["arena.triton", "fwd_GBps"] == pytest.approx(nbytes / 0.5e-3 / 1e9)
    assert kda.loc["arena.triton", "fwd_floor_frac"] == pytest.approx(nbytes / 3.0e12 / 0.5e-3)
    assert kda.loc["fla", "fwd_Mtok_s"] == pytest.approx(32768 / 1.0e-3 / 1e6)
    sdpa = frame[frame["op"] == "sdpa"]
    assert sdpa["fwd_TFLOPs"].notna().all() and frame[frame["op"] != "sdpa"]["fwd_TFLOPs"].isna().all()
    assert sdpa["fwd_vs_fla"].isna().all()


def test_table_with_fla_present():
    table = report.format_table(fake_frame(with_fla=True))
    lines = table.splitlines()
    assert lines[0].startswith("| op | impl | T | B | fwd ms | fwd+bwd ms | fla/this fwd")
    assert len(lines) == 2 + 12
    triton = next(line for line in lines if "| kda | arena.triton | 4096 | 8 |" in line)
    assert "| 0.5 | 2 | 2.00x | 2.00x |" in triton and "| 100 (0.50x) |" in triton
    fla = next(line for line in lines if "| kda | fla | 4096 |" in line)
    assert "1.00x" in fla
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_table_with_fla_missing_shows_nan_cells_and_reasons():
    table = report.format_table(fake_frame(with_fla=False))
    fla = next(line for line in table.splitlines() if "| kda | fla | 4096 |" in line)
    assert "| n/a | n/a | n/a | n/a |" in fla
    assert "fla-core is not installed" in fla
    triton = next(line for line in table.splitlines() if "| kda | arena.triton | 4096 |" in line)
    assert "| 0.5 | 2 | n/a | n/a |" in triton  # timed, but nothing to compare with
    assert "nan" not in table.lower()


def test_goal_lines():
    lines = report.goal_lines(fake_frame(with_fla=True))
    assert [line.split(",")[0] for line in lines] == [
        "goal KDA fwd", "goal KDA fwd+bwd", "goal KDA peak memory fwd+bwd",
        "goal GDN fwd", "goal GDN fwd+bwd", "goal GDN peak memory fwd+bwd"]
    kda_fwd, kda_both, kda_mem, gdn_fwd, gdn_both, gdn_mem = lines
    assert "T=2048 2.00x, T=4096 2.00x" in kda_both and "(goal >= 1.5x at every T)" in kda_both
    assert kda_both.endswith(": met") and kda_fwd.endswith(": met")
    assert "T=2048 0.50x, T=4096 0.50x" in kda_mem and kda_mem.endswith(": met")  # 100 MiB against fla's 200
    # GDN: fla 3.6 ms vs arena 4.0 ms at T=2048 -> 0.90x, slower than fla; 1.20x faster at 4096: not every T
    assert "T=2048 0.90x, T=4096 1.20x" in gdn_both and gdn_both.endswith("NOT met")
    assert gdn_fwd.endswith("NOT met")  # 0.8 ms against 1.0
    assert "T=2048 1.50x" in gdn_mem and gdn_mem.endswith("NOT met")  # 150 MiB against fla's 100
    missing = report.goal_lines(fake_frame(with_fla=False))
    assert missing and all(line.endswith("not measured (fla or arena missing at some T)") for line in missing)


def test_goal_lines_of_a_csv_from_before_memory_was_measured():
    frame = fake_frame(with_fla=True).drop(columns=["fwdbwd_peak_bytes", "peak_vs_fla"])
    lines = report.goal_lines(report.derive(frame, bandwidth=3.0e12))
    assert lines[1].endswith(": met") and lines[2].endswith("not measured (fla or arena missing at some T)")


def test_csv_and_plot_are_written_whole(tmp_path):
    frame = fake_frame(with_fla=False)
    report.write_csv(frame, tmp_path / "k.csv")
    report.write_plot(frame, tmp_path / "k.png", "fake device")
    back = pd.read_csv(tmp_path / "k.csv")
    assert len(back) == len(frame) and back["fwd_ms"].isna().sum() == frame["fwd_ms"].isna().sum()
    assert (tmp_path / "k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = frame.assign(fwd_ms=NAN, fwdbwd_ms=NAN)  # nothing measured: still a readable plot
    report.write_plot(empty, tmp_path / "empty.png", "fake device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.png", "k.csv", "k.png"]  # no temp files left


def test_slug():
    assert report.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert report.slug("cpu (x86_64, 2 cores)") == "cpu-x86-64-2-cores"


# ------------------------------------------------------------------------------------------------ inputs, glue

def test_inputs_are_realistic_and_reproducible():
    x = kernels.make_inputs("kda", 2, 16, 3, 8, torch.float32, "cpu", seed=1)
    y = kernels.make_inputs("kda", 2, 16, 3, 8, torch.float32, "cpu", seed=1)
    assert x["q"].shape == (2, 16, 3, 8) and x["g"].shape == (2, 16, 3, 8) and x["beta"].shape == (2, 16, 3)
    assert torch.allclose(x["q"].norm(dim=-1), torch.ones(2, 16, 3)) and torch.allclose(x["k"].norm(dim=-1),
                                                                                         torch.ones(2, 16, 3))
    assert (x["g"] < 0).all() and x["g"].dtype == torch.float32
    assert ((x["beta"] > 0) & (x["beta"] < 1)).all()
    assert all(torch.equal(x[n], y[n]) for n in x) and all((x[n] != 0).all() for n in x)
    assert all(x[n].requires_grad for n in ("q", "k", "v", "g", "beta")) and not x["do"].requires_grad
    gdn = kernels.make_inputs("gdn", 2, 16, 3, 8, torch.bfloat16, "cpu", seed=1)
    assert gdn["g"].shape == (2, 16, 3) and gdn["q"].dtype == torch.bfloat16
    sdpa = kernels.make_inputs("sdpa", 2, 16, 3, 8, torch.float32, "cpu", seed=1)
    assert sdpa["q"].shape == (2, 3, 16, 8) and "g" not in sdpa


def parsed(*argv):
    args = build_parser().parse_args(["kernels", *argv])
    kernels.check_arguments(args)
    return args


def test_torch_path_glue_runs_and_skips():
    args = parsed("--torch-max-t", "16", "--torch-chunk", "8")
    call, detail = kernels.resolve("gdn", "arena.torch", 16, args)
    x = kernels.make_inputs("gdn", 1, 16, 2, 8, torch.float32, "cpu", seed=0)
    o = call(x)
    assert o.shape == (1, 16, 2, 8) and torch.isfinite(o).all() and detail == "C=8"
    with pytest.raises(kernels.Unavailable, match="T > --torch-max-t 16"):
        kernels.resolve("gdn", "arena.torch", 32, args)
    with pytest.raises(kernels.Unavailable, match="--no-torch"):
        kernels.resolve("kda", "arena.torch", 16, parsed("--no-torch"))


@pytest.mark.skipif(kernels.importlib.util.find_spec("fla") is not None, reason="fla-core is installed here")
def test_fla_missing_is_a_reason_not_a_crash():
    with pytest.raises(kernels.Unavailable, match="fla-core is not installed"):
        kernels.resolve("kda", "fla", 16, parsed())


# ----------------------------------------------------------------------------------------------------------- CLI

@pytest.mark.parametrize("argv, message", [
    (["--lengths", "3000"], "T=3000 does not divide --tokens 32768"),
    (["--lengths", "4096,x"], "--lengths must be comma-separated positive integers"),
    (["--ops", "kda,mamba"], "--ops mamba is not valid"),
    (["--torch-chunk", "48"], "--torch-chunk must be a power of 2"),
    (["--heads", "0"], "--heads must be >= 1"),
], ids=["length-not-dividing", "length-not-int", "unknown-op", "chunk-not-pow2", "zero-heads"])
def test_bad_arguments_are_one_line_exit_2(argv, message, capsys, tmp_path):
    out = tmp_path / "bench"
    assert main(["kernels", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not out.exists()


def test_bad_choice_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["kernels", "--dtype", "fp8"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "invalid choice: 'fp8'" in err


def run_cli(*argv):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "arena.bench", *argv], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def test_without_cuda_exits_2_with_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "bench"
    result = run_cli("kernels", "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.startswith("arena.bench kernels needs a CUDA GPU; none is available (")
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert not out.exists()


def test_no_or_unknown_subcommand_prints_usage_and_fails(capsys):
    assert main([]) == 2
    assert "kernels" in capsys.readouterr().err  # the usage lists the subcommands
    result = run_cli("kernelz")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "invalid choice: 'kernelz'" in result.stderr


# ----------------------------------------------------------------------------------------------------------- ssd

def test_ssd_inputs_rows_and_bytes():
    """Op ssd: q, k, v, g (no beta) and mamba_ssm's view of the same data; the torch and Triton (interpreter) rows
    compute the recurrence of the token-loop oracle; the byte floor is the delta-rule count without beta."""
    from arena.kernels.ssd import naive_recurrent_ssd

    x = kernels.make_inputs("ssd", 2, 16, 3, 8, torch.float32, "cpu", seed=1)
    assert x["q"].shape == (2, 16, 3, 8) and x["g"].shape == (2, 16, 3) and "beta" not in x
    assert (x["g"] < 0).all() and x["g"].dtype == torch.float32
    # Mamba2 forms v = dt * x and g = dt * A inside its kernel: the precomputed leaves must give q, k, v, g back
    assert torch.allclose(x["mamba_x"] * x["mamba_dt"][..., None], x["v"], rtol=1e-5, atol=1e-6)
    assert torch.allclose(x["mamba_dt"] * x["mamba_A"], x["g"])
    want, _ = naive_recurrent_ssd(x["q"], x["k"], x["v"], x["g"])
    for impl in ("arena.torch", "arena.triton"):  # tests/conftest.py sets TRITON_INTERPRET=1
        call, _ = kernels.resolve("ssd", impl, 16, parsed("--torch-chunk", "8"))
        assert torch.allclose(call(x), want, atol=1e-5), impl
    row = fake_row("ssd", "arena.triton", 4096, 1.0, 3.0)
    frame = report.derive(pd.DataFrame([row, fake_row("ssd", "fla", 4096, 1.5, 3.0)]), bandwidth=3.0e12)
    triton = frame.set_index("impl").loc["arena.triton"]
    assert triton["fwd_bytes"] == 4 * ONE + B * T * H * 4  # q, k, v read, o written (bf16); g fp32; no beta
    assert triton["fwd_vs_fla"] == pytest.approx(1.5)
    assert report.goal_lines(frame) == [
        "goal SSD fwd, fla/arena.triton: T=4096 1.50x (goal >= 1x at every T): met",
        "goal SSD fwd+bwd, fla/arena.triton: T=4096 1.00x (goal >= 1x at every T): met",
        "goal SSD peak memory fwd+bwd, arena.triton/fla: T=4096 n/a (goal <= 1x at every T): not measured "
        "(fla or arena missing at some T)"]


@pytest.mark.skipif(kernels.importlib.util.find_spec("mamba_ssm") is not None, reason="mamba_ssm is installed here")
def test_ssd_anchors_missing_are_reasons_not_crashes():
    with pytest.raises(kernels.Unavailable, match="mamba_ssm is not installed"):
        kernels.resolve("ssd", "mamba_ssm", 16, parsed())
    if kernels.importlib.util.find_spec("fla") is None:
        with pytest.raises(kernels.Unavailable, match="fla-core is not installed"):
            kernels.resolve("ssd", "fla", 16, parsed())


def test_ssd_without_cuda_exits_2_with_one_line(tmp_path):
    result = run_cli("kernels", "--ops", "ssd", "--out", str(tmp_path / "bench"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("arena.bench kernels needs a CUDA GPU")


@pytest.mark.parametrize("bypass", [True, False])
def test_fla_bypass_640_reaches_the_ssd_anchor(bypass, monkeypatch):
    """chunk_simple_gla's backward goes through the chunk_bwd_dqkwg that fla#640 guards: --fla-bypass-640 must lift
    the guard for the ssd rows as it does for kda / gdn, and say so in the row's detail. A fake fla stands in."""
    import importlib.machinery
    import types

    from arena.bench.kernels_ssd import resolve_ssd

    modules = {}
    for name in ("fla", "fla.ops", "fla.ops.common", "fla.ops.common.chunk_o", "fla.ops.simple_gla"):
        modules[name] = types.ModuleType(name)
        modules[name].__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, modules[name])
    modules["fla.ops.common.chunk_o"].TRITON_ABOVE_3_7_1 = False
    modules["fla.ops.simple_gla"].chunk_simple_gla = lambda q, k, v, g, scale: (q, None)
    args = argparse.Namespace(fla_bypass_640=bypass, no_torch=True, torch_max_t=0, torch_chunk=64)
    call, detail = resolve_ssd("fla", 64, args)
    assert modules["fla.ops.common.chunk_o"].TRITON_ABOVE_3_7_1 is bypass
    assert ("bypassed" in detail) is bypass and detail.startswith("chunk_simple_gla")
