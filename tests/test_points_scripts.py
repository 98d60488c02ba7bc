"""scripts/run_points.py (a points file run N at a time, with a time limit) and scripts/replicate_points.py (the
points that replicate each group's chosen learning rate over more seeds, plus the unfinished runs).

    python -m pytest -q tests/test_points_scripts.py      (about 18 s on 2 shared CPU cores)

run_points.py runs a fake runner (written into tmp_path) instead of `python -m arena.run`: it takes `key=value`
arguments, sleeps `sleep=` seconds, writes summary.json (completed, or interrupted at SIGTERM) into
`hydra.run.dir=`, and logs its start and end times to a shared events file beside itself. replicate_points.py
reads a fake results folder: config.yaml, summary.json and .hydra/overrides.yaml per run, as arena.run writes them.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RUN_POINTS = REPO / "scripts" / "run_points.py"
REPLICATE_POINTS = REPO / "scripts" / "replicate_points.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")  # the pools capped per point

FAKE_RUNNER = r'''
import json, os, signal, sys, time
from pathlib import Path

args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
run_dir = Path(args["hydra.run.dir"])
run_dir.mkdir(parents=True, exist_ok=True)
events = Path(__file__).with_name("events.txt")
stopped = []
signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))


def log(event):
    with open(events, "a") as f:
        f.write(f"{event} {time.time():.6f} {run_dir}\n")


log("start")
with open(run_dir / "marker", "a") as f:  # one line per start: the arguments it was given
    f.write(" ".join(sys.argv[1:]) + "\n")
(run_dir / "threads").write_text(" ".join(os.environ.get(v, "unset") for v in
                                          ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")))
began = time.monotonic()
while time.monotonic() - began < float(args.get("sleep", 0)) and not stopped:
    time.sleep(0.01)
steps = int(args.get("steps", 100))
if stopped:
    summary = {"status": "interrupted", "steps": max(1, min(steps - 1, int((time.monotonic() - began) * 10)))}
else:
    summary = {"status": args.get("status", "completed"), "steps": steps}
(run_dir / "summary.json").write_text(json.dumps(summary))
log("term" if stopped else "end")
'''


# --------------------------------------------------------------------------------------------- run_points.py


@pytest.fixture
def runner(tmp_path) -> str:
    path = tmp_path / "fake_runner.py"
    path.write_text(FAKE_RUNNER)
    return f"{sys.executable} {path}"


def write_points(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "points.tsv"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def run_points(points: Path, runner: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUN_POINTS), str(points), "--runner", runner, *args],
                          capture_output=True, text=True, env=ENV, timeout=timeout, cwd=points.parent)


def table(stdout: str, run_dirs: list[Path]) -> dict[Path, tuple[str, int]]:
    """The final table's (status, steps) of each run dir."""
    found = {}
    for run_dir in run_dirs:
        rows = [m for line in stdout.splitlines()
                if (m := re.fullmatch(re.escape(str(run_dir)) + r"\s+(\S.*?)\s+(\d+)", line))]
        assert len(rows) == 1, f"{run_dir} is not in the table once:\n{stdout}"
        found[run_dir] = (rows[0].group(1), int(rows[0].group(2)))
    return found


def events(tmp_path: Path) -> list[tuple[str, float, Path]]:
    path = tmp_path / "events.txt"
    if not path.is_file():
        return []
    return [(e, float(t), Path(d)) for e, t, d in (line.split(" ", 2) for line in path.read_text().splitlines())]


def test_every_point_runs_with_its_overrides_and_the_table_says_completed(tmp_path, runner):
    dirs = [tmp_path / "runs" / f"p{i}" for i in range(3)]
    points = write_points(tmp_path, ["# a comment", ""] + [
        f"{d}\tmodel=tiny mixer=kda sleep=0.1 steps={10 + i}" for i, d in enumerate(dirs)])
    done = run_points(points, runner, "--jobs", "3")
    assert done.returncode == 0, done.stderr
    assert "3 points, 0 finished already, 3 to run, 3 at a time" in done.stdout
    assert table(done.stdout, dirs) == {d: ("completed", 10 + i) for i, d in enumerate(dirs)}
    for i, d in enumerate(dirs):  # the overrides as given, then the run dir from the first column, once each
        assert (d / "marker").read_text() == f"model=tiny mixer=kda sleep=0.1 steps={10 + i} hydra.run.dir={d}\n"
        log = str(d).strip("/").replace("/", "__") + ".log"  # the whole path: last names may repeat
        assert (tmp_path / "points.tsv.logs" / log).is_file()
    assert done.stdout.strip().splitlines()[-1] == "run_points: 3 completed"


