"""The sweep-cost helpers (scripts/estimate_grid_hours.py, scripts/sweep_throughput.py) and the GPU drivers'
shell parts, on made-up inputs.

    python -m pytest -q tests/test_speed_scripts.py
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def bench_csv(path: Path, ms: dict[tuple[str, int], float]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["mixer", "T", "step_ms", "device"])
        writer.writeheader()
        for (mixer, T), value in ms.items():
            writer.writerow({"mixer": mixer, "T": T, "step_ms": value, "device": "TestGPU"})
    return path


def test_grid_hours_sums_steps_times_interpolated_step_time(tmp_path):
    mixers = ("kda", "gdn", "mamba2", "mla", "mla_nope", "mla_conv")  # kimi_synthetic's mixers
    # 10 ms at 256 and 30 ms at 1024 for every mixer: 512 interpolates to 10 + 20 * 256 / 768
    ms = {(m, T): v for m in mixers for T, v in ((256, 10.0), (1024, 30.0))}
    path = bench_csv(tmp_path / "b.csv", ms)
    proc = script("estimate_grid_hours.py", path, "--steps", 100, "--lengths", "256,512,1024", "--lrs", "1e-3",
                  "--sharing", "4:2.0")
    assert proc.returncode == 0, proc.stderr
    per_length = 10.0 + (10.0 + 20.0 * 256 / 768) + 30.0  # ms summed over the three lengths
    seconds = 100 * per_length / 1000 * len(mixers) * 3  # x 3 tasks x 1 learning rate
    assert "54 points" in proc.stdout and "TestGPU" in proc.stdout
    assert f"({seconds / 60:.1f} minutes)" in proc.stdout
    assert f"({seconds / 2 / 60:.1f} minutes)" in proc.stdout  # shared at 2x


def test_grid_hours_names_a_mixer_the_csv_has_not_measured(tmp_path):
    path = bench_csv(tmp_path / "b.csv", {("kda", 256): 10.0, ("kda", 1024): 30.0})
    proc = script("estimate_grid_hours.py", path, "--mixers", "kda,mla_conv", "--lengths", "256")
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert "mixer 'mla_conv'" in proc.stderr and "the CSV has kda" in proc.stderr and "--mixers" in proc.stderr


def test_grid_hours_refuses_a_missing_csv_in_one_line(tmp_path):
    proc = script("estimate_grid_hours.py", tmp_path / "none.csv")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_sweep_throughput_counts_finished_and_interrupted_points(tmp_path):
    done = tmp_path / "0_kda-palindrome-L256-lr0.001"
    cut = tmp_path / "1_gdn-palindrome-L512-lr0.001"
    failed = tmp_path / "2_mla-palindrome-L512-lr0.001"
    for run in (done, cut, failed):
        run.mkdir()
        (run / "config.yaml").write_text("x: 1\n")
    (done / "summary.json").write_text(json.dumps({"status": "completed", "steps": 300}))
    (cut / "metrics.jsonl").write_text(json.dumps({"step": 100}) + "\n" + json.dumps({"step": 200}) + "\n")
    (failed / "summary.json").write_text(json.dumps({"status": "failed", "steps": 0}))  # counts its evals: none
    proc = script("sweep_throughput.py", tmp_path, "--wall", 50)
    assert proc.returncode == 0, proc.stderr
    assert "500 training steps over 3 points (1 finished) in 50 s = 10.0 steps/s" in proc.stdout
    assert "kda L256: 300 steps" in proc.stdout and "gdn L512: 200 steps" in proc.stdout


def test_sweep_throughput_baseline_and_unfinished_runs(tmp_path):
    """A resumed sweep counts only its own steps; an interrupted run (it writes a summary too) is unfinished, so
    gpu_sweep.sh packs its checkpoint; a checkpoint's copy of config.yaml is not a point."""
    done, cut = tmp_path / "0_kda-mqar-lr0.001", tmp_path / "1_gdn-mqar-lr0.001"
    for run in (done, cut):
        (run / "checkpoint").mkdir(parents=True)
        (run / "config.yaml").write_text("x: 1\n")
        (run / "checkpoint" / "config.yaml").write_text("x: 1\n")
    (done / "summary.json").write_text(json.dumps({"status": "completed", "steps": 300}))
    (cut / "summary.json").write_text(json.dumps({"status": "interrupted", "steps": 0}))
    (cut / "metrics.jsonl").write_text(json.dumps({"step": 100}) + "\n")
    baseline = tmp_path.parent / "before.json"
    assert script("sweep_throughput.py", tmp_path, "--save", baseline).returncode == 0
    (cut / "metrics.jsonl").write_text(json.dumps({"step": 100}) + "\n" + json.dumps({"step": 250}) + "\n")
    proc = script("sweep_throughput.py", tmp_path, "--wall", 10, "--baseline", baseline)
    assert "150 training steps over 2 points (1 finished, 1 before this sweep) in 10 s = 15.0 steps/s" in proc.stdout
    proc = script("sweep_throughput.py", tmp_path, "--unfinished")
    assert proc.stdout.split() == [str(cut)]
    missing = script("sweep_throughput.py", tmp_path / "none", "--save", tmp_path.parent / "empty.json")
    assert missing.returncode == 0 and json.loads((tmp_path.parent / "empty.json").read_text()) == {}


