"""SSD kernels on CPU: chunked form == token-loop oracle (outputs, final state, every gradient), decode step,
a hand-written T=2 check, dtypes and input errors.

Run: PYTHONPATH=. pytest tests/kernels/test_ssd.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from arena.errors import ConfigError
from arena.kernels.ssd import chunk_ssd, naive_recurrent_ssd, ssd_decode_step
from arena.testing import assert_close

B, H, K, V = 2, 3, 16, 8
# log-decay per step: none at all, mild (long memory), and strong (the state forgets within a few tokens)
DECAYS = {"nodecay": (0.0, 0.0), "mild": (0.0, 0.5), "strong": (0.0, 20.0)}


def make_inputs(T: int, decay: str, h0: bool, dtype=torch.float32):
    lo, hi = DECAYS[decay]
    q = torch.randn(B, T, H, K, dtype=dtype)
    k = torch.randn(B, T, H, K, dtype=dtype) / math.sqrt(K)
    v = torch.randn(B, T, H, V, dtype=dtype)
    g = -(lo + (hi - lo) * torch.rand(B, T, H, dtype=dtype))
    state = torch.randn(B, H, K, V, dtype=dtype) if h0 else None
    return q, k, v, g, state


CHUNK_CASES = [(T, h0, decay) for T in (1, 63, 64, 100, 300) for h0 in (True, False) for decay in DECAYS]
CHUNK_IDS = [f"T{T}-{'h0' if h0 else 'noh0'}-{decay}" for T, h0, decay in CHUNK_CASES]


@pytest.mark.parametrize("T,h0,decay", CHUNK_CASES, ids=CHUNK_IDS)
def test_chunk_matches_naive(T, h0, decay):
    inputs = make_inputs(T, decay, h0)
    names = ["q", "k", "v", "g", "h0"][: 5 if h0 else 4]
    leaves = [t.clone().requires_grad_() for t in inputs if t is not None]
    do, dS = torch.randn(B, T, H, V), torch.randn(B, H, K, V)

    results = {}
    for label, fn in (("naive", naive_recurrent_ssd), ("chunk", chunk_ssd)):
        args = [t.detach().clone().requires_grad_() for t in leaves]
        q, k, v, g = args[:4]
        o, S = fn(q, k, v, g, scale=0.5, initial_state=args[4] if h0 else None, output_final_state=True)
        ((o * do).sum() + (S * dS).sum()).backward()
        results[label] = (o, S, [a.grad for a in args])

    (o_ref, S_ref, grads_ref), (o, S, grads) = results["naive"], results["chunk"]
    assert_close("o", o_ref, o, 1e-4)
    assert_close("final state", S_ref, S, 1e-4)
    for name, ref, out in zip(names, grads_ref, grads):
        assert_close(f"d{name}", ref, out, 1e-4)


@pytest.mark.parametrize(
    "T,h0", [(64, True), (64, False), (100, True), (100, False)], ids=["T64-h0", "T64-noh0", "T100-h0", "T100-noh0"]
)
def test_without_final_state_outputs_and_gradients_match(T, h0):
    """output_final_state=False skips the last chunk's state; o and its gradients must not change."""
    inputs = [t for t in make_inputs(T, "mild", h0) if t is not None]
    grads = {}
    for label, fn in (("naive", naive_recurrent_ssd), ("chunk", chunk_ssd)):
        args = [t.clone().requires_grad_() for t in inputs]
        o, S = fn(*args[:4], initial_state=args[4] if h0 else None)
        assert S is None
        (o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum().backward()
        grads[label] = [o] + [a.grad for a in args]
    for name, ref, out in zip(["o", "dq", "dk", "dv", "dg", "dh0"], grads["naive"], grads["chunk"]):
        assert_close(name, ref, out, 1e-4)


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 128], ids=lambda c: f"C{c}")
def test_chunk_size_does_not_change_result(chunk_size):
    q, k, v, g, h0 = make_inputs(50, "mild", True)
    o_ref, S_ref = naive_recurrent_ssd(q, k, v, g, initial_state=h0, output_final_state=True)
    o, S = chunk_ssd(q, k, v, g, initial_state=h0, output_final_state=True, chunk_size=chunk_size)
    assert_close("o", o_ref, o, 1e-4)
    assert_close("final state", S_ref, S, 1e-4)


def test_no_nan_gradient_under_extreme_decay():
    """-inf is put in the exponent above the diagonal; an exp(+big) * 0 mask would give inf/NaN gradients."""
    q, k, v, g, h0 = (t.requires_grad_() for t in make_inputs(128, "strong", True))
    g.data.mul_(5)  # up to -100 per step: exp(cumsum) spans far beyond fp32 range within one chunk
    o, S = chunk_ssd(q, k, v, g, initial_state=h0, output_final_state=True)
    (o.sum() + S.sum()).backward()
    for name, t in zip("qkvg", (q, k, v, g)):
        assert torch.isfinite(t.grad).all(), f"d{name} is not finite"


@pytest.mark.parametrize("h0", [True, False], ids=["h0", "noh0"])
def test_decode_steps_match_naive(h0):
    q, k, v, g, state = make_inputs(20, "mild", h0)
    o_ref, S_ref = naive_recurrent_ssd(q, k, v, g, scale=0.5, initial_state=state, output_final_state=True)
    S = state
    before = None if state is None else state.clone()
    outs = []
    for t in range(q.shape[1]):
        o_t, S = ssd_decode_step(q[:, t], k[:, t], v[:, t], g[:, t], S, scale=0.5)
        outs.append(o_t)
    assert_close("o", o_ref, torch.stack(outs, dim=1), 1e-4)
    assert_close("final state", S_ref, S, 1e-4)
    if state is not None:
        assert torch.equal(state, before), "ssd_decode_step changed its input state in place"


