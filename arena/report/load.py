"""Run directories -> tidy pandas tables: one row per run (runs), per evaluation (curves), per test length (lengths).

    from arena.report.load import load_runs, load_curves, load_lengths
    runs = load_runs("results/runs")        # every folder below that holds a summary.json is one run

Reads summary.json, config.yaml and metrics.jsonl only (never wandb). Runs written by older versions may lack
fields; those become NaN. What cannot be read (a summary.json that is not JSON, a torn line in metrics.jsonl) is
kept as far as it goes and reported as a ReportWarning (`python -m arena.report` prints each on stderr).

Columns whose name holds a dot ("model.d_model", "mixer.allow_neg_eigval") are the *setting* columns: config
values that differ between runs of one (experiment, mixer, task, train_len) group and therefore name a separate
comparison; everything else in the config is either equal within such a group or one of the protocol's own axes
(learning rate, seed, training length). Runs that share a config_hash (a rerun with resume=false, an earlier
failed attempt, a twin found twice) are duplicates: the table keeps each one, and `duplicate_of` names the run the
comparison uses instead. `variant` names the execution keys (mixer.impl, device, ...) in which runs that one
comparison pools differ; `metric` is the number the task is judged by (accuracy, or scaled accuracy for parity)
and `test_metric` / `valid_metric` the run's accuracies in it. `selected_by` is what chose the run's best
validation evaluation (accuracy, or loss for text) and `valid_score` that evaluation's score in it, higher is
better: the validation accuracy, or minus the validation loss; the learning rate is chosen on it.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from pathlib import Path

import pandas as pd
import yaml

from arena.lm_eval import stderr_key  # lm-eval's naming of a metric's stderr, as summary.json keeps it

RUN_COLUMNS = [
    "run_dir", "experiment", "mixer", "raw_mixer", "model", "task", "train_len", "lr", "seed", "steps", "status",
    "message", "valid_accuracy", "test_accuracy", "test_sequence_accuracy", "train_accuracy", "test_perplexity",
    "test_bits_per_byte", "metric",
    "chance_accuracy", "valid_metric", "test_metric", "train_min_len", "train_max_len", "params_total",
    "params_mixer", "state_size", "flops_per_token", "wall_time_s", "config_hash", "duplicate_of", "variant",
    "test_model", "tested_step",
    "best_shortcut", "shortcut_accuracy", "shortcut_metric", "selected_by", "valid_score", "checkpoint_selected_by",
]
CURVE_COLUMNS = ["run_dir", "step", "split", "accuracy", "train_loss", "valid_loss"]
LENGTH_COLUMNS = ["run_dir", "length", "train_len", "accuracy", "sequence_accuracy", "scaled_accuracy",
                  "best_shortcut_accuracy"]
GROUP_AXES = ["experiment", "mixer", "task", "train_len"]
CONF_MODELS = Path(__file__).resolve().parents[2] / "conf" / "model"

# Config keys that never name a setting: the protocol's own axes (lr, seed, length), where and how a run
# executed (device, precision, threads, CUDA-graph replay, batch workers, checkpoints, logging, paths, kernel
# implementation: all give the same numbers; cuda_graphs is also outside the config hash, arena/run.py), and what
# is scored after training (eval.*), which does not change the trained model. Seeds run before and after
# train.cuda_graphs' default went from off to auto are one comparison.
NOT_SETTINGS = (
    "train.lr", "train.seed", "train.device", "train.precision", "train.cpu_threads", "train.eval_batch_size",
    "train.cuda_graphs", "train.data_workers", "train.checkpoint_every",
    "task.seq_len", "task.name", "mixer.name", "mixer.impl", "logger", "results_dir", "experiment", "eval", "hydra",
)


# The number a task is judged by, where it is not plain accuracy: Grazzi et al. report parity and modular
# arithmetic in scaled accuracy, (accuracy - chance) / (1 - chance), so 0 is a guess and 1 is perfect. A run whose
# summary.json names a "primary_metric" overrides this table.
PRIMARY_METRICS = {"parity": "scaled_accuracy", "modular_arithmetic": "scaled_accuracy",
                   "modular_arithmetic_brackets": "scaled_accuracy"}
# What a run's best validation evaluation, and so the learning rate, is chosen on, where it is not accuracy:
# language modelling on the validation loss (Task.selection, arena/protocol.py). A run whose summary.json names
# "selected_by" overrides this table.
SELECTED_BY = {"text": "loss"}
# Execution keys left out of the settings (NOT_SETTINGS) that still tell two runs apart; runs pooled in one
# comparison that differ in one of these are named in the runs table's `variant` column (and the report's notes).
VARIANT_KEYS = ("mixer.impl", "train.device", "train.precision", "train.cpu_threads", "train.eval_batch_size",
                "train.cuda_graphs")
# Which of several runs with one config_hash a comparison keeps: the most finished, then the newest.
STATUS_RANK = {"completed": 0, "diverged": 1, "interrupted": 2, "failed": 3}


class ReportWarning(UserWarning):
    """Something in the results could not be read in full; the report goes on with what could."""


def warn(message: str) -> None:
    warnings.warn(message, ReportWarning, stacklevel=2)


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
    """The records of metrics.jsonl; a line that is not a JSON object (a run killed mid-write tears the last one)
    is skipped with a ReportWarning naming the file, and every readable record is kept."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as err:
        warn(f"{path}: cannot be read ({err.strerror}); no curve for this run")
        return []
    records, bad = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    if bad:
        where = "the last line" if bad == [len(lines)] else "line(s) " + ", ".join(map(str, bad[:5]))
        warn(f"{path}: {where} of {len(lines)} is not a JSON record (torn by a killed run?); "
             f"kept the {len(records)} readable records")
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


