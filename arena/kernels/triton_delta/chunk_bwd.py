"""Backward Triton kernels of the chunkwise delta rule (KDA and Gated DeltaNet); the forward is chunk_fwd.py.

Called by `arena.kernels.triton_delta.chunk`; not a public API. With dO and the final-state cotangent, four
launches (five for KDA):

`state_bwd_kernel` (per sequence, head and V block; chunks in reverse) carries dS, the gradient of the state that
leaves a chunk:  dV' = Aqk^T dO + kg dS;  dS <- exp(G_last) dS + (scale q exp(G))^T dO - W^T dV'.  It stores dS per
chunk (fp32), dV' (= dU, fp32) and dS of the initial state.

`intra_bwd_kernel` (per chunk, head and K block of BKH columns, plus one program per chunk and head for the terms
without a K column) takes the whole-chunk terms (S entering the chunk and dS leaving it come from the per-chunk tapes):
    dqg = dO S^T,  dW = -dU S^T,  dkg = V' dS^T,  dQk = dO V'^T,  dM = dW Xk^T + dU Xv^T
with Xk = beta k exp(G), Xv = beta v, M = (I + Akk)^-1. It writes dq, dk, dv and (KDA) dG of those terms, and the
sums over K (dM, dbeta, GDN's dG) as partials, one slot per program: splitting K keeps every fp32 tile [64, 64].

`intra_bwd_dA_kernel` (per chunk and head) adds the partials up and forms dA = -M^T dM M^T. For GDN it then adds the
terms through the in-chunk decays exp(G_r - G_i), a [C, C] mask here; for KDA (a decay per channel) it stores
dL/dAkk, and chunk_kda_intra.kda_intra_bwd_kernel, launched next, adds those terms per 16-row block.

`rev_cumsum_kernel` turns dG into dg (dg_i = sum of dG_r over the rows r >= i of its chunk).
"""

from __future__ import annotations

import triton
import triton.language as tl

from arena.kernels.triton_delta.chunk_fwd import _gate_row, _gate_rows, _rows, _rows_raw


