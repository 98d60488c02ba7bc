"""Backend choice and packed sequences for the chunked delta rules (`chunk_kda`, `chunk_gated_delta_rule`).

Private: the public ops call `checked_chunked`, with every argument after the tensors by keyword. Backends:
    "torch"   the plain-PyTorch chunked form (arena.kernels._delta_rule), any device, any dtype
    "triton"  arena.kernels.triton_delta, CUDA (or the Triton interpreter), q/k/v in fp32/fp16/bf16, K, V <= 256
    None      "triton" for CUDA tensors, "torch" otherwise
When Triton cannot run (not installed, no GPU, unsupported dtype or size), the op warns once per reason and runs
the torch path: a missing GPU never becomes an import error or a crash.
`cu_seqlens` packs N sequences along T (B == 1); no state passes between them. The torch path runs them one by one.
`chunk_size_used` says which chunk length a call will run at (the mixers count their FLOPs with it).
"""

from __future__ import annotations

import warnings

import torch

from arena.errors import ConfigError, choice_error
from arena.kernels._delta_rule import check_chunk_size, check_inputs, chunk_delta_rule

BACKENDS = ("torch", "triton")
TRITON_CHUNK_SIZE = 64  # the Triton kernels' only chunk (triton_delta.chunk_fwd.CHUNK is this)
TORCH_CHUNK_SIZE = 16  # fastest on a 2-core CPU of 8 / 16 / 32 / 64 (fwd+bwd, T 64-256)
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TRITON_MAX_HEAD_DIM = 256  # K and V: the state kernels hold a [K, 64] fp32 tile in registers
# The Triton backwards (delta rules and the SSD) hold [C, K] fp32 tiles: fp32 at K > 128 (a 256 tile) overflows an
# H100's shared memory (the SSD's ssd_bwd_intra_kernel: 368 KiB of 227, measured); bf16 / fp16 at K = 256 fit
FP32_MAX_K_BACKWARD = 128
_warned: set[str] = set()


def fp32_backward_blocker(dtype: torch.dtype, K: int, backward: bool) -> str | None:
    """Why a Triton backward cannot take q, k, v of `dtype` and head dim K (fp32 past FP32_MAX_K_BACKWARD), or
    None; `backward`: one will run."""
    if dtype == torch.float32 and K > FP32_MAX_K_BACKWARD and backward:
        return (f"fp32 inputs with K={K} > {FP32_MAX_K_BACKWARD} overflow shared memory in the backward; "
                f"use bf16/fp16 or K <= {FP32_MAX_K_BACKWARD}")
    return None


def _warn_once(op: str, reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"{op}: the Triton kernels cannot run ({reason}); falling back to the torch path",
                      RuntimeWarning, stacklevel=4)


def _triton_blocker(device, dtypes, K: int, V: int, training: bool) -> str | None:
    """Why the Triton path cannot take q, k, v of these dtypes and head dims on `device`, or None when it can."""
    from arena.kernels.triton_delta import interpreting, triton_status

    ok, reason = triton_status(device)
    if not ok:
        return reason
    if len(set(dtypes)) != 1 or dtypes[0] not in TRITON_DTYPES:
        return "q, k, v must share one dtype of fp32/fp16/bf16, got " + "/".join(map(str, dtypes))
    if max(K, V) > TRITON_MAX_HEAD_DIM or min(K, V) < 1:
        return f"head dims from 1 to {TRITON_MAX_HEAD_DIM} are supported, got K={K}, V={V}"
    return None if interpreting() else fp32_backward_blocker(dtypes[0], K, training)  # the interpreter has room


def _check_backend(op: str, backend: str | None) -> None:
    if backend is not None and backend not in BACKENDS:
        raise choice_error(f"{op} backend", backend, BACKENDS + (None,))


def _backend_blocker(backend: str | None, device, dtypes, K: int, V: int, training: bool) -> str | None:
    """"torch" when the torch path runs by choice, the reason Triton cannot run when it falls back, else None."""
    if backend == "torch" or (backend is None and torch.device(device).type != "cuda"):
        return "torch"
    return _triton_blocker(device, tuple(dtypes), K, V, training)


def resolve_backend(op: str, backend: str | None, q, k, v) -> str:
    """The backend that will run: the requested one, or torch (with one warning) when Triton cannot."""
    _check_backend(op, backend)
    training = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    blocker = _backend_blocker(backend, q.device, (q.dtype, k.dtype, v.dtype), q.shape[-1], v.shape[-1], training)
    if blocker is None:
        return "triton"
    if blocker != "torch":
        _warn_once(op, blocker)
    return "torch"


