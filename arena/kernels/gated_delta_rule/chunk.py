"""Chunked Gated DeltaNet (the WY/UT form of docs mixers.md 1.6 / 2) in plain PyTorch; what training uses.

    from arena.kernels.gated_delta_rule import chunk_gated_delta_rule
    o, S = chunk_gated_delta_rule(q, k, v, g, beta, output_final_state=True)   # backward by autograd

The math lives in `arena.kernels._delta_rule.chunk_delta_rule`, shared with KDA. The decay is one scalar per
head, so the exact pairwise decay is a [C, C] mask on plain k k^T and q k^T products.
`backend="torch"` is the only backend for now; a Triton one will plug in behind this same function.
"""

from __future__ import annotations

from arena.kernels._delta_rule import check_backend, check_chunk_size, check_inputs, chunk_delta_rule

DEFAULT_CHUNK_SIZE = 16  # fastest on a 2-core CPU of 8 / 16 / 32 / 64 (fwd+bwd, T 64-256); must be a power of 2


def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                           allow_neg_eigval=False, chunk_size=DEFAULT_CHUNK_SIZE, backend="torch"):
    """Chunkwise Gated DeltaNet for any T (the last chunk is zero-padded internally), differentiable.

    q, k: [B, T, H, K]; v: [B, T, H, V]; g: [B, T, H] log-decay (<= 0; no overflow at any depth, cumulative
    decays below exp(-80) ~ 2e-35 count as exp(-80));
    beta: [B, T, H] in (0, 1), e.g. a sigmoid output. allow_neg_eigval=True uses 2 * beta, i.e. beta in
    (0, 2), so the eigenvalues of (I - beta k k^T) lie in [-1, 1] (needed by state-tracking tasks).
    scale defaults to K**-0.5; initial_state: [B, H, K, V] (None = zeros). q and k are not normalized here.
    Computes in fp32 (fp64 for fp64 inputs). Returns (o [B, T, H, V] in v's dtype,
    final state [B, H, K, V] fp32 if output_final_state else None). chunk_size: a power of 2 (speed only:
    every size gives the same result to rounding). backend: only "torch".
    """
    check_backend(backend)
    check_chunk_size(chunk_size)
    check_inputs("chunk_gated_delta_rule", q, k, v, g, beta, initial_state, per_channel=False)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return chunk_delta_rule(q, k, v, g, beta, scale, initial_state, output_final_state, allow_neg_eigval,
                            chunk_size)
