"""MAD in-context recall (Poli et al. 2024, athms/mad-lab `generate_in_context_recall_instance`, multi_query;
docs/probes.md#in_context_recall): multi-query associative recall with keys drawn WITH replacement.

Isolates in-context key -> value lookup when keys repeat and every pair is also a query. The sequence is
seq_len/2 key-value pairs; keys lie in [0, V/2), values in [V/2, V); each key's value is drawn once per sequence
(reshuffled across sequences). The final pair repeats a key that was presented. Scoring follows MAD (docs/probes.md):
the train split scores every next token (plain LM loss, so keys and first-seen values too); the test
split (and validation, which draws the same distribution) scores only values whose key appeared earlier in the
sequence, plus the final value. The model reads MAD's
seq_len - 1 shifted tokens; the last input is PAD (0) and unscored.

Example (seq_len=16, vocab_size=16), decoded; `.` = unscored:

    position      :   0   1   2   3   4   5   6   7   8   9  10  11  12  13  14  15
    inputs        :   6   9   2  12   0   8   2  12   3  14   6   9   3  14   2   0
    targets train :   9   2  12   0   8   2  12   3  14   6   9   3  14   2  12   .
    targets test  :   .   .   .   .   .   .  12   .   .   .   9   .  14   .  12   .

Scored: train 0-14 (all but the PAD); test 6, 10, 12, 14 (keys 2, 6, 3 seen before; 14 is the final query).

Knobs: vocab_size (MAD baseline 16; changes 32, 64, 128), seq_len (MAD 128; changes 256, 512, 1024),
num_train (MAD 12,800; changes 6400 ... 800), num_test (MAD 1280).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arena.tasks import register_task
from arena.tasks._mad import check_recall, recall_symbols, sample_recall
from arena.tasks.base import Batch, Symbols, Task
from arena.tasks.shortcuts import last_where


@register_task("in_context_recall")
class InContextRecall(Task):
    """MAD in-context recall: key-value pairs with repeating keys; values of keys seen before are scored (test)."""

    @dataclass
    class Config(Task.Config):
        seq_len: int = 64  # MAD's sequence length (even): seq_len/2 pairs; MAD baseline 128
        vocab_size: int = 16  # keys [0, V/2), values [V/2, V); MAD baseline 16

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        check_recall("in_context_recall", cfg.seq_len, cfg.vocab_size, 0, 0.0)

    def symbols(self) -> list[Symbols]:
        return recall_symbols(self.cfg.vocab_size, 0)

    def shortcut_predictions(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        # the latest value token: recency without a key lookup (values [n/2, n), n = vocab_size - noise ids)
        n = self.cfg.vocab_size - 0
        return {"last_value": last_where((inputs >= n // 2) & (inputs < n), inputs)}

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        c = self.cfg
        return sample_recall(rng, num_examples, c.seq_len, c.vocab_size, 0, 0.0, split)
