"""Sweep folders in a report: points a sweep skipped for a twin elsewhere, and grid points that left nothing.

    from arena.report.sweeps import sweep_rows
    rows += sweep_rows(root, rows)        # what arena.report.load.load_runs does

`python -m arena.run -m ...` skips a point whose identical config already finished somewhere under results_dir
(resume); such a point keeps its run dir with a skipped.json naming that run, its "twin" (arena.run.skip_point).
A report of a sweep folder follows these records and reads each twin's run, so it covers every point of the
grid; a twin that also lies below the report's root is counted once. A grid point (the grid is rebuilt from the
sweep's multirun.yaml as Hydra's basic sweeper builds it) with neither a run nor a skip record, and a record
whose twin is gone, become rows with status "missing", with the config the point would have run (composed from
conf/ by Hydra's compose API) so they land in the right comparison; `python -m arena.report` also warns.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from arena.report.load import _read_json, run_row, warn
from arena.run import CONF, SKIP_RECORD, config_hash


def twin_of(point: Path) -> Path | None:
    """The run a skip record names, if it still holds a summary.json (relative path first: a copied tree)."""
    record = _read_json(point / SKIP_RECORD) or {}
    for name in (record.get("twin"), record.get("twin_absolute")):
        if name and (point / name / "summary.json").is_file():
            return (point / name).resolve()
    return None


def point_overrides(point: Path) -> list[str] | None:
    """The overrides Hydra launched a sweep point with (its .hydra/overrides.yaml)."""
    try:
        return [str(o) for o in OmegaConf.load(point / ".hydra" / "overrides.yaml")]
    except Exception:  # noqa: BLE001 - absent or damaged: the point cannot be named
        return None


def sweep_grid(multirun: Path) -> list[list[str]] | None:
    """Every job's overrides, in launch order, of the sweep that wrote `multirun` (its multirun.yaml), exactly as
    Hydra's basic sweeper split them; None for another sweeper or a grid that cannot be rebuilt here."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        hydra = OmegaConf.load(multirun).hydra
        if not str(hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return None
        params = OmegaConf.to_container(hydra.sweeper.params, resolve=False) if hydra.sweeper.params else {}
        arguments = [f"{key}={value}" for key, value in params.items()]
        arguments += [str(o) for o in hydra.overrides.task]
        parsed = OverridesParser.create().parse_overrides(arguments)
        batches = BasicSweeper.split_arguments(parsed, hydra.sweeper.get("max_batch_size"))
    except Exception:  # noqa: BLE001 - a sweep function needing the config loader, a damaged file, ...
        return None
    return [list(job) for batch in batches for job in batch]


def _accounted(point: Path) -> bool:
    return ((point / "summary.json").is_file() or (point / SKIP_RECORD).is_file()
            or any(point.glob("attempt_*/summary.json")))


def compose_point(overrides: list[str]) -> tuple[dict, dict]:
    """(resolved job config, group choices) of one point, composed from conf/ as `python -m arena.run` would; inside
    an open `initialize_config_dir` (also scripts/gdn_gate_paired.py's builder)."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # ${hydra:runtime.choices.*} in a config (a hybrid's layout) reads it
    try:
        choices = dict(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            del cfg["hydra"]
        return OmegaConf.to_container(cfg, resolve=True), choices
    finally:
        HydraConfig.instance().cfg = None


def _composed_all(points: list[list[str]]) -> list[tuple[dict, dict] | None]:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if not points or GlobalHydra.instance().is_initialized():  # inside a Hydra app: leave its state alone
        return [None] * len(points)
    out = []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for overrides in points:
            try:
                out.append(compose_point(overrides))
            except Exception:  # noqa: BLE001 - conf/ changed since the sweep ran: the row keeps what is known
                out.append(None)
    return out


def _missing_row(where: Path, root: Path, overrides: list[str], why: str, composed) -> dict:
    """The row the point's run would have had before its first step (status "missing"), read through run_row
    from a stub run dir, so every column is derived as for a real run."""
    config, choices = composed or ({}, {})
    layout = (config.get("model") or {}).get("layout")
    mixer = choices.get("mixer")
    stub = {
        "status": "missing", "message": why, "steps": 0,
        "name": "-".join(str(choices.get(k)) for k in ("model", "mixer", "task")) if choices else None,
        "mixer": mixer, "model": choices.get("model"), "task": (config.get("task") or {}).get("name"),
        "experiment": config.get("experiment"), "config_hash": config_hash(config) if config else None,
        "layers": layout or ([mixer] * int((config.get("model") or {}).get("n_layers", 0)) if mixer else None),
        "seq_len": (config.get("task") or {}).get("seq_len"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "summary.json").write_text(json.dumps(stub))
        (Path(tmp) / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
        row = run_row(Path(tmp), Path(tmp))
    row["run_dir"] = os.path.relpath(where, root)
    row["_mtime"] = math.nan
    return row


def sweep_rows(root: Path, rows: list[dict]) -> list[dict]:
    """Rows to add to the runs found below `root` (`rows`): each skipped point's twin not already among them, and
    a "missing" row per grid point with neither a run nor a skip record (or a record whose twin is gone)."""
    root = Path(root)
    seen = {(root / row["run_dir"]).resolve() for row in rows}
    added, missing = [], []  # missing: (where, overrides, why)
    for record in sorted(root.rglob(SKIP_RECORD)):
        point, twin = record.parent, twin_of(record.parent)
        if twin is None:
            named = (_read_json(record) or {}).get("twin_absolute")
            missing.append((point, point_overrides(point) or [], f"the run its skip record names ({named}) is gone"))
        elif twin not in seen:
            seen.add(twin)
            row = run_row(twin, twin)
            row["run_dir"] = os.path.relpath(twin, root)
            row["message"] = f"run of the point skipped in {os.path.relpath(point, root)}; {row['message']}"
            added.append(row)
    for multirun in sorted(root.rglob("multirun.yaml")):
        sweep, grid = multirun.parent, sweep_grid(multirun)
        if grid is None:
            continue
        present = set()
        for overrides_file in sweep.rglob(".hydra/overrides.yaml"):
            point = overrides_file.parent.parent
            if _accounted(point) and (overrides := point_overrides(point)) is not None:
                present.add(frozenset(overrides))
        counts = Counter(o for job in grid for o in job)  # an override in fewer than all jobs: a swept key
        swept = {o.split("=", 1)[0] for o, count in counts.items() if count < len(grid)}
        for number, overrides in enumerate(grid):
            if frozenset(overrides) not in present:
                label = " ".join(o for o in overrides if o.split("=", 1)[0] in swept) or "its only point"
                missing.append((sweep, overrides, f"grid point #{number} ({label}) has no run and no skip record"))
    hashes = {row.get("config_hash") for row in rows + added}
    composed = _composed_all([overrides for _, overrides, _ in missing])
    listed = []
    for (where, overrides, why), point in zip(missing, composed):
        row = _missing_row(where, root, overrides, why, point)
        if row["config_hash"] is None or row["config_hash"] not in hashes:  # else its run is in the report
            added.append(row)
            listed.append(f"{row['run_dir']}: {why}")
    if listed:
        more = f" (and {len(listed) - 5} more)" if len(listed) > 5 else ""
        warn(f"{len(listed)} sweep point(s) have no run (listed as missing): " + "; ".join(listed[:5]) + more)
    return added
