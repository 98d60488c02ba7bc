"""Assemble the report: tables, figures, Markdown and a self-contained HTML page, written without half-files.

    from arena.report.render import write_report
    out = write_report("results/runs", out="results/runs/report", length=None)

`build_blocks(...)` turns the tables into a list of blocks (heading, paragraph, table, image, note);
`render_markdown(blocks)` and `render_html(blocks, image_dir)` print the same blocks, the HTML with every PNG
inlined as a base64 data URI (no external file or network reference). `write_report` writes everything into a
fresh temporary folder beside the output folder and then moves each finished file into place with os.replace,
so a crash leaves either the previous report or the new one, never a torn file.
"""

from __future__ import annotations

import base64
import html
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from arena.report import plots, regression
from arena.report.load import (
    Z95,
    ReportWarning,
    load_curves,
    load_lengths,
    load_lm_eval,
    load_runs,
    setting_columns,
    warn,
)
from arena.report.protocol import (
    add_series,
    at_fixed_length,
    capability_matrix,
    chosen_runs,
    fixed_lengths,
    lr_table,
    protocol_text,
    select,
    task_metrics,
    tested_model_line,
)

FIGURES = {  # file name -> section title
    "accuracy_vs_length.png": "Accuracy against training length",
    "convergence.png": "Convergence at a fixed training length",
    "frontier.png": "Accuracy against state size and parameters",
    "length_extrapolation.png": "Length extrapolation",
    "capability_matrix.png": "Capability matrix",
}
COUNT_COLUMNS = {"params_total", "params_mixer", "state_size", "flops_per_token"}  # printed as 58,384
INTEGER_COLUMNS = {"train_len", "seed", "steps", "n_seeds", "n_runs", "n_completed", "n_diverged", "n_failed",
                   "n_unfinished", "step", "length", "seeds", *COUNT_COLUMNS}
RATE_COLUMNS = {"lr", "lr (chosen)"}
TRAINED_LENGTHS = "trained on lengths"  # results table column, where a group's lengths differ from its train_len
TEST_SCORE = "test (mean ± 95% CI)"  # results table column; a score that does not beat its shortcut ends in †


@dataclass
class Block:
    kind: str  # "h1" | "h2" | "p" | "table" | "image" | "note"
    text: str = ""
    table: pd.DataFrame | None = None


