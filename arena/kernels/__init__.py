"""Functional token-mixing kernels: tensors in, tensors out; no modules, no config objects.

Shape vocabulary (the same everywhere in arena, and fla's layout):
    B  batch            T  sequence length       H  heads
    K  key/query dim    V  value dim             D  model width (d_model)
    q, k: [B, T, H, K]   v: [B, T, H, V]   beta: [B, T, H]   recurrent state: [B, H, K, V], fp32
    g: log-space decay (g <= 0, alpha = exp(g)); [B, T, H, K] per channel (KDA) or [B, T, H] per head.

Each op lives in its own subpackage with a plain fp32 reference (`naive_recurrent_*`, a token loop that
is the oracle), a chunked form (`chunk_*`, what training uses) and a single-token `*_decode_step`:
    arena.kernels.kda               Kimi Delta Attention (per-channel gate)
    arena.kernels.gated_delta_rule  Gated DeltaNet (per-head gate)
    arena.kernels.ssd               Mamba2's state-space duality (gated linear attention, no delta rule)
Every function returns `(o, final_state)`; `final_state` is None unless `output_final_state=True`. The tensors
(and a decode step's state) go by position, everything else by keyword (`scale=`, `initial_state=`, ...).
`arena.kernels.norm.rms_norm` is the RMSNorm every layer's torch path uses.
"""
