"""Mamba2's chunked SSD on Triton, forward and backward (an autograd.Function), chunk C = 64.

    from arena.kernels.ssd.triton_ssd import chunk_ssd_triton
    o, S = chunk_ssd_triton(q, k, v, g, scale=1.0, initial_state=h0, output_final_state=True)
    o, S = chunk_ssd_triton(q, k, v, g, cu_seqlens=cu, initial_state=h0)   # packed: B = 1, h0 [N, H, K, V]

Same recurrence and signature as `arena.kernels.ssd.naive_recurrent_ssd` (per head, g_t <= 0 a scalar):
    S_t = exp(g_t) S_{t-1} + k_t v_t^T,   o_t = scale * S_t^T q_t
q, k: [B, T, H, K]; v: [B, T, H, V] (one dtype of fp32/fp16/bf16, K, V <= 256; fp32 with K > 128 forward only:
`_dispatch.fp32_backward_blocker`); g: [B, T, H]; state [B, H, K, V] fp32. CUDA tensors, or CPU under the Triton
interpreter (TRITON_INTERPRET=1; bf16 is wrong there).
Tested in tests/kernels/test_triton_ssd.py.

As in the delta-rule kernels (arena/kernels/triton_delta/chunk.py), batches are packed into one sequence axis
([1, B*T, H, *]) and packed sequences (`cu_seqlens`) are split by the same `Layout`: every chunk lies inside one
sequence, so nothing leaks between sequences. Fixed-length batches run the same kernels with IS_VARLEN off: sequence
n starts at n * T and no table is built or read (`Chunks`). G = the chunk-local cumsum of g is recomputed (fp32) by
every kernel from g, so nothing but the chunk-entry states is kept between forward and backward. Four launches,
two each way. The state passes and the output pass cut K into blocks of min(64, K rounded up to a power of two),
V into blocks of 64 (`_launch_config` says why no narrower); ssd_bwd_intra_kernel keeps all of K in one tile:

`ssd_fwd_state_kernel`, one program per (sequence * head, K block, V block), sequential over the sequence's chunks,
state S in fp32 (each row of K is updated on its own, so the K blocks need no reduction):
    S <- exp(G_last) S + (k exp(G_last - G))^T v
  It stores the state entering every chunk (in q's dtype: the output pass reads it, the backward keeps it) and,
  if asked, the final state (fp32).
`ssd_fwd_output_kernel`, one program per (chunk, V block) x head, all chunks in parallel, loops over K blocks for
both products:
    o = (scale q exp(G)) S_chunk + A v,   A[r, j] = scale q_r.k_j exp(G_r - G_j) [j <= r]
`ssd_bwd_state_kernel` (the state pass's grid, chunks in reverse) carries dS, the gradient of the state leaving a
chunk, row-wise in K too:
    dS <- exp(G_last) dS + (scale q exp(G))^T dO;   it stores dS per chunk and dS of the initial state.
`ssd_bwd_intra_kernel`, one program per (chunk, head), all chunks in parallel, loops over blocks of V:
    dA = scale (dO v^T) * decay,  dq = scale exp(G) (dO S^T) + dA k,  dk = dA^T q + exp(G_last - G) (v dS^T),
    dv = A^T dO + (k exp(G_last - G)) dS
  and dG_r = q_r.dq_r - k_r.dk_r (+ exp(G_last) <dS, S> + sum_j k_j.(state part of dk_j) on the chunk's last
  row), turned into dg by a reverse cumsum within the chunk.
Every exponent is a difference clamped at <= 0 and masked rows are zero, so no gate (even -1000) makes inf or NaN.
fp32 inputs take IEEE fp32 dots (not TF32) so they match an fp32 reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from arena.kernels._dispatch import fp32_backward_blocker
from arena.kernels.ssd.chunk import TRITON_CHUNK_SIZE, needs_backward
from arena.kernels.ssd.naive import check_inputs
from arena.kernels.triton_delta import output_buffer, triton_status
from arena.kernels.triton_delta.chunk import CHUNK as DELTA_CHUNK
from arena.kernels.triton_delta.chunk import Layout

CHUNK = TRITON_CHUNK_SIZE  # 64, defined with chunk_ssd, which names it in its docs and FLOP counts
assert CHUNK == DELTA_CHUNK, "the shared Layout cuts sequences into the delta-rule kernels' chunks"
MAX_HEAD_DIM = 256
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _load_rows(ptr, t0, n_valid, stride_t, C: tl.constexpr, BD: tl.constexpr, D):
    """Tile [C, BD] of the chunk starting at token t0, in the storage dtype; rows >= n_valid and columns >= D
    are 0."""
    r = tl.arange(0, C)
    c = tl.arange(0, BD)
    return tl.load(ptr + (t0 + r)[:, None] * stride_t + c[None, :],
                   mask=(r[:, None] < n_valid) & (c[None, :] < D), other=0.0)


@triton.jit
def _store_rows(ptr, x, t0, n_valid, stride_t, C: tl.constexpr, BD: tl.constexpr, D):
    r = tl.arange(0, C)
    c = tl.arange(0, BD)
    tl.store(ptr + (t0 + r)[:, None] * stride_t + c[None, :], x.to(ptr.dtype.element_ty),
             mask=(r[:, None] < n_valid) & (c[None, :] < D))


@triton.jit
def _chunk_gates(g_ptr, t0, n_valid, stride_t, C: tl.constexpr):
    """(G [C], G_last): the chunk-local cumsum of g in fp32 and its value at the chunk's last valid row. Rows past
    the end have g = 0, so G_last is G's last element, bit for bit the value at the last valid row."""
    r = tl.arange(0, C)
    g = tl.load(g_ptr + (t0 + r) * stride_t, mask=r < n_valid, other=0.0).to(tl.float32)
    G = tl.cumsum(g, axis=0)
    G_last = tl.sum(tl.where(r == C - 1, G, 0.0), axis=0)
    return G, G_last