def to_metric(accuracy, metric: str, chance) -> float:
    """An accuracy in the given metric: itself, or scaled, (accuracy - chance) / (1 - chance)."""
    accuracy = _number(accuracy)
    if metric != "scaled_accuracy":
        return accuracy
    chance = _number(chance)
    return (accuracy - chance) / (1.0 - chance) if chance < 1 else math.nan


# Chance levels of runs written before summary.json recorded "chance_accuracy" (the task's own value).
CHANCE_FALLBACK = {"parity": lambda task_cfg: 0.5,
                   "modular_arithmetic": lambda task_cfg: 1.0 / task_cfg.get("modulus", 5),
                   "modular_arithmetic_brackets": lambda task_cfg: 1.0 / task_cfg.get("modulus", 5)}


def _metric_and_chance(summary: dict, task, task_cfg: dict) -> tuple[str, float]:
    chance = _number(summary.get("chance_accuracy"))
    if math.isnan(chance) and task in CHANCE_FALLBACK:
        chance = _number(CHANCE_FALLBACK[task](task_cfg))
    metric = str(summary.get("primary_metric") or PRIMARY_METRICS.get(task, "accuracy"))
    if metric == "scaled_accuracy" and not 0 <= chance < 1:
        metric = "accuracy"  # no chance level known: the plain accuracy, labelled as such, rather than a guess
    return metric, chance


