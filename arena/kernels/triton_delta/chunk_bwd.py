"""Backward Triton kernels of the chunkwise delta rule (KDA and Gated DeltaNet); the forward is chunk_fwd.py.

Called by `arena.kernels.triton_delta.chunk`; not a public API. With dO and the final-state cotangent, three
launches (four for KDA):

`state_bwd_kernel` (per sequence, head and V block; chunks in reverse) carries dS, the gradient of the state that
leaves a chunk:  dV' = Aqk^T dO + kg dS;  dS <- exp(G_last) dS + (scale q exp(G))^T dO - W^T dV'.  It stores dS per
chunk (fp32), dV' (= dU, fp32) and dS of the initial state.

`intra_bwd_kernel` (per chunk and head) first takes the whole-chunk terms (S entering the chunk and dS leaving it
come from the stored per-chunk tapes):
    dqg = dO S^T,  dW = -dU S^T,  dkg = V' dS^T,  dQk = dO V'^T,  dM = dW Xk^T + dU Xv^T,  dA = -M^T dM M^T
with Xk = beta k exp(G), Xv = beta v, M = (I + Akk)^-1. For GDN it then adds the terms through the in-chunk decays
exp(G_r - G_i), a [C, C] mask here; for KDA (a decay per channel) it stores dL/dAkk and dL/dAqk, and
chunk_kda_intra.kda_intra_bwd_kernel, launched next, adds those terms per 16-row block. It writes dq, dk, dv, dbeta
and dG, the gradient of the cumulative log-decay.

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
    dq_ptr, dk_ptr, dv_ptr, dG_ptr, dbeta_ptr, dA_ptr, dQ_ptr,
    scale, H, K, V,
    PER_CHANNEL: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, C: tl.constexpr,
):
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    t0 = tl.load(chunk_ptr + 2 * i_c).to(tl.int64)
    n_valid = (tl.load(chunk_ptr + 2 * i_c + 1) - t0).to(tl.int32)
    sk, sv, sc = H * K, H * V, H * C
    sg = H * K if PER_CHANNEL else H
    q_ptr += i_h * K
    k_ptr += i_h * K
    v_ptr += i_h * V
    vn_ptr += i_h * V
    du_ptr += i_h * V
    do_ptr += i_h * V
    dv_ptr += i_h * V
    dq_ptr += i_h * K
    dk_ptr += i_h * K
    if PER_CHANNEL:  # dG: [T, H, K]; for a per-head gate [T, H], summed over K here
        dG_ptr += i_h * K
    else:
        dG_ptr += i_h
    M_ptr += i_h * C
    dA_ptr += i_h * C
    dQ_ptr += i_h * C
    beta_ptr += i_h
    dbeta_ptr += i_h
    if PER_CHANNEL:
        G_ptr += i_h * K
    else:
        G_ptr += i_h

    rows = tl.arange(0, C)
    rk = tl.arange(0, BK)
    row_ok = rows < n_valid
    # ---- phase 1: whole-chunk terms ----
    q = _rows(q_ptr, t0, 0, n_valid, sk, C, BK, K)
    k = _rows(k_ptr, t0, 0, n_valid, sk, C, BK, K)
    G = _gate_rows(G_ptr, t0, 0, n_valid, sg, C, BK, K, PER_CHANNEL)
    G_last = _gate_row(G_ptr, t0, n_valid - 1, n_valid, sg, BK, K, PER_CHANNEL)
    beta = tl.load(beta_ptr + (t0 + rows) * H, mask=row_ok, other=0.0).to(tl.float32)
    gam = tl.exp(tl.minimum(G, 0.0))
    M = tl.load(M_ptr + (t0 + rows)[:, None] * sc + rows[None, :], mask=row_ok[:, None], other=0.0)
    Mt = tl.trans(M)

    dqg = tl.zeros((C, BK), dtype=tl.float32)
    dW = tl.zeros((C, BK), dtype=tl.float32)
    dkg = tl.zeros((C, BK), dtype=tl.float32)
    dgl = tl.zeros((BK,), dtype=tl.float32)
    dQk = tl.zeros((C, C), dtype=tl.float32)
    dM = tl.zeros((C, C), dtype=tl.float32)
    dbeta = tl.zeros((C,), dtype=tl.float32)
    h_base = (i_c * H + i_h).to(tl.int64) * K * V
    for v0 in range(0, V, BV):
        cv = v0 + tl.arange(0, BV)
        do_b = _rows(do_ptr + v0, t0, 0, n_valid, sv, C, BV, V - v0)
        vn_b = _rows(vn_ptr + v0, t0, 0, n_valid, sv, C, BV, V - v0)
        du_b = _rows(du_ptr + v0, t0, 0, n_valid, sv, C, BV, V - v0)
        v_b = _rows(v_ptr + v0, t0, 0, n_valid, sv, C, BV, V - v0)
        smask = (rk[:, None] < K) & (cv[None, :] < V)
        S_b = tl.load(h_ptr + h_base + rk[:, None] * V + cv[None, :], mask=smask, other=0.0).to(tl.float32)
        dS_b = tl.load(dh_ptr + h_base + rk[:, None] * V + cv[None, :], mask=smask, other=0.0).to(tl.float32)
        S_t = tl.trans(S_b)
        dqg += tl.dot(do_b, S_t)
        dW -= tl.dot(du_b, S_t)
        dkg += tl.dot(vn_b, tl.trans(dS_b))
        dgl += tl.sum(S_b * dS_b, axis=1)
        dQk += tl.dot(do_b, tl.trans(vn_b))
        dXv = tl.dot(Mt, du_b)
        tl.store(dv_ptr + (t0 + rows)[:, None] * sv + cv[None, :], (dXv * beta[:, None]).to(dv_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & (cv[None, :] < V))
        dbeta += tl.sum(dXv * v_b, axis=1)
        dM += tl.dot(du_b, tl.trans(v_b * beta[:, None]))
    Xk = k * gam * beta[:, None]
    if BK > 128:  # [64, 256] fp32 operands would overflow shared memory: these two products in the input dtype
        dt = q_ptr.dtype.element_ty
        dM += tl.dot(dW.to(dt), tl.trans(Xk.to(dt)))
        dXk = tl.dot(Mt.to(dt), dW.to(dt))
    else:
        dM += tl.dot(dW, tl.trans(Xk))
        dXk = tl.dot(Mt, dW)
    dbeta += tl.sum(dXk * k * gam, axis=1)
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
    dA = -tl.dot(Mt, tl.dot(dM, Mt))
    dA = tl.where(rows[:, None] > rows[None, :], dA, 0.0)
    dQs = tl.where(rows[:, None] >= rows[None, :], dQk * scale, 0.0)

    kmask = row_ok[:, None] & (rk[None, :] < K)
    koff = (t0 + rows)[:, None] * sk + rk[None, :]
    if not PER_CHANNEL:
        # ---- one decay per head: the in-chunk terms are [C, C]-masked products, all in registers ----
        G1 = tl.load(G_ptr + (t0 + rows) * sg, mask=row_ok, other=0.0).to(tl.float32)
        decay = tl.exp(tl.minimum(G1[:, None] - G1[None, :], 0.0))
        dAd = dA * decay
        dQd = dQs * decay
        if BK > 128:  # fp32 [64, 256] operands would overflow shared memory: the products in the input dtype
            dt = q_ptr.dtype.element_ty
            kd = k.to(dt)
            Rk = tl.dot(dAd.to(dt), kd)
            Rq = tl.dot(dQd.to(dt), kd)
            Cs = tl.dot(tl.trans((dAd * beta[:, None]).to(dt)), kd) + tl.dot(tl.trans(dQd.to(dt)), q.to(dt))
        else:
            Rk = tl.dot(dAd, k)  # sum_i dA[r, i] decay[r, i] k_i
            Rq = tl.dot(dQd, k)
            Cs = tl.dot(tl.trans(dAd * beta[:, None]), k) + tl.dot(tl.trans(dQd), q)
        tl.store(dk_ptr + koff, dk_p + beta[:, None] * Rk + Cs, mask=kmask)
        tl.store(dq_ptr + koff, dq_p + Rq, mask=kmask)
        dbeta += tl.sum(k * Rk, axis=1)
        tl.store(dbeta_ptr + (t0 + rows) * H, dbeta, mask=row_ok)
        dG1 = tl.sum(dG_p + beta[:, None] * k * Rk + q * Rq - k * Cs, axis=1)
        tl.store(dG_ptr + (t0 + rows) * H, dG1, mask=row_ok)
    else:
        tl.store(dq_ptr + koff, dq_p, mask=kmask)
        tl.store(dk_ptr + koff, dk_p, mask=kmask)
        tl.store(dG_ptr + koff, dG_p, mask=kmask)
        tl.store(dbeta_ptr + (t0 + rows) * H, dbeta, mask=row_ok)
        coff = (t0 + rows)[:, None] * sc + rows[None, :]
        tl.store(dA_ptr + coff, dA, mask=row_ok[:, None])
        tl.store(dQ_ptr + coff, dQs, mask=row_ok[:, None])
        # the terms through the in-chunk decays: chunk_kda_intra.kda_intra_bwd_kernel, launched next


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
