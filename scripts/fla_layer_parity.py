"""Parity of arena's KDA, GDN and Mamba2 layers with flash-linear-attention's layers (issue 13, item 3).

    PYTHONPATH=/tmp/fla python scripts/fla_layer_parity.py                # GPU: every case, fp32 and bf16
    PYTHONPATH=/tmp/fla python scripts/fla_layer_parity.py --cpu-smoke    # CPU: the smoke cases, fp32, ~1 min
    ... --layers kda gdn --dtypes fp32 --arena-impls auto torch --seq-len 200 --batch 2 --bf16 cast --all-cases

What it checks, the intended differences and the GPU results: docs/parity.md.

fla is not a dependency of arena (the CI never imports it): put fla-core and flash-linear-attention 0.6.0 and
einops in a folder of their own and name it on PYTHONPATH, e.g.
    pip download --no-deps flash-linear-attention==0.6.0 fla-core==0.6.0 einops -d /tmp/fla_whl
    pip install --no-deps --target /tmp/fla /tmp/fla_whl/*.whl
transformers is not needed: fla.layers' __init__ imports it (through its attention layer), so without it the
script imports the three layer modules directly and gives fla's Mamba2 module a stand-in for the one thing it
takes from transformers (`transformers.utils.logging.get_logger`). Where mamba_ssm imports, fla's Mamba2 runs
its kernels, and (with causal_conv1d, which its forward needs) mamba_ssm's own Mamba2 is a second reference.

Each case is a layer and a config. The script builds arena's layer with `build_mixer` and the reference layer with
the matching constructor arguments (`fla_kwargs`, derived from arena's resolved config), fills every reference
parameter with NaN and copies arena's parameters in through one mapping per layer (`kda_mapping`, `gdn_mapping`,
`mamba2_mapping`; a comment per line names the term). A reference parameter left unset, an arena parameter left
unused or a shape that differs stops the case with the names. Both layers then run on the same x [B, T, D]
(T = 200 by default, not a multiple of the chunk size 64) and upstream gradient dy, and the script compares the
output, dL/dx and every parameter gradient (through the same mapping) with arena.testing.rel_rms_error (relative
RMS error, fla's metric).

The reference is always the fla (or mamba_ssm) layer in fp32, with TF32 off in torch and Triton's fp32 dots in
IEEE precision (TRITON_F32_DEFAULT=ieee, set before Triton is imported; --allow-tf32 leaves both alone).
Tolerances:
    fp32:  out and dx within 1e-5; parameter gradients within 1e-4 (the bar of arena's own fp32 kernel tests):
           A_log and dt_bias are a few numbers per head, each a sum over all B*T tokens, and the order of the
           fp32 additions alone moves them by several 1e-6
    bf16:  arena in bf16 against the fp32 reference: out 5e-3, dx 8e-3, parameter gradients 2e-2 (fla's own
           kernel-test bars: o 0.005; dq, dk, dv 0.008; dg, dbeta 0.02), or twice the error of the reference layer
           itself in bf16, whichever is larger (a layer adds bf16 roundings of its projections, conv and norm to
           the kernel's; the notes column gives the reference's own error). --bf16 autocast (default): fp32
           weights under bf16 autocast, how arena trains; --bf16 cast: both layers cast to bf16, as fla's tests do
arena runs with each of --arena-impls: auto (Triton kernels and fused glue on CUDA; torch on CPU), torch
(chunked PyTorch, fused glue off), naive (token loop, fused glue off), triton (Triton kernels and glue; also runs
under the CPU interpreter).

Known problems of the references, handled here:
- fla 0.6 refuses GDN's gated backward on Hopper with Triton < 3.7.1 (fla#640) unless tilelang is installed: the
  reference's gradients then come from the same layer with fla's naive ops (below), and the notes say so.
- fla 0.6's Mamba2.torch_forward (its path without mamba_ssm) gives head h the B/C group h % G; mamba_ssm's
  kernels and arena give it group h // (H / G). With ngroups > 1 those rows are shown and marked as a
  reference bug, not counted (`known_reference_bug`).

--cpu-smoke: fla's chunk kernels cannot run on CPU, and in Triton's interpreter they fail (a loop index is a
Python int there). The script sets TRITON_INTERPRET=1, so fla's short-conv, L2-norm and gated-norm kernels run
interpreted (each autotuned kernel takes its first config: the interpreter cannot time them), and swaps the chunk
op each fla layer calls for `naive_chunk_kda` / `naive_chunk_gdn`: the in-kernel steps chunk_kda and
chunk_gated_delta_rule document (L2 norm of q and k, the gate from A_log and dt_bias, sigmoid of beta, times 2
with allow_neg_eigval) followed by fla's own token-loop references (fla.ops.kda.naive,
fla.ops.gated_delta_rule.naive). Before the cases, the stand-ins are checked against fla's fused-recurrent Triton
kernels (forward; these do run under the interpreter), so the smoke tests the mapping against fla's code.

Prints: versions and settings, the check of the naive stand-ins, the intended differences (each probed where it
can be: an fla option arena cannot take fails to map, or maps and changes the output), then one markdown table:
layer, reference, config, dtype, arena impl, out / dx / worst parameter-gradient relative RMS error, tolerance,
pass, notes. Exits 1 when a case is over its tolerance or could not run, 2 on bad arguments or a missing fla.
"""