@triton.jit
def _sequence(cu_ptr, chunk_off_ptr, i_n, T, NT, IS_VARLEN: tl.constexpr):
    """(first token, end, index of its first chunk in the per-chunk buffers) of sequence i_n, in int64 (T * H * K
    may pass 2^31): from the Layout's tables when packed, else sequence i_n of a batch of B sequences of T tokens
    (no table: nothing for the host to build or copy)."""
    if IS_VARLEN:
        bos = tl.load(cu_ptr + i_n).to(tl.int64)
        eos = tl.load(cu_ptr + i_n + 1).to(tl.int64)
        c_off = tl.load(chunk_off_ptr + i_n).to(tl.int64)
    else:
        bos = i_n.to(tl.int64) * T
        eos = bos + T
        c_off = i_n.to(tl.int64) * NT
    return bos, eos, c_off


@triton.jit
def _state_tile(i_k, i_v, K, V, BK: tl.constexpr, BV: tl.constexpr):
    """(offsets within one [K, V] state, mask) of the state passes' [BK, BV] tile (K block i_k, V block i_v)."""
    rk = tl.arange(0, BK)
    cv = tl.arange(0, BV)
    idx = (i_k * BK + rk)[:, None] * V + i_v * BV + cv[None, :]
    return idx, (rk[:, None] < K - i_k * BK) & (cv[None, :] < V - i_v * BV)


