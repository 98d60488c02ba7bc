"""One RMSNorm path: `arena.kernels.norm.rms_norm`, and every torch RMSNorm in arena computes exactly what it does.

    python -m pytest -q tests/mixers/test_norms.py

rms_norm itself is checked against the formula (eps inside the square root, fp16/bf16 normalised in fp32 with one
rounding at the end); then each layer's torch path (the model's nn.RMSNorm, KDA's and GDN's gated output norm,
Mamba2's grouped gated norm, MLA's latent norms, the fused gated_rmsnorm's fp32 twin) must equal it bit for bit, and
no other module under arena/ may compute an RMSNorm of its own.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from arena.kernels.norm import rms_norm
from arena.mixers import build_mixer


def test_eps_sits_inside_the_square_root():
    """x = c everywhere: c / sqrt(c^2 + eps), which for c = 1e-3, eps = 1e-5 is 0.3015 (c / (c + eps) would be ~1)."""
    x = torch.full((2, 8), 1e-3, dtype=torch.float64)
    y = rms_norm(x, torch.ones(8, dtype=torch.float64), eps=1e-5)
    assert torch.allclose(y, torch.full_like(x, 1e-3 / (1e-6 + 1e-5) ** 0.5), rtol=1e-12, atol=0)


def test_matches_the_formula_in_fp64():
    x, w = torch.randn(3, 5, 16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    want = x / (x.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt() * w
    assert torch.allclose(rms_norm(x, w, eps=1e-6), want, rtol=1e-13, atol=0)
    assert torch.allclose(rms_norm(x, None, eps=1e-6), want / w, rtol=1e-12, atol=0)


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # torch: no fused kernel for it
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_normalised_in_fp32_and_rounded_once(dtype):
    """The fp32 result, weight (fp32) included, rounded once to the input dtype; half-precision math (or a rounding
    before the weight) differs in some of these 4096 entries."""
    x = (torch.randn(64, 64) * 3).to(dtype)
    w = torch.randn(64)
    xf = x.float()
    want = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * w).to(dtype)
    y = rms_norm(x, w, eps=1e-5)
    assert y.dtype == dtype and torch.equal(y, want)


def test_dtype_argument_casts_input_and_weight_first():
    x, w = torch.randn(4, 16).to(torch.bfloat16), torch.randn(16)
    y = rms_norm(x, w, eps=1e-5, dtype=torch.float64)
    assert y.dtype == torch.float64 and torch.equal(y, rms_norm(x.double(), w.double(), eps=1e-5))


def test_the_models_norms_are_rms_norm():
    norm = nn.RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_()
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.randn(3, 7, 16).to(dtype)
        assert torch.equal(norm(x), rms_norm(x, norm.weight, norm.eps))


@pytest.mark.parametrize("name", ["kda", "gdn"])
def test_gated_output_norm_is_rms_norm_times_the_gate(name):
    mixer = build_mixer(name, 16)
    with torch.no_grad():
        mixer.o_norm.norm.weight.normal_()
    o, gate = torch.randn(2, 5, mixer.H, mixer.V), torch.randn(2, 5, mixer.H, mixer.V)
    act = torch.sigmoid if name == "kda" else F.silu
    want = rms_norm(o, mixer.o_norm.norm.weight, mixer.cfg.norm_eps) * act(gate)
    assert torch.equal(mixer.o_norm(o, gate), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mamba2_grouped_norm_is_rms_norm_per_group(dtype):
    mixer = build_mixer("mamba2", 16, headdim=8, d_state=4, ngroups=2).to(dtype)
    with torch.no_grad():
        mixer.norm_weight.normal_()
    y, z = torch.randn(2, 5, 32, dtype=dtype), torch.randn(2, 5, 32, dtype=dtype)
    gated = (y * F.silu(z)).unflatten(-1, (2, 16))
    want = (rms_norm(gated, None, mixer.cfg.norm_eps) * mixer.norm_weight.view(2, 16)).flatten(-2)
    assert torch.equal(mixer._gated_norm(y, z), want)


def test_mla_latent_norms_are_rms_norm_in_the_compute_dtype():
    mixer = build_mixer("mla", 16, q_lora_rank=8)
    with torch.no_grad():
        mixer.kv_norm.weight.normal_()
    c = torch.randn(2, 5, mixer.R).to(torch.bfloat16)
    got = mixer._norm(c, mixer.kv_norm, torch.float32)
    assert got.dtype == torch.float32
    assert torch.equal(got, rms_norm(c.float(), mixer.kv_norm.weight, mixer.kv_norm.eps))


@pytest.mark.parametrize("norm_before_gate", [True, False])
def test_fused_norms_twin_is_rms_norm(norm_before_gate):
    pytest.importorskip("triton")
    from arena.kernels.fused.gated_norm import gated_rmsnorm_reference

    o, gate, w = torch.randn(3, 4, 2, 16), torch.randn(3, 4, 2, 16), torch.randn(2, 16)
    x = o if norm_before_gate else o * F.silu(gate)
    want = rms_norm(x, None, 1e-5) * w
    want = want * F.silu(gate) if norm_before_gate else want
    got = gated_rmsnorm_reference(o, gate, w, eps=1e-5, activation="swish", norm_before_gate=norm_before_gate)
    assert torch.equal(got, want)


# an RMSNorm written out: rsqrt / sqrt of a mean (of squares), or torch's op called directly
OWN_RMSNORM = re.compile(r"(rsqrt|sqrt)\(.*\.mean\(|\bF\.rms_norm\(|torch\.rms_norm\(|functional\.rms_norm\(")


def test_no_module_computes_an_rmsnorm_of_its_own(repo_root):
    """Outside arena/kernels/norm.py, torch RMSNorms go through rms_norm (or nn.RMSNorm, the same op); the Triton
    kernels (tl.rsqrt of tl.sum / D) are the CUDA path and are not matched. arena/testing.py's error metric is a
    root-mean-square, not a norm layer."""
    allowed = {"arena/kernels/norm.py", "arena/testing.py"}
    found = []
    for path in sorted((repo_root / "arena").rglob("*.py")):
        rel = path.relative_to(repo_root).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if rel not in allowed and OWN_RMSNORM.search(line.split("#")[0]):
                found.append(f"{rel}:{number}: {line.strip()}")
    assert not found, "RMSNorm computed outside arena.kernels.norm.rms_norm:\n" + "\n".join(found)