# ----------------------------------------------------------------------------------------------- cells
def cell(value, column: str = "") -> str:
    """One table cell: blanks for missing, integers without ".0", learning rates as 1e-03, else 3 decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if column in RATE_COLUMNS:
            return f"{value:g}"
        if column in COUNT_COLUMNS:
            return f"{int(round(value)):,}"
        if "acc" in column:  # accuracies and their CIs: always 3 decimals, 1.000 included
            return f"{value:.3f}"
        if column in INTEGER_COLUMNS or float(value).is_integer():
            return str(int(round(value)))
        return f"{value:.3f}"
    return str(value)


def accuracy_text(mean, ci) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:.3f}" if pd.isna(ci) else f"{mean:.3f} ± {ci:.3f}"


# ----------------------------------------------------------------------------------------------- blocks
def trained_lengths_text(row) -> str:
    """The lengths a run trained on, "3-40", where they differ from its train_len (a length probe trains on
    sequences of train_min_len..train_max_len tokens padded to train_len); "" where they are train_len."""
    low, high = row.get("train_min_len"), row.get("train_max_len")
    if pd.isna(low) or pd.isna(high) or low == high == row.get("train_len"):
        return ""
    return f"{int(low)}" if low == high else f"{int(low)}-{int(high)}"


def _display_selected(selected: pd.DataFrame) -> pd.DataFrame:
    columns = (["experiment"] if selected["experiment"].nunique() > 1 else []) + ["mixer", "task", "train_len"]
    table = selected[columns].copy()
    trained = selected.apply(trained_lengths_text, axis=1) if len(selected) else pd.Series(dtype=str)
    if (trained != "").any():  # train_len alone would say "64" of a model that never saw more than 40 tokens
        table[TRAINED_LENGTHS] = trained
    for column in setting_columns(selected):
        table[column] = selected[column]
    table["lr (chosen)"] = selected["lr"]
    table["metric"] = selected["metric"]
    table["valid (mean)"] = selected["valid_metric_mean"]
    by_loss = selected["selected_by"] == "loss"
    if by_loss.any():  # the number a task selected by loss (text) chose its rate on: mean validation loss
        table["valid loss (mean)"] = (-selected["valid_score_mean"]).where(by_loss)
    table[TEST_SCORE] = [accuracy_text(m, c) + (f" {DAGGER}" if not_above(m, s) else "") for m, c, s in
                         zip(selected["test_metric_mean"], selected["test_metric_ci95"], selected["shortcut_metric"])]
    table["seeds"] = selected["n_seeds"]
    table["runs (ok/div/fail)"] = [f"{a}/{b}/{c}" + (f" +{d} unfinished" if d else "") for a, b, c, d in
                                   zip(selected["n_completed"], selected["n_diverged"], selected["n_failed"],
                                       selected["n_unfinished"])]
    for column, label in (("test_bits_per_byte_mean", "test bits/byte"), ("test_perplexity_mean", "test perplexity")):
        if column in selected.columns and selected[column].notna().any():  # only where a text run is reported
            table[label] = selected[column]
    for column in ("params_total", "state_size", "flops_per_token"):
        table[column] = selected[column]
    table["best shortcut"] = [f"{s:.3f} ({name})" if pd.notna(s) else "" for s, name in
                              zip(selected["shortcut_metric"], selected["best_shortcut"])]
    table["note"] = selected["note"]
    return table


TRAINED_LENGTHS_NOTE = (f"`train_len` is the length of a training batch's sequences; a length probe trains on "
                        f"shorter sequences padded to it, and `{TRAINED_LENGTHS}` gives their lengths. Views \"at "
                        f"training length\" and \"against training length\" are indexed by `train_len`.")


LM_EVAL_NOTE = ("lm-eval scores of each run trained with `eval.lm_eval.tasks` (summary.json's `lm_eval`; all of "
                "lm-eval's output in the run's lm_eval.json, one row per score in lm_eval.csv with its `stderr` and "
                "`ci95`), beside the run's own test score and test bits/byte. A score with lm-eval's standard error "
                "is shown as score ± its 95 % interval half-width, 1.96 x stderr (over the task's examples: "
                "closed form for a mean such as acc, a bootstrap for perplexity; eval.lm_eval.bootstrap_iters); "
                "lm-eval gives none for bits_per_byte, word and byte perplexity, shown bare. One row per run: every "
                "learning rate and seed.")
LM_EVAL_STDERR = " stderr"  # lm_eval_table's column of a score's stderr: "<task> <metric> stderr"


def lm_eval_table(runs: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per run with lm-eval scores: the run's comparison, test score and bits/byte, then one column per
    `<lm-eval task> <metric>` and, where any run has a stderr for it, `<lm-eval task> <metric> stderr`."""
    if scores.empty:
        return pd.DataFrame()
    named = scores.assign(column=scores["benchmark"] + " " + scores["metric"])
    wide = named.pivot_table(index="run_dir", columns="column", values="value", aggfunc="first")
    if "stderr" in named.columns and named["stderr"].notna().any():
        errors = named[named["stderr"].notna()].pivot_table(index="run_dir", columns="column", values="stderr",
                                                            aggfunc="first")
        wide = wide.join(errors.add_suffix(LM_EVAL_STDERR))
        wide = wide[[c for name in sorted(named["column"].unique())
                     for c in (name, name + LM_EVAL_STDERR) if c in wide.columns]]
    columns = ["run_dir", "mixer", "task", "train_len", "lr", "seed", "test_metric", "test_bits_per_byte"]
    table = runs[runs["run_dir"].isin(wide.index)][columns].rename(
        columns={"test_metric": "test (run's task)", "test_bits_per_byte": "test bits/byte"})
    return table.merge(wide.reset_index().rename_axis(columns=None), on="run_dir").reset_index(drop=True)


def _display_lm_eval(table: pd.DataFrame) -> pd.DataFrame:
    """lm_eval_table for the page: a score with a stderr as "0.622 ± 0.044" (1.96 x stderr), else the bare score."""
    shown = table.copy()
    for column in [c for c in table.columns if c.endswith(LM_EVAL_STDERR)]:
        name = column[: -len(LM_EVAL_STDERR)]
        shown[name] = [cell(v, name) if pd.isna(se) or pd.isna(v) else f"{v:.3f} ± {Z95 * se:.3f}"
                       for v, se in zip(table[name], table[column])]
        shown = shown.drop(columns=column)
    return shown