@triton.jit
def ssd_fwd_state_kernel(
    k_ptr, v_ptr, g_ptr, cu_ptr, chunk_off_ptr, h0_ptr, ht_ptr, h_ptr,
    T, NT, H, K, V,
    BK: tl.constexpr, BV: tl.constexpr, C: tl.constexpr, IS_VARLEN: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, PREC: tl.constexpr,
):
    """One program per (sequence * head, K block, V block): rows of K are independent in the update, so the K
    blocks need no reduction. Stores the state entering every chunk (in q's dtype) and the final one (fp32)."""
    i_nh, i_k, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos, c_off = _sequence(cu_ptr, chunk_off_ptr, i_n, T, NT, IS_VARLEN)
    k_ptr += i_h * K + i_k * BK
    v_ptr += i_h * V + i_v * BV
    g_ptr += i_h
    Kb = K - i_k * BK  # rows left in this block
    Vb = V - i_v * BV  # columns left in this block

    state_idx, state_mask = _state_tile(i_k, i_v, K, V, BK, BV)
    state_off = i_nh.to(tl.int64) * K * V + state_idx
    if HAS_H0:
        S = tl.load(h0_ptr + state_off, mask=state_mask, other=0.0).to(tl.float32)
    else:
        S = tl.zeros((BK, BV), dtype=tl.float32)
    dt = k_ptr.dtype.element_ty
    n_chunks = tl.cdiv(eos - bos, C)
    for c in range(0, n_chunks):
        t0 = bos + c * C
        n_valid = tl.minimum(eos - t0, C).to(tl.int32)
        tl.store(h_ptr + ((c_off + c) * H + i_h) * K * V + state_idx, S.to(h_ptr.dtype.element_ty),
                 mask=state_mask)
        G, G_last = _chunk_gates(g_ptr, t0, n_valid, H, C)
        k = _load_rows(k_ptr, t0, n_valid, H * K, C, BK, Kb)
        v = _load_rows(v_ptr, t0, n_valid, H * V, C, BV, Vb)
        kg = (k.to(tl.float32) * tl.exp(tl.minimum(G_last - G, 0.0))[:, None]).to(dt)
        S = S * tl.exp(tl.minimum(G_last, 0.0)) + tl.dot(tl.trans(kg), v, input_precision=PREC)
    if STORE_FINAL:
        tl.store(ht_ptr + state_off, S, mask=state_mask)


@triton.jit
def _chunk_span(chunk_ptr, i_c, T, NT, C: tl.constexpr, IS_VARLEN: tl.constexpr):
    """(first token in int64, number of valid rows) of chunk i_c, in the order of the per-chunk buffers."""
    if IS_VARLEN:  # the chunk's first token and its end, inside one sequence, from the Layout's table
        t0 = tl.load(chunk_ptr + 2 * i_c).to(tl.int64)
        n_valid = (tl.load(chunk_ptr + 2 * i_c + 1) - t0).to(tl.int32)
    else:  # chunk j of sequence n, each of length T
        j = i_c % NT
        t0 = (i_c // NT).to(tl.int64) * T + j * C
        n_valid = tl.minimum(T - j * C, C).to(tl.int32)
    return t0, n_valid


@triton.jit
def ssd_fwd_output_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, h_ptr, chunk_ptr, o_ptr,
    scale, T, NT, H, K, V, NV,
    BK: tl.constexpr, BV: tl.constexpr, C: tl.constexpr, IS_VARLEN: tl.constexpr, PREC: tl.constexpr,
):
    """One program per (chunk, V block) x head, all chunks in parallel; q k^T and q S are summed over K blocks."""
    i_cv, i_h = tl.program_id(0), tl.program_id(1)
    i_c, i_v = i_cv // NV, i_cv % NV  # the V blocks of one chunk are neighbours: they read the same q, k
    t0, n_valid = _chunk_span(chunk_ptr, i_c, T, NT, C, IS_VARLEN)
    q_ptr += i_h * K
    k_ptr += i_h * K
    v_ptr += i_h * V + i_v * BV
    o_ptr += i_h * V + i_v * BV
    g_ptr += i_h
    Vb = V - i_v * BV
    state_base = (i_c.to(tl.int64) * H + i_h) * K * V + i_v * BV

    rows = tl.arange(0, C)
    rk = tl.arange(0, BK)
    cv = tl.arange(0, BV)
    qk = tl.zeros((C, C), dtype=tl.float32)
    qS = tl.zeros((C, BV), dtype=tl.float32)
    for k0 in range(0, K, BK):
        Kb = K - k0
        q = _load_rows(q_ptr + k0, t0, n_valid, H * K, C, BK, Kb)
        k = _load_rows(k_ptr + k0, t0, n_valid, H * K, C, BK, Kb)
        S = tl.load(h_ptr + state_base + (k0 + rk)[:, None] * V + cv[None, :],
                    mask=(rk[:, None] < Kb) & (cv[None, :] < Vb), other=0.0)
        qk += tl.dot(q, tl.trans(k), input_precision=PREC)
        qS += tl.dot(q, S, input_precision=PREC)
    dt = v_ptr.dtype.element_ty
    G, G_last = _chunk_gates(g_ptr, t0, n_valid, H, C)
    # mask before exp: above the diagonal G_r - G_j > 0 could overflow
    decay = tl.where(rows[:, None] >= rows[None, :], tl.exp(tl.minimum(G[:, None] - G[None, :], 0.0)), 0.0)
    A = (qk * decay * scale).to(dt)
    v = _load_rows(v_ptr, t0, n_valid, H * V, C, BV, Vb)
    o = qS * (tl.exp(tl.minimum(G, 0.0)) * scale)[:, None] + tl.dot(A, v, input_precision=PREC)
    _store_rows(o_ptr, o, t0, n_valid, H * V, C, BV, Vb)


