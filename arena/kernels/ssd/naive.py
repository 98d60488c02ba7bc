"""Plain fp32 references for the SSD (Mamba2) recurrence: the token-loop oracle and the one-token step.

In the linear-attention vocabulary (q = C, k = B, v = dt * x, g = dt * A), per head:

    S_t = exp(g_t) S_{t-1} + k_t v_t^T        S: [K, V]
    o_t = scale * S_t^T q_t

    from arena.kernels.ssd import naive_recurrent_ssd, ssd_decode_step
    o, S = naive_recurrent_ssd(q, k, v, g, output_final_state=True)   # q, k: [B, T, H, K]; v: [B, T, H, V]
    o, S = naive_recurrent_ssd(q, k, v, g, cu_seqlens=cu, initial_state=h0)  # packed: B = 1, h0 [N, H, K, V]
    o1, S = ssd_decode_step(q1, k1, v1, g1, S)                         # one token: q1: [B, H, K]

Slow on purpose (a Python loop over T); training uses `chunk_ssd`.
"""

from __future__ import annotations

import torch


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """fp32, or fp64 when any input is fp64."""
    dtype = torch.float32
    for t in tensors:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def check_inputs(q, k, v, g, initial_state, cu_seqlens=None, op: str = "ssd") -> int:
    """One-line ValueError unless q, k: [B, T, H, K], v: [B, T, H, V], g: [B, T, H] and the state is [B, H, K, V]
    ([N, H, K, V] with cu_seqlens, whose checks and messages are the delta-rule ops'). Returns N, the number of
    sequences (B without cu_seqlens)."""
    if q.dim() != 4 or q.shape != k.shape:
        raise ValueError(f"{op}: q and k must both be [B, T, H, K]; got q {tuple(q.shape)}, k {tuple(k.shape)}")
    B, T, H, K = q.shape
    if v.dim() != 4 or v.shape[:3] != (B, T, H):
        raise ValueError(f"{op}: v must be [B, T, H, V] = [{B}, {T}, {H}, V]; got {tuple(v.shape)}")
    if g.shape != (B, T, H):
        raise ValueError(f"{op}: g must be [B, T, H] = [{B}, {T}, {H}]; got {tuple(g.shape)}")
    V = v.shape[-1]
    N = B
    if cu_seqlens is not None:
        from arena.kernels._dispatch import check_cu_seqlens  # the delta rules' checks, word for word

        N = check_cu_seqlens(op, cu_seqlens, q, initial_state)
    if initial_state is not None and initial_state.shape != (N, H, K, V):
        lead = "N" if cu_seqlens is not None else "B"
        raise ValueError(f"{op}: initial_state must be [{lead}, H, K, V] = [{N}, {H}, {K}, {V}]; "
                         f"got {tuple(initial_state.shape)}")
    return N


def run_packed(fn, q, k, v, g, cu_seqlens, initial_state, output_final_state, **kwargs):
    """Run `fn` (an SSD op of this package's signature) on each packed sequence of cu_seqlens in turn (B == 1,
    checked): no state passes between them; returns o [1, T, H, V] and the final states [N, H, K, V] or None."""
    bounds = cu_seqlens.detach().cpu().tolist()
    outs, states = [], []
    for n, (bos, eos) in enumerate(zip(bounds[:-1], bounds[1:])):
        h0 = None if initial_state is None else initial_state[n:n + 1]
        o, S = fn(q[:, bos:eos], k[:, bos:eos], v[:, bos:eos], g[:, bos:eos], initial_state=h0,
                  output_final_state=True, **kwargs)
        outs.append(o)
        states.append(S)
    o = torch.cat(outs, dim=1) if outs else v.new_zeros(v.shape)
    return o, (torch.cat(states, dim=0) if output_final_state and states else None)


def naive_recurrent_ssd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    *,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token loop. q, k: [B, T, H, K]; v: [B, T, H, V]; g: [B, T, H] (<= 0); initial_state: [B, H, K, V].

    Returns o: [B, T, H, V] in v's dtype and, if asked, the final state [B, H, K, V] in fp32 (fp64 for fp64).
    cu_seqlens: int [N+1] offsets of N sequences packed along T (B must be 1); no state passes between them, and
    initial_state / the final state are [N, H, K, V].
    """
    check_inputs(q, k, v, g, initial_state, cu_seqlens, op="naive_recurrent_ssd")
    if cu_seqlens is not None:
        return run_packed(naive_recurrent_ssd, q, k, v, g, cu_seqlens, initial_state, output_final_state,
                          scale=scale)
    out_dtype, dtype = v.dtype, compute_dtype(q, k, v, g, initial_state)
    q, k, v, g = (t.to(dtype) for t in (q, k, v, g))
    B, T, H, K = q.shape
    S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(dtype)
    outs = []
    for t in range(T):
        S = torch.exp(g[:, t])[..., None, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]  # [B, H, K, V]
        outs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    o = torch.stack(outs, dim=1) if outs else v.new_zeros(v.shape, dtype=dtype)  # [B, T, H, V]
    return o.to(out_dtype), (S if output_final_state else None)


def ssd_decode_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    state: torch.Tensor | None,
    *,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token. q, k: [B, H, K]; v: [B, H, V]; g: [B, H]; state: [B, H, K, V] or None (zeros).

    Returns (o: [B, H, V] in v's dtype, new_state: [B, H, K, V] fp32/fp64); `state` is not modified.
    """
    check_inputs(q[:, None], k[:, None], v[:, None], g[:, None], state, op="ssd_decode_step")
    out_dtype, dtype = v.dtype, compute_dtype(q, k, v, g, state)
    q, k, v, g = (t.to(dtype) for t in (q, k, v, g))
    B, H, K = q.shape
    S = q.new_zeros(B, H, K, v.shape[-1]) if state is None else state.to(dtype)
    S = torch.exp(g)[..., None, None] * S + k[..., :, None] * v[..., None, :]  # out of place: caller keeps its state
    o = scale * torch.einsum("bhk,bhkv->bhv", q, S)
    return o.to(out_dtype), S
