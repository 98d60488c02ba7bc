"""Shared pieces of the MAD probes (Poli et al. 2024, athms/mad-lab; docs/probes.md#mad-probes).

Private to arena/tasks (not scanned by the registry). `sample_recall` is MAD's multi-query in-context recall
generator, used by `in_context_recall` (no noise) and `noisy_recall` (noise chunks between pairs):

    batch = sample_recall(rng, num_examples, seq_len=64, vocab_size=16, noise_vocab_size=0, frac_noise=0.0,
                          split="test")

MAD conventions kept here: `seq_len` counts MAD's raw sequence (pairs * 2); the model reads its first
seq_len - 1 tokens (MAD's autoregressive shift) and the last input slot is a PAD, never scored.
"""

from __future__ import annotations

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks.base import IGNORE, PAD, Batch, Symbols


def check_positive(task: str, **knobs: int) -> None:
    for key, value in knobs.items():
        if value < 1:
            raise ConfigError(f"task {task}: {key}={value} must be >= 1")


def check_recall(task: str, seq_len: int, vocab_size: int, noise_vocab_size: int, frac_noise: float) -> None:
    """One-line ConfigErrors for the knobs of MAD's in-context recall generator."""
    if seq_len % 2 or seq_len < 4:
        raise ConfigError(f"task {task}: seq_len={seq_len} must be even and >= 4 (MAD builds it from k v pairs)")
    if noise_vocab_size < 0 or vocab_size - noise_vocab_size < 2:
        raise ConfigError(
            f"task {task}: vocab_size={vocab_size} minus noise_vocab_size={noise_vocab_size} must leave >= 2 "
            f"ids (keys and values)"
        )
    if not 0 <= frac_noise < 1:
        raise ConfigError(f"task {task}: frac_noise={frac_noise} must lie in [0, 1)")
    if frac_noise > 0 and noise_vocab_size < 1:
        raise ConfigError(f"task {task}: frac_noise={frac_noise} > 0 needs noise_vocab_size >= 1")