@triton.jit
def ssd_bwd_state_kernel(
    q_ptr, g_ptr, do_ptr, cu_ptr, chunk_off_ptr, dht_ptr, dh_ptr, dh0_ptr,
    scale, T, NT, H, K, V,
    BK: tl.constexpr, BV: tl.constexpr, C: tl.constexpr, IS_VARLEN: tl.constexpr,
    HAS_DHT: tl.constexpr, STORE_DH0: tl.constexpr, PREC: tl.constexpr,
):
    """The forward state pass's grid, chunks in reverse; dS is row-wise in K too, so K blocks are independent."""
    i_nh, i_k, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos, c_off = _sequence(cu_ptr, chunk_off_ptr, i_n, T, NT, IS_VARLEN)
    q_ptr += i_h * K + i_k * BK
    do_ptr += i_h * V + i_v * BV
    g_ptr += i_h
    Kb = K - i_k * BK
    Vb = V - i_v * BV

    state_idx, state_mask = _state_tile(i_k, i_v, K, V, BK, BV)
    state_off = i_nh.to(tl.int64) * K * V + state_idx
    if HAS_DHT:
        dS = tl.load(dht_ptr + state_off, mask=state_mask, other=0.0).to(tl.float32)
    else:
        dS = tl.zeros((BK, BV), dtype=tl.float32)
    dt = q_ptr.dtype.element_ty
    n_chunks = tl.cdiv(eos - bos, C)
    for cc in range(0, n_chunks):
        c = n_chunks - 1 - cc
        t0 = bos + c * C
        n_valid = tl.minimum(eos - t0, C).to(tl.int32)
        tl.store(dh_ptr + ((c_off + c) * H + i_h) * K * V + state_idx, dS, mask=state_mask)
        G, G_last = _chunk_gates(g_ptr, t0, n_valid, H, C)
        q = _load_rows(q_ptr, t0, n_valid, H * K, C, BK, Kb)
        do = _load_rows(do_ptr, t0, n_valid, H * V, C, BV, Vb).to(dt)
        qg = (q.to(tl.float32) * (tl.exp(tl.minimum(G, 0.0)) * scale)[:, None]).to(dt)
        dS = dS * tl.exp(tl.minimum(G_last, 0.0)) + tl.dot(tl.trans(qg), do, input_precision=PREC)
    if STORE_DH0:
        tl.store(dh0_ptr + state_off, dS, mask=state_mask)


