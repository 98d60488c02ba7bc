"""Mamba2's SSD kernels in the linear-attention vocabulary (q = C, k = B, v = dt * x, g = dt * A).

    S_t = exp(g_t) S_{t-1} + k_t v_t^T,   o_t = scale * S_t^T q_t      (Mamba2 uses scale = 1)

    from arena.kernels.ssd import chunk_ssd, naive_recurrent_ssd, ssd_decode_step
    o, S = chunk_ssd(q, k, v, g, output_final_state=True)     # training / prefill, any T
    o1, S = ssd_decode_step(q1, k1, v1, g1, S)                # one token
    o, S = chunk_ssd(q, k, v, g, cu_seqlens=cu, initial_state=h0)   # packed: B = 1, states [N, H, K, V]
Triton: triton_ssd.chunk_ssd_triton (backend="triton"), recurrent.fused_recurrent_ssd_decode_step (decode).

Shapes: q, k: [B, T, H, K]; v: [B, T, H, V]; g: [B, T, H]; state: [B, H, K, V] fp32 (fp64 for fp64 inputs).
"""

from arena.kernels.ssd.chunk import chunk_ssd
from arena.kernels.ssd.naive import naive_recurrent_ssd, ssd_decode_step

__all__ = ["chunk_ssd", "naive_recurrent_ssd", "ssd_decode_step"]
