"""`python -m arena.bench train` on the CPU: the CSV and plot of a tiny run, one-line errors, the kernel-input recipe.

    python -m pytest -q tests/bench/test_bench_train.py

The kernel recipe (`kernel_specs`) is checked against the real call: each mixer's forward runs with its sequence
kernel replaced by a recorder (the mixer's own kernel table or module name, which is what the bench calls too),
in fp32 and under bf16 autocast, with head dims chosen so that no two of H, K, V coincide.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import arena.mixers.mamba2 as mamba2_module
import arena.mixers.mla as mla_module
from arena.bench import train_config, train_kernels, train_steps
from arena.bench.__main__ import main
from arena.mixers import build_mixer
from arena.mixers.gdn import GatedDeltaNet
from arena.mixers.kda import KDA

REPO = Path(__file__).resolve().parents[2]
TINY = ["seq_lens=[16,32]", "batch_size=2", "steps=2", "warmup=1", "model.d_model=32", "train.device=cpu"]
POSITIVE = ("step_ms", "step_nogen_ms", "gen_ms", "tokens_per_s", "peak_memory_bytes", "mixer_fwdbwd_ms",
            "kernel_fwdbwd_ms")


def _read_only_csv(out: Path) -> list[dict]:
    files = sorted(out.iterdir())
    csvs = [p for p in files if p.suffix == ".csv"]
    assert len(csvs) == 1 and not [p for p in files if p.name.startswith(".")], files  # no temporary left over
    with open(csvs[0]) as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------------------------------------- CLI

def test_cli_writes_one_sane_row_per_mixer_and_length(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["train", "mixers=[kda,mla]", "loop=plain", f"out={out}", *TINY]) == 0
    rows = _read_only_csv(out)
    assert sorted((r["mixer"], int(r["T"])) for r in rows) == [("kda", 16), ("kda", 32), ("mla", 16), ("mla", 32)]
    for r in rows:
        assert r["note"] == "", r["note"]
        values = {key: float(r[key]) for key in POSITIVE}
        assert all(math.isfinite(v) and v > 0 for v in values.values()), values
        B, T = int(r["B"]), int(r["T"])
        assert B == 2 and int(r["d_model"]) == 32 and r["loop"] == "plain"
        assert values["tokens_per_s"] == pytest.approx(B * T / (values["step_ms"] * 1e-3), rel=1e-6)
        assert r["memory_kind"] == "cpu_process_max_rss"
        assert r["device"].startswith("cpu") and r["torch"] == torch.__version__ and r["triton"]
        assert r["kernel_ops"] == ("chunk_kda x2" if r["mixer"] == "kda" else "sdpa_attention x2")
    png = next(out.glob("train_cpu_*.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.with_suffix(".csv").exists()
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith("| mla | 32 | 2 |")  # the table comes last


def test_cli_hybrid_row_sums_its_layers(tmp_path):
    out = tmp_path / "bench"
    assert main(["train", "mixers=[hybrid_3to1]", "loop=plain", f"out={out}", *TINY[:4], "train.device=cpu"]) == 0
    rows = _read_only_csv(out)
    assert [r["layers"] for r in rows] == ["kda/kda/kda/mla_nope"] * 2
    assert {r["kernel_ops"] for r in rows} == {"chunk_kda x3 + sdpa_attention x1"}


@pytest.mark.skipif(not train_steps.has_trainer(), reason="this arena.train has no Trainer / batch_stream yet")
def test_cli_trainer_loop_is_the_default_when_present(tmp_path):
    out = tmp_path / "bench"
    assert main(["train", "mixers=[gdn]", f"out={out}", *TINY]) == 0
    rows = _read_only_csv(out)
    assert [r["loop"] for r in rows] == ["trainer", "trainer"]
    assert all(float(r["step_ms"]) > 0 and float(r["step_nogen_ms"]) > 0 for r in rows)


@pytest.mark.parametrize("bad, says", [
    ("foo=1", "unknown key 'foo'"),
    ("mixers=[kda,zzz]", "'zzz' is not valid"),
    ("train.lrr=1", "train.lrr is not a key"),
    ("steps=0", "steps: 0 must be a positive integer"),
    ("loop=fast", "loop='fast' is not valid"),
    ("mixer.num_heads=3", "not divisible by num_heads=3"),  # found by building the run, before any timing
    ("train.cuda_graphs=on", "train.cuda_graphs=on needs a CUDA device"),
])
def test_bad_input_is_one_line_and_exit_2_and_writes_nothing(tmp_path, capsys, bad, says):
    out = tmp_path / "bench"
    assert main(["train", "mixers=[kda]", f"out={out}", "train.device=cpu", bad]) == 2
    err = capsys.readouterr()
    assert err.out == "" and len(err.err.strip().splitlines()) == 1 and says in err.err, err.err
    assert not out.exists()


def test_module_runs_standalone_and_rejects_unknown_key(tmp_path):
    # the lead copies this file into an old checkout without the SUBCOMMANDS entry: `python -m arena.bench.train`
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "arena.bench.train", "bogus=1", f"out={out}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "unknown key 'bogus'" in proc.stderr
    assert not out.exists()


def test_bench_files_import_only_each_other_from_arena_bench():
    # scripts/gpu_train_speed.sh copies arena/bench/train*.py into an old checkout: they may not need another file
    # of this arena/bench (train.py's `__main__` block takes OneLineParser from the old one, guarded there)
    import ast

    files = sorted((REPO / "arena" / "bench").glob("train*.py"))
    assert {p.name for p in files} >= {"train.py", "train_config.py", "train_steps.py", "train_kernels.py"}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name.startswith("arena.bench"):
                    assert name.startswith("arena.bench.train") or name == "arena.bench.__main__", (path.name, name)


def test_parse_items_splits_bench_keys_from_run_overrides():
    bench_keys, passthrough = train_config.parse_items(
        ["mixers=kda", "seq_lens=[256,1024]", "train.compile=true", "+mixer.x=1", "task=stack_kimi"])
    assert bench_keys == {"mixers": ["kda"], "seq_lens": [256, 1024], "task": "stack_kimi"}
    assert passthrough == ["train.compile=true", "+mixer.x=1"]
    s = train_config.settings_from(["train.device=cpu"], cuda_available=True)  # the runs go to the CPU: small defaults
    assert (s.cuda, s.batch_size, s.seq_lens, s.steps) == (False, 4, [64], 10)
    assert train_config.settings_from([], cuda_available=True).seq_lens == [256, 1024, 2048]


# ---------------------------------------------------------------------------------------------- kernel inputs

MIXERS = {  # head dims chosen so that no two of H, K, V (N, P) coincide
    "kda": dict(name="kda", d_model=48, num_heads=3, expand_v=2.0),  # H 3, K 16, V 32
    "gdn": dict(name="gdn", d_model=48, num_heads=3, expand_v=1.5),  # H 3, K 16, V 24
    "mamba2": dict(name="mamba2", d_model=48, headdim=32, d_state=8, chunk_size=8),  # H 3, N 8, P 32
    "mla": dict(name="mla", d_model=48, num_heads=3, v_head_dim=24),  # H 3, Kn 16 + Kr 8, V 24
    "mla_nope": dict(name="mla", d_model=48, num_heads=3, v_head_dim=20, rope=False),
}


def _capture(monkeypatch, mixer) -> list[tuple]:
    """Replace the kernel `mixer` calls by a recorder of (shapes and dtypes of the tensors, other args)."""
    calls = []

    def recorder(real):
        def fn(*args, **kwargs):
            tensors = [(tuple(a.shape), a.dtype) for a in args if torch.is_tensor(a)]
            scalars = [a for a in args if not torch.is_tensor(a)]
            calls.append((tensors, scalars, kwargs))
            return real(*args, **kwargs)
        return fn

    if isinstance(mixer, (KDA, GatedDeltaNet)):
        table = type(mixer).KERNELS
        monkeypatch.setitem(table, mixer.cfg.impl, recorder(table[mixer.cfg.impl]))
    elif isinstance(mixer, mla_module.MLA):
        monkeypatch.setitem(mla_module.ATTENTION, mixer.cfg.impl, recorder(mla_module.ATTENTION[mixer.cfg.impl]))
    else:
        monkeypatch.setattr(mamba2_module, "chunk_ssd", recorder(mamba2_module.chunk_ssd))
    return calls


@pytest.mark.parametrize("amp", [None, torch.bfloat16], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("name", list(MIXERS))
def test_kernel_specs_match_the_call_the_forward_makes(monkeypatch, name, amp):
    spec_args = dict(MIXERS[name])
    mixer = build_mixer(spec_args.pop("name"), spec_args.pop("d_model"), **spec_args)
    B, T = 2, 12
    calls = _capture(monkeypatch, mixer)
    x = torch.randn(B, T, mixer.d_model)
    with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
        mixer(x)
    (spec,) = train_kernels.kernel_specs(mixer, B, T, amp, x.dtype)
    tensors, scalars, kwargs = calls[0]
    assert tensors == list(spec.tensors.values())
    assert scalars == list(spec.args) and kwargs == spec.kwargs
    if name.startswith("mla"):
        assert spec.args == (pytest.approx(mixer.scale),)
    # the bench calls the very kernel the mixer calls (through the same table), with inputs of that recipe
    inputs = train_kernels.make_kernel_inputs(spec, torch.device("cpu"))
    with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
        o = spec.call(inputs)
    assert len(calls) == 2 and calls[1][0] == tensors
    assert o.shape[:3] == (B, T, spec.tensors["v"][0][2])


def test_make_kernel_inputs_follow_the_recipe():
    mixer = build_mixer("kda", 32, num_heads=2)
    (spec,) = train_kernels.kernel_specs(mixer, 2, 8)
    x = train_kernels.make_kernel_inputs(spec, torch.device("cpu"), seed=3)
    assert all(t.is_leaf and t.requires_grad for t in x.values())
    for name in ("q", "k"):
        assert torch.allclose(x[name].norm(dim=-1), torch.ones(2, 8, 2), atol=1e-5)
    assert x["g"].dtype == torch.float32 and (x["g"] <= 0).all()
    assert ((x["beta"] > 0) & (x["beta"] < 1)).all()
    assert not torch.equal(x["q"], x["k"])
