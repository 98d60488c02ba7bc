"""The fused mixer layers (Triton conv / norm / gate ops, Mamba2's Triton SSD) equal the plain PyTorch layers.

    python -m pytest -q tests/mixers/test_fused_layers.py

Each case builds a layer with `fused="on"` (the Triton ops, run here by Triton's CPU interpreter) and a twin with
`fused="off"` carrying the same weights, and compares outputs, states and every gradient in fp32. The op-level
checks (each op against its fp32 twin, fp16 too) are in tests/kernels/test_fused_*.py; this file checks the
wiring: which tensor goes to which op, the head split of the L2 norm, the gate shapes and the conv caches.
On a GPU (TRITON_INTERPRET=0) the same cases run on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from arena.kernels.triton_delta import interpreting
from arena.mixers import build_mixer
from arena.testing import assert_close

pytestmark = pytest.mark.skipif(not interpreting() and not torch.cuda.is_available(),
                                reason="needs the Triton interpreter (tests/conftest.py sets it) or CUDA")
DEVICE = "cpu" if interpreting() else "cuda"
D_MODEL = 32
# fp32 on both sides; on a GPU both layers run the delta-rule kernels, whose fp32 dots are tf32 (~3e-4), and
# the pieces of a continued sequence fall into other chunks than one pass does
TOL = 2e-4 if DEVICE == "cpu" else 1e-3
GRAD_TOL = 5e-4 if DEVICE == "cpu" else 3e-3

CASES = {
    "kda": dict(num_heads=2),
    "gdn": dict(num_heads=2),
    "kda-gate_rank": dict(num_heads=4, gate_rank=5, conv_size=2),
    "mamba2": dict(headdim=16, d_state=8, chunk_size=16),
    "mamba2-groups": dict(headdim=8, d_state=8, ngroups=2, chunk_size=16),  # the gated norm per group
}


def pair(name: str, **cfg):
    """(fused layer, plain layer) with the same weights; mamba2's fused one also takes the Triton SSD."""
    mixer = name.split("-")[0]
    extra = {"impl": "triton"} if mixer == "mamba2" else {}
    fused = build_mixer(mixer, D_MODEL, fused="on", **extra, **cfg).to(DEVICE)
    plain = build_mixer(mixer, D_MODEL, fused="off", **({"impl": "torch"} if mixer == "mamba2" else {}), **cfg)
    plain = plain.to(DEVICE)
    with torch.no_grad():  # random, not init, values for every parameter, so a wrongly routed one shows
        for p in fused.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.ndim == 1 else 0.0))
    plain.load_state_dict(fused.state_dict())
    return fused, plain


@pytest.mark.parametrize("T", [1, 7, 70])
@pytest.mark.parametrize("name", list(CASES))
def test_fused_layer_equals_plain_layer(name, T, monkeypatch):
    monkeypatch.setenv("ARENA_TRITON_POISON", "1")
    fused, plain = pair(name, **CASES[name])
    x = torch.randn(2, T, D_MODEL, device=DEVICE)
    x_f, x_p = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_f, s_f = fused(x_f)
    y_p, s_p = plain(x_p)
    assert_close(f"{name} y", y_p, y_f, TOL)
    assert s_f.keys() == s_p.keys()
    for key in s_p:
        assert_close(f"{name} state[{key}]", s_p[key], s_f[key], TOL)
    dy = torch.randn_like(y_p)
    (y_f * dy).sum().backward()
    (y_p * dy).sum().backward()
    assert_close(f"{name} dx", x_p.grad, x_f.grad, TOL)
    # At T=1 with no initial state the output does not depend on the decay (it multiplies the zero state), so the
    # decay parameters' gradients are zero in exact arithmetic and rounding noise in practice (~1e-7 of the layer's
    # largest gradient in fp32): a floor at 1e-5 of that scale covers them; any gradient above it meets GRAD_TOL.
    floor = 1e-5 * max(p.grad.abs().max().item() for p in plain.parameters()) if T == 1 else 0.0
    for (pname, p_p), p_f in zip(plain.named_parameters(), fused.parameters()):
        assert_close(f"{name} d{pname}", p_p.grad, p_f.grad, GRAD_TOL, atol=floor)


