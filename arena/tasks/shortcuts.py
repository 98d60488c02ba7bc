"""Shortcut baselines: how far a probe's test split can be scored without the ability it claims to test.

    from arena.tasks import build_task
    task = build_task("flip_flop")
    test = task.generate(1000, seed=[0, 1], split="test")
    task.shortcut_baselines(test)   # {'chance': 0.5, 'majority': 0.5, 'copy_last': 0.0, 'copy_previous': 0.6, ...}
    python scripts/shortcut_table.py      # every probe at its default and at the presets' settings (docs/probes.md)

A shortcut is a rule that predicts every next token from the INPUTS alone (no training, no targets); its
accuracy is counted at the scored positions exactly as arena/evaluate.py counts a model's (per scored token).
A model whose accuracy does not beat the best shortcut has not shown the probe's ability. Every task gets:

- `chance`: the task's `chance_accuracy` when it declares one (a uniform guess among the possible answers),
  else 1 / the number of distinct answer ids at the scored positions of the batch (what the answers range over).
- `majority`: always emit the most frequent scored target of a sample of the TRAINING split (drawn here with a
  fixed seed; the trainer could learn exactly this constant). It is not an oracle: the test batch's own targets
  are never looked at, so a test distribution unlike the training one (MAD's train split scores every token)
  can put it below chance.
- `copy_last`: repeat the token just read (predict inputs[t] at position t).
- `copy_previous`: emit the token before it (inputs[t - 1]); on flip-flop that is the bit of the previous pair.

and the task's own cheap heuristics from `Task.shortcut_predictions(inputs)` ([N, T] int arrays of predicted
next tokens, -1 = no guess), each in its task's module and built from the vectorized helpers below
(`last_where`, `first_where`, `keyed_last`, `running_mode`, `shift`). Lookups that ARE the task (the value after
a repeated key on a recall probe) are not shortcuts and are not listed; see docs/probes.md#shortcut-baselines.
"""

from __future__ import annotations

import numpy as np
import torch

from arena.tasks.base import IGNORE, Batch, Task

GENERIC = ("chance", "majority", "copy_last", "copy_previous")
MAJORITY_SEED = 12345  # the training sample behind `majority`: fixed, so every run of a setting agrees
MAJORITY_TOKENS = 2**18  # tokens drawn for it (at least 16 sequences): enough for a stable mode, cheap to draw


def shift(a: np.ndarray, k: int, fill: int = -1) -> np.ndarray:
    """[N, T] -> [N, T] with out[:, t] = a[:, t - k] (k may be negative), `fill` where that falls outside."""
    out = np.full_like(a, fill)
    if k > 0:
        out[:, k:] = a[:, :-k]
    elif k < 0:
        out[:, :k] = a[:, -k:]
    else:
        out[:] = a
    return out


