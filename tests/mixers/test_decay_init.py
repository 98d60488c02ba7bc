"""The decay parameters' init schemes (`init=fla|mamba|zero_dt`) of KDA, GDN and Mamba2, and KDA's bounded gate.

    python -m pytest -q tests/mixers/test_decay_init.py

Each scheme must give A_log and dt_bias the statistics it promises (arena/mixers/common.py DECAY_INITS and each
mixer's docstring): A_log = log U(range) per head, dt_bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max],
or dt_bias = 0. KDA's `gate=bounded` is checked against fla's formula written out element by element.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from arena.errors import ConfigError
from arena.kernels.triton_delta import interpreting
from arena.mixers import build_mixer
from arena.testing import assert_close

LOG16 = math.log(16.0)
# many heads and channels, so a range's ends are approached: (H, dt channels) = (16, 128) for KDA, (128, 128) for GDN
CASES = {
    "kda": dict(num_heads=16, head_dim=8),
    "gdn": dict(num_heads=128, head_dim=1),
    "mamba2": dict(expand=2, headdim=2, d_state=4),  # d_model 32: 32 heads
}


def build(name: str, **overrides):
    return build_mixer(name, 32, **CASES[name], **overrides)


def assert_mamba_dt(dt_bias: torch.Tensor, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
    """softplus(dt_bias) = dt in [dt_min, dt_max], spread log-uniformly (both decades of the default range used)."""
    dt = F.softplus(dt_bias.double())
    assert dt.min() >= dt_min * (1 - 1e-5) and dt.max() <= dt_max * (1 + 1e-5), (dt.min().item(), dt.max().item())
    log_span = math.log(dt_max / dt_min)
    spread = (dt.log().max() - dt.log().min()) / log_span
    assert spread > 0.7, f"dt covers {spread:.2f} of its log range: not log-uniform"


def assert_log_uniform_rates(A_log: torch.Tensor, low: float, high: float) -> None:
    A = A_log.double().exp()
    assert A.min() >= max(low, 1e-4) * (1 - 1e-6) and A.max() <= high * (1 + 1e-6), (A.min().item(), A.max().item())
    assert A.max() - A.min() > 0.6 * (high - low), "A should spread over its range"


@pytest.mark.parametrize("name", ["kda", "gdn", "mamba2"])
def test_mamba_init_is_mambas_dt_and_rates_in_1_16(name):
    mixer = build(name, init="mamba")
    assert_log_uniform_rates(mixer.A_log, 1.0, 16.0)
    assert_mamba_dt(mixer.dt_bias)


def test_fla_init_of_kda_is_the_reference_layers():
    """fla 0.6.0's KimiDeltaAttention: A_log = log U(1, 16) [H], dt_bias = Mamba's dt init [H * K]."""
    mixer = build("kda", init="fla")
    assert mixer.A_log.shape == (16,) and mixer.dt_bias.shape == (16 * 8,)
    assert_log_uniform_rates(mixer.A_log, 1.0, 16.0)
    assert_mamba_dt(mixer.dt_bias)


def test_fla_init_of_gdn_draws_rates_from_0_to_16():
    """fla's GatedDeltaNet: A = U(0, 16), so unlike `mamba` some heads start with decay rates below 1."""
    fla, mamba = build("gdn", init="fla"), build("gdn", init="mamba")
    assert_log_uniform_rates(fla.A_log, 0.0, 16.0)
    assert fla.A_log.exp().min() < 1.0 <= mamba.A_log.exp().min()
    assert_mamba_dt(fla.dt_bias)


def test_fla_init_with_kdas_bounded_gate_starts_at_A_log_zero():
    """fla's safe gate: A_log = 0 (the sigmoid's slope exp(A_log) = 1), dt_bias still Mamba's dt init."""
    mixer = build("kda", init="fla", gate="bounded")
    assert torch.equal(mixer.A_log.detach(), torch.zeros(16))
    assert_mamba_dt(mixer.dt_bias)
    assert_log_uniform_rates(build("kda", init="mamba", gate="bounded").A_log, 1.0, 16.0)


@pytest.mark.parametrize("name", ["kda", "gdn", "mamba2"])
def test_zero_dt_init_zeroes_dt_bias_and_keeps_the_rates(name):
    mixer = build(name, init="zero_dt")
    assert torch.equal(mixer.dt_bias.detach(), torch.zeros_like(mixer.dt_bias))
    assert_log_uniform_rates(mixer.A_log, 0.0 if name == "gdn" else 1.0, 16.0)


