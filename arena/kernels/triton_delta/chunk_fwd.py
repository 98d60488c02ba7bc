"""Forward Triton kernels of the chunkwise delta rule (KDA and Gated DeltaNet), chunk C = 64, sub-blocks of 16.

Called by `arena.kernels.triton_delta.chunk` (the autograd.Function); not a public API. The algebra is
docs/mixers.md §1.4. Sequences are packed along T ([1, T_total, H, *], offsets `cu_seqlens`), and every chunk lies in
one sequence, so nothing leaks between sequences. Two launches for GDN, four for KDA:

`chunk_cumsum_kernel` (KDA only): G = chunk-local cumsum of g, fp32, stored (the backward and the state pass reuse
  it); for KDA, chunk_kda_intra.kda_akk_fwd_kernel then builds Akk and Aqk per 16-row block.

`intra_fwd_kernel`, one program per (chunk, head), no dependence between chunks:
    GDN only: G (cumsum) and Akk[r, i] = beta_r k_r.k_i exp(G_r - G_i) (i < r), Aqk[r, i] = scale q_r.k_i exp(...)
      (i <= r), as plain [C, C] products times an exact decay mask;
    M = (I + Akk)^-1,   W = M (beta k exp(G)),   U = M (beta v)
  The inverse: forward substitution on the 16 x 16 diagonal blocks, then M_ab = -M_aa sum_m A_am M_mb; blocks go
  through a per-chunk scratch buffer in global memory (L2-resident), ordered by CTA barriers. Every exponent is
  clamped at 0 so masked rows cannot make inf.

`state_fwd_kernel`, one program per (sequence, head, block of V), sequential over the sequence's chunks, state in
fp32 registers:
    V' = U - W S,   O = scale (q exp(G)) S + Aqk V',   S <- exp(G_last) S + (k exp(G_last - G))^T V'
  It stores the entering state of each chunk and V' when the backward needs them.
"""

from __future__ import annotations

import triton
import triton.language as tl

from arena.kernels._dispatch import TRITON_CHUNK_SIZE

CHUNK = TRITON_CHUNK_SIZE  # 64, defined with the ops' dispatch, which checks chunk_size and counts FLOPs with it
SUB = 16


@triton.jit
def _rows(ptr, t0, r0, n_valid, stride_t, NR: tl.constexpr, BD: tl.constexpr, D):
    """fp32 tile [NR, BD] of rows r0 .. r0 + NR of the chunk at token t0; rows >= n_valid and columns >= D are 0."""
    return _rows_raw(ptr, t0, r0, n_valid, stride_t, NR, BD, D).to(tl.float32)


@triton.jit
def _rows_raw(ptr, t0, r0, n_valid, stride_t, NR: tl.constexpr, BD: tl.constexpr, D):
    """Like _rows, in the storage dtype (a 16-bit tile takes half the registers of its fp32 copy)."""
    r = r0 + tl.arange(0, NR)
    c = tl.arange(0, BD)
    mask = (r[:, None] < n_valid) & (c[None, :] < D)
    return tl.load(ptr + (t0 + r)[:, None] * stride_t + c[None, :], mask=mask, other=0.0)


@triton.jit
def _gate_rows(G_ptr, t0, r0, n_valid, stride_t, NR: tl.constexpr, BD: tl.constexpr, D,
               PER_CHANNEL: tl.constexpr):
    """Cumulative log-decay tile [NR, BD]: per channel, or one value per row broadcast over the channels."""
    if PER_CHANNEL:
        G = _rows(G_ptr, t0, r0, n_valid, stride_t, NR, BD, D)
    else:
        r = r0 + tl.arange(0, NR)
        G1 = tl.load(G_ptr + (t0 + r) * stride_t, mask=r < n_valid, other=0.0).to(tl.float32)
        G = tl.broadcast_to(G1[:, None], (NR, BD))
    return G


@triton.jit
def _gate_row(G_ptr, t0, r, n_valid, stride_t, BD: tl.constexpr, D, PER_CHANNEL: tl.constexpr):
    """Cumulative log-decay of one row r of the chunk, as a [BD] vector (zeros for a row past the chunk's end:
    a block's first row can lie past the end of the last chunk, and past the end of the buffer)."""
    c = tl.arange(0, BD)
    row_ok = (c * 0 + r) < n_valid
    if PER_CHANNEL:
        G = tl.load(G_ptr + (t0 + r) * stride_t + c, mask=(c < D) & row_ok, other=0.0)
    else:
        G = tl.load(G_ptr + (t0 + r) * stride_t + c * 0, mask=row_ok, other=0.0)
    return G.to(tl.float32)


