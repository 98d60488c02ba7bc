"""The task contract: a seeded generator of (inputs, targets) token batches with scored positions marked.

A task is a next-token problem: `targets[i, t]` is what the model must predict after reading
`inputs[i, : t + 1]`, or `IGNORE` (-100) where position t is not scored. Every task owns a nested
`@dataclass Config` (difficulty knobs with commented defaults: the schema of conf/task/<name>.yaml, which sets only
what differs, see arena/config_schema.py); its constructor validates the config and raises `ConfigError` when the
knobs cannot fit (e.g. too many items for the sequence length).

Data protocol: `generate(n, seed, split)` is deterministic in `seed`; the trainer draws the training set, the
validation set and the test set from disjoint seed streams (`split_seed`) and passes `split` ("train", "valid"
or "test") so a task with different train and test distributions (e.g. parity: train lengths 3-40, test 40-256)
can tell them apart; most tasks ignore it. "valid" is held-out data of the TRAINING distribution (parity: train
lengths), scored at the positions the test split scores (a MAD probe trains on every next token but is judged
on its recall answers): validation steers early stopping and the learning-rate choice, so it must never see the
test distribution (python -m arena.tasks show --split valid prints it); the trainer also leaves out of it every
sequence of a fixed training set (arena.protocol.validation_set). `num_train > 0` trains on a fixed set (as Zoology
does); `num_train = 0` draws fresh samples every step. Every sequence of a batch has length
`seq_len`; a task whose content is shorter pads on the right with `PAD` (0 by convention unless the task
documents another id), unscored.

Length extrapolation: `at_length(L)` returns the same task with sequence length L (by default `seq_len=L`;
a task whose difficulty knobs must scale with L overrides it).

Reading examples (`python -m arena.tasks show`): a task lists its token table in `symbols()` (runs of ids with
printable names: `PUSH`, `s3` for stack 3, `<sep>`, `k17` / `v5` for keys and values, PAD as `.`); ids in no
run print as their numbers. `decode(ids)` and `legend()` are built from that table. A knob whose 0 means
"derive it" (stack's num_ops) is named with its value in use by `auto_settings()`, and `setting()` writes it
as `num_ops=auto (16)` in messages.

Shortcut baselines (arena/tasks/shortcuts.py): a task lists its own cheap rules in `shortcut_predictions(inputs)`
(name -> [N, T] predicted next tokens, from the inputs alone); `shortcut_baselines(batch)` scores them, with
chance, majority and the copy rules every task gets, at the batch's scored positions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from arena.errors import ConfigError

IGNORE = -100  # target value of an unscored position (torch cross_entropy's ignore_index)
PAD = 0  # token id that fills a sequence past its content, by convention


@dataclass(frozen=True)
class Symbols:
    """A run of consecutive token ids and how they print: `Symbols(3, "s", "stacks", count=4)` is s0 .. s3 at ids
    3 .. 6; `Symbols(1, "PUSH", "push")` is the single id 1; a tuple of names gives one name per id."""

    first: int  # the run's first token id
    names: str | tuple[str, ...]  # one name per id, or (with count) a prefix numbered 0, 1, ... along the run
    meaning: str  # what the run stands for, in the legend
    count: int | None = None  # ids in a numbered run; None: one id named `names` (or one per name of a tuple)

    def labels(self) -> list[str]:
        if isinstance(self.names, tuple):
            return list(self.names)
        return [self.names] if self.count is None else [f"{self.names}{i}" for i in range(max(0, self.count))]


def setting(key: str, value, resolved) -> str:
    """`key=value` for a message; a knob left to derive itself (0 or None) reads `key=auto (resolved)`."""
    return f"{key}=auto ({resolved})" if value is None or value == 0 else f"{key}={value}"


@dataclass
class Batch:
    inputs: torch.Tensor  # [N, T] int64 token ids
    targets: torch.Tensor  # [N, T] int64 next-token targets, IGNORE where unscored

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, index) -> Batch:
        return Batch(self.inputs[index], self.targets[index])

    def to(self, device) -> Batch:
        return Batch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True))


@dataclass
class RegressionBatch:
    """A batch of a real-valued task (`Task.kind == "regression"`, e.g. icl_regression): vectors in, vectors out."""
    inputs: torch.Tensor  # [N, T, I] float32 input vectors (the model reads them through a linear read-in)
    targets: torch.Tensor  # [N, T, O] float32 vector to predict after reading inputs[:, : t + 1]; 0 where unscored
    scored: torch.Tensor  # [N, T] bool, the positions the loss and the MSE count

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, index) -> RegressionBatch:
        return RegressionBatch(self.inputs[index], self.targets[index], self.scored[index])

    def to(self, device) -> RegressionBatch:
        return RegressionBatch(*(t.to(device, non_blocking=True) for t in (self.inputs, self.targets, self.scored)))


def scored_mask(batch: Batch | RegressionBatch) -> torch.Tensor:
    """[N, T] bool: the scored positions of a token batch (target not IGNORE) or of a regression batch."""
    return batch.scored if isinstance(batch, RegressionBatch) else batch.targets != IGNORE


SPLITS = {"train": 0, "test": 1, "valid": 2}


def split_seed(seed: int, split: str) -> list[int]:
    """Seed material for numpy's SeedSequence: splits of one run never share a random stream."""
    return [seed, SPLITS[split]]


