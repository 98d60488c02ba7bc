"""Group word problems S3, S5, A5 as token tagging (Merrill et al. 2024; DeltaProduct; docs/probes.md#s3-s5-a5).

Isolates non-abelian state tracking: the model reads group elements g_1 .. g_n and must emit the running
product after EVERY token (all content positions scored). S3 is solvable (DeltaProduct
needs 2 Householder steps in one layer), A5 and S5 are non-solvable (NC1-complete word problems: fixed-depth
TC0 models such as Transformers and diagonal SSMs cannot solve them for all n; S5 needs 4 steps in one layer).

Elements are permutations p of {0 .. k-1} (k = 3 or 5) written as image tuples, p[i] = image of i, listed in
lexicographic order (A5: the even ones only); element number j has token id j + 1, so the identity is
token 1 and id 0 is PAD (vocab = order + 1: 7, 121, 61). The running product applies g_1 first:
P_t[i] = g_t[P_{t-1}[i]], P_1 = g_1, i.e. P_t = g_t o ... o g_1 as functions. targets[t] = token of P_{t+1}.

Example `s3` (seq_len=8, train lengths 6-6), decoded (ids: 1 e=012, 2 =021, 3 =102, 4 =120, 5 =201, 6 =210):

    position:  0  1  2  3  4  5  6  7
    inputs  :  6  4  4  2  2  1  0  0      (210 120 120 021 021 012, then PAD)
    targets :  6  2  3  5  3  3  .  .      (scored: positions 0-5; e.g. P_2[i] = 120[210[i]] = 021 -> token 2)

Knobs: train_min_len / train_max_len (DeltaProduct: fixed 128; Merrill: 2..k), test_min_len / test_max_len
(DeltaProduct: 512); `elements` restricts the INPUT letters as in Grazzi's S5 variants: "all",
"swaps" (identity and transpositions), "swaps_3cycles" (plus 3-cycles); labels still range over the group.
`at_length(L)` tests exactly length L. Chance accuracy = 1 / order.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError, choice_error
from arena.tasks import register_task
from arena.tasks._lengths import at_length_of, check_lengths, draw_lengths
from arena.tasks.base import IGNORE, PAD, Batch, Symbols, Task

SUBSETS = ("all", "swaps", "swaps_3cycles")


def permutations(degree: int, even_only: bool) -> np.ndarray:
    """[order, degree] image tuples of S_degree (or A_degree), lexicographic."""
    perms = np.array(list(itertools.permutations(range(degree))), dtype=np.int64)
    if even_only:
        inversions = (perms[:, :, None] > perms[:, None, :]) & np.triu(np.ones((degree, degree), bool), 1)
        perms = perms[inversions.sum(axis=(1, 2)) % 2 == 0]
    return perms


def moved_points(perms: np.ndarray) -> np.ndarray:
    """[order] how many points each permutation moves (0 identity, 2 transposition, 3 three-cycle)."""
    return (perms != np.arange(perms.shape[1])).sum(axis=1)


class _WordProblem(Task):
    degree, even_only = 3, False

    @dataclass
    class Config(Task.Config):
        seq_len: int = 64  # L; must fit test_max_len (DeltaProduct: 512)
        vocab_size: int = 7  # must be order + 1 (PAD + one id per element)
        train_min_len: int = 16  # content tokens, every one scored (DeltaProduct: 128; Merrill: 2)
        train_max_len: int = 16  # (DeltaProduct: 128; Merrill: k up to 20)
        test_min_len: int = 64  # (DeltaProduct: 512)
        test_max_len: int = 64  # (DeltaProduct: 512)
        elements: str = "all"  # input letters: all | swaps | swaps_3cycles (Grazzi's S5 variants)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        name = self.registry_name
        perms = permutations(self.degree, self.even_only)
        order = perms.shape[0]
        if cfg.vocab_size != order + 1:
            raise ConfigError(f"task {name}: vocab_size={cfg.vocab_size} must be {order + 1} (PAD + {order} elements)")
        check_lengths(name, cfg, shortest=1)
        if cfg.elements not in SUBSETS:
            raise choice_error(f"task {name}: elements", cfg.elements, SUBSETS)
        moved = moved_points(perms)
        allowed = {"all": moved >= 0, "swaps": moved <= 2, "swaps_3cycles": moved <= 3}[cfg.elements]
        if self.even_only and cfg.elements != "all":
            raise ConfigError(f"task {name}: elements={cfg.elements!r} needs transpositions, which are odd; use all")
        self.perms = perms
        self.letters = np.flatnonzero(allowed)  # element numbers the inputs may use
        # mul[a, b] = element number of "a, then b": (b o a)[i] = b[a[i]]
        index = {tuple(p): j for j, p in enumerate(perms.tolist())}
        self.mul = np.array([[index[tuple(b[a])] for b in perms] for a in perms], dtype=np.int64)
        self.chance_accuracy = 1.0 / order

    def symbols(self) -> list[Symbols]:
        names = tuple("".join(map(str, p)) for p in self.perms.tolist())  # image tuples, "012.." = identity
        return [Symbols(PAD, ".", "PAD"), Symbols(1, names, f"permutations as image tuples, {names[0]} = identity")]

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> Batch:
        L = self.cfg.seq_len
        lengths = draw_lengths(rng, self.cfg, num_examples, split)  # [E]
        letters = self.letters[rng.integers(0, len(self.letters), size=(num_examples, L))]  # [E, L]
        prefix = letters.copy()  # columns past the longest content stay unscored
        for t in range(1, int(lengths.max())):  # a scan over time, vectorized over the batch (L table lookups in all)
            prefix[:, t] = self.mul[prefix[:, t - 1], letters[:, t]]
        content = np.arange(L)[None, :] < lengths[:, None]
        inputs = np.where(content, letters + 1, PAD)
        targets = np.where(content, prefix + 1, IGNORE)
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets))

    def at_length(self, seq_len: int) -> Task:
        return at_length_of(self, seq_len)


@register_task("s3")
class S3(_WordProblem):
    """Word problem of S3 (order 6, solvable): the running product of permutations, scored at every token."""

    degree, even_only = 3, False
    chance_accuracy = 1 / 6


@register_task("s5")
class S5(_WordProblem):
    """Word problem of S5 (order 120, non-solvable): the running product of permutations, scored at every token."""

    degree, even_only = 5, False
    chance_accuracy = 1 / 120

    @dataclass
    class Config(_WordProblem.Config):
        vocab_size: int = 121  # must be order + 1 (PAD + 120 elements)


@register_task("a5")
class A5(_WordProblem):
    """Word problem of A5 (order 60, non-solvable): the running product of even permutations, scored at every token."""

    degree, even_only = 5, True
    chance_accuracy = 1 / 60

    @dataclass
    class Config(_WordProblem.Config):
        vocab_size: int = 61  # must be order + 1 (PAD + 60 elements)
