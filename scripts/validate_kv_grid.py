"""Every head-dim pair (K, V) of the Triton delta-rule kernels against the fp32 oracle, one process per pair (issue 15).

    python scripts/validate_kv_grid.py                         # GPU: the 9 x 9 grid, both ops, bf16 + fp16
    python scripts/validate_kv_grid.py --jobs 10 --out DIR     # processes at once (default 8); results in DIR
    python scripts/validate_kv_grid.py --values 32,64 --ops kda   # a sub-grid
    python scripts/validate_kv_grid.py --device cpu --quick    # CPU: Triton interpreter, tiny shapes, 2 x 2 grid
    python scripts/validate_kv_grid.py --k-values 16,32,48,64 --out DIR; ... --k-values 80,96,128,192,256 --out DIR
    python scripts/validate_kv_grid.py --summarize --out DIR  # the table over every group run into DIR so far

For every (K, V) in {16, 32, 48, 64, 80, 96, 128, 192, 256}^2, for KDA and GDN (`backend="triton"`), in bf16 and
fp16: a fixed-length batch (B=2, T=192, H=2) and a packed one (cu_seqlens, lengths 100 + 92 + 192, the same 384
tokens, so both layouts reuse one set of compiled kernels), forward and backward with an initial state and a
final-state cotangent, against the naive fp32 token loop with validate_triton_gpu.py's tolerances (and its NaN
poisoning of unwritten outputs). Each (K, V) group runs in its own subprocess: an illegal memory access kills only
that process; the case it was running is reported as CRASH and a fresh process resumes the group after it, so
every other case still runs. A group past --timeout is killed and its unfinished cases reported as TIMEOUT.

Last, one K x V table per op (ok / F<worst error over tolerance> / CRASH / TIME, over both dtypes and layouts)
and the failing cases; the per-case CSV (kv_grid.csv) and the table (kv_grid.txt) go to --out (default $OUT, else
results/kv_grid). Exit status 1 if any case is not ok.
Time: Triton compiles dominate. The binaries depend on the tiles (chunk._blocks: BK = 16 / 32 / 64 / 128 / 256,
V tiles 64 / 128 / 256), not on K and V themselves, and share Triton's on-disk cache between processes, so the
81 groups compile about 15 tile configurations x 2 ops x 2 dtypes (the first group of each configuration starts
first, see `schedule`); the rest is process start-up and the oracle. Estimated 5-7 minutes on one H100 with the
default 8 processes (not yet timed); --budget stops starting groups after that many seconds, and --summarize
tabulates what has run.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for path in (str(REPO), str(HERE)):  # run as a file from anywhere; validate_*.py sit beside this file
    if path not in sys.path:
        sys.path.insert(0, path)

VALUES = (16, 32, 48, 64, 80, 96, 128, 192, 256)
QUICK_VALUES = {"cuda": (32, 64), "cpu": (16, 32)}
LAYOUTS = {"cuda": {"fixed": (2, 192, None), "packed": (1, 384, (100, 92, 192))},  # (B, T, lengths)
           "cpu": {"fixed": (2, 12, None), "packed": (1, 24, (5, 7, 12))}}  # tiny: the interpreter is slow
STATUSES = ("ok", "FAIL", "CRASH", "TIMEOUT", "NOTRUN")
CRASH_RC = 3  # a worker's exit status after a CUDA error: its context is gone, the parent resumes the group
# A CUDA error poisons the process's context: every later launch in it fails too
FATAL_MARKERS = ("illegal memory access", "CUDA error", "device-side assert", "unspecified launch failure",
                 "misaligned address", "illegal instruction")


def error(msg: str) -> SystemExit:
    return SystemExit(f"error: {msg}")


def parse_ints(text: str, what: str, minimum: int = 1) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise error(f"{what} must be comma-separated integers, got {text!r}") from None
    if not out or min(out) < minimum:
        raise error(f"{what} must be integers >= {minimum}, got {text!r}")
    return out


def grid_cases(K: int, V: int, ops, dtypes, device_type: str):
    """The cases of one (K, V) group, in the order a worker runs them: op, dtype, then fixed and packed."""
    from validate_cases import Case

    cases = []
    for i, op in enumerate(ops):
        for j, dtype in enumerate(dtypes):
            for B, T, lengths in LAYOUTS[device_type].values():
                seed = 100_000 + 1000 * K + 3 * V + 7 * i + 11 * j  # one seed per (K, V, op, dtype)
                cases.append(Case(op=op, dtype=dtype, T=T, B=B, H=2, K=K, V=V, lengths=lengths, seed=seed))
    return cases


def layout_of(case) -> str:
    return "packed" if case.lengths else "fixed"


def worst_ratio(row: dict) -> float | None:
    """The largest error / tolerance of a row (None when nothing was compared)."""
    vals = []
    for key, val in row.items():
        if key.startswith("ratio_") and val not in ("", None):
            vals.append(float(val))
    return max(vals, default=None)


def is_fatal(problems: str) -> bool:
    return any(m in problems for m in FATAL_MARKERS)


# ---------------------------------------------------------------------------------------------- worker


def run_worker(args) -> int:
    """One (K, V) group, cases args.start.. of grid_cases; the group CSV is rewritten after every case."""
    os.environ["ARENA_TRITON_POISON"] = "1"  # before any kernel module is imported: unwritten outputs are NaN
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch
    import validate_triton_gpu as vt

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the oracle runs in true fp32
    else:
        torch.set_num_threads(1)
    K, V = args.worker
    cases = grid_cases(K, V, args.ops, args.dtypes, device.type)
    path = group_csv(args.out, K, V)
    rows = read_rows(path) if args.start else []
    table = vt.load_ops()
    for index in range(args.start, len(cases)):
        case = cases[index]
        print(f"START {index} {case.id}", flush=True)
        if args.crash_at and (K, V, index) == tuple(args.crash_at):
            os.abort()  # --crash-at: the parent must report this case as CRASH and resume after it
        chunk_fn, naive_fn, per_channel = table[case.op]
        t0 = time.perf_counter()
        row = vt.check_case(case, chunk_fn, naive_fn, per_channel, device)
        fatal = not row["passed"] and is_fatal(str(row.get("problems", "")))
        status = "CRASH" if fatal else ("ok" if row["passed"] else "FAIL")
        row = {"index": index, "layout": layout_of(case), "status": status, "worst": worst_ratio(row),
               "seconds": round(time.perf_counter() - t0, 2), **row}
        rows.append(row)
        vt.write_csv(rows, path)
        print(f"DONE {index} {row['status']} {case.id} worst {row['worst']} {row.get('problems', '')}", flush=True)
        if fatal:  # the CUDA context is gone; skip Python's teardown, which may touch it again
            sys.stdout.flush()
            os._exit(CRASH_RC)
    return 0


# ---------------------------------------------------------------------------------------------- parent


def group_csv(out: Path, K: int, V: int) -> Path:
    return Path(out) / "groups" / f"K{K}V{V}.csv"


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["index"] = int(row["index"])
        row["worst"] = float(row["worst"]) if row.get("worst") not in ("", None) else None
    return rows


def settle_group(cases, rows: list[dict], rc: int | None, timed_out: bool,
                 reason: str) -> tuple[list[dict], int | None]:
    """After a worker of a group exits: (rows, index to resume from, or None when the group is finished).

    rows are the group CSV's rows. A worker that died mid-case (rc != 0, no row for the case it started) gets a CRASH
    row for that case, and the group resumes after it; a timed-out group stops, its unfinished cases TIMEOUT; a
    worker that reported a CUDA error (CRASH row, CRASH_RC) resumes after that case."""
    done = {row["index"] for row in rows}
    pending = [i for i in range(len(cases)) if i not in done]
    if not pending:
        return rows, None
    first = pending[0]
    if timed_out:
        return rows + [pending_row(cases[i], i, "TIMEOUT", reason) for i in pending], None
    if rc == 0:  # a clean exit that skipped cases should not happen: say so rather than hide them
        return rows + [pending_row(cases[i], i, "NOTRUN", "worker exited without running it") for i in pending], None
    if rc != CRASH_RC:  # died in the case it had started (the first without a row): that case crashed
        rows = rows + [pending_row(cases[first], first, "CRASH", reason)]
        first += 1
    return rows, (first if first < len(cases) else None)


def pending_row(case, index: int, status: str, reason: str) -> dict:
    return {"index": index, "layout": layout_of(case), "status": status, "worst": None, "id": case.id,
            "op": case.op, "dtype": case.dtype, "K": case.K, "V": case.V, "passed": False, "problems": reason[:500]}


def worker_command(args, K: int, V: int, start: int) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", f"{K},{V}", "--start", str(start),
           "--device", args.device, "--ops", ",".join(args.ops), "--dtypes", ",".join(args.dtypes),
           "--out", str(args.out)]
    if args.crash_at:
        cmd += ["--crash-at", ",".join(map(str, args.crash_at))]
    return cmd


def last_error_line(log: Path) -> str:
    """The most telling line of a dead worker's log: the last one naming an error, else the last one."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    lines = [ln for ln in lines if not ln.startswith(("START ", "DONE "))]  # the worker's own progress lines
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln or "Abort" in ln:
            return ln[:300]
    return lines[-1][:300] if lines else "no message"


