"""MAD's six probes: independent solvers that agree with every label, scoring per split, knob errors, and a
smoke training that shows the loss falling.

    PYTHONPATH=. pytest tests/tasks/test_mad.py -q

Each solver reads only the decoded input tokens (plus the documented id layout), never the generators.
"""

from __future__ import annotations

from collections import Counter

import pytest

from arena.errors import ConfigError
from arena.tasks import IGNORE, build_task

SPLITS = ("train", "test")


def labels(targets: list[int]) -> dict[int, int]:
    return {t: y for t, y in enumerate(targets) if y != IGNORE}


def rows(task, n: int, split: str, seed: int = 7):
    batch = task.generate(n, [seed, 0], split)
    return list(zip(batch.inputs.tolist(), batch.targets.tolist()))


# --- in-context recall and noisy recall -------------------------------------------------------------------------

def solve_recall(inputs: list[int], num_content: int) -> dict[int, int]:
    """Answers at each key whose pair appeared before (content ids < num_content; larger ids are noise)."""
    table, answers = {}, {}
    last = len(inputs) - 2  # the final query key; the input after it is PAD
    for j in range(0, last + 1, 2):
        key = inputs[j]
        if key >= num_content:
            assert inputs[j + 1] >= num_content, f"noise chunk at {j} is not two noise tokens"
            continue
        assert key < num_content // 2, f"key {key} at {j} is not a key id"
        if key in table:
            answers[j] = table[key]
        if j < last:
            assert table.setdefault(key, inputs[j + 1]) == inputs[j + 1], f"key {key} changed its value at {j}"
    assert last in answers, "the final query must repeat a presented key"
    return answers


RECALL = {
    "icr-default": ("in_context_recall", {}),
    "icr-V64-T128": ("in_context_recall", {"vocab_size": 64, "seq_len": 128}),
    "noisy-default": ("noisy_recall", {}),
    "noisy-f0.8-V48": ("noisy_recall", {"frac_noise": 0.8, "vocab_size": 48, "seq_len": 32}),
}


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("setting", RECALL)
def test_recall_labels_agree_with_solver(setting, split):
    name, knobs = RECALL[setting]
    task = build_task(name, **knobs)
    num_content = task.cfg.vocab_size - getattr(task.cfg, "noise_vocab_size", 0)
    L = task.seq_len
    for inputs, targets in rows(task, 300, split):
        answers = solve_recall(inputs, num_content)
        assert inputs[-1] == 0 and targets[-1] == IGNORE
        if split == "test":
            assert labels(targets) == answers  # exactly the repeated keys' values and the final one
        else:  # MAD trains a plain LM: every next token, noise and first-seen values included
            assert targets[: L - 2] == inputs[1: L - 1] and targets[L - 2] == answers[L - 2]


def test_noise_chunks_come_at_the_configured_rate():
    task = build_task("noisy_recall", frac_noise=0.6)
    slots = [inputs[j] >= 16 for inputs, _ in rows(task, 400, "test") for j in range(0, task.seq_len - 2, 2)]
    assert abs(sum(slots) / len(slots) - 0.6) < 0.03


# --- fuzzy recall ---------------------------------------------------------------------------------------------

def solve_fuzzy(inputs: list[int], vocab_size: int) -> tuple[dict[int, int], list[tuple], int]:
    """Parse left padding, then alternating runs of key ids and value ids; answer the repeated keys' values.

    Returns the answers, the key tuples in order, and where the content starts."""
    pad, num_keys = vocab_size - 1, (vocab_size - 1) // 2
    start = next(i for i, tok in enumerate(inputs) if tok != pad)
    runs: list[list[int]] = []  # [start, token, token, ...] per run
    for pos in range(start, len(inputs)):
        is_key = inputs[pos] < num_keys
        if runs and (inputs[runs[-1][1]] < num_keys) == is_key:
            runs[-1].append(pos)
        else:
            runs.append([pos, pos])
    assert inputs[runs[0][1]] < num_keys, "content must start with a key"
    if len(runs) % 2:  # the final value was one token long: none of it is in the inputs
        runs.append([len(inputs)])
    table, answers, keys = {}, {}, []
    for k_run, v_run in zip(runs[0::2], runs[1::2]):
        key, value = tuple(inputs[p] for p in k_run[1:]), tuple(inputs[p] for p in v_run[1:])
        keys.append(key)
        if key in table:
            assert table[key][: len(value)] == value, f"key {key} changed its value"
            for i, tok in enumerate(table[key]):
                answers[v_run[0] - 1 + i] = tok
        else:
            table[key] = value
    assert len(inputs) - 1 in answers, "the final query must repeat a presented key"
    return answers, keys, start


FUZZY = {
    "default": {},
    "k2-v1-T32": {"k_motif_size": 2, "v_motif_size": 1, "seq_len": 32},
    "V32-k3-v2-T96": {"vocab_size": 32, "v_motif_size": 2, "seq_len": 96},
}


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("setting", FUZZY)
def test_fuzzy_labels_agree_with_solver(setting, split):
    task = build_task("fuzzy_recall", **FUZZY[setting])
    km, L = task.cfg.k_motif_size, task.seq_len
    sizes = Counter()
    for inputs, targets in rows(task, 300, split):
        answers, keys, start = solve_fuzzy(inputs, task.cfg.vocab_size)
        assert start >= 1, "MAD pads at least one token on the left"
        sizes.update(len(k) for k in keys)
        if split == "test":
            assert labels(targets) == answers
        else:  # LM loss on every token after the padding
            assert targets[:start] == [IGNORE] * start
            assert targets[start: L - 1] == inputs[start + 1:] and targets[L - 1] == answers[L - 1]
    if split == "test":
        assert set(sizes) == {km}  # test keys always have the maximum motif size
    else:
        assert set(sizes) == set(range(1, km + 1))