def _selection(summary: dict, task, valid) -> tuple[str, float]:
    """(what the run's best validation evaluation was chosen on, its score there: higher is better). A run selected
    by loss scores minus its validation loss: summary.json's selection_score, or for a run written before that
    field, minus its valid_loss (the tested weights' validation loss)."""
    selected_by = str(summary.get("selected_by") or SELECTED_BY.get(task, "accuracy"))
    if selected_by != "loss":
        return selected_by, _number(valid)
    score = _number(summary.get("selection_score"))
    return selected_by, score if not math.isnan(score) else -_number(summary.get("valid_loss"))


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
    if unreadable:
        warn(f"{run_dir / 'summary.json'} is not a valid JSON object; the run is listed as unreadable and left "
             f"out of every comparison")
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
    task = summary.get("task") or cfg_task.get("name") or name_task
    metric, chance = _metric_and_chance(summary, task, cfg_task)
    selected_by, valid_score = _selection(summary, task, valid)
    seq_len = _number(cfg_task.get("seq_len", summary.get("seq_len")))
    if not seq_len > 0:  # a task that derives its length (icl_regression: seq_len=0 = 2 * n_points): the one used
        seq_len = _number(summary.get("seq_len"))
    flat = flatten(config)
    return {
        "run_dir": str(run_dir.relative_to(root)) if run_dir != root else ".",
        "_layers": json.dumps([str(x) for x in layers or []]),
        "experiment": "" if experiment is None else str(experiment),
        "mixer": mixer_label(raw_mixer, model, layers),
        "raw_mixer": raw_mixer,
        "model": model,
        "task": task,
        "train_len": seq_len,
        "lr": _number(cfg_train.get("lr")),
        "seed": _number(cfg_train.get("seed")),
        "steps": _number(summary.get("steps")),
        "status": "unreadable" if unreadable else str(summary.get("status") or "failed"),
        "message": "summary.json missing or not valid JSON" if unreadable else str(summary.get("message") or ""),
        "valid_accuracy": _number(valid),
        "test_accuracy": _number(summary.get("test_accuracy")),
        "test_sequence_accuracy": _number(summary.get("test_sequence_accuracy")),
        "train_accuracy": _number(summary.get("train_accuracy")),
        # language modelling (task text) only; NaN for the probes
        "test_perplexity": _number(summary.get("test_perplexity")),
        "test_bits_per_byte": _number(summary.get("test_bits_per_byte")),
        "metric": metric,
        "chance_accuracy": chance,
        "valid_metric": to_metric(valid, metric, chance),
        "test_metric": to_metric(summary.get("test_accuracy"), metric, chance),
        # the lengths the model saw in training: a task with a length range (parity: 3-16 tokens padded to
        # seq_len 64) says so in its config; every other task trains on seq_len-token sequences
        "train_min_len": _number(cfg_task.get("train_min_len", seq_len)),
        "train_max_len": _number(cfg_task.get("train_max_len", seq_len)),
        "params_total": _number(params.get("total")),
        "params_mixer": float(sum(params_mixer)) if params_mixer else math.nan,
        "state_size": _number(summary.get("state_size")),
        "flops_per_token": _number(summary.get("flops_per_token")),
        "wall_time_s": _number(summary.get("wall_time_s")),
        "config_hash": summary.get("config_hash"),
        "duplicate_of": "",
        "variant": "",
        # which weights the test scored: best (the best validation evaluation's) or final (train.test_on); legacy =
        # a run from before train.test_on, which validated on the test distribution and tested its final weights
        "test_model": str(summary.get("test_model") or ("legacy" if summary.get("test_accuracy") is not None
                                                        else "")),
        "tested_step": _number(summary.get("tested_step")),
        # the best shortcut baseline on the same test split (arena/tasks/shortcuts.py; absent in older runs)
        "best_shortcut": str(summary.get("best_shortcut") or ""),
        "shortcut_accuracy": _number(summary.get("best_shortcut_accuracy")),
        "shortcut_metric": to_metric(summary.get("best_shortcut_accuracy"), metric, chance),
        "selected_by": selected_by,
        "valid_score": valid_score,
        # what chose the tested weights inside the run: its summary's; a run from before summaries named it (text
        # runs then too) chose them on validation accuracy
        "checkpoint_selected_by": str(summary.get("selected_by") or "accuracy"),
        "_mtime": _mtime(run_dir / "summary.json"),
        **{f"config:{k}": v for k, v in flat.items() if not k.startswith(NOT_SETTINGS)},
        **{f"variant:{k}": flat[k] for k in VARIANT_KEYS if k in flat},
    }


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return math.nan


def setting_columns(df: pd.DataFrame) -> list[str]:
    """The setting columns of a runs table (their names hold a dot; no core column does)."""
    return [c for c in df.columns if "." in c and not c.startswith("variant:")]


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


def _mark_duplicates(df: pd.DataFrame) -> pd.Series:
    """duplicate_of: for every run but one per config_hash, the run_dir of the one kept (most finished status,
    then newest summary.json, then last path); "" for the kept runs and for runs without a hash."""
    marks = pd.Series("", index=df.index, dtype=object)
    hashed = df[df["config_hash"].notna() & (df["status"] != "unreadable")]
    for _, part in hashed.groupby("config_hash"):
        if len(part) < 2:
            continue
        order = part.assign(_rank=part["status"].map(STATUS_RANK).fillna(len(STATUS_RANK)),
                            _time=part["_mtime"].fillna(-math.inf))
        order = order.sort_values(["_rank", "_time", "run_dir"], ascending=[True, False, False])
        marks[order.index[1:]] = order["run_dir"].iloc[0]
    return marks