@triton.jit
def _store_block(ptr, t0, r0, c0, n_valid, stride_t, x, NB: tl.constexpr):
    """Store a [NB, NB] block at rows r0.., columns c0.. of a per-chunk [C, C] matrix laid out as [T, H, C]."""
    r = r0 + tl.arange(0, NB)
    c = c0 + tl.arange(0, NB)
    tl.store(ptr + (t0 + r)[:, None] * stride_t + c[None, :], x.to(ptr.dtype.element_ty),
             mask=(r[:, None] < n_valid) & (c[None, :] >= 0))


@triton.jit
def _load_block(ptr, t0, r0, c0, n_valid, stride_t, NB: tl.constexpr):
    r = r0 + tl.arange(0, NB)
    c = c0 + tl.arange(0, NB)
    x = tl.load(ptr + (t0 + r)[:, None] * stride_t + c[None, :], mask=(r[:, None] < n_valid) & (c[None, :] >= 0),
                other=0.0)
    return x.to(tl.float32)


@triton.jit
def _unit_lower_inverse(A, NB: tl.constexpr):
    """(I + A)^-1 for a strictly lower-triangular [NB, NB] fp32 tile, by forward substitution over rows."""
    rows = tl.arange(0, NB)
    X = (rows[:, None] == rows[None, :]).to(tl.float32)
    for r in range(1, NB):
        a_row = tl.sum(tl.where(rows[:, None] == r, A, 0.0), axis=0)  # A[r, :], zero at and beyond r
        new = -tl.sum(a_row[:, None] * X, axis=0) + (rows == r).to(tl.float32)
        X = tl.where(rows[:, None] == r, new[None, :], X)
    return X


@triton.jit
def chunk_cumsum_kernel(g_ptr, G_ptr, chunk_ptr, H, D, BD: tl.constexpr, C: tl.constexpr):
    """G = chunk-local cumulative sum of g over rows, fp32; g and G are [T, H, D]; grid (chunks, H, D / BD)."""
    i_c, i_h, i_d = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t0 = tl.load(chunk_ptr + 2 * i_c).to(tl.int64)
    n_valid = (tl.load(chunk_ptr + 2 * i_c + 1) - t0).to(tl.int32)
    d0 = i_d * BD
    G = tl.cumsum(_rows(g_ptr + i_h * D + d0, t0, 0, n_valid, H * D, C, BD, D - d0), axis=0)
    rows = tl.arange(0, C)
    cols = tl.arange(0, BD)
    tl.store(G_ptr + i_h * D + d0 + (t0 + rows)[:, None] * (H * D) + cols[None, :], G,
             mask=(rows[:, None] < n_valid) & (cols[None, :] < D - d0))