@triton.jit
def state_bwd_kernel(
    q_ptr, k_ptr, G_ptr, W_ptr, Aqk_ptr, do_ptr, cu_ptr, chunk_off_ptr, dht_ptr,
    dh_ptr, du_ptr, dh0_ptr,
    scale, H, K, V,
    PER_CHANNEL: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, C: tl.constexpr,
    HAS_DHT: tl.constexpr, STORE_DH0: tl.constexpr,
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
    do_ptr += i_h * V + i_v * BV
    du_ptr += i_h * V + i_v * BV
    Aqk_ptr += i_h * C
    if PER_CHANNEL:
        G_ptr += i_h * K
    else:
        G_ptr += i_h
    Vb = V - i_v * BV

    rows = tl.arange(0, C)
    rk = tl.arange(0, BK)
    cv = tl.arange(0, BV)
    state_off = (i_nh * K + rk[:, None]).to(tl.int64) * V + i_v * BV + cv[None, :]
    state_mask = (rk[:, None] < K) & (cv[None, :] < Vb)
    if HAS_DHT:
        dS = tl.load(dht_ptr + state_off, mask=state_mask, other=0.0).to(tl.float32)
    else:
        dS = tl.zeros((BK, BV), dtype=tl.float32)
    dt = W_ptr.dtype.element_ty
    n_chunks = tl.cdiv(eos - bos, C)
    for cc in range(0, n_chunks):
        c = n_chunks - 1 - cc
        t0 = bos + c * C
        n_valid = tl.minimum(eos - t0, C).to(tl.int32)
        h_off = ((c_off + c) * H + i_h) * K * V
        tl.store(dh_ptr + h_off + rk[:, None] * V + i_v * BV + cv[None, :], dS, mask=state_mask)
        # the decayed q and k first, cast to the dot dtype at once: the fp32 gate tile dies before the products
        G = _gate_rows(G_ptr, t0, 0, n_valid, sg, C, BK, K, PER_CHANNEL)
        G_last = _gate_row(G_ptr, t0, n_valid - 1, n_valid, sg, BK, K, PER_CHANNEL)
        qg = (_rows(q_ptr, t0, 0, n_valid, sk, C, BK, K) * (tl.exp(tl.minimum(G, 0.0)) * scale)).to(dt)
        kg = (_rows(k_ptr, t0, 0, n_valid, sk, C, BK, K) * tl.exp(tl.minimum(G_last[None, :] - G, 0.0))).to(dt)
        W = _rows_raw(W_ptr, t0, 0, n_valid, sk, C, BK, K).to(dt)
        Aqk = tl.load(Aqk_ptr + (t0 + rows)[:, None] * sc + rows[None, :], mask=rows[:, None] < n_valid, other=0.0)
        do = _rows_raw(do_ptr, t0, 0, n_valid, sv, C, BV, Vb).to(dt)
        dvn = tl.dot(tl.trans(Aqk.to(dt)), do) + tl.dot(kg, dS.to(dt))
        tl.store(du_ptr + (t0 + rows)[:, None] * sv + cv[None, :], dvn,
                 mask=(rows[:, None] < n_valid) & (cv[None, :] < Vb))
        dS = (dS * tl.exp(tl.minimum(G_last, 0.0))[:, None] + tl.dot(tl.trans(qg), do)
              - tl.dot(tl.trans(W), dvn.to(dt)))
    if STORE_DH0:
        tl.store(dh0_ptr + state_off, dS, mask=state_mask)


@triton.jit
def intra_bwd_kernel(
    q_ptr, k_ptr, v_ptr, G_ptr, beta_ptr, M_ptr, h_ptr, dh_ptr, vn_ptr, du_ptr, do_ptr, chunk_ptr,
    dq_ptr, dk_ptr, dv_ptr, dG_ptr, dQ_ptr, dMp_ptr, dbp_ptr, dGp_ptr,
    scale, T, H, K, V,
    PER_CHANNEL: tl.constexpr, BKH: tl.constexpr, BV: tl.constexpr, C: tl.constexpr,
):
    """The whole-chunk terms; grid (chunks, H, NKH + 1). Programs i_k < NKH take K columns i_k * BKH ..; the last
    one the terms that need no K column (dQk, dv, the v-parts of dM and dbeta). Partial sums over K (dM, dbeta, and
    for a per-head gate dG) go to per-program slots [NKH + 1, T, H, *] that intra_bwd_dA_kernel adds up."""
    i_c, i_h, i_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    NKH = tl.num_programs(2) - 1
    t0 = tl.load(chunk_ptr + 2 * i_c).to(tl.int64)
    n_valid = (tl.load(chunk_ptr + 2 * i_c + 1) - t0).to(tl.int32)
    sk, sv, sc = H * K, H * V, H * C
    sg = H * K if PER_CHANNEL else H
    slot = i_k.to(tl.int64) * T * H  # this program's slot in the partial-sum buffers, in units of [H, *] rows
    q_ptr += i_h * K
    k_ptr += i_h * K
    v_ptr += i_h * V
    vn_ptr += i_h * V
    du_ptr += i_h * V
    do_ptr += i_h * V
    dv_ptr += i_h * V
    dq_ptr += i_h * K
    dk_ptr += i_h * K
    M_ptr += i_h * C
    dQ_ptr += i_h * C
    dMp_ptr += slot * C + i_h * C
    dbp_ptr += slot + i_h
    if PER_CHANNEL:  # dG: [T, H, K]; for a per-head gate, per-program partial sums over K [NKH, T, H]
        dG_ptr += i_h * K
        G_ptr += i_h * K
    else:
        dGp_ptr += slot + i_h
        G_ptr += i_h

    rows = tl.arange(0, C)
    row_ok = rows < n_valid
    beta = tl.load(beta_ptr + i_h + (t0 + rows) * H, mask=row_ok, other=0.0).to(tl.float32)
    M = tl.load(M_ptr + (t0 + rows)[:, None] * sc + rows[None, :], mask=row_ok[:, None], other=0.0)
    Mt = tl.trans(M)
    coff = (t0 + rows)[:, None] * sc + rows[None, :]
    if i_k == NKH:
        # ---- the terms without a K column: dQk = dO V'^T, dXv = M^T dU (dv, dbeta), dM = dU Xv^T ----
        dQk = tl.zeros((C, C), dtype=tl.float32)
        dM = tl.zeros((C, C), dtype=tl.float32)
        dbeta = tl.zeros((C,), dtype=tl.float32)
        for v0 in range(0, V, BV):
            cv = v0 + tl.arange(0, BV)
            do_b = _rows(do_ptr + v0, t0, 0, n_valid, sv, C, BV, V - v0)
            vn_b = _rows(vn_ptr + v0, t0, 0, n_valid, sv, C, BV, V - v0)
            du_b = _rows(du_ptr + v0, t0, 0, n_valid, sv, C, BV, V - v0)
            v_b = _rows(v_ptr + v0, t0, 0, n_valid, sv, C, BV, V - v0)
            dQk += tl.dot(do_b, tl.trans(vn_b))
            dXv = tl.dot(Mt, du_b)
            tl.store(dv_ptr + (t0 + rows)[:, None] * sv + cv[None, :],
                     (dXv * beta[:, None]).to(dv_ptr.dtype.element_ty), mask=row_ok[:, None] & (cv[None, :] < V))
            dbeta += tl.sum(dXv * v_b, axis=1)
            dM += tl.dot(du_b, tl.trans(v_b * beta[:, None]))
        tl.store(dQ_ptr + coff, tl.where(rows[:, None] >= rows[None, :], dQk * scale, 0.0), mask=row_ok[:, None])
        tl.store(dMp_ptr + coff, dM, mask=row_ok[:, None])
        tl.store(dbp_ptr + (t0 + rows) * H, dbeta, mask=row_ok)
        if not PER_CHANNEL:
            tl.store(dGp_ptr + (t0 + rows) * H, tl.zeros((C,), dtype=tl.float32), mask=row_ok)
    else:
        # ---- K columns k0 .. k0 + BKH: dqg = dO S^T, dW = -dU S^T, dkg = V' dS^T, then through W = M Xk ----
        k0 = i_k * BKH
        rk = k0 + tl.arange(0, BKH)
        dqg = tl.zeros((C, BKH), dtype=tl.float32)
        dW = tl.zeros((C, BKH), dtype=tl.float32)
        dkg = tl.zeros((C, BKH), dtype=tl.float32)
        dgl = tl.zeros((BKH,), dtype=tl.float32)
        h_base = (i_c * H + i_h).to(tl.int64) * K * V
        for v0 in range(0, V, BV):
            cv = v0 + tl.arange(0, BV)
            do_b = _rows(do_ptr + v0, t0, 0, n_valid, sv, C, BV, V - v0)
            vn_b = _rows(vn_ptr + v0, t0, 0, n_valid, sv, C, BV, V - v0)
            du_b = _rows(du_ptr + v0, t0, 0, n_valid, sv, C, BV, V - v0)
            smask = (rk[:, None] < K) & (cv[None, :] < V)
            S_b = tl.load(h_ptr + h_base + rk[:, None] * V + cv[None, :], mask=smask, other=0.0).to(tl.float32)
            dS_b = tl.load(dh_ptr + h_base + rk[:, None] * V + cv[None, :], mask=smask, other=0.0).to(tl.float32)
            S_t = tl.trans(S_b)
            dqg += tl.dot(do_b, S_t)
            dW -= tl.dot(du_b, S_t)
            dkg += tl.dot(vn_b, tl.trans(dS_b))
            dgl += tl.sum(S_b * dS_b, axis=1)
        q = _rows(q_ptr + k0, t0, 0, n_valid, sk, C, BKH, K - k0)
        k = _rows(k_ptr + k0, t0, 0, n_valid, sk, C, BKH, K - k0)
        if PER_CHANNEL:
            G_ptr += k0
        G = _gate_rows(G_ptr, t0, 0, n_valid, sg, C, BKH, K - k0, PER_CHANNEL)
        G_last = _gate_row(G_ptr, t0, n_valid - 1, n_valid, sg, BKH, K - k0, PER_CHANNEL)
        gam = tl.exp(tl.minimum(G, 0.0))
        Xk = k * gam * beta[:, None]
        tl.store(dMp_ptr + coff, tl.dot(dW, tl.trans(Xk)), mask=row_ok[:, None])
        dXk = tl.dot(Mt, dW)
        tl.store(dbp_ptr + (t0 + rows) * H, tl.sum(dXk * k * gam, axis=1), mask=row_ok)
        dk_p = dXk * gam * beta[:, None]
        dG_p = dXk * Xk
        dq_p = dqg * gam * scale
        dG_p += dq_p * q
        kgf = tl.exp(tl.minimum(G_last[None, :] - G, 0.0))
        dk_p += dkg * kgf
        t = dkg * k * kgf
        dG_p -= t
        extra = tl.sum(t, axis=0) + dgl * tl.exp(tl.minimum(G_last, 0.0))
        dG_p = tl.where(rows[:, None] == n_valid - 1, dG_p + extra[None, :], dG_p)
        kmask = row_ok[:, None] & (rk[None, :] < K)
        koff = (t0 + rows)[:, None] * sk + rk[None, :]
        tl.store(dq_ptr + koff, dq_p, mask=kmask)
        tl.store(dk_ptr + koff, dk_p, mask=kmask)
        if PER_CHANNEL:
            tl.store(dG_ptr + (t0 + rows)[:, None] * sg + rk[None, :], dG_p, mask=kmask)
        else:
            tl.store(dGp_ptr + (t0 + rows) * H, tl.sum(dG_p, axis=1), mask=row_ok)


@triton.jit
def intra_bwd_dA_kernel(
    q_ptr, k_ptr, G_ptr, beta_ptr, M_ptr, chunk_ptr, dMp_ptr, dbp_ptr, dGp_ptr,
    dq_ptr, dk_ptr, dG_ptr, dbeta_ptr, dA_ptr, dQ_ptr,
    T, H, K, NKH,
    PER_CHANNEL: tl.constexpr, BKH: tl.constexpr, C: tl.constexpr,
):
    """Per (chunk, head): dM and dbeta summed over intra_bwd_kernel's slots, dA = -M^T dM M^T (strictly lower).
    KDA: stores dA for chunk_kda_intra.kda_intra_bwd_kernel. GDN: adds the terms through the in-chunk decays,
    [C, C]-masked products, K in blocks of BKH, and sums dG over K."""
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    t0 = tl.load(chunk_ptr + 2 * i_c).to(tl.int64)
    n_valid = (tl.load(chunk_ptr + 2 * i_c + 1) - t0).to(tl.int32)
    sk, sc = H * K, H * C
    rows = tl.arange(0, C)
    row_ok = rows < n_valid
    coff = (t0 + rows)[:, None] * sc + i_h * C + rows[None, :]
    boff = (t0 + rows) * H + i_h
    dM = tl.zeros((C, C), dtype=tl.float32)
    dbeta = tl.zeros((C,), dtype=tl.float32)
    dG1 = tl.zeros((C,), dtype=tl.float32)
    zero64 = i_c.to(tl.int64) * 0  # the slot offsets in 64 bits (a loop counter cannot be cast in the interpreter)
    for s in range(0, NKH + 1):
        slot = (zero64 + s) * T * H
        dM += tl.load(dMp_ptr + slot * C + coff, mask=row_ok[:, None], other=0.0)
        dbeta += tl.load(dbp_ptr + slot + boff, mask=row_ok, other=0.0)
        if not PER_CHANNEL:
            dG1 += tl.load(dGp_ptr + slot + boff, mask=row_ok, other=0.0)
    M = tl.load(M_ptr + coff, mask=row_ok[:, None], other=0.0)
    Mt = tl.trans(M)
    dA = -tl.dot(Mt, tl.dot(dM, Mt))
    dA = tl.where(rows[:, None] > rows[None, :], dA, 0.0)
    if PER_CHANNEL:
        tl.store(dA_ptr + coff, dA, mask=row_ok[:, None])
        tl.store(dbeta_ptr + boff, dbeta, mask=row_ok)
    else:
        # ---- one decay per head: Rk = (dA o D) k, Rq = (dQ o D) k, Cs = (dA o D)^T (beta k) + (dQ o D)^T q ----
        beta = tl.load(beta_ptr + boff, mask=row_ok, other=0.0).to(tl.float32)
        G1 = tl.load(G_ptr + boff, mask=row_ok, other=0.0).to(tl.float32)
        decay = tl.exp(tl.minimum(G1[:, None] - G1[None, :], 0.0))
        dAd = dA * decay
        dQd = tl.load(dQ_ptr + coff, mask=row_ok[:, None], other=0.0) * decay
        dAdb_t = tl.trans(dAd * beta[:, None])
        dQd_t = tl.trans(dQd)
        for k0 in range(0, K, BKH):
            q = _rows(q_ptr + i_h * K + k0, t0, 0, n_valid, sk, C, BKH, K - k0)
            k = _rows(k_ptr + i_h * K + k0, t0, 0, n_valid, sk, C, BKH, K - k0)
            Rk = tl.dot(dAd, k)
            Rq = tl.dot(dQd, k)
            Cs = tl.dot(dAdb_t, k) + tl.dot(dQd_t, q)
            rk = k0 + tl.arange(0, BKH)
            kmask = row_ok[:, None] & (rk[None, :] < K)
            koff = (t0 + rows)[:, None] * sk + i_h * K + rk[None, :]
            tl.store(dk_ptr + koff, tl.load(dk_ptr + koff, mask=kmask, other=0.0) + beta[:, None] * Rk + Cs,
                     mask=kmask)
            tl.store(dq_ptr + koff, tl.load(dq_ptr + koff, mask=kmask, other=0.0) + Rq, mask=kmask)
            dbeta += tl.sum(k * Rk, axis=1)
            dG1 += tl.sum(beta[:, None] * k * Rk + q * Rq - k * Cs, axis=1)
        tl.store(dbeta_ptr + boff, dbeta, mask=row_ok)
        tl.store(dG_ptr + boff, dG1, mask=row_ok)


@triton.jit
def rev_cumsum_kernel(x_ptr, y_ptr, chunk_ptr, H, D, BD: tl.constexpr, C: tl.constexpr):
    """y_i = sum of x_r over rows r >= i of the chunk (per head and column); x and y are [T, H, D]."""
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    t0 = tl.load(chunk_ptr + 2 * i_c).to(tl.int64)
    n_valid = (tl.load(chunk_ptr + 2 * i_c + 1) - t0).to(tl.int32)
    x = _rows(x_ptr + i_h * D, t0, 0, n_valid, H * D, C, BD, D)
    y = tl.sum(x, axis=0)[None, :] - tl.cumsum(x, axis=0) + x
    rows = tl.arange(0, C)
    cols = tl.arange(0, BD)
    tl.store(y_ptr + i_h * D + (t0 + rows)[:, None] * (H * D) + cols[None, :], y.to(y_ptr.dtype.element_ty),
             mask=(rows[:, None] < n_valid) & (cols[None, :] < D))
