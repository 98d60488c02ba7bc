"""Host side of the chunkwise Triton delta rule: layout, launches and the autograd.Function.

    from arena.kernels.triton_delta.chunk import chunk_delta_rule_triton
    o, S = chunk_delta_rule_triton(q, k, v, g, beta, scale=K ** -0.5, initial_state=S0, output_final_state=True)

Use it through `arena.kernels.kda.chunk_kda(..., backend="triton")` or the Gated DeltaNet op, which check the
arguments. Batches are packed into one sequence axis ([1, B*T, H, *], offsets B+1), so fixed-length batches and
`cu_seqlens` run the same kernels. The forward keeps what the backward needs (no recomputation): the cumulative
gates G (fp32), W, Aqk, M = (I + Akk)^-1 (fp32), V' and the state entering every chunk.
"""

from __future__ import annotations

import functools

import torch
import triton

from arena.errors import ConfigError
from arena.kernels._dispatch import TRITON_MAX_HEAD_DIM
from arena.kernels.triton_delta import output_buffer
from arena.kernels.triton_delta.chunk_bwd import (
    intra_bwd_dA_kernel,
    intra_bwd_kernel,
    rev_cumsum_kernel,
    state_bwd_kernel,
)
from arena.kernels.triton_delta.chunk_fwd import CHUNK, SUB, chunk_cumsum_kernel, intra_fwd_kernel, state_fwd_kernel
from arena.kernels.triton_delta.chunk_kda_intra import kda_akk_fwd_kernel, kda_intra_bwd_kernel

MAX_HEAD_DIM = TRITON_MAX_HEAD_DIM  # K and V; the ops' dispatch falls back to torch beyond it
MIN_BV = 64  # the narrowest V tile any launch uses (see _blocks: narrower ones hit a Triton miscompile on Hopper)
# KDA: a 16-row block whose cumulative gates span at most this much (per channel, within a K slice) takes its own
# rows' decays through tensor cores, factored around its first row; the factors then stay within exp(+-64), far
# from fp32 overflow even for unnormalized q and k. Wider spans (strong decays) take the exact column loop.
# Kimi Linear's gate floor of -5 per step spans up to 75 over a block, so only saturated channels go the slow way.
# It is also the kernels' clamp on those factors' exponents, so it must be >= 0 (0: every block takes the loop).
KDA_FAST_RANGE = 64.0


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
    # Every V tile is at least MIN_BV = 64 wide, the unused columns masked. Triton 3.6 on Hopper miscompiles the
    # state kernels and intra_fwd (4 warps) when a V tile of 32 or less sits beside a K tile of 64 or more: an
    # illegal address or garbage at K = 128 / 256 with V = 32 (docs/performance.md, 2026-11-27), and at K = 48 / 64
    # with V = 16 / 32 (issue 15; the interpreter finds every access in bounds there, so the indexing is right).
    # Small V then runs the V = 64 binaries, the ones every earlier sweep passed; the cost is a few masked columns.
    BV_full = max(MIN_BV, triton.next_power_of_2(V))
    BV_state = MIN_BV
    BV_fwd = BV_full
    # Tuned on an H200 at K = V = 128 (scripts/profile_triton_delta.py --config; docs/performance.md):
    # the backward's whole-chunk terms run per K block of BKH columns, so their fp32 tiles stay [64, 64]; the KDA
    # block kernels run one warp on [16, BKS] tiles, the forward's wider slices being faster there
    return dict(BK=BK, BV_state=BV_state, BKS=min(64, BK), BV_fwd=BV_fwd,
                BKH=min(64, BK), BV_bwd=MIN_BV, warps_bwd=4 if BK <= 32 else 8, warps_dA=4,
                warps_intra=4, warps_state=4,
                BKS_akk=min(64, BK), BKS_kda=min(32, BK), warps_kda=1, maxnreg_kda=None)


