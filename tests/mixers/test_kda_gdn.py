"""Checks specific to the delta-rule mixers `kda` and `gdn` (the shared contract is in test_contract.py).

Run: PYTHONPATH=. pytest tests/mixers/test_kda_gdn.py -q
"""

from __future__ import annotations

import pytest
import torch

from arena.errors import ConfigError
from arena.mixers import build_mixer
from arena.testing import assert_close

D_MODEL = 32
NAMES = ["kda", "gdn"]


def twin(name: str, mixer, **overrides):
    """A mixer built with `overrides` that carries the same weights as `mixer`."""
    other = build_mixer(name, mixer.d_model, **overrides).to(next(mixer.parameters()).dtype)
    other.load_state_dict(mixer.state_dict())
    return other


# T=63 and T=130 end inside a chunk (the chunked kernel pads); T=64 ends on a chunk boundary.
IMPL_CASES = [(name, T, neg) for name in NAMES for T, neg in [(63, False), (64, False), (130, True)]]


@pytest.mark.parametrize(
    "name,T,neg", IMPL_CASES, ids=[f"{n}-T{T}-{'neg' if neg else 'pos'}" for n, T, neg in IMPL_CASES]
)
def test_torch_and_naive_impls_agree(name, T, neg):
    torch_mixer = build_mixer(name, D_MODEL, impl="torch", allow_neg_eigval=neg).double()
    naive_mixer = twin(name, torch_mixer, impl="naive", allow_neg_eigval=neg)
    x = torch.randn(2, T, D_MODEL, dtype=torch.float64)
    x_ref = x.clone().requires_grad_(True)
    x_out = x.clone().requires_grad_(True)
    y_ref, s_ref = naive_mixer(x_ref)
    y_out, s_out = torch_mixer(x_out)
    assert_close(f"{name} y", y_ref, y_out, 1e-9)
    for key in s_ref:
        assert_close(f"{name} state[{key}]", s_ref[key], s_out[key], 1e-9)
    y_ref.pow(2).sum().backward()
    y_out.pow(2).sum().backward()
    assert_close(f"{name} dx", x_ref.grad, x_out.grad, 1e-9)
    for (pname, p_ref), p_out in zip(naive_mixer.named_parameters(), torch_mixer.parameters()):
        assert_close(f"{name} d{pname}", p_ref.grad, p_out.grad, 1e-9)


@pytest.mark.parametrize("name,per_channel", [("kda", True), ("gdn", False)], ids=NAMES)
def test_decay_is_nonpositive_with_the_gate_shape(name, per_channel):
    mixer = build_mixer(name, D_MODEL, num_heads=4)
    B, T, H, K = 3, 11, 4, D_MODEL // 4
    # Large inputs push softplus into both regimes: ~0 (no decay) and linear (strong decay).
    x = torch.randn(B, T, D_MODEL) * torch.logspace(-2, 2, T)[:, None]
    g = mixer.decay(x)
    assert g.shape == ((B, T, H, K) if per_channel else (B, T, H))
    assert g.dtype == torch.float32
    assert (g <= 0).all(), f"decay must be <= 0, max is {g.max().item()}"
    assert (g < -1e-3).any(), "the gate should decay somewhere at init (A_log >= 0, softplus > 0)"


@pytest.mark.parametrize("name", NAMES)
def test_allow_neg_eigval_reaches_every_kernel(name):
    mixer = build_mixer(name, D_MODEL).double()
    neg = twin(name, mixer, allow_neg_eigval=True)
    x = torch.randn(2, 24, D_MODEL, dtype=torch.float64)
    y, _ = mixer(x)
    y_neg, _ = neg(x)
    assert (y - y_neg).abs().max() > 1e-3, "allow_neg_eigval=True should double beta in the kernel"
    _, state = neg(x[:, :-1])
    y_last, _ = neg(x[:, -1:], state)  # the decode step must get the flag too
    assert_close(f"{name} neg decode", y_neg[:, -1:], y_last, 1e-9)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("T", [1, 5, 70], ids=lambda T: f"T{T}")
def test_state_size_counts_the_returned_state(name, T):
    mixer = build_mixer(name, D_MODEL, num_heads=4, conv_size=3)
    B = 2
    with torch.no_grad():
        _, state = mixer(torch.randn(B, T, D_MODEL))
    held = sum(t.numel() for t in state.values()) // B
    assert held == mixer.state_size(T)
    assert state["recurrent"].shape == (B, 4, mixer.K, mixer.V)
    assert state["recurrent"].dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_bf16_input_keeps_an_fp32_state(name):
    mixer = build_mixer(name, D_MODEL).to(torch.bfloat16)
    with torch.no_grad():
        y, state = mixer(torch.randn(2, 9, D_MODEL, dtype=torch.bfloat16))
        y1, state = mixer(torch.randn(2, 1, D_MODEL, dtype=torch.bfloat16), state)
    assert y.dtype == y1.dtype == torch.bfloat16
    assert state["recurrent"].dtype == torch.float32
    assert torch.isfinite(y).all() and torch.isfinite(y1).all()


BAD_CONFIGS = [
    ("kda", dict(num_heads=3), "num_heads=3"),
    ("gdn", dict(num_heads=3), "num_heads=3"),
    ("kda", dict(expand_v=0.3), "expand_v=0.3"),
    ("gdn", dict(expand_v=1.5, head_dim=5), "expand_v=1.5"),
    ("kda", dict(gate_rank=0), "gate_rank=0"),
    ("gdn", dict(conv_size=0), "conv_size=0"),
]


@pytest.mark.parametrize(
    "name,overrides,match", BAD_CONFIGS, ids=[f"{n}-{next(iter(o))}" for n, o, _ in BAD_CONFIGS]
)
def test_bad_config_fails_in_one_line(name, overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        build_mixer(name, D_MODEL, **overrides)
    assert "\n" not in str(err.value)


def test_kda_gate_rank_sets_both_bottlenecks():
    mixer = build_mixer("kda", D_MODEL, gate_rank=3)
    assert mixer.f_a.weight.shape == (3, D_MODEL) and mixer.g_a.weight.shape == (3, D_MODEL)
    assert build_mixer("kda", D_MODEL).f_a.out_features == D_MODEL // 2  # None = head_dim


@pytest.mark.parametrize("name", NAMES)
def test_decay_params_skip_weight_decay(name):
    mixer = build_mixer(name, D_MODEL)
    flagged = {n for n, p in mixer.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert flagged == {"A_log", "dt_bias"}


STATE_DICT_KEYS = {
    "kda": ["A_log", "dt_bias", "qkv.q_proj.weight", "qkv.k_proj.weight", "qkv.v_proj.weight", "qkv.q_conv.conv.weight",
            "qkv.k_conv.conv.weight", "qkv.v_conv.conv.weight", "f_a.weight", "f_b.weight", "b_proj.weight",
            "g_a.weight", "g_b.weight", "o_norm.norm.weight", "o_proj.weight"],
    "gdn": ["A_log", "dt_bias", "qkv.q_proj.weight", "qkv.k_proj.weight", "qkv.v_proj.weight", "qkv.q_conv.conv.weight",
            "qkv.k_conv.conv.weight", "qkv.v_conv.conv.weight", "a_proj.weight", "b_proj.weight", "g_proj.weight",
            "o_norm.norm.weight", "o_proj.weight"],
}


@pytest.mark.parametrize("name", NAMES)
def test_parameter_names_are_stable(name):
    """Saved checkpoints load by these names (and tests read parameters by them): a rename breaks both."""
    assert list(build_mixer(name, D_MODEL).state_dict()) == STATE_DICT_KEYS[name]
