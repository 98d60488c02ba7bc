"""The mixer contract, checked for every registered mixer and every implementation it offers.

A new mixer is covered with no edit here: the tests are parametrized over `list_mixers()`.
Run: pytest tests/mixers/test_contract.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from arena.config_schema import compose_option
from arena.errors import ConfigError
from arena.mixers import build_mixer, get_mixer, list_mixers
from arena.testing import assert_close

D_MODEL = 32
CONF = Path(__file__).resolve().parents[2] / "conf" / "mixer"
CASES = [(name, impl) for name in list_mixers() for impl in get_mixer(name).impls]
IDS = [f"{name}-{impl}" for name, impl in CASES]


def make(name: str, impl: str):
    mixer = build_mixer(name, D_MODEL, impl=impl).double()
    mixer.eval()
    return mixer


@pytest.mark.parametrize("name,impl", CASES, ids=IDS)
def test_output_shape_and_dtype(name, impl):
    mixer = make(name, impl)
    x = torch.randn(2, 13, D_MODEL, dtype=torch.float64)
    y, state = mixer(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    assert state is not None


@pytest.mark.parametrize("name,impl", CASES, ids=IDS)
def test_causal(name, impl):
    mixer = make(name, impl)
    x = torch.randn(2, 40, D_MODEL, dtype=torch.float64)
    t = 17
    changed = x.clone()
    changed[:, t + 1:] = torch.randn_like(changed[:, t + 1:]) * 3
    y, _ = mixer(x)
    y_changed, _ = mixer(changed)
    torch.testing.assert_close(y_changed[:, : t + 1], y[:, : t + 1], rtol=0, atol=1e-10)
    assert not torch.allclose(y_changed[:, t + 1:], y[:, t + 1:]), "future tokens should matter somewhere"


@pytest.mark.parametrize("name,impl", CASES, ids=IDS)
def test_gradients_finite(name, impl):
    mixer = build_mixer(name, D_MODEL, impl=impl)
    x = torch.randn(2, 21, D_MODEL, requires_grad=True)
    y, _ = mixer(x)
    (y.pow(2).mean()).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in mixer.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"


@pytest.mark.parametrize("name,impl", CASES, ids=IDS)
def test_prefill_then_decode_matches_parallel(name, impl):
    """Parallel forward == prefill of a prompt + token-by-token decode from the returned state (fp32)."""
    mixer = build_mixer(name, D_MODEL, impl=impl).eval()
    x = torch.randn(2, 37, D_MODEL)
    prompt = 20
    with torch.no_grad():
        y_full, final_full = mixer(x)
        y_pre, state = mixer(x[:, :prompt])
        steps = [y_pre]
        for t in range(prompt, x.shape[1]):
            y_t, state = mixer(x[:, t: t + 1], state)
            steps.append(y_t)
    assert_close(f"{name}-{impl} decode", y_full, torch.cat(steps, dim=1), 1e-4)


@pytest.mark.parametrize("name,impl", CASES, ids=IDS)
def test_chunked_continuation_matches_parallel(name, impl):
    """A prompt processed as two multi-token pieces (prefill, then continue in parallel) == one pass."""
    mixer = build_mixer(name, D_MODEL, impl=impl).eval()
    x = torch.randn(2, 45, D_MODEL)
    with torch.no_grad():
        y_full, _ = mixer(x)
        y_a, state = mixer(x[:, :19])
        y_b, _ = mixer(x[:, 19:], state)
    assert_close(f"{name}-{impl} continuation", y_full, torch.cat([y_a, y_b], dim=1), 1e-4)


@pytest.mark.parametrize("name", list_mixers())
def test_state_size_counts_elements(name):
    mixer = build_mixer(name, D_MODEL)
    sizes = [mixer.state_size(n) for n in (1, 64, 4096)]
    assert all(isinstance(s, int) and s > 0 for s in sizes)
    assert sizes == sorted(sizes), "state can only grow with the sequence length"
    assert mixer.flops_per_token(64) > 0


@pytest.mark.parametrize("name", list_mixers())
def test_unknown_impl_fails_with_choices(name):
    with pytest.raises(ConfigError, match="impl.*naive"):
        build_mixer(name, D_MODEL, impl="no-such-impl")


@pytest.mark.parametrize("name", list_mixers())
def test_every_registered_mixer_has_its_yaml(name):
    path = CONF / f"{name}.yaml"
    assert path.exists(), f"conf/mixer/{name}.yaml is missing"
    assert compose_option("mixer", name)["name"] == name  # the YAML extends this mixer's schema


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_mixer_yaml_builds(path):
    spec = compose_option("mixer", path.stem)  # the YAML on its schema (arena/config_schema.py), as a run has it
    name = spec.pop("name")
    mixer = build_mixer(name, 64, **spec)
    y, _ = mixer(torch.randn(1, 5, 64))
    assert y.shape == (1, 5, 64)


def test_unknown_mixer_and_key_fail_in_one_line():
    with pytest.raises(ConfigError, match="choose one of: .*kda") as err:
        build_mixer("no-such-mixer", D_MODEL)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not_a_field is not a key of .*; valid keys"):
        build_mixer(list_mixers()[0], D_MODEL, not_a_field=1)
