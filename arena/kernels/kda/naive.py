"""KDA references: the fp32 token-loop oracle and the single-token decode step (docs/mixers.md §1.1).

    from arena.kernels.kda.naive import naive_recurrent_kda, kda_decode_step
    o, S = naive_recurrent_kda(q, k, v, g, beta, output_final_state=True)

Per token, in this order (the state is [K, V], keys on rows; the gate scales rows):
    S <- S * exp(g)[:, None]                     Diag(alpha) S
    S <- S + k (beta * (v - S^T k))^T            delta-rule correction
    o  = S^T (scale * q)                         read after the update
which is S_t = (I - beta k k^T) Diag(exp(g)) S_{t-1} + beta k v^T.
"""

from __future__ import annotations

import torch

from arena.kernels._delta_rule import check_inputs, compute_dtype


def naive_recurrent_kda(q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=False,
                        allow_neg_eigval=False):
    """Token-by-token KDA in fp32 (fp64 for fp64 inputs); the oracle the chunked form is tested against.

    q, k: [B, T, H, K]; v: [B, T, H, V]; g: [B, T, H, K] log-decay (<= 0, alpha = exp(g));
    beta: [B, T, H] in (0, 1), e.g. a sigmoid output. allow_neg_eigval=True uses 2 * beta, i.e. beta in
    (0, 2), so the eigenvalues of (I - beta k k^T) lie in [-1, 1] (needed by state-tracking tasks).
    scale defaults to K**-0.5; initial_state: [B, H, K, V] (None = zeros). The kernel does not normalize
    q or k. Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] fp32 or None).
    """
    check_inputs("naive_recurrent_kda", q, k, v, g, beta, initial_state, per_channel=True)
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype, out_dtype = compute_dtype(q, k, v, g, beta), v.dtype
    scale = K ** -0.5 if scale is None else scale
    q, k, v, g, beta = (x.to(dtype).transpose(1, 2) for x in (q, k, v, g, beta))  # [B, H, T, ...]
    if allow_neg_eigval:
        beta = 2 * beta
    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)
    o = []
    for t in range(T):
        q_t, k_t, v_t, b_t = q[:, :, t] * scale, k[:, :, t], v[:, :, t], beta[:, :, t]
        S = S * g[:, :, t].exp().unsqueeze(-1)
        v_err = b_t.unsqueeze(-1) * (v_t - torch.einsum("bhkv,bhk->bhv", S, k_t))  # [B, H, V]
        S = S + k_t.unsqueeze(-1) * v_err.unsqueeze(-2)
        o.append(torch.einsum("bhkv,bhk->bhv", S, q_t))
    o = torch.stack(o, dim=1) if T else q.new_zeros(B, 0, H, V)  # [B, T, H, V]
    return o.to(out_dtype), (S if output_final_state else None)


def kda_decode_step(q, k, v, g, beta, state, *, scale=None, allow_neg_eigval=False):
    """One KDA token for token-by-token decoding; the input state is not modified.

    q, k: [B, H, K]; v: [B, H, V]; g: [B, H, K] log-decay; beta: [B, H] in (0, 1) (doubled to (0, 2) with
    allow_neg_eigval=True); state: [B, H, K, V] (None = zeros). scale defaults to K**-0.5.
    Returns (o [B, H, V] in v's dtype, new state [B, H, K, V] fp32, or fp64 for fp64 inputs).
    """
    check_inputs("kda_decode_step", q, k, v, g, beta, state, per_channel=True, step=True)
    dtype = compute_dtype(q, k, v, g, beta)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    qf, kf, vf, gf, bf = (x.to(dtype) for x in (q, k, v, g, beta))
    if allow_neg_eigval:
        bf = 2 * bf
    S = vf.new_zeros(*q.shape, v.shape[-1]) if state is None else state.to(dtype)
    S = S * gf.exp().unsqueeze(-1)  # out of place: the caller's state survives
    v_err = bf.unsqueeze(-1) * (vf - (S * kf.unsqueeze(-1)).sum(-2))  # [B, H, V]
    S = S + kf.unsqueeze(-1) * v_err.unsqueeze(-2)
    o = (S * (scale * qf).unsqueeze(-1)).sum(-2)  # [B, H, V]
    return o.to(v.dtype), S