@pytest.mark.parametrize("name", list(CASES))
def test_fused_layer_continues_from_its_state(name):
    """Prefill 9 tokens, then 1 and then 6 more from the returned state (conv caches, recurrent state): the
    fused layer's pieces equal one plain pass over all 16 tokens."""
    fused, plain = pair(name, **CASES[name])
    x = torch.randn(2, 16, D_MODEL, device=DEVICE)
    with torch.no_grad():
        y_ref, _ = plain(x)
        y1, s = fused(x[:, :9])
        y2, s = fused(x[:, 9:10], s)
        y3, _ = fused(x[:, 10:], s)
    assert_close(f"{name} continued", y_ref, torch.cat([y1, y2, y3], dim=1), TOL)


def test_fused_off_and_auto_on_cpu_take_the_plain_layer(monkeypatch):
    """auto means CUDA only: the CPU default job never pays the interpreter."""
    import arena.kernels.fused.short_conv as short_conv

    def boom(*args, **kwargs):
        raise AssertionError("the fused conv ran")

    monkeypatch.setattr(short_conv, "causal_conv1d", boom)
    for fused in ("auto", "off"):
        build_mixer("kda", D_MODEL, fused=fused)(torch.randn(1, 5, D_MODEL))
    with pytest.raises(AssertionError, match="fused conv ran"):  # and "on" does take it (the interpreter here)
        build_mixer("kda", D_MODEL, fused="on").to(DEVICE)(torch.randn(1, 5, D_MODEL, device=DEVICE))


@pytest.mark.parametrize("mixer", ["kda", "gdn", "mamba2"])
def test_bad_fused_mode_is_one_line_config_error(mixer):
    from arena.errors import ConfigError

    with pytest.raises(ConfigError, match="fused"):
        build_mixer(mixer, D_MODEL, fused="sometimes")


def test_mamba2_auto_on_cpu_takes_the_torch_ssd(monkeypatch):
    """impl=auto means the Triton SSD on CUDA only; impl=triton takes it wherever Triton runs (the interpreter)."""
    import arena.kernels.ssd.triton_ssd as triton_ssd

    def boom(*args, **kwargs):
        raise AssertionError("the Triton SSD ran")

    monkeypatch.setattr(triton_ssd, "chunk_ssd_triton", boom)
    cfg = CASES["mamba2"]
    for impl in ("auto", "torch"):
        build_mixer("mamba2", D_MODEL, impl=impl, **cfg)(torch.randn(1, 5, D_MODEL))
    with pytest.raises(AssertionError, match="Triton SSD ran"):
        build_mixer("mamba2", D_MODEL, impl="triton", **cfg).to(DEVICE)(torch.randn(1, 5, D_MODEL, device=DEVICE))


def test_mamba2_decodes_with_the_fused_recurrent_kernel(monkeypatch):
    """T = 1 after a state under no_grad: impl=triton takes the fused decode kernel (the interpreter here, CUDA on a
    GPU) and matches the torch step; with gradients on, or impl=torch, the torch step runs."""
    import arena.kernels.ssd.recurrent as recurrent

    calls = []
    kernel = recurrent.fused_recurrent_ssd_decode_step
    monkeypatch.setattr(recurrent, "fused_recurrent_ssd_decode_step",
                        lambda *a, **k: calls.append(1) or kernel(*a, **k))
    fused, plain = pair("mamba2-groups", **CASES["mamba2-groups"])
    x = torch.randn(3, 6, D_MODEL, device=DEVICE)
    with torch.no_grad():
        _, s = plain(x[:, :5])
        y_ref, s_ref = plain(x[:, 5:], s)
        y, s_new = fused(x[:, 5:], s)
    assert calls == [1]
    assert_close("decoded y", y_ref, y, TOL)
    assert_close("decoded ssm state", s_ref["ssm"], s_new["ssm"], TOL)
    fused(x[:, 5:], s)  # gradients on: the kernel has no backward, so the torch step runs
    assert calls == [1]
