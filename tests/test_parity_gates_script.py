"""scripts/parity_gates.py reports the gates a GDN layer really applies, and scores parity as arena does.

    python -m pytest -q tests/test_parity_gates_script.py

The gates are set by hand (zero projections, chosen A_log / dt_bias / b_proj rows), so the expected alpha, beta and
their products over L tokens follow from the formulas in arena/mixers/gdn.py alone. A few seconds on a CPU.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from arena.model import LanguageModel, ModelConfig
from arena.testing import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "parity_gates.py"


def _script():
    return load_script("parity_gates")


def _model(decay: bool) -> LanguageModel:
    specs = {"gdn": {"name": "gdn", "num_heads": 2, "allow_neg_eigval": True, "decay": decay}}
    torch.manual_seed(0)
    return LanguageModel(ModelConfig(vocab_size=3, d_model=8, n_layers=1), specs).eval()


def test_gates_follow_the_layer_formulas():
    model = _model(decay=True)
    mixer = model.blocks[0].mixer
    with torch.no_grad():
        mixer.a_proj.weight.zero_()  # alpha then depends on A_log and dt_bias only: one known value per head
        mixer.A_log.copy_(torch.tensor([-3.0, 0.0]))
        mixer.dt_bias.copy_(torch.tensor([-2.0, 1.0]))
        mixer.b_proj.weight.zero_()  # beta = 2 sigmoid(0) = 1 on every token
    rows = _script().gate_stats(model, length=32, num=4, seed=0)
    g = -torch.tensor([-3.0, 0.0]).exp() * F.softplus(torch.tensor([-2.0, 1.0]))  # [H]
    for head, row in enumerate(rows):
        alpha = math.exp(g[head].item())
        assert math.isclose(row["alpha0"], alpha, rel_tol=1e-6) and math.isclose(row["alpha1"], alpha, rel_tol=1e-6)
        assert math.isclose(row["beta0"], 1.0, rel_tol=1e-6) and math.isclose(row["beta1"], 1.0, rel_tol=1e-6)
        assert math.isclose(row["alpha^L"], alpha ** 32, rel_tol=1e-5)
        assert row["|1-beta|^L"] < 1e-100  # beta = 1: the component along k is erased on every token


def test_no_decay_layer_reports_alpha_one():
    model = _model(decay=False)
    with torch.no_grad():
        model.blocks[0].mixer.b_proj.weight.zero_()  # beta = 1
    rows = _script().gate_stats(model, length=16, num=8, seed=1)
    assert len(rows) == 2
    assert all(r["alpha0"] == 1.0 and r["alpha1"] == 1.0 and r["alpha^L"] == 1.0 for r in rows)
    assert all(math.isclose(r["beta0"], 1.0, rel_tol=1e-6) for r in rows)


def _running_parity_model(flip: bool):
    """A stand-in model whose logits at every position name the parity of the bits so far (1 even, 2 odd), or the
    wrong one with `flip`: scoring must read the answer where arena's Parity puts the target."""
    def model(tokens):  # [B, T] -> logits [B, T, 3]
        odd = (tokens == 2).cumsum(1) % 2  # [B, T]
        answer = 1 + (odd ^ int(flip))
        return F.one_hot(answer, 3).float(), None
    return model


def test_accuracy_is_scored_at_the_last_bit():
    script = _script()
    assert script.accuracy_at(_running_parity_model(flip=False), 37, 200, 0) == 1.0
    assert script.accuracy_at(_running_parity_model(flip=True), 37, 200, 0) == 0.0