def recall_symbols(vocab_size: int, noise_vocab_size: int) -> list[Symbols]:
    """Token table of `sample_recall`: keys, values, noise. The last input is PAD = id 0, which is also key k0."""
    n = vocab_size - noise_vocab_size
    return [Symbols(0, "k", "keys (k0 is also the final PAD)", count=n // 2),
            Symbols(n // 2, "v", "values", count=n - n // 2), Symbols(n, "n", "noise", count=noise_vocab_size)]


def first_occurrence(ids: np.ndarray) -> np.ndarray:
    """[E, S] -> [E, S] index of the first slot in the same row holding the same id (ties: earliest)."""
    num_rows, num_slots = ids.shape
    keys = ids.astype(np.uint16) if ids.size and 0 <= ids.min() and ids.max() < 2**16 else ids  # radix-sortable
    order = np.argsort(keys, axis=1, kind="stable")  # equal ids stay in slot order
    flat = order + num_slots * np.arange(num_rows)[:, None]  # flat gathers beat take_along_axis
    ranked = ids.take(flat)
    starts = np.ones_like(ranked, dtype=bool)
    starts[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    # every sorted position points back to the sorted position where its run of equal ids begins
    run_start = np.maximum.accumulate(starts * np.arange(num_slots), axis=1)
    first = np.empty_like(order)
    first.ravel()[flat] = order.take(run_start + (flat - order))
    return first


def distinct_tuples(
    rng: np.random.Generator, shape: tuple, low: int, high: int, count: int, keep: int | None = None
) -> np.ndarray:
    """[*shape, count] ints from [low, high), distinct along the last axis, uniform over ordered tuples.

    Draw i picks the r-th id not yet taken (r < span - i): cheap for MAD's short motifs, where the argsort
    route of `sample_distinct` would sort a full row of the sub-vocabulary per tuple. `keep` returns only the
    first `keep` entries along the last axis of `shape`; the random stream is the same as without it. The result
    is a view of tuple-position-major storage: `np.moveaxis(result, -1, 0)` is contiguous."""
    kept = (*shape[:-1], min(shape[-1], keep)) if shape and keep is not None else shape
    out = np.empty((count, *kept), dtype=np.int64)  # tuple position first: each draw fills one contiguous block
    taken: list[np.ndarray] = []  # the ids drawn so far, kept sorted elementwise (ascending)
    for i in range(count):
        r = np.ascontiguousarray(rng.integers(0, high - low - i, size=shape)[tuple(slice(0, k) for k in kept)])
        for t in taken:  # ascending: step over every taken id <= r
            r += r >= t
        out[i] = r
        for j in range(len(taken)):  # insert r into the sorted list with min/max swaps
            taken[j], r = np.minimum(taken[j], r), np.maximum(taken[j], r)
        taken.append(r)
    if low:
        out += low
    return np.moveaxis(out, 0, -1)


def sample_recall(
    rng: np.random.Generator, num_examples: int, seq_len: int, vocab_size: int, noise_vocab_size: int,
    frac_noise: float, split: str,
) -> Batch:
    """MAD's `generate_in_context_recall_instance` with multi_query=True, vectorized over examples.

    Keys [0, n/2), values [n/2, n) with n = vocab_size - noise_vocab_size, noise [n, vocab_size). seq_len/2 - 1
    slots each hold a key-value pair (keys with replacement; a key's value is drawn once per sequence, so two
    keys may share a value) or, with probability frac_noise, two noise tokens; one slot is never noise. A final
    pair repeats a presented key (uniform over the distinct presented keys). Train targets: every next token.
    Test and valid targets (one distribution for all splits; valid is judged as the test is): values whose key
    was presented earlier in the sequence, including the final one.
    """
    E, slots = num_examples, seq_len // 2 - 1
    n = vocab_size - noise_vocab_size
    num_keys = n // 2
    keys = rng.integers(0, num_keys, size=(E, slots))
    table = rng.integers(num_keys, n, size=(E, num_keys))  # this sequence's key -> value map
    values = np.take_along_axis(table, keys, axis=1)
    noise = rng.random((E, slots)) < frac_noise
    # MAD draws its never-noise slot over all pairs, final one included (then an all-noise sequence crashes
    # its probe draw); drawing it among the context slots keeps the same rate of noise without that failure
    noise[np.arange(E), rng.integers(0, slots, size=E)] = False
    noise_tokens = rng.integers(n, vocab_size, size=(E, slots, 2)) if noise_vocab_size else None

    # a value is answerable when its key sat in an earlier pair (noise slots get ids no key can share)
    ids = np.where(noise, num_keys + np.arange(slots), keys)
    repeated = first_occurrence(ids) < np.arange(slots)

    presented = np.zeros((E, num_keys + 1), dtype=bool)
    np.put_along_axis(presented, np.where(noise, num_keys, keys), True, axis=1)
    probe_key = np.argmax(np.where(presented[:, :num_keys], rng.random((E, num_keys)), -1.0), axis=1)
    probe_value = table[np.arange(E), probe_key]

    raw = np.empty((E, seq_len), dtype=np.int64)  # MAD's sequence before its shift
    raw[:, 0:-2:2] = keys if noise_tokens is None else np.where(noise, noise_tokens[..., 0], keys)
    raw[:, 1:-2:2] = values if noise_tokens is None else np.where(noise, noise_tokens[..., 1], values)
    raw[:, -2], raw[:, -1] = probe_key, probe_value

    inputs = np.full((E, seq_len), PAD, dtype=np.int64)
    inputs[:, :-1] = raw[:, :-1]
    targets = np.full((E, seq_len), IGNORE, dtype=np.int64)
    if split == "train":
        targets[:, :-1] = raw[:, 1:]  # plain LM loss on every token, as MAD trains
    else:
        targets[:, 0:-2:2] = np.where(repeated & ~noise, values, IGNORE)  # at the key: predict its value
        targets[:, -2] = probe_value
    return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))
