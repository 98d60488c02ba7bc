"""State-tracking probes (parity, modular arithmetic with/without brackets, S3/S5/A5 word problems): independent
solvers that recompute every label from the decoded inputs, the scored positions, the split-dependent length
ranges, knob validation, and one smoke training (GDN with negative eigenvalues learns parity).

Run: PYTHONPATH=. pytest tests/tasks/test_state_tracking.py -q
"""

from __future__ import annotations

import itertools

import pytest

from arena.errors import ConfigError
from arena.tasks import IGNORE, PAD, build_task

SHORT = {"seq_len": 24, "train_min_len": 3, "train_max_len": 10, "test_min_len": 10, "test_max_len": 24}
PUBLISHED = {"seq_len": 256, "train_min_len": 3, "train_max_len": 40, "test_min_len": 40, "test_max_len": 256}


def rows(task, n, split, seed=7):
    batch = task.generate(n, seed, split)
    return list(zip(batch.inputs.tolist(), batch.targets.tolist()))


def content_length(inputs: list[int]) -> int:
    return next((t for t, tok in enumerate(inputs) if tok == PAD), len(inputs))


# ---- parity -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting", [{}, SHORT, PUBLISHED], ids=["default", "short", "published"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_parity_labels_agree_with_independent_solver(setting, split):
    task = build_task("parity", **setting)
    for inputs, targets in rows(task, 300, split):
        n_bits = content_length(inputs)
        assert all(tok == PAD for tok in inputs[n_bits:])
        ones = sum(tok == 2 for tok in inputs[:n_bits])
        scored = {t: y for t, y in enumerate(targets) if y != IGNORE}
        assert scored == {n_bits - 1: 1 + ones % 2}  # one answer, at the last bit: 1 = even, 2 = odd


def test_parity_lengths_follow_the_split():
    task = build_task("parity", **PUBLISHED)
    for split, (lo, hi) in {"train": (3, 40), "test": (40, 256)}.items():
        lengths = {content_length(x) + 1 for x, _ in rows(task, 3000, split)}  # + the answer slot
        assert min(lengths) == lo and max(lengths) == hi


# ---- modular arithmetic -------------------------------------------------------------------------------------

def decode_expression(inputs: list[int], modulus: int) -> tuple[str, int]:
    """The expression before `=` as Python source text, and the position of `=`."""
    symbols = {1: "+", 2: "-", 3: "*", 5 + modulus: "(", 6 + modulus: ")"}
    symbols.update({5 + d: str(d) for d in range(modulus)})
    eq = inputs.index(4)
    return "".join(symbols[tok] for tok in inputs[:eq]), eq


def evaluate(expr: str, modulus: int) -> int:
    assert set(expr) <= set("0123456789+-*()"), expr  # only what the generator may emit reaches eval
    return eval(expr) % modulus  # Python's precedence is the task's: `*` before `+ -`, unary minus


MOD_SETTINGS = {
    "default": {},
    "short-no-mult": {**SHORT, "mult": False},
    "published": PUBLISHED,
    "mod7": {**SHORT, "modulus": 7, "vocab_size": 12},
}


@pytest.mark.parametrize("name", ["modular_arithmetic", "modular_arithmetic_brackets"])
@pytest.mark.parametrize("setting", MOD_SETTINGS, ids=list(MOD_SETTINGS))
@pytest.mark.parametrize("split", ["train", "valid", "test"])  # valid: what early stopping and the lr choice read
def test_modular_arithmetic_labels_agree_with_python_eval(name, setting, split):
    overrides = dict(MOD_SETTINGS[setting])
    if name.endswith("brackets") and "vocab_size" in overrides:
        overrides["vocab_size"] += 2
    task = build_task(name, **overrides)
    m = task.cfg.modulus
    saw_times = saw_brackets = False
    for inputs, targets in rows(task, 200, split):
        expr, eq = decode_expression(inputs, m)
        assert all(tok == PAD for tok in inputs[eq + 1:])  # the answer slot and the tail stay PAD
        scored = {t: y for t, y in enumerate(targets) if y != IGNORE}
        assert scored == {eq: 5 + evaluate(expr, m)}
        saw_times |= "*" in expr
        saw_brackets |= "(" in expr
    assert saw_times == task.cfg.mult
    assert saw_brackets == name.endswith("brackets")


def test_modular_arithmetic_lengths_follow_the_split():
    plain = build_task("modular_arithmetic", **PUBLISHED)
    for split, (lo, hi) in {"train": (3, 39), "test": (39, 255)}.items():  # xLSTM's odd lengths 2k - 1
        lengths = {x.index(4) + 2 for x, _ in rows(plain, 3000, split)}
        assert min(lengths) == lo and max(lengths) == hi and all(n % 2 for n in lengths)
    nested = build_task("modular_arithmetic_brackets", **PUBLISHED)
    for split, (lo, hi) in {"train": (5, 40), "test": (40, 256)}.items():  # short ones raised to 5
        lengths = {x.index(4) + 3 for x, _ in rows(nested, 3000, split)}
        assert min(lengths) == lo and max(lengths) == hi


# ---- word problems ------------------------------------------------------------------------------------------

def group_elements(name: str) -> list[tuple[int, ...]]:
    """The documented vocabulary, rebuilt here: permutations in lexicographic order, A5 = the even ones."""
    degree = 3 if name == "s3" else 5
    perms = list(itertools.permutations(range(degree)))
    if name == "a5":
        perms = [p for p in perms if sum(p[i] > p[j] for i in range(5) for j in range(i + 1, 5)) % 2 == 0]
    return perms


