"""arena.interventions: scaling one GDN / KDA head's log-decay is the same model as one with that head's A_log
shifted by log(scale), built here by editing the weights instead (GDN's and KDA's g are both -exp(A_log) times a
softplus, so the reference shares no code with the wrapper); the model is restored on leaving the block.

    python -m pytest -q tests/test_interventions.py
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from arena.errors import ConfigError
from arena.interventions import parse_heads, scale_decay
from arena.model import LanguageModel, ModelConfig


def _model(name: str, n_layers: int = 2) -> LanguageModel:
    specs = {name: {"name": name, "num_heads": 2, "allow_neg_eigval": True}}
    torch.manual_seed(0)
    return LanguageModel(ModelConfig(vocab_size=5, d_model=8, n_layers=n_layers), specs).eval()


@pytest.mark.parametrize("name", ["gdn", "kda"])
def test_scaling_a_heads_log_decay_is_shifting_its_A_log(name):
    model = _model(name)
    tokens = torch.randint(0, 5, (3, 20), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        trained, _ = model(tokens)
        for scale, shift in ((0.5, math.log(0.5)), (0.0, -200.0)):  # scale 0: A_log -> -inf, alpha = 1
            reference = copy.deepcopy(model)
            reference.blocks[1].mixer.A_log[1] += shift  # layer 1, head 1 only
            want, _ = reference(tokens)
            with scale_decay(model, [(1, 1)], scale):
                got, _ = model(tokens)
            assert torch.allclose(got, want, atol=1e-6), scale
            assert not torch.allclose(got, trained, atol=1e-4)  # the intervention changed the model
        after, _ = model(tokens)
    assert torch.equal(after, trained)  # and is undone on leaving the block


def test_scale_one_changes_nothing():
    model = _model("kda")
    tokens = torch.randint(0, 5, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        trained, _ = model(tokens)
        with scale_decay(model, parse_heads("all", model), 1.0):
            same, _ = model(tokens)
    assert torch.equal(same, trained)


def test_heads_are_checked():
    model = _model("gdn")
    assert parse_heads("all", model) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert parse_heads("1:0,0:1", model) == [(1, 0), (0, 1)]
    for bad in ("2:0", "0:2", "x", "0-1"):
        with pytest.raises(ConfigError):
            parse_heads(bad, model)
    with pytest.raises(ConfigError, match="outside"):
        with scale_decay(model, [(0, 0)], 1.5):
            pass
    with pytest.raises(ConfigError, match="does not exist"):  # scale_decay checks the heads it is given too
        with scale_decay(model, [(1, 2)], 0.5):
            pass
    mamba_specs = {"mamba2": {"name": "mamba2", "headdim": 8}}
    mamba = LanguageModel(ModelConfig(vocab_size=5, d_model=8, n_layers=1), mamba_specs)
    with pytest.raises(ConfigError, match="no GDN or KDA"):
        parse_heads("all", mamba)
