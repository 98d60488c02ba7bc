"""Mamba2 mixer checks beyond the contract: torch (chunked) == naive (token loop) on the same weights,
state_size == the elements actually held, config errors, init ranges and the gate-before-norm order; the training
memory guard (recompute: what backward keeps per token) and the one-token form of the short conv.

Run: PYTHONPATH=. pytest tests/mixers/test_mamba2.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from arena.errors import ConfigError
from arena.kernels.fused import use_fused
from arena.mixers import build_mixer
from arena.mixers.common import ShortConv
from arena.testing import assert_close, load_script

D_MODEL = 32
REPO = Path(__file__).resolve().parents[2]
sab = load_script("saved_activation_bytes")


@pytest.mark.parametrize("ngroups,chunk_size", [(1, 64), (1, 16), (2, 16)], ids=["G1-C64", "G1-C16", "G2-C16"])
def test_torch_and_naive_impls_agree(ngroups, chunk_size):
    cfg = dict(d_state=16, headdim=16, ngroups=ngroups, chunk_size=chunk_size)  # 4 heads
    fast = build_mixer("mamba2", D_MODEL, impl="torch", **cfg)
    slow = build_mixer("mamba2", D_MODEL, impl="naive", **cfg)
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 70, D_MODEL, requires_grad=True)
    y_fast, s_fast = fast(x[:, :50])
    y_slow, s_slow = slow(x[:, :50])
    assert_close("y", y_slow, y_fast, 1e-4)
    assert_close("ssm state", s_slow["ssm"], s_fast["ssm"], 1e-4)
    assert_close("conv cache", s_slow["conv"], s_fast["conv"], 1e-6)
    y2_fast, _ = fast(x[:, 50:], s_fast)  # continuing from a state, over a multi-token piece
    y2_slow, _ = slow(x[:, 50:], s_slow)
    assert_close("y continued", y2_slow, y2_fast, 1e-4)

    (y2_fast.pow(2).sum() + y_fast.pow(2).sum()).backward()
    grads_fast = {n: p.grad.clone() for n, p in fast.named_parameters()}
    (y2_slow.pow(2).sum() + y_slow.pow(2).sum()).backward()
    for name, p in slow.named_parameters():
        assert_close(f"d{name}", p.grad, grads_fast[name], 1e-4)


@pytest.mark.parametrize("ngroups", [1, 2], ids=["G1", "G2"])
def test_state_size_matches_the_returned_state(ngroups):
    mixer = build_mixer("mamba2", D_MODEL, d_state=8, headdim=16, ngroups=ngroups)
    batch = 3
    _, state = mixer(torch.randn(batch, 11, D_MODEL))
    held = sum(t.numel() for t in state.values()) // batch
    assert mixer.state_size(11) == held == mixer.state_size(5000)
    assert state["ssm"].shape == (batch, 4, 8, 16)  # [B, H, N, P]
    assert state["ssm"].dtype == torch.float32


def test_gate_is_applied_before_the_norm():
    mixer = build_mixer("mamba2", D_MODEL, headdim=16)
    with torch.no_grad():
        mixer.norm_weight.uniform_(0.5, 1.5)
    y, z = torch.randn(2, 5, 64), torch.randn(2, 5, 64)
    ref = F.rms_norm(y * F.silu(z), (64,), mixer.norm_weight, eps=1e-5)
    assert_close("gated norm", ref, mixer._gated_norm(y, z), 1e-6)


def test_init_follows_mamba2():
    mixer = build_mixer("mamba2", 256, headdim=8)  # 64 heads: enough samples to see the ranges
    A = -torch.exp(mixer.A_log)
    dt = F.softplus(mixer.dt_bias)
    assert ((A <= -1) & (A >= -16)).all()
    assert ((dt >= 1e-3 * 0.999) & (dt <= 1e-1 * 1.001)).all()
    assert torch.equal(mixer.D, torch.ones(64))
    for p in (mixer.A_log, mixer.dt_bias, mixer.D):
        assert getattr(p, "_no_weight_decay", False)


@pytest.mark.parametrize(
    "overrides,key",
    [({"headdim": 48}, "headdim"), ({"ngroups": 3}, "ngroups"), ({"A_init_range": (16, 1)}, "A_init_range")],
    ids=["headdim", "ngroups", "A_init_range"],
)
def test_bad_config_is_a_one_line_config_error(overrides, key):
    with pytest.raises(ConfigError, match=key) as err:
        build_mixer("mamba2", D_MODEL, **overrides)
    assert "\n" not in str(err.value)


def _held_per_token(mixer, d_model: int, T: int) -> float:
    """Bytes per token the training forward leaves alive for backward (batch 2 minus batch 1), fp32."""
    held = {}
    for b in (1, 2):
        held[b] = sab.forward_peak(mixer, torch.randn(b, T, d_model, requires_grad=True))[1]
    return (held[2] - held[1]) / T


@pytest.mark.parametrize("impl,fused", [("torch", "off"), ("triton", "on")], ids=["torch", "triton-fused"])
def test_training_keeps_only_the_projections_activations(impl, fused):
    """Issue 16: Mamba2 ran out of memory in training where KDA, GDN and MLA fit. With recompute (the default),
    backward keeps per token only the layer input (in_proj's), in_proj's output and out_proj's input; the conv, the
    heads-wide B / C, v = dt x, the SSD's chunk intermediates and the norm's run again in backward. Measured at
    4 * (64 + 296 + 128) = 1952 bytes per token here; without recompute it is 5.6x that (torch) / 2.5x (triton)."""
    cfg = dict(d_state=16, headdim=16, chunk_size=16, impl=impl, fused=fused)  # d_inner 128, 8 heads
    probe = torch.zeros(1, 1, 64)
    if fused == "on" and not use_fused("on", probe):
        pytest.skip("Triton cannot run here")
    mixer = build_mixer("mamba2", 64, **cfg)
    d_inner, H = 128, 8
    bound = 4 * (64 + (2 * d_inner + 2 * 16 + H) + d_inner)  # x, zxbcdt, y in fp32
    held = _held_per_token(mixer, 64, 64)
    assert held <= bound, f"{impl}: {held:.0f} bytes per token kept for backward, bound {bound}"
    keep_all = build_mixer("mamba2", 64, recompute=False, **cfg)  # the same measure sees what recompute saves
    assert _held_per_token(keep_all, 64, 64) > 2 * bound


@pytest.mark.parametrize("ngroups", [1, 2], ids=["G1", "G2"])
def test_recompute_gives_the_same_outputs_and_gradients(ngroups):
    """recompute reruns conv, SSD and norm in backward: outputs, states and every gradient bit for bit as without,
    over a prefill, a multi-token continuation from its state and a gradient through the final state."""
    cfg = dict(d_state=16, headdim=16, ngroups=ngroups, chunk_size=16, impl="torch")
    lean = build_mixer("mamba2", D_MODEL, recompute=True, **cfg)
    full = build_mixer("mamba2", D_MODEL, recompute=False, **cfg)
    full.load_state_dict(lean.state_dict())
    x = torch.randn(2, 40, D_MODEL, requires_grad=True)
    results = []
    for mixer in (lean, full):
        y, s = mixer(x[:, :30])
        y2, s2 = mixer(x[:, 30:], s)
        loss = y.pow(2).sum() + y2.pow(2).sum() + s2["ssm"].sum() + s2["conv"].sum()
        grads = torch.autograd.grad(loss, [x, *mixer.parameters()])
        results.append((y, y2, s2["ssm"], s2["conv"], *grads))
    for i, (a, b) in enumerate(zip(*results)):
        assert torch.equal(a, b), f"tensor {i} differs by {(a - b).abs().max().item():.3g}"


@pytest.mark.parametrize("bias,activation", [(True, True), (False, False)], ids=["bias-silu", "plain"])
def test_conv_step_is_forward_for_one_token(bias, activation):
    """ShortConv's one-token form (decoding: the window times the taps) gives the output and next cache of its
    multi-token form over the same inputs, bit for bit."""
    conv = ShortConv(24, 4, bias=bias, activation=activation)
    cache, x = torch.randn(3, 3, 24), torch.randn(3, 1, 24)
    window = torch.cat([cache, x], dim=1)  # the T-token form from a zero cache: its last row sees exactly these
    y_ref, cache_ref = conv(window)
    y, next_cache = conv(x, cache)
    assert torch.equal(y, y_ref[:, -1:]) and torch.equal(next_cache, cache_ref)
