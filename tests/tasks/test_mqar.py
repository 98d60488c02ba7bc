"""MQAR generator: determinism, vocabulary, scored positions, and an independent solver that agrees with the labels."""

from __future__ import annotations

import pytest
import torch

from arena.errors import ConfigError
from arena.tasks import IGNORE, build_task, list_tasks

SETTINGS = {
    "default": {},
    "zero-filler": {"random_non_queries": False, "seq_len": 32, "num_kv_pairs": 6, "vocab_size": 64},
    "two-passes-uniform": {"num_passes": 2, "power_a": 1.0, "seq_len": 48, "num_kv_pairs": 6},
}


def solve(inputs: list[int], num_pairs: int, num_passes: int) -> dict[int, int]:
    """Answer MQAR from the tokens alone: read the context's pairs, then answer every later key occurrence."""
    table = {inputs[2 * i]: inputs[2 * i + 1] for i in range(num_pairs)}
    return {t: table[tok] for t, tok in enumerate(inputs) if t >= 2 * num_pairs * num_passes and tok in table}


@pytest.mark.parametrize("setting", SETTINGS, ids=list(SETTINGS))
def test_labels_agree_with_independent_solver(setting):
    task = build_task("mqar", **SETTINGS[setting])
    cfg = task.cfg
    batch = task.generate(200, seed=5)
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
        scored = {t: y for t, y in enumerate(targets) if y != IGNORE}
        assert len(scored) == cfg.num_kv_pairs
        answers = solve(inputs, cfg.num_kv_pairs, cfg.num_passes)
        if not cfg.random_non_queries:
            assert answers == scored  # with zero filler, every key occurrence after the context is a query
        else:
            # random filler may repeat a key by chance (unscored); every scored position must still be answered
            assert all(answers.get(t) == y for t, y in scored.items())


def test_same_seed_same_data_different_seed_differs():
    task = build_task("mqar")
    a, b, c = task.generate(64, seed=[1, 0]), task.generate(64, seed=[1, 0]), task.generate(64, seed=[1, 1])
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)


def test_tokens_in_vocabulary_and_keys_distinct():
    task = build_task("mqar", vocab_size=40, seq_len=40, num_kv_pairs=8)
    batch = task.generate(300, seed=0)
    assert batch.inputs.min() >= 0 and batch.inputs.max() < task.vocab_size
    keys = batch.inputs[:, 0:16:2]
    values = batch.inputs[:, 1:16:2]
    assert (keys >= 1).all() and (keys < 20).all() and (values >= 20).all()
    assert all(len(set(row)) == 8 for row in keys.tolist())


def test_queries_cluster_near_context_with_small_power_a():
    near = build_task("mqar", seq_len=256, num_kv_pairs=4, power_a=0.01).generate(500, seed=0)
    flat = build_task("mqar", seq_len=256, num_kv_pairs=4, power_a=1.0).generate(500, seed=0)

    def mean_pos(b):
        return (b.targets != IGNORE).nonzero()[:, 1].float().mean()

    assert mean_pos(near) < mean_pos(flat) - 20


def test_too_long_for_sequence_fails_in_one_line():
    with pytest.raises(ConfigError, match="seq_len=16 cannot fit num_kv_pairs=8"):
        build_task("mqar", seq_len=16, num_kv_pairs=8)


def test_registry_lists_mqar():
    assert "mqar" in list_tasks()


# MQAR with filler at long context (conf/task/mqar_filler.yaml, issue 14.2) ---------------------------------------

def test_key_free_filler_scores_every_length_with_the_training_pairs():
    """filler_avoids_keys: at the training length and at 8x, the test split keeps the 16 pairs (16 scored answers a
    context-only solver gets right), only the filler grows, and no key of the sequence occurs outside its pair and
    its query; the filler still covers every other id (other keys, values, 0)."""
    task = build_task("mqar", seq_len=128, vocab_size=64, num_kv_pairs=16, filler_avoids_keys=True)
    for length in (128, 1024):
        long = task.at_length(length)
        assert long.cfg.num_kv_pairs == 16 and long.seq_len == length
        batch = long.generate(100, seed=[0, 1], split="test")
        seen = set()
        for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
            scored = {t: y for t, y in enumerate(targets) if y != IGNORE}
            assert len(scored) == 16 and solve(inputs, 16, 1) == scored  # every key occurrence is a query
            keys = set(inputs[0:32:2])
            filler = [tok for t, tok in enumerate(inputs) if t >= 32 and t not in scored]
            assert not keys & set(filler)
            seen.update(filler)
        if length == 1024:  # ~90k filler tokens over 64 ids: each id appears as filler in some sequence
            assert seen == set(range(64))


def test_zoology_filler_repeats_keys_at_long_lengths():
    """The default generator (Zoology's) puts the sequence's keys into the filler: why the knob exists."""
    task = build_task("mqar", seq_len=128, vocab_size=64, num_kv_pairs=16).at_length(1024)
    batch = task.generate(20, seed=0)
    inputs, targets = batch.inputs, batch.targets
    repeats = sum(len(set(row[0:32:2]) & {tok for t, tok in enumerate(row[32:], 32) if tgt[t] == IGNORE})
                  for row, tgt in zip(inputs.tolist(), targets.tolist()))
    assert repeats > 0


def test_key_free_filler_is_uniform_over_the_other_ids():
    import numpy as np

    from arena.tasks.mqar import draw_avoiding

    excluded = np.array([[1, 2, 5], [0, 6, 7]])
    out = draw_avoiding(np.random.default_rng(0), 8, excluded, 20000)
    for row, banned in zip(out, excluded):
        counts = np.bincount(row, minlength=8)
        assert (counts[banned] == 0).all()
        allowed = np.delete(counts, banned)
        assert allowed.min() > 0.9 * len(row) / 5 and allowed.max() < 1.1 * len(row) / 5


def test_key_free_filler_needs_random_filler():
    with pytest.raises(ConfigError, match="filler_avoids_keys=true needs random_non_queries=true"):
        build_task("mqar", filler_avoids_keys=True, random_non_queries=False)


def test_preset_setting_is_zoologys_256_16_with_key_free_filler():
    from arena.config_schema import compose_options

    cfg = compose_options("task", ["mqar_filler"])["mqar_filler"]
    assert (cfg["name"], cfg["seq_len"], cfg["num_kv_pairs"], cfg["filler_avoids_keys"]) == ("mqar", 256, 16, True)
    assert cfg["random_non_queries"] is True