@triton.jit
def ssd_bwd_intra_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, do_ptr, h_ptr, dh_ptr, chunk_ptr, dq_ptr, dk_ptr, dv_ptr, dg_ptr,
    scale, T, NT, H, K, V,
    BK: tl.constexpr, BV: tl.constexpr, C: tl.constexpr, IS_VARLEN: tl.constexpr, PREC: tl.constexpr,
):
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    t0, n_valid = _chunk_span(chunk_ptr, i_c, T, NT, C, IS_VARLEN)
    q_ptr += i_h * K
    k_ptr += i_h * K
    dq_ptr += i_h * K
    dk_ptr += i_h * K
    v_ptr += i_h * V
    do_ptr += i_h * V
    dv_ptr += i_h * V
    g_ptr += i_h
    dg_ptr += i_h
    state_base = (i_c.to(tl.int64) * H + i_h) * K * V

    rows = tl.arange(0, C)
    rk = tl.arange(0, BK)
    cv = tl.arange(0, BV)
    dt = q_ptr.dtype.element_ty
    G, G_last = _chunk_gates(g_ptr, t0, n_valid, H, C)
    q = _load_rows(q_ptr, t0, n_valid, H * K, C, BK, K)
    k = _load_rows(k_ptr, t0, n_valid, H * K, C, BK, K)
    decay = tl.where(rows[:, None] >= rows[None, :], tl.exp(tl.minimum(G[:, None] - G[None, :], 0.0)), 0.0)
    A = (tl.dot(q, tl.trans(k), input_precision=PREC) * decay * scale).to(dt)
    to_end = tl.exp(tl.minimum(G_last - G, 0.0))  # decay from each row to the chunk's last row
    kg = (k.to(tl.float32) * to_end[:, None]).to(dt)

    # sums over V, block by block: dO v^T, dO S^T, v dS^T and <dS, S>; dv of each block is complete at once
    dA = tl.zeros((C, C), dtype=tl.float32)
    dq_inter = tl.zeros((C, BK), dtype=tl.float32)
    dk_state = tl.zeros((C, BK), dtype=tl.float32)
    dS_S = tl.zeros((BK,), dtype=tl.float32)
    for v0 in range(0, V, BV):
        Vb = V - v0
        v = _load_rows(v_ptr + v0, t0, n_valid, H * V, C, BV, Vb)
        do = _load_rows(do_ptr + v0, t0, n_valid, H * V, C, BV, Vb).to(dt)
        smask = (rk[:, None] < K) & (cv[None, :] < Vb)
        soff = state_base + rk[:, None] * V + v0 + cv[None, :]
        S = tl.load(h_ptr + soff, mask=smask, other=0.0).to(dt)
        dS = tl.load(dh_ptr + soff, mask=smask, other=0.0)
        dSd = dS.to(dt)
        dA += tl.dot(do, tl.trans(v), input_precision=PREC)
        dq_inter += tl.dot(do, tl.trans(S), input_precision=PREC)
        dk_state += tl.dot(v, tl.trans(dSd), input_precision=PREC)
        dS_S += tl.sum(S.to(tl.float32) * dS, axis=1)
        dv = tl.dot(tl.trans(A), do, input_precision=PREC) + tl.dot(kg, dSd, input_precision=PREC)
        _store_rows(dv_ptr + v0, dv, t0, n_valid, H * V, C, BV, Vb)

    dAd = (dA * decay * scale).to(dt)
    dq = dq_inter * (tl.exp(tl.minimum(G, 0.0)) * scale)[:, None] + tl.dot(dAd, k, input_precision=PREC)
    dk_state = dk_state * to_end[:, None]
    dk = tl.dot(tl.trans(dAd), q, input_precision=PREC) + dk_state
    qf = q.to(tl.float32)
    kf = k.to(tl.float32)
    # G_last feeds S_out = exp(G_last) S_in + sum_j exp(G_last - G_j) k_j v_j^T; its gradient lands on the last
    # row, and every valid row i <= last sums it in the reverse cumsum below
    last = tl.sum(dS_S, axis=0) * tl.exp(tl.minimum(G_last, 0.0)) + tl.sum(tl.sum(kf * dk_state, axis=1), axis=0)
    dG = tl.sum(qf * dq - kf * dk, axis=1)
    dg = tl.sum(dG, axis=0) - tl.cumsum(dG, axis=0) + dG + last
    _store_rows(dq_ptr, dq, t0, n_valid, H * K, C, BK, K)
    _store_rows(dk_ptr, dk, t0, n_valid, H * K, C, BK, K)
    tl.store(dg_ptr + (t0 + rows) * H, dg, mask=rows < n_valid)


