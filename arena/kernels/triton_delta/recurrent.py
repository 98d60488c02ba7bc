"""Fused recurrent Triton kernel for decoding with the delta rules: KDA (per-channel gate) and Gated DeltaNet.

Runs a few tokens (any T is correct, but the loop over T is sequential) against a state, inference only:
    from arena.kernels.triton_delta.recurrent import fused_recurrent_delta_rule, fused_recurrent_decode_step
    o, S = fused_recurrent_delta_rule(q, k, v, g, beta, initial_state=S)      # q, k [B, T, H, K], v [B, T, H, V]
    o, S = fused_recurrent_decode_step(q, k, v, g, beta, S)                   # one token: q, k [B, H, K], v [B, H, V]
g is [B, T, H, K] (KDA, per channel) or [B, T, H] (GDN, per head), picked by g.dim(); beta is [B, T, H].
Per token, in fp32 (the state is [K, V], keys on rows):
    S <- exp(g_t)[:, None] * S;   u = beta_t (v_t - S^T k_t);   S <- S + k_t u^T;   o_t = S^T (scale q_t)
One program owns one (batch, head) and a block of BV value columns, with the whole [K, BV] state block in fp32
registers: S^T k and S^T q reduce over K, all inside the program, so splitting V across programs is exact.
The state is read once and written once, however many tokens run. Training uses the chunk kernels
(arena.kernels.kda.chunk_kda / arena.kernels.gated_delta_rule.chunk_gated_delta_rule): there is no backward here.
Needs CUDA, or TRITON_INTERPRET=1 on CPU; this module imports triton, so import it behind triton_status().
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from arena.kernels._delta_rule import check_inputs
from arena.kernels.triton_delta import output_buffer, triton_status

MAX_K = 256  # the [K, BV] state block lives in registers; beyond this it spills


@triton.jit
def _fused_recurrent_kernel(q, k, v, g, beta, h0, o, ht, scale, T,
                            H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                            PER_CHANNEL_GATE: tl.constexpr, HAS_INITIAL_STATE: tl.constexpr,
                            STORE_FINAL_STATE: tl.constexpr, NEG_EIGVAL: tl.constexpr, DELTA_RULE: tl.constexpr):
    # Inputs are contiguous: q, k, g(per channel) [B, T, H, K]; v, o [B, T, H, V]; g(per head), beta [B, T, H];
    # h0, ht [B, H, K, V]. Offsets in int64: B * T * H * V passes 2^31 on long prompts.
    # DELTA_RULE=False is Mamba2's SSD (arena/kernels/ssd/recurrent.py): S <- exp(g) S + k v^T, no beta (not read).
    i_bh = tl.program_id(0).to(tl.int64)
    i_v = tl.program_id(1)
    i_b = i_bh // H
    i_h = i_bh % H
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_state = i_bh * K * V + o_k[:, None] * V + o_v[None, :]

    b_s = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_INITIAL_STATE:
        b_s += tl.load(h0 + p_state, mask=m_kv, other=0.0).to(tl.float32)
    for t in range(0, T):
        i_tok = (i_b * T + t) * H + i_h  # row of [B * T * H]
        # Masked lanes load 0: padded key rows of the state stay 0, so they add nothing to the sums over K.
        b_q = tl.load(q + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32) * scale
        b_k = tl.load(k + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(v + i_tok * V + o_v, mask=m_v, other=0.0).to(tl.float32)
        if PER_CHANNEL_GATE:
            b_g = tl.load(g + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)
            b_s = b_s * tl.exp(b_g)[:, None]
        else:
            b_s = b_s * tl.exp(tl.load(g + i_tok).to(tl.float32))
        if DELTA_RULE:
            b_beta = tl.load(beta + i_tok).to(tl.float32)
            if NEG_EIGVAL:
                b_beta = 2.0 * b_beta
            b_u = b_beta * (b_v - tl.sum(b_s * b_k[:, None], axis=0))  # [BV]
            b_s += b_k[:, None] * b_u[None, :]
        else:
            b_s += b_k[:, None] * b_v[None, :]
        b_o = tl.sum(b_s * b_q[:, None], axis=0)  # [BV]
        tl.store(o + i_tok * V + o_v, b_o.to(o.dtype.element_ty), mask=m_v)
    if STORE_FINAL_STATE:
        tl.store(ht + p_state, b_s, mask=m_kv)


def _block_v(BK: int, V: int) -> int:
    # The kernel is bound by reading and writing the state. Measured on an H200 (bf16, T = 1): with many
    # (batch, head) pairs BK * BV = 8192 is fastest (B=256, H=16, K=V=128: 138 us for 537 MB, BV=8 takes 541 us);
    # with few pairs every choice takes ~2 us, launch-bound.
    return min(triton.next_power_of_2(V), 64, max(16, 8192 // BK))


def _num_warps(BK: int, BV: int) -> int:
    return 4 if BK * BV >= 4096 else 2


class Hints(NamedTuple):
    """What an op's one-line errors point to instead: its training kernels, fp64 reference and torch decode step."""
    training: str
    fp64: str
    decode: str


