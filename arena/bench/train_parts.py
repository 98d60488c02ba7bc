"""Per-component timings of `python -m arena.bench train` (arena/bench/train.py): the mixer layers alone, their
sequence kernels alone, the batch generation, and the peak memory.

    ms = mixer_fwdbwd_ms(model, B, T, amp, device, reps, warmup, seed)        # summed over the layers
    ms, ops = kernel_fwdbwd_ms(model, B, T, amp, device, reps, warmup, seed)  # ops: "chunk_kda x2 + ..."

Like arena/bench/train.py, this file must also run inside a checkout of an older arena (the benchmark's "before"
table). Run through `python -m arena.bench train`; tests: tests/bench/test_bench_train.py.
"""

from __future__ import annotations

import statistics
import time

from arena.bench.train_kernels import kernel_specs, make_kernel_inputs
from arena.bench.train_steps import median_ms

# ------------------------------------------------------------------------------------------------ components

def _blocks(model) -> list:
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper
    return list(model.blocks)


def _input_dtype(block, amp, device):
    """The dtype `block.mixer` receives in training: what its pre-norm returns under the step's autocast."""
    import torch

    D = block.mixer.d_model
    with torch.no_grad(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        return block.mixer_norm(torch.zeros(1, 1, D, device=device)).dtype


def mixer_fwdbwd_ms(model, B: int, T: int, amp, device, reps: int, warmup: int, seed: int) -> float:
    """Sum over layers of the median ms of block.mixer forward + backward on a random input."""
    import torch

    total = 0.0
    for layer, block in enumerate(_blocks(model)):
        mixer, autocast = block.mixer, torch.autocast(device.type, dtype=amp, enabled=amp is not None)
        gen = torch.Generator(device=device).manual_seed(seed + layer)
        x = torch.randn(B, T, mixer.d_model, generator=gen, device=device,
                        dtype=_input_dtype(block, amp, device)).requires_grad_(True)
        with autocast:
            y, _ = mixer(x)
        dy = torch.randn(y.shape, generator=gen, device=device, dtype=torch.float32).to(y.dtype)
        del y
        params = list(mixer.parameters())

        def fn(mixer=mixer, x=x, dy=dy, params=params, autocast=autocast):
            for p in params:
                p.grad = None
            x.grad = None
            with autocast:
                y, _ = mixer(x)
            y.backward(dy)

        total += median_ms(fn, reps, warmup, device)
        for p in params:
            p.grad = None
    return total


def kernel_fwdbwd_ms(model, B: int, T: int, amp, device, reps: int, warmup: int, seed: int) -> tuple[float, str]:
    """(sum over layers of the median ms of each layer's sequence kernel fwd + bwd, "op xN + ..." summary)."""
    import torch

    total, ops = 0.0, {}
    for layer, block in enumerate(_blocks(model)):
        autocast = torch.autocast(device.type, dtype=amp, enabled=amp is not None)
        for spec in kernel_specs(block.mixer, B, T, amp, _input_dtype(block, amp, device)):
            inputs = make_kernel_inputs(spec, device, seed + layer)
            with autocast:
                o = spec.call(inputs)
            gen = torch.Generator(device=device).manual_seed(seed + 1000 + layer)
            do = torch.randn(o.shape, generator=gen, device=device, dtype=torch.float32).to(o.dtype)
            del o

            def fn(spec=spec, inputs=inputs, do=do, autocast=autocast):
                for t in inputs.values():
                    t.grad = None
                with autocast:
                    o = spec.call(inputs)
                o.backward(do)

            total += median_ms(fn, reps, warmup, device)
            ops[spec.op] = ops.get(spec.op, 0) + 1
    return total, " + ".join(f"{op} x{n}" for op, n in ops.items())


def generation_ms(run, reps: int) -> float:
    """Median ms of task.generate(B, [seed, 3, i]) on the host, as the training loop calls it."""
    cfg, times = run.train_cfg, []
    for i in range(reps):
        t0 = time.perf_counter()
        run.task.generate(cfg.batch_size, [cfg.seed, 3, i])
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_memory(device) -> tuple[int, str]:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpu_process_max_rss"  # Linux: KiB
