"""Held-out evaluation: token and sequence accuracy over scored positions, scaled accuracy, length extrapolation;
for language modelling (a batch with `target_bytes`, arena/tasks/text.py) also perplexity and bits per byte.

    result = evaluate(model, test_batch, batch_size=500, amp=None, chance=task.chance_accuracy)
    by_length = evaluate_lengths(model, task, EvalConfig(lengths=[64, 128, 1024]), seed=0, amp=None)

Long sequences are fed in pieces of `EvalConfig.chunk_len` tokens, each continuing from the state the previous
piece returned (the mixer contract guarantees this equals one parallel pass), so a recurrent mixer's memory
stays bounded by the piece length; attention keeps its KV cache, which grows with the length as it must.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from arena.errors import ConfigError
from arena.model import LanguageModel
from arena.tasks import IGNORE, Batch, Task
from arena.tasks.base import split_seed


@dataclass
class EvalConfig:
    lengths: list[int] = field(default_factory=list)  # extra test lengths, scored after training; [] = none
    num_examples: int = 500  # held-out sequences per extra length
    chunk_len: int = 2048  # sequences longer than this are fed piece by piece, carrying the state
    tokens_per_batch: int = 32768  # batch size at length L is max(1, tokens_per_batch // L)

    def __post_init__(self):
        # checked when the config is built, before training: a bad length used to surface only after it
        lengths = self.lengths
        if not isinstance(lengths, (list, tuple)) or not all(_is_int(L) and L >= 2 for L in lengths):
            shown = list(lengths) if isinstance(lengths, (list, tuple)) else lengths
            raise ConfigError(f"eval.lengths={shown!r} must be a list of integers >= 2, e.g. eval.lengths=[64,256]")
        for key in ("num_examples", "chunk_len", "tokens_per_batch"):
            value = getattr(self, key)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"eval.{key}={value!r} must be an integer >= 1")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def scored_logits(model: LanguageModel, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets at scored positions only: the LM head runs on those rows alone (far cheaper)."""
    hidden, _ = model.hidden_states(batch.inputs)  # [B, T, D]
    scored = batch.targets != IGNORE  # [B, T]
    return model.lm_head(hidden[scored]).float(), batch.targets[scored]


def _score(model: LanguageModel, batch: Batch, chunk_len: int) -> tuple[torch.Tensor, float]:
    """Which scored positions are predicted right ([B, T] bool) and the summed loss, feeding the sequence in
    pieces of `chunk_len` tokens that each continue from the state the previous piece returned."""
    right = torch.zeros_like(batch.targets, dtype=torch.bool)
    loss_sum, states = 0.0, None
    for start in range(0, batch.inputs.shape[1], chunk_len):
        piece = slice(start, start + chunk_len)
        hidden, states = model.hidden_states(batch.inputs[:, piece], states)  # [B, chunk, D]
        targets = batch.targets[:, piece]
        scored = targets != IGNORE
        logits = model.lm_head(hidden[scored]).float()  # [S, vocab]
        right[:, piece][scored] = logits.argmax(-1) == targets[scored]
        loss_sum += F.cross_entropy(logits, targets[scored], reduction="sum").item()
    return right, loss_sum


def scaled(accuracy: float, chance: float) -> float:
    """(accuracy - chance) / (1 - chance): 0 at chance level, 1 when perfect (Grazzi et al.'s parity metric)."""
    return (accuracy - chance) / (1.0 - chance) if chance < 1 else float("nan")


@torch.no_grad()
def evaluate(model: LanguageModel, data: Batch, batch_size: int, amp: torch.dtype | None, chance: float = 0.0,
             chunk_len: int = 1 << 30) -> dict:
    """Held-out token accuracy over scored positions and sequence accuracy (all scored positions right)."""
    was_training = model.training
    model.eval()
    correct = total = seq_right = num_bytes = 0
    loss_sum = 0.0
    per_byte = getattr(data, "target_bytes", None) is not None  # text: UTF-8 bytes each target token covers
    device = next(model.parameters()).device
    for start in range(0, len(data), batch_size):
        batch = data[start: start + batch_size].to(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            right, batch_loss = _score(model, batch, chunk_len)
        scored = batch.targets != IGNORE  # [B, T]
        loss_sum += batch_loss
        correct += right.sum().item()
        total += scored.sum().item()
        seq_right += (right.sum(1) == scored.sum(1)).sum().item()
        if per_byte:
            num_bytes += batch.target_bytes[scored].sum().item()
    model.train(was_training)
    accuracy = correct / total
    result = {"accuracy": accuracy, "scaled_accuracy": scaled(accuracy, chance),
              "sequence_accuracy": seq_right / len(data), "test_loss": loss_sum / total}
    if per_byte:
        result.update(language_model_metrics(loss_sum, total, num_bytes))
    return result


def language_model_metrics(loss_sum: float, tokens: int, num_bytes: int) -> dict:
    """Perplexity exp(nats per token) and bits per byte: the summed nats over the tokens, in bits, spread over the
    UTF-8 bytes those tokens cover (tokenizer-independent; for the byte tokenizer it is nats per token / ln 2)."""
    return {"perplexity": math.exp(min(loss_sum / tokens, 700.0)),  # capped: exp overflows past ~709
            "bits_per_byte": loss_sum / (math.log(2) * num_bytes)}


def evaluate_lengths(model: LanguageModel, task: Task, cfg: EvalConfig, seed: int, amp) -> dict[int, dict]:
    """Accuracy of the trained model on held-out data at each length in `cfg.lengths` (see `evaluate_length`)."""
    return {length: evaluate_length(model, task, length, cfg, seed, amp) for length in sorted(set(cfg.lengths))}


def evaluate_length(model: LanguageModel, task: Task, length: int, cfg: EvalConfig, seed: int, amp) -> dict:
    """Accuracy of the trained model on `cfg.num_examples` held-out sequences of `length` tokens.

    Data is generated batch by batch (seeded by length and batch index), so a million-token length never
    holds more than one batch of sequences in memory.
    """
    at_length = task.at_length(length)
    chance = getattr(at_length, "chance_accuracy", 0.0)
    batch_size = max(1, cfg.tokens_per_batch // length)
    totals = {"correct": 0.0, "sequences": 0.0, "loss": 0.0, "scored": 0}
    for index, start in enumerate(range(0, cfg.num_examples, batch_size)):
        n = min(batch_size, cfg.num_examples - start)
        data = at_length.generate(n, split_seed(seed, "test") + [length, index], split="test")
        res = evaluate(model, data, n, amp, chance, cfg.chunk_len)
        scored = int((data.targets != IGNORE).sum())
        totals["correct"] += res["accuracy"] * scored
        totals["loss"] += res["test_loss"] * scored
        totals["sequences"] += res["sequence_accuracy"] * n
        totals["scored"] += scored
    accuracy = totals["correct"] / totals["scored"]
    return {"accuracy": accuracy, "scaled_accuracy": scaled(accuracy, chance),
            "sequence_accuracy": totals["sequences"] / cfg.num_examples,
            "test_loss": totals["loss"] / totals["scored"]}