def _launch_config(K: int, V: int, dtype: torch.dtype) -> dict:
    BK = max(16, triton.next_power_of_2(K))
    # Every V tile is 64 wide, the unused columns masked: Triton 3.6 on Hopper miscompiles V tiles of 32 or less
    # beside K tiles of 64 or more (illegal addresses in the delta-rule kernels at K = 48 / 64 / 128 with V = 16 /
    # 32; arena/kernels/triton_delta/chunk.py _blocks), and wider ones would hold [BK, BV] fp32 states in registers.
    BV = 64
    # The state passes and the output pass take K in blocks of at most 64 (BKS): the state passes split K over
    # programs (more of them for long sequences), the output pass loops over it. With BV = 64 no narrow V tile
    # sits beside a wide K tile. ssd_bwd_intra_kernel keeps all of K in one tile (BK).
    return dict(BK=BK, BKS=min(64, BK), BV=BV, PREC="ieee" if dtype == torch.float32 else "tf32",
                warps_state=4, warps_out=4, warps_intra=8 if BK >= 128 else 4)


class Chunks:
    """Where the kernels find each sequence's chunks. Fixed-length batches (B sequences of T tokens, packed as
    [1, B*T, ...]) compute them in the kernels; packed ones (cu_seqlens) read the tables of the delta rules'
    `Layout`, whose chunks never straddle two sequences."""

    def __init__(self, B: int, T: int, cu_seqlens: torch.Tensor | None, device: torch.device):
        self.varlen = cu_seqlens is not None
        if self.varlen:
            layout = Layout(B, T, cu_seqlens, device)
            self.N, self.NC, self.T, self.NT = layout.N, layout.NC, 0, 0
            self.tables = (layout.cu, layout.chunk_offsets, layout.chunks)
        else:
            self.T, self.NT = T, triton.cdiv(T, CHUNK)
            self.N, self.NC = B, B * self.NT
            self.tables = (None, None, None)

    def pointers(self, stand_in: torch.Tensor) -> tuple:
        """(cu, chunk offsets, chunk table), a stand-in where a fixed-length batch has none (never read)."""
        return tuple(stand_in if t is None else t for t in self.tables)


def _forward(q, k, v, g, h0, scale, layout: Chunks, store_final: bool):
    """o, the final state (if asked) and the state entering every chunk (q's dtype; the output pass reads it, and
    the backward keeps it)."""
    _, _, H, K = q.shape
    V = v.shape[-1]
    cfg = _launch_config(K, V, q.dtype)
    BK, BV = cfg["BKS"], cfg["BV"]
    dev = q.device
    o = output_buffer(v.shape, v.dtype, dev)
    ht = output_buffer((layout.N, H, K, V), torch.float32, dev) if store_final else None
    h = output_buffer((layout.NC, H, K, V), q.dtype, dev)
    cu, chunk_off, chunks = layout.pointers(o)
    # sequence * head on axis 0: axes 1 and 2 of a grid stop at 65535, and packed batches may have many sequences
    ssd_fwd_state_kernel[(layout.N * H, triton.cdiv(K, BK), triton.cdiv(V, BV))](
        k, v, g, cu, chunk_off, h0 if h0 is not None else o, ht if ht is not None else o, h,
        layout.T, layout.NT, H, K, V,
        BK=BK, BV=BV, C=CHUNK, IS_VARLEN=layout.varlen, HAS_H0=h0 is not None,
        STORE_FINAL=store_final, PREC=cfg["PREC"], num_warps=cfg["warps_state"], num_stages=1)
    NV = triton.cdiv(V, BV)
    ssd_fwd_output_kernel[(layout.NC * NV, H)](
        q, k, v, g, h, chunks, o,
        scale, layout.T, layout.NT, H, K, V, NV,
        BK=BK, BV=BV, C=CHUNK, IS_VARLEN=layout.varlen, PREC=cfg["PREC"],
        num_warps=cfg["warps_out"], num_stages=1)
    return o, ht, h


