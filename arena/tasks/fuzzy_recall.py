"""MAD fuzzy in-context recall (Poli et al. 2024, athms/mad-lab `generate_fuzzy_in_context_recall_instance`,
multi_query; docs/probes.md#fuzzy_recall): associative recall where keys and values are multi-token motifs.

Isolates recall of keys spread over several tokens (a key's end is only known once a value token arrives, and a
short key can be the tail of a longer one). Ids: keys [0, n/2), values [n/2, n) with n = V - 1; PAD = V - 1
(MAD's pad id; sequences are LEFT-padded as in MAD). A key is an ordered tuple of 1..k_motif_size distinct key
ids, a value 1..v_motif_size distinct value ids; a key's value is drawn at its first appearance. A probe pair is
planted mid-sequence and repeated at the end. Train split: key sizes uniform in 1..k_motif_size, every next
token scored (MAD's plain LM loss) except inside the padding. Test split: every key has k_motif_size tokens;
scored are the value tokens of pairs whose key appeared earlier, plus the final value. Valid split: the training
distribution (key sizes 1..k_motif_size), scored like the test except the first value token after a key shorter
than k_motif_size (the model cannot know that key has ended).

Differences from MAD (both to keep every scored answer determined by the inputs): MAD plants the probe at a
token offset drawn from [0, L - 2 |probe|), which can lie past where the pairs stop, leaving the final query
unseen; here the offset is drawn from the range where the probe always lands. MAD also trains on the padding.

Example (seq_len=24, vocab_size=16, k_motif_size=2, v_motif_size=2), decoded; `.` = unscored:

    position      :   0   1   2   3   4   5   6   7   8   9  10  11  12  13  14  15  16  17  18  19  20  21  22  23
    test inputs   :  15  15  15   4   5  10   6   2   9  11   6   2   9  11   0   1   7   3   0  10  14   6   2   9
    test targets  :   .   .   .   .   .   .   .   .   .   .   .   9  11   .   .   .   .   .   .   .   .   .   9  11
    train inputs  :  15  15  15  15   0   4   7   9   4  14   0   6  13   2   1  12  11   6   4  10   9   2   1  12
    train targets :   .   .   .   .   4   7   9   4  14   0   6  13   2   1  12  11   6   4  10   9   2   1  12  11

Test: pairs (4 5)->10, (6 2)->9 11, (6 2)->9 11 [repeat: scored at 11-12], (0 1)->7, (3 0)->10 14, final query
(6 2) -> 9 11 scored at 22-23. Train: key sizes vary ((0 4)->7 9, (4)->14, (0 6)->13, ...); every next token
after the padding is scored.
Knobs: vocab_size (MAD baseline 16; changes 32, 64, 128), seq_len (MAD 128; changes 256, 512, 1024),
k_motif_size and v_motif_size (MAD 3), num_train (MAD 12,800; changes 6400 ... 800), num_test (MAD 1280).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks._mad import check_positive, distinct_tuples, first_occurrence
from arena.tasks.base import IGNORE, Batch, Symbols, Task
from arena.tasks.shortcuts import last_where


@register_task("fuzzy_recall")
class FuzzyRecall(Task):
    """MAD fuzzy in-context recall: keys and values are multi-token motifs; values of repeated keys are scored."""

    @dataclass
    class Config(Task.Config):
        seq_len: int = 64  # tokens the model reads (left-padded); MAD baseline 128
        vocab_size: int = 16  # keys [0, n/2), values [n/2, n), n = V-1, pad V-1; MAD baseline 16
        k_motif_size: int = 3  # longest key in tokens (test keys all have this size); MAD 3
        v_motif_size: int = 3  # longest value in tokens; MAD 3

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        km, vm, L, V = cfg.k_motif_size, cfg.v_motif_size, cfg.seq_len, cfg.vocab_size
        check_positive("fuzzy_recall", k_motif_size=km, v_motif_size=vm)
        n = V - 1
        if n // 2 < km or n - n // 2 < vm:
            raise ConfigError(
                f"task fuzzy_recall: vocab_size={V} gives {n // 2} key and {n - n // 2} value ids; needs at least "
                f"k_motif_size={km} and v_motif_size={vm} (motif tokens are distinct)"
            )
        if L < 3 * (km + vm):
            raise ConfigError(
                f"task fuzzy_recall: seq_len={L} cannot fit motifs of k_motif_size={km} and v_motif_size={vm}; "
                f"needs seq_len >= {3 * (km + vm)}"
            )

    def symbols(self) -> list[Symbols]:
        n = self.cfg.vocab_size - 1
        return [Symbols(0, "k", "key tokens", count=n // 2), Symbols(n // 2, "v", "value tokens", count=n - n // 2),
                Symbols(n, ".", "PAD (left padding)")]

    def shortcut_predictions(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        # the latest value token: recency without a key lookup (values [n/2, n), n = vocab_size - 1)
        n = self.cfg.vocab_size - 1
        return {"last_value": last_where((inputs >= n // 2) & (inputs < n), inputs)}

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        c = self.cfg
        E, L, km, vm, pad = num_examples, c.seq_len, c.k_motif_size, c.v_motif_size, c.vocab_size - 1
        n = c.vocab_size - 1
        nk = n // 2
        rows = np.arange(E)[:, None]

        # the probe pair (key sizes vary only in training, as in MAD; validation draws the training distribution)
        probe_ks = np.full(E, km) if split == "test" else rng.integers(1, km + 1, size=E)
        probe_vs = rng.integers(1, vm + 1, size=E)
        probe_k, probe_v = distinct_tuples(rng, (E,), 0, nk, km), distinct_tuples(rng, (E,), nk, n, vm)
        stop = L - probe_ks - probe_vs - (km + vm)  # MAD adds pairs while the sequence is shorter than this
        probe_at = rng.integers(0, stop - (km + vm) + 1)  # token offset where the probe is planted

        # candidate pair slots; at most (stop_max + 1) // 2 + 1 are used since every pair has >= 2 tokens
        S = (L - 2 - (km + vm)) // 2 + 2
        ks = np.full((E, S), km) if split == "test" else rng.integers(1, km + 1, size=(E, S))
        drawn_vs = rng.integers(1, vm + 1, size=(E, S))
        # slot i depends on slots <= i alone, and only slots starting before `stop` matter (a pair is at least
        # its key size + 1 tokens): work on that prefix, plus one slot for the planted probe
        reach = np.cumsum(ks + 1, axis=1) - (ks + 1)
        keep = min(S, int((reach < stop[:, None]).sum(1).max(initial=0)) + 1)
        kt = distinct_tuples(rng, (E, S), 0, nk, km, keep)
        drawn_vt = distinct_tuples(rng, (E, S), nk, n, vm, keep)
        S = keep

        # slot S of every row holds the probe pair, so each lookup below is one flat gather
        W = S + 1
        at_row = rows * W
        ks_all = np.concatenate([ks[:, :S], probe_ks[:, None]], 1)
        # motif tokens component-major, [km, E, W] and [vm, E, W], so each token position is one flat array
        kt_all = np.concatenate([np.moveaxis(kt, -1, 0), probe_k.T[..., None]], 2)  # moveaxis: a contiguous view
        ids = np.zeros((E, W), dtype=np.int64)  # a tuple's id; sizes differ in the number of nonzero digits
        for i in range(km):
            ids += (i < ks_all) * (kt_all[i] + 1) * (nk + 1) ** i
        is_probe = ids[:, :S] == ids[:, S:]
        first = first_occurrence(ids[:, :S])
        # the slot whose drawn value a slot's key takes: its first occurrence, or the probe's own
        value_src = np.concatenate([np.where(is_probe, S, first), np.full((E, 1), S)], 1)
        vs_all = np.concatenate([drawn_vs[:, :S], probe_vs[:, None]], 1).take(at_row + value_src)
        vs = vs_all[:, :S]
        before = np.cumsum(ks_all[:, :S] + vs, axis=1) - (ks_all[:, :S] + vs)
        probe_seen = np.where(is_probe.any(1), is_probe.argmax(1), S)  # a drawn pair may already be the probe
        plant_slot = (before >= probe_at[:, None]).argmax(1)
        planted = plant_slot <= probe_seen

        # item order: slots before plant_slot, the planted probe, the remaining slots, then the final query
        t = np.arange(S + 1)
        probe_item = planted[:, None] & (t == plant_slot[:, None])
        src = np.minimum(t - (planted[:, None] & (t > plant_slot[:, None])), S - 1)
        real = planted[:, None] | (t < S)  # without a planted probe, item S does not exist
        answered = (first.take(at_row - rows + src) < src) | (is_probe.take(at_row - rows + src) & planted[:, None])
        item = at_row + np.where(probe_item, S, src)  # flat index of each item's slot
        item_ks = ks_all.take(item) * real
        item_vs = vs_all.take(item) * real
        value_item = at_row + value_src.take(item)
        start = np.cumsum(item_ks + item_vs, axis=1) - (item_ks + item_vs)
        kept = real & (start < stop[:, None])
        item_ks, item_vs = item_ks * kept, item_vs * kept
        used = (item_ks + item_vs).sum(1)
        offset = L + 1 - used - probe_ks - probe_vs  # >= 2: the padding
        n_items = int(kept.sum(1).max(initial=0))  # the kept items are a prefix: drop the rest
        item, value_item = item[:, :n_items], value_item[:, :n_items]
        item_ks, item_vs, kept = item_ks[:, :n_items], item_vs[:, :n_items], kept[:, :n_items]
        answered, probe_item = answered[:, :n_items], probe_item[:, :n_items]

        # lay the tokens of every row out in order (items, then the final query; key tokens, then value tokens)
        # and write each row's run right-aligned into MAD's L + 1 raw tokens
        size_k = np.concatenate([item_ks, probe_ks[:, None]], 1)  # [E, n_items + 1]
        size_v = np.concatenate([item_vs, probe_vs[:, None]], 1)
        key_of = np.concatenate([item, at_row + S], 1)
        value_of = np.concatenate([value_item, at_row + S], 1)
        drawn_vt_all = np.concatenate([np.moveaxis(drawn_vt, -1, 0), probe_v.T[..., None]], 2)
        tokens = np.empty((E, n_items + 1, km + vm), dtype=np.int64)
        for i in range(km):
            tokens[..., i] = kt_all[i].take(key_of)
        for i in range(vm):
            tokens[..., km + i] = drawn_vt_all[i].take(value_of)
        present = np.concatenate([np.arange(km) < size_k[..., None], np.arange(vm) < size_v[..., None]], 2)
        laid = tokens[present]  # row by row, in sequence order
        count = used + probe_ks + probe_vs  # = L + 1 - offset
        dest = np.repeat(rows[:, 0] * (L + 1) + offset - (np.cumsum(count) - count), count) + np.arange(len(laid))
        raw = np.full(E * (L + 1), pad, dtype=np.int64)
        raw[dest] = laid
        raw = raw.reshape(E, L + 1)

        inputs = raw[:, :L]
        if split == "train":
            targets = np.where(np.arange(L) >= offset[:, None], raw[:, 1:], IGNORE)
        else:  # the value tokens of answered pairs and of the final query
            scored = np.concatenate([answered & ~probe_item & kept, np.ones((E, 1), dtype=bool)], 1)
            graded = np.zeros_like(present)
            graded[..., km:] = present[..., km:] & scored[..., None]
            # the first value token is predicted at the key's last token, which is known to be the last only when
            # the key has k_motif_size tokens (a shorter one might go on): on validation's mixed key sizes that
            # answer is not determined by the inputs, so it is left unscored (the test's keys are all full size)
            graded[..., km] &= size_k == km
            graded = graded[present]
            raw_targets = np.full(E * (L + 1), IGNORE, dtype=np.int64)
            raw_targets[dest[graded]] = laid[graded]
            targets = raw_targets.reshape(E, L + 1)[:, 1:]
        return Batch(torch.from_numpy(np.ascontiguousarray(inputs)), torch.from_numpy(np.ascontiguousarray(targets)))
