"""One case of scripts/fla_layer_parity.py end to end: build arena's layer and the reference, map the parameters,
run both forward and backward on the same x and dy, compare out, dx and the parameter gradients (`run_case`); the
probe of an intended difference (`probe_difference`); the markdown table of the rows (`table`).

Run through `python scripts/fla_layer_parity.py` (the checks, tolerances and CLI are in its docstring);
tests: tests/test_fla_parity_script.py.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

from .cases import ARENA_IMPLS, REF_FACTOR, TOL_BF16, TOL_FP32, Case, Difference
from .fla_import import fla_mamba2_path
from .mapping import ZERO, MappingError, fla_kwargs, load_mapped, mamba_ssm_kwargs, mapping_for
from .naive_ops import naive_chunk_ops

# ------------------------------------------------------------------------------------------------------------------
# running a case


@dataclass
class Result:
    y: object
    dx: object = None
    grads: dict = None  # parameter name -> gradient
    note: str = ""


def forward_backward(call, params: dict, x, dy, amp) -> Result:
    """y = call(x) (under bf16 autocast when amp; x in the layer's dtype), then the backward of sum(y * dy);
    everything returned in fp32."""
    import torch

    dtype = next(iter(params.values())).dtype
    x = x.detach().to(dtype).requires_grad_(True)
    for p in params.values():
        p.grad = None
    with torch.autocast(x.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        y = call(x)
    (y.float() * dy).sum().backward()
    grads = {n: p.grad.detach().float().clone() for n, p in params.items() if p.grad is not None}
    return Result(y.detach().float(), x.grad.detach().float(), grads)


def run_reference(ref, call, x, dy, amp, mods, naive: bool) -> Result:
    """The reference's output and gradients; where fla refuses its backward (fla#640), gradients from its naive ops."""
    import torch

    params = dict(ref.named_parameters())
    x = x.to(next(iter(params.values())).dtype)  # --bf16 cast: the layer's dtype

    ctx = naive_chunk_ops(mods) if naive else contextlib.nullcontext()
    try:
        with ctx:
            return forward_backward(call, params, x, dy, amp)
    except RuntimeError as exc:
        if "#640" not in str(exc):
            raise
    with torch.no_grad(), torch.autocast(x.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        y = call(x).float()  # the kernels' own forward
    # the same layer (projections, conv and norm kernels, under the same autocast) around fla's fp32 token loop
    with naive_chunk_ops(mods):
        grads = forward_backward(call, params, x, dy, amp)
    return Result(y, grads.dx, grads.grads, note="ref grads via fla naive ops (fla#640)")


@dataclass
class Row:
    layer: str
    reference: str
    config: str
    dtype: str
    impl: str
    out: float = float("nan")
    dx: float = float("nan")
    dW: float = float("nan")
    dW_name: str = ""
    tol: dict = None
    passed: bool = False
    notes: str = ""
    known: str = ""  # a known bug of the reference that explains a failure: shown, not counted


def compare(row: Row, ref: Result, got: Result, mapping: dict, tol: dict) -> Row:
    from arena.testing import rel_rms_error

    row.out = rel_rms_error(ref.y, got.y)
    row.tol = tol
    grads = ref.dx is not None and got.dx is not None  # None: a backward fla refused (fla#640) in bf16
    if grads:
        row.dx = rel_rms_error(ref.dx, got.dx)
        worst = max(((rel_rms_error(ref.grads[n], got.grads[a]), n) for n, a in mapping.items()
                     if a != ZERO and n in ref.grads and a in got.grads), default=(float("nan"), ""))
        row.dW, row.dW_name = worst
    ok = [row.out <= tol["out"]]
    if grads:
        ok += [row.dx <= tol["dx"], row.dW <= tol["dW"]]
    row.passed = all(ok)
    return row


def reference_call(kind: str, m):
    """x -> y for a reference module: fla's layers return (o, attentions, cache), mamba_ssm's the output."""
    return (lambda x: m(x)) if kind == "mamba_ssm" else (lambda x: m(x)[0])


def build_reference(kind: str, case: Case, arena, mods, device, extra: dict | None = None):
    """The reference module of `kind` ("fla" or "mamba_ssm") matching arena's layer, in fp32."""
    extra = extra or {}
    if kind == "mamba_ssm":
        return mods["mamba_ssm"](**mamba_ssm_kwargs(arena), **extra).to(device)
    cls = {"kda": mods["kda"].KimiDeltaAttention, "gdn": mods["gdn"].GatedDeltaNet,
           "mamba2": mods["mamba2"].Mamba2}[case.layer]
    m = cls(**{**fla_kwargs(case.layer, arena), **extra}).to(device)
    if case.layer == "mamba2" and fla_mamba2_path(mods, device).endswith("(eval mode)"):
        m.eval()  # only changes which mamba_ssm path fla takes (no dropout or other train-time behaviour here)
    return m


def arena_layer(case: Case, impl: str, device, extra: dict | None = None, state=None):
    import torch

    from arena.mixers import build_mixer

    overrides = {**case.arena, **ARENA_IMPLS[impl], **(extra or {})}
    layer = build_mixer(case.layer, d_model=case.d_model, **overrides)
    if state is not None:
        layer.load_state_dict(state)
    return layer.to(device=device, dtype=torch.float32)


def make_inputs(case: Case, args, device):
    import torch

    gen = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.batch, args.seq_len, case.d_model, generator=gen)
    dy = torch.randn(args.batch, args.seq_len, case.d_model, generator=gen)
    return x.to(device), dy.to(device)


def short_error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


def known_reference_bug(case: Case, path: str, arena) -> str:
    """Why the reference itself is wrong for this case, or ""."""
    if case.layer == "mamba2" and path == "torch_forward" and arena.cfg.ngroups > 1:
        # fla 0.6 Mamba2.torch_forward: B.repeat(1, 1, H // G, 1) gives head h group h % G; mamba_ssm's kernels,
        # fla's own decode step and arena give head h group h // (H / G), the groups' contiguous blocks of heads
        return "fla torch_forward gives head h B/C group h % G (B.repeat), mamba_ssm h // (H/G)"
    return ""


def run_case(case: Case, reference: str, args, mods, device) -> list[Row]:
    """Every (dtype, arena impl) row of one case against one reference."""
    import torch

    torch.manual_seed(args.seed)
    base = arena_layer(case, args.arena_impls[0], device)
    state = base.state_dict()
    mapping = mapping_for(case.layer, base)
    ref = build_reference(reference, case, base, mods, device)
    load_mapped(ref, base, mapping)
    call = reference_call(reference, ref)
    x, dy = make_inputs(case, args, device)
    naive = args.cpu_smoke
    path = "naive ops" if naive and case.layer != "mamba2" else "kernels"
    if case.layer == "mamba2" and reference == "fla":
        path = fla_mamba2_path(mods, device)
    ref32 = run_reference(ref, call, x, dy, None, mods, naive)
    bug = known_reference_bug(case, path, base) if reference == "fla" else ""
    rows = []
    for dtype in args.dtypes:
        bf16 = dtype == "bf16"
        amp = torch.bfloat16 if bf16 and args.bf16 == "autocast" else None
        cast = torch.bfloat16 if bf16 and args.bf16 == "cast" else torch.float32
        tol = dict(TOL_FP32)
        own = ""
        if bf16:  # the reference's own bf16 error sets how much bf16 noise a layer has
            try:
                ref16 = copy.deepcopy(ref).to(cast)
                ref16_out = run_reference(ref16, reference_call(reference, ref16), x, dy, amp, mods, naive)
            except Exception as exc:  # the fixed bars still apply; the row says why they are not widened
                tol = dict(TOL_BF16)
                own = f"ref bf16 ({args.bf16}) failed: {short_error(exc)}"
            else:
                own_row = compare(Row("", "", "", "", ""), ref32, ref16_out, mapping, TOL_BF16)
                tol = {key: max(TOL_BF16[key], REF_FACTOR * err) if err == err else TOL_BF16[key]  # NaN: unmeasured
                       for key, err in (("out", own_row.out), ("dx", own_row.dx), ("dW", own_row.dW))}
                own = f"ref bf16 ({args.bf16}): out {own_row.out:.1e} dx {own_row.dx:.1e} dW {own_row.dW:.1e}"
                if ref16_out.note and ref16_out.note != ref32.note:
                    own += f", {ref16_out.note}"
        for impl in args.arena_impls:
            row = Row(case.layer, reference, case.config, dtype, impl)
            notes = [f"ref: {path}", ref32.note, own, bug]
            try:
                layer = arena_layer(case, impl, device, state=state).to(cast)
                got = forward_backward(lambda t, m=layer: m(t)[0], dict(layer.named_parameters()), x, dy, amp)
            except Exception as exc:  # this arena impl cannot run here: a failing row, the others still run
                notes.insert(0, f"ERROR {short_error(exc)}")
            else:
                row = compare(row, ref32, got, mapping, tol)
                row.known = "" if row.passed else bug
            row.notes = "; ".join(s for s in notes if s)
            rows.append(row)
    return rows


def probe_difference(diff: Difference, case: Case, args, mods, device) -> str:
    """One line: the difference shown (unmappable, or a changed output) or a warning that it was not."""
    import torch

    from arena.testing import rel_rms_error

    torch.manual_seed(args.seed)
    arena = arena_layer(case, "torch", device, extra=diff.arena_extra)
    try:
        ref = build_reference("fla", case, arena, mods, device, extra=diff.fla_extra)
        load_mapped(ref, arena, mapping_for(case.layer, arena))
        call = reference_call("fla", ref)
    except (MappingError, ValueError) as exc:
        status = "cannot map" if diff.kind == "unmappable" else "UNEXPECTED: cannot map"
        return f"{status}: {exc}"
    if diff.perturb:
        with torch.no_grad():
            dict(ref.named_parameters())[diff.perturb].normal_(0.0, 1.0)
    x, _ = make_inputs(case, args, device)
    ctx = naive_chunk_ops(mods) if args.cpu_smoke else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        err = rel_rms_error(call(x).float(), arena(x)[0].float())
    if err > TOL_FP32["out"]:
        return f"{'maps, output differs' if diff.kind == 'differs' else 'UNEXPECTED: maps'}: out rel err {err:.2g}"
    return f"WARNING: maps and the output agrees (rel err {err:.2g}); the difference was not exercised"


# ------------------------------------------------------------------------------------------------------------------
# report


def fmt(v: float) -> str:
    return "-" if v != v else f"{v:.2e}"


def verdict(r: Row) -> str:
    return "yes" if r.passed else ("no: reference bug, not counted" if r.known else "**NO**")


def table(rows: list[Row]) -> str:
    head = ["layer", "reference", "config", "dtype", "arena impl", "out rel err", "dx rel err",
            "param grad rel err (worst)", "tolerance (out / dx / param)", "pass", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        tol = "-" if r.tol is None else " / ".join(f"{r.tol[k]:.0e}" for k in ("out", "dx", "dW"))
        dW = fmt(r.dW) + (f" ({r.dW_name})" if r.dW_name else "")
        lines.append("| " + " | ".join([r.layer, r.reference, r.config, r.dtype, r.impl, fmt(r.out), fmt(r.dx), dW,
                                        tol, verdict(r), r.notes]) + " |")
    return "\n".join(lines)
