"""Mamba2 mixer checks beyond the contract: torch (chunked) == naive (token loop) on the same weights,
state_size == the elements actually held, config errors, init ranges and the gate-before-norm order.

Run: PYTHONPATH=. pytest tests/mixers/test_mamba2.py -q
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from arena.errors import ConfigError
from arena.mixers import build_mixer
from arena.testing import assert_close

D_MODEL = 32


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
