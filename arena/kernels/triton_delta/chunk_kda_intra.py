"""KDA's in-chunk decay products in Triton: Akk and Aqk (forward) and their gradient terms (backward).

Called by `arena.kernels.triton_delta.chunk` for a per-channel gate only; Gated DeltaNet's single decay per head
needs none of this (a [C, C] mask does). The algebra is docs/mixers.md §1.4, the shapes chunk_fwd.py's: packed
[1, T, H, *], chunk C = 64, sub-blocks of NB = 16 rows, G = the chunk-local cumulative log-decay (fp32).

One program per (chunk, 16-row block a, head). It walks the chunk's other 16-row blocks b one at a time and K in
slices of BKS, so every operand is a [16, BKS] tile: few registers, several programs per SM to hide latency. The
decay sits inside the sum over channels, exp(G_rd - G_id), so it cannot be pulled out of a matrix product whole:
- two different blocks: the product factors around a reference row n between them (exp(G_r - G_n) <= 1 and
  exp(G_n - G_i) <= 1, so neither factor overflows, and one that underflows means the exact value does too), and
  the sum over channels runs on tensor cores;
- the block with itself (the diagonal block): the same factoring around its first row when its gates fall by at
  most FAST_RANGE across the block in the K slice (one factor then stays within exp(FAST_RANGE), no overflow);
  otherwise (strong decays, resets) exact pairwise exponentials, one column j at a time.

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
    columns >= D)."""
    r = r0 + tl.arange(0, NR)
    c = d0 + tl.arange(0, BD)
    mask = (r[:, None] < n_valid) & (c[None, :] < D)
    return tl.load(ptr + (t0 + r)[:, None] * stride_t + c[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _row(ptr, t0, r, n_valid, stride_t, d0, D, BD: tl.constexpr):
    """fp32 [BD]: row r of the chunk, columns d0 .. d0 + BD; 0 for a row outside [0, n_valid) or a column >= D."""
    c = d0 + tl.arange(0, BD)
    ok = (c < D) & ((c * 0 + r) < n_valid) & ((c * 0 + r) >= 0)
    return tl.load(ptr + (t0 + r) * stride_t + c, mask=ok, other=0.0).to(tl.float32)


@triton.jit
def _pair(ptr, t0, r0, c0, n_valid, stride_t, NB: tl.constexpr):
    """fp32 [NB, NB] block of a per-chunk [C, C] matrix stored as [T, H, C]: rows r0.., columns c0..; 0 past n_valid."""
    r = r0 + tl.arange(0, NB)
    c = c0 + tl.arange(0, NB)
    return tl.load(ptr + (t0 + r)[:, None] * stride_t + c[None, :], mask=(r < n_valid)[:, None], other=0.0)


@triton.jit
def _block_start(chunk_ptr, C: tl.constexpr, NB: tl.constexpr):
    """(chunk start token, valid rows of the chunk, block index a, first row r0 of the block) of this program."""
    i_c, a = tl.program_id(0) // (C // NB), tl.program_id(0) % (C // NB)
    t0 = tl.load(chunk_ptr + 2 * i_c).to(tl.int64)
    n_valid = (tl.load(chunk_ptr + 2 * i_c + 1) - t0).to(tl.int32)
    return t0, n_valid, a, a * NB


@triton.jit
def kda_akk_fwd_kernel(
    q_ptr, k_ptr, G_ptr, beta_ptr, chunk_ptr, Akk_ptr, Aqk_ptr,
    scale, H, K,
    BKS: tl.constexpr, C: tl.constexpr, NB: tl.constexpr, FAST_RANGE: tl.constexpr,
):
    t0, n_valid, a, r0 = _block_start(chunk_ptr, C, NB)
    if r0 >= n_valid:  # a block past the end of a short last chunk: no row of it is stored
        return
    i_h = tl.program_id(1)
    sk, sc = H * K, H * C
    q_ptr += i_h * K
    k_ptr += i_h * K
    G_ptr += i_h * K
    Akk_ptr += i_h * C
    Aqk_ptr += i_h * C

    sub = tl.arange(0, NB)
    m = tl.minimum(r0 + NB, n_valid) - 1  # the block's last valid row
    a_ok = (r0 + sub < n_valid)[:, None]
    beta = tl.load(beta_ptr + (t0 + r0 + sub) * H + i_h, mask=r0 + sub < n_valid, other=0.0).to(tl.float32)
    out = (t0 + r0 + sub)[:, None] * sc + sub[None, :]
    for b in range(0, C // NB):  # column block b: earlier (b < a), diagonal (b == a) or zero (b > a)
        akk = tl.zeros((NB, NB), dtype=tl.float32)
        aqk = tl.zeros((NB, NB), dtype=tl.float32)
        if b <= a:
            for d0 in range(0, K, BKS):
                Ga = _tile(G_ptr, t0, r0, n_valid, sk, d0, K, NB, BKS)
                Gn = _row(G_ptr, t0, r0, n_valid, sk, d0, K, BKS)
                left = tl.exp(tl.minimum(Ga - Gn[None, :], 0.0))  # exp(G_r - G_n) <= 1 for the block's rows r
                ka = _tile(k_ptr, t0, r0, n_valid, sk, d0, K, NB, BKS)
                qa = _tile(q_ptr, t0, r0, n_valid, sk, d0, K, NB, BKS)
                spread = tl.max(Gn - _row(G_ptr, t0, m, n_valid, sk, d0, K, BKS), axis=0)
                if (b < a) | (spread <= FAST_RANGE):  # factored around n = r0, the sum over channels on tensor cores
                    Gb = _tile(G_ptr, t0, b * NB, n_valid, sk, d0, K, NB, BKS)
                    kb = _tile(k_ptr, t0, b * NB, n_valid, sk, d0, K, NB, BKS)
                    right = tl.trans(kb * tl.exp(tl.minimum(Gn[None, :] - Gb, FAST_RANGE)))
                    akk += tl.dot(ka * left, right)
                    aqk += tl.dot(qa * left, right)
                else:  # the diagonal block with strong decays: exact pairwise decays, one column j at a time
                    for j in range(0, NB):
                        kj = _row(k_ptr, t0, r0 + j, n_valid, sk, d0, K, BKS)
                        Gj = _row(G_ptr, t0, r0 + j, n_valid, sk, d0, K, BKS)
                        kE = kj[None, :] * tl.exp(tl.minimum(Ga - Gj[None, :], 0.0))
                        col = sub[None, :] == j
                        akk += tl.where(col, tl.sum(ka * kE, axis=1)[:, None], 0.0)
                        aqk += tl.where(col, tl.sum(qa * kE, axis=1)[:, None], 0.0)
            # the causal masks on the diagonal block: its upper triangle holds finite garbage
            akk = tl.where((b < a) | (sub[None, :] < sub[:, None]), akk, 0.0)
            aqk = tl.where((b < a) | (sub[None, :] <= sub[:, None]), aqk, 0.0)
        tl.store(Akk_ptr + out + b * NB, akk * beta[:, None], mask=a_ok)
        tl.store(Aqk_ptr + out + b * NB, (aqk * scale).to(Aqk_ptr.dtype.element_ty), mask=a_ok)


@triton.jit
def kda_intra_bwd_kernel(
    q_ptr, k_ptr, G_ptr, beta_ptr, dA_ptr, dQ_ptr, chunk_ptr,
    dq_ptr, dk_ptr, dG_ptr, dbeta_ptr,
    H, K,
    BKS: tl.constexpr, C: tl.constexpr, NB: tl.constexpr, FAST_RANGE: tl.constexpr,
):
    t0, n_valid, a, r0 = _block_start(chunk_ptr, C, NB)
    if r0 >= n_valid:
        return
    i_h = tl.program_id(1)
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
    a_ok = r0 + sub < n_valid
    beta_a = tl.load(beta_ptr + (t0 + r0 + sub) * H, mask=a_ok, other=0.0).to(tl.float32)
    m = tl.minimum(r0 + NB, n_valid) - 1  # the block's last valid row
    n_blocks = tl.cdiv(n_valid, NB)
    # the diagonal block of dA (beta folded in for the sums over rows r) and dQ: zero on and above the diagonal
    dA_aa = _pair(dA_ptr, t0, r0, r0, n_valid, sc, NB)
    dQ_aa = _pair(dQ_ptr, t0, r0, r0, n_valid, sc, NB)
    dbeta_a = tl.zeros((NB,), dtype=tl.float32)
    for d0 in range(0, K, BKS):
        Ga = _tile(G_ptr, t0, r0, n_valid, sk, d0, K, NB, BKS)
        ka = _tile(k_ptr, t0, r0, n_valid, sk, d0, K, NB, BKS)
        qa = _tile(q_ptr, t0, r0, n_valid, sk, d0, K, NB, BKS)
        Gn = _row(G_ptr, t0, r0, n_valid, sk, d0, K, BKS)
        Gm = _row(G_ptr, t0, m, n_valid, sk, d0, K, BKS)
        spread = tl.max(Gn - Gm, axis=0)
        # sums over earlier columns i (Rk, Rq) factor around n = r0; sums over later rows r (Cs) around m
        Rk = tl.zeros((NB, BKS), dtype=tl.float32)
        Rq = tl.zeros((NB, BKS), dtype=tl.float32)
        Cs = tl.zeros((NB, BKS), dtype=tl.float32)
        for b in range(0, n_blocks):
            if b != a:
                Gb = _tile(G_ptr, t0, b * NB, n_valid, sk, d0, K, NB, BKS)
                kb = _tile(k_ptr, t0, b * NB, n_valid, sk, d0, K, NB, BKS)
                if b < a:
                    kr = kb * tl.exp(tl.minimum(Gn[None, :] - Gb, 0.0))
                    Rk += tl.dot(_pair(dA_ptr, t0, r0, b * NB, n_valid, sc, NB), kr)
                    Rq += tl.dot(_pair(dQ_ptr, t0, r0, b * NB, n_valid, sc, NB), kr)
                else:
                    qb = _tile(q_ptr, t0, b * NB, n_valid, sk, d0, K, NB, BKS)
                    lm = tl.exp(tl.minimum(Gb - Gm[None, :], 0.0))
                    rb = b * NB + sub
                    beta_b = tl.load(beta_ptr + (t0 + rb) * H, mask=rb < n_valid, other=0.0).to(tl.float32)
                    dA_ba = _pair(dA_ptr, t0, b * NB, r0, n_valid, sc, NB) * beta_b[:, None]
                    dQ_ba = _pair(dQ_ptr, t0, b * NB, r0, n_valid, sc, NB)
                    Cs += tl.dot(tl.trans(dA_ba), kb * lm) + tl.dot(tl.trans(dQ_ba), qb * lm)
        if spread <= FAST_RANGE:  # the diagonal block through the same factoring: factors within exp(FAST_RANGE)
            kr = ka * tl.exp(tl.minimum(Gn[None, :] - Ga, FAST_RANGE))
            Rk += tl.dot(dA_aa, kr)
            Rq += tl.dot(dQ_aa, kr)
            lm = tl.exp(tl.minimum(Ga - Gm[None, :], FAST_RANGE))
            Cs += tl.dot(tl.trans(dA_aa * beta_a[:, None]), ka * lm) + tl.dot(tl.trans(dQ_aa), qa * lm)
        Rk *= tl.exp(tl.minimum(Ga - Gn[None, :], 0.0))
        Rq *= tl.exp(tl.minimum(Ga - Gn[None, :], 0.0))
        Cs *= tl.exp(tl.minimum(Gm[None, :] - Ga, 0.0))
        if spread > FAST_RANGE:  # the diagonal block exactly, one row/column j at a time
            for j in range(0, NB):
                rj = r0 + j
                kj = _row(k_ptr, t0, rj, n_valid, sk, d0, K, BKS)
                qj = _row(q_ptr, t0, rj, n_valid, sk, d0, K, BKS)
                Gj = _row(G_ptr, t0, rj, n_valid, sk, d0, K, BKS)
                j_ok = (sub * 0 + rj) < n_valid  # as a vector: a scalar mask trips the interpreter
                # one exponential for both directions: e[r, j] = exp(G_r - G_j) for r >= j and e[j, i] for i <= j
                # are both exp(-|G_a - G_j|); the other entries meet zero coefficients
                e = tl.exp(-tl.abs(Ga - Gj[None, :]))
                # column j of the block: dA[r, rj] for the rows r > j, dQ[r, rj] for r >= j
                dA_cj = tl.load(dA_ptr + (t0 + r0 + sub) * sc + rj, mask=a_ok & (sub > j), other=0.0)
                dQ_cj = tl.load(dQ_ptr + (t0 + r0 + sub) * sc + rj, mask=a_ok & (sub >= j), other=0.0)
                kE = kj[None, :] * e
                Rk += dA_cj[:, None] * kE
                Rq += dQ_cj[:, None] * kE
                # row j of the block: dA[rj, i] for the columns i < j, dQ[rj, i] for i <= j
                beta_j = tl.load(beta_ptr + (t0 + rj) * H + sub * 0, mask=j_ok, other=0.0).to(tl.float32)
                dA_rj = tl.load(dA_ptr + (t0 + rj) * sc + r0 + sub, mask=j_ok & (sub < j), other=0.0) * beta_j
                dQ_rj = tl.load(dQ_ptr + (t0 + rj) * sc + r0 + sub, mask=j_ok & (sub <= j), other=0.0)
                Cs += (dA_rj[:, None] * kj[None, :] + dQ_rj[:, None] * qj[None, :]) * e
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