DAGGER = "†"
SHORTCUT_WHAT = ("a rule that reads only the inputs (chance, the training majority, copying the last or the "
                 "previous token, or the task's own cheap heuristic such as stack's last element pushed to this "
                 "stack id, ignoring pops), scored on the same test data (`best shortcut`, in the task's metric; "
                 "arena/tasks/shortcuts.py, docs/probes.md#shortcut-baselines)")
SHORTCUT_NOTE = (f"{DAGGER} The test score does not beat the best shortcut baseline: {SHORTCUT_WHAT}. Such a "
                 "result does not show the ability the probe names.")
SHORTCUT_BEATEN_NOTE = f"Every test score beats its best shortcut baseline: {SHORTCUT_WHAT}."


def not_above(score, shortcut) -> bool:
    """True where a score is known and does not beat a known shortcut baseline."""
    return pd.notna(score) and pd.notna(shortcut) and score <= shortcut


def _problem_runs(runs: pd.DataFrame) -> pd.DataFrame:
    columns = ["run_dir", "mixer", "task", "train_len", "lr", "seed", "status", "steps", "message"]
    bad = runs[runs["status"] != "completed"] if len(runs) else runs
    return bad[columns].reset_index(drop=True)


def _status_line(runs: pd.DataFrame) -> str:
    counts = runs["status"].value_counts()
    order = ["completed", "diverged", "failed"] + sorted(set(counts.index) - {"completed", "diverged", "failed"})
    return ", ".join(f"{counts.get(s, 0)} {s}" for s in order)


class ReportInputError(ValueError):
    """A command-line choice the results cannot honour (a --length no run was trained at)."""


def check_length(selected: pd.DataFrame, length: int | None, fixed: dict) -> None:
    """ReportInputError when no group has training length `length`; a ReportWarning for each task without it
    (its single-length views fall back to its longest training length)."""
    if length is None or selected.empty:
        return
    have = sorted({int(v) for v in selected["train_len"].dropna()})
    if length not in have:
        raise ReportInputError(f"--length {length}: no run has training length {length}; "
                               f"the training lengths are {', '.join(map(str, have)) or 'unknown'}")
    for task, part in selected.groupby("task"):
        if not (part["train_len"] == length).any():
            lengths = ", ".join(str(int(v)) for v in sorted(part["train_len"].dropna().unique()))
            warn(f"--length {length}: task {task} has no run at that training length (it has {lengths}); its "
                 f"single-length views use {plots._length_text(fixed.get(task))}")


def build_tables(root, length: int | None = None) -> dict:
    """Every table of the report, from the run directories below `root` (no files written). What could not be
    read in full is listed under "warnings" (each ReportWarning once, in order). Raises ReportInputError for a
    `length` that no run has."""
    root = Path(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReportWarning)
        runs = load_runs(root)
        curves = load_curves(root, runs)
        lengths = load_lengths(root, runs)
        lm_eval = load_lm_eval(root, runs)
        selected = add_series(select(runs))
        chosen = chosen_runs(runs, selected)
        fixed = fixed_lengths(selected, length)
        check_length(selected, length, fixed)
        at_length = at_fixed_length(selected, length)
    for other in (w for w in caught if not issubclass(w.category, ReportWarning)):  # pandas' own: as usual
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    found = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, ReportWarning)))
    extrapolation = plots.extrapolation_table(lengths, chosen, fixed)
    return {
        "runs": runs, "curves": curves, "lengths": lengths, "selected": selected, "lr_table": lr_table(runs),
        "lm_eval": lm_eval, "lm_eval_table": lm_eval_table(runs, lm_eval),
        "fixed_lengths": fixed, "length": length, "warnings": found,
        "length_table": plots.length_table(selected),
        "convergence_table": plots.convergence_table(curves, chosen, fixed),
        "frontier_table": plots.frontier_table(at_length),
        "extrapolation_table": extrapolation,
        "multiples_table": plots.multiples_table(extrapolation),
        "capability_matrix": capability_matrix(selected, length),
        "mse_curves": regression.curve_table(root, chosen),  # regression tasks only; empty otherwise
    }


