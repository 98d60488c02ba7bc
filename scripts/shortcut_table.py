"""Shortcut baselines of every probe, at its default setting and at the settings the experiment presets train on.

    python scripts/shortcut_table.py                  # markdown table on stdout (docs/probes.md#shortcut-baselines)
    python scripts/shortcut_table.py --n 200          # fewer test sequences per row (faster, noisier)
    python scripts/shortcut_table.py --only stack     # rows whose config name contains "stack"

Rows: every conf/task/<name>.yaml as composed for a run (its YAML over its task class's defaults), then every
(task, training length) point of each full preset in conf/experiment (the *_mini smoke presets are skipped), read
from the preset's YAML: its literal `task:` values, the per-task tables it interpolates (`task_settings`,
`mqar_settings`) and its swept `task` and `task.seq_len`; a task in its `task_settings` that it does not sweep is
an option it keeps (kimi_synthetic's published `stack_kimi`) and gets rows too, marked `(option task=...)`.
Each row draws `--n` sequences of the test split with the trainer's test seed (arena/tasks/base.py
`split_seed(0, "test")`) and scores every shortcut of arena/tasks/shortcuts.py on them; `dominated` marks a
best shortcut >= 0.8 (the probe's accuracy then says little about the ability it names).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when run as a file from anywhere

from arena.config_schema import CONF, compose_options  # noqa: E402
from arena.errors import ConfigError  # noqa: E402
from arena.tasks import build_task  # noqa: E402
from arena.tasks.base import split_seed  # noqa: E402
from arena.tasks.shortcuts import best_shortcut  # noqa: E402

DOMINATED = 0.8  # a best shortcut at or above this leaves little room for the ability the probe names
SKIPPED_KEYS = ("num_train", "num_test")  # set by the presets, irrelevant to a test batch's shortcuts
INTERPOLATION = re.compile(r"\$\{(\w+)\.\$\{([^}]*)\}\.(\w+)\}")  # ${table.${choice}.key}


def preset_points(preset: str, specs: dict[str, dict]) -> list[tuple[str, str, dict]]:
    """[(task config, setting label, spec)] of every (task, training length) a preset trains on."""
    y = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{preset}.yaml"), resolve=False)
    params = (y.get("hydra") or {}).get("sweeper", {}).get("params", {})
    default = next(d["override /task"] for d in y["defaults"] if isinstance(d, dict) and "override /task" in d)
    tasks = str(params.get("task", default)).split(",")
    # a task the preset has settings for but does not sweep is an option it keeps (kimi_synthetic: stack_kimi)
    options = [t for t in (y.get("task_settings") or {}) if t not in tasks and t in specs]
    lengths = str(params["task.seq_len"]).split(",") if "task.seq_len" in params else [None]
    mqar = str(params.get("mqar_setting", y.get("mqar_setting", ""))).split(",")
    points = []
    for task in tasks + options:
        for length in lengths:
            for choice in mqar:
                over = {}
                for key, value in (y.get("task") or {}).items():
                    if key in SKIPPED_KEYS:
                        continue
                    match = INTERPOLATION.fullmatch(value) if isinstance(value, str) else None
                    if match:  # a per-task (or per-mqar_setting) table: look the run's choice up
                        table, chooser, field = match.groups()
                        row = y[table].get(task if chooser.startswith("hydra:") else choice) or {}
                        if field in row:
                            over[key] = row[field]
                    elif not (isinstance(value, str) and "${" in value):
                        over[key] = value
                if length is not None:
                    over["seq_len"] = int(length)
                name = f"{preset} (option task={task})" if task in options else preset
                label = f"{name}: " + (", ".join(f"{k}={v}" for k, v in over.items()) or "defaults")
                points.append((task, label, {**specs[task], **over}))
    return points


def rows(n: int, only: str) -> list[tuple[str, str, dict]]:
    specs = compose_options("task")  # config name -> its composed task node (with "name", the task class)
    out = [(name, "default (conf/task)", spec) for name, spec in sorted(specs.items())]
    for path in sorted((CONF / "experiment").glob("*.yaml")):
        if not path.stem.endswith("_mini"):
            out += preset_points(path.stem, specs)
    return [row for row in out if only in row[0]]


def measure(spec: dict, n: int) -> dict[str, float]:
    spec = {k: v for k, v in spec.items() if k not in SKIPPED_KEYS}
    task = build_task(spec.pop("name"), **spec)
    return task.shortcut_baselines(task.generate(n, split_seed(0, "test"), split="test"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="test sequences per row (default 1000)")
    parser.add_argument("--only", default="", help="keep rows whose task config name contains this")
    args = parser.parse_args(argv)
    if args.n < 1:
        print(f"shortcut_table: --n={args.n} must be >= 1 (test sequences per row)", file=sys.stderr)
        return 2
    print("| probe | setting | chance | best shortcut | accuracy | |")
    print("| --- | --- | --- | --- | --- | --- |")
    start = time.perf_counter()
    for name, label, spec in rows(args.n, args.only):
        try:
            accuracies = measure(spec, args.n)
        except ConfigError as err:
            print(f"| {name} | {label} | | not buildable: {err} | | |")
            continue
        if not accuracies:
            print(f"| {name} | {label} | | (no token targets) | | |")
            continue
        best, acc = best_shortcut(accuracies)
        flag = "dominated" if acc >= DOMINATED else ""
        print(f"| {name} | {label} | {accuracies['chance']:.3f} | {best} | {acc:.3f} | {flag} |", flush=True)
    print(f"\n({args.n} test sequences per row, {time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