class Task:
    registry_name: ClassVar[str] = "?"
    # "tokens": int64 ids in, next-token cross-entropy, accuracy; "regression": float vectors in and out
    # (RegressionBatch; the task also defines input_dim and output_dim), MSE loss and metric (arena/model.py)
    kind: ClassVar[str] = "tokens"
    # what picks a run's best validation evaluation (the weights train.test_on=best tests, best_step, the best a
    # resumed run compares with, the report's learning-rate choice; arena/protocol.py: selection_score):
    # "accuracy", the highest (-MSE for regression), or "loss", the lowest validation loss (language modelling)
    selection: ClassVar[str] = "accuracy"

    @dataclass
    class Config:
        seq_len: int = 64
        vocab_size: int = 256
        num_train: int = 20_000  # fixed training set size; 0 = fresh samples every step
        num_test: int = 1_000  # held-out examples

    def __init__(self, cfg: Config):
        self.cfg = cfg
        if cfg.seq_len < 2:
            raise ConfigError(f"task {self.registry_name}: seq_len={cfg.seq_len} must be >= 2")
        if cfg.num_train < 0 or cfg.num_test < 1:
            raise ConfigError(
                f"task {self.registry_name}: num_train={cfg.num_train} must be >= 0 and num_test={cfg.num_test} >= 1"
            )

    @property
    def vocab_size(self) -> int:
        """Size of the token vocabulary the model needs (ids lie in [0, vocab_size))."""
        return self.cfg.vocab_size

    @property
    def seq_len(self) -> int:
        return self.cfg.seq_len

    def generate(self, num_examples: int, seed, split: str = "train") -> Batch:
        """`num_examples` sequences of length `seq_len`, deterministic in `seed` (an int or list of ints)."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not one of {sorted(SPLITS)}")
        return self.sample(np.random.default_rng(seed), num_examples, split)

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        raise NotImplementedError

    def at_length(self, seq_len: int) -> Task:
        """This task with sequences of length `seq_len` (for length-extrapolation tests)."""
        return type(self)(dataclasses.replace(self.cfg, seq_len=seq_len))

    # ---- shortcut baselines: arena/tasks/shortcuts.py ----

    def shortcut_predictions(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """The task's own cheap heuristics: name -> [N, T] predicted next token at every position (-1 = no
        guess), from the [N, T] inputs alone. Chance, majority and the copy rules are added for every task."""
        return {}

    def shortcut_baselines(self, batch: Batch) -> dict[str, float]:
        """{name: accuracy at the scored positions of `batch`} of every shortcut (see arena/tasks/shortcuts.py)."""
        from arena.tasks.shortcuts import shortcut_baselines  # the module imports this one

        return shortcut_baselines(self, batch)

    # ---- reading examples: python -m arena.tasks show ----

    def symbols(self) -> list[Symbols]:
        """The token table: runs of ids with printable names. The default (no table) prints every id as its number."""
        return []

    def auto_settings(self) -> dict[str, object]:
        """Config keys whose 0 (or None) means "derive it", mapped to the value in use (shown as `auto (value)`)."""
        return {}

    def token_names(self) -> list[str]:
        """Printable name of every id in [0, vocab_size): the table's names, else the id itself."""
        names = [str(i) for i in range(self.vocab_size)]
        for run in self.symbols():
            for offset, label in enumerate(run.labels()):
                if 0 <= run.first + offset < len(names):
                    names[run.first + offset] = label
        return names

    def decode(self, ids) -> list[str]:
        """Names of `ids` (a sequence of ints); an id outside the vocabulary prints as its number."""
        names = self.token_names()
        return [names[i] if 0 <= i < len(names) else str(i) for i in ids]

    def legend(self) -> str:
        """One line naming each run of the token table with its ids: `PUSH (1) push | s0..s7 (3-10) stack ids`."""
        parts, unused = [], np.ones(self.vocab_size, dtype=bool)
        for run in self.symbols():
            labels = run.labels()[: max(0, self.vocab_size - run.first)]
            if not labels:
                continue
            unused[run.first: run.first + len(labels)] = False
            shown = " ".join(labels) if len(labels) <= 5 else f"{labels[0]}..{labels[-1]}"
            ids = str(run.first) if len(labels) == 1 else f"{run.first}-{run.first + len(labels) - 1}"
            parts.append(f"{shown} ({ids}) {run.meaning}")
        if not parts:
            return f"tokens print as their ids (0-{self.vocab_size - 1})"
        if unused.any():
            spare = np.flatnonzero(unused)
            parts.append(f"({spare[0]}{'' if len(spare) == 1 else f'-{spare[-1]}'}) unused, printed as numbers")
        return " | ".join(parts)


