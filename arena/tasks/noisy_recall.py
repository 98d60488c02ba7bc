"""MAD noisy in-context recall (Poli et al. 2024, athms/mad-lab `generate_noisy_in_context_recall_instance`;
docs/probes.md#noisy_recall): in-context recall with noise chunks interleaved between the pairs.

Isolates content-selective filtering: each pair slot becomes two random noise tokens with probability
frac_noise, and the model must skip them while storing the pairs. Vocabulary: n = vocab_size - noise_vocab_size
content ids (keys [0, n/2), values [n/2, n)), noise ids [n, vocab_size). Otherwise identical to
`in_context_recall`: the train split scores every next token (noise too, as MAD's plain LM loss does); the test
split (and validation, same data) scores values whose key was presented in an earlier (non-noise) pair, plus the
final value; noise is never scored at test time. The last input is PAD (0), unscored.

Example (seq_len=16, vocab_size=32, noise_vocab_size=16, frac_noise=0.4), decoded; `.` = unscored:

    position      :   0   1   2   3   4   5   6   7   8   9  10  11  12  13  14  15
    inputs        :   6   9   2  12   0   8  22  22   3  14   6   9   3  14   3   0
    targets train :   9   2  12   0   8  22  22   3  14   6   9   3  14   3  14   .
    targets test  :   .   .   .   .   .   .   .   .   .   .   9   .  14   .  14   .

Scored: train 0-14 (noise chunk `22 22` at 6-7 included); test 10, 12, 14 (keys 6 and 3 seen before).
Knobs: vocab_size (MAD baseline 32 incl. 16 noise ids; changes 48, 80, 144), noise_vocab_size (MAD 16),
frac_noise (MAD 0.2; changes 0.4, 0.6, 0.8), seq_len (MAD 128; changes 256, 512, 1024), num_train (MAD 12,800;
changes 6400 ... 800), num_test (MAD 1280).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arena.tasks import register_task
from arena.tasks._mad import check_recall, recall_symbols, sample_recall
from arena.tasks.base import Batch, Symbols, Task
from arena.tasks.shortcuts import last_where


@register_task("noisy_recall")
class NoisyRecall(Task):
    """MAD noisy in-context recall: key-value pairs among noise chunks; values of keys seen before are scored (test)."""

    @dataclass
    class Config(Task.Config):
        seq_len: int = 64  # MAD's sequence length (even): seq_len/2 slots; MAD baseline 128
        vocab_size: int = 32  # content ids plus noise ids; MAD baseline 32
        noise_vocab_size: int = 16  # noise ids are the top noise_vocab_size ids; MAD 16
        frac_noise: float = 0.2  # probability that a pair slot is a 2-token noise chunk; MAD 0.2

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        check_recall("noisy_recall", cfg.seq_len, cfg.vocab_size, cfg.noise_vocab_size, cfg.frac_noise)

    def symbols(self) -> list[Symbols]:
        return recall_symbols(self.cfg.vocab_size, self.cfg.noise_vocab_size)

    def shortcut_predictions(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        # the latest value token: recency without a key lookup (values [n/2, n), n = vocab_size - noise ids)
        n = self.cfg.vocab_size - self.cfg.noise_vocab_size
        return {"last_value": last_where((inputs >= n // 2) & (inputs < n), inputs)}

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        c = self.cfg
        return sample_recall(rng, num_examples, c.seq_len, c.vocab_size, c.noise_vocab_size, c.frac_noise, split)
