"""Chunked KDA (the WY/UT form of docs/mixers.md §1.4) in plain PyTorch; what training uses.

    from arena.kernels.kda import chunk_kda
    o, S = chunk_kda(q, k, v, g, beta, output_final_state=True)   # backward by autograd

The math lives in `arena.kernels._delta_rule.chunk_delta_rule`, shared with Gated DeltaNet. KDA's decay is
per channel, so the in-chunk scores use the exact binary-tree form in `_PerChannelScores`.
`backend=None` runs the Triton kernels (arena.kernels.triton_delta) on CUDA tensors and this torch form on CPU;
`backend="torch"` / `"triton"` pick one (Triton falls back to torch with one warning where it cannot run).
"""

from __future__ import annotations

from arena.kernels._dispatch import checked_chunked


def chunk_kda(q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=False,
              allow_neg_eigval=False, chunk_size=None, backend=None, cu_seqlens=None):
    """Chunkwise KDA for any T (the last chunk is zero-padded internally), differentiable by autograd.

    q, k: [B, T, H, K]; v: [B, T, H, V]; g: [B, T, H, K] log-decay (<= 0; no overflow at any depth, cumulative
    decays below exp(-80) ~ 2e-35 count as exp(-80));
    beta: [B, T, H] in (0, 1), e.g. a sigmoid output. allow_neg_eigval=True uses 2 * beta, i.e. beta in
    (0, 2), so the eigenvalues of (I - beta k k^T) lie in [-1, 1] (needed by state-tracking tasks).
    scale defaults to K**-0.5; initial_state: [B, H, K, V] (None = zeros). q and k are not normalized here.
    Computes in fp32 (fp64 for fp64 inputs). Returns (o [B, T, H, V] in v's dtype,
    final state [B, H, K, V] fp32 if output_final_state else None).
    chunk_size: None for the backend's own (torch: 16, fastest on a 2-core CPU; triton: 64, the only one), or a
    power of 2 for torch (speed only: every size gives the same result to rounding).
    backend: None (triton on CUDA, torch otherwise), "torch" or "triton".
    cu_seqlens: int [N+1] offsets of N sequences packed along T (B must be 1); no state passes between them, and
    initial_state / the final state are [N, H, K, V].
    """
    return checked_chunked("chunk_kda", q, k, v, g, beta, per_channel=True, scale=scale, initial_state=initial_state,
                           output_final_state=output_final_state, allow_neg_eigval=allow_neg_eigval,
                           chunk_size=chunk_size, backend=backend, cu_seqlens=cu_seqlens)
