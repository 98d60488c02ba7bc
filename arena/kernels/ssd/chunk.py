"""Chunked SSD (Mamba2's "state-space duality" form) in plain PyTorch, differentiable by autograd.

Same recurrence and signature as `naive_recurrent_ssd`, computed with matmuls over chunks of length C
(T is padded internally to a multiple of C with g = 0, k = v = q = 0, which leaves o and the state unchanged):

  1. diagonal blocks: o_diag = ((q k^T) * exp(segsum(g))) v        inside each chunk  [C, C] per chunk
  2. chunk states:    s_n    = sum_l exp(g_l+1 + ... + g_C) k_l v_l^T                   [K, V] per chunk
  3. inter-chunk:     S_n    = state entering chunk n = exp(segsum(chunk totals)) @ [h0; s_0 .. s_N-2]
  4. off-diagonal:    o_off  = (q * exp(cumsum g)) S_n
  final state = exp(total of chunk N-1) S_N-1 + s_N-1, a separate branch: training, which never uses it,
  pays no backward for it.

    from arena.kernels.ssd import chunk_ssd
    o, S = chunk_ssd(q, k, v, g, initial_state=h0, output_final_state=True, chunk_size=64)
    o, S = chunk_ssd(q, k, v, g, cu_seqlens=cu, backend="triton")    # packed sequences, B = 1: states [N, H, K, V]

Tested against the token loop in tests/kernels/test_ssd.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from arena.errors import choice_error
from arena.kernels._dispatch import _warn_once, fp32_backward_blocker
from arena.kernels.ssd.naive import check_inputs, compute_dtype, run_packed

BACKENDS = ("torch", "triton")  # triton: arena.kernels.ssd.triton_ssd (CUDA, or the interpreter), chunk 64
TRITON_CHUNK_SIZE = 64  # the Triton SSD's only chunk (triton_ssd.CHUNK is this)
def needs_backward(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd will run a backward through these inputs (grad mode on and one of them requires grad)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def segsum(x: torch.Tensor) -> torch.Tensor:
    """x: [..., L] -> [..., L, L] with out[r, j] = x[j+1] + ... + x[r] for j <= r, -inf above the diagonal.

    Summed directly (masked cumsum), not as cumsum[r] - cumsum[j], so no cancellation at large |x|; the -inf
    goes into the exponent, so exp() gives exact zeros whose gradient is 0 rather than 0 * inf = NaN.
    """
    L = x.shape[-1]
    strict = torch.ones(L, L, dtype=torch.bool, device=x.device).tril(-1)
    out = x[..., :, None].expand(*x.shape, L).masked_fill(~strict, 0).cumsum(dim=-2)  # [..., L(r), L(j)]
    return out.masked_fill(~torch.ones_like(strict).tril(), float("-inf"))


def _to_chunks(x: torch.Tensor, C: int) -> torch.Tensor:
    """[B, T, H, *rest] -> [B, H, N, C, *rest] with T = N * C."""
    B, T, H = x.shape[:3]
    x = x.reshape(B, T // C, C, H, *x.shape[3:])  # [B, N, C, H, ...]
    return x.permute(0, 3, 1, 2, *range(4, x.dim())).contiguous()  # batched matmuls are ~4x slower on strided views


def chunk_ssd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    *,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    backend: str = "torch",
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """q, k: [B, T, H, K]; v: [B, T, H, V]; g: [B, T, H] (<= 0); initial_state: [B, H, K, V].

    Returns o: [B, T, H, V] in v's dtype and, if asked, the final state [B, H, K, V] in fp32 (fp64 for fp64).
    cu_seqlens: int [N+1] offsets of N sequences packed along T (B must be 1); no state passes between them, and
    initial_state / the final state are [N, H, K, V]. The torch path runs the sequences one by one.
    backend="triton" runs the torch path, with one warning, for inputs the Triton kernels cannot take
    (`fp32_backward_blocker`: fp32 with K > 128 when a backward follows).
    """
    if backend not in BACKENDS:
        raise choice_error("chunk_ssd backend", backend, BACKENDS)
    if chunk_size < 1:
        raise ValueError(f"chunk_ssd: chunk_size={chunk_size} must be >= 1")
    if backend == "triton":  # its own chunk of 64: the chunk size changes rounding only, not the result
        # the delta rules' rule, in the interpreter too (so CPU tests see what a GPU does): its
        # ssd_bwd_intra_kernel holds all of K in one tile
        blocker = fp32_backward_blocker(q.dtype, q.shape[-1], needs_backward(q, k, v, g, initial_state))
        if blocker is None:
            from arena.kernels.ssd.triton_ssd import chunk_ssd_triton

            return chunk_ssd_triton(q, k, v, g, scale=scale, initial_state=initial_state,
                                    output_final_state=output_final_state, cu_seqlens=cu_seqlens)
        _warn_once("chunk_ssd", blocker)  # then the torch path below, as the delta-rule ops fall back
    check_inputs(q, k, v, g, initial_state, cu_seqlens, op="chunk_ssd")
    if cu_seqlens is not None:
        return run_packed(chunk_ssd, q, k, v, g, cu_seqlens, initial_state, output_final_state, scale=scale,
                          chunk_size=chunk_size)
    out_dtype, dtype = v.dtype, compute_dtype(q, k, v, g, initial_state)
    B, T, H, K = q.shape
    V = v.shape[-1]
    if T == 0:  # an empty (packed) sequence: no output, the state passes through
        final = None
        if output_final_state:
            final = (initial_state.to(dtype).clone() if initial_state is not None
                     else q.new_zeros((B, H, K, V), dtype=dtype))
        return v.new_zeros(v.shape), final
    C = max(1, min(chunk_size, T))  # a short sequence is one chunk: no wasted padding
    pad = -T % C
    q, k, v, g = (t.to(dtype) for t in (q, k, v, g))
    if scale != 1.0:
        q = q * scale
    if pad:
        q, k, v, g = (F.pad(t, (0, 0) * (t.dim() - 3) + (0, 0, 0, pad)) for t in (q, k, v, g))
    N = (T + pad) // C
    q, k, v, g = (_to_chunks(t, C) for t in (q, k, v, g))  # q, k: [B, H, N, C, K]; g: [B, H, N, C]

    decay = torch.exp(segsum(g))  # [B, H, N, C, C]: decay from token j to token r of one chunk
    o = ((q @ k.transpose(-1, -2)) * decay) @ v  # [B, H, N, C, V]

    # Chunk states s_n; the last one only feeds the final state, so it is skipped when that is not asked for.
    n = N if output_final_state else N - 1
    to_end = decay[:, :, :n, -1, :, None]  # [B, H, n, C, 1]: decay from token l to the chunk's last token
    chunk_states = (k[:, :, :n] * to_end).transpose(-1, -2) @ v[:, :, :n]  # [B, H, n, K, V]

    # States entering chunks first..N-1; with no initial state nothing enters chunk 0, so it is left out.
    totals = g.sum(-1)  # [B, H, N]: total log-decay of each chunk
    first = 0 if initial_state is not None else 1
    starts = chunk_states[:, :, : N - 1]  # [B, H, N-1, K, V]
    if initial_state is not None:
        starts = torch.cat([initial_state.to(dtype)[:, :, None], starts], dim=2)  # [B, H, N, K, V]
    entering = None
    if N > first:
        between = torch.exp(segsum(F.pad(totals[..., first : N - 1], (1, 0))))  # [B, H, N-first, N-first]
        entering = (between @ starts.flatten(-2)).unflatten(-1, (K, V))  # [B, H, N-first, K, V]
        from_start = torch.exp(g[:, :, first:].cumsum(-1))[..., None]  # [B, H, N-first, C, 1]
        off = (q[:, :, first:] * from_start) @ entering  # [B, H, N-first, C, V]
        o = o + off if first == 0 else torch.cat([o[:, :, :1], o[:, :, 1:] + off], dim=2)

    final = None
    if output_final_state:
        final = chunk_states[:, :, -1]  # [B, H, K, V]
        if entering is not None:
            final = final + torch.exp(totals[:, :, -1])[..., None, None] * entering[:, :, -1]

    o = o.permute(0, 2, 3, 1, 4).reshape(B, N * C, H, V)[:, :T]  # [B, T, H, V]
    return o.to(out_dtype), final
