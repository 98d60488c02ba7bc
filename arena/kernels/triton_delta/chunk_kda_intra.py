"""KDA's in-chunk decay products in Triton: Akk and Aqk (forward) and their gradient terms (backward).

Called by `arena.kernels.triton_delta.chunk` for a per-channel gate only; Gated DeltaNet's single decay per head
needs none of this (a [C, C] mask does). The algebra is docs mixers.md 1.6, the shapes chunk_fwd.py's: packed
[1, T, H, *], chunk C = 64, sub-blocks of NB = 16 rows, G = the chunk-local cumulative log-decay (fp32).

One program per (chunk, 16-row block, head), looping over K in slices of BKS, so the tiles stay small (a [64, BKS]
operand at most) and 4x as many programs share the GPU as with one program per chunk. The decay sits inside the
sum over channels, exp(G_rd - G_id), so it cannot be pulled out of a matrix product as a whole:
- rows of other blocks: the product factors around a reference row n between the two (exp(G_r - G_n) <= 1 and
  exp(G_n - G_i) <= 1, so neither factor overflows, and one that underflows means the exact value does too), and
  the sum over channels runs on tensor cores;
- the block's own rows (the diagonal block): exact pairwise exponentials, one column j at a time on [16, BKS]
  tiles (a [16, 16, BKS] broadcast instead costs registers and layout shuffles).

`kda_akk_fwd_kernel`   Akk[r, i] = beta_r sum_d k_rd k_id exp(G_rd - G_id) (i < r, fp32),
                       Aqk[r, i] = scale sum_d q_rd k_id exp(G_rd - G_id) (i <= r; zeros above the diagonal).
`kda_intra_bwd_kernel` with dA = dL/dAkk (strictly lower, without beta) and dQ = dL/dAqk (scale folded in), adds to
                       the whole-chunk terms that chunk_bwd.intra_bwd_kernel stored:
                       Rk_r = sum_i dA[r, i] k_i e_ri,  Rq_r = sum_i dQ[r, i] k_i e_ri,
                       Cs_i = sum_r (beta_r dA[r, i] k_r + dQ[r, i] q_r) e_ri   (e_ri = exp(G_r - G_i), per channel)
                       dk += beta Rk + Cs,  dq += Rq,  dG += beta k Rk + q Rq - k Cs,  dbeta += sum_d k Rk.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _tile(ptr, t0, r0, n_valid, stride_t, d0, D, NR: tl.constexpr, BD: tl.constexpr):
    """fp32 [NR, BD]: rows r0 .. r0 + NR of the chunk at token t0, columns d0 .. d0 + BD; 0 outside (rows >= n_valid,
    rows < 0, columns >= D)."""
    r = r0 + tl.arange(0, NR)
    c = d0 + tl.arange(0, BD)
    mask = (r[:, None] >= 0) & (r[:, None] < n_valid) & (c[None, :] < D)
    return tl.load(ptr + (t0 + r)[:, None] * stride_t + c[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _row(ptr, t0, r, n_valid, stride_t, d0, D, BD: tl.constexpr):
    """fp32 [BD]: row r of the chunk, columns d0 .. d0 + BD; 0 for a row outside [0, n_valid) or a column >= D."""
    c = d0 + tl.arange(0, BD)
    ok = (c < D) & ((c * 0 + r) < n_valid) & ((c * 0 + r) >= 0)
    return tl.load(ptr + (t0 + r) * stride_t + c, mask=ok, other=0.0).to(tl.float32)


@triton.jit
def kda_akk_fwd_kernel(
    q_ptr, k_ptr, G_ptr, beta_ptr, chunk_ptr, Akk_ptr, Aqk_ptr,
    scale, H, K,
    BKS: tl.constexpr, C: tl.constexpr, NB: tl.constexpr,
):
    i_cb, i_h = tl.program_id(0), tl.program_id(1)
    i_c, a = i_cb // (C // NB), i_cb % (C // NB)
    t0 = tl.load(chunk_ptr + 2 * i_c).to(tl.int64)
    n_valid = (tl.load(chunk_ptr + 2 * i_c + 1) - t0).to(tl.int32)
    r0 = a * NB
    if r0 >= n_valid:  # a block past the end of a short last chunk: no row of it is stored
        return
    sk, sc = H * K, H * C
    q_ptr += i_h * K
    k_ptr += i_h * K
    G_ptr += i_h * K
    Akk_ptr += i_h * C
    Aqk_ptr += i_h * C

    sub = tl.arange(0, NB)
    cols = tl.arange(0, C)
    earlier = (cols < r0)[:, None]  # rows of the earlier blocks, as the rows of a [C, BKS] operand
    akk = tl.zeros((NB, C), dtype=tl.float32)
    aqk = tl.zeros((NB, C), dtype=tl.float32)
    for d0 in range(0, K, BKS):
        Ga = _tile(G_ptr, t0, r0, n_valid, sk, d0, K, NB, BKS)
        ka = _tile(k_ptr, t0, r0, n_valid, sk, d0, K, NB, BKS)
        qa = _tile(q_ptr, t0, r0, n_valid, sk, d0, K, NB, BKS)
        # earlier blocks, factored around the block's first row n = r0
        Gn = _row(G_ptr, t0, r0, n_valid, sk, d0, K, BKS)
        left = tl.exp(tl.minimum(Ga - Gn[None, :], 0.0))
        G_all = _tile(G_ptr, t0, 0, n_valid, sk, d0, K, C, BKS)
        k_all = _tile(k_ptr, t0, 0, n_valid, sk, d0, K, C, BKS)
        right = tl.where(earlier, k_all * tl.exp(tl.minimum(Gn[None, :] - G_all, 0.0)), 0.0)
        right_t = tl.trans(right)
        akk += tl.dot(ka * left, right_t)
        aqk += tl.dot(qa * left, right_t)
        # the block's own rows, one column j at a time: exact pairwise decays
        for j in range(0, NB):
            kj = _row(k_ptr, t0, r0 + j, n_valid, sk, d0, K, BKS)
            Gj = _row(G_ptr, t0, r0 + j, n_valid, sk, d0, K, BKS)
            kE = kj[None, :] * tl.exp(tl.minimum(Ga - Gj[None, :], 0.0))
            col = cols[None, :] == r0 + j
            akk += tl.where(col & (sub[:, None] > j), tl.sum(ka * kE, axis=1)[:, None], 0.0)
            aqk += tl.where(col & (sub[:, None] >= j), tl.sum(qa * kE, axis=1)[:, None], 0.0)
    beta = tl.load(beta_ptr + (t0 + r0 + sub) * H + i_h, mask=r0 + sub < n_valid, other=0.0).to(tl.float32)
    rows_ok = (r0 + sub < n_valid)[:, None]
    off = (t0 + r0 + sub)[:, None] * sc + cols[None, :]
    tl.store(Akk_ptr + off, akk * beta[:, None], mask=rows_ok)
    tl.store(Aqk_ptr + off, (aqk * scale).to(Aqk_ptr.dtype.element_ty), mask=rows_ok)


@triton.jit
def kda_intra_bwd_kernel(
    q_ptr, k_ptr, G_ptr, beta_ptr, dA_ptr, dQ_ptr, chunk_ptr,
    dq_ptr, dk_ptr, dG_ptr, dbeta_ptr,
    H, K,
    BKS: tl.constexpr, C: tl.constexpr, NB: tl.constexpr,
):
    i_cb, i_h = tl.program_id(0), tl.program_id(1)
    i_c, a = i_cb // (C // NB), i_cb % (C // NB)
    t0 = tl.load(chunk_ptr + 2 * i_c).to(tl.int64)
    n_valid = (tl.load(chunk_ptr + 2 * i_c + 1) - t0).to(tl.int32)
    r0 = a * NB
    if r0 >= n_valid:
        return
    sk, sc = H * K, H * C
    q_ptr += i_h * K
    k_ptr += i_h * K
    G_ptr += i_h * K
    dq_ptr += i_h * K
    dk_ptr += i_h * K
    dG_ptr += i_h * K
    dA_ptr += i_h * C
    dQ_ptr += i_h * C
    beta_ptr += i_h
    dbeta_ptr += i_h

    sub = tl.arange(0, NB)
    rows = tl.arange(0, C)
    a_ok = r0 + sub < n_valid
    beta_a = tl.load(beta_ptr + (t0 + r0 + sub) * H, mask=a_ok, other=0.0).to(tl.float32)
    # dA, dQ of this block's rows against the earlier rows [NB, C] (columns >= r0 zeroed: the diagonal block is
    # handled exactly below), and of the later rows against this block's columns [C, NB]
    row_off = (t0 + r0 + sub)[:, None] * sc + rows[None, :]
    row_mask = a_ok[:, None] & (rows[None, :] < r0)
    dA_rows = tl.load(dA_ptr + row_off, mask=row_mask, other=0.0)
    dQ_rows = tl.load(dQ_ptr + row_off, mask=row_mask, other=0.0)
    later = (rows >= r0 + NB) & (rows < n_valid)
    beta_all = tl.load(beta_ptr + (t0 + rows) * H, mask=later, other=0.0).to(tl.float32)
    col_off = (t0 + rows)[:, None] * sc + (r0 + sub)[None, :]
    dA_cols = tl.load(dA_ptr + col_off, mask=later[:, None], other=0.0) * beta_all[:, None]
    dQ_cols = tl.load(dQ_ptr + col_off, mask=later[:, None], other=0.0)
    # the later rows factor around the block's last valid row m: G_r - G_i = (G_r - G_m) + (G_m - G_i), both <= 0
    m = tl.minimum(r0 + NB, n_valid) - 1
    dbeta_a = tl.zeros((NB,), dtype=tl.float32)
    for d0 in range(0, K, BKS):
        Ga = _tile(G_ptr, t0, r0, n_valid, sk, d0, K, NB, BKS)
        ka = _tile(k_ptr, t0, r0, n_valid, sk, d0, K, NB, BKS)
        qa = _tile(q_ptr, t0, r0, n_valid, sk, d0, K, NB, BKS)
        G_all = _tile(G_ptr, t0, 0, n_valid, sk, d0, K, C, BKS)
        k_all = _tile(k_ptr, t0, 0, n_valid, sk, d0, K, C, BKS)
        q_all = _tile(q_ptr, t0, 0, n_valid, sk, d0, K, C, BKS)
        # earlier rows i < r0, around n = r0
        Gn = _row(G_ptr, t0, r0, n_valid, sk, d0, K, BKS)
        kr = tl.where((rows < r0)[:, None], k_all * tl.exp(tl.minimum(Gn[None, :] - G_all, 0.0)), 0.0)
        left = tl.exp(tl.minimum(Ga - Gn[None, :], 0.0))
        Rk = tl.dot(dA_rows, kr) * left
        Rq = tl.dot(dQ_rows, kr) * left
        # later rows r >= r0 + NB, around m
        Gm = _row(G_ptr, t0, m, n_valid, sk, d0, K, BKS)
        lm = tl.where(later[:, None], tl.exp(tl.minimum(G_all - Gm[None, :], 0.0)), 0.0)
        Cs = (tl.dot(tl.trans(dA_cols), k_all * lm) + tl.dot(tl.trans(dQ_cols), q_all * lm)) * tl.exp(
            tl.minimum(Gm[None, :] - Ga, 0.0))
        # the diagonal block, one row/column j at a time
        for j in range(0, NB):
            rj = r0 + j
            kj = _row(k_ptr, t0, rj, n_valid, sk, d0, K, BKS)
            qj = _row(q_ptr, t0, rj, n_valid, sk, d0, K, BKS)
            Gj = _row(G_ptr, t0, rj, n_valid, sk, d0, K, BKS)
            j_ok = (sub * 0 + rj) < n_valid  # as a vector: a scalar mask trips the interpreter
            # column j of the block: dA[r, rj] for the rows r > j, dQ[r, rj] for r >= j
            dA_cj = tl.load(dA_ptr + (t0 + r0 + sub) * sc + rj, mask=a_ok & (sub > j), other=0.0)
            dQ_cj = tl.load(dQ_ptr + (t0 + r0 + sub) * sc + rj, mask=a_ok & (sub >= j), other=0.0)
            e_down = tl.exp(tl.minimum(Ga - Gj[None, :], 0.0))  # e[r, j], r >= j
            kE = kj[None, :] * e_down
            Rk += dA_cj[:, None] * kE
            Rq += dQ_cj[:, None] * kE
            # row j of the block: dA[rj, i] for the columns i < j, dQ[rj, i] for i <= j
            beta_j = tl.load(beta_ptr + (t0 + rj) * H + sub * 0, mask=j_ok, other=0.0).to(tl.float32)
            dA_rj = tl.load(dA_ptr + (t0 + rj) * sc + r0 + sub, mask=j_ok & (sub < j), other=0.0) * beta_j
            dQ_rj = tl.load(dQ_ptr + (t0 + rj) * sc + r0 + sub, mask=j_ok & (sub <= j), other=0.0)
            e_up = tl.exp(tl.minimum(Gj[None, :] - Ga, 0.0))  # e[j, i], i <= j
            Cs += (dA_rj[:, None] * kj[None, :] + dQ_rj[:, None] * qj[None, :]) * e_up
        cs = d0 + tl.arange(0, BKS)
        smask = a_ok[:, None] & (cs[None, :] < K)
        off = (t0 + r0 + sub)[:, None] * sk + cs[None, :]
        tl.store(dk_ptr + off, tl.load(dk_ptr + off, mask=smask, other=0.0) + beta_a[:, None] * Rk + Cs, mask=smask)
        tl.store(dq_ptr + off, tl.load(dq_ptr + off, mask=smask, other=0.0) + Rq, mask=smask)
        dG = tl.load(dG_ptr + off, mask=smask, other=0.0) + beta_a[:, None] * ka * Rk + qa * Rq - ka * Cs
        tl.store(dG_ptr + off, dG, mask=smask)
        dbeta_a += tl.sum(ka * Rk, axis=1)
    boff = (t0 + r0 + sub) * H
    tl.store(dbeta_ptr + boff, tl.load(dbeta_ptr + boff, mask=a_ok, other=0.0) + dbeta_a, mask=a_ok)
