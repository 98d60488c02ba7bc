"""Delta-rule kernels (KDA and Gated DeltaNet): the chunked form against the token-loop oracle, and more.

Checks, for both ops: chunk == naive_recurrent (outputs, final states and the gradients of q, k, v, g, beta
and the initial state) over lengths that are not multiples of the chunk, with and without an initial state,
gates from 0 down to -20 per step, and allow_neg_eigval on and off; other chunk sizes; fp64; a loop of
decode steps == naive_recurrent; naive_recurrent == the dense matrix formula (so the oracle itself is
checked); errors for a bad backend, chunk size or shape; fp16/bf16 inputs give o in that dtype and an fp32
state.
Run: PYTHONPATH=. pytest tests/kernels/test_delta_rule.py -q
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from arena.errors import ConfigError
from arena.kernels.gated_delta_rule import (
    chunk_gated_delta_rule,
    gated_delta_rule_decode_step,
    naive_recurrent_gated_delta_rule,
)
from arena.kernels.kda import chunk_kda, kda_decode_step, naive_recurrent_kda
from arena.testing import assert_close

OPS = {
    "kda": SimpleNamespace(naive=naive_recurrent_kda, chunk=chunk_kda, step=kda_decode_step, per_channel=True),
    "gdn": SimpleNamespace(naive=naive_recurrent_gated_delta_rule, chunk=chunk_gated_delta_rule,
                           step=gated_delta_rule_decode_step, per_channel=False),
}
B, H, K, V = 2, 2, 16, 8
RATIO = 1e-4


def make_inputs(op: str, T: int, dtype=torch.float32, seed: int = 0, gate_min: float = -20.0):
    """L2-normalized q, k (the kernels do not normalize); gates gate_min * U^3 with a quarter exact zeros."""
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=torch.float64), dim=-1)
    k = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=torch.float64), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen, dtype=torch.float64)
    g_shape = (B, T, H, K) if OPS[op].per_channel else (B, T, H)
    g = gate_min * torch.rand(g_shape, generator=gen, dtype=torch.float64) ** 3
    g = g.masked_fill(torch.rand(g_shape, generator=gen) < 0.25, 0.0)
    beta = torch.randn(B, T, H, generator=gen, dtype=torch.float64).sigmoid()
    h0 = torch.randn(B, H, K, V, generator=gen, dtype=torch.float64)
    return [x.to(dtype) for x in (q, k, v, g, beta)], h0.to(dtype)


def run_with_grads(fn, inputs, h0, neg: bool, seed: int = 1, **kwargs):
    """Forward with the final state, then backward of a random linear loss; returns (o, S, grads)."""
    leaves = [x.clone().requires_grad_() for x in inputs]
    h0 = None if h0 is None else h0.clone().requires_grad_()
    o, S = fn(*leaves, initial_state=h0, output_final_state=True, allow_neg_eigval=neg, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    do, dS = torch.randn(o.shape, generator=gen, dtype=o.dtype), torch.randn(S.shape, generator=gen, dtype=S.dtype)
    ((o * do).sum() + (S * dS).sum()).backward()
    grads = {name: x.grad for name, x in zip(("q", "k", "v", "g", "beta"), leaves)}
    if h0 is not None:
        grads["h0"] = h0.grad
    return o, S, grads


def assert_matches_naive(op: str, T: int, use_h0: bool, neg: bool, ratio: float = RATIO, dtype=torch.float32,
                         gate_min: float = -20.0, **chunk_kwargs):
    inputs, h0 = make_inputs(op, T, dtype=dtype, gate_min=gate_min)
    h0 = h0 if use_h0 else None
    o_ref, S_ref, g_ref = run_with_grads(OPS[op].naive, inputs, h0, neg)
    o, S, grads = run_with_grads(OPS[op].chunk, inputs, h0, neg, **chunk_kwargs)
    assert o.dtype == dtype and S.dtype == dtype
    assert_close("o", o_ref, o, ratio)
    assert_close("final state", S_ref, S, ratio)
    assert set(grads) == set(g_ref)
    # KDA at T=1 without h0: the output never sees the decay (it multiplies the zero state), so dg is zero in
    # exact arithmetic; the token loop gives exact zeros and the chunked form rounding noise of ~1e-9 of the
    # largest gradient in fp32. The floor (10 eps of that scale) covers such a gradient; any larger one meets ratio.
    floor = 10 * torch.finfo(dtype).eps * max(t.abs().max().item() for t in g_ref.values()) if T == 1 else 0.0
    for name in g_ref:
        assert_close(f"d{name}", g_ref[name], grads[name], ratio, atol=floor)


CASES = [(op, T, use_h0, neg) for op in OPS for T in (1, 63, 64, 100, 200)
         for use_h0 in (False, True) for neg in (False, True)]
IDS = [f"{op}-T{T}-{'h0' if use_h0 else 'noh0'}-{'neg' if neg else 'pos'}" for op, T, use_h0, neg in CASES]


@pytest.mark.parametrize("op,T,use_h0,neg", CASES, ids=IDS)
def test_chunk_matches_naive(op, T, use_h0, neg):
    assert_matches_naive(op, T, use_h0, neg)


@pytest.mark.parametrize("op,chunk_size", [(op, c) for op in OPS for c in (2, 8, 32, 64)],
                         ids=[f"{op}-C{c}" for op in OPS for c in (2, 8, 32, 64)])
def test_other_chunk_sizes_match_naive(op, chunk_size):
    assert_matches_naive(op, 100, use_h0=True, neg=True, chunk_size=chunk_size)


@pytest.mark.parametrize("op", OPS)
def test_gates_beyond_the_decay_floor_match_naive(op):
    """Gates to -200 per step: cumulative decays far below the exp(-80) floor stay finite and exact."""
    assert_matches_naive(op, 70, use_h0=True, neg=False, gate_min=-200.0)


@pytest.mark.parametrize("op", OPS)
def test_fp64_matches_naive(op):
    assert_matches_naive(op, 100, use_h0=True, neg=True, ratio=1e-10, dtype=torch.float64)


@pytest.mark.parametrize("op", OPS)
def test_final_state_only_on_request(op):
    inputs, _ = make_inputs(op, 5)
    for fn in (OPS[op].naive, OPS[op].chunk):
        o, S = fn(*inputs)
        assert o.shape == (B, 5, H, V) and S is None


@pytest.mark.parametrize("op,neg", [(op, neg) for op in OPS for neg in (False, True)],
                         ids=[f"{op}-{'neg' if neg else 'pos'}" for op in OPS for neg in (False, True)])
def test_decode_steps_match_naive(op, neg):
    T = 20
    (q, k, v, g, beta), h0 = make_inputs(op, T)
    o_ref, S_ref = OPS[op].naive(q, k, v, g, beta, initial_state=h0, output_final_state=True, allow_neg_eigval=neg)
    S, outs = h0, []
    for t in range(T):
        S_before = S.clone()
        o_t, S_next = OPS[op].step(q[:, t], k[:, t], v[:, t], g[:, t], beta[:, t], S, allow_neg_eigval=neg)
        assert torch.equal(S, S_before), "decode step modified its input state in place"
        outs.append(o_t)
        S = S_next
    assert_close("o", o_ref, torch.stack(outs, dim=1), RATIO)
    assert_close("final state", S_ref, S, RATIO)


@pytest.mark.parametrize("op", OPS)
def test_decode_step_without_state_starts_from_zeros(op):
    (q, k, v, g, beta), _ = make_inputs(op, 1)
    step_args = (q[:, 0], k[:, 0], v[:, 0], g[:, 0], beta[:, 0])
    o_none, S_none = OPS[op].step(*step_args, None)
    o_zero, S_zero = OPS[op].step(*step_args, torch.zeros(B, H, K, V))
    assert torch.equal(o_none, o_zero) and torch.equal(S_none, S_zero)


def dense_reference(op: str, q, k, v, g, beta, h0, neg: bool):
    """S_t = (I - b k k^T) Diag(exp(g)) S_{t-1} + b k v^T (KDA; GDN: exp(g) (I - b k k^T) S + b k v^T)."""
    scale = q.shape[-1] ** -0.5
    eye = torch.eye(q.shape[-1], dtype=q.dtype)
    o = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    S = h0.clone()
    for t in range(q.shape[1]):
        for b in range(q.shape[0]):
            for h in range(q.shape[2]):
                kt, vt, bt = k[b, t, h][:, None], v[b, t, h][:, None], beta[b, t, h] * (2 if neg else 1)
                reflect = eye - bt * kt @ kt.T
                if op == "kda":
                    S[b, h] = reflect @ torch.diag(g[b, t, h].exp()) @ S[b, h] + bt * kt @ vt.T
                else:
                    S[b, h] = g[b, t, h].exp() * (reflect @ S[b, h]) + bt * kt @ vt.T
                o[b, t, h] = S[b, h].T @ (scale * q[b, t, h])
    return o, S


@pytest.mark.parametrize("op,neg", [(op, neg) for op in OPS for neg in (False, True)],
                         ids=[f"{op}-{'neg' if neg else 'pos'}" for op in OPS for neg in (False, True)])
def test_naive_matches_dense_formula(op, neg):
    (q, k, v, g, beta), h0 = make_inputs(op, 2, dtype=torch.float64, gate_min=-2.0)
    o_ref, S_ref = dense_reference(op, q, k, v, g, beta, h0, neg)
    o, S = OPS[op].naive(q, k, v, g, beta, initial_state=h0, output_final_state=True, allow_neg_eigval=neg)
    assert_close("o", o_ref, o, 1e-12)
    assert_close("final state", S_ref, S, 1e-12)


@pytest.mark.parametrize("op", OPS)
def test_bad_backend_and_chunk_size_raise_config_error(op):
    inputs, _ = make_inputs(op, 4)
    with pytest.raises(ConfigError, match="backend='cuda'.*torch.*triton"):
        OPS[op].chunk(*inputs, backend="cuda")
    for bad in (0, 24, 16.0):
        with pytest.raises(ConfigError, match="chunk_size"):
            OPS[op].chunk(*inputs, chunk_size=bad)


@pytest.mark.parametrize("op", OPS)
def test_bad_shapes_raise_value_error(op):
    (q, k, v, g, beta), h0 = make_inputs(op, 4)
    wrong_g = g[..., 0] if OPS[op].per_channel else g.unsqueeze(-1).expand(*g.shape, K)
    for fn in (OPS[op].naive, OPS[op].chunk):
        with pytest.raises(ValueError, match="g must be"):
            fn(q, k, v, wrong_g, beta)
        with pytest.raises(ValueError, match="beta must be"):
            fn(q, k, v, g, beta[:, :-1])
        with pytest.raises(ValueError, match="k shape"):
            fn(q, k[..., :-1], v, g, beta)
        with pytest.raises(ValueError, match="state must be"):
            fn(q, k, v, g, beta, initial_state=h0[..., :-1])
    with pytest.raises(ValueError, match="state must be"):
        OPS[op].step(q[:, 0], k[:, 0], v[:, 0], g[:, 0], beta[:, 0], h0[:1])


@pytest.mark.parametrize("op,dtype", [(op, d) for op in OPS for d in (torch.float16, torch.bfloat16)],
                         ids=[f"{op}-{str(d)[6:]}" for op in OPS for d in (torch.float16, torch.bfloat16)])
def test_low_precision_inputs(op, dtype):
    """o comes back in the input dtype, the state in fp32, both matching fp32 math on the same values."""
    inputs, h0 = make_inputs(op, 40, dtype=dtype)
    o_ref, S_ref = OPS[op].naive(*(x.float() for x in inputs), initial_state=h0.float(), output_final_state=True)
    for fn in (OPS[op].naive, OPS[op].chunk):
        o, S = fn(*inputs, initial_state=h0, output_final_state=True)
        assert o.dtype == dtype and S.dtype == torch.float32
        assert_close("o", o_ref, o, 1e-2)
        assert_close("final state", S_ref, S, 1e-4)
    q, k, v, g, beta = (x[:, 0] for x in inputs)
    o_t, S_t = OPS[op].step(q, k, v, g, beta, h0)
    assert o_t.dtype == dtype and S_t.dtype == torch.float32


def test_public_ops_take_their_options_by_keyword():
    """After the tensors (and a decode step's state), every argument is keyword-only: no call can pass 14 positions
    and silently shift one. The same for the fused Triton ops and their twins."""
    import inspect

    from arena.kernels.ssd import chunk_ssd, naive_recurrent_ssd, ssd_decode_step

    qkvgb, qkvg = ["q", "k", "v", "g", "beta"], ["q", "k", "v", "g"]
    ops = {chunk_kda: qkvgb, naive_recurrent_kda: qkvgb, kda_decode_step: qkvgb + ["state"],
           chunk_gated_delta_rule: qkvgb, naive_recurrent_gated_delta_rule: qkvgb,
           gated_delta_rule_decode_step: qkvgb + ["state"],
           chunk_ssd: qkvg, naive_recurrent_ssd: qkvg, ssd_decode_step: qkvg + ["state"]}
    try:
        from arena.kernels.fused.gated_norm import gated_rmsnorm, gated_rmsnorm_reference
        from arena.kernels.fused.short_conv import causal_conv1d, causal_conv1d_reference
        from arena.kernels.ssd.recurrent import fused_recurrent_ssd, fused_recurrent_ssd_decode_step
        from arena.kernels.ssd.triton_ssd import chunk_ssd_triton
        from arena.kernels.triton_delta.chunk import chunk_delta_rule_triton
        from arena.kernels.triton_delta.recurrent import fused_recurrent_decode_step, fused_recurrent_delta_rule
        ops |= {chunk_delta_rule_triton: qkvgb, fused_recurrent_delta_rule: qkvgb,
                fused_recurrent_decode_step: qkvgb + ["state"], chunk_ssd_triton: qkvg,
                fused_recurrent_ssd: qkvg, fused_recurrent_ssd_decode_step: qkvg + ["state"],
                gated_rmsnorm: ["o", "gate", "weight"], gated_rmsnorm_reference: ["o", "gate", "weight"],
                causal_conv1d: ["x", "weight", "bias"], causal_conv1d_reference: ["x", "weight", "bias"]}
    except ImportError:  # no Triton here: its entry points cannot be imported, nor called
        pass
    for op, tensors in ops.items():
        params = inspect.signature(op).parameters.values()
        positional = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        assert positional == tensors, (op.__name__, positional)
    (q, k, v, g, beta), h0 = make_inputs("kda", 3)
    with pytest.raises(TypeError):
        chunk_kda(q, k, v, g, beta, None, h0)


def test_compiled_triton_refuses_fp32_wide_k_training_only(monkeypatch):
    """On a GPU (not the interpreter, which has no shared-memory limit) the delta rules' Triton path refuses fp32
    q, k, v with K > 128 when a backward will run, with the reason the SSD gives too; bf16, K = 128 or no backward
    pass."""
    import arena.kernels.triton_delta as triton_delta
    from arena.kernels import _dispatch

    monkeypatch.setattr(triton_delta, "interpreting", lambda: False)
    monkeypatch.setattr(triton_delta, "triton_status", lambda device: (True, ""))
    blocker = _dispatch._triton_blocker("cuda", (torch.float32,) * 3, 130, 64, training=True)
    assert blocker == "fp32 inputs with K=130 > 128 overflow shared memory in the backward; use bf16/fp16 or K <= 128"
    assert _dispatch._triton_blocker("cuda", (torch.float32,) * 3, 130, 64, training=False) is None
    assert _dispatch._triton_blocker("cuda", (torch.float32,) * 3, 128, 64, training=True) is None
    assert _dispatch._triton_blocker("cuda", (torch.bfloat16,) * 3, 256, 64, training=True) is None
    monkeypatch.setattr(triton_delta, "interpreting", lambda: True)
    assert _dispatch._triton_blocker("cuda", (torch.float32,) * 3, 130, 64, training=True) is None
