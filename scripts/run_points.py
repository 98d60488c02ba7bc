"""Run a list of training points, one `python -m arena.run` each, N at a time, until done or a time limit.

    python scripts/run_points.py points.tsv --jobs 8 --time-limit 540
    python scripts/replicate_points.py results/runs/nope_vs_rope --seeds 1,2 > points.tsv   # one way to get a list

Hydra's sweeper (`python -m arena.run -m ...`) runs a Cartesian grid; this runs any list: a study's chosen
learning rates replicated over more seeds, the unfinished points of several grids, a hand-picked slice. A points
file has one run a line: its run directory, a tab, then its overrides, space-separated (blank lines and lines
starting with # are ignored):

    results/runs/x/replicates/tiny-kda-flip_flop-lr0.001-s1<TAB>+experiment=nope_vs_rope model=tiny mixer=kda ...

Points start in file order, at most --jobs at a time (several small runs share one GPU: they are launch-bound).
A point whose run directory already holds a finished run (summary.json status completed or diverged) is skipped;
any other resumes there (arena.run resumes from the checkpoint an interrupted run left). At the time limit every
running point gets SIGTERM, which stops it at its next step with a checkpoint (arena/runtime.py), and the script
waits up to --grace seconds for them: run the same command again to go on. Each point's output goes to
<log dir>/<run dir, '/' written '__'>.log. The last lines printed are a table: point, status, steps. Each point's
OpenMP / MKL / OpenBLAS thread pools get the machine's cores over --jobs, as Hydra's joblib launcher gives its
workers, unless OMP_NUM_THREADS (or the others) is set.

Exit status: 0 when every point finished (completed or diverged), 1 when some failed, 124 when the time limit left
points unfinished, 2 (one line on stderr, nothing run) for a malformed points file.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_throughput import last_logged_step  # noqa: E402  (the same reading of a run's metrics.jsonl)

FINISHED = ("completed", "diverged")
# the math libraries' thread pools, each capped per point as joblib's loky backend (and so Hydra's joblib launcher)
# caps its workers: N points that each start a thread per core oversubscribe the host, and launch-bound GPU runs
# wait on it. Seen on a 16-core H100 host: 10 one-layer parity points uncapped ran 5.5 steps/s each at 11-16 % GPU
# use, 6 such points under the joblib launcher ~100 steps/s each (the cap is the likely difference; not yet timed
# alone)
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def point_env(jobs: int) -> dict[str, str]:
    """The environment a point runs in: each of THREAD_VARS the caller did not set becomes this machine's usable
    cores over `jobs` (at least 1); one the caller set is kept."""
    env = dict(os.environ)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for var in THREAD_VARS:
        env.setdefault(var, str(max(1, cores // jobs)))
    return env


class PointsFileError(Exception):
    """A points file that cannot be run: the message is the one-line error."""


def read_points(path: Path) -> list[tuple[Path, list[str]]]:
    points, dirs = [], set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" not in line:
            raise PointsFileError(f"{path}:{number}: expected '<run dir><TAB><overrides>', got {line[:80]!r}")
        run_dir, overrides = line.split("\t", 1)
        name, run_dir = run_dir.strip(), Path(run_dir.strip())
        if not name or run_dir in dirs:  # Path("") is ".": test the text
            raise PointsFileError(f"{path}:{number}: run directory {str(run_dir)!r} is empty or listed twice")
        if any(o.lstrip("+~").startswith("hydra.run.dir=") for o in overrides.split()):
            raise PointsFileError(f"{path}:{number}: hydra.run.dir is set by the first column, not the overrides")
        dirs.add(run_dir)
        points.append((run_dir, overrides.split()))
    return points


def status_of(run_dir: Path) -> tuple[str, int]:
    """(status, steps) of a run directory: summary.json's, or 'stopped'/'not started' with metrics.jsonl's last step."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            data = json.loads(summary.read_text())
            return str(data.get("status")), int(data.get("steps") or 0)
        except (ValueError, TypeError):
            return "unreadable", 0
    steps = last_logged_step(run_dir)
    return ("stopped" if steps else "not started"), steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("points", type=Path, help="the points file (run dir, tab, overrides; one a line)")
    parser.add_argument("--jobs", type=int, default=4, help="points running at once (default 4)")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds; then SIGTERM (default: none)")
    parser.add_argument("--grace", type=float, default=45.0, help="seconds to wait for stopped points (default 45)")
    parser.add_argument("--log-dir", type=Path, default=None, help="default: <points file>.logs/")
    parser.add_argument("--runner", default=f"{sys.executable} -m arena.run",
                        help="the command a point's overrides are given to (default: this Python's arena.run)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        print(f"run_points: error: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    if not args.points.is_file():
        print(f"run_points: error: {args.points} is not a file", file=sys.stderr)
        return 2
    try:
        points = read_points(args.points)
    except PointsFileError as err:
        print(f"run_points: error: {err}", file=sys.stderr)
        return 2
    log_dir = args.log_dir or args.points.with_name(args.points.name + ".logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if args.time_limit is None else time.monotonic() + args.time_limit
    todo = [(d, o) for d, o in points if status_of(d)[0] not in FINISHED]
    print(f"run_points: {len(points)} points, {len(points) - len(todo)} finished already, {len(todo)} to run, "
          f"{args.jobs} at a time", flush=True)
    running: dict[Path, tuple[subprocess.Popen, object]] = {}
    env = point_env(args.jobs)
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)  # this script stopped: stop the points the same way, then report
    try:
        while todo or running:
            for run_dir, (proc, log) in list(running.items()):
                if proc.poll() is not None:
                    log.close()
                    del running[run_dir]
                    print(f"run_points: {run_dir}: {status_of(run_dir)[0]} (exit {proc.returncode})", flush=True)
            if deadline is not None and time.monotonic() >= deadline:
                stopping = True
            if stopping:
                break
            while todo and len(running) < args.jobs:
                run_dir, overrides = todo.pop(0)
                # the whole path in the name: two points may share a last folder name under different parents
                log = open(log_dir / (str(run_dir).strip("/").replace("/", "__") + ".log"), "a")
                command = args.runner.split() + overrides + [f"hydra.run.dir={run_dir}"]
                running[run_dir] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log)
            time.sleep(0.5)
    except KeyboardInterrupt:
        stopping = True
    if running:
        print(f"run_points: stopping {len(running)} running points (SIGTERM: each checkpoints at its next step)",
              flush=True)
        for proc, _ in running.values():
            proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + args.grace
        for proc, log in running.values():
            try:
                proc.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()  # past the grace: its last periodic checkpoint is what a rerun resumes from
                proc.wait()
            log.close()
    statuses = {run_dir: status_of(run_dir) for run_dir, _ in points}
    width = max(len(str(d)) for d in statuses) if statuses else 5
    print(f"{'point':<{width}}  {'status':<12} steps")
    for run_dir, (status, steps) in statuses.items():
        print(f"{str(run_dir):<{width}}  {status:<12} {steps}")
    counts = {}
    for status, _ in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    print("run_points: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), flush=True)
    if any(s not in FINISHED for s, _ in statuses.values()):
        return 1 if not stopping and not todo else 124
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
