"""Backbone: hybrid layouts build and repeat, parameter counts add up, MLP can be dropped, errors are one line."""

from __future__ import annotations

import pytest
import torch

from arena.errors import ConfigError
from arena.model import LanguageModel, ModelConfig

SPECS = {"kda": {"name": "kda"}, "mla_nope": {"name": "mla", "rope": False}, "gdn": {"name": "gdn"}}


def test_hybrid_layout_repeats_to_n_layers():
    model = LanguageModel(ModelConfig(vocab_size=50, d_model=32, n_layers=6, layout=["kda", "kda", "mla_nope"]), SPECS)
    assert model.layer_names == ["kda", "kda", "mla_nope"] * 2
    kinds = [type(b.mixer).registry_name for b in model.blocks]
    assert kinds == ["kda", "kda", "mla"] * 2
    assert model.blocks[2].mixer.cfg.rope is False


def test_parameter_counts_add_up():
    model = LanguageModel(ModelConfig(vocab_size=50, d_model=32, n_layers=4, layout=["kda", "mla_nope"]), SPECS)
    counts = model.parameter_counts()
    parts = sum(v for k, v in counts.items() if k != "total")
    assert parts == counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["embedding"] == counts["lm_head"] == 50 * 32
    assert counts["mixer/kda"] > 0 and counts["mixer/mla_nope"] > 0


def test_mlp_ratio_zero_drops_the_mlp():
    model = LanguageModel(ModelConfig(vocab_size=50, d_model=32, n_layers=2, mlp_ratio=0), SPECS, default="gdn")
    assert model.parameter_counts()["mlp"] == 0
    assert all(b.mlp is None for b in model.blocks)


def test_forward_then_continue_from_states():
    model = LanguageModel(ModelConfig(vocab_size=50, d_model=32, n_layers=4, layout=["kda", "mla_nope"]), SPECS).eval()
    tokens = torch.randint(0, 50, (2, 30))
    with torch.no_grad():
        full, _ = model(tokens)
        head, states = model(tokens[:, :20])
        tail = []
        for t in range(20, 30):
            logits, states = model(tokens[:, t: t + 1], states)
            tail.append(logits)
    torch.testing.assert_close(torch.cat([head, *tail], 1), full, rtol=1e-4, atol=1e-4)


def test_state_size_and_flops_are_reported():
    model = LanguageModel(ModelConfig(vocab_size=50, d_model=32, n_layers=2, layout=["kda", "mla_nope"]), SPECS)
    assert model.state_size(128) > model.state_size(64) > 0  # the MLA layer's KV cache grows
    assert model.flops_per_token(64) > 2 * model.parameter_counts()["lm_head"]


def test_unknown_layout_entry_fails_with_choices():
    with pytest.raises(ConfigError, match="layout entry.*'nope'.*choose one of"):
        LanguageModel(ModelConfig(vocab_size=50, d_model=32, layout=["kda", "nope"]), SPECS)
