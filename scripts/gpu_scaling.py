"""Data-parallel scaling on 2 GPUs: the same run on 1 GPU, with DDP and with FSDP2 over 2 GPUs (torchrun).

    python3 scripts/gpu_scaling.py                       # GPU machine with 2 GPUs; < 8 min; tables last
    python3 scripts/gpu_scaling.py --tiny                # CPU, gloo, a tiny model: checks this script in ~1 min

Each mode is one `python -m arena.run` (1 GPU: CUDA_VISIBLE_DEVICES=0) or `torchrun --standalone --nproc_per_node 2
-m arena.run train.parallel=ddp|fsdp`, with the same config and global batch (train.batch_size is global, so the
three runs train on the same batches: arena/parallel.py): by default 8 KDA layers, d_model 1024, T=2048 on the
bundled text corpus (task=text), bf16 autocast, 16 sequences a step. Printed last: steady tokens/s (global),
scaling efficiency (tokens/s over 2 x the 1-GPU tokens/s), peak memory of rank 0, and the loss curves side by
side (train loss per window and validation loss at each evaluation) with the largest relative gap to the 1-GPU
curve: bf16 rounding makes them close, not equal (the CPU fp32 equality is tests/test_parallel.py).

Run dirs go to $OUT/scaling/<mode> (OUT defaults to results/gpu); each mode is time-boxed (--timeout). Offline
GPU image: carry .whl (hydra-core, omegaconf, antlr4 wheels, as scripts/gpu_train_speed.sh does); this script
installs them into /tmp/site and puts it on PYTHONPATH for the runs when hydra is not importable.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("none", "ddp", "fsdp")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="CPU, gloo, a tiny model (checks the script)")
    p.add_argument("--modes", default="none,ddp,fsdp", help="comma list of none (1 process), ddp, fsdp")
    p.add_argument("--nproc", type=int, default=2, help="processes (GPUs) for ddp and fsdp")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default 100; --tiny 12)")
    p.add_argument("--timeout", type=int, default=140, help="seconds per mode")
    p.add_argument("--model", default="kda", choices=("kda", "hybrid"),
                   help="kda: 8 KDA layers; hybrid: Kimi Linear's 3 KDA : 1 MLA (NoPE)")
    p.add_argument("--out", default=os.environ.get("OUT", "results/gpu"))
    args = p.parse_args()
    bad = sorted(set(args.modes.split(",")) - set(MODES))
    if bad:
        p.error(f"--modes: {', '.join(bad)} not known; choose from {', '.join(MODES)}")
    if args.nproc < 2:
        p.error(f"--nproc={args.nproc} must be >= 2 (ddp and fsdp over one process measure nothing)")
    return args


def overrides(args: argparse.Namespace) -> list[str]:
    if args.tiny:
        steps = args.steps or 12
        return ["task=mqar", f"train.steps={steps}", "train.eval_every=4", "train.batch_size=8", "train.device=cpu",
                "train.warmup_steps=2", "task.num_test=32", "model.d_model=32", "mixer.num_heads=2",
                "train.target_accuracy=2.0"]
    steps = args.steps or 100
    model = (["model=hybrid_3to1", "model.n_layers=8"] if args.model == "hybrid" else ["model.n_layers=8"])
    return [*model, "model.d_model=1024", "model.mlp_ratio=2.75", "mixer.num_heads=8", "task=text",
            "task.seq_len=2048", "task.num_test=8", f"train.steps={steps}", f"train.eval_every={max(1, steps // 4)}",
            "train.batch_size=16", "train.lr=1e-3", "train.warmup_steps=10", "train.target_accuracy=2.0",
            "train.eval_batch_size=8", "train.precision=auto"]


def environment(args: argparse.Namespace) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    path = [str(REPO)]
    try:
        import hydra  # noqa: F401
    except ImportError:  # the offline GPU image: wheels carried in .whl
        wheels = glob.glob(str(REPO / ".whl" / "*.whl"))
        if wheels:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                            "--upgrade", "--target", "/tmp/site", *wheels], check=False)
        path.insert(0, "/tmp/site")
    env["PYTHONPATH"] = os.pathsep.join(path + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if not args.tiny:
        env.setdefault("TRITON_INTERPRET", "0")
    return env


def run_mode(mode: str, args: argparse.Namespace, env: dict, out: Path) -> dict:
    results = out / mode
    common = ["-m", "arena.run", f"results_dir={results}", "resume=false", *overrides(args)]
    if mode == "none":
        command = [sys.executable, *common]
        env = {**env, "CUDA_VISIBLE_DEVICES": env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]}
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                   str(args.nproc), *common, f"train.parallel={mode}"]
    print(f"== {mode}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    log = out / f"{mode}.log"
    try:
        with open(log, "w") as f:
            rc = subprocess.run(command, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                                timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    wall = time.perf_counter() - start
    summaries = sorted(results.rglob("summary.json"))
    if not summaries:
        tail = log.read_text()[-1500:] if log.is_file() else ""
        print(f"   {mode}: no summary (exit {rc}, {wall:.0f}s); log tail:\n{tail}", flush=True)
        return {"mode": mode, "status": f"exit {rc}", "rows": []}
    run_dir = summaries[-1].parent
    summary = json.loads(summaries[-1].read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if "train_loss" in line]
    print(f"   {mode}: {summary['status']} in {wall:.0f}s, exit {rc}; {run_dir}", flush=True)
    return {"mode": mode, "status": summary["status"], "rows": rows, "tokens_per_s": summary.get("tokens_per_s"),
            "peak_gb": (summary.get("peak_memory_bytes") or 0) / 2**30, "wall_s": wall}


def table(results: list[dict], nproc: int) -> str:
    base = next((r for r in results if r["mode"] == "none" and r.get("tokens_per_s")), None)
    lines = ["| mode | processes | status | tokens/s | scaling efficiency | peak memory (rank 0) | wall |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        procs = 1 if r["mode"] == "none" else nproc
        tps = r.get("tokens_per_s")
        eff = (f"{tps / (procs * base['tokens_per_s']):.2f}" if tps and base and procs > 1 else
               "1.00" if r["mode"] == "none" and tps else "n/a")
        if not tps:
            lines.append(f"| {r['mode']} | {procs} | {r['status']} | n/a | n/a | n/a | n/a |")
            continue
        lines.append(f"| {r['mode']} | {procs} | {r['status']} | {tps:,.0f} | {eff} | {r['peak_gb']:.2f} GiB | "
                     f"{r['wall_s']:.0f}s |")
    curves = [r for r in results if r["rows"]]
    if curves:
        head = " | ".join(f"{r['mode']} train | {r['mode']} valid" for r in curves)
        lines += ["", f"| step | {head} |", "|---" * (1 + 2 * len(curves)) + "|"]
        for i, row in enumerate(curves[0]["rows"]):
            cells = []
            for r in curves:
                other = r["rows"][i] if i < len(r["rows"]) else {}
                cells += [f"{other.get(key, float('nan')):.4f}" for key in ("train_loss", "valid_loss")]
            lines.append(f"| {row['step']} | {' | '.join(cells)} |")
        if base is not None and base["rows"]:
            for r in curves:
                if r is base:
                    continue
                gaps = [abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for a, b in zip(r["rows"], base["rows"])
                        for k in ("train_loss", "valid_loss") if k in a and k in b]
                if gaps:
                    lines.append(f"\n{r['mode']}: largest relative gap to the 1-process curve {max(gaps):.2e}")
    return "\n".join(lines)


def main() -> None:
    args = parse()
    out = (Path(args.out) / "scaling").resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = environment(args)
    if not args.tiny:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count < args.nproc:
            sys.exit(f"gpu_scaling: {count} CUDA device(s) visible, --nproc={args.nproc} needs that many; use --tiny "
                     "on a CPU")
    results = [run_mode(mode, args, env, out) for mode in args.modes.split(",")]
    text = table(results, args.nproc)
    (out / "scaling.md").write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
