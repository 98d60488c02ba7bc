"""`python -m arena.bench train [key=value ...]`: time the real training step, per mixer and sequence length.

    python -m arena.bench train                                     # kda gdn mamba2 mla mla_nope hybrid_3to1,
                                                                    # T = 256 1024 2048, B = 64 (CUDA)
    python -m arena.bench train mixers=[kda,gdn] seq_lens=[1024] steps=50 train.cuda_graphs=on
    python -m arena.bench train loop=plain                          # the old per-step-sync loop, for comparison
    python -m arena.bench.train ...                                 # the same, without the subcommand table

Options (key=value, Hydra style; an unknown key is a one-line error, exit code 2, before any work):
    mixers      [kda,gdn,mamba2,mla,mla_nope,hybrid_3to1]; a conf/mixer/ name runs conf/model/kimi_2l.yaml with
                mixer=<name>; hybrid_3to1 runs conf/model/hybrid_3to1.yaml (4 layers) at kimi_2l's
                d_model 256 on CUDA (`mixer.*` overrides reach its KDA layers)
    seq_lens    [256,1024,2048] on CUDA, [64] on CPU               batch_size  64 on CUDA, 4 on CPU
    task        palindrome (vocab_size 16); every task gets num_train 0 (fresh samples) and seq_len = T
    steps       30 timed steps (CPU: 10)                            warmup      10 untimed steps (CPU: 3; Triton,
                                                                                compile)
    loop        auto (trainer when arena.train has Trainer and batch_stream, else plain) | trainer | plain
    out         results/bench (the CSV and PNG go there)
    model.* mixer.* train.* task.*    passed to the composed run config (e.g. train.cuda_graphs=on); on CPU,
                model.d_model defaults to 64 so the whole command takes seconds
Without CUDA (or with train.device=cpu) the defaults shrink to B=4, T=64, d_model 64, 3 + 10 steps.

Per (mixer, T) row:
    step_ms         the full training step, batch generation included: warmup steps, then a synchronize, a
                    window of `steps` steps, a synchronize; the window's mean (a step that never waits for the
                    GPU only shows its speed over a window, so no per-step median here)
    step_nogen_ms   the same window on one batch reused (already on the device): the step without generation
    gen_ms          task.generate(B, seed) on the host alone, median of `steps` calls
    tokens_per_s    B * T / step_ms
    peak_memory     torch.cuda.max_memory_allocated over the timed steps (reset after the model is built); on CPU
                    the process's max RSS (`memory_kind` says which; RSS never goes down, so it only grows by row)
    mixer_fwdbwd_ms every block's `block.mixer` alone on a random [B, T, D] input (the dtype its norm feeds it),
                    autocast as in training, backward with a random upstream gradient; median over `steps` reps
                    per layer (CUDA events), summed over the layers
    kernel_fwdbwd_ms the sequence kernel each mixer calls, alone, on random inputs of the shapes and dtypes that
                    layer feeds it (`kernel_specs`: shapes from the mixer's H, K, V; dtypes and the other arguments
                    read off one intercepted forward, as they differ between versions): kda chunk_kda, gdn
                    chunk_gated_delta_rule, mamba2 chunk_ssd, mla sdpa_attention; same timing, summed over layers
    loop            trainer (arena.train.Trainer.step on batch_stream batches, no host sync) or plain (the loop
                    body of arena/train.py at d3f81f9: generate, .to, autocast, cross-entropy, isfinite, backward,
                    clip, AdamW, synchronize, .item())
A row that cannot run (out of memory, a kernel that fails) keeps NaN and says why in `note`; the run goes on.
Writes <out>/train_<device>_<stamp>.csv (device, torch, triton versions in columns) and a PNG beside it,
then prints the table. Tests: tests/bench/test_bench_train.py.
"""

# The parts live beside this file: train_config.py (arguments, run configs), train_steps.py (timing, the two loops),
# train_parts.py (per-component timings), train_kernels.py (the kernel calls), train_report.py (table, CSV, PNG).
# All of them must also run inside a checkout of an older arena (the benchmark's "before" table):
# scripts/gpu_train_speed.sh copies arena/bench/train*.py there.

from __future__ import annotations

import argparse
import gc
import math
import sys
from datetime import datetime

from arena.bench.train_config import (
    BENCH_KEYS,
    PASSTHROUGH,
    Settings,
    check_rows,
    compose_rows,
    parse_items,
    settings_from,
)
from arena.bench.train_parts import generation_ms, kernel_fwdbwd_ms, mixer_fwdbwd_ms, peak_memory
from arena.bench.train_report import cell, format_table, slug, write_csv, write_plot
from arena.bench.train_steps import PlainSteps, TrainerSteps, pick_loop, window_ms

PREFIX = "arena.bench train"


# ------------------------------------------------------------------------------------------------ arguments

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"bench keys ({', '.join(BENCH_KEYS)}) or {'/'.join(p + '.*' for p in PASSTHROUGH)} "
                             "overrides of the run config")


# ------------------------------------------------------------------------------------------------------ rows

