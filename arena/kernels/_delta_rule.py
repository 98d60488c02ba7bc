"""Shared core of the delta-rule kernels (KDA and Gated DeltaNet): input checks and the chunked WY/UT form.

Private: use `arena.kernels.kda` or `arena.kernels.gated_delta_rule`. Both ops run the same recurrence
    S_t = (I - beta_t k_t k_t^T) Diag(exp(g_t)) S_{t-1} + beta_t k_t v_t^T,    o_t = S_t^T (scale q_t)
with g per channel ([B, T, H, K], KDA) or per head ([B, T, H], GDN: the same decay on every key row).

`chunk_delta_rule` is the chunkwise algorithm of docs/mixers.md §1.4 in plain PyTorch, differentiable
(autograd, plus two small autograd.Functions with hand-written backward). In a chunk of C tokens with
chunk-local cumulative log-decay G:
    Aqk[r, i] = scale q_r . (k_i * exp(G_r - G_i))  (i <= r),   Akk[r, i] = beta_r k_r . (k_i * exp(G_r - G_i))  (i < r)
    M = (I + Akk)^-1                                            (UT transform, by block doubling)
    V' = M (beta v - beta exp(G) k S)                           (corrected values; W = M beta exp(G) k, U = M beta v)
    O  = scale (exp(G) q) S + Aqk V',   S <- exp(G_C) S + (exp(G_C - G) k)^T V'
Gates reach -20 per step, so G falls to -20 C inside a chunk and exp(G_r) * exp(-G_i) overflows fp32. Every
decay here is an exact difference exp(G_r - G_i) <= 1 instead: a [C, C] mask for GDN; for KDA, where the decay
sits inside the sum over K, a binary tree of blocks (`_PerChannelScores`) with both factors <= 1.
Everything but the chunk-to-chunk state step is batched over chunks; that step is a loop of T / C matmuls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from arena.errors import ConfigError


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """fp32, or fp64 when any input is fp64: the dtype the kernels compute and return states in."""
    dtype = torch.float32
    for x in tensors:
        dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def check_inputs(op: str, q, k, v, g, beta, initial_state, per_channel: bool, step: bool = False) -> None:
    """Raise a one-line ValueError unless the shapes follow the fla layout (step=True: no T axis)."""
    lead = "[B, H" if step else "[B, T, H"
    if q.dim() != (3 if step else 4):
        raise ValueError(f"{op}: q must be {lead}, K], got shape {tuple(q.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"{op}: k shape {tuple(k.shape)} must equal q shape {tuple(q.shape)} ({lead}, K])")
    if v.dim() != q.dim() or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"{op}: v must be {lead}, V] matching q {tuple(q.shape)}, got {tuple(v.shape)}")
    g_shape = tuple(q.shape) if per_channel else tuple(q.shape[:-1])
    if tuple(g.shape) != g_shape:
        want = f"{lead}, K]" if per_channel else f"{lead}]"
        raise ValueError(f"{op}: g must be {want} = {g_shape}, got {tuple(g.shape)}")
    if tuple(beta.shape) != tuple(q.shape[:-1]):
        raise ValueError(f"{op}: beta must be {lead}] = {tuple(q.shape[:-1])}, got {tuple(beta.shape)}")
    B, H, K, V = q.shape[0], q.shape[-2], q.shape[-1], v.shape[-1]
    if initial_state is not None and tuple(initial_state.shape) != (B, H, K, V):
        raise ValueError(f"{op}: state must be [B, H, K, V] = {(B, H, K, V)}, got {tuple(initial_state.shape)}")


def check_chunk_size(chunk_size: int) -> None:
    ok = isinstance(chunk_size, int) and not isinstance(chunk_size, bool) and chunk_size >= 1
    if not ok or chunk_size & (chunk_size - 1):
        raise ConfigError(f"chunk_size={chunk_size!r} is not valid; use a power of 2, e.g. 16, 32 or 64")


LOG_DECAY_FLOOR = -80.0  # exp(-80) ~ 2e-35: zero at fp32 precision, and exp stays off its slow underflow path


class _Decay(torch.autograd.Function):
    """exp(x) for a log-decay difference x <= 0, with x clamped to [LOG_DECAY_FLOOR, 0].

    The floor keeps exp off its slow CPU underflow path (~15x slower below -88) at an error below 2e-35;
    the ceiling keeps masked-out entries (x > 0, above a causal diagonal) finite, so no 0 * inf reaches
    backward. Backward is grad * exp(x), ignoring the clamp: in-range that is exact; at the floor the true
    derivative is below 2e-35, and entries above the ceiling are masked by the caller.
    """

    @staticmethod
    def forward(ctx, x):
        out = x.clamp(LOG_DECAY_FLOOR, 0.0).exp_()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad * out


def _decay(x: torch.Tensor) -> torch.Tensor:
    return _Decay.apply(x)


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b, elementwise for tiny matrices: CPU bmm pays a fixed cost per matrix."""
    if a.shape[-2] * a.shape[-1] * b.shape[-1] <= 128:
        return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(-2)
    return a @ b


