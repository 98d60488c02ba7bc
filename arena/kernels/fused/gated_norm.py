"""Fused Triton ops for the gated RMSNorm at the output of KDA / GDN / Mamba2, and for the KDA / GDN decay gate.

    from arena.kernels.fused.gated_norm import decay_gate, gated_rmsnorm
    y = gated_rmsnorm(o, gate, weight, eps=1e-5, activation="sigmoid")           # KDA: RMSNorm(o) * w * sigmoid(gate)
    y = gated_rmsnorm(o, gate, weight, activation="swish")                       # GDN: RMSNorm(o) * w * silu(gate)
    y = gated_rmsnorm(y, z, weight, activation="swish", norm_before_gate=False)  # Mamba2: RMSNorm(y * silu(z)) * w
    g = decay_gate(raw, A_log, dt_bias, head_dim=K)   # -exp(A_log[h]) * softplus(raw + dt_bias): fp32 [..., H, K]

gated_rmsnorm: o, gate [..., D], normalized over the last dim D, weight [D]; or weight [G, D] with o [..., G, D]
(a weight per group, as Mamba2's [d_inner] norm weight with ngroups > 1). The result is [..., D] in `out_dtype`
(default o.dtype); all math is fp32. Forward: one pass (read o, gate; write y). Backward: one pass that recomputes
the row statistics (read o, gate, dy; write do, dgate) and leaves dweight as per-program fp32 partials that torch
sums. Only the inputs are saved.
decay_gate: raw [..., H * head_dim] (any float dtype), A_log [H], dt_bias [H * head_dim] -> g fp32
[..., H, head_dim], or [..., H] when head_dim == 1 (GDN). softplus follows torch's F.softplus (beta 1, linear
above 20). Backward: draw in raw's dtype, dA_log and ddt_bias from per-program fp32 partials.

Each op has a plain PyTorch twin (`gated_rmsnorm_reference`, `decay_gate_reference`) that shares no numerics with
the kernels; it computes in fp32, or in fp64 for fp64 inputs (the tests' reference).
The kernels need CUDA or the Triton interpreter (TRITON_INTERPRET=1, how tests/kernels/test_fused_gated_norm.py
runs them on CPU); elsewhere the ops raise and the caller should use the twins.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from arena.errors import choice_error
from arena.kernels.norm import rms_norm
from arena.kernels.triton_delta import output_buffer, triton_status

ACTIVATIONS = ("sigmoid", "swish")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_NORM_WIDTH = 8192  # one program holds whole rows of the normalized width
# Elements per [rows, width] tile: rows per block = TILE_* // padded width. The backward holds about twice as many
# live tiles, so it takes half the rows (16 rows of D = 128 with 4 warps: 16 fp32 per thread per tile).
TILE_FWD = 4096
TILE_BWD = 2048
MAX_GATE_COLS = 1024  # decay gate column block
# Backward grids are capped so the weight / bias partials stay small: each program strides over row blocks and
# keeps its column sums in registers. On CUDA, PROGRAMS_PER_SM programs per SM; under the interpreter a few, odd
# so the strided loops get uneven trip counts in the tests.
PROGRAMS_PER_SM = 8
INTERPRETER_PROGRAMS = 3


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _backward_programs(n_blocks: int, device: torch.device) -> int:
    if device.type == "cuda":
        cap = _sm_count(device.index if device.index is not None else torch.cuda.current_device()) * PROGRAMS_PER_SM
    else:
        cap = INTERPRETER_PROGRAMS
    return max(1, min(n_blocks, cap))


def _require_triton(op: str, device: torch.device) -> None:
    ok, reason = triton_status(device)
    if not ok:
        raise RuntimeError(f"{op}: the Triton kernel cannot run ({reason}); use {op}_reference")


def _check_dtype(op: str, name: str, t: torch.Tensor) -> None:
    if t.dtype not in KERNEL_DTYPES:
        raise ValueError(f"{op}: {name} must be fp32, fp16 or bf16, got {t.dtype}")


# ----------------------------------------------------------------------------------------------------- kernels


@triton.jit
def _gate_act(g, SWISH: tl.constexpr):
    """act(g) and act'(g) for sigmoid or swish; exp overflowing to inf saturates the sigmoid cleanly to 0."""
    s = 1.0 / (1.0 + tl.exp(-g))
    if SWISH:
        a = g * s
        da = s * (1.0 + g * (1.0 - s))
    else:
        a = s
        da = s * (1.0 - s)
    return a, da