def draw_figures(tables: dict, folder: Path) -> dict:
    """Every figure into `folder`; file name -> path, or None where the data was missing."""
    folder = Path(folder)
    title = ("Capability matrix: test score at training length "
             f"{tables['length']} (else each task's longest)" if tables["length"] else None)
    matrix_kwargs = {"title": title} if title else {}
    matrix_kwargs["metrics"] = task_metrics(tables["selected"])
    return {
        "accuracy_vs_length.png": plots.plot_accuracy_vs_length(tables["length_table"],
                                                                 folder / "accuracy_vs_length.png"),
        "convergence.png": plots.plot_convergence(tables["convergence_table"], folder / "convergence.png"),
        "frontier.png": plots.plot_frontier(tables["frontier_table"], folder / "frontier.png"),
        "length_extrapolation.png": plots.plot_length_extrapolation(tables["extrapolation_table"],
                                                                    folder / "length_extrapolation.png"),
        "capability_matrix.png": plots.plot_capability_matrix(tables["capability_matrix"],
                                                              folder / "capability_matrix.png", **matrix_kwargs),
        REGRESSION_FIGURE: regression.plot_mse_curves(tables.get("mse_curves", pd.DataFrame()),
                                                      folder / REGRESSION_FIGURE),
    }


REGRESSION_FIGURE = "mse_vs_examples.png"  # drawn, with its section, only when some run is of a regression task


SKIPPED = {
    "accuracy_vs_length.png": "no group has a test accuracy at its chosen learning rate",
    "convergence.png": "no metrics.jsonl validation records for the chosen runs",
    "frontier.png": "no group has a test accuracy at its chosen learning rate",
    "length_extrapolation.png": "no run has length evaluations (set eval.lengths=[...] when training)",
    "capability_matrix.png": "no group has both a validation accuracy to choose by and a test accuracy",
}
SCORE = ("Scores are in each task's metric (the `metric` column): accuracy, or scaled accuracy (0 = chance, "
         "1 = perfect) for parity and modular arithmetic; the dotted line is the chance level, the grey dashes the "
         "best shortcut baseline (a rule that reads only the inputs, docs/probes.md#shortcut-baselines). Series that "
         "share an x value are drawn side by side (a few percent apart on the log axis); the table holds the true x.")
CAPTIONS = {
    "accuracy_vs_length.png": "One panel per task, one line per mixer (the layout of Kimi Linear's Figure 4). "
                              "Each point is the mean test score over seeds at the learning rate chosen on "
                              "validation; error bars are 95% confidence intervals. " + SCORE,
    "convergence.png": "Mean validation score over seeds against training step, at the chosen learning rate, "
                       "at each task's fixed training length (the band spans the seeds); for language modelling "
                       "the validation loss its learning rate is chosen on (nats per token, lower is better). "
                       + SCORE,
    "frontier.png": "Zoology's frontier: test score against the recurrent state per sequence (elements) and "
                    "against the parameter count, at each task's fixed training length. " + SCORE,
    "length_extrapolation.png": "Test score at other lengths of the models trained at each task's fixed "
                                "training length; the shaded span (a dashed line for one length) marks the "
                                "lengths they were trained on. Mean over seeds with 95% CIs. " + SCORE,
    "capability_matrix.png": "Test score of each mixer's best setting (chosen on validation) per task, at each "
                             "task's fixed training length; tasks marked (scaled) are in scaled accuracy.",
}
FIGURE_TABLES = {
    "accuracy_vs_length.png": "length_table", "convergence.png": "convergence_table",
    "frontier.png": "frontier_table", "length_extrapolation.png": "extrapolation_table",
    "capability_matrix.png": "capability_matrix",
}


MULTIPLES_CAPTION = (
    "Accuracy at multiples of the training length (the question of a length-extrapolation study: does a model keep "
    "its accuracy at 2x, 4x, 8x, ... the length it was trained at?). Each cell is the mean test score over seeds "
    "± the 95% CI half-width (Student's t; none for one seed), of the runs at the learning rate chosen on "
    "validation (held-out data of the training length); 1x is the run's `eval.lengths` score at the training "
    "length where it evaluated that length, else its test split. "
    f"{DAGGER}: not above the best shortcut baseline at that length, whose score is the task's `best shortcut` row. "
    "Numbers per cell in lengths_by_multiple.csv.")