@triton.jit
def intra_fwd_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, beta_ptr, chunk_ptr,
    G_ptr, W_ptr, U_ptr, Aqk_ptr, M_ptr, Akk_ptr,
    scale, H, K, V,
    PER_CHANNEL: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, C: tl.constexpr, NB: tl.constexpr,
):
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    t0 = tl.load(chunk_ptr + 2 * i_c).to(tl.int64)
    n_valid = (tl.load(chunk_ptr + 2 * i_c + 1) - t0).to(tl.int32)
    sk, sv, sc = H * K, H * V, H * C
    sg = H * K if PER_CHANNEL else H
    q_ptr += i_h * K
    k_ptr += i_h * K
    v_ptr += i_h * V
    W_ptr += i_h * K
    U_ptr += i_h * V
    Aqk_ptr += i_h * C
    M_ptr += i_h * C
    Akk_ptr += i_h * C
    beta_ptr += i_h
    if PER_CHANNEL:
        g_ptr += i_h * K
        G_ptr += i_h * K
    else:
        g_ptr += i_h
        G_ptr += i_h

    rows = tl.arange(0, C)
    cols_k = tl.arange(0, BK)
    if PER_CHANNEL:
        # 1-2. G (chunk_cumsum_kernel), Akk and Aqk (chunk_kda_intra.kda_akk_fwd_kernel) came in earlier launches
        tl.store(M_ptr + (t0 + rows)[:, None] * sc + rows[None, :], tl.zeros((C, C), dtype=tl.float32),
                 mask=rows[:, None] < n_valid)  # the upper blocks of M stay 0 below
    else:
        # 1. chunk-local cumulative log-decay, kept in fp32 for every later stage
        g1 = tl.load(g_ptr + (t0 + rows) * sg, mask=rows < n_valid, other=0.0).to(tl.float32)
        G1 = tl.cumsum(g1, axis=0)
        tl.store(G_ptr + (t0 + rows) * sg, G1, mask=rows < n_valid)
        # 2. one decay per head: plain k k^T and q k^T, then the exact decay exp(G_r - G_i) <= 1 as a [C, C] mask
        kf = _rows_raw(k_ptr, t0, 0, n_valid, sk, C, BK, K)
        qf = _rows_raw(q_ptr, t0, 0, n_valid, sk, C, BK, K)
        beta_c = tl.load(beta_ptr + (t0 + rows) * H, mask=rows < n_valid, other=0.0).to(tl.float32)
        decay = tl.exp(tl.minimum(G1[:, None] - G1[None, :], 0.0))
        kft = tl.trans(kf)
        Akk_c = tl.where(rows[:, None] > rows[None, :], tl.dot(kf, kft) * decay * beta_c[:, None], 0.0)
        Aqk_c = tl.where(rows[:, None] >= rows[None, :], tl.dot(qf, kft) * decay * scale, 0.0)
        cmask = rows[:, None] < n_valid
        coff = (t0 + rows)[:, None] * sc + rows[None, :]
        tl.store(Akk_ptr + coff, Akk_c, mask=cmask)
        tl.store(Aqk_ptr + coff, Aqk_c.to(Aqk_ptr.dtype.element_ty), mask=cmask)
        tl.store(M_ptr + coff, tl.zeros((C, C), dtype=tl.float32), mask=cmask)  # upper blocks stay 0 below
    tl.debug_barrier()

    # 3. M = (I + Akk)^-1, block row by block row (rows of M above are final before they are read)
    for a in tl.static_range(C // NB):
        r0 = a * NB
        Maa = _unit_lower_inverse(_load_block(Akk_ptr, t0, r0, r0, n_valid, sc, NB), NB)
        _store_block(M_ptr, t0, r0, r0, n_valid, sc, Maa, NB)
        for b in tl.static_range(a):
            acc = tl.zeros((NB, NB), dtype=tl.float32)
            for m in tl.static_range(b, a):
                acc += tl.dot(_load_block(Akk_ptr, t0, r0, m * NB, n_valid, sc, NB),
                              _load_block(M_ptr, t0, m * NB, b * NB, n_valid, sc, NB))
            _store_block(M_ptr, t0, r0, b * NB, n_valid, sc, -tl.dot(Maa, acc), NB)
        tl.debug_barrier()

    # 4. W = M (beta k exp(G)), U = M (beta v)
    dt = W_ptr.dtype.element_ty
    M = tl.load(M_ptr + (t0 + rows)[:, None] * sc + rows[None, :], mask=rows[:, None] < n_valid, other=0.0)
    M = M.to(dt)
    beta = tl.load(beta_ptr + (t0 + rows) * H, mask=rows < n_valid, other=0.0).to(tl.float32)
    Gf = _gate_rows(G_ptr, t0, 0, n_valid, sg, C, BK, K, PER_CHANNEL)
    Xk = _rows(k_ptr, t0, 0, n_valid, sk, C, BK, K) * tl.exp(tl.minimum(Gf, 0.0)) * beta[:, None]
    W = tl.dot(M, Xk.to(dt))
    tl.store(W_ptr + (t0 + rows)[:, None] * sk + cols_k[None, :], W.to(dt),
             mask=(rows[:, None] < n_valid) & (cols_k[None, :] < K))
    cols_v = tl.arange(0, BV)
    Xv = _rows(v_ptr, t0, 0, n_valid, sv, C, BV, V) * beta[:, None]
    U = tl.dot(M, Xv.to(dt))
    tl.store(U_ptr + (t0 + rows)[:, None] * sv + cols_v[None, :], U.to(U_ptr.dtype.element_ty),
             mask=(rows[:, None] < n_valid) & (cols_v[None, :] < V))


@triton.jit
def state_fwd_kernel(
    q_ptr, k_ptr, G_ptr, W_ptr, U_ptr, Aqk_ptr, cu_ptr, chunk_off_ptr, h0_ptr,
    o_ptr, ht_ptr, h_ptr, vn_ptr,
    scale, H, K, V,
    PER_CHANNEL: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, C: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, SAVE: tl.constexpr,
):
    i_nh, i_v = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos = tl.load(cu_ptr + i_n).to(tl.int64)
    eos = tl.load(cu_ptr + i_n + 1).to(tl.int64)
    c_off = tl.load(chunk_off_ptr + i_n).to(tl.int64)
    sk, sv, sc = H * K, H * V, H * C
    sg = H * K if PER_CHANNEL else H
    q_ptr += i_h * K
    k_ptr += i_h * K
    W_ptr += i_h * K
    U_ptr += i_h * V + i_v * BV
    o_ptr += i_h * V + i_v * BV
    vn_ptr += i_h * V + i_v * BV
    Aqk_ptr += i_h * C
    if PER_CHANNEL:
        G_ptr += i_h * K
    else:
        G_ptr += i_h
    Vb = V - i_v * BV  # columns left in this block

    rows = tl.arange(0, C)
    rk = tl.arange(0, BK)
    cv = tl.arange(0, BV)
    state_off = (i_nh * K + rk[:, None]).to(tl.int64) * V + i_v * BV + cv[None, :]
    state_mask = (rk[:, None] < K) & (cv[None, :] < Vb)
    if HAS_H0:
        S = tl.load(h0_ptr + state_off, mask=state_mask, other=0.0).to(tl.float32)
    else:
        S = tl.zeros((BK, BV), dtype=tl.float32)
    dt = W_ptr.dtype.element_ty
    n_chunks = tl.cdiv(eos - bos, C)
    for c in range(0, n_chunks):
        t0 = bos + c * C
        n_valid = tl.minimum(eos - t0, C).to(tl.int32)
        if SAVE:
            h_off = ((c_off + c) * H + i_h) * K * V
            tl.store(h_ptr + h_off + rk[:, None] * V + i_v * BV + cv[None, :], S.to(h_ptr.dtype.element_ty),
                     mask=state_mask)
        # the decayed q and k first, cast to the dot dtype at once: the fp32 gate tile dies before the products
        G = _gate_rows(G_ptr, t0, 0, n_valid, sg, C, BK, K, PER_CHANNEL)
        G_last = _gate_row(G_ptr, t0, n_valid - 1, n_valid, sg, BK, K, PER_CHANNEL)
        qg = (_rows(q_ptr, t0, 0, n_valid, sk, C, BK, K) * (tl.exp(tl.minimum(G, 0.0)) * scale)).to(dt)
        kg = (_rows(k_ptr, t0, 0, n_valid, sk, C, BK, K) * tl.exp(tl.minimum(G_last[None, :] - G, 0.0))).to(dt)
        W = _rows_raw(W_ptr, t0, 0, n_valid, sk, C, BK, K).to(dt)
        U = _rows(U_ptr, t0, 0, n_valid, sv, C, BV, Vb)
        Sd = S.to(dt)
        vn = U - tl.dot(W, Sd)
        vnd = vn.to(dt)
        omask = (rows[:, None] < n_valid) & (cv[None, :] < Vb)
        if SAVE:
            tl.store(vn_ptr + (t0 + rows)[:, None] * sv + cv[None, :], vnd, mask=omask)
        Aqk = tl.load(Aqk_ptr + (t0 + rows)[:, None] * sc + rows[None, :], mask=rows[:, None] < n_valid, other=0.0)
        o = tl.dot(qg, Sd) + tl.dot(Aqk.to(dt), vnd)
        tl.store(o_ptr + (t0 + rows)[:, None] * sv + cv[None, :], o.to(o_ptr.dtype.element_ty), mask=omask)
        S = S * tl.exp(tl.minimum(G_last, 0.0))[:, None] + tl.dot(tl.trans(kg), vnd)
    if STORE_FINAL:
        tl.store(ht_ptr + state_off, S, mask=state_mask)
