"""Causal softmax attention (an explicit oracle and the SDPA path, same signature) and rotary embeddings.

    from arena.kernels.attention import naive_attention, sdpa_attention, rotary
    o = sdpa_attention(q, k, v, scale)        # q: [B, T, H, K], k: [B, S, H, K], v: [B, S, H, V] -> [B, T, H, V]

Queries are the LAST T of the S key positions: query i sits at absolute position S - T + i and sees keys
0 .. S - T + i. So S == T is ordinary causal attention, and S > T continues from a KV cache of S - T tokens.
There is no recurrent state, so these return `o` alone; the caller owns the cache.
Used by `arena.mixers.mla`; tested through tests/mixers/test_mla.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.shape[:1] + k.shape[2:] != q.shape[:1] + q.shape[2:] or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"attention: expected q [B,T,H,K], k [B,S,H,K], v [B,S,H,V]; got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape[1] < q.shape[1]:
        raise ValueError(f"attention: {k.shape[1]} keys cannot serve {q.shape[1]} queries (need S >= T)")


def causal_mask(T: int, S: int, device=None) -> torch.Tensor:
    """[T, S] bool, True where query i (at position S - T + i) may attend to key j."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale + causal mask) v, written out in fp32 (fp64 for fp64 inputs): the oracle."""
    _check(q, k, v)
    ct = torch.promote_types(q.dtype, torch.float32)
    scores = torch.einsum("bthk,bshk->bhts", q.to(ct), k.to(ct)) * scale  # [B, H, T, S]
    scores = scores.masked_fill(~causal_mask(q.shape[1], k.shape[1], q.device), float("-inf"))
    return torch.einsum("bhts,bshv->bthv", scores.softmax(dim=-1), v.to(ct)).to(q.dtype)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """The same as `naive_attention`, through torch's fused scaled_dot_product_attention."""
    _check(q, k, v)
    T, S = q.shape[1], k.shape[1]
    # SDPA's is_causal aligns the mask top-left, which is only right when there is no cache (S == T);
    # one query over a cache sees every key, so it needs no mask at all.
    mask = None if T == 1 or S == T else causal_mask(T, S, q.device)
    o = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),  # [B, H, T|S, K|V]
        attn_mask=mask, is_causal=(S == T and T > 1), scale=scale,
    )
    return o.transpose(1, 2)  # [B, T, H, V]


def rotary(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Rotate x: [B, T, H, K] by RoPE at integer `positions`: [T], in the rotate-half (GPT-NeoX) pairing.

    Channel i is paired with channel i + K/2 and the pair turns by angle positions * theta^(-2i/K).
    K must be even.
    """
    K = x.shape[-1]
    if K % 2:
        raise ValueError(f"rotary: the rotated dim must be even, got K={K}")
    inv_freq = theta ** (-torch.arange(0, K // 2, dtype=torch.float64, device=x.device) * 2 / K)
    # angles in fp64 so that large positions keep their low bits before the cast
    angles = positions.to(torch.float64)[:, None] * inv_freq  # [T, K/2]
    cos = angles.cos().to(x.dtype)[:, None, :]  # [T, 1, K/2], broadcast over heads
    sin = angles.sin().to(x.dtype)[:, None, :]
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
