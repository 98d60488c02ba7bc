"""Gated DeltaNet references: the fp32 token-loop oracle and the single-token decode step (docs/mixers.md §1.1).

    from arena.kernels.gated_delta_rule.naive import naive_recurrent_gated_delta_rule
    o, S = naive_recurrent_gated_delta_rule(q, k, v, g, beta, output_final_state=True)

Per token, in this order (state [K, V]; one decay per head):
    S <- exp(g) S
    S <- S + k (beta * (v - S^T k))^T
    o  = S^T (scale * q)
which is S_t = exp(g_t) (I - beta k k^T) S_{t-1} + beta k v^T: exactly KDA with g broadcast over K, so these
references run KDA's token loop on the broadcast gate (one oracle to trust, checked by hand in the tests).
"""

from __future__ import annotations

from arena.kernels._delta_rule import check_inputs
from arena.kernels.kda.naive import kda_decode_step, naive_recurrent_kda


def naive_recurrent_gated_delta_rule(q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=False,
                                     allow_neg_eigval=False):
    """Token-by-token Gated DeltaNet in fp32 (fp64 for fp64 inputs); the oracle for the chunked form.

    q, k: [B, T, H, K]; v: [B, T, H, V]; g: [B, T, H] log-decay (<= 0, alpha = exp(g));
    beta: [B, T, H] in (0, 1), e.g. a sigmoid output. allow_neg_eigval=True uses 2 * beta, i.e. beta in
    (0, 2), so the eigenvalues of (I - beta k k^T) lie in [-1, 1] (needed by state-tracking tasks).
    scale defaults to K**-0.5; initial_state: [B, H, K, V] (None = zeros). The kernel does not normalize
    q or k. Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] fp32 or None).
    """
    check_inputs("naive_recurrent_gated_delta_rule", q, k, v, g, beta, initial_state, per_channel=False)
    return naive_recurrent_kda(q, k, v, g.unsqueeze(-1).expand(q.shape), beta, scale=scale,
                               initial_state=initial_state, output_final_state=output_final_state,
                               allow_neg_eigval=allow_neg_eigval)


def gated_delta_rule_decode_step(q, k, v, g, beta, state, *, scale=None, allow_neg_eigval=False):
    """One Gated DeltaNet token for token-by-token decoding; the input state is not modified.

    q, k: [B, H, K]; v: [B, H, V]; g: [B, H] log-decay; beta: [B, H] in (0, 1) (doubled to (0, 2) with
    allow_neg_eigval=True); state: [B, H, K, V] (None = zeros). scale defaults to K**-0.5.
    Returns (o [B, H, V] in v's dtype, new state [B, H, K, V] fp32, or fp64 for fp64 inputs).
    """
    check_inputs("gated_delta_rule_decode_step", q, k, v, g, beta, state, per_channel=False, step=True)
    return kda_decode_step(q, k, v, g.unsqueeze(-1).expand(q.shape), beta, state, scale=scale,
                           allow_neg_eigval=allow_neg_eigval)
