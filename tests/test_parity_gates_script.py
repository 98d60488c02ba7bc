"""scripts/parity_gates.py reports the gates a GDN layer really applies (for KDA also the decay along each key), and
scores parity as arena does.

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


def test_key_weighted_decay_is_the_decay_along_the_key():
    # a key on one channel sees that channel's decay alone; a key spread evenly over the channels sees their mean
    alpha = torch.tensor([0.5, 0.9, 0.99, 1.0]).expand(2, 3, 1, 4)  # [B, T, H, K]
    one_channel = F.one_hot(torch.tensor(2), 4).double().expand(2, 3, 1, 4)
    even = torch.full((2, 3, 1, 4), 0.5)  # unit length: 4 x 0.5^2 = 1
    weighted = _script().key_weighted_decay
    assert torch.allclose(weighted(alpha, one_channel), torch.full((2, 3, 1), 0.99, dtype=torch.float64))
    assert torch.allclose(weighted(alpha, even), torch.full((2, 3, 1), 0.8475, dtype=torch.float64))
    gdn_alpha = torch.rand(2, 3, 2)  # [B, T, H]: one decay for every direction
    assert torch.equal(weighted(gdn_alpha, torch.randn(2, 3, 2, 4)), gdn_alpha)


def test_kda_rows_weight_the_decay_by_the_layers_own_keys():
    # KDA: alpha_k must be sum_i k_i^2 alpha_i with the k the layer really used (captured here independently, by
    # calling its qkv and decay on the mixer's input), not the channel mean the alpha column shows
    specs = {"kda": {"name": "kda", "num_heads": 2, "allow_neg_eigval": True}}
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=3, d_model=8, n_layers=1), specs).eval()
    rows = _script().gate_stats(model, length=24, num=4, seed=3)
    tokens = torch.randint(1, 3, (4, 24), generator=torch.Generator().manual_seed(3))
    mixer = model.blocks[0].mixer
    inputs = []
    handle = mixer.register_forward_hook(lambda _m, args, _o: inputs.append(args[0]))
    with torch.no_grad():
        model(tokens)
        handle.remove()
        x = inputs[0]
        _, k, _, _ = mixer.qkv(x, None, False)
        alpha = mixer.decay(x).exp().double()  # [B, T, H, K]
    want = (k.double() ** 2 * alpha).sum(-1) / (k.double() ** 2).sum(-1)  # [B, T, H]
    for head, row in enumerate(rows):
        for bit, token in (("0", 1), ("1", 2)):
            on = tokens == token
            assert math.isclose(row[f"alpha_k{bit}"], want[..., head][on].mean().item(), rel_tol=1e-9)
            assert not math.isclose(row[f"alpha_k{bit}"], row[f"alpha{bit}"], rel_tol=1e-6)  # not the mean
        assert math.isclose(row["alpha_k^L"], math.exp(12 * sum(want[..., head][tokens == t].log().mean().item()
                                                                for t in (1, 2))), rel_tol=1e-6)



def test_reflecting_heads_are_those_with_beta_near_two_on_both_bits():
    rows = [{"layer": 0, "head": 0, "beta0": 1.99, "beta1": 1.95}, {"layer": 0, "head": 1, "beta0": 1.99, "beta1": 1.2}]
    script, model = _script(), _model(decay=True)
    assert script.heads_to_open("reflecting", rows, model) == [(0, 0)]
    assert script.heads_to_open("0:1", rows, model) == [(0, 1)]
    assert script.heads_to_open("all", rows, model) == [(0, 0), (0, 1)]