def test_a_failed_point_gives_exit_1(tmp_path, runner):
    dirs = [tmp_path / "ok", tmp_path / "bad"]
    points = write_points(tmp_path, [f"{dirs[0]}\tsteps=5", f"{dirs[1]}\tstatus=failed steps=3"])
    done = run_points(points, runner, "--jobs", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert table(done.stdout, dirs) == {dirs[0]: ("completed", 5), dirs[1]: ("failed", 3)}


def test_finished_points_are_skipped_and_interrupted_ones_rerun(tmp_path, runner):
    done_dir, diverged_dir, interrupted_dir, new_dir = (tmp_path / n for n in ("done", "div", "int", "new"))
    for run_dir, status, steps in ((done_dir, "completed", 40), (diverged_dir, "diverged", 30),
                                   (interrupted_dir, "interrupted", 5)):
        run_dir.mkdir()
        (run_dir / "summary.json").write_text(json.dumps({"status": status, "steps": steps}))
    dirs = [done_dir, diverged_dir, interrupted_dir, new_dir]
    points = write_points(tmp_path, [f"{d}\tsteps=50" for d in dirs])
    done = run_points(points, runner, "--jobs", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 points, 2 finished already, 2 to run" in done.stdout
    assert not (done_dir / "marker").exists() and not (diverged_dir / "marker").exists()
    assert sorted(d.name for e, _, d in events(tmp_path) if e == "start") == ["int", "new"]
    assert table(done.stdout, dirs) == {done_dir: ("completed", 40), diverged_dir: ("diverged", 30),
                                        interrupted_dir: ("completed", 50), new_dir: ("completed", 50)}


def test_at_most_jobs_points_run_at_once(tmp_path, runner):
    dirs = [tmp_path / f"p{i}" for i in range(4)]
    points = write_points(tmp_path, [f"{d}\tsleep=0.3" for d in dirs])
    done = run_points(points, runner, "--jobs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    log = events(tmp_path)
    assert sorted(d.name for e, _, d in log if e == "start") == [d.name for d in dirs]
    changes = sorted((t, +1 if e == "start" else -1) for e, t, _ in log)
    running = list(itertools.accumulate(change for _, change in changes))
    assert max(running) == 2, changes  # two at a time: never three, and not one after another either
    starts = {d.name: t for e, t, d in log if e == "start"}
    first_end = min(t for e, t, _ in log if e == "end")
    assert max(starts["p0"], starts["p1"]) < first_end <= min(starts["p2"], starts["p3"])  # in file order


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@pytest.mark.parametrize("jobs", [1, 2, 64])
def test_each_point_gets_the_cores_over_jobs_as_its_thread_pools(tmp_path, runner, jobs, monkeypatch):
    for var in THREAD_VARS:
        monkeypatch.delitem(ENV, var, raising=False)
    dirs = [tmp_path / f"p{i}" for i in range(2)]
    done = run_points(write_points(tmp_path, [f"{d}\tsleep=0" for d in dirs]), runner, "--jobs", str(jobs))
    assert done.returncode == 0, done.stdout + done.stderr
    want = str(max(1, cores() // jobs))  # 1 job: every core; more jobs than cores: still one thread
    assert [(d / "threads").read_text() for d in dirs] == [" ".join([want] * 3)] * 2


def test_a_thread_count_the_caller_set_is_kept(tmp_path, runner, monkeypatch):
    monkeypatch.setitem(ENV, "OMP_NUM_THREADS", "3")
    for var in THREAD_VARS[1:]:
        monkeypatch.delitem(ENV, var, raising=False)
    run_dir = tmp_path / "p0"
    done = run_points(write_points(tmp_path, [f"{run_dir}\tsleep=0"]), runner, "--jobs", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (run_dir / "threads").read_text() == f"3 {cores()} {cores()}"


def test_the_time_limit_stops_running_points_and_leaves_the_rest(tmp_path, runner):
    dirs = [tmp_path / f"p{i}" for i in range(3)]
    points = write_points(tmp_path, [f"{d}\tsleep=20 steps=1000" for d in dirs])
    began = time.monotonic()
    done = run_points(points, runner, "--jobs", "2", "--time-limit", "0.8", "--grace", "10")
    assert time.monotonic() - began < 8  # stopped, not waited for
    assert done.returncode == 124, done.stdout + done.stderr
    log = events(tmp_path)
    assert sorted(d.name for e, _, d in log if e == "term") == ["p0", "p1"]  # SIGTERM reached both running ones
    assert not any(e == "end" for e, _, _ in log)
    rows = table(done.stdout, dirs)
    for run_dir in dirs[:2]:
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "interrupted" and 0 < summary["steps"] < 1000
        assert rows[run_dir] == ("interrupted", summary["steps"])
    assert rows[dirs[2]] == ("not started", 0) and not dirs[2].exists()
    assert "stopping 2 running points" in done.stdout


@pytest.mark.parametrize("bad, what", [
    ("{d}/c model=tiny", "no tab"),
    ("{d}/a\tmodel=tiny", "a run dir listed twice"),
    ("{d}/c\tmodel=tiny hydra.run.dir={d}/elsewhere", "hydra.run.dir in the overrides"),
    ("{d}/c\tmodel=tiny ++hydra.run.dir={d}/elsewhere", "++hydra.run.dir in the overrides"),
    ("\tmodel=tiny", "an empty run dir"),
    ("   \tmodel=tiny", "a blank run dir"),
])
def test_a_malformed_points_file_runs_nothing(tmp_path, runner, bad, what):
    d = tmp_path / "runs"
    points = write_points(tmp_path, [f"{d}/a\tmodel=tiny", f"{d}/b\tmodel=tiny", bad.format(d=d)])
    done = run_points(points, runner)
    assert done.returncode == 2, what
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_points: error: "), done.stderr
    assert "points.tsv:3:" in lines[0]
    assert not d.exists() and events(tmp_path) == [] and not (tmp_path / "points.tsv.logs").exists()


@pytest.mark.parametrize("jobs", ["0", "-1"])
def test_jobs_below_one_is_an_error(tmp_path, runner, jobs):
    points = write_points(tmp_path, [f"{tmp_path / 'a'}\tmodel=tiny"])
    done = run_points(points, runner, "--jobs", jobs)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_points: error: --jobs"), done.stderr
    assert events(tmp_path) == [] and not (tmp_path / "a").exists()


# --------------------------------------------------------------------------------------- replicate_points.py

HASHES = itertools.count()


def write_run(root: Path, rel: str, *, mixer: str, lr: float, seed: int, status: str = "completed",
              valid: float | None = None, test: float | None = None, task: str = "flip_flop",
              overrides: list[str] | None = None) -> Path:
    """A run dir as arena.run leaves it: config.yaml, summary.json, metrics.jsonl and .hydra/overrides.yaml."""
    run_dir = root / rel
    (run_dir / ".hydra").mkdir(parents=True)
    config = {"mixer": {"name": mixer, "impl": "torch", "num_heads": 2},
              "task": {"name": task, "seq_len": 64, "vocab_size": 64},
              "model": {"d_model": 64, "n_layers": 2, "layout": None},
              "train": {"steps": 200, "batch_size": 64, "lr": lr, "seed": seed, "device": "auto"},
              "logger": {"kind": "none"}, "results_dir": str(root), "experiment": "demo"}
    finished = status == "completed"
    summary = {"name": f"tiny-{mixer}-{task}", "status": status, "steps": 200 if finished else 60,
               "mixer": mixer, "model": "tiny", "task": task, "experiment": "demo", "layers": [mixer, mixer],
               "config_hash": f"h{next(HASHES)}", "seq_len": 64,
               "valid_accuracy": valid if finished else None, "test_accuracy": test if finished else None}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 50, "split": "valid", "accuracy": valid or 0.5}) + "\n")
    if overrides is None:
        overrides = [f"task={task}", "model=tiny", f"mixer={mixer}", f"train.lr={lr:g}", f"train.seed={seed}",
                     "+experiment=demo"]
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return run_dir


def replicate(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPLICATE_POINTS), str(root), *args],
                          capture_output=True, text=True, env=ENV, timeout=60)


def parse(stdout: str) -> dict[Path, list[str]]:
    """Points file text -> {run dir: overrides}, checking each line has exactly one tab."""
    found = {}
    for line in stdout.splitlines():
        assert line.count("\t") == 1, line
        run_dir, overrides = line.split("\t")
        assert Path(run_dir) not in found
        found[Path(run_dir)] = overrides.split()
    return found


def base(mixer: str, lr: str, seed: int, task: str = "flip_flop") -> list[str]:
    return [f"task={task}", "model=tiny", f"mixer={mixer}", f"train.lr={lr}", f"train.seed={seed}",
            "+experiment=demo"]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """Four groups (mixers kda, gdn and mla on flip_flop, kda on mqar), all at lrs 3e-4 and 1e-3 on seed 0."""
    root = tmp_path_factory.mktemp("study")
    # A (kda): 1e-3 is better on validation, 3e-4 on test; the rate is chosen on validation
    write_run(root, "sweep/0_tiny-kda-flip_flop-lr0.0003-s0", mixer="kda", lr=3e-4, seed=0, valid=0.6, test=0.95)
    write_run(root, "sweep/1_tiny-kda-flip_flop-lr0.001-s0", mixer="kda", lr=1e-3, seed=0, valid=0.8, test=0.5)
    # B (gdn): 3e-4 chosen; seed 1 at 3e-4 already completed, seed 2 interrupted in a folder of its own; 1e-3 has a
    # seed 2 left interrupted too (not the chosen rate: left alone without --unfinished)
    write_run(root, "sweep/2_tiny-gdn-flip_flop-lr0.0003-s0", mixer="gdn", lr=3e-4, seed=0, valid=0.9, test=0.9)
    write_run(root, "sweep/3_tiny-gdn-flip_flop-lr0.001-s0", mixer="gdn", lr=1e-3, seed=0, valid=0.7, test=0.7)
    write_run(root, "replicates/tiny-gdn-flip_flop-lr0.0003-s1", mixer="gdn", lr=3e-4, seed=1, valid=0.85,
              test=0.9)
    write_run(root, "later/tiny-gdn-flip_flop-lr0.0003-s2", mixer="gdn", lr=3e-4, seed=2, status="interrupted")
    write_run(root, "later/tiny-gdn-flip_flop-lr0.001-s2", mixer="gdn", lr=1e-3, seed=2, status="interrupted")
    # C (mla): nothing completed, so no rate chosen
    write_run(root, "sweep/4_tiny-mla-flip_flop-lr0.0003-s0", mixer="mla", lr=3e-4, seed=0, status="interrupted")
    write_run(root, "sweep/5_tiny-mla-flip_flop-lr0.001-s0", mixer="mla", lr=1e-3, seed=0, status="failed")
    # D (kda on mqar): 1e-3 completed, 3e-4 interrupted, with its own overrides and a failed attempt set aside in
    # attempt_1/ (its own config_hash, so only the attempt_ rule keeps it out, not the duplicate rule)
    write_run(root, "sweep/6_tiny-kda-mqar-lr0.001-s0", mixer="kda", lr=1e-3, seed=0, valid=0.7, test=0.7,
              task="mqar")
    own = ["task=mqar", "model=tiny", "mixer=kda", "train.lr=0.0003", "train.seed=0", "+experiment=demo",
           "train.eval_every=25", "hydra.job.chdir=false"]
    resumed = write_run(root, "sweep/7_tiny-kda-mqar-lr0.0003-s0", mixer="kda", lr=3e-4, seed=0,
                        status="interrupted", task="mqar", overrides=own)
    write_run(resumed, "attempt_1", mixer="kda", lr=3e-4, seed=0, status="failed", task="mqar",
              overrides=["task=mqar", "train.lr=0.0003", "attempt=1"])
    return root


@pytest.fixture(scope="module")
def seeds_12(study) -> dict[Path, list[str]]:
    done = replicate(study, "--seeds", "1,2")
    assert done.returncode == 0, done.stderr
    found = parse(done.stdout)
    assert done.stderr.strip().splitlines()[-1] == f"replicate_points: {len(found)} points"
    return found


@pytest.fixture(scope="module")
def seeds_12_unfinished(study) -> dict[Path, list[str]]:
    done = replicate(study, "--seeds", "1,2", "--unfinished")
    assert done.returncode == 0, done.stderr
    return parse(done.stdout)


def of_mixer(found: dict[Path, list[str]], mixer: str, task: str = "flip_flop") -> dict[Path, list[str]]:
    return {d: o for d, o in found.items() if f"mixer={mixer}" in o and f"task={task}" in o}


def test_the_rate_chosen_on_validation_is_replicated_on_each_new_seed(study, seeds_12):
    assert of_mixer(seeds_12, "kda") == {
        study / "replicates" / "tiny-kda-flip_flop-lr0.001-s1": base("kda", "0.001", 1),
        study / "replicates" / "tiny-kda-flip_flop-lr0.001-s2": base("kda", "0.001", 2),
    }


def test_a_seed_finished_at_the_chosen_rate_is_left_out_and_an_unfinished_one_resumes_in_place(study, seeds_12):
    assert of_mixer(seeds_12, "gdn") == {study / "later" / "tiny-gdn-flip_flop-lr0.0003-s2": base("gdn", "0.0003", 2)}


def test_a_group_with_no_rate_chosen_gets_every_rate_on_each_seed(study, seeds_12):
    assert of_mixer(seeds_12, "mla") == {
        study / "replicates" / f"tiny-mla-flip_flop-lr{lr}-s{seed}": base("mla", lr, seed)
        for lr in ("0.0003", "0.001") for seed in (1, 2)}


def test_unfinished_runs_are_added_in_their_own_folders_and_attempts_never(study, seeds_12, seeds_12_unfinished):
    # without --unfinished: D's chosen rate on the new seeds only
    assert of_mixer(seeds_12, "kda", "mqar") == {
        study / "replicates" / f"tiny-kda-mqar-lr0.001-s{seed}": base("kda", "0.001", seed, "mqar")
        for seed in (1, 2)}
    assert len(seeds_12) == 2 + 1 + 4 + 2
    # with it: the same points first, then every run that stopped before the end, as it was launched (Hydra's own
    # hydra.* overrides left out)
    assert list(seeds_12_unfinished)[:len(seeds_12)] == list(seeds_12)
    added = {d: o for d, o in seeds_12_unfinished.items() if d not in seeds_12}
    assert added == {
        study / "sweep" / "7_tiny-kda-mqar-lr0.0003-s0": ["task=mqar", "model=tiny", "mixer=kda", "train.lr=0.0003",
                                                          "train.seed=0", "+experiment=demo", "train.eval_every=25"],
        study / "later" / "tiny-gdn-flip_flop-lr0.001-s2": base("gdn", "0.001", 2),
        study / "sweep" / "4_tiny-mla-flip_flop-lr0.0003-s0": base("mla", "0.0003", 0),
        study / "sweep" / "5_tiny-mla-flip_flop-lr0.001-s0": base("mla", "0.001", 0),
    }
    assert not any("attempt_" in str(d) for d in seeds_12_unfinished)


def test_a_run_without_its_overrides_file_is_an_error(tmp_path):
    write_run(tmp_path, "a", mixer="kda", lr=3e-4, seed=0, valid=0.6, test=0.6)
    (write_run(tmp_path, "b", mixer="kda", lr=1e-3, seed=0, valid=0.8, test=0.8) / ".hydra" / "overrides.yaml").unlink()
    done = replicate(tmp_path, "--seeds", "1")
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("replicate_points: error: "), done.stderr
    assert "overrides.yaml is missing" in lines[0]


@pytest.mark.parametrize("seeds", ["x", "1,x"])
def test_seeds_that_are_not_integers_are_an_error(tmp_path, seeds):
    write_run(tmp_path, "a", mixer="kda", lr=3e-4, seed=0, valid=0.6, test=0.6)
    done = replicate(tmp_path, "--seeds", seeds)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("replicate_points: error: --seeds"), done.stderr



def test_a_live_run_is_not_hidden_by_its_own_finished_attempt(tmp_path):
    # a resume=false rerun in the same folder set the completed first attempt aside (same config_hash): the live,
    # interrupted run is what counts, so it resumes in place instead of a new replicate beside it
    root = tmp_path / "r"
    write_run(root, "sweep/0_tiny-kda-flip_flop-lr0.001-s0", mixer="kda", lr=1e-3, seed=0, valid=0.8, test=0.8)
    live = write_run(root, "sweep/1_tiny-kda-flip_flop-lr0.001-s1", mixer="kda", lr=1e-3, seed=1,
                     status="interrupted")
    attempt = write_run(live, "attempt_1", mixer="kda", lr=1e-3, seed=1, valid=0.7, test=0.7)
    summary = json.loads((attempt / "summary.json").read_text())
    summary["config_hash"] = json.loads((live / "summary.json").read_text())["config_hash"]
    (attempt / "summary.json").write_text(json.dumps(summary))
    done = replicate(root, "--seeds", "1")
    assert done.returncode == 0, done.stderr
    assert parse(done.stdout) == {live: base("kda", "0.001", 1)}


# --------------------------------------------------------------------------------------------- gpu_points.sh


def test_gpu_points_runs_pools_and_packs_runs_and_unfinished_checkpoints(tmp_path, runner):
    """Two points files as two pools: the time limit interrupts the slow point; runs.tgz holds every run directory
    without checkpoints, resume.tgz only the unfinished run's checkpoint, weights.tgz only the finished run's
    weights (no optimizer state); the exit status is the worst pool's."""
    import tarfile

    done, slow = tmp_path / "runs" / "a" / "done", tmp_path / "runs" / "b" / "slow"
    for run in (done, slow):  # as arena.run leaves them: a config.yaml, and a checkpoint
        (run / "checkpoint").mkdir(parents=True)
        (run / "config.yaml").write_text("x: 1\n")
        (run / "checkpoint" / "model.safetensors").write_bytes(b"x" * 1000)
        (run / "checkpoint" / "meta.json").write_text("{}")
        (run / "checkpoint" / "trainer.pt").write_bytes(b"o" * 1000)
    small = tmp_path / "small.tsv"
    small.write_text(f"# quick\n{done}\tsleep=0.1 steps=7\n")
    big = tmp_path / "big.tsv"
    big.write_text(f"{slow}\tsleep=60\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho '1234 MiB, 50 %'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    out = tmp_path / "out"
    env = {**ENV, "ARENA_GPU_ENV": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(out), "LIMIT": "3",
           "MEM_EVERY": "0.2", "RUNNER": runner}
    for var in THREAD_VARS:
        env.pop(var, None)
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_points.sh"), f"{small}:1", f"{big}:2"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 124, proc.stdout + proc.stderr
    assert json.loads((done / "summary.json").read_text())["status"] == "completed"
    assert json.loads((slow / "summary.json").read_text())["status"] == "interrupted"
    with tarfile.open(out / "runs.tgz") as tar:
        names = tar.getnames()
    assert all(any(n.endswith(f"{run}/summary.json") for n in names) for run in ("a/done", "b/slow"))
    assert not any("checkpoint" in n for n in names)
    with tarfile.open(out / "resume.tgz") as tar:
        names = [n for n in tar.getnames() if n.endswith(".safetensors")]
    assert len(names) == 1 and names[0].endswith("b/slow/checkpoint/model.safetensors")
    with tarfile.open(out / "weights.tgz") as tar:
        names = sorted(n.split("runs/")[-1] for n in tar.getnames() if tar.getmember(n).isfile())
    assert names == ["a/done/checkpoint/meta.json", "a/done/checkpoint/model.safetensors"], names
    assert "weights.tgz holds the final weights of 1 finished run(s)" in proc.stdout
    assert "1234 MiB" in (out / "mem.log").read_text() and "gpu_points: peak memory 1234 MiB, 50 %" in proc.stdout
    pools = (out / "pools.log").read_text()
    assert "small.log (exit 0)" in pools and "big.log (exit 124)" in pools
    assert (out / "point_logs.tgz").is_file()
    threads = str(max(1, cores() // 3))  # the cores over the 3 points of both pools, not over each pool's own size
    assert [(run / "threads").read_text() for run in (done, slow)] == [" ".join([threads] * 3)] * 2


@pytest.mark.parametrize("pool, what", [("missing.tsv:2", "no points file"), ("points.tsv", "needs a pool size"),
                                        ("points.tsv:0", "needs a pool size")])
def test_gpu_points_refuses_a_bad_pool_before_any_work(tmp_path, pool, what):
    (tmp_path / "points.tsv").write_text("")
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_points.sh"), pool], cwd=tmp_path,
                          env={**ENV, "OUT": str(out)}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and what in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()