def last_where(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """[N, T] -> [N, T]: at t, `values` at the latest p <= t with mask[p]; -1 where there is none."""
    T = mask.shape[1]
    latest = np.maximum.accumulate(np.where(mask, np.arange(T), -1), axis=1)
    out = np.take_along_axis(values, np.maximum(latest, 0), axis=1)
    return np.where(latest >= 0, out, -1)


def first_where(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """[N, T] -> [N, T]: at t, `values` at the earliest p <= t with mask[p]; -1 where there is none yet."""
    first = mask.argmax(axis=1)
    found = mask.any(axis=1)[:, None] & (np.arange(mask.shape[1]) >= first[:, None])
    return np.where(found, np.take_along_axis(values, first[:, None], axis=1), -1)


def keyed_last(keys: np.ndarray, values: np.ndarray, written: np.ndarray) -> np.ndarray:
    """[N, T] -> [N, T]: at t, `values` at the latest p < t with written[p] and keys[p] == keys[t]; else -1.

    One stable sort per row groups equal keys with positions ascending; a running max of the written positions'
    sorted indices then finds each position's latest earlier write, valid when it falls in the same key group
    (a group's own writes lie after every earlier group's, so a max from another group means there is none)."""
    N, T = keys.shape
    order = np.argsort(keys, axis=1, kind="stable")
    sorted_keys = np.take_along_axis(keys, order, axis=1)
    sorted_written = np.take_along_axis(written, order, axis=1)
    idx = np.arange(T)
    # strictly earlier: the running max up to sorted index i - 1
    seen = np.maximum.accumulate(np.where(sorted_written, idx, -1), axis=1)
    seen = shift(seen, 1)
    hit = np.take_along_axis(sorted_keys, np.maximum(seen, 0), axis=1) == sorted_keys
    found = np.where((seen >= 0) & hit, np.take_along_axis(order, np.maximum(seen, 0), axis=1), -1)
    out = np.full_like(values, -1)
    rows = np.arange(N)[:, None]
    out[rows, order] = np.where(found >= 0, np.take_along_axis(values, np.maximum(found, 0), axis=1), -1)
    return out


def running_mode(inputs: np.ndarray, low: int, high: int) -> np.ndarray:
    """[N, T] -> [N, T]: at t, the most frequent id in [low, high) among inputs[:, :t + 1] (ties: the smaller id;
    -1 before any such id). Chunked over rows so the [rows, T, high - low] count tensor stays near 2^24 entries."""
    N, T = inputs.shape
    span = max(1, high - low)
    out = np.full_like(inputs, -1)
    step = max(1, 2**24 // (T * span))
    for start in range(0, N, step):
        x = inputs[start: start + step]
        inside = (x >= low) & (x < high)
        onehot = np.zeros((*x.shape, span), dtype=np.int32)
        np.put_along_axis(onehot, np.where(inside, x - low, 0)[..., None], inside[..., None].astype(np.int32), axis=2)
        counts = np.cumsum(onehot, axis=1)
        out[start: start + step] = np.where(inside.cumsum(1) > 0, counts.argmax(2) + low, -1)
    return out


def majority_token(task: Task) -> int | None:
    """The most frequent scored target of a training-split sample (None: no integer targets)."""
    n = max(16, MAJORITY_TOKENS // task.seq_len)
    targets = task.generate(n, MAJORITY_SEED, split="train").targets
    if targets.dtype.is_floating_point:
        return None
    scored = targets[targets != IGNORE]
    return int(torch.bincount(scored).argmax()) if scored.numel() else None


def shortcut_hits(task: Task, batch: Batch, majority: int | None) -> tuple[dict[str, int], int]:
    """Correct scored predictions of every shortcut except chance, and the number of scored positions."""
    inputs = batch.inputs.cpu().numpy()
    predictions = {
        "majority": np.full_like(inputs, -1 if majority is None else majority),
        "copy_last": inputs,
        "copy_previous": shift(inputs, 1),
        **task.shortcut_predictions(inputs),
    }
    targets = batch.targets.cpu().numpy()  # read only here, to score the rules, never by them
    scored = targets != IGNORE
    return {name: int(((p == targets) & scored).sum()) for name, p in predictions.items()}, int(scored.sum())


def chance(task: Task, batch: Batch) -> float:
    """The task's declared chance accuracy, else 1 / the number of distinct answers scored in `batch`."""
    declared = getattr(task, "chance_accuracy", None)
    if declared is not None:
        return float(declared)
    targets = batch.targets[batch.targets != IGNORE]
    return 1.0 / max(1, int(torch.unique(targets).numel()))


def shortcut_baselines(task: Task, batch: Batch, majority: int | None | str = "train") -> dict[str, float]:
    """{name: accuracy} of every shortcut on `batch` (chance first). `majority`: the constant the majority rule
    emits; "train" draws it from the task's training split (pass `majority_token(task)` to reuse one)."""
    if batch.targets.dtype.is_floating_point:
        return {}  # a regression target has no token to guess
    if majority == "train":
        majority = majority_token(task)
    hits, scored = shortcut_hits(task, batch, majority)
    return {"chance": chance(task, batch), **{name: h / max(1, scored) for name, h in hits.items()}}


def best_shortcut(accuracies: dict[str, float]) -> tuple[str | None, float | None]:
    """(name, accuracy) of the best shortcut (the first listed wins a tie); (None, None) for none."""
    if not accuracies:
        return None, None
    name = max(accuracies, key=lambda k: accuracies[k])
    return name, accuracies[name]


def summary_fields(task: Task, batch: Batch, majority: int | None | str = "train") -> dict:
    """summary.json fields: `shortcuts` {name: accuracy} (rounded), `best_shortcut`, `best_shortcut_accuracy`."""
    accuracies = shortcut_baselines(task, batch, majority)
    name, acc = best_shortcut(accuracies)
    return {"shortcuts": {k: round(v, 6) for k, v in accuracies.items()}, "best_shortcut": name,
            "best_shortcut_accuracy": None if acc is None else round(acc, 6)}


class ShortcutTally:
    """Shortcut accuracies summed over the batches of one evaluation (arena/evaluate.py's length evaluation makes
    a length's data batch by batch). `majority` comes from `task`'s training split (the training length);
    `scored_task` is the task the batches come from (`task.at_length(L)`). A failure is recorded, never raised:
    a baseline must not cost the trained result."""

    def __init__(self, task: Task, scored_task: Task | None = None):
        self.task, self.scored_task = task, scored_task or task
        self.hits: dict[str, int] = {}
        self.scored, self.answers, self.error = 0, set(), None  # answers: the distinct scored targets seen
        try:
            self.majority = majority_token(task)
        except Exception as err:
            self.error = f"{type(err).__name__}: {err}"

    def add(self, batch: Batch) -> None:
        if self.error is not None or batch.targets.dtype.is_floating_point:
            return
        try:
            hits, scored = shortcut_hits(self.scored_task, batch, self.majority)
            self.answers.update(torch.unique(batch.targets[batch.targets != IGNORE]).tolist())
        except Exception as err:
            self.error = f"{type(err).__name__}: {err}"
            return
        for name, h in hits.items():
            self.hits[name] = self.hits.get(name, 0) + h
        self.scored += scored

    def fields(self) -> dict:
        """`shortcuts`, `best_shortcut`, `best_shortcut_accuracy` as in summary_fields; {} when nothing was scored."""
        if self.error is not None:
            return {"shortcuts_error": self.error}
        if not self.scored:
            return {}
        declared = getattr(self.scored_task, "chance_accuracy", None)  # as `chance`, over all the batches
        level = float(declared) if declared is not None else 1.0 / max(1, len(self.answers))
        accuracies = {"chance": level, **{k: h / self.scored for k, h in self.hits.items()}}
        name, acc = best_shortcut(accuracies)
        return {"shortcuts": {k: round(v, 6) for k, v in accuracies.items()}, "best_shortcut": name,
                "best_shortcut_accuracy": round(acc, 6)}