DELTA_HINTS = Hints("the chunk kernels (chunk_kda / chunk_gated_delta_rule)", "arena.kernels.kda.naive",
                    "arena.kernels.kda.naive.kda_decode_step")


def launch_recurrent(op: str, hints: Hints, q, k, v, g, beta, initial_state, *, scale, output_final_state,
                     allow_neg_eigval=False):
    """The shared body of the fused recurrent ops, after each op has checked its own input shapes: the checks
    that concern this kernel (inference only, no fp64, one device, Triton available, K <= MAX_K), the output
    buffers and the launch. beta=None runs Mamba2's SSD (DELTA_RULE=False; g stands in for the unread beta).
    scale None is K**-0.5."""
    delta_rule = beta is not None
    inputs = (q, k, v, g) + ((beta,) if delta_rule else ())
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (*inputs, initial_state)):
        raise RuntimeError(f"{op} is inference only (no backward); for training use {hints.training}, "
                           "or call this under torch.no_grad()")
    if torch.float64 in (q.dtype, k.dtype, v.dtype):
        raise ValueError(f"{op}: computes in fp32 and has no fp64 path; use {hints.fp64} for fp64")
    tensors = inputs + (() if initial_state is None else (initial_state,))
    if any(x.device != q.device for x in tensors):
        raise ValueError(f"{op}: all inputs must be on one device, got {sorted({str(x.device) for x in tensors})}")
    ok, reason = triton_status(q.device)
    if not ok:
        raise RuntimeError(f"{op}: Triton cannot run here ({reason}); use {hints.decode}")
    B, T, H, K = q.shape
    V = v.shape[-1]
    if K > MAX_K:
        raise ValueError(f"{op}: K={K} > {MAX_K}: the [K, BV] state block would not fit in registers")
    scale = K ** -0.5 if scale is None else float(scale)

    q, k, v, g = (x.contiguous() for x in (q, k, v, g))
    beta = beta.contiguous() if delta_rule else g
    h0 = None if initial_state is None else initial_state.to(torch.float32).contiguous()
    o = output_buffer((B, T, H, V), v.dtype, v.device)
    ht = output_buffer((B, H, K, V), torch.float32, v.device) if output_final_state else None
    if B * H == 0 or V == 0:
        if ht is not None:
            ht.zero_()
        return o, ht

    BK = triton.next_power_of_2(K)
    BV = _block_v(BK, V)  # the SSD shares the tuning: the same state-bound loop, one dot fewer per token
    grid = (B * H, triton.cdiv(V, BV))
    # Absent tensors get a stand-in pointer; the constexpr flags compile their loads and stores out.
    _fused_recurrent_kernel[grid](
        q, k, v, g, beta, o if h0 is None else h0, o, o if ht is None else ht, scale, T,
        H=H, K=K, V=V, BK=BK, BV=BV, PER_CHANNEL_GATE=g.dim() == 4, HAS_INITIAL_STATE=h0 is not None,
        STORE_FINAL_STATE=ht is not None, NEG_EIGVAL=bool(allow_neg_eigval), DELTA_RULE=delta_rule,
        num_warps=_num_warps(BK, BV),
    )
    return o, ht


def fused_recurrent_delta_rule(q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=True,
                               allow_neg_eigval=False):
    """Token-by-token delta rule in one Triton launch; KDA when g is [B, T, H, K], Gated DeltaNet when [B, T, H].

    q, k: [B, T, H, K]; v: [B, T, H, V] (fp32, fp16 or bf16); g: log-decay (<= 0); beta: [B, T, H]
    (doubled with allow_neg_eigval=True); g and beta in any float dtype. scale defaults to K**-0.5;
    initial_state: [B, H, K, V] (None = zeros), read only. All math is fp32.
    Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] fp32, or None if not output_final_state).
    """
    op = "fused_recurrent_delta_rule"
    check_inputs(op, q, k, v, g, beta, initial_state, per_channel=g.dim() == 4)
    return launch_recurrent(op, DELTA_HINTS, q, k, v, g, beta, initial_state, scale=scale,
                            output_final_state=output_final_state, allow_neg_eigval=allow_neg_eigval)


def fused_recurrent_decode_step(q, k, v, g, beta, state, *, scale=None, allow_neg_eigval=False):
    """One token against a state: the contract of arena.kernels.kda.naive.kda_decode_step, on the Triton kernel.

    q, k: [B, H, K]; v: [B, H, V]; g: [B, H, K] (KDA) or [B, H] (GDN) log-decay; beta: [B, H];
    state: [B, H, K, V] (None = zeros), not modified. Returns (o [B, H, V] in v's dtype, new state fp32).
    """
    check_inputs("fused_recurrent_decode_step", q, k, v, g, beta, state, per_channel=g.dim() == 3, step=True)
    o, S = fused_recurrent_delta_rule(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), g.unsqueeze(1),
                                      beta.unsqueeze(1), scale=scale, initial_state=state, output_final_state=True,
                                      allow_neg_eigval=allow_neg_eigval)
    return o.squeeze(1), S
