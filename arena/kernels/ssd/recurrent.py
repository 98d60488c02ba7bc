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

from arena.kernels.ssd.naive import check_inputs
from arena.kernels.triton_delta.recurrent import Hints, launch_recurrent

SSD_HINTS = Hints("chunk_ssd", "arena.kernels.ssd.naive", "arena.kernels.ssd.ssd_decode_step")


def fused_recurrent_ssd(q, k, v, g, *, scale=1.0, initial_state=None, output_final_state=True):
    """Token-by-token SSD in one Triton launch.

    q, k: [B, T, H, K]; v: [B, T, H, V] (fp32, fp16 or bf16); g: [B, T, H] log-decay (<= 0), any float dtype;
    initial_state: [B, H, K, V] (None = zeros), read only. All math is fp32.
    Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] fp32, or None if not output_final_state).
    """
    op = "fused_recurrent_ssd"
    check_inputs(q, k, v, g, initial_state, op=op)
    # the delta rules' kernel without its delta term (beta=None: DELTA_RULE=False)
    return launch_recurrent(op, SSD_HINTS, q, k, v, g, None, initial_state, scale=float(scale),
                            output_final_state=output_final_state)


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
