"""Host side of the chunkwise Triton delta rule: layout, launches and the autograd.Function.

    from arena.kernels.triton_delta.chunk import chunk_delta_rule_triton
    o, S = chunk_delta_rule_triton(q, k, v, g, beta, scale, initial_state, True, False, cu_seqlens=None)

Use it through `arena.kernels.kda.chunk_kda(..., backend="triton")` or the Gated DeltaNet op, which check the
arguments. Batches are packed into one sequence axis ([1, B*T, H, *], offsets B+1), so fixed-length batches and
`cu_seqlens` run the same kernels. The forward keeps what the backward needs (no recomputation): the cumulative
gates G (fp32), W, Aqk, M = (I + Akk)^-1 (fp32), V' and the state entering every chunk.
"""

from __future__ import annotations

import functools

import torch
import triton

from arena.kernels.triton_delta import output_buffer
from arena.kernels.triton_delta.chunk_bwd import intra_bwd_kernel, rev_cumsum_kernel, state_bwd_kernel
from arena.kernels.triton_delta.chunk_fwd import CHUNK, SUB, chunk_cumsum_kernel, intra_fwd_kernel, state_fwd_kernel
from arena.kernels.triton_delta.chunk_kda_intra import kda_akk_fwd_kernel, kda_intra_bwd_kernel

MAX_HEAD_DIM = 256


