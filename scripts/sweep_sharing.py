"""Do small runs gain from sharing one GPU? Aggregate training throughput of N concurrent processes, N = 1, 2, 4.

    python scripts/sweep_sharing.py [--jobs 1,2,4] [--mixers kda,mla] [--seq-lens 256,1024] [--steps 300]

For each (mixer, T, N) it starts N copies of `python -m arena.bench train mixers=[<mixer>] seq_lens=[<T>]` at
once (each a separate process with its own model, as a joblib sweep runs them), reads each one's steady-state
ms/step from its CSV (a window of `--steps` steps after warm-up) and reports the aggregate: the sum over the
processes of steps per second, and that sum over the single process's. A ratio near N means the GPU had idle
room (launch-bound small runs); near 1, the processes only share the same saturated card. GPU only; the windows
of concurrent processes overlap but do not coincide, so treat differences under ~10 % as noise.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_group(mixer: str, T: int, jobs: int, steps: int, root: Path) -> list[float]:
    """ms/step of each of `jobs` concurrent bench processes."""
    procs, outs = [], []
    for j in range(jobs):
        out = root / f"{mixer}_{T}_{jobs}_{j}"
        outs.append(out)
        cmd = [sys.executable, "-m", "arena.bench", "train", f"mixers=[{mixer}]", f"seq_lens=[{T}]",
               f"steps={steps}", "warmup=20", f"out={out}"]
        procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "TQDM_DISABLE": "1"}))
    times = []
    for proc, out in zip(procs, outs):
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"sweep_sharing: a bench process failed: {err.strip().splitlines()[-1:]}")
        (path,) = out.glob("*.csv")
        with open(path) as f:
            times.append(float(next(csv.DictReader(f))["step_ms"]))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="1,2,4")
    parser.add_argument("--mixers", default="kda,mla")
    parser.add_argument("--seq-lens", default="256,1024")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mixer in args.mixers.split(","):
            for T in (int(t) for t in args.seq_lens.split(",")):
                single = None
                for jobs in (int(j) for j in args.jobs.split(",")):
                    times = run_group(mixer, T, jobs, args.steps, Path(tmp))
                    rate = sum(1000.0 / ms for ms in times)  # steps per second, all processes together
                    single = single or rate
                    rows.append((mixer, T, jobs, sum(times) / len(times), rate, rate / single))
                    print(f"{mixer} T={T} jobs={jobs}: {rate:.1f} steps/s together", flush=True)
    print("\n| mixer | T | processes | ms/step each | steps/s together | vs one process |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mixer, T, jobs, ms, rate, gain in rows:
        print(f"| {mixer} | {T} | {jobs} | {ms:.1f} | {rate:.1f} | {gain:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
