"""Per-kernel GPU time of the Triton delta-rule path (issue 4 tuning): torch.profiler over forward + backward.

    python scripts/profile_triton_delta.py                       # KDA and GDN at B=8, T=4096, H=16, K=V=128, bf16
    python scripts/profile_triton_delta.py --T 16384 --B 2
    python scripts/profile_triton_delta.py --ops kda --config BKS_kda=16,warps_kda=2 --config maxnreg_kda=128

Prints, per op and launch configuration, each kernel's CUDA time per step (the mean over 5 profiled steps after 3
warm-up steps), slowest first. `--config KEY=VALUE,...` overrides entries of
`arena.kernels.triton_delta.chunk._blocks` (tile sizes, warps, register caps); several --config run one after the
other, and each one's outputs and gradients are compared with the first's (relative RMS error), so a configuration
that computes something else shows. The whole-op timings against fla are `python -m arena.bench kernels`.
"""

import argparse

import torch
import torch.nn.functional as F

from arena.kernels.gated_delta_rule import chunk_gated_delta_rule
from arena.kernels.kda import chunk_kda
from arena.kernels.triton_delta import chunk as tri_chunk
from arena.testing import rel_rms_error

STEPS = 5
OPS = {"kda": (chunk_kda, True), "gdn": (chunk_gated_delta_rule, False)}


def parse_config(text: str) -> dict:
    """'BKS_kda=16,warps_kda=2' -> {'BKS_kda': 16, 'warps_kda': 2} ('none' -> None)."""
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        try:
            out[key.strip()] = None if value.strip().lower() == "none" else int(value)
        except ValueError:
            raise SystemExit(f"error: --config {item!r}: expected KEY=INTEGER or KEY=none") from None
    return out


def with_overrides(overrides: dict):
    """Patch chunk._blocks so every launch takes `overrides` on top of the defaults."""
    base = tri_chunk._blocks.__wrapped__ if hasattr(tri_chunk._blocks, "__wrapped__") else tri_chunk._blocks

    def patched(K, V):
        b = base(K, V)
        unknown = set(overrides) - set(b)
        if unknown:
            raise SystemExit(f"error: unknown --config keys {sorted(unknown)}; allowed: {sorted(b)}")
        return {**b, **overrides}

    patched.__wrapped__ = base
    tri_chunk._blocks = patched


def profile_op(name: str, overrides: dict, B: int, T: int, H: int, K: int, V: int, ref: dict | None) -> dict:
    fn, per_channel = OPS[name]
    with_overrides(overrides)
    dev = "cuda"
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dev)

    q = F.normalize(rand(B, T, H, K), dim=-1).bfloat16().requires_grad_()
    k = F.normalize(rand(B, T, H, K), dim=-1).bfloat16().requires_grad_()
    v = rand(B, T, H, V).bfloat16().requires_grad_()
    g = F.logsigmoid(rand(B, T, H, *((K,) if per_channel else ()))).requires_grad_()
    beta = torch.rand(B, T, H, generator=gen).to(dev).requires_grad_()
    do = rand(B, T, H, V).bfloat16()

    def step():
        for x in (q, k, v, g, beta):
            x.grad = None
        o, _ = fn(q, k, v, g, beta, backend="triton")
        o.backward(do)
        return o

    for _ in range(3):
        o = step()
    result = {"o": o.detach().float(), **{f"d{n}": x.grad.float() for n, x in zip("qkvgb", (q, k, v, g, beta))}}
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(STEPS):
            step()
        torch.cuda.synchronize()
    rows = sorted(((e.key, e.device_time_total / STEPS / 1000, e.count // STEPS) for e in prof.key_averages()
                   if e.device_time_total > 0), key=lambda r: -r[1])
    label = ",".join(f"{key}={val}" for key, val in overrides.items()) or "defaults"
    print(f"== {name} [{label}] B={B} T={T} H={H} K={K} V={V} bf16 ({torch.cuda.get_device_name()}): CUDA ms/step")
    for key, ms, n in rows[:12]:
        print(f"  {ms:8.3f} ms  x{n:<3} {key[:90]}")
    print(f"  {sum(r[1] for r in rows):8.3f} ms  total")
    if ref is not None:
        errs = {key: rel_rms_error(ref[key], result[key]) for key in ref}
        print("  vs the first configuration, relative RMS: " + " ".join(f"{k}={e:.1e}" for k, e in errs.items()))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for dim, default in (("B", 8), ("T", 4096), ("H", 16), ("K", 128), ("V", 128)):
        p.add_argument(f"--{dim}", type=int, default=default)
    p.add_argument("--ops", nargs="+", choices=sorted(OPS), default=["kda", "gdn"])
    p.add_argument("--config", action="append", default=[], help="KEY=VALUE,... overrides of chunk._blocks")
    a = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; this script profiles GPU kernels")
    configs = [parse_config(c) for c in a.config] or [{}]
    for name in a.ops:
        ref = None
        for overrides in configs:
            out = profile_op(name, overrides, a.B, a.T, a.H, a.K, a.V, ref)
            ref = ref or out


if __name__ == "__main__":
    main()
