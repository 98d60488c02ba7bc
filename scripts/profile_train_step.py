"""Where a training step's GPU time goes: torch.profiler over a few Trainer steps, kernels grouped and ranked.

    python scripts/profile_train_step.py [--mixers kda,gdn,...] [--seq-len 1024] [--steps 5] [--top 12]

Kimi's 2-layer model (hybrid_3to1: its 4-layer layout at d_model 256), palindrome, B = 64, bf16, the fast path
(arena.train.Trainer). After 10 warm-up steps it profiles `--steps` steps and prints, per mixer, the step's
GPU time, the kernels' share by group (sequence kernels, fused ops, GEMMs, optimizer, other element-wise) and the
top kernels by total time, so a missed speed goal comes with its profile. GPU only.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from check_fast_loop import build  # noqa: E402

from arena.train import Trainer, batch_stream  # noqa: E402

GROUPS = [  # (group, substrings of kernel names), first match wins
    ("sequence kernel", ("chunk", "intra", "state_", "kda_", "rev_cumsum", "ssd_", "flash", "fmha", "attention",
                         "cudnn", "sdpa")),
    ("fused ops", ("conv_fwd", "conv_bwd", "gated_rmsnorm", "decay_gate")),
    ("gemm", ("gemm", "cutlass", "sm90_xmma", "nvjet", "cublas", "matmul")),
    ("optimizer", ("adam", "multi_tensor", "foreach", "norm_kernel")),
]


def group_of(name: str) -> str:
    low = name.lower()
    for group, keys in GROUPS:
        if any(k in low for k in keys):
            return group
    return "other element-wise / copies"


def warm_trainer(mixer: str, seq_len: int):
    """(Trainer, batch stream) of the fast path after 10 steps: Triton compiled, caches and allocator warm."""
    run = build(mixer, seq_len, 100, plain=False)
    trainer, batches = Trainer(run), batch_stream(run)
    for step in range(10):
        trainer.step(next(batches), step)
    torch.cuda.synchronize()
    return trainer, batches


def host_profile(args) -> int:
    """Where the host's time per step goes: cProfile over `--steps` Trainer steps after warm-up."""
    import cProfile
    import pstats
    import time

    for mixer in args.mixers.split(","):
        trainer, batches = warm_trainer(mixer, args.seq_len)
        start = time.perf_counter()
        for step in range(args.steps):
            trainer.step(next(batches), 10 + step)
        host = (time.perf_counter() - start) / args.steps * 1000
        torch.cuda.synchronize()
        wall = (time.perf_counter() - start) / args.steps * 1000
        profiler = cProfile.Profile()
        profiler.enable()
        for step in range(args.steps):
            trainer.step(next(batches), 10 + args.steps + step)
        profiler.disable()
        torch.cuda.synchronize()
        batches.close()
        print(f"\n## {mixer}, T={args.seq_len}: host {host:.2f} ms/step to queue, {wall:.2f} ms/step with the GPU")
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(args.top)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixers", default="kda,gdn,mamba2,mla,mla_nope,hybrid_3to1")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--host", action="store_true",
                        help="profile the host instead (cProfile of the steps, top functions by own time)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("profile_train_step: needs a CUDA device", file=sys.stderr)
        return 2
    if args.host:
        return host_profile(args)
    from torch.profiler import ProfilerActivity, profile

    for mixer in args.mixers.split(","):
        trainer, batches = warm_trainer(mixer, args.seq_len)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for step in range(args.steps):
                trainer.step(next(batches), 10 + step)
            torch.cuda.synchronize()
        batches.close()
        per_kernel: dict[str, float] = defaultdict(float)
        for event in prof.key_averages():
            if event.device_type.name == "CUDA" or getattr(event, "self_device_time_total", 0) > 0:
                us = getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)
                per_kernel[event.key] += us / args.steps / 1000  # ms per step
        total = sum(per_kernel.values())
        groups: dict[str, float] = defaultdict(float)
        for name, ms in per_kernel.items():
            groups[group_of(name)] += ms
        print(f"\n## {mixer}, T={args.seq_len}: GPU kernel time {total:.2f} ms/step")
        print(" | ".join(f"{g} {ms:.2f} ms ({100 * ms / total:.0f}%)" for g, ms in
                         sorted(groups.items(), key=lambda kv: -kv[1])))
        for name, ms in sorted(per_kernel.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {ms:7.3f} ms  {group_of(name)[:10]:10s}  {name[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
