"""Fused short causal depthwise convolution: conv + bias + SiLU (+ per-head L2 norm) in one Triton pass each way.

    from arena.kernels.fused.short_conv import causal_conv1d, causal_conv1d_reference
    y = causal_conv1d(x, conv.weight[:, 0, :], conv.bias, activation=True, norm_head_dim=K)   # [B, T, C]

Per channel c of x: [B, T, C] (W taps, inputs before t = 0 from `initial_cache` [B, W-1, C] or zero):
    pre[b, t, c] = sum_{i<W} weight[c, i] * x[b, t - (W-1) + i, c] + bias[c]
    y = silu(pre) if activation, then y / sqrt(sum_K y^2 + eps) per head of K = norm_head_dim channels.
The math is fp32 whatever x's dtype; y comes back in x's dtype. The layer keeps its own cache (the last W-1 inputs).

`causal_conv1d` is the Triton op (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1); it saves only x (and
the parameters) for the backward, which recomputes pre / SiLU / norm. `causal_conv1d_reference` is the plain
PyTorch twin (fp32, or fp64 for fp64 inputs; autograd does its backward) that the tests use as the oracle.
An `initial_cache` that requires grad sends the op to the twin (the kernels give no cache gradient).
Tests: python -m pytest -q tests/kernels/test_fused_short_conv.py
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from arena.kernels.triton_delta import output_buffer

MAX_NORM_HEAD_DIM = 256
# Launch shapes, module attributes so tests can shrink them (more blocks per tiny tensor): rows per forward tile,
# rows per backward tile (overlapping by W-1), backward tiles walked by one program (its dweight/dbias partial
# covers them all, so the partial buffer is [B * cdiv(T, tiles per program), C, W]), channel tile without the norm
# (with the norm the tile is one head). Picked by `python -m arena.kernels.fused.short_conv --sweep` and a sweep of
# the backward's shapes on an H200 (B=64, T=1024, C in {256, 512, 768}, W=4, bf16, K=128 or no norm); larger
# backward tiles spill registers (64 rows: 2-3x slower).
FWD_ROWS = 32
BWD_ROWS = 16
BWD_BLOCKS = 16
CHANNEL_BLOCK = 128
NUM_WARPS = 4
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------------------------- kernels


@triton.jit
def _load_rows(x_ptr, cache_ptr, xbase, cbase, rows, offs_c, mask_c, T, C,
               W: tl.constexpr, HAS_CACHE: tl.constexpr):
    """x at `rows` of one sequence as fp32 [BT, BC]; rows < 0 come from the cache (or are 0), rows >= T are 0, so
    a tile never reads a neighbouring sequence."""
    r = rows[:, None]
    m = mask_c[None, :] & (r >= 0) & (r < T)
    v = tl.load(x_ptr + xbase + r * C + offs_c[None, :], mask=m, other=0.0).to(tl.float32)
    if HAS_CACHE:
        mc = mask_c[None, :] & (r < 0) & (r >= 1 - W)
        v += tl.load(cache_ptr + cbase + (r + (W - 1)) * C + offs_c[None, :], mask=mc, other=0.0).to(tl.float32)
    return v


@triton.jit
def _pre(x_ptr, cache_ptr, w_ptr, b_ptr, xbase, cbase, rows, offs_c, mask_c, T, C,
         W: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_CACHE: tl.constexpr):
    """The conv output before the activation at `rows`, fp32 [BT, BC]."""
    acc = tl.zeros([BT, BC], dtype=tl.float32)
    for i in tl.static_range(W):
        w_i = tl.load(w_ptr + offs_c * W + i, mask=mask_c, other=0.0).to(tl.float32)
        acc += w_i[None, :] * _load_rows(x_ptr, cache_ptr, xbase, cbase, rows + (i - (W - 1)), offs_c, mask_c,
                                         T, C, W, HAS_CACHE)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _activate(pre, eps, ACT: tl.constexpr, NORM: tl.constexpr):
    """(y, a, sig, rstd): a = silu(pre) (or pre), y = a * rstd per row (masked channels are 0, so they add nothing
    to the head's sum of squares)."""
    if ACT:
        sig = tl.sigmoid(pre)
        a = pre * sig
    else:
        sig = pre  # unused
        a = pre
    if NORM:
        rstd = tl.rsqrt(tl.sum(a * a, axis=1) + eps)
        y = a * rstd[:, None]
    else:
        rstd = tl.sum(a, axis=1)  # unused
        y = a
    return y, a, sig, rstd


@triton.jit
def conv_fwd_kernel(x_ptr, cache_ptr, w_ptr, b_ptr, y_ptr, T, C, CSTEP, n_row_blocks, eps,
                    W: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, HAS_BIAS: tl.constexpr,
                    HAS_CACHE: tl.constexpr, ACT: tl.constexpr, NORM: tl.constexpr):
    """One [BT rows, BC channels] tile of y; grid (B * n_row_blocks, channel blocks). With NORM a channel block is
    one head (CSTEP = K channels, BC >= K, masked); otherwise CSTEP = BC."""
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = pid_r // n_row_blocks
    rows = (pid_r % n_row_blocks) * BT + tl.arange(0, BT)
    lanes = tl.arange(0, BC)
    offs_c = pid_c * CSTEP + lanes
    mask_c = (lanes < CSTEP) & (offs_c < C)
    xbase = b.to(tl.int64) * T * C
    cbase = b.to(tl.int64) * (W - 1) * C
    pre = _pre(x_ptr, cache_ptr, w_ptr, b_ptr, xbase, cbase, rows, offs_c, mask_c, T, C,
               W, BT, BC, HAS_BIAS, HAS_CACHE)
    y, _a, _sig, _rstd = _activate(pre, eps, ACT, NORM)
    m = (rows[:, None] < T) & mask_c[None, :]
    tl.store(y_ptr + xbase + rows[:, None] * C + offs_c[None, :], y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def conv_bwd_kernel(x_ptr, cache_ptr, w_ptr, b_ptr, dy_ptr, dx_ptr, dw_ptr, db_ptr, T, C, CSTEP, n_chunks,
                    n_blocks, eps, W: tl.constexpr, WP: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
                    HAS_BIAS: tl.constexpr, HAS_CACHE: tl.constexpr, ACT: tl.constexpr, NORM: tl.constexpr):
    """dx for `n_blocks` consecutive row tiles of one sequence, and this program's partial sums of dweight [C, W]
    and dbias [C] over those rows; grid (B * n_chunks, channel blocks).

    dx[t] = sum_j weight[W-1-j] * dpre[t+j] needs dpre on W-1 rows past the rows it writes. Tiles overlap: each
    recomputes pre / SiLU / norm and their backward (dpre) on BT rows once, owns the first BT-(W-1) of them (writes
    their dx, sums their dweight / dbias) and reads the shifted dpre with tl.gather. That keeps the ideal traffic
    (read x and dy, write dx: 6 bytes per element in bf16) and recomputes only (W-1)/BT of the rows. Measured on
    an H200 (B=64, T=1024, C=768, bf16), it beat recomputing dpre at each of the W shifts in place of the gather
    (0.67 ms, W^2 tile loads and W norms per tile), and a two-kernel scheme storing dpre would move 10-14 bytes
    per element. Rows at or past T load dy = 0, so their dpre is exactly 0: the halo stops at the sequence's end.
    The dweight products of the first 4 taps and dbias stay per row ([BT, BC] tiles) until the program ends: one
    cross-warp reduction per program instead of W+1 per tile (0.41 ms against 0.52 ms at C=768).
    """
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = pid_r // n_chunks
    chunk = pid_r % n_chunks
    lanes = tl.arange(0, BC)
    offs_c = pid_c * CSTEP + lanes
    mask_c = (lanes < CSTEP) & (offs_c < C)
    xbase = b.to(tl.int64) * T * C
    cbase = b.to(tl.int64) * (W - 1) * C
    taps = tl.arange(0, WP)
    r = tl.arange(0, BT)
    BO: tl.constexpr = BT - (W - 1)
    own = r < BO
    dw_acc = tl.zeros([BC, WP], dtype=tl.float32)
    # per-row products of the first 4 taps and dbias, reduced over rows once at the end
    p0 = tl.zeros([BT, BC], dtype=tl.float32)
    p1 = tl.zeros([BT, BC], dtype=tl.float32)
    p2 = tl.zeros([BT, BC], dtype=tl.float32)
    p3 = tl.zeros([BT, BC], dtype=tl.float32)
    db_rows = tl.zeros([BT, BC], dtype=tl.float32)
    for blk in range(n_blocks):
        rows = (chunk * n_blocks + blk) * BO + r
        pre = _pre(x_ptr, cache_ptr, w_ptr, b_ptr, xbase, cbase, rows, offs_c, mask_c, T, C,
                   W, BT, BC, HAS_BIAS, HAS_CACHE)
        y, a, sig, rstd = _activate(pre, eps, ACT, NORM)
        m = (rows[:, None] < T) & mask_c[None, :]
        dpre = tl.load(dy_ptr + xbase + rows[:, None] * C + offs_c[None, :], mask=m, other=0.0).to(tl.float32)
        if NORM:
            dpre = rstd[:, None] * (dpre - y * tl.sum(dpre * y, axis=1)[:, None])
        if ACT:
            dpre = dpre * sig * (1.0 + pre * (1.0 - sig))
        dx = tl.load(w_ptr + offs_c * W + (W - 1), mask=mask_c, other=0.0).to(tl.float32)[None, :] * dpre
        for j in tl.static_range(1, W):
            w_j = tl.load(w_ptr + offs_c * W + (W - 1 - j), mask=mask_c, other=0.0).to(tl.float32)
            src = tl.broadcast_to(tl.minimum(r + j, BT - 1)[:, None], (BT, BC))
            dx += w_j[None, :] * tl.gather(dpre, src, axis=0)
        tl.store(dx_ptr + xbase + rows[:, None] * C + offs_c[None, :], dx.to(dx_ptr.dtype.element_ty),
                 mask=m & own[:, None])
        dpre = tl.where(own[:, None], dpre, 0.0)
        db_rows += dpre
        for i in tl.static_range(W):
            x_i = _load_rows(x_ptr, cache_ptr, xbase, cbase, rows + (i - (W - 1)), offs_c, mask_c,
                             T, C, W, HAS_CACHE)
            if i == 0:
                p0 += dpre * x_i
            elif i == 1:
                p1 += dpre * x_i
            elif i == 2:
                p2 += dpre * x_i
            elif i == 3:
                p3 += dpre * x_i
            else:
                dw_acc += tl.where(taps[None, :] == i, tl.sum(dpre * x_i, axis=0)[:, None], 0.0)
    dw_acc += tl.where(taps[None, :] == 0, tl.sum(p0, axis=0)[:, None], 0.0)
    if W > 1:
        dw_acc += tl.where(taps[None, :] == 1, tl.sum(p1, axis=0)[:, None], 0.0)
    if W > 2:
        dw_acc += tl.where(taps[None, :] == 2, tl.sum(p2, axis=0)[:, None], 0.0)
    if W > 3:
        dw_acc += tl.where(taps[None, :] == 3, tl.sum(p3, axis=0)[:, None], 0.0)
    db_acc = tl.sum(db_rows, axis=0)
    pbase = pid_r.to(tl.int64) * C
    tl.store(dw_ptr + (pbase + offs_c[:, None]) * W + taps[None, :], dw_acc,
             mask=mask_c[:, None] & (taps[None, :] < W))
    if HAS_BIAS:
        tl.store(db_ptr + pbase + offs_c, db_acc, mask=mask_c)


# ------------------------------------------------------------------------------------------------------- host


def _check(x, weight, bias, norm_head_dim, initial_cache) -> None:
    if x.dim() != 3:
        raise ValueError(f"x must be [B, T, C], got shape {tuple(x.shape)}")
    B, T, C = x.shape
    if weight.dim() != 2 or weight.shape[0] != C or weight.shape[1] < 1:
        raise ValueError(f"weight must be [C, W] with C={C} and W >= 1, got shape {tuple(weight.shape)}")
    W = weight.shape[1]
    if bias is not None and tuple(bias.shape) != (C,):
        raise ValueError(f"bias must be [C] with C={C} or None, got shape {tuple(bias.shape)}")
    if norm_head_dim is not None and (norm_head_dim < 1 or C % norm_head_dim != 0):
        raise ValueError(f"norm_head_dim must be None or a K >= 1 dividing C={C}, got {norm_head_dim}")
    if initial_cache is not None and tuple(initial_cache.shape) != (B, W - 1, C):
        raise ValueError(f"initial_cache must be [B, W-1, C] = {(B, W - 1, C)} or None, "
                         f"got shape {tuple(initial_cache.shape)}")
    for name, t in (("weight", weight), ("bias", bias), ("initial_cache", initial_cache)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}; put them on one device")


def _launch_blocks(C: int, norm_head_dim: int | None) -> tuple[int, int, int]:
    """(BC, CSTEP, channel blocks): a tile is one head (padded to a power of two) with the norm, else BC channels."""
    if norm_head_dim is not None:
        return triton.next_power_of_2(norm_head_dim), norm_head_dim, C // norm_head_dim
    BC = min(CHANNEL_BLOCK, triton.next_power_of_2(C))
    return BC, BC, triton.cdiv(C, BC)


class _CausalConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, activation, norm_head_dim, eps, cache):
        B, T, C = x.shape
        W = weight.shape[1]
        BC, CSTEP, NCB = _launch_blocks(C, norm_head_dim)
        flags = dict(HAS_BIAS=bias is not None, HAS_CACHE=cache is not None, ACT=bool(activation),
                     NORM=norm_head_dim is not None)
        y = output_buffer((B, T, C), x.dtype, x.device)
        n_row_blocks = triton.cdiv(T, FWD_ROWS)
        cache_arg = cache if cache is not None else x  # never read without HAS_CACHE
        bias_arg = bias if bias is not None else weight
        conv_fwd_kernel[(B * n_row_blocks, NCB)](
            x, cache_arg, weight, bias_arg, y, T, C, CSTEP, n_row_blocks, eps,
            W=W, BT=FWD_ROWS, BC=BC, num_warps=NUM_WARPS, **flags)
        ctx.save_for_backward(x, weight, bias, cache)
        ctx.meta = (BC, CSTEP, NCB, eps, flags)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, cache = ctx.saved_tensors
        BC, CSTEP, NCB, eps, flags = ctx.meta
        B, T, C = x.shape
        W = weight.shape[1]
        dy = dy.contiguous()
        BT = max(BWD_ROWS, triton.next_power_of_2(2 * W))  # a tile owns BT - (W-1) >= half its rows
        n_tiles = triton.cdiv(T, BT - (W - 1))
        n_blocks = min(BWD_BLOCKS, n_tiles)
        n_chunks = triton.cdiv(n_tiles, n_blocks)
        dx = output_buffer((B, T, C), x.dtype, x.device)
        dw_part = output_buffer((B * n_chunks, C, W), torch.float32, x.device)
        db_part = output_buffer((B * n_chunks, C), torch.float32, x.device) if bias is not None else dw_part
        conv_bwd_kernel[(B * n_chunks, NCB)](
            x, cache if cache is not None else x, weight, bias if bias is not None else weight, dy, dx,
            dw_part, db_part, T, C, CSTEP, n_chunks, n_blocks, eps,
            W=W, WP=triton.next_power_of_2(W), BT=BT, BC=BC, num_warps=NUM_WARPS, **flags)
        dw = dw_part.sum(0).to(weight.dtype)
        db = db_part.sum(0).to(bias.dtype) if bias is not None else None
        return dx, dw, db, None, None, None, None


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, activation: bool = True,
                  norm_head_dim: int | None = None, eps: float = 1e-6,
                  initial_cache: torch.Tensor | None = None) -> torch.Tensor:
    """y [B, T, C] in x's dtype (fp32 math): causal depthwise conv of x [B, T, C] with weight [C, W] (+ bias [C]),
    then SiLU if `activation`, then an L2 norm per head of `norm_head_dim` channels. `initial_cache` [B, W-1, C]
    holds the inputs before t = 0 (zeros if None); one that requires grad routes the call to the twin.
    Differentiable in x, weight and bias; the Triton kernels need CUDA tensors or TRITON_INTERPRET=1."""
    _check(x, weight, bias, norm_head_dim, initial_cache)
    if x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"x dtype {x.dtype} is not supported; use one of float32, float16, bfloat16")
    if norm_head_dim is not None and norm_head_dim > MAX_NORM_HEAD_DIM:
        raise ValueError(f"norm_head_dim={norm_head_dim} exceeds {MAX_NORM_HEAD_DIM}, the widest head tile")
    if initial_cache is not None and initial_cache.requires_grad and torch.is_grad_enabled():
        return causal_conv1d_reference(x, weight, bias, activation=activation, norm_head_dim=norm_head_dim, eps=eps,
                                       initial_cache=initial_cache)
    if x.numel() == 0:
        return x.new_zeros(x.shape) + 0 * weight.sum()  # keeps the graph for an empty batch
    cache = initial_cache.detach().contiguous() if initial_cache is not None and weight.shape[1] > 1 else None
    return _CausalConv1d.apply(x.contiguous(), weight.contiguous(), None if bias is None else bias.contiguous(),
                               activation, norm_head_dim, float(eps), cache)