def measure_row(row: dict, s: Settings, loop: str) -> dict:
    """One (mixer, T) row; an exception becomes NaN columns and a `note`."""
    import torch

    from arena.train import Run

    out = {"loop": loop, "mixer": row["mixer"], "model": row["model"], "T": row["T"], "B": math.nan,
           "layers": "", "d_model": math.nan, "n_layers": math.nan, "task": s.task, "precision": "",
           "steps": s.steps, "warmup": s.warmup, "step_ms": math.nan, "step_nogen_ms": math.nan, "gen_ms": math.nan,
           "tokens_per_s": math.nan, "peak_memory_bytes": math.nan, "memory_kind": "", "mixer_fwdbwd_ms": math.nan,
           "kernel_fwdbwd_ms": math.nan, "kernel_ops": "", "note": ""}
    run = steps = None
    try:
        run = Run(row["config"], row["specs"], row["chosen"])
        device, amp, B, T = run.device, run.amp, run.train_cfg.batch_size, run.task.seq_len
        out.update(B=B, T=T, layers="/".join(run.model.layer_names), d_model=run.model.cfg.d_model,
                   n_layers=len(run.model.layer_names), precision="fp32" if amp is None else str(amp).split(".")[-1])
        steps = (TrainerSteps if loop == "trainer" else PlainSteps)(run)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for i in range(s.warmup):
            steps.full(i)
        out["step_ms"] = window_ms(steps.full, s.warmup, s.steps, device)
        first = s.warmup + s.steps
        steps.reused(first)  # its batch is generated (and moved) here, outside the window
        out["step_nogen_ms"] = window_ms(steps.reused, first + 1, s.steps, device)
        out["peak_memory_bytes"], out["memory_kind"] = peak_memory(device)
        out["tokens_per_s"] = B * T / (out["step_ms"] * 1e-3)
        out["gen_ms"] = generation_ms(run, s.steps)
        component_warmup = min(max(1, s.warmup), 3)  # the training steps have compiled the same shapes already
        seed = run.train_cfg.seed
        out["mixer_fwdbwd_ms"] = mixer_fwdbwd_ms(steps.model, B, T, amp, device, s.steps, component_warmup, seed)
        out["kernel_fwdbwd_ms"], out["kernel_ops"] = kernel_fwdbwd_ms(steps.model, B, T, amp, device, s.steps,
                                                                      component_warmup, seed)
    except Exception as exc:
        out["note"] = _short(exc)
    finally:
        if steps is not None:
            steps.close()
        del steps, run
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _short(exc: BaseException) -> str:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return "out of memory"
    text = f"{type(exc).__name__}: {_first_line(exc)}"
    return text if len(text) <= 160 else text[:157] + "..."


# ------------------------------------------------------------------------------------------------------- main

def run(s: Settings, rows: list[dict], loop: str) -> int:
    """Measure every row, write the CSV and the PNG, print the table last."""
    import torch

    from arena.provenance import environment

    device = torch.device("cuda" if s.cuda else "cpu")
    env = environment(device)
    versions = env.get("versions", {})
    meta = {"device": env.get("device_name"), "torch": versions.get("torch") or torch.__version__,
            "triton": versions.get("triton"), "python": versions.get("python"), "cuda": env.get("cuda"),
            "git_sha": env.get("git_sha"), "git_dirty": env.get("git_dirty"), "started_at": env.get("started_at"),
            "overrides": " ".join(s.overrides), "timing": "step: window mean; components: median per layer, summed"}
    print(f"{PREFIX}: {meta['device']}; torch {meta['torch']}, triton {meta['triton']}; loop={loop}; "
          f"{len(rows)} rows, {s.warmup} warmup + {s.steps} timed steps each", file=sys.stderr, flush=True)
    results = []
    for row in rows:
        result = {**measure_row(row, s, loop), **meta}
        results.append(result)
        print(f"{PREFIX}: {row['mixer']} T={row['T']}: {cell('step_ms', result['step_ms'])} ms/step, "
              f"{cell('tokens_per_s', result['tokens_per_s'])} tokens/s"
              + (f" ({result['note']})" if result["note"] else ""), file=sys.stderr, flush=True)
    s.out.mkdir(parents=True, exist_ok=True)
    tag = slug(meta["device"]) if device.type == "cuda" else "cpu"
    stem = f"train_{tag}_{datetime.now().strftime('%Y-%m-%d_%H%M%S')}"
    csv_path, png_path = s.out / f"{stem}.csv", s.out / f"{stem}.png"
    write_csv(results, csv_path)
    write_plot(results, png_path, f"{meta['device']} · {s.task}, B={s.batch_size}, loop={loop}")
    print(f"{PREFIX}: wrote {csv_path} and {png_path}", file=sys.stderr)
    print(f"{meta['device']}; torch {meta['torch']}, triton {meta['triton']}; git {meta['git_sha']}"
          f"{' (dirty)' if meta['git_dirty'] else ''}; {s.task}, loop={loop}, {s.warmup} warmup + {s.steps} steps; "
          f"step = window mean, components = per-layer medians summed; peak memory: {results[0]['memory_kind']}")
    print(format_table(results))
    return 0


def main(args: argparse.Namespace) -> int:
    """Entry point of the `train` subcommand: bad keys or values are one line on stderr and exit code 2."""
    try:
        parse_items(args.overrides)  # unknown keys fail before torch is imported
        import torch

        s = settings_from(args.overrides, torch.cuda.is_available())
        loop = pick_loop(s.loop)
        rows = compose_rows(s)
        check_rows(rows, s.cuda)
    except ValueError as exc:
        print(f"{PREFIX}: error: {exc}", file=sys.stderr)
        return 2
    return run(s, rows, loop)


if __name__ == "__main__":
    from arena.bench.__main__ import OneLineParser  # noqa: I001  (also in an old checkout without the entry)

    parser = OneLineParser(prog="python -m arena.bench.train", description=__doc__.strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