def _diag_blocks(A: torch.Tensor, s: int) -> torch.Tensor:
    """Writable view of the [s, s] diagonal blocks of A: [..., C, C] -> [..., C/s, s, s]."""
    n = A.shape[-1] // s
    return A.unflatten(-2, (n, s)).unflatten(-1, (n, s)).diagonal(dim1=-4, dim2=-2).movedim(-1, -3)


def _joint_blocks(A: torch.Tensor, s: int) -> torch.Tensor:
    """Writable view of the lower-left [s, s] block of each [2s, 2s] diagonal block: -> [..., C/2s, s, s]."""
    return _diag_blocks(A, 2 * s)[..., s:, :s]


class _PerChannelScores(torch.autograd.Function):
    """A[..., j, r, i] = x[..., j, r, :] . (y[..., i, :] * exp(G_r - G_i)) for i <= r, 0 above.

    x: [..., R, C, K] (R row sets sharing the columns), y, G: [..., C, K] -> A: [..., R, C, C]; C a power of 2.
    The decay sits inside the sum over K, so it cannot be a [C, C] mask, and exp(G_r) * exp(-G_i) overflows
    once G < -88. Pairs are joined over a binary tree of blocks instead: level s joins each left s-token
    block to its right neighbour, rescaling both sides around n = the right block's first token, so
    exp(G_r - G_n) and exp(G_n - G_i) are both <= 1 for any gate depth; no [C, C, K] tensor is built.
    Backward walks the same tree; the gate enters only as G_r - G_i, so dG = sum_j x_j * dx_j - y * dy.
    """

    @staticmethod
    def forward(ctx, x, y, G):
        C = G.shape[-2]
        A = x.new_zeros(*x.shape[:-1], C)  # [..., R, C, C]
        A.diagonal(dim1=-2, dim2=-1).copy_((x * y.unsqueeze(-3)).sum(-1))  # exp(0) = 1 on the diagonal
        levels = []
        s = 1
        while s < C:
            m = C // (2 * s)
            G_left, G_right = G.unflatten(-2, (m, 2, s)).unbind(-3)  # [..., m, s, K]
            G_ref = G_right[..., :1, :]
            e_left = (G_ref - G_left).clamp_(min=LOG_DECAY_FLOOR).exp_()  # [..., m, s, K], <= 1
            e_right = (G_right - G_ref).clamp_(min=LOG_DECAY_FLOOR).exp_().unsqueeze(-4)  # [..., 1, m, s, K]
            y_left = y.unflatten(-2, (m, 2, s))[..., 0, :, :] * e_left
            x_right = x.unflatten(-2, (m, 2, s))[..., 1, :, :] * e_right  # [..., R, m, s, K]
            _joint_blocks(A, s).copy_(_mm(x_right, y_left.transpose(-1, -2).unsqueeze(-4)))
            levels.append((s, e_left, e_right, y_left, x_right))
            s *= 2
        ctx.save_for_backward(x, y)
        ctx.levels = levels
        return A

    @staticmethod
    def backward(ctx, dA):
        x, y = ctx.saved_tensors
        dA = dA.contiguous()  # the block views below need a plain layout
        dA_diag = dA.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)  # [..., R, C, 1]
        dx = dA_diag * y.unsqueeze(-3)  # [..., R, C, K]
        dy = (dA_diag * x).sum(-3)  # [..., C, K]
        for s, e_left, e_right, y_left, x_right in ctx.levels:
            dX = _joint_blocks(dA, s)  # [..., R, m, s(r), s(i)]
            m = dX.shape[-3]
            dx.unflatten(-2, (m, 2, s))[..., 1, :, :].add_(_mm(dX, y_left.unsqueeze(-4)).mul_(e_right))
            dy.unflatten(-2, (m, 2, s))[..., 0, :, :].add_(_mm(dX.transpose(-1, -2), x_right).sum(-4).mul_(e_left))
        return dx, dy, (x * dx).sum(-3).sub_(y * dy)


class _UnitLowerInverse(torch.autograd.Function):
    """(I + A)^-1 for A: [..., C, C] (C a power of 2), reading only A's strictly lower triangle.

    Doubling, all blocks of a level at once: inv([[L1, 0], [X, L2]]) = [[L1^-1, 0], [-L2^-1 X L1^-1, L2^-1]].
    Much cheaper on CPU than torch.linalg.solve_triangular's per-matrix loop. Backward: -M^T dM M^T.
    """

    @staticmethod
    def forward(ctx, A):
        C = A.shape[-1]
        M = torch.zeros_like(A)
        M.diagonal(dim1=-2, dim2=-1).fill_(1.0)
        s = 1
        while s < C:
            inv = _diag_blocks(M, s)  # [..., 2m, s, s]: inverses found at the previous level
            _joint_blocks(M, s).copy_(-_mm(_mm(inv[..., 1::2, :, :], _joint_blocks(A, s)), inv[..., 0::2, :, :]))
            s *= 2
        ctx.save_for_backward(M)
        return M

    @staticmethod
    def backward(ctx, dM):
        (M,) = ctx.saved_tensors
        Mt = M.transpose(-1, -2)
        return -(Mt @ dM @ Mt).tril(-1)