def sample_distinct(rng: np.random.Generator, num_rows: int, low: int, high: int, count: int) -> np.ndarray:
    """[num_rows, count] ints from [low, high), distinct within each row, uniform over such ordered rows."""
    span = high - low
    if count * count <= span:
        # few ids from a wide range: draw freely and redraw the rows with a repeat (rejection sampling keeps
        # rows uniform over distinct tuples; with count^2 <= span at least ~60% of rows pass each round)
        out = rng.integers(low, high, size=(num_rows, count))
        while True:
            ordered = np.sort(out, axis=1)
            bad = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
            if not bad.any():
                return out
            out[bad] = rng.integers(low, high, size=(int(bad.sum()), count))
    out = np.empty((num_rows, count), dtype=np.int64)
    block = max(1, 2**24 // span)  # bound the [block, span] random matrix to ~128 MB
    for start in range(0, num_rows, block):
        stop = min(num_rows, start + block)
        out[start:stop] = np.argsort(rng.random((stop - start, span)), axis=1)[:, :count] + low
    return out


def sample_weighted_distinct(rng: np.random.Generator, num_rows: int, probs: np.ndarray, count: int) -> np.ndarray:
    """[num_rows, count] indices into `probs`, distinct per row, drawn one after another with probability
    proportional to `probs` among those left (Efraimidis-Spirakis keys: the top `count` of log(u) / p)."""
    keys = np.log(rng.random((num_rows, probs.shape[0]))) / probs
    top = np.argpartition(-keys, count - 1, axis=1)[:, :count]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1), axis=1)
