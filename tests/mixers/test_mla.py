"""MLA-specific checks: impls agree, RoPE vs an independent complex-form reference, NoPE is position-free,
the rope dims still matter without rotation, and the latent KV cache has the documented shapes and size.

The reference rotation here is the complex form with the rotate-half pairing the mixer documents:
channel i and channel i + K/2 form the complex number x_i + j x_{i+K/2}, multiplied by exp(j pos theta^(-2i/K)).
Run: PYTHONPATH=. pytest tests/mixers/test_mla.py -q
"""

from __future__ import annotations

import pytest
import torch

from arena.errors import ConfigError
from arena.kernels.attention import rotary
from arena.mixers import build_mixer
from arena.testing import assert_close

D = 32


def complex_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """x: [..., T, K] rotated at positions [T], via complex multiplication (independent of the kernel's form)."""
    K = x.shape[-1]
    z = torch.complex(x[..., : K // 2].double(), x[..., K // 2:].double())
    freqs = torch.tensor([theta ** (-2 * i / K) for i in range(K // 2)], dtype=torch.float64)
    z = z * torch.polar(torch.ones(len(positions), K // 2, dtype=torch.float64), positions.double()[:, None] * freqs)
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)


def reference_mla(m, x: torch.Tensor) -> torch.Tensor:
    """The MLA equations written from the paper, head by head, from the mixer's weights (no prefix cache)."""
    B, T, _ = x.shape
    H, Kn, Kr, V, R = m.H, m.Kn, m.Kr, m.V, m.R

    def rms(t, w):
        return t / t.pow(2).mean(-1, keepdim=True).add(m.cfg.norm_eps).sqrt() * w

    if m.cfg.q_lora_rank is None:
        q = x @ m.q_proj.weight.T
    else:
        q = rms(x @ m.q_a_proj.weight.T, m.q_norm.weight) @ m.q_b_proj.weight.T
    latent = x @ m.kv_a_proj.weight.T
    c_kv, k_rot = rms(latent[..., :R], m.kv_norm.weight), latent[..., R:]  # [B, T, R], [B, T, Kr]
    kv = c_kv @ m.kv_b_proj.weight.T
    pos = torch.arange(T)
    if m.cfg.rope:
        k_rot = complex_rope(k_rot, pos, m.cfg.rope_theta)
    heads = []
    for h in range(H):
        qh = q[..., h * (Kn + Kr):(h + 1) * (Kn + Kr)]
        q_rot = complex_rope(qh[..., Kn:], pos, m.cfg.rope_theta) if m.cfg.rope else qh[..., Kn:]
        kh = torch.cat([kv[..., h * (Kn + V):h * (Kn + V) + Kn], k_rot], dim=-1)
        vh = kv[..., h * (Kn + V) + Kn:(h + 1) * (Kn + V)]
        scores = torch.cat([qh[..., :Kn], q_rot], -1) @ kh.transpose(1, 2) / (Kn + Kr) ** 0.5  # [B, T, T]
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        heads.append(scores.softmax(-1) @ vh)
    return torch.cat(heads, dim=-1) @ m.o_proj.weight.T


def make(impl="torch", **overrides):
    return build_mixer("mla", D, impl=impl, **overrides).double().eval()


VARIANTS = [dict(rope=True), dict(rope=False), dict(rope=True, q_lora_rank=24), dict(rope=False, q_lora_rank=24)]
VARIANT_IDS = ["rope", "nope", "rope-qlora", "nope-qlora"]


@pytest.mark.parametrize("impl", ["torch", "naive"])
@pytest.mark.parametrize("overrides", VARIANTS, ids=VARIANT_IDS)
def test_matches_reference_equations(overrides, impl):
    m = make(impl, **overrides)
    for p in m.parameters():  # non-trivial norm weights, so a missing norm weight would show
        torch.nn.init.normal_(p, mean=1.0 if p.dim() == 1 else 0.0, std=0.3)
    x = torch.randn(2, 19, D, dtype=torch.float64)
    with torch.no_grad():
        assert_close(f"mla-{impl} vs reference", reference_mla(m, x), m(x)[0], 1e-12)


@pytest.mark.parametrize("start", ["prefill", "continue"])
@pytest.mark.parametrize("overrides", VARIANTS, ids=VARIANT_IDS)
def test_torch_and_naive_agree_forward_and_backward(overrides, start):
    """SDPA path == explicit softmax, outputs and every gradient, from no cache or from a 9-token cache."""
    torch_m = build_mixer("mla", D, impl="torch", **overrides)
    naive_m = build_mixer("mla", D, impl="naive", **overrides)
    naive_m.load_state_dict(torch_m.state_dict())
    x = torch.randn(3, 23, D)
    state = None
    if start == "continue":
        with torch.no_grad():
            _, state = torch_m(torch.randn(3, 9, D))
    outs = {}
    for name, m in [("torch", torch_m), ("naive", naive_m)]:
        xi = x.clone().requires_grad_()
        y, new_state = m(xi, state)
        y.pow(2).sum().backward()
        outs[name] = (y, xi.grad, new_state, {n: p.grad for n, p in m.named_parameters()})
    (y_t, dx_t, s_t, g_t), (y_n, dx_n, s_n, g_n) = outs["torch"], outs["naive"]
    assert_close("y", y_n, y_t, 1e-5)
    assert_close("dx", dx_n, dx_t, 1e-5)
    for key in ("c_kv", "k_rope"):
        assert_close(key, s_n[key], s_t[key], 1e-6)
    for name in g_n:
        assert_close(f"d{name}", g_n[name], g_t[name], 1e-5)


@pytest.mark.parametrize("offset", [0, 1000], ids=["pos0", "pos1000"])
def test_rotary_matches_complex_form(offset):
    x = torch.randn(2, 11, 3, 16, dtype=torch.float64)  # [B, T, H, K]
    pos = torch.arange(offset, offset + 11)
    ref = complex_rope(x.transpose(1, 2), pos, 500.0).transpose(1, 2)
    assert_close("rotary", ref, rotary(x, pos, 500.0), 1e-13)


@pytest.mark.parametrize("impl", ["torch", "naive"])
def test_nope_is_position_free_and_rope_is_not(impl):
    """Permuting the tokens before the last leaves the last output unchanged without RoPE, not with it."""
    x = torch.randn(2, 17, D, dtype=torch.float64)
    perm = torch.cat([torch.randperm(16), torch.tensor([16])])
    for rope in (False, True):
        m = make(impl, rope=rope)
        with torch.no_grad():
            last, last_perm = m(x)[0][:, -1], m(x[:, perm])[0][:, -1]
        if rope:
            assert (last - last_perm).abs().max() > 1e-4, "RoPE output should depend on token order"
        else:
            torch.testing.assert_close(last_perm, last, rtol=0, atol=1e-12)


def test_nope_rope_dims_still_contribute():
    """rope=False rotates nothing, but the shared k_rot channels of kv_a_proj still enter the scores."""
    m = make(rope=False)
    x = torch.randn(2, 15, D, dtype=torch.float64)
    with torch.no_grad():
        y, state = m(x)
        raw = (x @ m.kv_a_proj.weight.T)[..., m.R:]
        torch.testing.assert_close(state["k_rope"], raw, rtol=0, atol=1e-12)  # cached unrotated
        m.kv_a_proj.weight[m.R:] = 0.0
        y_zeroed, _ = m(x)
    assert (y - y_zeroed).abs().max() > 1e-4


@pytest.mark.parametrize("rope", [True, False], ids=["rope", "nope"])
def test_kv_cache_is_the_latent_and_grows(rope):
    m = build_mixer("mla", 64, rope=rope).eval()
    assert (m.H, m.Kn, m.Kr, m.V, m.R) == (2, 32, 16, 32, 128)
    x = torch.randn(3, 10, 64)
    with torch.no_grad():
        _, state = m(x)
        assert state["c_kv"].shape == (3, 10, 128) and state["k_rope"].shape == (3, 10, 16)
        assert state["c_kv"].dtype == state["k_rope"].dtype == torch.float32
        assert state["c_kv"][0].numel() + state["k_rope"][0].numel() == m.state_size(10) == 10 * (128 + 16)
        # the cached latent is after the norm (unit RMS, as the norm weight starts at 1)
        torch.testing.assert_close(state["c_kv"].pow(2).mean(-1), torch.ones(3, 10), rtol=0, atol=1e-3)
        raw = (x @ m.kv_a_proj.weight.T)[..., m.R:]
        _, state = m(torch.randn(3, 1, 64), state)
    assert state["c_kv"].shape == (3, 11, 128) and state["k_rope"].shape == (3, 11, 16)
    # position 0 is never rotated; later positions are rotated only with RoPE
    moved = (state["k_rope"][:, 1:10] - raw[:, 1:10]).abs().max()
    assert (state["k_rope"][:, 0] - raw[:, 0]).abs().max() < 1e-5
    assert moved > 1e-3 if rope else moved < 1e-5


def test_bf16_io_keeps_fp32_cache():
    m = build_mixer("mla", D).eval()
    x = torch.randn(2, 12, D)
    with torch.no_grad():
        y32, _ = m(x)
        y16, state = m.to(torch.bfloat16)(x.bfloat16())
    assert y16.dtype == torch.bfloat16 and state["c_kv"].dtype == torch.float32
    assert_close("bf16 vs fp32", y32, y16, 3e-2)


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """y_t = sum_i weight[:, i] * x_{t - (k - 1) + i} over [B, T, D] (zeros before the start); weight [D, k]."""
    k, T = weight.shape[1], x.shape[1]
    padded = torch.cat([x.new_zeros(x.shape[0], k - 1, x.shape[2]), x], dim=1)
    return torch.stack([sum(padded[:, t + i] * weight[:, i] for i in range(k)) for t in range(T)], dim=1)


@pytest.mark.parametrize("rope", [True, False], ids=["rope", "nope"])
def test_input_conv_is_a_causal_conv_before_the_projections(rope):
    """conv_size=4: the layer equals the plain MLA equations applied to the convolved input, and decoding in
    pieces (a prefill, single tokens, from an empty preallocated state and from none) equals the whole sequence."""
    m = make(conv_size=4, rope=rope)
    for p in m.parameters():
        torch.nn.init.normal_(p, mean=1.0 if p.dim() == 1 else 0.0, std=0.3)
    x = torch.randn(2, 19, D, dtype=torch.float64)
    with torch.no_grad():
        want = reference_mla(m, causal_depthwise_conv(x, m.conv.conv.weight[:, 0, :]))
        assert_close("mla conv_size=4 vs reference", want, m(x)[0], 1e-12)
        for state in (None, m.empty_state(2, capacity=8)):
            pieces = []
            for a, b in zip([0, 7, 8, 9, 15], [7, 8, 9, 15, 19]):
                y, state = m(x[:, a:b], state)
                pieces.append(y)
            assert_close("decoded in pieces", want, torch.cat(pieces, 1), 1e-12)
            assert state["conv"].shape == (2, 3, D)
    assert m.state_size(10) == 10 * (m.R + m.Kr) + 3 * D


def test_flops_count():
    m = build_mixer("mla", 64)
    assert m.mixing_flops_per_token(100) == 2 * 2 * 100 * (32 + 16 + 32)


@pytest.mark.parametrize("d_model,overrides,match", [
    (30, dict(num_heads=4), "d_model=30 is not divisible by num_heads=4"),
    (32, dict(qk_rope_head_dim=5), "qk_rope_head_dim=5 must be even"),
    (32, dict(kv_lora_rank=0), "kv_lora_rank=0 must be >= 1"),
    (32, dict(q_lora_rank=0), "q_lora_rank=0 must be >= 1"),
    (32, dict(conv_size=-1), "conv_size=-1 must be >= 0"),
], ids=["indivisible", "odd-rope", "zero-latent", "zero-qlora", "negative-conv"])
def test_bad_config_fails_in_one_line(d_model, overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        build_mixer("mla", d_model, **overrides)
    assert "\n" not in str(err.value)


def test_odd_rope_dim_is_fine_without_rope():
    m = build_mixer("mla", D, rope=False, qk_rope_head_dim=5)
    assert m(torch.randn(1, 4, D))[0].shape == (1, 4, D)


def test_bad_shapes_raise_value_error():
    m = build_mixer("mla", D)
    with pytest.raises(ValueError, match=r"expected x of shape \[B, T, 32\]"):
        m(torch.randn(2, 5, D + 1))
    _, state = m(torch.randn(2, 5, D))
    with pytest.raises(ValueError, match="state must hold c_kv"):
        m(torch.randn(3, 1, D), state)
