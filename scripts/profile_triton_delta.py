"""Per-kernel GPU time of the Triton delta-rule path (issue 4 tuning): torch.profiler over forward + backward.

    python scripts/profile_triton_delta.py                       # KDA and GDN at B=8, T=4096, H=16, K=V=128, bf16
    python scripts/profile_triton_delta.py --T 16384 --B 2

Prints, per op, each kernel's CUDA time per step (the mean over 5 profiled steps after 3 warm-up steps), slowest
first. The whole-op timings against fla are `python -m arena.bench kernels`; this says where the time goes.
"""

import argparse

import torch
import torch.nn.functional as F

from arena.kernels.gated_delta_rule import chunk_gated_delta_rule
from arena.kernels.kda import chunk_kda

STEPS = 5


def profile_op(name: str, fn, per_channel: bool, B: int, T: int, H: int, K: int, V: int) -> None:
    dev = "cuda"
    q = F.normalize(torch.randn(B, T, H, K, device=dev), dim=-1).bfloat16().requires_grad_()
    k = F.normalize(torch.randn(B, T, H, K, device=dev), dim=-1).bfloat16().requires_grad_()
    v = torch.randn(B, T, H, V, device=dev).bfloat16().requires_grad_()
    g = F.logsigmoid(torch.randn(B, T, H, *((K,) if per_channel else ()), device=dev)).requires_grad_()
    beta = torch.rand(B, T, H, device=dev).requires_grad_()
    do = torch.randn_like(v)

    def step():
        o, _ = fn(q, k, v, g, beta, backend="triton")
        o.backward(do)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(STEPS):
            step()
        torch.cuda.synchronize()
    rows = sorted(((e.key, e.device_time_total / STEPS / 1000, e.count // STEPS) for e in prof.key_averages()
                   if e.device_time_total > 0), key=lambda r: -r[1])
    print(f"== {name} B={B} T={T} H={H} K={K} V={V} bf16 ({torch.cuda.get_device_name()}): CUDA ms per step")
    for key, ms, n in rows[:14]:
        print(f"  {ms:8.3f} ms  x{n:<3} {key[:90]}")
    print(f"  {sum(r[1] for r in rows):8.3f} ms  total")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for dim, default in (("B", 8), ("T", 4096), ("H", 16), ("K", 128), ("V", 128)):
        p.add_argument(f"--{dim}", type=int, default=default)
    a = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; this script profiles GPU kernels")
    for name, fn, per_channel in (("kda", chunk_kda, True), ("gdn", chunk_gated_delta_rule, False)):
        profile_op(name, fn, per_channel, a.B, a.T, a.H, a.K, a.V)


if __name__ == "__main__":
    main()
