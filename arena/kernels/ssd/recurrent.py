"""Fused recurrent Triton kernel for decoding with Mamba2's SSD: one launch, the state read once and written once.

Runs a few tokens (any T is correct, but the loop over T is sequential) against a state, inference only:
    from arena.kernels.ssd.recurrent import fused_recurrent_ssd, fused_recurrent_ssd_decode_step
    o, S = fused_recurrent_ssd(q, k, v, g, initial_state=S)          # q, k [B, T, H, K], v [B, T, H, V], g [B, T, H]
    o, S = fused_recurrent_ssd_decode_step(q, k, v, g, S)            # one token: q, k [B, H, K], v [B, H, V], g [B, H]
The decode step has the contract and signature of its fp32 twin `arena.kernels.ssd.ssd_decode_step`.
Per token, in fp32 (the state is [K, V], keys on rows; Mamba2: q = C, k = B, v = dt * x, g = dt * A):
    S <- exp(g_t) S + k_t v_t^T;   o_t = scale * S^T q_t
It runs the delta rules' decode kernel (arena/kernels/triton_delta/recurrent.py) with the delta term compiled out
(DELTA_RULE=False): one program owns one (batch, head) and a block of BV value columns with the whole [K, BV] state
block in fp32 registers; S^T q reduces over K inside the program, so splitting V across programs is exact. A decode
step is bound by the state's bytes, so one launch that reads and writes it once is the memory floor. Training uses
`chunk_ssd`: no backward here.
Needs CUDA, or TRITON_INTERPRET=1 on CPU; this module imports triton, so import it behind triton_status().
Tested in tests/kernels/test_ssd_recurrent.py.
"""

from __future__ import annotations

import torch
import triton

from arena.kernels.ssd.naive import check_inputs
from arena.kernels.triton_delta import output_buffer, triton_status
from arena.kernels.triton_delta.recurrent import MAX_K, _block_v, _fused_recurrent_kernel, _num_warps


def _no_grad_check(op: str, *tensors) -> None:
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors):
        raise RuntimeError(f"{op} is inference only (no backward); for training use chunk_ssd, "
                           "or call this under torch.no_grad()")


def fused_recurrent_ssd(q, k, v, g, *, scale=1.0, initial_state=None, output_final_state=True):
    """Token-by-token SSD in one Triton launch.

    q, k: [B, T, H, K]; v: [B, T, H, V] (fp32, fp16 or bf16); g: [B, T, H] log-decay (<= 0), any float dtype;
    initial_state: [B, H, K, V] (None = zeros), read only. All math is fp32.
    Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] fp32, or None if not output_final_state).
    """
    op = "fused_recurrent_ssd"
    check_inputs(q, k, v, g, initial_state, op=op)
    _no_grad_check(op, q, k, v, g, initial_state)
    if torch.float64 in (q.dtype, k.dtype, v.dtype):
        raise ValueError(f"{op}: computes in fp32 and has no fp64 path; use arena.kernels.ssd.naive for fp64")
    tensors = (q, k, v, g) + (() if initial_state is None else (initial_state,))
    if any(x.device != q.device for x in tensors):
        raise ValueError(f"{op}: all inputs must be on one device, got {sorted({str(x.device) for x in tensors})}")
    ok, reason = triton_status(q.device)
    if not ok:
        raise RuntimeError(f"{op}: Triton cannot run here ({reason}); use arena.kernels.ssd.ssd_decode_step")
    B, T, H, K = q.shape
    V = v.shape[-1]
    if K > MAX_K:
        raise ValueError(f"{op}: K={K} > {MAX_K}: the [K, BV] state block would not fit in registers")

    q, k, v, g = (x.contiguous() for x in (q, k, v, g))
    h0 = None if initial_state is None else initial_state.to(torch.float32).contiguous()
    o = output_buffer((B, T, H, V), v.dtype, v.device)
    ht = output_buffer((B, H, K, V), torch.float32, v.device) if output_final_state else None
    if B * H == 0 or V == 0:
        if ht is not None:
            ht.zero_()
        return o, ht

    BK = triton.next_power_of_2(K)
    BV = _block_v(BK, V)  # the delta rules' tuning: the same state-bound loop, one dot fewer per token
    grid = (B * H, triton.cdiv(V, BV))
    # Absent tensors get a stand-in pointer; the constexpr flags compile their loads and stores out.
    # the delta rules' kernel without its delta term (DELTA_RULE=False: beta is never read, g stands in for it)
    _fused_recurrent_kernel[grid](
        q, k, v, g, g, o if h0 is None else h0, o, o if ht is None else ht, float(scale), T,
        H=H, K=K, V=V, BK=BK, BV=BV, PER_CHANNEL_GATE=False, HAS_INITIAL_STATE=h0 is not None,
        STORE_FINAL_STATE=ht is not None, NEG_EIGVAL=False, DELTA_RULE=False, num_warps=_num_warps(BK, BV),
    )
    return o, ht


def fused_recurrent_ssd_decode_step(q, k, v, g, state, *, scale=1.0):
    """One token against a state: the contract of arena.kernels.ssd.ssd_decode_step, on the Triton kernel.

    q, k: [B, H, K]; v: [B, H, V]; g: [B, H] log-decay; state: [B, H, K, V] (None = zeros), not modified.
    Returns (o [B, H, V] in v's dtype, new state [B, H, K, V] fp32).
    """
    if q.dim() != 3:  # the checks below see a T axis; say what a step takes
        raise ValueError(f"fused_recurrent_ssd_decode_step: q must be [B, H, K], got shape {tuple(q.shape)}")
    o, S = fused_recurrent_ssd(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), g.unsqueeze(1), scale=scale,
                               initial_state=state, output_final_state=True)
    return o.squeeze(1), S