def test_fuzzy_test_split_has_mid_sequence_queries():
    # the final value alone averages 2 tokens (sizes 1-3); repeated keys inside the sequence add ~2 more at MAD's
    # baseline (about 23 pairs drawn from 210 three-token keys)
    counts = [len(labels(t)) for _, t in rows(build_task("fuzzy_recall", seq_len=128), 400, "test")]
    assert 3 < sum(counts) / len(counts) < 6


# --- selective copying ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("knobs", [{}, {"seq_len": 40, "num_tokens_to_copy": 16, "vocab_size": 32}],
                         ids=["default", "T40-n16-V32"])
def test_selective_copying_labels_agree_with_solver(knobs, split):
    task = build_task("selective_copying", **knobs)
    V, n, L = task.cfg.vocab_size, task.cfg.num_tokens_to_copy, task.seq_len
    for inputs, targets in rows(task, 300, split):
        copy_at = inputs.index(V - 1)
        data = [tok for tok in inputs[:copy_at] if tok != V - 2]
        assert copy_at == L - n - 1 and inputs[copy_at + 1:] == [V - 2] * n
        assert labels(targets) == {L - n + i: tok for i, tok in enumerate(data)}
        assert inputs[copy_at - 1] != V - 2  # MAD inserts blanks only before data tokens


# --- memorization ---------------------------------------------------------------------------------------------

def read_table(task, split: str, seed: int) -> dict[int, int]:
    table = {}
    insert = task.cfg.vocab_size - 1
    for inputs, targets in rows(task, 256, split, seed):
        assert sorted(labels(targets)) == list(range(1, task.seq_len, 2))
        for t, value in labels(targets).items():
            assert inputs[t] == insert
            assert table.setdefault(inputs[t - 1], value) == value, "a key must always give the same value"
    return table


@pytest.mark.parametrize("knobs", [{}, {"vocab_size": 64, "seq_len": 16}], ids=["default", "V64-T16"])
def test_memorization_table_is_fixed_and_shared_by_splits(knobs):
    task = build_task("memorization", **knobs)
    V = task.cfg.vocab_size
    train_table, test_table = read_table(task, "train", 1), read_table(task, "test", 2)
    assert train_table == test_table  # the same map in both splits, and across run seeds
    assert len(train_table) == (V - 1) // 2 and len(set(train_table.values())) == len(train_table)
    assert all(k < (V - 1) // 2 <= v < V - 1 for k, v in train_table.items())
    other = read_table(build_task("memorization", **knobs, kv_map_seed=1), "train", 1)
    assert other != train_table


# --- compression ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("knobs", [{}, {"seq_len": 16, "vocab_size": 8}], ids=["default", "T16-V8"])
def test_compression_labels_agree_with_solver(knobs, split):
    task = build_task("compression", **knobs)
    V, L = task.cfg.vocab_size, task.seq_len // 2
    assert task.vocab_size == V + L
    for inputs, targets in rows(task, 300, split):
        assert inputs[L - 1] == V - 1 and max(inputs[: L - 1]) < V - 1 and inputs[L:] == list(range(V, V + L))
        assert labels(targets) == {L + i: inputs[i] for i in range(L)}


# --- knob validation ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, knobs, message", [
    ("in_context_recall", {"seq_len": 63}, "seq_len=63 must be even"),
    ("noisy_recall", {"frac_noise": 1.0}, "frac_noise=1.0 must lie in"),
    ("noisy_recall", {"noise_vocab_size": 0}, "needs noise_vocab_size >= 1"),
    ("noisy_recall", {"vocab_size": 17}, "must leave >= 2 ids"),
    ("fuzzy_recall", {"seq_len": 16}, "seq_len=16 cannot fit motifs"),
    ("fuzzy_recall", {"vocab_size": 6}, "vocab_size=6 gives 2 key"),
    ("selective_copying", {"num_tokens_to_copy": 40}, "seq_len=64 cannot fit num_tokens_to_copy=40"),
    ("memorization", {"seq_len": 31}, "seq_len=31 must be even"),
    ("compression", {"seq_len": 33}, "seq_len=33 must be even"),
], ids=["icr-odd", "noisy-frac1", "noisy-no-noise-ids", "noisy-tiny-vocab", "fuzzy-short", "fuzzy-vocab",
        "copy-too-many", "mem-odd", "compress-odd"])
def test_bad_knobs_fail_in_one_line(name, knobs, message):
    with pytest.raises(ConfigError, match=message) as err:
        build_task(name, **knobs)
    assert "\n" not in str(err.value)


# --- learning -------------------------------------------------------------------------------------------------

def test_gdn_loss_falls_on_in_context_recall(smoke_train):
    task = {"name": "in_context_recall", "seq_len": 16, "vocab_size": 16, "num_train": 2000, "num_test": 200}
    losses = [record["train_loss"] for record in smoke_train(task, warmup_steps=5)]
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.2, losses
