"""Fused recurrent Triton kernel (decoding) against the fp32 token-loop oracle, under the Triton CPU interpreter.

Checks, for KDA (per-channel g) and GDN (per-head g): outputs and final states == naive_recurrent_* in fp32
(rel RMS <= 1e-5) and with fp16 q, k, v (<= 5e-3), T in {1, 3, 17}, (K, V) in {(16, 16), (32, 48), (100, 64)}
(non-powers of two: masked blocks), with and without an initial state, allow_neg_eigval on and off, gates down to
-20 per step; value columns split over several programs; every output is NaN-poisoned before launch
(ARENA_TRITON_POISON=1). Also: decode_step == kda_decode_step / gated_delta_rule_decode_step, the input state is
left unchanged, non-contiguous inputs, T = 0, and the one-line error when grad is wanted.
Run: PYTHONPATH=. pytest tests/kernels/test_triton_recurrent.py -q
"""

from __future__ import annotations

import os
import sys

# Before anything imports triton: the interpreter replaces triton.language's own @jit helpers (tl.sum ...) at
# import time, so setting it later, or reloading this kernel's module, is not enough.
_TRITON_IMPORTED_COMPILED = "triton" in sys.modules and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

if _TRITON_IMPORTED_COMPILED:
    pytest.fail("triton was imported before TRITON_INTERPRET=1 was set (by an earlier test module); set it in "
                "tests/conftest.py before any import, or run this file alone", pytrace=False)
pytest.importorskip("triton")

from arena.kernels.gated_delta_rule.naive import (  # noqa: E402
    gated_delta_rule_decode_step,
    naive_recurrent_gated_delta_rule,
)
from arena.kernels.kda.naive import kda_decode_step, naive_recurrent_kda  # noqa: E402
from arena.kernels.triton_delta import recurrent  # noqa: E402
from arena.testing import assert_close  # noqa: E402

NAIVE = {"kda": naive_recurrent_kda, "gdn": naive_recurrent_gated_delta_rule}
STEP = {"kda": kda_decode_step, "gdn": gated_delta_rule_decode_step}
B, H = 1, 2
RATIO = {torch.float32: 1e-5, torch.float16: 5e-3}


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    monkeypatch.setenv("ARENA_TRITON_POISON", "1")  # an element the kernel never writes stays NaN and fails


def make_inputs(op: str, T: int, K: int, V: int, seed: int = 0):
    """fp32 inputs: L2-normalized q, k; gates -20 * U^3 with a quarter exact zeros; beta a sigmoid; a state."""
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)
    k = F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen)
    g_shape = (B, T, H, K) if op == "kda" else (B, T, H)
    g = -20.0 * torch.rand(g_shape, generator=gen) ** 3
    g = g.masked_fill(torch.rand(g_shape, generator=gen) < 0.25, 0.0)
    beta = torch.randn(B, T, H, generator=gen).sigmoid()
    h0 = torch.randn(B, H, K, V, generator=gen)
    return q, k, v, g, beta, h0


# Three of the four (initial state, neg eigval) pairs keep the interpreter time down; each flag is seen both ways.
@pytest.mark.parametrize("with_h0,neg", [(False, False), (True, False), (True, True)],
                         ids=["zero_state", "initial_state", "initial_state-neg_eigval"])
