"""Evaluation: piecewise (state-carrying) scoring equals one pass, scaled accuracy, per-length results."""

from __future__ import annotations

import pytest
import torch

from arena.errors import ConfigError
from arena.evaluate import EvalConfig, evaluate, evaluate_lengths, scaled
from arena.model import LanguageModel, ModelConfig
from arena.tasks import build_task

SPECS = {"kda": {"name": "kda"}, "mla_nope": {"name": "mla", "rope": False}, "mamba2": {"name": "mamba2"}}


@pytest.mark.parametrize("layout", [["kda"], ["kda", "mla_nope"], ["mamba2"]], ids=lambda x: "+".join(x))
def test_piecewise_scoring_equals_one_pass(layout):
    task = build_task("mqar", seq_len=96, vocab_size=64, num_kv_pairs=8)
    model = LanguageModel(ModelConfig(vocab_size=64, d_model=32, n_layers=2, layout=layout), SPECS)
    data = task.generate(16, [0, 1], "test")
    whole = evaluate(model, data, batch_size=8, amp=None)
    pieces = evaluate(model, data, batch_size=8, amp=None, chunk_len=17)
    assert whole["accuracy"] == pieces["accuracy"] and whole["sequence_accuracy"] == pieces["sequence_accuracy"]
    assert abs(whole["test_loss"] - pieces["test_loss"]) < 1e-4 * max(1.0, whole["test_loss"])
    assert model.training, "evaluate must restore training mode"


def test_scaled_accuracy():
    assert scaled(0.5, 0.5) == 0.0 and scaled(1.0, 0.5) == 1.0 and scaled(0.75, 0.5) == 0.5
    assert scaled(0.3, 0.0) == 0.3


def test_evaluate_lengths_reports_each_length():
    task = build_task("mqar", seq_len=32, vocab_size=64)
    model = LanguageModel(ModelConfig(vocab_size=64, d_model=32, n_layers=1), SPECS, default="kda")
    results = evaluate_lengths(model, task, EvalConfig(lengths=[64, 32, 64], num_examples=8, chunk_len=40), 0, None)
    assert list(results) == [32, 64]
    assert all(0.0 <= r["accuracy"] <= 1.0 and "sequence_accuracy" in r for r in results.values())


def test_bad_eval_config_fails_in_one_line():
    with pytest.raises(ConfigError, match="lengths"):
        EvalConfig(lengths=[1])


def test_model_output_is_reproducible():
    torch.manual_seed(0)
    a = LanguageModel(ModelConfig(vocab_size=64, d_model=32, n_layers=1), SPECS, default="kda")
    torch.manual_seed(0)
    b = LanguageModel(ModelConfig(vocab_size=64, d_model=32, n_layers=1), SPECS, default="kda")
    x = torch.randint(0, 64, (2, 10))
    torch.testing.assert_close(a(x)[0], b(x)[0])


def test_scoring_slices_the_lm_head_and_matches_full_logits(monkeypatch):
    """The LM head sees at most LOGITS_PER_SLICE logits at a time (the MQAR-1,024 out-of-memory fix), and the
    sliced hits and loss equal the ones of the full logits, position by position."""
    import torch.nn.functional as F

    import arena.evaluate as ev
    from arena.tasks.base import IGNORE, Batch

    torch.manual_seed(0)
    vocab = 64
    model = LanguageModel(ModelConfig(vocab_size=vocab, d_model=32, n_layers=1), SPECS, default="kda").eval()
    inputs = torch.randint(0, vocab, (6, 40))
    with torch.no_grad():
        logits = model(inputs)[0].float()  # [B, T, vocab]: the reference, one pass through the whole model
    # targets: the model's own argmax at every other scored position (hits), a different token elsewhere (misses),
    # unscored gaps between them, so a slice written to the wrong rows changes the hit pattern
    guess = logits.argmax(-1)
    targets = torch.where(torch.rand(guess.shape) < 0.5, guess, (guess + 1) % vocab)
    targets[:, ::3] = IGNORE
    scored = targets != IGNORE
    expected_right = torch.zeros_like(scored)
    expected_right[scored] = guess[scored] == targets[scored]
    expected_loss = F.cross_entropy(logits[scored], targets[scored], reduction="sum").item()

    monkeypatch.setattr(ev, "LOGITS_PER_SLICE", 7 * vocab)  # 7 rows a slice: 160 scored rows need 23 slices
    seen = []
    model.lm_head.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    right, loss = ev._score(model, Batch(inputs, targets), chunk_len=1 << 30)
    assert max(seen) <= 7 and sum(seen) == scored.sum().item() and len(seen) > 1
    assert torch.equal(right, expected_right) and 0 < right.sum() < scored.sum()
    assert abs(loss - expected_loss) < 1e-4 * expected_loss
