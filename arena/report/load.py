"""Run directories -> tidy pandas tables: one row per run (runs), per evaluation (curves), per test length (lengths).

    from arena.report.load import load_runs, load_curves, load_lengths
    runs = load_runs("results/runs")        # every folder below that holds a summary.json is one run

Reads summary.json, config.yaml and metrics.jsonl only (never wandb). Runs written by older versions may lack
fields; those become NaN. Columns whose name holds a dot ("model.d_model", "mixer.allow_neg_eigval") are the
*setting* columns: config values that differ between runs of one (experiment, mixer, task, train_len) group and
therefore name a separate comparison; everything else in the config is either equal within such a group or
one of the protocol's own axes (learning rate, seed, training length).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pandas as pd
import yaml

RUN_COLUMNS = [
    "run_dir", "experiment", "mixer", "raw_mixer", "model", "task", "train_len", "lr", "seed", "steps", "status",
    "message", "valid_accuracy", "test_accuracy", "test_sequence_accuracy", "train_accuracy", "params_total",
    "params_mixer", "state_size", "flops_per_token", "wall_time_s", "config_hash",
]
CURVE_COLUMNS = ["run_dir", "step", "split", "accuracy", "loss"]
LENGTH_COLUMNS = ["run_dir", "length", "train_len", "accuracy", "sequence_accuracy", "scaled_accuracy"]
GROUP_AXES = ["experiment", "mixer", "task", "train_len"]
CONF_MODELS = Path(__file__).resolve().parents[2] / "conf" / "model"

# Config keys that never name a setting: the protocol's own axes (lr, seed, length), where and how a run
# executed (device, precision, threads, logging, paths, kernel implementation: all give the same numbers),
# and what is scored after training (eval.*), which does not change the trained model.
NOT_SETTINGS = (
    "train.lr", "train.seed", "train.device", "train.precision", "train.cpu_threads", "train.eval_batch_size",
    "task.seq_len", "task.name", "mixer.name", "mixer.impl", "logger", "results_dir", "experiment", "eval", "hydra",
)


def find_run_dirs(root: Path) -> list[Path]:
    """Every folder below `root` (recursively) that holds a summary.json, sorted by path."""
    return sorted(p.parent for p in Path(root).rglob("summary.json") if p.is_file())


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of metrics.jsonl; a torn last line (a run killed mid-write) is skipped, not fatal."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def flatten(node: dict, prefix: str = "") -> dict:
    """{"model": {"d_model": 64}} -> {"model.d_model": 64}; lists become compact JSON text so they can be grouped."""
    flat = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(list(value), separators=(",", ":"))
        else:
            flat[name] = value
    return flat


def _number(value) -> float:
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _name_parts(name) -> list[str]:
    """arena.run names runs "<model>-<mixer>-<task>"; group names hold no hyphen, so the split is unambiguous."""
    parts = str(name or "").split("-")
    return parts if len(parts) == 3 else [None, None, None]


@functools.cache
def model_layouts() -> dict[str, bool]:
    """Model group in conf/model/ -> whether its YAML sets a layout (a hybrid) or not (every layer the mixer)."""
    found = {}
    for path in CONF_MODELS.glob("*.yaml"):
        try:
            node = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        found[path.stem] = bool(node.get("layout"))
    return found


def mixer_label(raw_mixer, model, layers) -> str | None:
    """The name a comparison shows: the model group for a model whose YAML sets a layout ("hybrid_3to1");
    the mixer for a plain model (every layer the chosen mixer); the layout itself ("kda+mla") when it came
    from the command line (`model.layout=[kda,mla]` on a model group whose YAML sets none)."""
    layers = [str(x) for x in layers or []]
    if model_layouts().get(model):
        return model
    if not layers or set(layers) == {str(raw_mixer)}:
        return raw_mixer
    if model and model not in model_layouts():  # a group this checkout does not know: its name is all we have
        return model
    return "+".join(layers)


def _split_mixer_dependent_models(df: pd.DataFrame) -> pd.Series:
    """A model group whose layout follows the `mixer=` choice (hybrid_3to1_mixer: KDA x3 + <mixer>) names
    different models; where one label covers several layouts, the chosen mixer is appended
    ("hybrid_3to1_mixer:mla")."""
    labels = df["mixer"].copy()
    hybrids = df["mixer"].notna() & (df["mixer"] == df["model"])
    for label, part in df[hybrids].groupby("mixer"):
        if part["_layers"].nunique() > 1:
            labels[part.index] = label + ":" + part["raw_mixer"].astype(str)
    return labels


def run_row(run_dir: Path, root: Path) -> dict:
    summary = _read_json(run_dir / "summary.json")
    config = _read_config(run_dir)
    unreadable = summary is None
    summary = summary or {}
    cfg_train, cfg_task, cfg_mixer, cfg_model = (config.get(k) or {} for k in ("train", "task", "mixer", "model"))
    name_model, name_mixer, name_task = _name_parts(summary.get("name"))
    raw_mixer = summary.get("mixer") or cfg_mixer.get("name") or name_mixer
    model = summary.get("model") or name_model
    layers = summary.get("layers") or cfg_model.get("layout")
    params = summary.get("parameters") or {}
    params_mixer = [v for k, v in params.items() if str(k).startswith("mixer/") and v is not None]
    valid = summary.get("valid_accuracy", summary.get("best_accuracy"))  # older runs: best_accuracy is the same
    experiment = summary.get("experiment", config.get("experiment"))
    return {
        "run_dir": str(run_dir.relative_to(root)) if run_dir != root else ".",
        "_layers": json.dumps([str(x) for x in layers or []]),
        "experiment": "" if experiment is None else str(experiment),
        "mixer": mixer_label(raw_mixer, model, layers),
        "raw_mixer": raw_mixer,
        "model": model,
        "task": summary.get("task") or cfg_task.get("name") or name_task,
        "train_len": _number(cfg_task.get("seq_len", summary.get("seq_len"))),
        "lr": _number(cfg_train.get("lr")),
        "seed": _number(cfg_train.get("seed")),
        "steps": _number(summary.get("steps")),
        "status": "unreadable" if unreadable else str(summary.get("status") or "failed"),
        "message": "summary.json missing or not valid JSON" if unreadable else str(summary.get("message") or ""),
        "valid_accuracy": _number(valid),
        "test_accuracy": _number(summary.get("test_accuracy")),
        "test_sequence_accuracy": _number(summary.get("test_sequence_accuracy")),
        "train_accuracy": _number(summary.get("train_accuracy")),
        "params_total": _number(params.get("total")),
        "params_mixer": float(sum(params_mixer)) if params_mixer else math.nan,
        "state_size": _number(summary.get("state_size")),
        "flops_per_token": _number(summary.get("flops_per_token")),
        "wall_time_s": _number(summary.get("wall_time_s")),
        "config_hash": summary.get("config_hash"),
        **{f"config:{k}": v for k, v in flatten(config).items() if not k.startswith(NOT_SETTINGS)},
    }


def setting_columns(df: pd.DataFrame) -> list[str]:
    """The setting columns of a runs table (their names hold a dot; no core column does)."""
    return [c for c in df.columns if "." in c]


def _keep_settings(df: pd.DataFrame) -> pd.DataFrame:
    """Keep a config column only where it differs inside one (experiment, mixer, task, train_len) group: such a
    column names a separate comparison (model width, eigenvalue range). Values that change only together with
    the training length (steps scaled per length, say) belong to the length axis and are dropped."""
    candidates = [c for c in df.columns if c.startswith("config:")]
    keep = []
    for column in candidates:
        values = df[column].map(lambda v: "<missing>" if v is None or (isinstance(v, float) and math.isnan(v))
                                else repr(v))
        if (values.groupby([df[a].fillna(-1) if a == "train_len" else df[a] for a in GROUP_AXES], dropna=False)
                .nunique().gt(1).any()):
            keep.append(column)
    renamed = {c: c.removeprefix("config:") for c in keep}
    return df.drop(columns=[c for c in candidates if c not in keep]).rename(columns=renamed)


def load_runs(root) -> pd.DataFrame:
    """One row per run directory below `root`: the columns of RUN_COLUMNS, then the setting columns."""
    root = Path(root)
    rows = [run_row(d, root) for d in find_run_dirs(root)]
    if not rows:
        return pd.DataFrame(columns=RUN_COLUMNS)
    df = pd.DataFrame(rows)
    df["mixer"] = _split_mixer_dependent_models(df)
    df = _keep_settings(df)
    settings = sorted(setting_columns(df))
    return df[RUN_COLUMNS + settings].reset_index(drop=True)


def load_curves(root, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per training-time evaluation in metrics.jsonl (older runs wrote no "split": it was validation)."""
    rows = []
    for run_dir in runs["run_dir"]:
        for record in read_metrics(Path(root) / run_dir):
            if record.get("eval") == "length" or "accuracy" not in record:
                continue
            rows.append({"run_dir": run_dir, "step": _number(record.get("step")),
                         "split": record.get("split") or "valid", "accuracy": _number(record.get("accuracy")),
                         "loss": _number(record.get("loss"))})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def load_lengths(root, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, test length): summary.json's length_eval, or metrics.jsonl's length records."""
    rows = []
    for run_dir, train_len in zip(runs["run_dir"], runs["train_len"]):
        path = Path(root) / run_dir
        by_length = (_read_json(path / "summary.json") or {}).get("length_eval") or {}
        records = [{"length": k, **v} for k, v in by_length.items() if isinstance(v, dict)]
        if not records:
            records = [r for r in read_metrics(path) if r.get("eval") == "length"]
        for record in records:
            rows.append({"run_dir": run_dir, "length": _number(record.get("length")),
                         "train_len": _number(record.get("train_seq_len", train_len)),
                         **{k: _number(record.get(k)) for k in LENGTH_COLUMNS[3:]}})
    df = pd.DataFrame(rows, columns=LENGTH_COLUMNS)
    return df.sort_values(["run_dir", "length"]).reset_index(drop=True) if len(df) else df
