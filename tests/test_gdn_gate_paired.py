"""scripts/gdn_gate_paired.py at a tiny size on CPU: the arms are paired (the same shared initial weights, batches
and validation set), --weights-seed takes one seed's weights and another's data, and a broken pairing fails.

    python -m pytest -q tests/test_gdn_gate_paired.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["train.steps=4", "train.eval_every=2", "train.warmup_steps=1", "model.d_model=32", "task.num_test=16"]

pytest.importorskip("hydra")


def paired(out: Path, *args: str) -> tuple[int, list[dict], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    # the Hydra overrides first: --seeds and --arms take every word after them
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gdn_gate_paired.py"), *TINY, "--out", str(out),
                           *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, rows, done.stdout + done.stderr


def test_the_three_arms_start_equal_and_see_the_same_data(tmp_path):
    rc, rows, log = paired(tmp_path, "--seeds", "0", "--arms", "a", "b", "c")
    assert rc == 0, log
    assert [r["arm"] for r in rows] == ["a", "b", "c"]
    for key in ("first_batch", "valid_set", "initial_weights", "batches"):
        assert len({r[key] for r in rows}) == 1, key
    a, b, c = rows
    assert a["batches"] == 4 and a["last_step"] == 4
    assert a["trainable"] > b["trainable"] == c["trainable"]  # b has no gate; c has it, frozen
    for arm in "abc":
        assert (tmp_path / "seed0" / arm / "summary.json").is_file()


def test_weights_seed_takes_the_weights_of_one_seed_and_the_data_of_another(tmp_path):
    rc, native, log = paired(tmp_path / "native", "--seeds", "0", "1", "--arms", "a")
    assert rc == 0, log
    rc, crossed, log = paired(tmp_path / "crossed", "--seeds", "1", "--weights-seed", "0", "--arms", "a")
    assert rc == 0, log
    seed0, seed1 = native
    (row,) = crossed
    assert seed0["initial_weights"] != seed1["initial_weights"] and seed0["first_batch"] != seed1["first_batch"]
    assert (row["seed"], row["weights_seed"]) == (1, 0)
    assert row["initial_weights"] == seed0["initial_weights"]
    assert (row["first_batch"], row["valid_set"]) == (seed1["first_batch"], seed1["valid_set"])
    assert (tmp_path / "crossed" / "seed1_weights0" / "a" / "summary.json").is_file()


def test_an_arm_whose_batches_differ_from_arm_a_fails(tmp_path):
    rc, _, log = paired(tmp_path, "--seeds", "0", "--arms", "a", "b")
    assert rc == 0, log
    hashes = tmp_path / "seed0" / "a" / "batch_hashes.txt"
    lines = hashes.read_text().split()
    hashes.write_text("\n".join(["0" * 16, *lines[1:]]) + "\n")  # arm a's first batch, as if it had differed
    rc, _, log = paired(tmp_path, "--seeds", "0", "--arms", "b")  # b is finished: read back and checked again
    assert rc != 0 and "batches differ from arm a's" in log
