"""Cluster sweeps: the SLURM launcher preset (conf/hydra/launcher/slurm.yaml) composes with its overrides, and a
sweep runs through submitit's local executor (the same launcher code path as SLURM, minus sbatch).

    python -m pytest -q tests/test_launchers.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from arena.run import CONF


def test_slurm_preset_composes_with_its_overrides():
    from hydra import compose, initialize_config_dir

    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=30",
                 "hydra.launcher.array_parallelism=4"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.timeout_min, launcher.array_parallelism) == ("gpu", 30, 4)
    assert launcher.gpus_per_node == 1 and launcher.max_num_timeout == 3  # the preset's own values


def test_sweep_runs_through_submitit_local_executor(tmp_path):
    cmd = [sys.executable, "-m", "arena.run", "-m", "hydra/launcher=submitit_local", "mixer=kda,gdn",
           "train.steps=4", "train.eval_every=2", "task.num_test=20", f"results_dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=Path(CONF).parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summaries = [json.loads(p.read_text()) for p in tmp_path.rglob("summary.json")]
    assert len(summaries) == 2 and {s["layers"][0] for s in summaries} == {"kda", "gdn"}, summaries
    assert all(s["status"] == "completed" and s["steps"] == 4 for s in summaries)
    assert list(tmp_path.rglob(".submitit")), "submitit's job folder is where the preset says"
