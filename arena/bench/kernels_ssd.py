"""Op `ssd` of `python -m arena.bench kernels`: Mamba2's chunked SSD, arena against fla and mamba_ssm.

    python -m arena.bench kernels --ops ssd                 # arena.torch, fla, mamba_ssm, arena.triton rows

The bench times the core recurrence only (per head, a scalar decay per token):
    S_t = exp(g_t) S_{t-1} + k_t v_t^T,   o_t = S_t^T q_t            (scale 1, Mamba2's)
and every implementation gets the same q, k, v, g:
  arena.triton / arena.torch  arena.kernels.ssd.chunk_ssd(q, k, v, g, backend=...)
  fla         fla.ops.simple_gla.chunk_simple_gla(q, k, v, g=g, scale=1): the same recurrence (GLA with one
              log-decay per head and token)
  mamba_ssm   mamba_chunk_scan_combined(x, dt, A, B=k, C=q, chunk_size=256), ngroups = H (a B and C per head), no
              D, no z. Mamba2 computes v = dt * x and g = dt * A inside, so A = -1 and dt = -g, x = v / dt are
              precomputed leaves (made once, outside the timed region): dt * x gives v back up to one rounding.
Inputs follow the delta-rule rows: q, k L2-normalized per head, v ~ N(0, 1), g = logsigmoid(N(0, 1)) in fp32.
"""

from __future__ import annotations

import importlib.util

MAMBA_CHUNK = 256  # mamba_ssm's Mamba2 default


def make_ssd_inputs(B: int, T: int, H: int, D: int, dtype, device, seed: int) -> dict:
    """Leaf tensors that require grad: q, k, v [B, T, H, D] and g [B, T, H] (fp32), and mamba_ssm's view of the
    same data (mamba_x = v / dt in dtype, mamba_dt = -g in fp32, mamba_A = -1 per head, no grad)."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape):
        return torch.randn(shape, generator=gen, device=device, dtype=torch.float32)

    q, k, v = F.normalize(randn(B, T, H, D), dim=-1), F.normalize(randn(B, T, H, D), dim=-1), randn(B, T, H, D)
    g = F.logsigmoid(randn(B, T, H))  # < 0
    dt = -g  # > 0, so dt * A = g with A = -1
    x = {"q": q.to(dtype), "k": k.to(dtype), "v": v.to(dtype), "g": g,
         "mamba_x": (v / dt[..., None]).to(dtype), "mamba_dt": dt.clone()}
    for t in x.values():
        t.requires_grad_(True)
    x["mamba_A"] = torch.full((H,), -1.0, device=device)
    x["do"] = randn(B, T, H, D).to(dtype)
    return x


def _mamba_op():
    from arena.bench.kernels import Unavailable, _short

    if importlib.util.find_spec("mamba_ssm") is None:
        raise Unavailable("mamba_ssm is not installed (pip install mamba-ssm)")
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as exc:  # a broken mamba_ssm build (e.g. its CUDA extensions) must not end the benchmark
        raise Unavailable(f"importing mamba_ssm failed: {_short(exc)}") from None
    return mamba_chunk_scan_combined


def _fla_op():
    from arena.bench.kernels import Unavailable, _short

    if importlib.util.find_spec("fla") is None:
        raise Unavailable("fla-core is not installed (pip install fla-core)")
    try:
        from fla.ops.simple_gla import chunk_simple_gla
    except Exception as exc:
        raise Unavailable(f"importing fla failed: {_short(exc)}") from None
    return chunk_simple_gla


def resolve_ssd(impl: str, T: int, args):
    """(call, detail) of one `ssd` implementation, as arena.bench.kernels.resolve; raises Unavailable."""
    from arena.bench.kernels import Unavailable, _bypass_fla_hopper_guard, _triton_status
    from arena.kernels.ssd import chunk_ssd

    if impl == "arena.triton":
        ok, reason = _triton_status()
        if not ok:
            raise Unavailable(f"arena Triton path: {reason}")
        return (lambda x: chunk_ssd(x["q"], x["k"], x["v"], x["g"], backend="triton")[0]), ""
    if impl == "arena.torch":
        if args.no_torch:
            raise Unavailable("skipped (--no-torch)")
        if T > args.torch_max_t:
            raise Unavailable(f"skipped (T > --torch-max-t {args.torch_max_t})")
        C = args.torch_chunk
        return (lambda x: chunk_ssd(x["q"], x["k"], x["v"], x["g"], backend="torch", chunk_size=C)[0]), f"C={C}"
    if impl == "fla":
        fn = _fla_op()
        # its backward is the same gated chunk_bwd_dqkwg that fla#640 refuses on Hopper with Triton < 3.7.1
        detail = "chunk_simple_gla" + (f"; {_bypass_fla_hopper_guard()}" if args.fla_bypass_640 else "")
        return (lambda x: fn(x["q"], x["k"], x["v"], g=x["g"], scale=1.0)[0]), detail
    if impl == "mamba_ssm":
        fn = _mamba_op()

        def call(x):
            return fn(x["mamba_x"], x["mamba_dt"], x["mamba_A"], x["k"], x["q"], chunk_size=MAMBA_CHUNK)

        return call, f"mamba_chunk_scan_combined C={MAMBA_CHUNK}"
    raise ValueError(f"unknown implementation {impl!r} for op ssd")
