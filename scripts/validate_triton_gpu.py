"""GPU validation of the Triton delta-rule and SSD kernels (issues 4, 15): a sweep against the fp32 oracle, then
training.

    python scripts/validate_triton_gpu.py                  # on the GPU machine: full sweep + training check
    python scripts/validate_triton_gpu.py --quick          # a handful of cases and a short training (smoke)
    python scripts/validate_triton_gpu.py --device cpu --quick   # CPU: Triton interpreter, tiny shapes, fp16/fp32
    python scripts/validate_triton_gpu.py --skip-train --ops kda --out /tmp/val
    python scripts/validate_triton_gpu.py --ops ssd        # Mamba2's SSD (chunk_ssd, backend="triton"), mamba2 training

1. Kernel sweep. For KDA (`chunk_kda`) and GDN (`chunk_gated_delta_rule`) with backend="triton", in bf16 and fp16
   (q, k, v in that dtype, L2-normalized over K as the mixers do; g, beta and the states fp32): ~50 cases per op
   covering T in {1, 63, 64, 65, 500, 1024, 2048}, K, V in {32, 64, 100, 128, 256}, H up to 8, with and without an
   initial state, packed variable-length batches (cu_seqlens; the reference runs each sequence on its own, so any
   state leaking between sequences shows), gates 0 / logsigmoid / -1000 at random positions / log-uniform down to
   -1000, beta near 0 and near 1, allow_neg_eigval. The reference is the naive fp32 token loop on the same
   (rounded) inputs upcast to fp32; gradients come from autograd of both with the same random dO and dht (the
   final-state cotangent). Relative RMS errors (arena.testing.rel_rms_error) are checked against fla's tolerances
   (TOLERANCES below); a NaN fails. ARENA_TRITON_POISON=1 fills kernel outputs with NaN before launch, so an
   element the kernels never write fails too.
   Op ssd runs `chunk_ssd` against `naive_recurrent_ssd` on the same cases minus those that only vary beta or
   allow_neg_eigval (the SSD has neither; its dbeta column stays empty), scale 1 as in Mamba2.
2. Training check: a short MQAR run (the default config, bf16 autocast on CUDA) with mixer.impl=triton and
   mixer.impl=torch, same seed, for kda and gdn; per-step losses are compared (fail on NaN or clear divergence).
3. A summary table is printed last; the per-case table (CSV) and the loss curves go under --out (default $OUT if
   set, else results/validate). Exit status 1 if anything failed.

On CPU (--device cpu) the kernels run under the Triton interpreter (TRITON_INTERPRET=1 is set if missing), with
shapes shrunk and dtypes fp16/fp32 (the interpreter's bf16 `tl.dot` is wrong); training falls back to whatever
impl=triton does on CPU. The case list and its input recipe are in scripts/validate_cases.py; they and the
comparison/report functions here are pure and importable (tests/test_validate_script.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import sys
import time
import traceback
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file from anywhere, without `pip install -e .`
    sys.path.insert(0, str(REPO))

from arena.testing import close_problem, rel_rms_error  # noqa: E402  (torch only; no kernel module imported)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the case list beside this file, from any directory
from validate_cases import DTYPES, Case, make_cases, make_inputs, shard_cases  # noqa: E402

# fla's relative RMS tolerances (tests of chunk_kda / chunk_gated_delta_rule)
TOLERANCES = {"o": 0.005, "ht": 0.005, "dq": 0.008, "dk": 0.008, "dv": 0.008, "dg": 0.02, "dbeta": 0.02,
              "dh0": 0.008}
QUANTITIES = tuple(TOLERANCES)
# A quantity ~0 at the case's scale (e.g. dh0 after strong decays, dg at T=1 with no h0: zero in exact arithmetic)
# has no scale of its own: it passes when its reference and its error are both below ATOL x the largest
# reference value of the case (arena.testing.assert_close's floor); any larger one meets its tolerance.
ATOL = 1e-6
LOSS_EARLY_STEPS = 30  # the per-step loss window where bf16 curves should agree to ~2e-2
LOSS_FAIL_EARLY = 0.1  # fail: early-window divergence beyond bf16 noise
LOSS_FAIL_ANY = 0.5  # fail: clear divergence anywhere (later steps may drift apart legitimately)
MIXER_OF = {"ssd": "mamba2"}  # the training check of an op trains this mixer (kda and gdn: their own)


# ---------------------------------------------------------------------------------------------- running


def _leaves(inputs: dict, upcast: bool) -> dict:
    """Fresh leaf tensors (requires_grad) of q, k, v, g, beta, h0; upcast=True: fp32 copies for the oracle."""
    out = {}
    for name in ("q", "k", "v", "g", "beta", "h0"):
        x = inputs[name]
        if x is not None:
            x = x.detach().float() if upcast else x.detach().clone()
            x.requires_grad_()
        out[name] = x
    return out


def _backward(o, S, inputs: dict, upcast: bool) -> None:
    do = inputs["do"].float() if upcast else inputs["do"]
    tensors, grads = [o], [do]
    if S is not None and inputs["dht"] is not None:
        tensors.append(S)
        grads.append(inputs["dht"])
    torch.autograd.backward(tensors, grads)


def _collect(o, S, x: dict) -> dict:
    grads = {f"d{n}": (None if x[n] is None else x[n].grad) for n in ("q", "k", "v", "g", "beta", "h0")}
    return {"o": o.detach(), "ht": None if S is None else S.detach(), **grads}


def run_kernel(chunk_fn, inputs: dict, case: Case) -> tuple[dict, list[str]]:
    """The kernel under test, forward and backward; returns (results, warning messages)."""
    x = _leaves(inputs, upcast=False)
    # cu_seqlens only when packed: the unpacked cases also run against a kernel without varlen support
    packed = {} if inputs["cu_seqlens"] is None else {"cu_seqlens": inputs["cu_seqlens"]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        o, S = chunk_fn(x["q"], x["k"], x["v"], x["g"], x["beta"], initial_state=x["h0"],
                        output_final_state=case.final, allow_neg_eigval=case.neg, backend="triton", **packed)
        _backward(o, S, inputs, upcast=False)
    return _collect(o, S, x), [str(w.message) for w in caught]


def run_reference(naive_fn, inputs: dict, case: Case) -> dict:
    """The fp32 token loop on the upcast inputs; packed sequences run one by one (fresh state each)."""
    x = _leaves(inputs, upcast=True)
    bounds = inputs["cu_seqlens"].tolist() if case.lengths else None
    if bounds is None:
        o, S = naive_fn(x["q"], x["k"], x["v"], x["g"], x["beta"], initial_state=x["h0"],
                        output_final_state=True, allow_neg_eigval=case.neg)
    else:
        outs, states = [], []
        for i, (bos, eos) in enumerate(zip(bounds[:-1], bounds[1:])):
            part = [x[n][:, bos:eos] for n in ("q", "k", "v", "g", "beta")]
            h0 = None if x["h0"] is None else x["h0"][i: i + 1]
            o_i, S_i = naive_fn(*part, initial_state=h0, output_final_state=True, allow_neg_eigval=case.neg)
            outs.append(o_i)
            states.append(S_i)
        o, S = torch.cat(outs, dim=1), torch.cat(states, dim=0)
    S = S if case.final else None
    _backward(o, S, inputs, upcast=True)
    return _collect(o, S, x)


# ---------------------------------------------------------------------------------------------- comparing


def compare(ref: dict, out: dict, v_dtype: torch.dtype) -> dict:
    """Per quantity: relative RMS error and its ratio to the tolerance; passed unless a ratio > 1, a NaN, a
    missing or misshaped result, or a wrong output dtype (o must be in v's dtype, the state fp32)."""
    row, problems = {}, []
    floor = ATOL * max((r.detach().double().abs().max().item() for r in ref.values() if r is not None and r.numel()),
                       default=0.0)
    for name in QUANTITIES:
        r, x = ref.get(name), out.get(name)
        if r is None:  # not applicable to this case (no h0, no final state)
            row[f"err_{name}"], row[f"ratio_{name}"] = "", ""
            continue
        if x is None or tuple(x.shape) != tuple(r.shape):
            problems.append(f"{name}: {'missing' if x is None else f'shape {tuple(x.shape)} != {tuple(r.shape)}'}")
            row[f"err_{name}"], row[f"ratio_{name}"] = math.inf, math.inf
            continue
        err = rel_rms_error(r, x)
        ratio = err / TOLERANCES[name]
        if not math.isfinite(err):
            problems.append(f"{name}: NaN/inf")
        elif close_problem(r, x, TOLERANCES[name], floor) is not None:
            problems.append(f"{name}: {err:.3g} > {TOLERANCES[name]:g}")
        row[f"err_{name}"], row[f"ratio_{name}"] = float(f"{err:.4g}"), float(f"{ratio:.4g}")
    if out.get("o") is not None and out["o"].dtype != v_dtype:
        problems.append(f"o dtype {out['o'].dtype} != v dtype {v_dtype}")
    if out.get("ht") is not None and out["ht"].dtype != torch.float32:
        problems.append(f"final state dtype {out['ht'].dtype} != float32")
    row["passed"] = not problems
    row["problems"] = "; ".join(problems)
    return row


def summarize(rows: list[dict]) -> list[dict]:
    """One summary per (op, dtype): cases, passed, worst ratio err/tolerance per quantity, failed case ids."""
    groups: dict[tuple[str, str], dict] = {}
    for row in rows:
        s = groups.setdefault((row["op"], row["dtype"]), {"op": row["op"], "dtype": row["dtype"], "cases": 0,
                                                          "passed": 0, "failed_ids": [],
                                                          **{q: None for q in QUANTITIES}})
        s["cases"] += 1
        s["passed"] += bool(row["passed"])
        if not row["passed"]:
            s["failed_ids"].append(row["id"])
        for q in QUANTITIES:
            ratio = row.get(f"ratio_{q}", "")
            if ratio != "" and ratio is not None:
                s[q] = ratio if s[q] is None else max(s[q], ratio)
    return list(groups.values())


def compare_losses(a: list[float], b: list[float], early: int = LOSS_EARLY_STEPS) -> dict:
    """Per-step loss curves of impl=triton (a) and impl=torch (b): max abs differences, early and overall.
    Fails on a NaN, curves of different lengths, an early difference > LOSS_FAIL_EARLY or any > LOSS_FAIL_ANY."""
    finite = all(math.isfinite(x) for x in (*a, *b))
    n = min(len(a), len(b))
    diffs = [abs(x - y) for x, y in zip(a[:n], b[:n])]
    early_max = max(diffs[:early], default=math.nan)
    all_max = max(diffs, default=math.nan)
    passed = (finite and n > 0 and len(a) == len(b) and early_max <= LOSS_FAIL_EARLY and all_max <= LOSS_FAIL_ANY)
    return {"steps": n, "max_diff_early": early_max, "max_diff": all_max, "finite": finite, "passed": passed,
            "final_loss_a": a[-1] if a else math.nan, "final_loss_b": b[-1] if b else math.nan}


def _fmt(x) -> str:
    if x is None or x == "":
        return "-"
    return f"{x:.3f}" if math.isfinite(x) else "inf"


def format_table(summaries: list[dict], training: list[dict]) -> str:
    """The closing table: per (op, dtype) the worst err/tolerance (pass <= 1) per quantity; training lines."""
    lines = ["kernel sweep: worst relative-RMS error / tolerance per quantity (pass <= 1)",
             f"{'op':4} {'dtype':5} {'pass':>7} " + " ".join(f"{q:>6}" for q in QUANTITIES)]
    for s in summaries:
        lines.append(f"{s['op']:4} {s['dtype']:5} {s['passed']:>3}/{s['cases']:<3} "
                     + " ".join(f"{_fmt(s[q]):>6}" for q in QUANTITIES))
        for case_id in s["failed_ids"][:8]:
            lines.append(f"    FAILED {case_id}")
        if len(s["failed_ids"]) > 8:
            lines.append(f"    ... and {len(s['failed_ids']) - 8} more (see the CSV)")
    lines.append("tolerances: " + ", ".join(f"{q} {t:g}" for q, t in TOLERANCES.items()))
    if training:
        lines.append(f"training (MQAR, impl=triton vs impl=torch, same seed; per-step loss |diff|, early = first "
                     f"{LOSS_EARLY_STEPS} steps; fail on NaN, early > {LOSS_FAIL_EARLY} or any > {LOSS_FAIL_ANY})")
    for t in training:
        if t.get("error"):
            lines.append(f"  {t['mixer']:4} FAIL: {t['error']}")
            continue
        lines.append(f"  {t['mixer']:4} {'ok  ' if t['passed'] else 'FAIL'} steps {t['steps']}  "
                     f"max|dloss| early {_fmt(t['max_diff_early'])} all {_fmt(t['max_diff'])}  "
                     f"final loss {_fmt(t['final_loss_a'])} vs {_fmt(t['final_loss_b'])}  "
                     f"final acc {_fmt(t['final_acc_a'])} vs {_fmt(t['final_acc_b'])}")
    return "\n".join(lines)


def read_case_rows(path: Path) -> list[dict]:
    """Rows of a validate_kernels.csv (several shards' tables concatenated) with types restored for summarize."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["passed"] = row["passed"] == "True"
        for q in QUANTITIES:
            row[f"ratio_{q}"] = float(row[f"ratio_{q}"]) if row.get(f"ratio_{q}") else ""
    return rows


def summarize_files(paths: list[Path], quick: bool = False, tiny: bool = False) -> tuple[list[dict], str, bool]:
    """Shard CSVs merged: (rows, closing table, ok); not ok when a case failed or is missing (a crashed shard)."""
    rows = [row for path in paths for row in read_case_rows(path)]
    seen = {row["id"] for row in rows}
    ops, dtypes = sorted({r["op"] for r in rows}), sorted({r["dtype"] for r in rows})  # a whole shard may be gone
    missing = [c.id for op in ops for dt in dtypes for c in make_cases(op, (dt,), quick=quick, tiny=tiny)
               if c.id not in seen]
    table = format_table(summarize(rows), [])
    if missing:
        table += f"\nMISSING {len(missing)} cases (a shard stopped early), e.g. " + ", ".join(missing[:4])
    ok = bool(rows) and not missing and all(r["passed"] for r in rows)
    return rows, table, ok


def write_csv(rows: list[dict], path: Path) -> None:
    """Rows as CSV; the columns are the union of the rows' keys, in first-seen order."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------------------------------------- main parts


def load_ops() -> dict:
    """op -> (chunk fn, naive fn, per-channel gate). Imported late: TRITON_INTERPRET must be set first."""
    from arena.kernels.gated_delta_rule import chunk_gated_delta_rule, naive_recurrent_gated_delta_rule
    from arena.kernels.kda import chunk_kda, naive_recurrent_kda
    from arena.kernels.ssd import chunk_ssd, naive_recurrent_ssd

    def ssd_chunk(q, k, v, g, beta, *, allow_neg_eigval, **kw):  # the delta rules' call, beta unused
        return chunk_ssd(q, k, v, g, **kw)

    def ssd_naive(q, k, v, g, beta, *, allow_neg_eigval, **kw):
        return naive_recurrent_ssd(q, k, v, g, **kw)

    return {"kda": (chunk_kda, naive_recurrent_kda, True),
            "gdn": (chunk_gated_delta_rule, naive_recurrent_gated_delta_rule, False),
            "ssd": (ssd_chunk, ssd_naive, False)}


def triton_ready(device: torch.device) -> tuple[bool, str]:
    from arena.kernels.triton_delta import triton_status

    return triton_status(device)


def check_case(case: Case, chunk_fn, naive_fn, per_channel: bool, device: torch.device) -> dict:
    """One case, kernel and oracle, forward and backward: its CSV row (case fields, errors, passed, problems).
    An exception is recorded, not raised: one broken shape must not hide the others."""
    row = {"id": case.id, **{k: v for k, v in asdict(case).items()}}
    row["lengths"] = "+".join(map(str, case.lengths)) if case.lengths else ""
    t0 = time.perf_counter()
    try:
        inputs = make_inputs(case, per_channel, device)
        out, caught = run_kernel(chunk_fn, inputs, case)
        t1 = time.perf_counter()
        ref = run_reference(naive_fn, inputs, case)
        row.update(compare(ref, out, DTYPES[case.dtype]))
        fallback = [w for w in caught if "fall" in w.lower()]
        if fallback:  # a torch fallback would validate the wrong kernel
            row["passed"] = False
            row["problems"] = "; ".join(filter(None, [row["problems"], f"fell back: {fallback[0]}"]))
        row["warnings"] = " | ".join(caught)[:300]
        row["kernel_s"], row["ref_s"] = round(t1 - t0, 3), round(time.perf_counter() - t1, 3)
    except Exception as err:
        row.update(passed=False, problems=f"{type(err).__name__}: {err}"[:500],
                   kernel_s=round(time.perf_counter() - t0, 3))
        traceback.print_exc(limit=3, file=sys.stderr)
    finally:
        if device.type == "cuda":
            try:  # surface asynchronous errors here, not in the next case
                torch.cuda.synchronize()
            except Exception as err:
                row.update(passed=False, problems=f"{row.get('problems', '')}; sync: {err}"[:500])
    return row


def kernel_sweep(ops: list[str], dtypes: tuple[str, ...], quick: bool, device: torch.device,
                 csv_path: Path | None = None, shard: tuple[int, int] = (0, 1), match: str = "") -> list[dict]:
    table = load_ops()
    rows = []
    for op in ops:
        chunk_fn, naive_fn, per_channel = table[op]
        cases = shard_cases(make_cases(op, dtypes, quick=quick, tiny=device.type == "cpu"), *shard)
        cases = [case for case in cases if match in case.id]
        for n, case in enumerate(cases, 1):
            t0 = time.perf_counter()
            row = check_case(case, chunk_fn, naive_fn, per_channel, device)
            rows.append(row)
            if csv_path is not None:  # rewritten after every case: a crash still leaves the table so far
                write_csv(rows, csv_path)
            worst = max((r for r in (row.get(f"ratio_{q}") for q in QUANTITIES) if isinstance(r, float)),
                        default=None)
            print(f"[{n:3}/{len(cases)}] {'ok  ' if row['passed'] else 'FAIL'} {case.id:62} worst ratio "
                  f"{_fmt(worst)}  {time.perf_counter() - t0:6.2f}s {row.get('problems', '')}", flush=True)
    return rows


def train_once(mixer: str, impl: str, steps: int, device: torch.device, run_dir: Path) -> tuple[list[float], float]:
    """One MQAR run of the default config (conf/) with mixer.impl=impl; returns (per-step losses, final acc)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from arena.run import CONF, mixer_specs
    from arena.train import Run, train

    overrides = [f"mixer={mixer}", f"mixer.impl={impl}", f"train.steps={steps}", "train.eval_every=1",
                 "train.target_accuracy=2.0", f"train.device={device.type}", "train.seed=0"]
    if device.type == "cuda":
        overrides.append("train.precision=bf16")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    if run_dir.exists():  # metrics.jsonl is append-only
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    run = Run(OmegaConf.to_container(cfg, resolve=True), mixer_specs(cfg, mixer), mixer)
    summary = train(run, run_dir, f"validate-{mixer}-{impl}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if "train_loss" in r and r.get("eval") != "length"]
    if summary["status"] != "completed":
        losses.append(math.nan)  # diverged: make compare_losses fail
    return losses, records[-1]["accuracy"] if records else math.nan


def training_check(mixers: list[str], steps: int, device: torch.device, out_dir: Path) -> list[dict]:
    results = []
    for mixer in (MIXER_OF.get(op, op) for op in mixers):
        try:
            curves = {impl: train_once(mixer, impl, steps, device, out_dir / "train" / f"{mixer}-{impl}")
                      for impl in ("triton", "torch")}
        except Exception as err:
            traceback.print_exc(limit=5, file=sys.stderr)
            results.append({"mixer": mixer, "passed": False, "error": f"{type(err).__name__}: {err}"[:300]})
            continue
        (la, acc_a), (lb, acc_b) = curves["triton"], curves["torch"]
        res = {"mixer": mixer, **compare_losses(la, lb), "final_acc_a": acc_a, "final_acc_b": acc_b}
        results.append(res)
        write_csv([{"step": i + 1, "loss_triton": x, "loss_torch": y} for i, (x, y) in enumerate(zip(la, lb))],
                  out_dir / f"train_loss_{mixer}.csv")
    return results


def device_line(device: torch.device) -> str:
    try:
        import triton

        triton_version = triton.__version__
    except Exception as err:
        triton_version = f"unavailable ({type(err).__name__})"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {platform.processor() or '?'}"
    interp = "  TRITON_INTERPRET=1" if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") else ""
    return f"device: {name}  torch {torch.__version__}  triton {triton_version}{interp}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a handful of cases and a short training (smoke)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (Triton interpreter, tiny shapes)")
    p.add_argument("--out", default=None, help="output directory (default: $OUT if set, else results/validate)")
    p.add_argument("--ops", default="kda,gdn", help="comma-separated subset of kda,gdn,ssd")
    p.add_argument("--dtypes", default=None, help="comma-separated; default bf16,fp16 (cuda) or fp16,fp32 (cpu)")
    p.add_argument("--train-steps", type=int, default=None, help="default 100 (cuda), 20 with --quick, 3 on cpu")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-kernels", action="store_true")
    p.add_argument("--summarize", type=Path, nargs="+", default=None, metavar="CSV",
                   help="only merge shards' validate_kernels.csv into --out/validate_cases.csv and print the table")
    p.add_argument("--match", default="", help="only the cases whose id contains this text, e.g. K256")
    p.add_argument("--shard", default="0/1", help="I/N: run the I-th of N disjoint (K, V) groups of cases")
    args = p.parse_args(argv)
    try:
        index, count = (int(x) for x in args.shard.split("/"))
        assert 0 <= index < count
    except (ValueError, AssertionError):
        p.error(f"--shard must be I/N with 0 <= I < N, got {args.shard!r}")
    args.shard = (index, count)
    return args


def main(argv=None) -> int:
    os.environ["ARENA_TRITON_POISON"] = "1"  # before any kernel module is imported: unwritten outputs are NaN
    os.environ.setdefault("TQDM_DISABLE", "1")  # the trainer's progress bars would bury the per-case lines
    args = parse_args(argv)
    if args.summarize is not None:
        rows, table, ok = summarize_files(args.summarize, quick=args.quick, tiny=args.device == "cpu")
        write_csv(rows, Path(args.out or os.environ.get("OUT") or REPO / "results" / "validate") / "validate_cases.csv")
        print(f"{table}\n{'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    device = torch.device(args.device)
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        if "triton" in sys.modules:
            print("warning: triton was imported before TRITON_INTERPRET=1 could be set", file=sys.stderr)
        os.environ["TRITON_INTERPRET"] = "1"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("error: no CUDA device (use --device cpu for the interpreter run)", file=sys.stderr)
            return 2
        torch.backends.cuda.matmul.allow_tf32 = False  # the oracle runs in true fp32
        torch.backends.cudnn.allow_tf32 = False
    if device.type == "cpu":
        torch.set_num_threads(1)  # tiny tensors: one thread is fastest (tests/conftest.py)
    out_dir = Path(args.out or os.environ.get("OUT") or REPO / "results" / "validate")
    out_dir.mkdir(parents=True, exist_ok=True)
    ops = [o for o in args.ops.split(",") if o]
    dtypes = tuple(args.dtypes.split(",")) if args.dtypes else (("bf16", "fp16") if device.type == "cuda"
                                                                 else ("fp16", "fp32"))
    steps = args.train_steps or (3 if device.type == "cpu" else 20 if args.quick else 100)
    start = time.perf_counter()
    print(device_line(device), flush=True)

    rows, ok = [], True
    if not args.skip_kernels:
        ready, reason = triton_ready(device)
        print(f"triton path: {'ready' if ready else 'NOT ready'} ({reason})", flush=True)
        if not ready:
            print("error: the Triton path cannot run here; nothing to validate", file=sys.stderr)
            return 1
        rows = kernel_sweep(ops, dtypes, args.quick, device, out_dir / "validate_kernels.csv", args.shard,
                            args.match)
        ok = ok and bool(rows) and all(r["passed"] for r in rows)
        print(f"kernel sweep: {len(rows)} cases in {time.perf_counter() - start:.0f}s", flush=True)
    training = []
    if not args.skip_train:
        t0 = time.perf_counter()
        training = training_check(ops, steps, device, out_dir)
        ok = ok and all(t["passed"] for t in training)
        print(f"training check: {time.perf_counter() - t0:.0f}s", flush=True)
    table = format_table(summarize(rows), training)
    header = f"{device_line(device)}\nwall time {time.perf_counter() - start:.0f}s; results in {out_dir}"
    (out_dir / "summary.txt").write_text(f"{header}\n{table}\n{'PASS' if ok else 'FAIL'}\n")
    print(f"\n{header}\n{table}\n{'PASS' if ok else 'FAIL'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
