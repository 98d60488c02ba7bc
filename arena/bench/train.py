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

from __future__ import annotations

import argparse
import gc
import math
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from arena.bench.train_kernels import kernel_specs, make_kernel_inputs

DEFAULT_MIXERS = ("kda", "gdn", "mamba2", "mla", "mla_nope", "hybrid_3to1")
# rows that are a model layout rather than one mixer: name -> (conf/model choice, the `mixer=` choice)
LAYOUT_ROWS = {"hybrid_3to1": ("hybrid_3to1", "kda")}
ROW_MODEL = "kimi_2l"  # the model of every single-mixer row
PASSTHROUGH = ("model", "mixer", "train", "task")  # `<group>.<key>=value` goes to the run config
LOOPS = ("auto", "trainer", "plain")
BENCH_KEYS = ("mixers", "seq_lens", "batch_size", "task", "steps", "warmup", "loop", "out")
CUDA_DEFAULTS = {"seq_lens": [256, 1024, 2048], "batch_size": 64, "steps": 30, "warmup": 10}
CPU_DEFAULTS = {"seq_lens": [64], "batch_size": 4, "steps": 10, "warmup": 3}  # the whole command in seconds
CPU_D_MODEL = 64
PREFIX = "arena.bench train"


@dataclass
class Settings:
    mixers: list[str]
    seq_lens: list[int]
    batch_size: int
    task: str
    steps: int
    warmup: int
    loop: str
    out: Path
    cuda: bool  # whether the runs go to a CUDA device (decides the defaults)
    overrides: list[str] = field(default_factory=list)  # passed through to the run config, in order


# ------------------------------------------------------------------------------------------------ arguments

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"bench keys ({', '.join(BENCH_KEYS)}) or {'/'.join(p + '.*' for p in PASSTHROUGH)} "
                             "overrides of the run config")


