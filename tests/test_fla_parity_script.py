"""scripts/fla_layer_parity.py and its parts (scripts/fla_parity/): its mappings, checks and verdicts without fla,
and (where fla imports) one case per layer end to end on CPU.

    python -m pytest -q tests/test_fla_parity_script.py                       # CI: fla is absent, its tests skip
    PYTHONPATH=/tmp/fla python -m pytest -q tests/test_fla_parity_script.py   # with fla 0.6 (see the script)

Without fla: every mapping uses each parameter of arena's layer exactly once for every case (so a parameter added
to a mixer breaks this test, not the GPU run); `load_mapped` copies exactly and names what is unset, unused or of
another shape, and leaves unset parameters NaN; the reference's constructor arguments follow arena's config; the
row verdicts apply each tolerance and exempt only the documented reference bug; bad arguments and a missing fla
give one line and exit 2. With fla: the smoke cases pass, and a mapping with two same-shaped matrices swapped fails.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from arena.testing import load_script

REPO = Path(__file__).resolve().parents[1]
P = load_script("fla_layer_parity")  # puts scripts/ on sys.path: its parts are the package scripts/fla_parity
from fla_parity import cases, fla_import, naive_ops, runner  # noqa: E402
from fla_parity import mapping as mappings  # noqa: E402

CPU = torch.device("cpu")
HAVE_FLA = importlib.util.find_spec("fla") is not None


def arena_for(case):
    return runner.arena_layer(case, "torch", CPU)


@pytest.mark.parametrize("case", cases.CASES, ids=lambda c: f"{c.layer}-{c.config}")
def test_mapping_uses_every_arena_parameter_once(case):
    arena = arena_for(case)
    sources = [a for a in mappings.mapping_for(case.layer, arena).values() if a != mappings.ZERO]
    assert sorted(sources) == sorted(n for n, _ in arena.named_parameters())


class Ref(nn.Module):
    def __init__(self, rows=3):
        super().__init__()
        self.a = nn.Linear(4, rows, bias=True)  # a.weight, a.bias
        self.c = nn.Parameter(torch.ones(2))


class Arena(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 4))
        self.c2 = nn.Parameter(torch.randn(2))


def test_load_mapped_copies_and_zeroes():
    ref, arena = Ref(), Arena()
    mappings.load_mapped(ref, arena, {"a.weight": "w", "a.bias": mappings.ZERO, "c": "c2"})
    assert torch.equal(ref.a.weight, arena.w) and torch.equal(ref.c, arena.c2)
    assert torch.equal(ref.a.bias, torch.zeros(3))


@pytest.mark.parametrize("mapping, words", [
    ({"a.weight": "w", "c": "c2"}, ["no arena counterpart", "a.bias"]),  # a reference parameter left unset
    ({"a.weight": "w", "a.bias": mappings.ZERO, "c": mappings.ZERO}, ["not used", "c2"]),  # an arena parameter unused
    ({"a.weight": "c2", "a.bias": mappings.ZERO, "c": "w"}, ["(3, 4) != arena c2 (2,)"]),  # shapes differ
    ({"a.weight": "w", "a.bias": mappings.ZERO, "c": "c2", "b": "w"}, ["does not have: b"]),  # a name fla lacks
])
def test_load_mapped_names_what_does_not_fit(mapping, words):
    ref = Ref()
    with pytest.raises(mappings.MappingError) as err:
        mappings.load_mapped(ref, Arena(), mapping)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_unset_reference_parameters_are_left_nan():
    ref = Ref()
    with pytest.raises(mappings.MappingError):
        mappings.load_mapped(ref, Arena(), {"a.weight": "w", "c": "c2"})
    assert torch.isnan(ref.a.bias).all()  # a missed parameter poisons every output instead of keeping its init


def case_named(layer, config):
    return next(c for c in cases.CASES if c.layer == layer and c.config == config)


def test_reference_arguments_follow_arena_config():
    kda = mappings.fla_kwargs("kda", arena_for(case_named("kda", "H2 K32 V64 rank64")))
    assert (kda["num_heads"], kda["head_dim"], kda["expand_v"]) == (2, 32, 2.0)
    neg = mappings.fla_kwargs("gdn", arena_for(case_named("gdn", "H2 K32 V64 neg-eig")))
    assert neg["allow_neg_eigval"] and neg["use_gate"] and neg["output_gate_activation"] == "swish"
    assert mappings.fla_kwargs("kda", arena_for(case_named("kda", "H2 K48 V48 (HK != D)")))["head_dim"] == 48
    m = mappings.fla_kwargs("mamba2", arena_for(case_named("mamba2", "N32 P32 H4 bias, no conv bias")))
    assert (m["num_heads"], m["head_dim"], m["state_size"], m["use_bias"], m["use_conv_bias"]) == (4, 32, 32, True,
                                                                                                    False)
    assert mappings.fla_kwargs("mamba2", arena_for(case_named("mamba2", "N16 P16 H8 G2")))["n_groups"] == 2


def test_differences_name_their_closest_case():
    names = {(c.layer, c.config) for c in cases.CASES}
    for d in cases.DIFFERENCES:
        assert d.kind in ("unmappable", "differs", "note")
        assert d.kind == "note" or (d.layer, d.closest) in names, d.feature


def result(y, dx=None, grads=None):
    return runner.Result(torch.tensor(y), None if dx is None else torch.tensor(dx), grads)


@pytest.mark.parametrize("got, passed", [
    (result([1.0, 2.0], [1.0, 1.0], {"w": torch.tensor([1.0])}), True),
    (result([1.0, 2.1], [1.0, 1.0], {"w": torch.tensor([1.0])}), False),  # output over
    (result([1.0, 2.0], [1.0, 1.1], {"w": torch.tensor([1.0])}), False),  # dx over
    (result([1.0, 2.0], [1.0, 1.0], {"w": torch.tensor([1.1])}), False),  # a parameter gradient over
    (result([1.0, 2.0]), True),  # no gradients to compare: the output decides
])
def test_compare_applies_each_tolerance(got, passed):
    ref = result([1.0, 2.0], [1.0, 1.0], {"W": torch.tensor([1.0])})
    row = runner.compare(runner.Row("x", "fla", "c", "fp32", "torch"), ref, got, {"W": "w", "B": mappings.ZERO},
                         cases.TOL_FP32)
    assert row.passed is passed


def test_only_fla_grouped_mamba2_fallback_is_a_known_reference_bug():
    g1, g2 = case_named("mamba2", "N16 P16 H8 G1"), case_named("mamba2", "N16 P16 H8 G2")
    assert runner.known_reference_bug(g2, "torch_forward", arena_for(g2))
    assert not runner.known_reference_bug(g1, "torch_forward", arena_for(g1))
    assert not runner.known_reference_bug(g2, "mamba_ssm split_conv1d_scan", arena_for(g2))
    row = runner.Row("mamba2", "fla", "c", "fp32", "torch", known="why")
    assert runner.verdict(row).startswith("no: reference bug")
    assert runner.verdict(runner.Row("kda", "", "", "", "")) == "**NO**"


@pytest.mark.parametrize("argv, key", [
    (["--layers", "rwkv"], "--layers"), (["--arena-impls", "fast"], "--arena-impls"),
    (["--cpu-smoke", "--dtypes", "bf16"], "--dtypes"), (["--batch", "0"], "--batch"),
])
def test_bad_arguments_give_one_line_and_exit_2(argv, key, capsys):
    assert P.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and key in err


@pytest.mark.skipif(HAVE_FLA, reason="fla imports here")
def test_missing_fla_gives_one_line_and_exit_2():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "fla_layer_parity.py"), "--cpu-smoke"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().count("\n") == 0 and "cannot import fla" in run.stderr


# ---- with fla (skipped in CI) --------------------------------------------------------------------------------------


@pytest.fixture
def fla_mods(monkeypatch):
    pytest.importorskip("fla")
    from triton.runtime.autotuner import Autotuner

    monkeypatch.setattr(Autotuner, "prune_configs", Autotuner.prune_configs)  # restored after the test
    mods = fla_import.import_fla()
    naive_ops.interpreter_first_config()
    return mods


def smoke_args(layers):
    return SimpleNamespace(arena_impls=["torch"], dtypes=["fp32"], seed=0, seq_len=20, batch=1, cpu_smoke=True,
                           bf16="autocast", layers=layers)


@pytest.mark.parametrize("layer", cases.LAYERS)
def test_smoke_case_matches_fla(fla_mods, layer):
    case = next(c for c in cases.CASES if c.layer == layer and c.smoke)
    rows = runner.run_case(case, "fla", smoke_args([layer]), fla_mods, CPU)
    assert rows and all(r.passed for r in rows), runner.table(rows)


def test_swapped_same_shape_weights_fail(fla_mods, monkeypatch):
    swapped = {**mappings.kda_mapping(), "f_proj.0.weight": "g_a.weight", "g_proj.0.weight": "f_a.weight"}
    monkeypatch.setattr(mappings, "kda_mapping", lambda: swapped)
    rows = runner.run_case(case_named("kda", "H2 K32 V32"), "fla", smoke_args(["kda"]), fla_mods, CPU)
    assert rows and not any(r.passed for r in rows)
