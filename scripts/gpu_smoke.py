"""GPU smoke check: every mixer gives the same output on CUDA as on CPU (fp32, TF32 off), and bf16 autocast runs.

    python scripts/gpu_smoke.py          # on a machine with a CUDA device; prints one line per mixer
"""

from __future__ import annotations

import torch

from arena.mixers import build_mixer, list_mixers
from arena.testing import rel_rms_error

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device"
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    for name in list_mixers():
        for impl in ("torch", "naive"):
            torch.manual_seed(0)
            mixer = build_mixer(name, 64, impl=impl)
            x = torch.randn(4, 100, 64)
            y_cpu, _ = mixer(x)
            mixer = mixer.cuda()
            y_gpu, state = mixer(x.cuda())
            err = rel_rms_error(y_cpu, y_gpu.cpu())
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y_bf16, _ = mixer(x.cuda())
                y_bf16.float().pow(2).mean().backward()
            bf16_err = rel_rms_error(y_gpu.float(), y_bf16.float())
            ok = err < 1e-4 and bf16_err < 5e-2 and all(torch.isfinite(p.grad).all() for p in mixer.parameters())
            print(f"{name:7s} {impl:6s} cuda-vs-cpu fp32 rel rms {err:.2e}  bf16-autocast rel rms {bf16_err:.2e}  "
                  f"{'ok' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