WORD_SETTINGS = {
    "default": {},
    "merrill-mixed-lengths": {"seq_len": 20, "train_min_len": 2, "train_max_len": 20, "test_min_len": 20,
                              "test_max_len": 20},
    "swaps": {"elements": "swaps"},
}


WORD_CASES = [(n, s) for n in ("s3", "s5", "a5") for s in WORD_SETTINGS if (n, s) != ("a5", "swaps")]  # A5: no swaps


@pytest.mark.parametrize("name,setting", WORD_CASES, ids=[f"{n}-{s}" for n, s in WORD_CASES])
@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_word_problem_labels_are_prefix_products(name, setting, split):
    task = build_task(name, **WORD_SETTINGS[setting])
    elements = group_elements(name)
    assert task.vocab_size == len(elements) + 1
    for inputs, targets in rows(task, 100, split):
        n = content_length(inputs)
        state = tuple(range(len(elements[0])))
        expected = []
        for tok in inputs[:n]:
            g = elements[tok - 1]
            state = tuple(g[state[i]] for i in range(len(state)))  # apply the earlier letters first
            expected.append(elements.index(state) + 1)
        assert targets[:n] == expected and all(y == IGNORE for y in targets[n:])
        if setting == "swaps":
            assert all(sum(a != b for a, b in enumerate(elements[tok - 1])) in (0, 2) for tok in inputs[:n])
    lo, hi = (task.cfg.train_min_len, task.cfg.train_max_len) if split != "test" else (  # valid: training lengths
        task.cfg.test_min_len, task.cfg.test_max_len)
    lengths = {content_length(x) for x, _ in rows(task, 500, split)}
    assert min(lengths) == lo and max(lengths) == hi


def test_word_problems_are_not_abelian_shortcuts():
    """S3 labels depend on letter order: swapping two non-commuting letters changes the final product."""
    task = build_task("s3", seq_len=2, train_min_len=2, train_max_len=2, test_min_len=2, test_max_len=2)
    finals = {}
    for inputs, targets in rows(task, 200, "train"):
        finals[tuple(inputs)] = targets[1]
    assert any(finals.get((b, a)) not in (None, y) for (a, b), y in finals.items())


# ---- shared: chance, at_length, knob errors -----------------------------------------------------------------

@pytest.mark.parametrize("name,chance", [("parity", 1 / 2), ("modular_arithmetic", 1 / 5),
                                         ("modular_arithmetic_brackets", 1 / 5), ("s3", 1 / 6),
                                         ("s5", 1 / 120), ("a5", 1 / 60)])
def test_chance_accuracy(name, chance):
    task = build_task(name)
    assert type(task).chance_accuracy == pytest.approx(chance) and task.chance_accuracy == pytest.approx(chance)


def test_chance_follows_the_modulus():
    assert build_task("modular_arithmetic", modulus=7, vocab_size=12).chance_accuracy == pytest.approx(1 / 7)


@pytest.mark.parametrize("name", ["parity", "modular_arithmetic", "modular_arithmetic_brackets", "s3"])
def test_at_length_tests_exactly_that_length(name):
    task = build_task(name).at_length(100)
    cfg = task.cfg
    assert (cfg.seq_len, cfg.test_min_len, cfg.test_max_len) == (100, 100, 100)
    for _, targets in rows(task, 50, "test"):
        last_scored = max(t for t, y in enumerate(targets) if y != IGNORE)
        assert last_scored >= 96  # every test sequence is ~100 long (odd lengths: 99), answer at its end


@pytest.mark.parametrize("name,overrides,message", [
    ("parity", {"seq_len": 32}, "seq_len=32 cannot fit test_max_len=64"),
    ("parity", {"train_min_len": 20, "train_max_len": 10}, "train_min_len=20, train_max_len=10"),
    ("parity", {"vocab_size": 4}, "vocab_size=4 must be 3"),
    ("modular_arithmetic", {"modulus": 7}, "vocab_size=10 must be 12 for modulus=7"),
    ("modular_arithmetic_brackets", {"train_min_len": 2}, "train_min_len=2"),
    ("modular_arithmetic", {"modulus": 1, "vocab_size": 6}, "modulus=1 must be >= 2"),
    ("s5", {"vocab_size": 120}, "vocab_size=120 must be 121"),
    ("s3", {"elements": "cycles"}, "elements='cycles' is not valid"),
    ("a5", {"elements": "swaps"}, "transpositions, which are odd"),
    ("s3", {"test_max_len": 65}, "seq_len=64 cannot fit test_max_len=65"),
], ids=["parity-short-seq", "parity-min-gt-max", "parity-vocab", "modarith-vocab", "brackets-too-short",
        "modulus-1", "s5-vocab", "s3-elements", "a5-swaps", "s3-too-long"])
def test_knob_errors(name, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_task(name, **overrides)


# ---- smoke training -----------------------------------------------------------------------------------------

def test_gdn_with_negative_eigenvalues_learns_parity(smoke_train):
    task = {"name": "parity", "seq_len": 12, "train_min_len": 2, "train_max_len": 8, "test_min_len": 8,
            "test_max_len": 12, "num_train": 2000, "num_test": 200}
    windows = smoke_train(task, steps=90, eval_every=30, mixer={"name": "gdn", "allow_neg_eigval": True})
    first, last = windows[0]["train_loss"], windows[-1]["train_loss"]
    assert last < 0.5 * first, f"training loss {first:.3f} -> {last:.3f} did not fall"