def multiples_display(table: pd.DataFrame) -> pd.DataFrame:
    """multiples_table as one row per (task, series) and one column per multiple ("1x", "2x", ...), each cell
    "mean ± CI" (with a dagger where it does not beat the shortcut), and a `best shortcut` row per task."""
    table = table.assign(text=[accuracy_text(m, c) + (f" {DAGGER}" if not_above(m, s) else "") for m, c, s in
                               zip(table["test_metric_mean"], table["test_metric_ci95"], table["shortcut_metric"])],
                         n_seeds=table["n_seeds"].astype(float), _order=0)
    keys = ["task", "train_len", "metric"]
    shortcut = table.groupby(keys + ["multiple"], as_index=False)["shortcut_metric"].median()
    shortcut = shortcut.assign(series="best shortcut", n_seeds=math.nan, _order=1,  # after the task's models
                               text=[f"{v:.3f}" if pd.notna(v) else "" for v in shortcut["shortcut_metric"]])
    both = pd.concat([table, shortcut], ignore_index=True)
    index = ["task", "train_len", "_order", "series", "metric"]
    wide = both.pivot_table(index=index, columns="multiple", values="text", aggfunc="first", fill_value="")
    wide.columns = [f"{m}x" for m in wide.columns]
    wide["seeds"] = both.groupby(index)["n_seeds"].max()
    return wide.reset_index().drop(columns="_order")


def _trained_note(selected: pd.DataFrame, task: str, length) -> str:
    """" (sequences of 3-40 tokens)" where the task's groups at `length` trained on other lengths than it."""
    rows = selected[(selected["task"] == task) & (selected["train_len"] == length)]
    texts = sorted({t for t in rows.apply(trained_lengths_text, axis=1)} - {""}) if len(rows) else []
    return f" (sequences of {' or '.join(texts)} tokens)" if texts else ""