def parse_items(items: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Split key=value items into bench settings (values parsed as YAML) and run-config overrides.

    Raises a one-line ValueError for an item without `=`, an unknown key or a value of the wrong kind.
    """
    from omegaconf import OmegaConf

    bench, passthrough = {}, []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not key=value")
        group, dot, _ = key.lstrip("+~").partition(".")
        if dot and group in PASSTHROUGH:
            passthrough.append(item)
            continue
        if key not in BENCH_KEYS:
            raise ValueError(f"unknown key {key!r}; valid keys: {', '.join(BENCH_KEYS)}, or "
                             f"{', '.join(p + '.<key>' for p in PASSTHROUGH)} for the run config")
        try:
            bench[key] = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={value}"]))["value"]
        except Exception:
            raise ValueError(f"{key}={value!r} cannot be parsed; write lists as [a,b]") from None
    for key in ("mixers", "seq_lens"):
        if key in bench and not isinstance(bench[key], list):
            bench[key] = [bench[key]]
    if "mixers" in bench:
        bench["mixers"] = [str(m) for m in bench["mixers"]]
        if not bench["mixers"]:
            raise ValueError("mixers=[] is empty; name at least one mixer")
    if "seq_lens" in bench:
        bench["seq_lens"] = [_positive("seq_lens", v) for v in bench["seq_lens"]] or _empty("seq_lens")
    for key in ("batch_size", "steps"):
        if key in bench:
            bench[key] = _positive(key, bench[key])
    if "warmup" in bench and (not _is_int(bench["warmup"]) or bench["warmup"] < 0):
        raise ValueError(f"warmup={bench['warmup']!r} must be an integer >= 0")
    if "loop" in bench and bench["loop"] not in LOOPS:
        raise ValueError(f"loop={bench['loop']!r} is not valid; choose one of: {', '.join(LOOPS)}")
    for key in ("task", "out"):
        if key in bench:
            bench[key] = str(bench[key])
    return bench, passthrough


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(key: str, value) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{key}: {value!r} must be a positive integer")
    return value


def _empty(key: str):
    raise ValueError(f"{key}=[] is empty; give at least one value")


def _override_value(overrides: list[str], key: str) -> str | None:
    """The last value given to `key` among the pass-through overrides, or None."""
    values = [item.partition("=")[2] for item in overrides if item.partition("=")[0] == key]
    return values[-1] if values else None


def settings_from(items: list[str], cuda_available: bool) -> Settings:
    """Parse and check the command line; the defaults depend on whether the runs go to CUDA."""
    bench, passthrough = parse_items(items)
    device = _override_value(passthrough, "train.device") or "auto"
    cuda = cuda_available if device == "auto" else device.startswith("cuda")
    defaults = CUDA_DEFAULTS if cuda else CPU_DEFAULTS
    s = Settings(mixers=bench.get("mixers", list(DEFAULT_MIXERS)), seq_lens=bench.get("seq_lens", defaults["seq_lens"]),
                 batch_size=bench.get("batch_size", defaults["batch_size"]), task=bench.get("task", "palindrome"),
                 steps=bench.get("steps", defaults["steps"]), warmup=bench.get("warmup", defaults["warmup"]),
                 loop=bench.get("loop", "auto"), out=Path(bench.get("out", "results/bench")), cuda=cuda,
                 overrides=passthrough)
    from arena.run import group_options

    allowed = group_options("mixer") + list(LAYOUT_ROWS)
    for name in s.mixers:
        if name not in allowed:
            raise ValueError(f"mixers: {name!r} is not valid; choose from {', '.join(allowed)}")
    if s.task not in group_options("task"):
        raise ValueError(f"task={s.task!r} is not valid; choose one of: {', '.join(group_options('task'))}")
    return s


# ------------------------------------------------------------------------------------------------ run configs

def row_overrides(s: Settings, mixer: str, T: int) -> tuple[str, str, list[str]]:
    """(model choice, mixer choice, Hydra overrides) of one row; the user's overrides come last and win."""
    model, chosen = LAYOUT_ROWS.get(mixer, (ROW_MODEL, mixer))
    values = {"task.seq_len": T, "task.num_train": 0, "train.batch_size": s.batch_size}
    if s.task == "palindrome":
        values["task.vocab_size"] = 16
    if not s.cuda:
        values["model.d_model"] = CPU_D_MODEL
    elif mixer in LAYOUT_ROWS:  # the layout at kimi_2l's width, so its layers are the single-mixer rows' layers
        values["model.d_model"] = 256
    given = {item.partition("=")[0] for item in s.overrides}
    fixed = [f"{k}={v}" for k, v in values.items() if k not in given]
    return model, chosen, [f"model={model}", f"mixer={chosen}", f"task={s.task}", *fixed, *s.overrides]


def compose_rows(s: Settings) -> list[dict]:
    """Compose and validate the run config of every row before anything is measured.

    Each row: mixer, T, config (resolved dict), specs (mixer specs per layout name), chosen. Builds every Run once
    on the CPU, so bad values (impossible shapes, unknown names) fail here in one line, not after an hour.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from arena.config_utils import one_line
    from arena.run import CONF, mixer_specs  # arena.run registers the config schemas (arena.config_schema)

    rows = []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name="bench_train"):
        for mixer in s.mixers:
            for T in s.seq_lens:
                model, chosen, overrides = row_overrides(s, mixer, T)
                try:  # Hydra checks group choices, keys and types against the schemas
                    cfg = compose(config_name="config", overrides=overrides)
                except Exception as exc:  # its messages span lines: one_line keeps the substance in one
                    raise ValueError(one_line(exc, overrides=overrides)) from None
                config = OmegaConf.to_container(cfg, resolve=True)
                rows.append({"mixer": mixer, "T": T, "model": model, "config": config,
                             "specs": mixer_specs(cfg, chosen), "chosen": chosen})
    return rows


def check_rows(rows: list[dict]) -> None:
    """Build each row's Run on the CPU (a small model: milliseconds) so its ConfigErrors surface up front."""
    from arena.train import Run

    for row in rows:
        config = {**row["config"], "train": {**row["config"]["train"], "device": "cpu"}}
        Run(config, row["specs"], row["chosen"])


# ------------------------------------------------------------------------------------------------------ timing

def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def window_ms(step, start: int, count: int, device) -> float:
    """Mean ms of `step(i)` for i in start .. start + count - 1, between two synchronizes."""
    _sync(device)
    t0 = time.perf_counter()
    for i in range(start, start + count):
        step(i)
    _sync(device)
    return (time.perf_counter() - t0) * 1e3 / count


def median_ms(fn, reps: int, warmup: int, device) -> float:
    """Median ms of `fn()` over `reps` calls after `warmup` untimed ones (CUDA events on CUDA)."""
    import torch

    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    _sync(device)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    _sync(device)
    return statistics.median(start.elapsed_time(end) for start, end in events)


# ------------------------------------------------------------------------------------------------- the steps

class Diverged(RuntimeError):
    """The loss became non-finite (the old loop would have stopped the run there)."""


def _plain_step(run, model, optimizer, step: int, batch=None) -> None:
    """The loop body of arena/train.py at d3f81f9: one optimizer step, with its host syncs and .item()s.
    `batch` None generates the step's batch (task.generate(B, [seed, 3, step])) as that loop did."""
    import torch
    import torch.nn.functional as F

    from arena.evaluate import scored_logits
    from arena.train import lr_at

    cfg, device, amp = run.train_cfg, run.device, run.amp
    if batch is None:
        batch = run.task.generate(cfg.batch_size, [cfg.seed, 3, step])
    batch = batch.to(device)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        logits, targets = scored_logits(model, batch)
    loss = F.cross_entropy(logits, targets)
    if not torch.isfinite(loss):
        raise Diverged(f"loss became {loss.item()} at step {step}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    _sync(device)
    loss.item()
    (logits.argmax(-1) == targets).sum().item()


class PlainSteps:
    """Steps of the old loop: `full(i)` generates batch i, `reused(i)` steps on one batch already on the device."""
    loop = "plain"

    def __init__(self, run):
        from arena.train import make_optimizer

        self.run, self.model = run, run.model
        self.optimizer = make_optimizer(self.model, run.train_cfg)
        self.fixed = None

    def full(self, step: int) -> None:
        _plain_step(self.run, self.model, self.optimizer, step)

    def reused(self, step: int) -> None:
        if self.fixed is None:
            cfg = self.run.train_cfg
            self.fixed = self.run.task.generate(cfg.batch_size, [cfg.seed, 3, step]).to(self.run.device)
        _plain_step(self.run, self.model, self.optimizer, step, self.fixed)

    def close(self) -> None:
        pass


class TrainerSteps:
    """Steps of arena.train.Trainer on arena.train.batch_stream batches (prefetched, no host sync)."""
    loop = "trainer"

    def __init__(self, run):
        import arena.train as train

        self.trainer = train.Trainer(run)
        model = getattr(self.trainer, "model", None)
        self.model = run.model if model is None else model
        self.stream = train.batch_stream(run, start_step=0)
        self.fixed = None

    def full(self, step: int) -> None:
        self.trainer.step(next(self.stream), step)

    def reused(self, step: int) -> None:
        if self.fixed is None:
            self.fixed = next(self.stream)
        self.trainer.step(self.fixed, step)

    def close(self) -> None:
        close = getattr(self.stream, "close", None)
        if close is not None:
            close()  # stops the stream's background workers


def has_trainer() -> bool:
    import arena.train as train

    return hasattr(train, "Trainer") and hasattr(train, "batch_stream")


def pick_loop(requested: str) -> str:
    if requested == "auto":
        return "trainer" if has_trainer() else "plain"
    if requested == "trainer" and not has_trainer():
        raise ValueError("loop=trainer but this arena.train has no Trainer / batch_stream; use loop=plain or auto")
    return requested


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


# ----------------------------------------------------------------------------------------------------- output

COLUMNS = [("mixer", "mixer"), ("T", "T"), ("B", "B"), ("step_ms", "ms/step"), ("step_nogen_ms", "ms/step no gen"),
           ("gen_ms", "gen ms"), ("tokens_per_s", "tokens/s"), ("peak_memory_bytes", "peak MiB"),
           ("mixer_fwdbwd_ms", "mixers fwd+bwd ms"), ("kernel_fwdbwd_ms", "kernels fwd+bwd ms"), ("loop", "loop"),
           ("note", "note")]


def _cell(key: str, value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    if key == "peak_memory_bytes":
        return f"{value / 2**20:.0f}"
    if key == "tokens_per_s":
        return f"{value:,.0f}"
    if key.endswith("_ms"):
        return f"{value:.0f}" if value >= 1000 else f"{value:.3g}"
    return str(value).replace("|", "/")


def format_table(rows: list[dict]) -> str:
    """A Markdown table, one line per (mixer, T)."""
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(key, r[key]) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': a file-name-safe device tag."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def write_csv(rows: list[dict], path: Path) -> None:
    """Atomically (a temporary file, then os.replace): a reader never sees half a table."""
    import csv
    import io

    from arena.provenance import write_atomic

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


def write_plot(rows: list[dict], path: Path, title: str) -> None:
    """Left: tokens/s against T per mixer. Right: at the largest T, per mixer, the step (with and without
    generation), the mixer layers and their kernels (fwd+bwd) and the batch generation, in ms."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    mixers = list(dict.fromkeys(r["mixer"] for r in rows))
    lengths = sorted({r["T"] for r in rows})
    for i, mixer in enumerate(mixers):
        points = sorted((r["T"], r["tokens_per_s"]) for r in rows if r["mixer"] == mixer
                        and math.isfinite(r["tokens_per_s"]))
        if points:
            left.plot(*zip(*points), marker="o", color=f"C{i}", label=mixer)
    left.set_xscale("log", base=2)
    left.set_xticks(lengths, [str(T) for T in lengths])
    left.set_yscale("log")
    left.set_xlabel("sequence length T")
    left.set_ylabel("tokens / s (full training step)")
    left.grid(True, which="both", alpha=0.3)
    if left.lines:
        left.legend(fontsize="small")
    T = lengths[-1]
    parts = [("step_ms", "step"), ("step_nogen_ms", "step, no gen"), ("mixer_fwdbwd_ms", "mixer layers fwd+bwd"),
             ("kernel_fwdbwd_ms", "kernels fwd+bwd"), ("gen_ms", "batch generation")]
    at_T = {r["mixer"]: r for r in rows if r["T"] == T}
    width = 0.8 / len(parts)
    for j, (key, label) in enumerate(parts):
        values = [at_T[m][key] if m in at_T else math.nan for m in mixers]
        right.bar([i + (j - (len(parts) - 1) / 2) * width for i in range(len(mixers))],
                  [v if math.isfinite(v) else 0.0 for v in values], width, label=label, color=f"C{j}")
    right.set_xticks(range(len(mixers)), mixers)
    right.set_ylabel("ms")
    right.set_title(f"T = {T}")
    right.grid(True, axis="y", alpha=0.3)
    right.legend(fontsize="small")
    fig.suptitle(title)
    try:
        from arena.provenance import save_figure_atomic
    except ImportError:  # an older arena (this file also runs inside a baseline checkout): a plain save
        fig.savefig(path, format="png", dpi=110)
        return
    save_figure_atomic(fig, path, dpi=110)


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
        print(f"{PREFIX}: {row['mixer']} T={row['T']}: {_cell('step_ms', result['step_ms'])} ms/step, "
              f"{_cell('tokens_per_s', result['tokens_per_s'])} tokens/s"
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
        check_rows(rows)
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