def test_mamba2_init_uses_its_own_ranges():
    mixer = build("mamba2", A_init_range=(2.0, 4.0), dt_min=0.01, dt_max=0.05, dt_init_floor=1e-3)
    assert_log_uniform_rates(mixer.A_log, 2.0, 4.0)
    assert_mamba_dt(mixer.dt_bias, 0.01, 0.05)


@pytest.mark.parametrize("name,default", [("kda", "fla"), ("gdn", "fla"), ("mamba2", "mamba")])
def test_the_default_init_is_the_named_one(name, default):
    assert build_mixer(name, 32).cfg.init == default
    torch.manual_seed(3)
    implicit = build(name).state_dict()
    torch.manual_seed(3)
    explicit = build(name, init=default).state_dict()
    assert all(torch.equal(implicit[key], explicit[key]) for key in implicit)
    for init in ("fla", "mamba", "zero_dt"):
        mixer = build(name, init=init)
        assert all(p.requires_grad and p._no_weight_decay for p in (mixer.A_log, mixer.dt_bias))


BAD = [("kda", dict(init="fla_v2"), "init='fla_v2'.*fla, mamba, zero_dt"),
       ("gdn", dict(init="zero"), "init='zero'.*fla, mamba, zero_dt"),
       ("mamba2", dict(init="Mamba"), "init='Mamba'.*fla, mamba, zero_dt"),
       ("kda", dict(gate="safe"), "gate='safe'.*bounded, softplus"),
       ("kda", dict(gate="bounded", gate_lower_bound=0.0), "gate_lower_bound=0.0 must be < 0")]


@pytest.mark.parametrize("name,overrides,match", BAD, ids=[f"{n}-{list(o.values())[-1]}" for n, o, _ in BAD])
def test_bad_init_or_gate_fails_in_one_line(name, overrides, match):
    with pytest.raises(ConfigError, match=f"mixer {name}: {match}") as err:
        build_mixer(name, 32, **overrides)
    assert "\n" not in str(err.value)


def test_bounded_gate_is_flas_lower_bound_formula():
    """g[b, t, h, k] = lower_bound * sigmoid(exp(A_log[h]) * (f_b(f_a(x))[b, t, h*K + k] + dt_bias[h*K + k])),
    written out per element in plain Python (fla's naive_kda_lowerbound_gate), in fp64."""
    H, K, lb = 2, 3, -3.0
    mixer = build_mixer("kda", 6, num_heads=H, gate="bounded", gate_lower_bound=lb).double()
    with torch.no_grad():
        mixer.A_log.copy_(torch.tensor([-0.5, 1.2]))
        mixer.dt_bias.normal_()
    x = torch.randn(2, 4, 6, dtype=torch.float64) * 2
    g = mixer.decay(x)
    assert g.shape == (2, 4, H, K) and g.dtype == torch.float64
    raw = x @ mixer.f_a.weight.T @ mixer.f_b.weight.T  # [B, T, H*K]
    A_log, dt_bias = mixer.A_log.tolist(), mixer.dt_bias.tolist()
    for b in range(2):
        for t in range(4):
            for h in range(H):
                for k in range(K):
                    z = math.exp(A_log[h]) * (raw[b, t, h * K + k].item() + dt_bias[h * K + k])
                    assert g[b, t, h, k].item() == pytest.approx(lb / (1 + math.exp(-z)), rel=1e-12, abs=1e-15)


def test_bounded_gate_stays_within_its_bound_where_softplus_does_not():
    mixer = build_mixer("kda", 32, num_heads=4, gate="bounded", gate_lower_bound=-5.0)
    softplus = build_mixer("kda", 32, num_heads=4)
    softplus.load_state_dict(mixer.state_dict())
    x = torch.randn(2, 40, 32) * torch.logspace(-2, 3, 40)[:, None]  # up to 1000: both sigmoid tails
    g = mixer.decay(x)
    assert g.dtype == torch.float32 and (g >= -5.0).all() and (g <= 0).all()
    assert g.min() < -4.99 and g.max() > -1e-3, "large inputs should reach both ends of (lower_bound, 0)"
    assert softplus.decay(x).min() < -5.0


@pytest.mark.skipif(not interpreting(), reason="fused=on runs here under the Triton interpreter")
def test_bounded_gate_in_a_fused_layer_equals_the_plain_layer():
    """The fused layer computes the bounded gate in PyTorch (the fused gate op is softplus-only); the rest fused."""
    fused = build_mixer("kda", 32, gate="bounded", gate_lower_bound=-2.0, fused="on")
    plain = build_mixer("kda", 32, gate="bounded", gate_lower_bound=-2.0, fused="off")
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(2, 7, 32)
    (y_f, _), (y_p, _) = fused(x), plain(x)
    assert_close("bounded-gate kda y", y_p, y_f, 2e-4)