def build_blocks(root, tables: dict, figures: dict) -> list[Block]:
    runs, selected = tables["runs"], tables["selected"]
    settings = setting_columns(runs)
    fixed = ", ".join(f"{task} {plots._length_text(v)}{_trained_note(selected, task, v)}"
                      for task, v in tables["fixed_lengths"].items())
    blocks = [
        Block("h1", "arena report"),
        Block("p", f"Read {len(runs)} run directories under `{root}` (summary.json, config.yaml, metrics.jsonl; "
                   f"never wandb) on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. "
                   f"Status: {_status_line(runs)}."),
        Block("p", f"Experiments: {', '.join(sorted(e or '(none)' for e in runs['experiment'].unique()))}. "
                   f"Mixers: {', '.join(sorted(map(str, runs['mixer'].dropna().unique())))}. "
                   f"Tasks: {', '.join(sorted(map(str, runs['task'].dropna().unique())))}. "
                   f"Setting columns (config values that split a comparison): "
                   f"{', '.join(settings) if settings else 'none'}."),
        Block("p", "Tables as CSV beside this file: runs.csv (one row per run), selected.csv (one row per "
                   "comparison), curves.csv (evaluations during training), lengths.csv (test accuracy by length). "
                   f"Single-length views use training length: {fixed or 'none'}."),
        Block("h2", "Protocol"),
        Block("p", protocol_text(runs)),
        Block("p", tested_model_line(runs)),
    ]
    if tables.get("warnings"):
        blocks.append(Block("h2", "Warnings"))
        blocks += [Block("note", message) for message in tables["warnings"]]
    blocks += [
        Block("h2", "Results at the chosen learning rate"),
        Block("table", table=(results := _display_selected(selected))),
    ]
    if TRAINED_LENGTHS in results.columns:
        blocks.append(Block("note", TRAINED_LENGTHS_NOTE))
    if results[TEST_SCORE].astype(str).str.endswith(DAGGER).any():  # the note explains the table's daggers
        blocks.append(Block("note", SHORTCUT_NOTE))
    elif selected["shortcut_metric"].notna().any():  # no dagger to explain: say that none was needed
        blocks.append(Block("note", SHORTCUT_BEATEN_NOTE))
    if not tables.get("lm_eval_table", pd.DataFrame()).empty:  # runs trained with eval.lm_eval.tasks
        blocks += [Block("h2", "Standard benchmarks (lm-eval)"), Block("p", LM_EVAL_NOTE),
                   Block("table", table=_display_lm_eval(tables["lm_eval_table"]))]
    duplicates = runs[runs["duplicate_of"].fillna("") != ""] if "duplicate_of" in runs.columns else runs.iloc[0:0]
    if len(duplicates):
        blocks += [
            Block("h2", "Duplicate runs"),
            Block("note", f"{len(duplicates)} run director{'y repeats' if len(duplicates) == 1 else 'ies repeat'} "
                          "the config_hash of another run (a rerun, an earlier attempt, a twin found twice): each "
                          "config counts once, as the run named in `counted instead`."),
            Block("table", table=duplicates[["run_dir", "mixer", "task", "train_len", "lr", "seed", "status",
                                             "config_hash", "duplicate_of"]]
                  .rename(columns={"duplicate_of": "counted instead"}).reset_index(drop=True)),
        ]
    for number, (name, title) in enumerate(FIGURES.items(), start=1):
        blocks.append(Block("h2", f"{number}. {title}"))
        if figures.get(name) is None:
            blocks.append(Block("note", f"Plot skipped: {SKIPPED[name]}."))
            continue
        blocks.append(Block("image", name, None))
        blocks.append(Block("p", CAPTIONS[name]))
        table = tables[FIGURE_TABLES[name]]
        if name == "capability_matrix.png":
            table = table.reset_index().rename_axis(columns=None)
        blocks.append(Block("table", table=table))
        multiples = tables.get("multiples_table", pd.DataFrame())
        if name == "length_extrapolation.png" and not multiples.empty:  # the same data at 1x, 2x, 4x, ...
            blocks += [Block("p", MULTIPLES_CAPTION), Block("table", table=multiples_display(multiples))]
    if figures.get(REGRESSION_FIGURE) is not None:
        blocks += [Block("h2", "In-context regression: MSE against the number of examples"),
                   Block("p", "For regression tasks the scores above are minus the test MSE (higher is better, so "
                              "the learning rate is chosen on the lowest validation MSE); the curves are in "
                              "mse_curves.csv."),
                   Block("image", REGRESSION_FIGURE, None), Block("p", regression.CAPTION),
                   Block("table", table=regression.verdict_table(tables["mse_curves"]))]
    lr_rows = tables["lr_table"]
    blocks += [
        Block("h2", "Learning-rate sweep"),
        Block("p", "Every (comparison, learning rate): the mean validation score over the seeds every rate ran "
                   "(choice_score_mean, on choice_seeds) decides; test accuracy is shown for transparency only."),
        Block("table", table=lr_rows[[c for c in lr_rows.columns if c != "experiment"
                                      or lr_rows["experiment"].nunique() > 1]]),
        Block("h2", "Runs that diverged or failed"),
    ]
    problems = _problem_runs(runs)
    if problems.empty:
        blocks.append(Block("p", "None: every run completed."))
    blocks.append(Block("table", table=problems))
    return blocks


# ----------------------------------------------------------------------------------------------- rendering
def _rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = [str(c) for c in table.columns]
    body = [[cell(v, str(c)) for c, v in zip(table.columns, row)] for row in table.itertuples(index=False)]
    return header, body