def _kda_launch(b: dict) -> dict:
    """Launch options of the KDA block kernels: their [16, BKS] tiles need few warps; a register cap (maxnreg)
    trades spills for more programs per SM."""
    opts = dict(num_warps=b["warps_kda"], num_stages=1)
    if b["maxnreg_kda"] is not None:
        opts["maxnreg"] = b["maxnreg_kda"]
    return opts


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
            q, k, G, beta, layout.chunks, Akk, Aqk, scale, H, K, BKS=b["BKS_akk"], C=CHUNK, NB=SUB,
            FAST_RANGE=KDA_FAST_RANGE, **_kda_launch(b))
    intra_fwd_kernel[(layout.NC, H)](
        q, k, v, g, beta, layout.chunks, G, W, U, Aqk, M, Akk, scale, H, K, V,
        PER_CHANNEL=per_channel, BK=b["BK"], BV=b["BV_fwd"],
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
    # scratch, every valid row written: dL/dAqk, and (KDA only: GDN uses it inside intra_bwd_dA_kernel) dL/dAkk
    dQ = torch.empty((1, T, H, CHUNK), dtype=torch.float32, device=dev)
    dA = torch.empty((1, T, H, CHUNK), dtype=torch.float32, device=dev) if per_channel else dQ
    # partial sums over K, one slot per program of the K blocks and one for the terms without K (all rows written)
    NKH = triton.cdiv(K, b["BKH"])
    dMp = torch.empty((NKH + 1, T, H, CHUNK), dtype=torch.float32, device=dev)
    dbp = torch.empty((NKH + 1, T, H), dtype=torch.float32, device=dev)
    dGp = dbp if per_channel else torch.empty((NKH + 1, T, H), dtype=torch.float32, device=dev)
    intra_bwd_kernel[(layout.NC, H, NKH + 1)](
        q, k, v, G, beta, M, h, dh, vn, du, do, layout.chunks,
        dq, dk, dv, dG, dQ, dMp, dbp, dGp, scale, T, H, K, V,
        PER_CHANNEL=per_channel, BKH=b["BKH"], BV=b["BV_bwd"], C=CHUNK, num_warps=b["warps_bwd"], num_stages=1)
    intra_bwd_dA_kernel[(layout.NC, H)](
        q, k, G, beta, M, layout.chunks, dMp, dbp, dGp, dq, dk, dG, dbeta, dA, dQ, T, H, K, NKH,
        PER_CHANNEL=per_channel, BKH=b["BKH"], C=CHUNK, num_warps=b["warps_dA"], num_stages=1)
    if per_channel:  # KDA: the terms through the per-channel in-chunk decays, per 16-row block
        kda_intra_bwd_kernel[(layout.NC * (CHUNK // SUB), H)](
            q, k, G, beta, dA, dQ, layout.chunks, dq, dk, dG, dbeta, H, K, BKS=b["BKS_kda"], C=CHUNK, NB=SUB,
            FAST_RANGE=KDA_FAST_RANGE, **_kda_launch(b))
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


def chunk_delta_rule_triton(q, k, v, g, beta, *, scale, initial_state=None, output_final_state=False,
                            allow_neg_eigval=False, cu_seqlens=None):
    """The chunked delta rule on Triton; shapes as `arena.kernels.kda.chunk_kda` (g [B,T,H,K] or [B,T,H]).

    Expects checked arguments: q, k, v of one dtype (fp32, fp16 or bf16); K, V <= 256; with cu_seqlens, B == 1.
    Returns (o [B, T, H, V] in v's dtype, final state [N, H, K, V] fp32 or None).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    if not (1 <= K <= MAX_HEAD_DIM and 1 <= V <= MAX_HEAD_DIM):  # the ops fall back before this; never launch
        raise ConfigError(f"chunk_delta_rule_triton: head dims from 1 to {MAX_HEAD_DIM} are supported, "
                          f"got K={K}, V={V}; call chunk_kda / chunk_gated_delta_rule, which fall back to torch")
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