# ---------------------------------------------------------------------------------------------------- the twin


def causal_conv1d_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                            activation: bool = True, norm_head_dim: int | None = None, eps: float = 1e-6,
                            initial_cache: torch.Tensor | None = None) -> torch.Tensor:
    """The plain PyTorch twin of `causal_conv1d` (same arguments and result), in fp32 (fp64 for fp64 inputs);
    autograd gives its backward, including the cache's gradient."""
    _check(x, weight, bias, norm_head_dim, initial_cache)
    B, T, C = x.shape
    W = weight.shape[1]
    ct = torch.promote_types(x.dtype, torch.float32)
    past = x.new_zeros(B, W - 1, C, dtype=ct) if initial_cache is None else initial_cache.to(ct)
    padded = torch.cat([past, x.to(ct)], dim=1)  # [B, W-1+T, C]: padded[:, s] is x at time s - (W-1)
    w = weight.to(ct)
    pre = sum(padded[:, i: i + T] * w[:, i] for i in range(W))
    if bias is not None:
        pre = pre + bias.to(ct)
    y = pre * torch.sigmoid(pre) if activation else pre
    if norm_head_dim is not None:
        heads = y.view(B, T, C // norm_head_dim, norm_head_dim)
        y = (heads * torch.rsqrt(heads.pow(2).sum(-1, keepdim=True) + eps)).view(B, T, C)
    return y.to(x.dtype)


# ------------------------------------------------------------------------------------------------------ timing


def _bench(sweep: bool) -> None:
    """GPU timings at the layer's shapes (B=64, T=1024, W=4, bf16): the op against the eager twin, in achieved
    GB/s of the ideal traffic (forward x + y, backward x + dy + dx); `sweep` also times the launch shapes."""
    import itertools

    from triton.testing import do_bench

    mod = globals()
    B, T, W = 64, 1024, 4
    shapes = [(256, 128), (512, 128), (768, 128), (512, None), (768, None)]

    def timings(C, K, fn):
        x = torch.randn(B, T, C, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        w = torch.randn(C, W, device="cuda", requires_grad=True)
        dy = torch.randn(B, T, C, device="cuda", dtype=torch.bfloat16)
        with torch.no_grad():
            fwd = do_bench(lambda: fn(x, w, None, True, K))
        bwd = do_bench(lambda: torch.autograd.grad(fn(x, w, None, True, K), [x, w], dy)) - fwd
        n = B * T * C * x.element_size() / 1e6  # MB per pass, so GB/s = n * passes / ms
        return fwd, bwd, 2 * n / fwd, 3 * n / bwd

    print(f"{'C':>5} {'K':>5} {'op':>10} {'fwd ms':>8} {'bwd ms':>8} {'fwd GB/s':>9} {'bwd GB/s':>9}")
    for C, K in shapes:
        for name, fn in (("fused", causal_conv1d), ("eager", causal_conv1d_reference)):
            f, b, gf, gb = timings(C, K, fn)
            print(f"{C:>5} {K!s:>5} {name:>10} {f:8.3f} {b:8.3f} {gf:9.0f} {gb:9.0f}")
    if not sweep:
        return
    default = {k: mod[k] for k in ("FWD_ROWS", "BWD_ROWS", "BWD_BLOCKS", "CHANNEL_BLOCK", "NUM_WARPS")}
    # the forward depends only on its rows, channel tile and warps; the backward on its own rows and blocks
    spaces = {"forward": (0, ("FWD_ROWS", "CHANNEL_BLOCK", "NUM_WARPS"), ((32, 64, 128), (64, 128, 256), (4, 8))),
              "backward": (1, ("BWD_ROWS", "BWD_BLOCKS", "CHANNEL_BLOCK", "NUM_WARPS"),
                           ((16, 32, 64), (4, 8, 16), (64, 128, 256), (4, 8)))}
    for part, (idx, names, values) in spaces.items():
        results = []
        for v in itertools.product(*values):
            cfg = dict(zip(names, v))
            mod.update(default)
            mod.update(cfg)
            try:
                results.append((cfg, [timings(C, K, causal_conv1d)[idx] for C, K in ((512, 128), (768, None))]))
            except Exception as exc:  # a launch shape the compiler rejects (registers), reported and skipped
                print(cfg, type(exc).__name__)
        print(f"best {part} launch shapes (ms at C=512,K=128 / C=768,no norm):")
        for cfg, t in sorted(results, key=lambda r: sum(r[1]))[:8]:
            print("   ", cfg, " / ".join(f"{x:.3f}" for x in t))
    mod.update(default)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="time the fused short conv on the GPU")
    parser.add_argument("--sweep", action="store_true", help="also time a grid of launch shapes")
    _bench(parser.parse_args().sweep)