def markdown_table(table: pd.DataFrame) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    header, body = _rows(table)
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def render_markdown(blocks: list[Block]) -> str:
    parts = []
    for block in blocks:
        if block.kind == "h1":
            parts.append(f"# {block.text}")
        elif block.kind == "h2":
            parts.append(f"## {block.text}")
        elif block.kind == "p":
            parts.append(block.text)
        elif block.kind == "note":
            parts.append(f"> {block.text}")
        elif block.kind == "image":
            parts.append(f"![{FIGURES.get(block.text, block.text)}]({block.text})")
        elif block.kind == "table":
            parts.append(markdown_table(block.table))
    return "\n\n".join(parts) + "\n"


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .15em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 13px; margin: .8em 0; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #ddd; }
.note { background: #fff6dd; border-left: 4px solid #e0b000; padding: .4em .8em; }
code { background: #f3f3f3; padding: 0 3px; }
"""


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code> (the only Markdown the paragraphs use)."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def html_table(table: pd.DataFrame) -> str:
    header, body = _rows(table)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in body)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>"


def render_html(blocks: list[Block], image_dir) -> str:
    """The same blocks as a standalone page; images are read from `image_dir` and embedded as data URIs."""
    parts = []
    for block in blocks:
        if block.kind == "h1":
            parts.append(f"<h1>{html.escape(block.text)}</h1>")
        elif block.kind == "h2":
            parts.append(f"<h2>{html.escape(block.text)}</h2>")
        elif block.kind == "p":
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif block.kind == "note":
            parts.append(f'<p class="note">{_inline(block.text)}</p>')
        elif block.kind == "image":
            data = base64.b64encode((Path(image_dir) / block.text).read_bytes()).decode("ascii")
            alt = html.escape(FIGURES.get(block.text, block.text))
            parts.append(f'<p><img alt="{alt}" src="data:image/png;base64,{data}"></p>')
        elif block.kind == "table":
            parts.append(html_table(block.table))
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>arena report</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


# ----------------------------------------------------------------------------------------------- files
def csv_ready(table: pd.DataFrame) -> pd.DataFrame:
    """Count columns (lengths, seeds, steps, budgets) as nullable integers where whole: 64, not 64.0."""
    table = table.copy()
    for column in table.columns:
        values = table[column]
        if column not in INTEGER_COLUMNS:
            continue
        if values.dtype.kind == "f" and values.notna().any():
            finite = values.dropna()
            if (finite == finite.round()).all() and finite.abs().max() < 2**53:
                table[column] = values.astype("Int64")
    return table


class NoRunsError(ValueError):
    """The results folder is missing or holds no run directory."""


def write_report(root, out=None, length: int | None = None) -> Path:
    """Write runs.csv, curves.csv, lengths.csv, selected.csv, report.md, report.html and the PNGs to `out`
    (default <root>/report). Raises NoRunsError, writing nothing, when `root` is missing or holds no runs, and
    ReportInputError for a `length` no run has. Warnings about unreadable files are listed in report.md."""
    root = Path(root)
    if not root.is_dir():
        raise NoRunsError(f"{root} is not a directory")
    return write_tables(root, build_tables(root, length), out)


def write_tables(root, tables: dict, out=None) -> Path:
    """The files of `write_report` from tables that build_tables made (so a caller can show its warnings)."""
    root = Path(root)
    if tables["runs"].empty:
        raise NoRunsError(f"no run directories (folders with a summary.json) under {root}")
    out = Path(out) if out is not None else root / "report"
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        for name in ("runs", "curves", "lengths", "selected"):
            csv_ready(tables[name]).to_csv(staging / f"{name}.csv", index=False, float_format="%.6g")
        if not tables.get("lm_eval", pd.DataFrame()).empty:  # runs trained with eval.lm_eval.tasks only
            tables["lm_eval"].to_csv(staging / "lm_eval.csv", index=False, float_format="%.6g")
        if not tables.get("multiples_table", pd.DataFrame()).empty:  # runs scored at eval.lengths
            csv_ready(tables["multiples_table"]).to_csv(staging / "lengths_by_multiple.csv", index=False,
                                                        float_format="%.6g")
        if not tables.get("mse_curves", pd.DataFrame()).empty:  # regression tasks only
            tables["mse_curves"].to_csv(staging / "mse_curves.csv", index=False, float_format="%.6g")
        figures = draw_figures(tables, staging)
        blocks = build_blocks(root, tables, figures)
        (staging / "report.md").write_text(render_markdown(blocks))
        (staging / "report.html").write_text(render_html(blocks, staging))
        out.mkdir(exist_ok=True)
        if tables.get("multiples_table", pd.DataFrame()).empty:  # no table now: none kept from an older report
            (out / "lengths_by_multiple.csv").unlink(missing_ok=True)
        for stale in (set(FIGURES) | set(figures)) - {name for name, path in figures.items() if path}:
            (out / stale).unlink(missing_ok=True)  # a plot skipped now must not survive from an older report
        for path in sorted(staging.iterdir()):  # each file whole, by rename; the page last
            if path.name not in ("report.md", "report.html"):
                os.replace(path, out / path.name)
        for name in ("report.md", "report.html"):
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


__all__ = ["Block", "NoRunsError", "ReportInputError", "build_blocks", "build_tables", "draw_figures", "render_html",
           "render_markdown", "write_report", "write_tables"]
