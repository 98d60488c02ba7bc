"""Held-out evaluation: token and sequence accuracy over scored positions, scaled accuracy, length extrapolation;
for language modelling (a batch with `target_bytes`, arena/tasks/text.py) also perplexity and bits per byte; for a
regression task (a RegressionBatch, arena/tasks/icl_regression.py) the MSE and its curve over scored positions.

    result = evaluate(model, test_batch, batch_size=500, amp=None, chance=task.chance_accuracy)
    by_length = evaluate_lengths(model, task, EvalConfig(lengths=[64, 128, 1024]), seed=0, amp=None)

Long sequences are fed in pieces of `EvalConfig.chunk_len` tokens, each continuing from the state the previous
piece returned (the mixer contract guarantees this equals one parallel pass), so a recurrent mixer's memory
stays bounded by the piece length; attention keeps its KV cache, which grows with the length as it must.
`EvalConfig.lm_eval` (LmEvalConfig, `eval.lm_eval.*`) names lm-eval tasks scored after training (arena/lm_eval.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from arena.errors import ConfigError
from arena.model import LanguageModel
from arena.tasks import IGNORE, Batch, Task
from arena.tasks.base import RegressionBatch, split_seed
from arena.tasks.shortcuts import ShortcutTally


@dataclass
class LmEvalConfig:
    """`eval.lm_eval`: lm-eval tasks scored on the trained model at the end of a task=text run (arena/lm_eval.py)."""

    tasks: list[str] = field(default_factory=list)  # lm-eval task names; [] = no lm-eval
    include_path: str = ""  # a folder of extra task YAMLs (lm-eval's --include_path); "" = lm-eval's own tasks only
    limit: int = 0  # examples per task; 0 = all
    batch_size: int = 32  # requests per forward
    max_length: int = 0  # tokens of context per forward; 0 = the task's training seq_len
    bootstrap_iters: int = 1000  # lm-eval's bootstrap_iters: > 0 gives scores their stderr; 0 = no stderr

    def __post_init__(self):
        tasks = self.tasks
        if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, str) and t for t in tasks):
            raise ConfigError(f"eval.lm_eval.tasks={tasks!r} must be a list of lm-eval task names, e.g. "
                              "eval.lm_eval.tasks=[lambada_openai]")
        if not isinstance(self.include_path, str):
            raise ConfigError(f"eval.lm_eval.include_path={self.include_path!r} must be a folder path or ''")
        for key, low in (("limit", 0), ("batch_size", 1), ("max_length", 0), ("bootstrap_iters", 0)):
            value = getattr(self, key)
            if not _is_int(value) or value < low:
                raise ConfigError(f"eval.lm_eval.{key}={value!r} must be an integer >= {low}")


@dataclass
class EvalConfig:
    lengths: list[int] = field(default_factory=list)  # extra test lengths, scored after training; [] = none
    num_examples: int = 500  # held-out sequences per extra length
    chunk_len: int = 2048  # sequences longer than this are fed piece by piece, carrying the state
    tokens_per_batch: int = 32768  # batch size at length L is max(1, tokens_per_batch // L)
    lm_eval: LmEvalConfig = field(default_factory=LmEvalConfig)  # lm-eval at the end of training (task=text)

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


# The LM head runs on at most this many logits at a time. Without a cap, one evaluation batch of Kimi's MQAR at
# 1,024 tokens (500 sequences x 341 scored positions x a vocabulary of 8,192) asked for 5.2 GiB of fp32 logits at
# once and ran out of memory on a shared H100; 2^26 fp32 logits are 256 MiB.
LOGITS_PER_SLICE = 1 << 26


def _hits_and_loss(model: LanguageModel, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Argmax hits ([S] bool) and summed cross-entropy of the scored rows hidden [S, D] against targets [S], the LM
    head applied to a slice of rows at a time so that the fp32 logits never exceed LOGITS_PER_SLICE elements."""
    # an nn.Linear head names its width; any other head (a test's stand-in) shows it on one row
    vocab = getattr(model.lm_head, "out_features", None) or model.lm_head(hidden[:1]).shape[-1]
    rows = max(1, LOGITS_PER_SLICE // vocab)
    hits = torch.empty(len(targets), dtype=torch.bool, device=targets.device)
    loss_sum = 0.0
    for start in range(0, len(targets), rows):
        part = slice(start, start + rows)
        logits = model.lm_head(hidden[part]).float()  # [rows, vocab]
        hits[part] = logits.argmax(-1) == targets[part]
        loss_sum += F.cross_entropy(logits, targets[part], reduction="sum").item()
    return hits, loss_sum


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
        hits, piece_loss = _hits_and_loss(model, hidden[scored], targets[scored])
        right[:, piece][scored] = hits
        loss_sum += piece_loss
    return right, loss_sum


def scaled(accuracy: float, chance: float) -> float:
    """(accuracy - chance) / (1 - chance): 0 at chance level, 1 when perfect (Grazzi et al.'s parity metric)."""
    return (accuracy - chance) / (1.0 - chance) if chance < 1 else float("nan")


@torch.no_grad()
def evaluate(model: LanguageModel, data: Batch, batch_size: int, amp: torch.dtype | None, chance: float = 0.0,
             chunk_len: int = 1 << 30) -> dict:
    """Held-out token accuracy over scored positions and sequence accuracy (all scored positions right); for a
    regression task (a RegressionBatch) the MSE instead, see `evaluate_regression`."""
    if isinstance(data, RegressionBatch):
        return evaluate_regression(model, data, batch_size, amp)
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


@torch.no_grad()
def evaluate_regression(model: LanguageModel, data: RegressionBatch, batch_size: int, amp: torch.dtype | None) -> dict:
    """Held-out mean squared error per output component over the scored positions (`mse`, lower is better) and
    its curve over each sequence's scored positions in order (`mse_curve[k]`: the (k+1)-th scored position, which
    in icl_regression has k in-context examples before it). `accuracy` holds -mse, so every consumer that keeps
    the highest accuracy (best step, early stopping, the report's learning-rate choice) keeps the lowest MSE;
    `test_loss` is the MSE (the training loss); sequence and scaled accuracy do not apply (None)."""
    was_training = model.training
    model.eval()
    num_ranks = int(data.scored.sum(1).max())
    err_sum = torch.zeros(num_ranks, dtype=torch.float64)  # summed squared error per rank, over sequences
    err_count = torch.zeros(num_ranks, dtype=torch.float64)
    device = next(model.parameters()).device
    for start in range(0, len(data), batch_size):
        batch = data[start: start + batch_size].to(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            hidden, _ = model.hidden_states(batch.inputs)  # [B, T, D]
            pred = model.lm_head(hidden[batch.scored]).float()  # [S, O], rows in row-major order of `scored`
        err = ((pred - batch.targets[batch.scored].float()) ** 2).mean(-1).double().cpu()  # [S], / d_y
        rank = (batch.scored.cumsum(1) - 1)[batch.scored].cpu()  # [S]: index among its sequence's scored positions
        err_sum.index_add_(0, rank, err)
        err_count.index_add_(0, rank, torch.ones_like(err))
    model.train(was_training)
    mse = (err_sum.sum() / err_count.sum()).item()
    curve = (err_sum / err_count.clamp(min=1)).tolist()
    return {"accuracy": -mse, "scaled_accuracy": None, "sequence_accuracy": None, "test_loss": mse, "mse": mse,
            "mse_curve": curve}


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
    shortcuts = ShortcutTally(task, at_length)  # the rules a result must beat, on the same data
    for index, start in enumerate(range(0, cfg.num_examples, batch_size)):
        n = min(batch_size, cfg.num_examples - start)
        data = at_length.generate(n, split_seed(seed, "test") + [length, index], split="test")
        res = evaluate(model, data, n, amp, chance, cfg.chunk_len)
        shortcuts.add(data)
        scored = int((data.targets != IGNORE).sum())
        totals["correct"] += res["accuracy"] * scored
        totals["loss"] += res["test_loss"] * scored
        totals["sequences"] += res["sequence_accuracy"] * n
        totals["scored"] += scored
    accuracy = totals["correct"] / totals["scored"]
    return {"accuracy": accuracy, "scaled_accuracy": scaled(accuracy, chance),
            "sequence_accuracy": totals["sequences"] / cfg.num_examples,
            "test_loss": totals["loss"] / totals["scored"], **shortcuts.fields()}
