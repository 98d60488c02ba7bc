"""`python -m arena.bench kernels`: time the KDA / GDN / SSD kernels against fla and SDPA attention on one CUDA GPU.

    python -m arena.bench kernels                                   # bf16, H=16, D=128, B*T=32768, T=2048,4096,16384
    python -m arena.bench kernels --lengths 4096 --ops kda --no-torch --rep-ms 2000
    python -m arena.bench kernels --out /tmp/bench                  # CSV + PNG go there (default results/bench/)

For each T (B = tokens // T) and each implementation it times the forward (under no_grad) and the
forward+backward (o.backward(dO), grads of every input reset to None between reps) with
`triton.testing.do_bench(..., return_mode="median")`, which also flushes L2 between reps. Implementations:
  kda, gdn:  arena.triton (backend="triton"), arena.torch (the chunked PyTorch path), fla (fla-core's
             chunk_kda / chunk_gated_delta_rule with a precomputed log-decay g: no in-kernel gate or l2norm)
  ssd:       Mamba2's SSD: arena.triton, arena.torch, fla (chunk_simple_gla) and mamba_ssm
             (mamba_chunk_scan_combined) on the same q, k, v, g; arena/bench/kernels_ssd.py
  sdpa:      torch scaled_dot_product_attention(is_causal=True), [B, H, T, D], pinned to the FLASH_ATTENTION
             (FA2) and to the CUDNN_ATTENTION backend, one row each
An implementation that cannot run (fla not installed, Triton path missing, out of memory, ...) becomes a row
of NaN with the reason in `note`; the run goes on. fla 0.6 refuses GDN's backward on Hopper with Triton < 3.7.1
(fla#640, the GPU image has 3.6): --fla-bypass-640 times it anyway, and the row notes its gradients are untrusted.
Inputs follow fla's tests: q, k L2-normalized per head, v ~ N(0, 1), g = logsigmoid(N(0, 1)) in fp32 (mean
per-step log-decay about -0.8, rarely below -5), beta = sigmoid(N(0, 1)); the same seed gives every
implementation of one (op, T) the same tensors, and each output is compared with the first one computed
(arena.torch, else fla, else arena.triton) as a check.
Peak memory: after the timings, one more forward+backward per cell records the bytes it allocated beyond its inputs
(torch.cuda.max_memory_allocated over memory_allocated before it): column fwdbwd_peak_bytes, and in the table
beside fla's as a ratio.
Memory floors: arena/bench/floors.py; the table, CSV and plot: arena/bench/report.py.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import sys
from datetime import datetime
from pathlib import Path

from arena.bench import report

OPS = ("kda", "gdn", "ssd", "sdpa")
# Run order: the first implementation that produces an output is the reference the others are compared with,
# so the fp32-computing torch path goes first. The table sorts rows by IMPLS order instead.
RUN_ORDER = {"kda": ("arena.torch", "fla", "arena.triton"), "gdn": ("arena.torch", "fla", "arena.triton"),
             "ssd": ("arena.torch", "fla", "mamba_ssm", "arena.triton"), "sdpa": ("sdpa.flash", "sdpa.cudnn")}
DTYPES = ("bf16", "fp16", "fp32")
COPY_BYTES = 2 << 30  # the bandwidth probe: a 2 GiB device-to-device copy


class Unavailable(Exception):
    """This implementation cannot run here; the message says why (recorded in the row, not raised)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", default="bf16", choices=DTYPES, help="q, k, v, beta dtype (g is always fp32)")
    parser.add_argument("--heads", type=int, default=16, help="H")
    parser.add_argument("--dim", type=int, default=128, help="head dim K = V (attention: D)")
    parser.add_argument("--tokens", type=int, default=32768, help="B * T, fixed across lengths")
    parser.add_argument("--lengths", default="2048,4096,16384", help="comma-separated T values; each divides --tokens")
    parser.add_argument("--ops", default="kda,gdn,ssd,sdpa", help=f"comma-separated subset of {','.join(OPS)}")
    parser.add_argument("--out", default="results/bench", help="folder for the CSV and PNG (created if missing)")
    parser.add_argument("--no-torch", action="store_true", help="skip the (slow) arena torch chunked path")
    parser.add_argument("--torch-max-t", type=int, default=16384, help="skip the torch path above this T")
    parser.add_argument("--torch-chunk", type=int, default=64, help="chunk size of the torch path (a power of 2)")
    parser.add_argument("--fla-bypass-640", action="store_true",
                        help="time fla's gated backward even where fla refuses it (Hopper + Triton < 3.7.1, fla#640)")
    parser.add_argument("--warmup-ms", type=float, default=100.0, help="do_bench warmup per measurement")
    parser.add_argument("--rep-ms", type=float, default=500.0, help="do_bench timed budget per measurement")
    parser.add_argument("--seed", type=int, default=0)