def chunk_size_used(backend: str | None, device, dtype, K: int, V: int) -> int:
    """The chunk length a forward pass (no grad) with q, k, v of `dtype` on `device` runs at, `backend` as in the
    ops: the Triton kernels' TRITON_CHUNK_SIZE where they run, else the torch path's default TORCH_CHUNK_SIZE."""
    _check_backend("chunk_size_used", backend)
    blocker = _backend_blocker(backend, device, (dtype,) * 3, K, V, training=False)
    return TRITON_CHUNK_SIZE if blocker is None else TORCH_CHUNK_SIZE


def check_cu_seqlens(op: str, cu_seqlens, q, initial_state) -> int:
    """Validate packed offsets; returns N, the number of sequences."""
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.dtype not in (
            torch.int32, torch.int64):
        raise ValueError(f"{op}: cu_seqlens must be a 1-D int32/int64 tensor of offsets [N+1], got {cu_seqlens!r}")
    B, T, H, K = q.shape
    if B != 1:
        raise ValueError(f"{op}: with cu_seqlens the batch must be packed into B=1, got B={B}")
    cu = cu_seqlens.detach().cpu()
    if len(cu) < 2 or int(cu[0]) != 0 or int(cu[-1]) != T or bool((cu[1:] < cu[:-1]).any()):
        raise ValueError(f"{op}: cu_seqlens must rise from 0 to T={T} (non-decreasing), got {cu.tolist()}")
    N = len(cu) - 1
    if initial_state is not None and tuple(initial_state.shape[:2]) != (N, H):
        raise ValueError(f"{op}: with cu_seqlens the state must be [N, H, K, V] with N={N}, "
                         f"got {tuple(initial_state.shape)}")
    return N


def run_chunked(op, q, k, v, g, beta, *, scale, initial_state, output_final_state, allow_neg_eigval, chunk_size,
                backend, cu_seqlens):
    """Run the chunked delta rule on the chosen backend (inputs already shape-checked, scale resolved)."""
    chosen = resolve_backend(op, backend, q, k, v)
    flags = dict(scale=scale, output_final_state=output_final_state, allow_neg_eigval=allow_neg_eigval)
    if chosen == "triton":
        if chunk_size not in (None, TRITON_CHUNK_SIZE):
            raise ConfigError(f"{op}: chunk_size={chunk_size!r} is not valid for the triton backend; "
                              f"use None or {TRITON_CHUNK_SIZE}")
        from arena.kernels.triton_delta.chunk import chunk_delta_rule_triton

        return chunk_delta_rule_triton(q, k, v, g, beta, initial_state=initial_state, cu_seqlens=cu_seqlens, **flags)
    chunk_size = TORCH_CHUNK_SIZE if chunk_size is None else chunk_size
    check_chunk_size(chunk_size)
    if cu_seqlens is None:
        return chunk_delta_rule(q, k, v, g, beta, initial_state=initial_state, chunk_size=chunk_size, **flags)
    bounds = cu_seqlens.detach().cpu().tolist()
    outs, states = [], []
    for n, (bos, eos) in enumerate(zip(bounds[:-1], bounds[1:])):
        h0 = None if initial_state is None else initial_state[n:n + 1]
        o, S = chunk_delta_rule(q[:, bos:eos], k[:, bos:eos], v[:, bos:eos], g[:, bos:eos], beta[:, bos:eos],
                                initial_state=h0, chunk_size=chunk_size, **{**flags, "output_final_state": True})
        outs.append(o)
        states.append(S)
    o = torch.cat(outs, dim=1)
    return o, (torch.cat(states, dim=0) if output_final_state else None)


def checked_chunked(op, q, k, v, g, beta, *, per_channel, scale, initial_state, output_final_state, allow_neg_eigval,
                    chunk_size, backend, cu_seqlens):
    """The public ops' body: check shapes (and packed offsets), default the scale, then `run_chunked`."""
    state_to_check = initial_state if cu_seqlens is None else None  # packed: [N, H, K, V], checked below
    check_inputs(op, q, k, v, g, beta, state_to_check, per_channel=per_channel)
    if cu_seqlens is not None:
        check_cu_seqlens(op, cu_seqlens, q, initial_state)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return run_chunked(op, q, k, v, g, beta, scale=scale, initial_state=initial_state,
                       output_final_state=output_final_state, allow_neg_eigval=allow_neg_eigval,
                       chunk_size=chunk_size, backend=backend, cu_seqlens=cu_seqlens)