def tiles(K: int, V: int) -> tuple[int, int]:
    """(K tile, widest V tile) of chunk._blocks for (K, V): groups with equal tiles run the same binaries."""
    def pow2(n):
        return 1 << max(0, n - 1).bit_length()

    return max(16, pow2(K)), max(64, pow2(V))


def schedule(groups: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The order groups start in: one group per tile configuration first, so the processes running at once
    compile different kernels; the groups that then find their binaries in Triton's disk cache after them."""
    firsts, rest, seen = [], [], set()
    for g in groups:
        (rest if tiles(*g) in seen else firsts).append(g)
        seen.add(tiles(*g))
    return firsts + rest


def run_grid(args) -> list[dict]:
    """Every group through worker processes, args.jobs at once; returns all rows, in group order."""
    groups = [(K, V) for K in args.k_values for V in args.v_values]
    queue = [(K, V, 0) for K, V in schedule(groups)]
    plan = {(K, V): grid_cases(K, V, args.ops, args.dtypes, args.device) for K, V in groups}
    finished: dict[tuple[int, int], list[dict]] = {}
    spent = {g: 0.0 for g in groups}  # seconds each group's workers have run, against --timeout
    running = []
    start_all = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    while queue or running:
        if args.budget and time.perf_counter() - start_all > args.budget:
            for K, V, start in [item for item in queue if item[2] == 0]:  # groups not yet started
                finished[(K, V)] = [pending_row(c, i, "NOTRUN", f"not started within --budget {args.budget:g}s")
                                    for i, c in enumerate(plan[(K, V)])]
                queue.remove((K, V, start))
        while queue and len(running) < args.jobs:
            K, V, start = queue.pop(0)
            log = Path(args.out) / "groups" / f"K{K}V{V}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as f:
                proc = subprocess.Popen(worker_command(args, K, V, start), stdout=f, stderr=subprocess.STDOUT,
                                        env=env, cwd=REPO, start_new_session=True)
            running.append((proc, K, V, time.perf_counter(), log))
        time.sleep(0.2)
        for item in list(running):
            proc, K, V, t0, log = item
            elapsed = spent[(K, V)] + time.perf_counter() - t0
            timed_out = proc.poll() is None and elapsed > args.timeout
            if timed_out:
                os.killpg(proc.pid, 9)  # the worker's own session: it and anything it started
                proc.wait()
            if proc.poll() is None:
                continue
            running.remove(item)
            spent[(K, V)] = elapsed
            rc = proc.returncode
            how = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
            reason = (f"group past --timeout {args.timeout:g}s" if timed_out
                      else f"worker {how}: {last_error_line(log)}")
            rows, resume = settle_group(plan[(K, V)], read_rows(group_csv(args.out, K, V)), proc.returncode,
                                        timed_out, reason)
            if resume is not None:
                write_rows(rows, group_csv(args.out, K, V))  # the CRASH row, so the resumed worker keeps it
                queue.insert(0, (K, V, resume))
                print(f"      K{K:<3} V{V:<3} CRASH in case {resume - 1}; resuming at {resume}", flush=True)
                continue
            finished[(K, V)] = rows
            counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
            summary = " ".join(f"{s} {n}" for s, n in counts.items() if n)
            print(f"[{len(finished):3}/{len(groups)}] K{K:<3} V{V:<3} {summary:30} {elapsed:6.1f}s "
                  f"(total {time.perf_counter() - start_all:.0f}s)", flush=True)
    return [row for g in groups for row in sorted(finished[g], key=lambda r: r["index"])]


def write_rows(rows: list[dict], path: Path) -> None:
    """validate_triton_gpu.write_csv (columns: the union of the rows' keys), imported here, not at the top: it
    imports torch, which a worker must not do before it has set its Triton environment."""
    import validate_triton_gpu as vt

    vt.write_csv(rows, path)


def cell(rows: list[dict]) -> str:
    """One table cell from a group's rows of one op: the worst status, with the worst error ratio on a FAIL."""
    if not rows:
        return "-"
    statuses = {r["status"] for r in rows}
    for bad, text in (("CRASH", "CRASH"), ("TIMEOUT", "TIME"), ("NOTRUN", "NOTRUN")):
        if bad in statuses:
            return text
    if "FAIL" in statuses:
        worst = [r["worst"] for r in rows if r["worst"] is not None]
        w = max(worst, default=None)
        return "F" + (f"{w:.2f}" if w is not None and math.isfinite(w) else "nan" if worst else "err")
    return "ok"


def format_grid(rows: list[dict], ops, k_values, v_values, max_listed: int = 20) -> str:
    """Per op a K x V table over both dtypes and layouts, then the cases that are not ok."""
    lines = []
    for op in ops:
        mine = [r for r in rows if r["op"] == op]
        dts = "+".join(sorted({r["dtype"] for r in mine}))
        lines.append(f"{op}: {dts}, fixed + packed, fwd + bwd vs fp32 (ok; F<worst err/tol>; CRASH; TIME)")
        lines.append("K \\ V " + "".join(f"{v:>7}" for v in v_values))
        for K in k_values:
            lines.append(f"{K:<6}" + "".join(
                f"{cell([r for r in mine if int(r['K']) == K and int(r['V']) == V]):>7}" for V in v_values))
        n_ok = sum(r["status"] == "ok" for r in mine)
        lines.append(f"{n_ok}/{len(mine)} cases ok")
    bad = [r for r in rows if r["status"] != "ok"]
    for r in bad[:max_listed]:
        lines.append(f"  {r['status']:7} {r['id']}: {str(r.get('problems', ''))[:160]}")
    if len(bad) > max_listed:
        lines.append(f"  ... and {len(bad) - max_listed} more (see kv_grid.csv)")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="cuda (default) or cpu (Triton interpreter, tiny shapes)")
    p.add_argument("--quick", action="store_true", help="a 2 x 2 grid (K, V in 32,64 on cuda; 16,32 on cpu)")
    p.add_argument("--values", default=None, help="K and V values, comma-separated (default the 9 of the issue)")
    p.add_argument("--k-values", default=None, help="K values only (default --values)")
    p.add_argument("--v-values", default=None, help="V values only (default --values)")
    p.add_argument("--ops", default="kda,gdn", help="comma-separated subset of kda,gdn")
    p.add_argument("--dtypes", default=None, help="default bf16,fp16 (cuda) or fp16,fp32 (cpu)")
    p.add_argument("--jobs", type=int, default=8, help="worker processes at once (default 8)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per (K, V) group, all its workers")
    p.add_argument("--out", default=None, help="output directory (default $OUT, else results/kv_grid)")
    p.add_argument("--budget", type=float, default=0.0,
                   help="seconds: start no group after this (those left are NOTRUN); 0 = no limit")
    p.add_argument("--summarize", action="store_true",
                   help="run nothing: the table and CSV of every group already under --out/groups")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # K,V: run one group (internal)
    p.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)  # the worker's first case index
    p.add_argument("--crash-at", default=None,
                   help="K,V,I: the worker aborts at case I of group (K, V), to check the crash reporting")
    args = p.parse_args(argv)
    args.ops = [o for o in args.ops.split(",") if o]
    if not args.ops or set(args.ops) - {"kda", "gdn"}:
        p.error(f"--ops must be a comma-separated subset of kda,gdn, got {','.join(args.ops)!r}")
    args.dtypes = args.dtypes.split(",") if args.dtypes else (["bf16", "fp16"] if args.device == "cuda"
                                                              else ["fp16", "fp32"])
    allowed = ("fp16", "fp32") if args.device == "cpu" else ("bf16", "fp16", "fp32")
    if set(args.dtypes) - set(allowed):
        p.error(f"--dtypes must be a subset of {','.join(allowed)} on {args.device} "
                f"(the interpreter's bf16 tl.dot is wrong), got {','.join(args.dtypes)!r}")
    if args.jobs < 1 or args.timeout <= 0 or args.budget < 0:
        p.error(f"--jobs must be >= 1, --timeout > 0 and --budget >= 0, got {args.jobs}, {args.timeout:g} "
                f"and {args.budget:g}")
    try:
        values = parse_ints(args.values, "--values") if args.values else (
            QUICK_VALUES[args.device] if args.quick else VALUES)
        args.k_values = parse_ints(args.k_values, "--k-values") if args.k_values else values
        args.v_values = parse_ints(args.v_values, "--v-values") if args.v_values else values
        args.worker = parse_ints(args.worker, "--worker") if args.worker else None
        args.crash_at = parse_ints(args.crash_at, "--crash-at", minimum=0) if args.crash_at else None
    except SystemExit as err:
        p.error(str(err).removeprefix("error: "))
    if args.crash_at is not None and len(args.crash_at) != 3:
        p.error(f"--crash-at must be K,V,I, got {args.crash_at}")
    args.out = Path(args.out or os.environ.get("OUT") or REPO / "results" / "kv_grid")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return run_worker(args)
    if args.device == "cuda" and not args.summarize:
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA device (use --device cpu for the interpreter run)", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.summarize:  # the table of every group under --out/groups, e.g. from runs over parts of the grid
        rows = [r for path in sorted((args.out / "groups").glob("K*V*.csv")) for r in read_rows(path)]
        k_values = sorted({int(r["K"]) for r in rows})
        v_values = sorted({int(r["V"]) for r in rows})
        ops = [op for op in ("kda", "gdn") if any(r["op"] == op for r in rows)]
    else:
        for K in args.k_values:  # this run's groups only: other parts of the grid may share --out
            for V in args.v_values:
                for old in (group_csv(args.out, K, V), group_csv(args.out, K, V).with_suffix(".log")):
                    old.unlink(missing_ok=True)
        n_groups = len(args.k_values) * len(args.v_values)
        print(f"{n_groups} (K, V) groups x {len(args.ops)} ops x {len(args.dtypes)} dtypes x 2 layouts; "
              f"{args.jobs} processes; device {args.device}", flush=True)
        rows = run_grid(args)
        k_values, v_values, ops = args.k_values, args.v_values, args.ops
    write_rows(rows, args.out / "kv_grid.csv")
    table = format_grid(rows, ops, k_values, v_values)
    ok = bool(rows) and all(r["status"] == "ok" for r in rows)
    text = f"{table}\nwall time {time.perf_counter() - start:.0f}s\n{'PASS' if ok else 'FAIL'}"
    (args.out / "kv_grid.txt").write_text(text + "\n")
    print("\n" + text, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