@pytest.mark.parametrize("K,V", [(16, 16), (32, 48), (100, 64)], ids=lambda x: str(x))
@pytest.mark.parametrize("T", [1, 3, 17], ids=lambda t: f"T{t}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("op", ["kda", "gdn"])
def test_matches_naive(op, dtype, T, K, V, with_h0, neg):
    q, k, v, g, beta, h0 = make_inputs(op, T, K, V)
    q, k, v = (x.to(dtype) for x in (q, k, v))
    if dtype == torch.float16:  # g and beta may come in any float dtype
        g, beta = g.to(torch.float16), beta.to(torch.bfloat16)
    h0 = h0 if with_h0 else None
    o, S = recurrent.fused_recurrent_delta_rule(q, k, v, g, beta, initial_state=h0, allow_neg_eigval=neg)
    # The oracle sees the same rounded inputs, in fp32: what is left is the kernel's error and o's rounding.
    o_ref, S_ref = NAIVE[op](*(x.float() for x in (q, k, v, g, beta)), initial_state=h0, output_final_state=True,
                             allow_neg_eigval=neg)
    assert o.dtype == dtype and S.dtype == torch.float32
    assert_close("o", o_ref, o, RATIO[dtype])
    assert_close("final state", S_ref, S, RATIO[dtype])


@pytest.mark.parametrize("K,V", [(32, 40), (100, 64)], ids=lambda x: str(x))
@pytest.mark.parametrize("op", ["kda", "gdn"])
def test_value_split_across_programs(monkeypatch, op, K, V):
    """Blocks of 16 value columns: several programs share one head's state, the last block partly masked."""
    monkeypatch.setattr(recurrent, "_block_v", lambda BK, V: 16)
    q, k, v, g, beta, h0 = make_inputs(op, 3, K, V, seed=3)
    o, S = recurrent.fused_recurrent_delta_rule(q, k, v, g, beta, initial_state=h0, allow_neg_eigval=True)
    o_ref, S_ref = NAIVE[op](q, k, v, g, beta, initial_state=h0, output_final_state=True, allow_neg_eigval=True)
    assert_close("o", o_ref, o, 1e-5)
    assert_close("final state", S_ref, S, 1e-5)


@pytest.mark.parametrize("op", ["kda", "gdn"])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_decode_step_matches_reference_step(op, with_state):
    q, k, v, g, beta, h0 = make_inputs(op, 1, 32, 48, seed=1)
    q, k, v, g, beta = (x[:, 0] for x in (q, k, v, g, beta))  # single token: [B, H, ...]
    state = h0 if with_state else None
    kept = None if state is None else state.clone()
    for neg in (False, True):
        o, S = recurrent.fused_recurrent_decode_step(q, k, v, g, beta, state, scale=0.3, allow_neg_eigval=neg)
        o_ref, S_ref = STEP[op](q, k, v, g, beta, state, scale=0.3, allow_neg_eigval=neg)
        assert o.shape == o_ref.shape and S.shape == S_ref.shape
        assert_close("o", o_ref, o, 1e-5)
        assert_close("new state", S_ref, S, 1e-5)
    if state is not None:
        assert torch.equal(state, kept), "the input state was modified"
        assert S.data_ptr() != state.data_ptr()


def test_steps_chain_to_the_sequence():
    q, k, v, g, beta, S = make_inputs("kda", 3, 16, 16, seed=2)
    o_seq, S_seq = recurrent.fused_recurrent_delta_rule(q, k, v, g, beta, initial_state=S)
    for t in range(3):
        o_t, S = recurrent.fused_recurrent_decode_step(q[:, t], k[:, t], v[:, t], g[:, t], beta[:, t], S)
        assert_close(f"o[{t}]", o_seq[:, t], o_t, 1e-6)
    assert_close("state", S_seq, S, 1e-6)


def test_input_state_unchanged_and_no_final_state():
    q, k, v, g, beta, h0 = make_inputs("gdn", 3, 16, 16)
    kept = h0.clone()
    o, S = recurrent.fused_recurrent_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=False)
    assert S is None and torch.equal(h0, kept)
    assert_close("o", naive_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h0)[0], o, 1e-5)


def test_non_contiguous_inputs_and_scale():
    q, k, v, g, beta, h0 = make_inputs("kda", 3, 32, 48)
    qt, kt = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k))  # same values, strided [B, T, H, K]
    assert not qt.is_contiguous()
    o, S = recurrent.fused_recurrent_delta_rule(qt, kt, v, g, beta, scale=0.5, initial_state=h0)
    o_ref, S_ref = naive_recurrent_kda(q, k, v, g, beta, scale=0.5, initial_state=h0, output_final_state=True)
    assert_close("o", o_ref, o, 1e-5)
    assert_close("final state", S_ref, S, 1e-5)


def test_bf16_values_give_bf16_output():
    q, k, v, g, beta, h0 = make_inputs("gdn", 3, 16, 16)
    q, k, v = (x.bfloat16() for x in (q, k, v))
    o, S = recurrent.fused_recurrent_delta_rule(q, k, v, g, beta, initial_state=h0)
    o_ref, S_ref = naive_recurrent_gated_delta_rule(*(x.float() for x in (q, k, v)), g, beta, initial_state=h0,
                                                    output_final_state=True)
    assert o.dtype == torch.bfloat16 and S.dtype == torch.float32
    assert_close("o", o_ref, o, 1e-2)
    assert_close("final state", S_ref, S, 1e-5)


def test_empty_sequence_returns_the_state():
    q, k, v, g, beta, h0 = make_inputs("kda", 0, 16, 16)
    o, S = recurrent.fused_recurrent_delta_rule(q, k, v, g, beta, initial_state=h0)
    assert o.shape == (B, 0, H, 16) and torch.equal(S, h0)


def test_grad_mode_raises_and_no_grad_runs():
    q, k, v, g, beta, h0 = make_inputs("kda", 1, 16, 16)
    q.requires_grad_()
    with pytest.raises(RuntimeError, match="inference only.*chunk"):
        recurrent.fused_recurrent_delta_rule(q, k, v, g, beta)
    with torch.no_grad():
        o, _ = recurrent.fused_recurrent_delta_rule(q, k, v, g, beta)
    assert torch.isfinite(o).all()


def test_bad_shapes_raise():
    q, k, v, g, beta, h0 = make_inputs("kda", 1, 16, 16)
    with pytest.raises(ValueError, match="g must be"):
        recurrent.fused_recurrent_delta_rule(q, k, v, g[..., :8], beta)
    with pytest.raises(ValueError, match="state must be"):
        recurrent.fused_recurrent_decode_step(q[:, 0], k[:, 0], v[:, 0], g[:, 0], beta[:, 0], h0[..., :8])