# The parts live in scripts/fla_parity/ (cases, fla_import, naive_ops, mapping, runner; see its __init__.py); this
# file is the command line: the arguments, the settings that must precede Triton's import, and the printed report.

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/fla_parity beside this file, from any directory
from fla_parity.cases import ARENA_IMPLS, CASES, DIFFERENCES, DTYPES, LAYERS, TOL_FP32  # noqa: E402
from fla_parity.fla_import import fla_mamba2_path, import_fla, mamba_ssm_usable  # noqa: E402
from fla_parity.naive_ops import check_naive_ops, interpreter_first_config  # noqa: E402
from fla_parity.runner import Row, probe_difference, run_case, short_error, table  # noqa: E402


def check_args(args) -> None:
    """One-line ConfigError for settings the script cannot run."""
    from arena.errors import ConfigError, choice_error

    for key, values, allowed in (("--layers", args.layers, LAYERS), ("--dtypes", args.dtypes, DTYPES),
                                 ("--arena-impls", args.arena_impls, tuple(ARENA_IMPLS))):
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise choice_error(key, " ".join(bad) or "(empty)", allowed)
    for key in ("seq_len", "batch"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')}={getattr(args, key)} must be >= 1")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", nargs="+", default=list(LAYERS), help=f"of {', '.join(LAYERS)}")
    p.add_argument("--dtypes", nargs="+", default=None, help="fp32 and/or bf16 (default: both on CUDA, fp32 on CPU)")
    p.add_argument("--arena-impls", nargs="+", default=None,
                   help=f"of {', '.join(ARENA_IMPLS)} (default: auto torch naive on CUDA, torch naive on CPU)")
    p.add_argument("--seq-len", type=int, default=None, help="T (default 200; 70 with --cpu-smoke)")
    p.add_argument("--batch", type=int, default=2, help="B")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu-smoke", action="store_true",
                   help="CPU: Triton interpreter for fla's small kernels, fla's naive ops for its chunk kernels; "
                        "the smoke cases only unless --all-cases")
    p.add_argument("--all-cases", action="store_true", help="with --cpu-smoke: every case, not just the smoke set")
    p.add_argument("--no-probes", action="store_true", help="skip probing the listed differences")
    p.add_argument("--bf16", default="autocast", choices=("autocast", "cast"),
                   help="bf16 rows: fp32 weights under bf16 autocast (how arena trains), or both layers cast to bf16 "
                        "(fla's tests' style)")
    p.add_argument("--allow-tf32", action="store_true", help="leave TF32 on (torch) and Triton's fp32 dot default")
    args = p.parse_args(argv)
    args.seq_len = args.seq_len or (70 if args.cpu_smoke else 200)
    args.dtypes = args.dtypes or (["fp32"] if args.cpu_smoke else list(DTYPES))
    args.arena_impls = args.arena_impls or (["torch", "naive"] if args.cpu_smoke else ["auto", "torch", "naive"])
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from arena.errors import ConfigError

    try:
        check_args(args)
        if args.cpu_smoke and "bf16" in args.dtypes:
            raise ConfigError("--dtypes bf16 is not valid with --cpu-smoke (the Triton interpreter's bf16 dots are "
                              "wrong); choose fp32")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # before anything imports Triton: the interpreter reads its switch once, fp32 dot precision at each compile
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"
    if not args.allow_tf32:
        os.environ["TRITON_F32_DEFAULT"] = "ieee"
    import torch

    if args.cpu_smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("error: no CUDA device; fla's kernels need one (use --cpu-smoke on CPU)", file=sys.stderr)
        return 2
    if not args.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if args.cpu_smoke:  # the interpreter's numpy overflows in masked lanes, and fla's "no GPU" notice: noise here
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"triton\.")
        warnings.filterwarnings("ignore", message=".*Triton is not supported on current platform.*")
    try:
        mods = import_fla()
    except ImportError as exc:
        print(f"error: cannot import fla ({exc}); install fla-core and flash-linear-attention 0.6.0 and einops "
              "beside arena and put them on PYTHONPATH (see this script's docstring)", file=sys.stderr)
        return 2
    if args.cpu_smoke:
        interpreter_first_config()
    logging.getLogger("fla.layers.mamba2").setLevel(logging.ERROR)  # backend notices on every build; path printed

    import fla
    import triton

    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (Triton interpreter)"
    print(f"device: {card}; torch {torch.__version__}, triton {triton.__version__}, fla {fla.__version__}; "
          f"TF32 {'on' if args.allow_tf32 else 'off'}, TRITON_F32_DEFAULT={os.environ.get('TRITON_F32_DEFAULT', '')}")
    why = mamba_ssm_usable(mods, device)
    print(f"mamba_ssm reference: {'yes' if not why else f'no ({why})'}; causal_conv1d: "
          f"{'yes' if mods['causal_conv1d'] else 'no'}; fla Mamba2 path: {fla_mamba2_path(mods, device)}")
    print(f"B={args.batch} T={args.seq_len} seed={args.seed}; fla chunk ops: "
          f"{'naive stand-ins' if args.cpu_smoke else 'kernels'}; arena impls: {' '.join(args.arena_impls)}\n")

    failed = False
    checks = check_naive_ops(device)
    bad = [(n, e) for n, e in checks if not e <= TOL_FP32["out"]]
    print("naive stand-ins vs fla's fused-recurrent kernels (forward, rel RMS): "
          + ", ".join(f"{n} {e:.1e}" for n, e in checks) + (" -- OVER 1e-5" if bad else ""))
    failed |= bool(bad)

    by_name = {(c.layer, c.config): c for c in CASES}
    if not args.no_probes:
        print("\nIntended differences (probed on the closest case):")
        for d in DIFFERENCES:
            if d.layer not in args.layers:
                continue
            line = f"- {d.layer}: {d.feature}: {d.reason}"
            if d.kind != "note":
                try:
                    result = probe_difference(d, by_name[(d.layer, d.closest)], args, mods, device)
                except Exception as exc:  # e.g. a kernel variant fla cannot run here: the probe only informs
                    result = f"could not run ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
                line += f" Probe: {result}. Closest case: {d.closest}."
            print(line)

    rows, errors = [], []
    for case in CASES:
        if case.layer not in args.layers or (args.cpu_smoke and not args.all_cases and not case.smoke):
            continue
        refs = ["fla"] + (["mamba_ssm"] if case.layer == "mamba2" and not mamba_ssm_usable(mods, device) else [])
        for reference in refs:
            try:
                rows += run_case(case, reference, args, mods, device)
            except Exception as exc:  # a mapping or reference failure fails this case; the others still run
                errors.append(f"{case.layer} {case.config} vs {reference}: {type(exc).__name__}: {exc}")
                rows.append(Row(case.layer, reference, case.config, "-", "-", notes=f"ERROR {short_error(exc)}"))
    print("\n" + table(rows))
    for e in errors:
        print(f"\nERROR {e}")
    failed |= any(not r.passed and not r.known for r in rows)
    print(f"\n{sum(r.passed for r in rows)}/{len(rows)} rows pass" + ("" if not failed else "; FAILED"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
