"""Shared core of the delta-rule kernels (KDA and Gated DeltaNet): input checks and the chunked WY/UT form.

Private: use `arena.kernels.kda` or `arena.kernels.gated_delta_rule`. Both ops run the same recurrence
    S_t = (I - beta_t k_t k_t^T) Diag(exp(g_t)) S_{t-1} + beta_t k_t v_t^T,    o_t = S_t^T (scale q_t)
with g per channel ([B, T, H, K], KDA) or per head ([B, T, H], GDN: the same decay on every key row).

`chunk_delta_rule` is the chunkwise algorithm of docs mixers.md 1.6 in plain PyTorch (autograd gives the
backward). Inside a chunk of C tokens with chunk-local cumulative log-decay G:
    Aqk[r, i] = scale q_r . (k_i * exp(G_r - G_i))        i <= r
    Akk[r, i] = beta_r k_r . (k_i * exp(G_r - G_i))       i <  r
    W = (I + Akk)^-1 (beta exp(G) k),   U = (I + Akk)^-1 (beta v)          (UT transform)
    V' = U - W S,   O = scale (exp(G) q) S + Aqk V',   S <- exp(G_C) S + (exp(G_C - G) k)^T V'
Gates reach -20 per step, so G falls to -20 C within a chunk and exp(G_r) exp(-G_i) would overflow. Every
decay is therefore an exact difference exp(G_r - G_i) <= 1, with the exponent (not the product) masked to
-inf above the diagonal, so neither forward nor backward meets inf or 0 * inf. KDA needs a [C, C, K] decay
per chunk (hence its small default chunk); GDN needs only [C, C].

The state update is rewritten as S <- A_n S + B_n with A_n = Diag(exp(G_C)) - (exp(G_C - G) k)^T W and
B_n = (exp(G_C - G) k)^T U, batched over all chunks, so the sequential part is one matmul per chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from arena.errors import ConfigError, choice_error

BACKENDS = ("torch",)


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """fp32, or fp64 when any input is fp64: the dtype the kernels compute and return states in."""
    dtype = torch.float32
    for x in tensors:
        dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise choice_error("backend", backend, BACKENDS)


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


def _decay(log_decay: torch.Tensor) -> torch.Tensor:
    """exp of a cumulative log-decay (<= 0), floored at LOG_DECAY_FLOOR (exp is ~15x slower on CPU below)."""
    return log_decay.clamp(min=LOG_DECAY_FLOOR).exp()


def _block_lower(top_left: torch.Tensor, bottom_left: torch.Tensor, bottom_right: torch.Tensor) -> torch.Tensor:
    """[[top_left, 0], [bottom_left, bottom_right]] for batches of [s, s] blocks -> [..., 2s, 2s]."""
    top = torch.cat([top_left, torch.zeros_like(top_left)], dim=-1)
    return torch.cat([top, torch.cat([bottom_left, bottom_right], dim=-1)], dim=-2)


def _scores_per_head(q, k, G):
    """Aqk, Akk = (q k^T, k k^T) * exp(G_r - G_i) below the diagonal (one decay per head): a [C, C] mask.

    q (scaled), k: [..., C, K]; G: [..., C]. The exponent is clamped to <= 0 before exp, so the upper
    triangle never holds inf (its backward would give 0 * inf = NaN); tril then zeroes it exactly.
    """
    C = q.shape[-2]
    decay = (G.unsqueeze(-1) - G.unsqueeze(-2)).clamp(LOG_DECAY_FLOOR, 0.0).exp().tril()  # [..., C(r), C(i)]
    A = torch.cat([q, k], dim=-2) @ k.transpose(-1, -2)  # [..., 2C, C]: q k^T over k k^T
    A = A.unflatten(-2, (2, C)) * decay.unsqueeze(-3)  # [..., 2, C, C]
    return A[..., 0, :, :], A[..., 1, :, :]


def _scores_per_channel(q, k, G):
    """Aqk, Akk = q_r . (k_i * exp(G_r - G_i)), k_r . (...) for i <= r, zero above (per-channel decay).

    The decay sits inside the sum over K, so it cannot be a [C, C] mask, and exp(G_r) * exp(-G_i) overflows
    once G < -88. The pairs are split over a binary tree of blocks instead: level s joins pairs of s-token
    blocks, rescaling both sides around n = the right block's first token, so exp(G_r - G_n) and
    exp(G_n - G_i) are both <= 1 for any gate depth, and no [C, C, K] tensor is built.
    q (scaled), k, G: [..., C, K], C a power of 2. Returns two [..., C, C].
    """
    *batch, C, K = q.shape
    rows = torch.stack([q, k], dim=-3)  # [..., 2, C, K]: rows of Aqk and of Akk
    A = (rows * k.unsqueeze(-3)).sum(-1)[..., None, None]  # [..., 2, C, 1, 1]: the diagonal, exp(0) = 1
    s = 1
    while s < C:
        m = C // (2 * s)  # block pairs per chunk at this level
        Gb = G.reshape(*batch, m, 2, s, K)
        Gn = Gb[..., 1, :1, :]  # [..., m, 1, K]
        k_left = k.reshape(*batch, m, 2, s, K)[..., 0, :, :] * _decay(Gn - Gb[..., 0, :, :])  # [..., m, s, K]
        right = rows.reshape(*batch, 2, m, 2, s, K)[..., 1, :, :]  # [..., 2, m, s, K]
        right = right * _decay(Gb[..., 1, :, :] - Gn).unsqueeze(-4)
        X = right @ k_left.unsqueeze(-4).transpose(-1, -2)  # [..., 2, m, s(r), s(i)]
        A_left, A_right = A.reshape(*batch, 2, m, 2, s, s).unbind(-3)
        A = _block_lower(A_left, X, A_right)  # [..., 2, m, 2s, 2s]
        s *= 2
    A = A.squeeze(-3)  # [..., 2, C, C]
    return A[..., 0, :, :], A[..., 1, :, :]


def _unit_lower_inverse(A: torch.Tensor) -> torch.Tensor:
    """(I + A)^-1 for A: [..., C, C], C a power of 2, reading only A's strictly lower triangle.

    Doubling: inv([[L1, 0], [X, L2]]) = [[L1^-1, 0], [-L2^-1 X L1^-1, L2^-1]], all blocks of a level at once;
    differentiable, and much cheaper than torch.linalg.solve_triangular's per-matrix loop on CPU.
    """
    *batch, C, _ = A.shape
    inv = A.new_ones(*batch, C, 1, 1)  # [..., n, s, s]: the inverted diagonal blocks, s = 1
    s = 1
    while s < C:
        m = C // (2 * s)
        diag_blocks = A.reshape(*batch, m, 2 * s, m, 2 * s).diagonal(dim1=-4, dim2=-2).movedim(-1, -3)
        X = diag_blocks[..., s:, :s]  # [..., m, s, s]: the lower-left block of each 2s diagonal block
        left, right = inv.reshape(*batch, m, 2, s, s).unbind(-3)
        inv = _block_lower(left, -(right @ X @ left), right)  # [..., m, 2s, 2s]
        s *= 2
    return inv.squeeze(-3)


def chunk_delta_rule(q, k, v, g, beta, scale, initial_state, output_final_state, allow_neg_eigval, chunk_size):
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
        x = x.to(dtype).transpose(1, 2)  # [B, H, T, ...]
        if pad:
            x = F.pad(x, (0, 0) * (x.dim() - 3) + (0, pad))
        return x.reshape(B, H, NT, C, *x.shape[3:])  # [B, H, NT, C, ...]

    q, k, v, g, beta = map(chunked, (q, k, v, g, beta))
    if allow_neg_eigval:
        beta = 2 * beta
    G = g.cumsum(3)  # chunk-local cumulative log-decay, [B, H, NT, C] or [B, H, NT, C, K]
    scores = _scores_per_channel if per_channel else _scores_per_head
    Aqk, Akk = scores(q * scale, k, G)  # [B, H, NT, C, C]
    b = beta.unsqueeze(-1)
    M = _unit_lower_inverse(b * Akk)  # (I + Diag(beta) Akk)^-1, [B, H, NT, C, C]
    Gk = G if per_channel else G.unsqueeze(-1)  # [B, H, NT, C, K or 1]
    decay_in = _decay(Gk)  # [B, H, NT, C, K or 1]: from the chunk's start to each token
    WU = M @ torch.cat([b * decay_in * k, b * v], dim=-1)  # [B, H, NT, C, K + V]: W | U
    G_last = Gk[..., -1:, :]  # [B, H, NT, 1, K or 1]
    k_to_end = k * _decay(G_last - Gk)  # [B, H, NT, C, K]: each key decayed to the chunk's end
    kWU = (k_to_end.transpose(-1, -2) @ WU).reshape(B * H, NT, K, K + V).transpose(0, 1)  # [NT, B*H, K, K+V]
    state_decay = torch.diag_embed(_decay(G_last.squeeze(-2)).expand(B, H, NT, K))  # [B, H, NT, K, K]
    A_state = state_decay.reshape(B * H, NT, K, K).transpose(0, 1) - kWU[..., :K]  # [NT, B*H, K, K]
    B_state = kWU[..., K:]  # [NT, B*H, K, V]

    S = q.new_zeros(B * H, K, V) if initial_state is None else initial_state.to(dtype).reshape(B * H, K, V)
    entering = []
    for n in range(NT):
        entering.append(S)
        S = torch.baddbmm(B_state[n], A_state[n], S)  # [B*H, K, V]
    S_in = torch.stack(entering, dim=1).reshape(B, H, NT, K, V)  # the state entering each chunk

    W, U = WU.split([K, V], dim=-1)
    v_new = U - W @ S_in  # [B, H, NT, C, V]
    o = (q * (scale * decay_in)) @ S_in + Aqk @ v_new  # [B, H, NT, C, V]
    o = o.reshape(B, H, NT * C, V)[:, :, :T].transpose(1, 2).to(out_dtype)  # [B, T, H, V]
    return o, (S.reshape(B, H, K, V) if output_final_state else None)