def test_naive_matches_hand_written_T2():
    """o_2 = s (e^{g1+g2} S0^T q2 + e^{g2} v1 (k1.q2) + v2 (k2.q2)) and o_1 = s (e^{g1} S0^T q1 + v1 (k1.q1))."""
    q, k, v = torch.randn(1, 2, 1, 3), torch.randn(1, 2, 1, 3), torch.randn(1, 2, 1, 2)
    g = torch.tensor([[[-0.3], [-1.2]]])
    S0 = torch.randn(1, 1, 3, 2)
    o, S = naive_recurrent_ssd(q, k, v, g, scale=0.7, initial_state=S0, output_final_state=True)
    (q1, q2), (k1, k2), (v1, v2), (g1, g2), s0 = q[0, :, 0], k[0, :, 0], v[0, :, 0], g[0, :, 0], S0[0, 0]
    o1 = 0.7 * (torch.exp(g1) * s0.T @ q1 + v1 * (k1 @ q1))
    o2 = 0.7 * (torch.exp(g1 + g2) * s0.T @ q2 + torch.exp(g2) * v1 * (k1 @ q2) + v2 * (k2 @ q2))
    S2 = torch.exp(g1 + g2) * s0 + torch.exp(g2) * torch.outer(k1, v1) + torch.outer(k2, v2)
    assert_close("o1", o1, o[0, 0, 0], 1e-6)
    assert_close("o2", o2, o[0, 1, 0], 1e-6)
    assert_close("S2", S2, S[0, 0], 1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["fp64", "bf16"])
def test_output_and_state_dtypes(dtype):
    q, k, v, g, h0 = make_inputs(70, "mild", True, dtype=dtype)
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    for fn in (naive_recurrent_ssd, chunk_ssd):
        o, S = fn(q, k, v, g, initial_state=h0, output_final_state=True)
        assert o.dtype == dtype and S.dtype == state_dtype, fn.__name__
    o, S = ssd_decode_step(q[:, 0], k[:, 0], v[:, 0], g[:, 0], h0)
    assert o.dtype == dtype and S.dtype == state_dtype


def test_bad_backend_is_a_config_error():
    q, k, v, g, _ = make_inputs(8, "mild", False)
    with pytest.raises(ConfigError, match="backend.*torch.*triton"):
        chunk_ssd(q, k, v, g, backend="cuda")


def test_bad_shapes_raise_value_error():
    q, k, v, g, h0 = make_inputs(8, "mild", True)
    bad = [
        ("k", (q, k[..., :-1], v, g, h0)),
        ("v", (q, k, v[:, :-1], g, h0)),
        ("g", (q, k, v, g[..., None], h0)),
        ("initial_state", (q, k, v, g, h0[..., :-1])),
    ]
    for name, (q_, k_, v_, g_, h_) in bad:
        for fn in (naive_recurrent_ssd, chunk_ssd):
            with pytest.raises(ValueError, match=name):
                fn(q_, k_, v_, g_, initial_state=h_)


def test_packed_sequences_match_each_sequence_alone():
    """cu_seqlens in the token loop and the chunked form: o, the N final states and every gradient (dh0 per
    sequence) equal a plain loop over the sequences; chunk_size 16 puts boundaries inside chunks."""
    lengths = (1, 15, 16, 17, 0, 40)
    T, N = sum(lengths), len(lengths)
    q, k, v, g, _ = make_inputs(T, "mild", False)
    q, k, v, g = (x[:1] for x in (q, k, v, g))
    h0 = torch.randn(N, H, K, V)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    do, dS = torch.randn(1, T, H, V), torch.randn(N, H, K, V)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, g, h0)]
    outs, states, t0 = [], [], 0
    for n, L in enumerate(lengths):
        o, S = naive_recurrent_ssd(*(x[:, t0:t0 + L] for x in leaves[:4]), scale=0.5,
                                   initial_state=leaves[4][n:n + 1], output_final_state=True)
        outs.append(o)
        states.append(S)
        t0 += L
    o_ref, S_ref = torch.cat(outs, 1), torch.cat(states, 0)
    want = torch.autograd.grad((o_ref * do).sum() + (S_ref * dS).sum(), leaves)
    for fn, opts in ((naive_recurrent_ssd, {}), (chunk_ssd, {"chunk_size": 16})):
        args = [x.detach().clone().requires_grad_() for x in leaves]
        o, S = fn(*args[:4], scale=0.5, initial_state=args[4], output_final_state=True, cu_seqlens=cu, **opts)
        assert S.shape == (N, H, K, V)
        assert_close("o", o_ref, o, 1e-5)
        assert_close("final states", S_ref, S, 1e-5)
        got = torch.autograd.grad((o * do).sum() + (S * dS).sum(), args)
        for name, a, b in zip(["dq", "dk", "dv", "dg", "dh0"], want, got):
            assert_close(f"{fn.__name__} {name}", a, b, 1e-5)


@pytest.mark.parametrize("bad,match", [
    (torch.tensor([0, 5, 4, 8]), "rise from 0"),
    (torch.tensor([0, 5]), "rise from 0"),
    (torch.tensor([0.0, 8.0]), "int32/int64"),
    ("B2", "packed into B=1"),
])
def test_bad_cu_seqlens_is_one_line_error(bad, match):
    q, k, v, g, _ = make_inputs(8, "mild", False)  # B = 2
    if bad != "B2":
        q, k, v, g = (x[:1] for x in (q, k, v, g))
    cu = torch.tensor([0, 3, 8]) if isinstance(bad, str) else bad
    for fn in (naive_recurrent_ssd, chunk_ssd):
        with pytest.raises(ValueError, match=match):
            fn(q, k, v, g, cu_seqlens=cu)