@triton.jit
def gated_rmsnorm_fwd_kernel(o_ptr, g_ptr, w_ptr, y_ptr, M, G, D, eps,
                             BM: tl.constexpr, BD: tl.constexpr, W_PER_GROUP: tl.constexpr,
                             NORM_BEFORE_GATE: tl.constexpr, SWISH: tl.constexpr):
    """Rows m of group program_id(1) of [M, G, D], BM rows per program, the whole width D in one tile."""
    gi = tl.program_id(1)
    m = tl.program_id(0) * BM + tl.arange(0, BM)
    cols = tl.arange(0, BD)
    col_ok = cols < D
    mask = (m < M)[:, None] & col_ok[None, :]
    offs = ((m.to(tl.int64) * G + gi) * D)[:, None] + cols[None, :]
    o = tl.load(o_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if W_PER_GROUP:
        w_ptr += gi * D
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    a, _ = _gate_act(g, SWISH)
    if NORM_BEFORE_GATE:
        x = o
    else:
        x = o * a
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / D + eps)  # padded columns hold zeros, so they add nothing
    y = x * rstd[:, None] * w[None, :]
    if NORM_BEFORE_GATE:
        y = y * a
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gated_rmsnorm_bwd_kernel(o_ptr, g_ptr, w_ptr, dy_ptr, do_ptr, dg_ptr, dw_ptr, M, G, D, eps, n_blocks,
                             BM: tl.constexpr, BD: tl.constexpr, W_PER_GROUP: tl.constexpr,
                             NORM_BEFORE_GATE: tl.constexpr, SWISH: tl.constexpr):
    """Strides over the row blocks of group program_id(1); dweight partial sums go to dw_ptr [programs, G, D]."""
    pid = tl.program_id(0)
    gi = tl.program_id(1)
    cols = tl.arange(0, BD)
    col_ok = cols < D
    if W_PER_GROUP:
        w_ptr += gi * D
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw = tl.zeros([BD], dtype=tl.float32)
    for blk in range(pid, n_blocks, tl.num_programs(0)):
        m = blk * BM + tl.arange(0, BM)
        mask = (m < M)[:, None] & col_ok[None, :]
        offs = ((m.to(tl.int64) * G + gi) * D)[:, None] + cols[None, :]
        o = tl.load(o_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        a, da = _gate_act(g, SWISH)
        if NORM_BEFORE_GATE:  # y = n * w * a, n = o * rstd(o)
            rstd = tl.rsqrt(tl.sum(o * o, axis=1) / D + eps)
            n = o * rstd[:, None]
            dn = dy * w[None, :] * a
            dw += tl.sum(dy * n * a, axis=0)
            dgate = dy * w[None, :] * n * da
            do = rstd[:, None] * (dn - n * (tl.sum(dn * n, axis=1) / D)[:, None])
        else:  # y = n * w, n = x * rstd(x), x = o * a
            x = o * a
            rstd = tl.rsqrt(tl.sum(x * x, axis=1) / D + eps)
            n = x * rstd[:, None]
            dn = dy * w[None, :]
            dw += tl.sum(dy * n, axis=0)
            dx = rstd[:, None] * (dn - n * (tl.sum(dn * n, axis=1) / D)[:, None])
            do = dx * a
            dgate = dx * o * da
        tl.store(do_ptr + offs, do.to(do_ptr.dtype.element_ty), mask=mask)
        tl.store(dg_ptr + offs, dgate.to(dg_ptr.dtype.element_ty), mask=mask)
    tl.store(dw_ptr + (pid * G + gi) * D + cols, dw, mask=col_ok)


@triton.jit
def _softplus(x):
    """torch's softplus: x above the threshold, else max(x, 0) + log1p(exp(-|x|)).

    log1p(u) for u in (0, 1] as 2 atanh(s), s = u / (2 + u) <= 1/3, by its series to s^15 (relative error < 2e-9):
    log(1 + u) would lose every digit of u once u nears fp32's epsilon, i.e. for x below about -16."""
    u = tl.exp(-tl.abs(x))
    s = u / (2.0 + u)
    s2 = s * s
    p = 1.0 / 15.0
    p = p * s2 + 1.0 / 13.0
    p = p * s2 + 1.0 / 11.0
    p = p * s2 + 1.0 / 9.0
    p = p * s2 + 1.0 / 7.0
    p = p * s2 + 1.0 / 5.0
    p = p * s2 + 1.0 / 3.0
    p = p * s2 + 1.0
    return tl.where(x > 20.0, x, tl.maximum(x, 0.0) + 2.0 * s * p)


@triton.jit
def decay_gate_fwd_kernel(raw_ptr, a_ptr, b_ptr, g_ptr, N, C, head_dim, BM: tl.constexpr, BC: tl.constexpr):
    """g[n, c] = -exp(A_log[c // head_dim]) * softplus(raw[n, c] + dt_bias[c]) over a [BM, BC] tile."""
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    col_ok = cols < C
    mask = (rows < N)[:, None] & col_ok[None, :]
    offs = rows.to(tl.int64)[:, None] * C + cols[None, :]
    bias = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    A = -tl.exp(tl.load(a_ptr + cols // head_dim, mask=col_ok, other=0.0).to(tl.float32))
    x = tl.load(raw_ptr + offs, mask=mask, other=0.0).to(tl.float32) + bias[None, :]
    tl.store(g_ptr + offs, A[None, :] * _softplus(x), mask=mask)


@triton.jit
def decay_gate_bwd_kernel(raw_ptr, a_ptr, b_ptr, dg_ptr, draw_ptr, db_ptr, da_ptr, N, C, head_dim, n_blocks,
                          BM: tl.constexpr, BC: tl.constexpr):
    """draw = dg * A * sigmoid(x); per-program column sums of draw (-> ddt_bias) and of dg * g (-> dA_log)."""
    pid = tl.program_id(0)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    col_ok = cols < C
    bias = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    A = -tl.exp(tl.load(a_ptr + cols // head_dim, mask=col_ok, other=0.0).to(tl.float32))
    db = tl.zeros([BC], dtype=tl.float32)
    da = tl.zeros([BC], dtype=tl.float32)
    for blk in range(pid, n_blocks, tl.num_programs(0)):
        rows = blk * BM + tl.arange(0, BM)
        mask = (rows < N)[:, None] & col_ok[None, :]
        offs = rows.to(tl.int64)[:, None] * C + cols[None, :]
        x = tl.load(raw_ptr + offs, mask=mask, other=0.0).to(tl.float32) + bias[None, :]
        dg = tl.load(dg_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        # softplus' slope is exactly 1 in torch's linear region
        sig = tl.where(x > 20.0, 1.0, 1.0 / (1.0 + tl.exp(-x)))
        dx = dg * A[None, :] * sig
        tl.store(draw_ptr + offs, dx.to(draw_ptr.dtype.element_ty), mask=mask)
        db += tl.sum(dx, axis=0)
        da += tl.sum(dg * A[None, :] * _softplus(x), axis=0)  # dg * g: d g / d A_log = g
    tl.store(db_ptr + pid * C + cols, db, mask=col_ok)
    tl.store(da_ptr + pid * C + cols, da, mask=col_ok)


# ----------------------------------------------------------------------------------------------- gated RMSNorm


def _check_norm_args(o, gate, weight, eps, activation, out_dtype) -> None:
    op = "gated_rmsnorm"
    if activation not in ACTIVATIONS:
        raise choice_error(f"{op} activation", activation, ACTIVATIONS)
    if o.shape != gate.shape or o.dim() < 1:
        raise ValueError(f"{op}: o and gate must share one shape [..., D], got {tuple(o.shape)} and "
                         f"{tuple(gate.shape)}")
    D = o.shape[-1]
    ok_weight = tuple(weight.shape) == (D,) or (weight.dim() == 2 and o.dim() >= 2
                                                and tuple(weight.shape) == tuple(o.shape[-2:]))
    if not ok_weight:
        raise ValueError(f"{op}: weight must be [D] = [{D}] or [G, D] matching o's last two dims "
                         f"{tuple(o.shape[-2:])}, got {tuple(weight.shape)}")
    if not eps > 0:
        raise ValueError(f"{op}: eps must be > 0, got {eps}")
    if out_dtype is not None and not (isinstance(out_dtype, torch.dtype) and out_dtype.is_floating_point):
        raise ValueError(f"{op}: out_dtype must be a floating torch.dtype or None, got {out_dtype!r}")


def _norm_blocks(D: int, tile: int) -> dict:
    BD = triton.next_power_of_2(D)
    return dict(BD=BD, BM=max(1, tile // BD), num_warps=4 if BD < 512 else 8 if BD < 4096 else 16)


class _GatedRMSNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, o, gate, weight, eps, swish, norm_before_gate, out_dtype):
        D = o.shape[-1]
        G = weight.shape[0] if weight.dim() == 2 else 1
        M = o.numel() // (G * D)
        o_c, gate_c, w_c = o.contiguous(), gate.contiguous(), weight.contiguous()
        y = output_buffer(o.shape, out_dtype, o.device)
        b = _norm_blocks(D, TILE_FWD)
        if M > 0:
            gated_rmsnorm_fwd_kernel[(triton.cdiv(M, b["BM"]), G)](
                o_c, gate_c, w_c, y, M, G, D, eps, BM=b["BM"], BD=b["BD"], W_PER_GROUP=weight.dim() == 2,
                NORM_BEFORE_GATE=norm_before_gate, SWISH=swish, num_warps=b["num_warps"])
        ctx.save_for_backward(o_c, gate_c, w_c)
        ctx.meta = (eps, swish, norm_before_gate)
        return y

    @staticmethod
    def backward(ctx, dy):
        o, gate, weight = ctx.saved_tensors
        eps, swish, norm_before_gate = ctx.meta
        D = o.shape[-1]
        G = weight.shape[0] if weight.dim() == 2 else 1
        M = o.numel() // (G * D)
        do = output_buffer(o.shape, o.dtype, o.device)
        dgate = output_buffer(gate.shape, gate.dtype, gate.device)
        if M == 0:
            return do, dgate, torch.zeros_like(weight), None, None, None, None
        b = _norm_blocks(D, TILE_BWD)
        n_blocks = triton.cdiv(M, b["BM"])
        P = _backward_programs(n_blocks, o.device)
        dw_part = output_buffer((P, G, D), torch.float32, o.device)
        gated_rmsnorm_bwd_kernel[(P, G)](
            o, gate, weight, dy.contiguous(), do, dgate, dw_part, M, G, D, eps, n_blocks,
            BM=b["BM"], BD=b["BD"], W_PER_GROUP=weight.dim() == 2, NORM_BEFORE_GATE=norm_before_gate,
            SWISH=swish, num_warps=b["num_warps"])
        dweight = dw_part.sum(0).view(weight.shape).to(weight.dtype)
        return do, dgate, dweight, None, None, None, None


def gated_rmsnorm(o: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, *, eps: float = 1e-5,
                  activation: str = "sigmoid", norm_before_gate: bool = True,
                  out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """RMSNorm(o) * weight * act(gate) (norm_before_gate) or RMSNorm(o * act(gate)) * weight, over the last dim.

    o, gate: [..., D]; weight: [D], or [G, D] with o [..., G, D]; act: "sigmoid" or "swish" (SiLU). fp32 math, the
    result in out_dtype (default o.dtype). Differentiable in o, gate and weight.
    """
    _check_norm_args(o, gate, weight, eps, activation, out_dtype)
    for name, t in (("o", o), ("gate", gate), ("weight", weight)):
        _check_dtype("gated_rmsnorm", name, t)
    if not (o.device == gate.device == weight.device):
        raise ValueError(f"gated_rmsnorm: o, gate and weight must be on one device, got {o.device}, "
                         f"{gate.device}, {weight.device}")
    if o.shape[-1] > MAX_NORM_WIDTH:
        raise ValueError(f"gated_rmsnorm: the normalized width D must be <= {MAX_NORM_WIDTH}, got {o.shape[-1]}")
    _require_triton("gated_rmsnorm", o.device)
    return _GatedRMSNormFn.apply(o, gate, weight, float(eps), activation == "swish", bool(norm_before_gate),
                                 out_dtype or o.dtype)


def gated_rmsnorm_reference(o: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, *, eps: float = 1e-5,
                            activation: str = "sigmoid", norm_before_gate: bool = True,
                            out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The twin of `gated_rmsnorm` in plain PyTorch: fp32 math (fp64 for fp64 inputs), any device."""
    _check_norm_args(o, gate, weight, eps, activation, out_dtype)
    ct = torch.promote_types(torch.promote_types(o.dtype, gate.dtype), torch.promote_types(weight.dtype,
                                                                                           torch.float32))
    o32, gate32, w32 = o.to(ct), gate.to(ct), weight.to(ct)
    act = torch.sigmoid(gate32) if activation == "sigmoid" else F.silu(gate32)
    x = o32 if norm_before_gate else o32 * act
    y = rms_norm(x, eps=eps) * w32  # the weight may be per group ([G, D]), so it is applied here
    if norm_before_gate:
        y = y * act
    return y.to(out_dtype or o.dtype)


# ------------------------------------------------------------------------------------------------- decay gate


def _check_gate_args(raw, A_log, dt_bias, head_dim) -> int:
    """H, after checking the shapes."""
    op = "decay_gate"
    if not isinstance(head_dim, int) or head_dim < 1:
        raise ValueError(f"{op}: head_dim must be an int >= 1, got {head_dim!r}")
    if A_log.dim() != 1:
        raise ValueError(f"{op}: A_log must be [H], got {tuple(A_log.shape)}")
    H = A_log.shape[0]
    C = H * head_dim
    if raw.dim() < 1 or raw.shape[-1] != C:
        raise ValueError(f"{op}: raw must be [..., H * head_dim] = [..., {C}], got {tuple(raw.shape)}")
    if tuple(dt_bias.shape) != (C,):
        raise ValueError(f"{op}: dt_bias must be [H * head_dim] = [{C}], got {tuple(dt_bias.shape)}")
    return H


def _gate_blocks(C: int, tile: int) -> dict:
    BC = min(triton.next_power_of_2(C), MAX_GATE_COLS)
    return dict(BC=BC, BM=max(1, tile // BC))


class _DecayGateFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, raw, A_log, dt_bias, head_dim):
        C = raw.shape[-1]
        N = raw.numel() // C
        raw_c, a_c, b_c = raw.contiguous(), A_log.contiguous(), dt_bias.contiguous()
        g = output_buffer(raw.shape, torch.float32, raw.device)
        b = _gate_blocks(C, TILE_FWD)
        if N > 0:
            decay_gate_fwd_kernel[(triton.cdiv(N, b["BM"]), triton.cdiv(C, b["BC"]))](
                raw_c, a_c, b_c, g, N, C, head_dim, BM=b["BM"], BC=b["BC"], num_warps=4)
        ctx.save_for_backward(raw_c, a_c, b_c)
        ctx.head_dim = head_dim
        return g

    @staticmethod
    def backward(ctx, dg):
        raw, A_log, dt_bias = ctx.saved_tensors
        head_dim = ctx.head_dim
        C = raw.shape[-1]
        N = raw.numel() // C
        draw = output_buffer(raw.shape, raw.dtype, raw.device)
        if N == 0:
            return draw, torch.zeros_like(A_log), torch.zeros_like(dt_bias), None
        b = _gate_blocks(C, TILE_BWD)
        n_blocks = triton.cdiv(N, b["BM"])
        P = _backward_programs(n_blocks, raw.device)
        db_part = output_buffer((P, C), torch.float32, raw.device)
        da_part = output_buffer((P, C), torch.float32, raw.device)
        decay_gate_bwd_kernel[(P, triton.cdiv(C, b["BC"]))](
            raw, A_log, dt_bias, dg.contiguous(), draw, db_part, da_part, N, C, head_dim, n_blocks,
            BM=b["BM"], BC=b["BC"], num_warps=4)
        dA_log = da_part.sum(0).view(-1, head_dim).sum(-1).to(A_log.dtype)
        return draw, dA_log, db_part.sum(0).to(dt_bias.dtype), None


def decay_gate(raw: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor, head_dim: int) -> torch.Tensor:
    """g = -exp(A_log[h]) * softplus(raw + dt_bias), fp32: [..., H, head_dim], or [..., H] when head_dim == 1.

    raw: [..., H * head_dim] (fp32/fp16/bf16), A_log: [H], dt_bias: [H * head_dim]. Differentiable in all three.
    """
    H = _check_gate_args(raw, A_log, dt_bias, head_dim)
    for name, t in (("raw", raw), ("A_log", A_log), ("dt_bias", dt_bias)):
        _check_dtype("decay_gate", name, t)
    if not (raw.device == A_log.device == dt_bias.device):
        raise ValueError(f"decay_gate: raw, A_log and dt_bias must be on one device, got {raw.device}, "
                         f"{A_log.device}, {dt_bias.device}")
    _require_triton("decay_gate", raw.device)
    g = _DecayGateFn.apply(raw, A_log, dt_bias, head_dim)
    return g if head_dim == 1 else g.unflatten(-1, (H, head_dim))


def decay_gate_reference(raw: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor,
                         head_dim: int) -> torch.Tensor:
    """The twin of `decay_gate` in plain PyTorch (F.softplus): fp32 (fp64 for fp64 inputs), any device."""
    H = _check_gate_args(raw, A_log, dt_bias, head_dim)
    ct = torch.promote_types(torch.promote_types(raw.dtype, dt_bias.dtype), torch.promote_types(A_log.dtype,
                                                                                                torch.float32))
    x = (raw.to(ct) + dt_bias.to(ct)).unflatten(-1, (H, head_dim))
    g = -A_log.to(ct).exp()[:, None] * F.softplus(x)
    return g.squeeze(-1) if head_dim == 1 else g