def _mark_variants(df: pd.DataFrame) -> pd.Series:
    """variant: the execution keys (VARIANT_KEYS) whose values differ among the runs one comparison pools at one
    learning rate, as "mixer.impl=naive"; "" where the pooled runs agree."""
    labels = pd.Series("", index=df.index, dtype=object)
    columns = [c for c in df.columns if c.startswith("variant:")]
    if not columns:
        return labels
    pooled = df[df["duplicate_of"] == ""]
    cell = GROUP_AXES + setting_columns(df) + ["lr"]
    keys = [pooled[c].astype(object).where(pooled[c].notna(), "<none>").map(repr) for c in cell]
    for _, part in pooled.groupby(keys, dropna=False):
        differing = [c for c in columns if part[c].astype(object).map(repr).nunique() > 1]
        for index in part.index if differing else ():
            labels[index] = ", ".join(f"{c.removeprefix('variant:')}={df.at[index, c]}" for c in differing)
    return labels


def load_runs(root) -> pd.DataFrame:
    """One row per run directory below `root`: the columns of RUN_COLUMNS, then the setting columns."""
    root = Path(root)
    rows = [run_row(d, root) for d in find_run_dirs(root)]
    from arena.report.sweeps import sweep_rows  # imports this module: deferred

    rows += sweep_rows(root, rows)  # a sweep's skipped points (their twins' runs) and grid points with no run
    if not rows:
        return pd.DataFrame(columns=RUN_COLUMNS)
    df = pd.DataFrame(rows)
    df["mixer"] = _split_mixer_dependent_models(df)
    df = _keep_settings(df)
    df["duplicate_of"] = _mark_duplicates(df)
    df["variant"] = _mark_variants(df)
    settings = sorted(setting_columns(df))
    return df[RUN_COLUMNS + settings].reset_index(drop=True)


def load_curves(root, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per training-time evaluation in metrics.jsonl (older runs wrote no "split": it was validation).
    `accuracy` and `valid_loss` are the evaluated split's; `train_loss` is the training window's. The validation
    loss was once written as "test_loss", the training loss as "loss": both spellings are read."""
    rows = []
    for run_dir in runs["run_dir"]:
        for record in read_metrics(Path(root) / run_dir):
            if record.get("eval") == "length" or "accuracy" not in record:
                continue
            rows.append({"run_dir": run_dir, "step": _number(record.get("step")),
                         "split": record.get("split") or "valid", "accuracy": _number(record.get("accuracy")),
                         "train_loss": _number(record.get("train_loss", record.get("loss"))),
                         "valid_loss": _number(record.get("valid_loss", record.get("test_loss")))})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


LM_EVAL_COLUMNS = ["run_dir", "benchmark", "metric", "value", "stderr", "ci95"]
Z95 = 1.96  # a 95 % normal interval: value ± Z95 x stderr


def load_lm_eval(root, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, lm-eval task, metric): summary.json's `lm_eval` (eval.lm_eval.tasks, arena/lm_eval.py),
    with the metric's `<metric>_stderr` as `stderr` and its 95 % half-width `ci95` (NaN where lm-eval gave none)."""
    rows = []
    for run_dir in runs["run_dir"]:
        found = (_read_json(Path(root) / run_dir / "summary.json") or {}).get("lm_eval") or {}
        for benchmark, metrics in (found.items() if isinstance(found, dict) else ()):
            metrics = metrics if isinstance(metrics, dict) else {}
            for metric, value in metrics.items():
                if str(metric).partition(",")[0].endswith("_stderr"):
                    continue  # its metric's row carries it
                stderr = _number(metrics.get(stderr_key(str(metric))))
                rows.append({"run_dir": run_dir, "benchmark": str(benchmark), "metric": str(metric),
                             "value": _number(value), "stderr": stderr, "ci95": Z95 * stderr})
    return pd.DataFrame(rows, columns=LM_EVAL_COLUMNS)


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