def check_arguments(args: argparse.Namespace) -> None:
    """Turn the raw strings into lists and reject impossible settings with a one-line ValueError."""
    args.lengths = _int_list("--lengths", args.lengths)
    args.ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    bad = [op for op in args.ops if op not in OPS]
    if bad or not args.ops:
        raise ValueError(f"--ops {','.join(bad) or '(empty)'} is not valid; choose from {','.join(OPS)}")
    for name in ("heads", "dim", "tokens", "torch_max_t", "torch_chunk"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.torch_chunk & (args.torch_chunk - 1):
        raise ValueError(f"--torch-chunk must be a power of 2, got {args.torch_chunk}")
    if not (args.warmup_ms > 0 and args.rep_ms > 0):
        raise ValueError("--warmup-ms and --rep-ms must be > 0")
    for T in args.lengths:
        if args.tokens % T:
            raise ValueError(f"--lengths: T={T} does not divide --tokens {args.tokens} (B = tokens / T)")


def _int_list(flag: str, text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{flag} must be comma-separated positive integers, got {text!r}")
    return values


def cuda_problem() -> str | None:
    """None when a CUDA GPU is usable, else why not (for the one-line error)."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return f"torch.cuda.is_available() is False with torch {torch.__version__}, CUDA {torch.version.cuda}"
    return None


# ----------------------------------------------------------------------------------------------- implementations

def _arena_op(op: str):
    if op == "kda":
        from arena.kernels.kda import chunk_kda
        return chunk_kda
    from arena.kernels.gated_delta_rule import chunk_gated_delta_rule
    return chunk_gated_delta_rule


def _fla_op(op: str):
    if importlib.util.find_spec("fla") is None:
        raise Unavailable("fla-core is not installed (pip install fla-core)")
    try:
        if op == "kda":
            from fla.ops.kda import chunk_kda as fn
        else:
            from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fn
    except Exception as exc:  # a broken fla install must not end the benchmark
        raise Unavailable(f"importing fla failed: {_short(exc)}") from None
    return fn


def _bypass_fla_hopper_guard() -> str:
    """fla 0.6 refuses its gated backward (GDN's chunk_bwd_dqkwg) on Hopper with Triton 3.4-3.7.0, which can
    miscompile it (fla#640). --fla-bypass-640 lifts that refusal so fla's speed can still be timed; its
    gradients may then be wrong, which a timing does not care about, and the row says so."""
    try:
        import fla.ops.common.chunk_o as chunk_o
    except Exception as exc:
        return f"#640 guard not found ({_short(exc)})"
    if not hasattr(chunk_o, "TRITON_ABOVE_3_7_1"):
        return "#640 guard not found in this fla version"
    chunk_o.TRITON_ABOVE_3_7_1 = True
    return "fla#640 guard bypassed: timed, gradients not trusted"


def _triton_status() -> tuple[bool, str]:
    try:
        from arena.kernels.triton_delta import triton_status
    except ImportError as exc:
        return False, f"arena.kernels.triton_delta cannot be imported: {_short(exc)}"
    return triton_status()


def resolve(op: str, impl: str, T: int, args: argparse.Namespace):
    """(call, detail): call(inputs) -> o for one implementation; raises Unavailable with the reason."""
    if op == "ssd":
        from arena.bench.kernels_ssd import resolve_ssd

        return resolve_ssd(impl, T, args)
    if impl == "arena.triton":
        ok, reason = _triton_status()
        if not ok:
            raise Unavailable(f"arena Triton path: {reason}")
        fn = _arena_op(op)
        return (lambda x: fn(x["q"], x["k"], x["v"], x["g"], x["beta"], backend="triton")[0]), ""
    if impl == "arena.torch":
        if args.no_torch:
            raise Unavailable("skipped (--no-torch)")
        if T > args.torch_max_t:
            raise Unavailable(f"skipped (T > --torch-max-t {args.torch_max_t})")
        fn, C = _arena_op(op), args.torch_chunk
        return (lambda x: fn(x["q"], x["k"], x["v"], x["g"], x["beta"], backend="torch", chunk_size=C)[0]), f"C={C}"
    if impl == "fla":
        fn = _fla_op(op)
        detail = _bypass_fla_hopper_guard() if args.fla_bypass_640 else ""
        # The defaults: g is our precomputed log-decay, no gate / l2norm / sigmoid inside the kernel.
        return (lambda x: fn(x["q"], x["k"], x["v"], x["g"], x["beta"])[0]), detail
    if impl.startswith("sdpa."):
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = {"sdpa.flash": SDPBackend.FLASH_ATTENTION, "sdpa.cudnn": SDPBackend.CUDNN_ATTENTION}[impl]

        def call(x):
            with sdpa_kernel(backend):  # pinned: raises if this backend cannot take the inputs
                return F.scaled_dot_product_attention(x["q"], x["k"], x["v"], is_causal=True)

        return call, backend.name
    raise ValueError(f"unknown implementation {impl!r}")


def make_inputs(op: str, B: int, T: int, H: int, D: int, dtype, device, seed: int) -> dict:
    """Leaf tensors that require grad, the same for every implementation of one (op, T, seed)."""
    import torch
    import torch.nn.functional as F

    if op == "ssd":
        from arena.bench.kernels_ssd import make_ssd_inputs

        return make_ssd_inputs(B, T, H, D, dtype, device, seed)
    gen = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape):
        return torch.randn(shape, generator=gen, device=device, dtype=torch.float32)

    if op == "sdpa":
        x = {name: randn(B, H, T, D).to(dtype) for name in ("q", "k", "v")}
    else:
        x = {
            "q": F.normalize(randn(B, T, H, D), dim=-1).to(dtype),
            "k": F.normalize(randn(B, T, H, D), dim=-1).to(dtype),
            "v": randn(B, T, H, D).to(dtype),
            "g": F.logsigmoid(randn(B, T, H, D) if op == "kda" else randn(B, T, H)),  # fp32, < 0
            "beta": torch.sigmoid(randn(B, T, H)).to(dtype),
        }
    for t in x.values():
        t.requires_grad_(True)
    x["do"] = randn(B, H, T, D).to(dtype) if op == "sdpa" else randn(B, T, H, D).to(dtype)
    return x


# ---------------------------------------------------------------------------------------------------- timing

def time_forward(call, x: dict, args) -> float:
    import torch
    from triton.testing import do_bench

    def fn():
        with torch.no_grad():
            call(x)

    return do_bench(fn, warmup=args.warmup_ms, rep=args.rep_ms, return_mode="median")


def time_forward_backward(call, x: dict, args) -> float:
    from triton.testing import do_bench

    leaves = [t for t in x.values() if t.requires_grad]

    def fn():
        call(x).backward(x["do"])

    return do_bench(fn, warmup=args.warmup_ms, rep=args.rep_ms, grad_to_none=leaves, return_mode="median")


def peak_extra_bytes(call, x: dict) -> int:
    """Bytes one forward+backward allocates beyond what was allocated before it (its peak): the saved activations,
    the output, the gradients and every scratch buffer; the inputs themselves are not counted."""
    import torch

    leaves = [t for t in x.values() if t.requires_grad]
    for t in leaves:
        t.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    call(x).backward(x["do"])
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    for t in leaves:
        t.grad = None
    return peak


def measure_bandwidth(device, args) -> float:
    """Bytes per second of a large device-to-device copy (read + write), median of do_bench."""
    import torch
    from triton.testing import do_bench

    def copy_ms() -> float:  # the 4 GiB of buffers die with this frame
        src = torch.empty(COPY_BYTES, dtype=torch.uint8, device=device).random_(0, 255)
        dst = torch.empty_like(src)
        return do_bench(lambda: dst.copy_(src), warmup=args.warmup_ms, rep=args.rep_ms, return_mode="median")

    ms = copy_ms()
    torch.cuda.empty_cache()
    return 2 * COPY_BYTES / (ms * 1e-3)


def measure_cell(op: str, impl: str, T: int, args, device, refs: dict) -> dict:
    """One row: median ms of forward and forward+backward, or NaN with the reason in `note`."""
    import torch

    from arena.testing import rel_rms_error

    B, H, D = args.tokens // T, args.heads, args.dim
    row = {"op": op, "impl": impl, "T": T, "B": B, "H": H, "D": D, "dtype": args.dtype,
           "g_dtype": "" if op == "sdpa" else "fp32", "fwd_ms": math.nan, "fwdbwd_ms": math.nan,
           "fwdbwd_peak_bytes": math.nan, "o_rel_rms": math.nan, "o_ref": "", "detail": "", "note": ""}
    try:
        call, row["detail"] = resolve(op, impl, T, args)
    except Unavailable as exc:
        row["note"] = str(exc)
        return row
    notes, x, ran = [], None, False
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    try:
        x = make_inputs(op, B, T, H, D, dtype, device, args.seed)
        with torch.no_grad():
            o = call(x)  # also compiles / autotunes outside the timed region
        torch.cuda.synchronize()
        ran = True
        if not torch.isfinite(o).all():
            notes.append("non-finite output")
        if refs:
            row["o_ref"], ref = next(iter(refs.items()))
            row["o_rel_rms"] = rel_rms_error(ref, o)
        else:
            refs[impl] = o
        del o
        row["fwd_ms"] = time_forward(call, x, args)
    except Exception as exc:
        notes.append(f"fwd: {_short(exc)}")
    if ran:  # a call that cannot run at all (bad backend, no kernel) would only fail again
        try:
            row["fwdbwd_ms"] = time_forward_backward(call, x, args)
            row["fwdbwd_peak_bytes"] = peak_extra_bytes(call, x)
        except Exception as exc:
            notes.append(f"fwd+bwd: {_short(exc)}")
    row["note"] = "; ".join(notes)
    del x
    _free()
    return row


def _short(exc: BaseException) -> str:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return "out of memory"
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    if "#640" in text:  # fla's own refusal on Hopper + Triton < 3.7.1: say how to time it anyway
        return "fla refuses its gated backward on Hopper with this Triton (fla#640); rerun with --fla-bypass-640"
    return text if len(text) <= 160 else text[:157] + "..."


def _free() -> None:
    import torch

    gc.collect()
    torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------------- run

def run(args: argparse.Namespace) -> int:
    """Measure every cell, print the table, write CSV + PNG. Arguments already checked; CUDA present."""
    import pandas as pd
    import torch
    from tqdm import tqdm

    from arena.provenance import environment

    device = torch.device("cuda")
    env = environment(device)
    name = env["device_name"]
    bandwidth = measure_bandwidth(device, args)
    print(f"device: {name}; copy bandwidth {bandwidth / 1e9:.0f} GB/s (2 GiB device-to-device, read + write)",
          file=sys.stderr, flush=True)
    cells = [(op, T, impl) for op in args.ops for T in args.lengths for impl in RUN_ORDER[op]]
    rows, refs, group = [], {}, None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.now().strftime('%Y-%m-%d_%H%M%S')}_kernels_{report.slug(name)}"
    partial = out / f"{stem}.partial.csv"  # the rows so far, so a run cut off by a time limit keeps what it measured
    with tqdm(cells, desc="kernels", unit="cell", file=sys.stderr, dynamic_ncols=True) as bar:
        for op, T, impl in bar:
            if (op, T) != group:  # a new (op, T): drop the previous reference output
                group, refs = (op, T), {}
                _free()
            bar.set_postfix_str(f"{op} {impl} T={T}")
            rows.append(measure_cell(op, impl, T, args, device, refs))
            row = rows[-1]  # one line per cell as it lands (first calls compile and autotune: minutes for some)
            tqdm.write(f"{op} {impl} T={T}: fwd {row['fwd_ms']:.3f} ms, fwd+bwd {row['fwdbwd_ms']:.3f} ms"
                       + (f" ({row['note']})" if row["note"] else ""), file=sys.stderr)
            report.write_csv(pd.DataFrame(rows), partial)
    refs = {}
    _free()
    frame = report.derive(pd.DataFrame(rows), bandwidth)
    meta = report.metadata_of(env, bandwidth)
    for key, value in meta.items():
        frame[key] = value
    settings = (f"{args.dtype} q/k/v/beta, fp32 g, H={args.heads}, K=V={args.dim}, B*T={args.tokens}; "
                f"do_bench median, warmup {args.warmup_ms:g} ms, rep {args.rep_ms:g} ms")
    print(report.header(meta, settings))
    print(report.format_table(frame))
    for line in report.goal_lines(frame):
        print(line)
    csv_path, png_path = out / f"{stem}.csv", out / f"{stem}.png"
    report.write_csv(frame, csv_path)
    report.write_plot(frame, png_path, f"{name} · {args.dtype}, H={args.heads}, K=V=D={args.dim}, "
                                       f"B·T={args.tokens}")
    partial.unlink(missing_ok=True)
    print(f"wrote {csv_path} and {png_path}")
    return 0


def main(args: argparse.Namespace) -> int:
    """Entry point of the `kernels` subcommand: one-line errors (exit 2) for bad arguments or no GPU."""
    try:
        check_arguments(args)
    except ValueError as exc:
        print(f"arena.bench kernels: error: {exc}", file=sys.stderr)
        return 2
    problem = cuda_problem()
    if problem:
        print(f"arena.bench kernels needs a CUDA GPU; none is available ({problem})", file=sys.stderr)
        return 2
    if importlib.util.find_spec("triton") is None:
        print("arena.bench kernels needs triton (its do_bench times every cell); pip install triton", file=sys.stderr)
        return 2
    return run(args)