def test_gpu_sweep_refuses_an_unknown_preset_before_any_work(tmp_path):
    import os

    env = {**os.environ, "EXPERIMENT": "no_such_preset", "OUT": str(tmp_path / "out")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_sweep.sh")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "no conf/experiment/no_such_preset.yaml" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_gpu_train_speed_refuses_an_unknown_part_before_any_work(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_train_speed.sh"), "streams", "stream"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "unknown part 'stream'" in proc.stderr and " streams " in proc.stderr and " graphtest " in proc.stderr
    assert not (tmp_path / "out").exists()


def test_gpu_env_restores_and_packs_triton_autotuning_results(tmp_path):
    """fla's first-call autotuning outlasts a device call: gpu_env.sh restores a carried .triton_autotune.tgz into
    Triton's cache and pack_autotune returns the cache's *.autotune.json files (only those) for the next call."""
    import tarfile

    carried = tmp_path / "seed" / "abc123"
    carried.mkdir(parents=True)
    (carried / "chunk_kda_fwd.autotune.json").write_text('{"key": [1], "configs_timings": []}')
    with tarfile.open(tmp_path / ".triton_autotune.tgz", "w:gz") as tar:
        tar.add(carried, arcname="./abc123")
    cache, out = tmp_path / "cache", tmp_path / "out"
    script = (f". {REPO / 'scripts' / 'gpu_env.sh'} && mkdir -p $TRITON_CACHE_DIR/def456 && "
              "echo '{}' > $TRITON_CACHE_DIR/def456/other.autotune.json && "
              "echo binary > $TRITON_CACHE_DIR/def456/kernel.cubin && pack_autotune")
    env = {**os.environ, "TRITON_CACHE_DIR": str(cache), "OUT": str(out)}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert "restored 1 autotuning results" in proc.stdout, proc.stdout + proc.stderr
    assert (cache / "abc123" / "chunk_kda_fwd.autotune.json").exists()
    assert "packed 2 autotuning results" in proc.stdout
    with tarfile.open(out / "triton_autotune.tgz") as tar:
        names = sorted(n for n in tar.getnames() if n.endswith(".json") or n.endswith(".cubin"))
    assert names == ["./abc123/chunk_kda_fwd.autotune.json", "./def456/other.autotune.json"]


def test_stream_sharing_steps_every_copy_and_writes_its_table(tmp_path):
    """The CPU path of scripts/stream_sharing.py (no streams; timings meaningless): one row per (mixer, T, K), the
    first K the reference; bad input is one line and exit 2, before anything is built."""
    out = tmp_path / "sharing.csv"
    proc = script("stream_sharing.py", "--mixers", "kda", "--seq-lens", "16", "--ks", "1,2", "--steps", 2,
                  "--warmup", 1, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader(out.open()))
    assert [(r["mixer"], r["T"], r["runs"]) for r in rows] == [("kda", "16", "1"), ("kda", "16", "2")]
    assert float(rows[0]["over_first"]) == 1.0 and all(float(r["steps_per_s"]) > 0 for r in rows)
    assert "one CUDA stream each (CPU)" in proc.stdout
    bad = script("stream_sharing.py", "--mixers", "kdaa", "--out", tmp_path / "bad.csv")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "kdaa" in bad.stderr
    assert not (tmp_path / "bad.csv").exists()


def test_check_fast_loop_verdict_tells_a_bug_from_a_chaotic_run():
    """scripts/check_fast_loop.py's verdict on made-up loss curves: within the goal passes; over it, a rounding
    control that stays within the goal makes it a failure (a bug), one that leaves it at step h limits the check
    to the h steps before (chaos), never to fewer than MIN_HORIZON; a host sync fails whatever the curves."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_fast_loop", REPO / "scripts" / "check_fast_loop.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    goal, steps = check.GOAL, 100
    plain = [3.0 - 0.01 * i for i in range(steps)]
    near = [x + goal / 2 for x in plain]
    apart_at = lambda h: [x + (0.0 if i < h else 1.0) for i, x in enumerate(plain)]  # noqa: E731
    assert check.verdict(plain, near, near, None, "yes") == (True, "pass")
    assert not check.verdict(plain, near, near, None, "NO (a sync)")[0]
    # the fast loop leaves the curve at 60, the control never: a bug
    passed, result = check.verdict(plain, apart_at(60), near, plain, "yes")
    assert not passed and result.startswith("FAIL")
    # rounding alone leaves it at 50, the fast loop at 60: equal for as long as the comparison means anything
    passed, result = check.verdict(plain, apart_at(60), near, apart_at(50), "yes")
    assert passed and "50 steps" in result
    # ... but not when the fast loop leaves it first (40), nor when the control leaves too early to say anything
    assert not check.verdict(plain, apart_at(40), near, apart_at(50), "yes")[0]
    assert not check.verdict(plain, apart_at(60), near, apart_at(check.MIN_HORIZON - 1), "yes")[0]
    assert not check.verdict(plain, near, apart_at(40), apart_at(50), "yes")[0]  # graphs off counts the same