def chunk_delta_rule(q, k, v, g, beta, *, scale, initial_state, output_final_state, allow_neg_eigval, chunk_size):
    """Chunked delta rule; g [B, T, H, K] (per channel) or [B, T, H] (per head). Inputs already checked."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    per_channel = g.dim() == 4
    out_dtype = v.dtype
    dtype = compute_dtype(q, k, v, g, beta)
    C = chunk_size
    NT = max(1, -(-T // C))
    pad = NT * C - T

    def chunked(x: torch.Tensor) -> torch.Tensor:
        # A padded token has k = v = q = 0, beta = 0 and g = 0, so it leaves the state untouched.
        x = x.to(dtype)
        if pad:
            x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))
        x = x.unflatten(1, (NT, C)).transpose(0, 1).transpose(2, 3)  # [NT, B, H, C, ...]
        return x.reshape(NT, B * H, C, *x.shape[4:])  # [NT, B*H, C, ...]: one contiguous slab per chunk

    q, k, v, g, beta = map(chunked, (q, k, v, g, beta))
    if allow_neg_eigval:
        beta = 2 * beta
    G = g.cumsum(2)  # chunk-local cumulative log-decay, [NT, B*H, C] or [NT, B*H, C, K]
    rows = torch.stack([q * scale, k * beta.unsqueeze(-1)], dim=-3)  # [NT, B*H, 2, C, K]: rows of Aqk, Akk
    if per_channel:
        Aqk, Akk = _PerChannelScores.apply(rows, k, G).unbind(-3)  # [NT, B*H, C, C]
    else:
        # One decay per head: the exact exp(G_r - G_i) is a [C, C] mask on plain products. The exponent is
        # clamped to <= 0 first, so the upper triangle never holds inf (backward: 0 * inf = NaN).
        decay = _decay(G.unsqueeze(-1) - G.unsqueeze(-2)).tril()  # [NT, B*H, C, C]
        Aqk, Akk = ((rows @ k.unsqueeze(-3).transpose(-1, -2)) * decay.unsqueeze(-3)).unbind(-3)
    M = _UnitLowerInverse.apply(Akk)  # (I + Akk)^-1, [NT, B*H, C, C]
    Gk = G if per_channel else G.unsqueeze(-1)  # [NT, B*H, C, K or 1]
    decay_in = _decay(Gk)  # from the chunk's start to each token
    b = beta.unsqueeze(-1)
    G_last = Gk[..., -1:, :]  # [NT, B*H, 1, K or 1]: the same rounded G as inside, so G_last - G_C = 0 exactly
    k_end = (k * _decay(G_last - Gk)).transpose(-1, -2)  # [NT, B*H, K, C]: keys decayed to the chunk's end
    S = q.new_zeros(B * H, K, V) if initial_state is None else initial_state.to(dtype).reshape(B * H, K, V)
    # Chunk to chunk (sequential, one step per chunk): V' = M (beta v - beta exp(G) k S) is the chunk's
    # corrected values, then S <- exp(G_C) S + k_end^T V'.
    w_in, u_in = b * decay_in * k, b * v  # [NT, B*H, C, K], [NT, B*H, C, V]
    state_decay = _decay(G_last).transpose(-1, -2)  # [NT, B*H, K or 1, 1]
    entering, v_news = [], []
    # unbind, not M[n]: each indexing op's backward would write a full-size zero tensor
    for M_n, w_n, u_n, k_end_n, decay_n in zip(*(x.unbind(0) for x in (M, w_in, u_in, k_end, state_decay))):
        entering.append(S)
        v_new = M_n @ torch.baddbmm(u_n, w_n, S, alpha=-1)  # [B*H, C, V]
        v_news.append(v_new)
        S = torch.baddbmm(decay_n * S, k_end_n, v_new)  # [B*H, K, V]
    S_in, v_new = torch.stack(entering), torch.stack(v_news)  # [NT, B*H, K, V], [NT, B*H, C, V]
    o = (q * (scale * decay_in)) @ S_in + Aqk @ v_new  # [NT, B*H, C, V]
    o = o.unflatten(1, (B, H)).permute(1, 0, 3, 2, 4).reshape(B, NT * C, H, V)[:, :T].to(out_dtype)
    return o, (S.reshape(B, H, K, V) if output_final_state else None)