class Layout:
    """Sequences packed along T: offsets `cu` [N+1], and the chunks, each inside one sequence, in sequence order."""

    def __init__(self, B: int, T: int, cu_seqlens: torch.Tensor | None, device: torch.device):
        if cu_seqlens is None:
            cu = torch.arange(0, B + 1, dtype=torch.int64) * T
        else:
            cu = cu_seqlens.detach().to("cpu", torch.int64)
        lens = cu[1:] - cu[:-1]
        n_chunks = (lens + CHUNK - 1) // CHUNK
        self.N = len(lens)
        self.NC = int(n_chunks.sum())
        offsets = torch.zeros(self.N + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(n_chunks, 0)
        seq = torch.repeat_interleave(torch.arange(self.N), n_chunks)
        j = torch.arange(self.NC) - offsets[:-1][seq]
        starts = cu[:-1][seq] + j * CHUNK
        ends = torch.minimum(starts + CHUNK, cu[1:][seq])
        self.cu = cu.to(device)
        self.chunk_offsets = offsets.to(device)
        self.chunks = torch.stack([starts, ends], dim=1).contiguous().to(device)


@functools.lru_cache(maxsize=32)
def fixed_layout(B: int, T: int, device: torch.device) -> Layout:
    """The layout of a fixed-length batch, built once: training repeats the same (B, T) every step, and building it
    costs three host-to-device copies. Kernels only read a layout's tensors, so sharing them is safe."""
    return Layout(B, T, None, device)


def _blocks(K: int, V: int) -> dict:
    BK = max(16, triton.next_power_of_2(K))
    BV_full = max(16, triton.next_power_of_2(V))
    # K = 256 with V = 32 broke the state kernels on an H200 under Triton 3.6 (illegal address, or garbage dU),
    # while BV = 64 passed at every V: above K = 128 the state kernels keep BV = 64, masking the unused columns
    BV_state = 64 if BK > 128 else min(64, BV_full)
    return dict(BK=BK, BV_state=BV_state, BV_intra=min(64 if BK <= 128 else 32, BV_full), BKS=min(64, BK),
                warps_intra=4 if BK <= 64 else 8, warps_state=4 if BK <= 64 else 8)


def _forward(q, k, v, g, beta, h0, scale, layout: Layout, store_final: bool, save: bool):
    _, T, H, K = q.shape
    V = v.shape[-1]
    per_channel = g.dim() == 4
    dev, dt = q.device, q.dtype
    b = _blocks(K, V)
    G = output_buffer(g.shape, torch.float32, dev)
    W = output_buffer(k.shape, dt, dev)
    U = output_buffer(v.shape, dt, dev)
    Aqk = output_buffer((1, T, H, CHUNK), dt, dev)
    M = output_buffer((1, T, H, CHUNK), torch.float32, dev)
    Akk = torch.empty((1, T, H, CHUNK), dtype=torch.float32, device=dev)  # scratch, lower blocks only
    if per_channel:  # KDA: the cumulative gates, then Akk and Aqk per 16-row block (the exps are per channel)
        chunk_cumsum_kernel[(layout.NC, H, triton.cdiv(K, b["BKS"]))](g, G, layout.chunks, H, K, BD=b["BKS"],
                                                                       C=CHUNK)
        kda_akk_fwd_kernel[(layout.NC * (CHUNK // SUB), H)](
            q, k, G, beta, layout.chunks, Akk, Aqk, scale, H, K, BKS=b["BKS"], C=CHUNK, NB=SUB, num_warps=8)
    intra_fwd_kernel[(layout.NC, H)](
        q, k, v, g, beta, layout.chunks, G, W, U, Aqk, M, Akk, scale, H, K, V,
        PER_CHANNEL=per_channel, BK=b["BK"], BV=max(16, triton.next_power_of_2(V)),
        C=CHUNK, NB=SUB, num_warps=b["warps_intra"], num_stages=1)
    o = output_buffer(v.shape, v.dtype, dev)
    ht = output_buffer((layout.N, H, K, V), torch.float32, dev) if store_final else None
    h = output_buffer((layout.NC, H, K, V), dt, dev) if save else None
    vn = output_buffer(v.shape, dt, dev) if save else None
    BV = b["BV_state"]
    state_fwd_kernel[(layout.N * H, triton.cdiv(V, BV))](
        q, k, G, W, U, Aqk, layout.cu, layout.chunk_offsets, h0 if h0 is not None else o,
        o, ht if ht is not None else o, h if h is not None else o, vn if vn is not None else o,
        scale, H, K, V,
        PER_CHANNEL=per_channel, BK=b["BK"], BV=BV, C=CHUNK,
        HAS_H0=h0 is not None, STORE_FINAL=store_final, SAVE=save, num_warps=b["warps_state"], num_stages=1)
    return o, ht, (G, W, Aqk, M, h, vn)


def _backward(q, k, v, beta, h0, scale, layout: Layout, saved, do, dht, per_channel: bool, g_dtype):
    G, W, Aqk, M, h, vn = saved
    _, T, H, K = q.shape
    V = v.shape[-1]
    dev = q.device
    b = _blocks(K, V)
    dh = output_buffer((layout.NC, H, K, V), torch.float32, dev)
    du = output_buffer(v.shape, torch.float32, dev)
    dh0 = output_buffer((layout.N, H, K, V), torch.float32, dev) if h0 is not None else None
    BV = b["BV_state"]
    state_bwd_kernel[(layout.N * H, triton.cdiv(V, BV))](
        q, k, G, W, Aqk, do, layout.cu, layout.chunk_offsets, dht if dht is not None else du,
        dh, du, dh0 if dh0 is not None else du,
        scale, H, K, V,
        PER_CHANNEL=per_channel, BK=b["BK"], BV=BV, C=CHUNK,
        HAS_DHT=dht is not None, STORE_DH0=dh0 is not None, num_warps=b["warps_state"], num_stages=1)
    dq = output_buffer(q.shape, torch.float32, dev)
    dk = output_buffer(k.shape, torch.float32, dev)
    dv = output_buffer(v.shape, v.dtype, dev)
    dG = output_buffer((1, T, H, K) if per_channel else (1, T, H), torch.float32, dev)
    dbeta = output_buffer((1, T, H), torch.float32, dev)
    dA = torch.empty((1, T, H, CHUNK), dtype=torch.float32, device=dev)
    dQ = torch.empty((1, T, H, CHUNK), dtype=torch.float32, device=dev)
    intra_bwd_kernel[(layout.NC, H)](
        q, k, v, G, beta, M, h, dh, vn, du, do, layout.chunks,
        dq, dk, dv, dG, dbeta, dA, dQ, scale, H, K, V,
        PER_CHANNEL=per_channel, BK=b["BK"], BV=b["BV_intra"], C=CHUNK,
        num_warps=b["warps_intra"], num_stages=1)
    if per_channel:  # KDA: the terms through the per-channel in-chunk decays, per 16-row block
        kda_intra_bwd_kernel[(layout.NC * (CHUNK // SUB), H)](
            q, k, G, beta, dA, dQ, layout.chunks, dq, dk, dG, dbeta, H, K, BKS=b["BKS"], C=CHUNK, NB=SUB,
            num_warps=8)
        dg = output_buffer((1, T, H, K), g_dtype, dev)
        rev_cumsum_kernel[(layout.NC, H)](dG, dg, layout.chunks, H, K, BD=b["BK"], C=CHUNK)
    else:
        dg = output_buffer((1, T, H), g_dtype, dev)  # a per-head gate: dG arrives summed over the channels
        rev_cumsum_kernel[(layout.NC, H)](dG, dg, layout.chunks, H, 1, BD=16, C=CHUNK)
    return dq, dk, dv, dg, dbeta, dh0


class ChunkDeltaRuleTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, beta, h0, scale, output_final_state, allow_neg_eigval, layout):
        beta_eff = beta.float() * 2 if allow_neg_eigval else beta
        save = any(ctx.needs_input_grad[:6])
        o, ht, saved = _forward(q, k, v, g, beta_eff, h0, scale, layout, output_final_state, save)
        if save:
            ctx.save_for_backward(q, k, v, beta_eff, h0, *saved)
        ctx.meta = (scale, layout, allow_neg_eigval, g.dim() == 4, g.dtype, beta.dtype)
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, beta_eff, h0, *saved = ctx.saved_tensors
        scale, layout, allow_neg_eigval, per_channel, g_dtype, beta_dtype = ctx.meta
        dq, dk, dv, dg, dbeta, dh0 = _backward(q, k, v, beta_eff, h0, scale, layout, saved, do.contiguous(),
                                               None if dht is None else dht.contiguous(), per_channel, g_dtype)
        if allow_neg_eigval:
            dbeta = dbeta * 2
        return (dq.to(q.dtype), dk.to(k.dtype), dv, dg, dbeta.to(beta_dtype), dh0, None, None, None, None)


def chunk_delta_rule_triton(q, k, v, g, beta, scale, initial_state=None, output_final_state=False,
                            allow_neg_eigval=False, cu_seqlens=None):
    """The chunked delta rule on Triton; shapes as `arena.kernels.kda.chunk_kda` (g [B,T,H,K] or [B,T,H]).

    Expects checked arguments: q, k, v of one dtype (fp32, fp16 or bf16); K, V <= 256; with cu_seqlens, B == 1.
    Returns (o [B, T, H, V] in v's dtype, final state [N, H, K, V] fp32 or None).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    layout = fixed_layout(B, T, q.device) if cu_seqlens is None else Layout(B, T, cu_seqlens, q.device)
    if B * T == 0:
        o = v.new_zeros(v.shape)
        ht = None
        if output_final_state:
            ht = (initial_state.float().clone() if initial_state is not None
                  else q.new_zeros((layout.N, H, K, V), dtype=torch.float32))
        return o, ht

    def packed(x):
        return x.reshape(1, B * T, *x.shape[2:]).contiguous()

    h0 = initial_state.float().contiguous() if initial_state is not None else None
    o, ht = ChunkDeltaRuleTriton.apply(packed(q), packed(k), packed(v), packed(g).float(), packed(beta), h0,
                                       float(scale), output_final_state, allow_neg_eigval, layout)
    return o.reshape(B, T, H, V), ht