def _backward(q, k, v, g, h, do, dht, scale, layout: Chunks, need_dh0: bool):
    _, _, H, K = q.shape
    V = v.shape[-1]
    cfg = _launch_config(K, V, q.dtype)
    dev = q.device
    dh = output_buffer((layout.NC, H, K, V), torch.float32, dev)  # gradient of the state leaving every chunk
    dh0 = output_buffer((layout.N, H, K, V), torch.float32, dev) if need_dh0 else None
    cu, chunk_off, chunks = layout.pointers(dh)
    ssd_bwd_state_kernel[(layout.N * H, triton.cdiv(K, cfg["BKS"]), triton.cdiv(V, cfg["BV"]))](
        q, g, do, cu, chunk_off, dht if dht is not None else dh, dh, dh0 if dh0 is not None else dh,
        scale, layout.T, layout.NT, H, K, V,
        BK=cfg["BKS"], BV=cfg["BV"], C=CHUNK, IS_VARLEN=layout.varlen, HAS_DHT=dht is not None,
        STORE_DH0=need_dh0, PREC=cfg["PREC"], num_warps=cfg["warps_state"], num_stages=1)
    dq = output_buffer(q.shape, q.dtype, dev)
    dk = output_buffer(k.shape, k.dtype, dev)
    dv = output_buffer(v.shape, v.dtype, dev)
    dg = output_buffer(g.shape, torch.float32, dev)
    ssd_bwd_intra_kernel[(layout.NC, H)](
        q, k, v, g, do, h, dh, chunks, dq, dk, dv, dg,
        scale, layout.T, layout.NT, H, K, V,
        BK=cfg["BK"], BV=cfg["BV"], C=CHUNK, IS_VARLEN=layout.varlen, PREC=cfg["PREC"],
        num_warps=cfg["warps_intra"], num_stages=1)
    return dq, dk, dv, dg, dh0


class ChunkSSDTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, h0, scale, output_final_state, layout):
        o, ht, h = _forward(q, k, v, g, h0, scale, layout, output_final_state)
        if any(ctx.needs_input_grad[:5]):
            ctx.save_for_backward(q, k, v, g, h)
        ctx.scale, ctx.layout = scale, layout
        ctx.set_materialize_grads(False)  # an unused final state costs no dht buffer
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, h = ctx.saved_tensors
        do = torch.zeros_like(v) if do is None else do.to(v.dtype).contiguous()
        dht = None if dht is None else dht.float().contiguous()
        dq, dk, dv, dg, dh0 = _backward(q, k, v, g, h, do, dht, ctx.scale, ctx.layout, ctx.needs_input_grad[4])
        return dq, dk, dv, dg, dh0, None, None, None


def chunk_ssd_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    *,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """q, k: [B, T, H, K]; v: [B, T, H, V]; g: [B, T, H] (<= 0); initial_state: [B, H, K, V].

    Returns o: [B, T, H, V] in v's dtype and, if asked, the final state [B, H, K, V] in fp32. Differentiable in
    q, k, v, g and initial_state. cu_seqlens: int [N+1] offsets of N sequences packed along T (B must be 1); no
    state passes between them, and initial_state / the final state are [N, H, K, V].
    """
    op = "chunk_ssd_triton"
    N = check_inputs(q, k, v, g, initial_state, cu_seqlens, op=op)
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in DTYPES:
        raise ValueError(f"{op}: q, k, v must share one dtype of fp32/fp16/bf16, got {q.dtype}/{k.dtype}/{v.dtype}")
    B, T, H, K = q.shape
    V = v.shape[-1]
    if max(K, V) > MAX_HEAD_DIM:
        raise ValueError(f"{op}: head dims up to {MAX_HEAD_DIM} are supported, got K={K}, V={V}")
    blocker = fp32_backward_blocker(q.dtype, K, needs_backward(q, k, v, g, initial_state))
    if blocker is not None:  # refused before any launch: on a GPU the backward would fail to compile
        raise ValueError(f"{op}: {blocker}")
    ok, reason = triton_status(q.device)
    if not ok:
        raise ValueError(f"{op}: the Triton kernels cannot run here ({reason})")
    h0 = None if initial_state is None else initial_state.float().contiguous()
    if B * T * H == 0:  # nothing to launch; zero-size grids are not launchable
        o = v.new_zeros(v.shape)
        ht = None
        if output_final_state:
            ht = h0.clone() if h0 is not None else q.new_zeros((N, H, K, V), dtype=torch.float32)
        return o, ht
    layout = Chunks(B, T, cu_seqlens, q.device)

    def packed(x):
        return x.reshape(1, B * T, *x.shape[2:]).contiguous()

    o, ht = ChunkSSDTriton.apply(packed(q), packed(k), packed(v), packed(g).float(), h0, float(scale),
                                 bool(output_final_state), layout)
    return o.reshape(B, T, H, V), ht
