"""The report's figures, each from one tidy table that the report also prints (the table behind the plot).

    from arena.report import plots
    table = plots.length_table(selected)                  # the data
    plots.plot_accuracy_vs_length(table, "acc.png")       # the PNG, or None when the table is empty

Every `*_table` function is pure pandas; every `plot_*` function takes its table and a path, writes a PNG with
matplotlib's Agg backend (no display needed) and returns the path, or None when there is nothing to draw.
Numbers are in each task's metric (`metric` column: accuracy, or scaled accuracy for parity, whose chance level
is 0). Each series keeps one colour, marker and line style in every figure, and series that share an x value are
drawn slightly apart (log axes: a few percent), so that equal results stay visible; the legend names them, never
text beside the points. Accuracy panels draw the chance level (dotted); the extrapolation panels shade the
lengths the model was trained on (parity: 3-16 tokens, not its padded seq_len).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI machines and GPU hosts have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from arena.report.load import to_metric  # noqa: E402
from arena.report.protocol import mean_ci95  # noqa: E402

DPI = 110
PANEL = (4.4, 3.4)  # inches per panel


# ----------------------------------------------------------------------------------------------- tables
# what the reference lines are drawn from (chance, training lengths, the best shortcut baseline)
REFERENCE_COLUMNS = ["chance_accuracy", "train_min_len", "train_max_len", "shortcut_metric"]


def length_table(selected: pd.DataFrame) -> pd.DataFrame:
    """Test score at the chosen learning rate against training length: one row per (task, series, length)."""
    columns = ["task", "series", "metric", "train_len", "test_metric_mean", "test_metric_ci95", "n_seeds", "lr",
               *REFERENCE_COLUMNS]
    rows = selected[selected["test_metric_mean"].notna()] if len(selected) else selected
    return rows[columns].sort_values(["task", "series", "train_len"]).reset_index(drop=True)


def convergence_table(curves: pd.DataFrame, chosen: pd.DataFrame, lengths: dict) -> pd.DataFrame:
    """Validation score against step for the chosen-rate runs at each task's fixed length, averaged over seeds
    (min and max kept for the band): the task's metric, or for runs whose learning rate is chosen on loss
    (language modelling, `selected_by` loss) the validation loss itself, metric `valid_loss`, with no chance or
    shortcut level."""
    columns = ["task", "series", "metric", "train_len", "step", "valid_metric_mean", "valid_metric_min",
               "valid_metric_max", "n_seeds", *REFERENCE_COLUMNS]
    if curves.empty or chosen.empty:
        return pd.DataFrame(columns=columns)
    runs = chosen[chosen.apply(lambda r: r["train_len"] == lengths.get(r["task"]), axis=1)]
    runs = runs.assign(by_loss=runs["selected_by"].eq("loss"))  # load_runs always writes selected_by
    meta = runs[["run_dir", "task", "series", "metric", "train_len", "seed", "by_loss", *REFERENCE_COLUMNS]]
    data = curves[curves["split"] == "valid"].merge(meta, on="run_dir")
    if data.empty:
        return pd.DataFrame(columns=columns)
    data["value"] = [loss if by_loss else to_metric(a, m, c) for a, m, c, loss, by_loss in
                     zip(data["accuracy"], data["metric"], data["chance_accuracy"], data["valid_loss"],
                         data["by_loss"])]
    data.loc[data["by_loss"], "metric"] = "valid_loss"
    data.loc[data["by_loss"], ["chance_accuracy", "shortcut_metric"]] = np.nan  # levels of accuracy, not loss
    # runs that repeat a seed (another kernel implementation, say) are one seed: averaged before the band
    keys = ["task", "series", "metric", "train_len", "step"]
    data = data.groupby(keys + ["seed"], dropna=False).agg(
        value=("value", "mean"), **{c: (c, "first") for c in REFERENCE_COLUMNS}).reset_index()
    table = (data.groupby(keys).agg(valid_metric_mean=("value", "mean"), valid_metric_min=("value", "min"),
                                    valid_metric_max=("value", "max"), n_seeds=("value", "count"),
                                    **{c: (c, "first") for c in REFERENCE_COLUMNS}).reset_index())
    return table[columns]


def frontier_table(selected_at_length: pd.DataFrame) -> pd.DataFrame:
    """Test score against state size and parameters, one point per (task, series) at the fixed length."""
    columns = ["task", "train_len", "series", "metric", "state_size", "params_total", "flops_per_token",
               "test_metric_mean", "test_metric_ci95", "n_seeds", *REFERENCE_COLUMNS]
    rows = selected_at_length[selected_at_length["test_metric_mean"].notna()]
    return rows[columns].sort_values(["task", "state_size", "series"]).reset_index(drop=True)


def extrapolation_table(lengths: pd.DataFrame, chosen: pd.DataFrame, fixed: dict) -> pd.DataFrame:
    """Test score against test length for the chosen-rate runs at each task's fixed training length, mean and
    95% CI over seeds. The training length itself comes from the runs' test score where it was not re-scored."""
    columns = ["task", "series", "metric", "train_len", "length", "test_metric_mean", "test_metric_ci95", "n_seeds",
               *REFERENCE_COLUMNS]
    if lengths.empty or chosen.empty:
        return pd.DataFrame(columns=columns)
    runs = chosen[chosen.apply(lambda r: r["train_len"] == fixed.get(r["task"]), axis=1)]
    meta = runs[["run_dir", "task", "series", "metric", "train_len", "seed", *REFERENCE_COLUMNS]]
    data = lengths[["run_dir", "length", "accuracy", "scaled_accuracy", "best_shortcut_accuracy"]].merge(
        meta, on="run_dir")
    if data.empty:
        return pd.DataFrame(columns=columns)
    # the shortcut measured at each test length where the record has it (it changes with length), else the run's
    at_length = [to_metric(b, m, c) for b, m, c in
                 zip(data["best_shortcut_accuracy"], data["metric"], data["chance_accuracy"])]
    data["shortcut_metric"] = [a if pd.notna(a) else s for a, s in zip(at_length, data["shortcut_metric"])]
    data = data.drop(columns="best_shortcut_accuracy")
    # the record's own scaled accuracy (its chance at that length); computed from the run's chance where absent
    data["value"] = [s if m == "scaled_accuracy" and pd.notna(s) else to_metric(a, m, c) for a, s, m, c in
                     zip(data["accuracy"], data["scaled_accuracy"], data["metric"], data["chance_accuracy"])]
    # a run's own test score stands for its training length, unless the task tests on a range of lengths of
    # its own (parity: test_min_len..test_max_len), which is no single length
    own_length = (runs["train_min_len"] == runs["train_len"]) & (runs["train_max_len"] == runs["train_len"])
    at_train = runs[runs["run_dir"].isin(data["run_dir"]) & own_length][["run_dir", "train_len", "test_metric"]]
    at_train = at_train.rename(columns={"train_len": "length", "test_metric": "value"}).merge(meta, on="run_dir")
    scored = set(zip(data["run_dir"], data["length"]))
    at_train = at_train[[(d, L) not in scored for d, L in zip(at_train["run_dir"], at_train["length"])]]
    data = pd.concat([data, at_train], ignore_index=True)
    rows = []
    keys = ["task", "series", "metric", "train_len", "length"]
    for key, part in data.groupby(keys):
        seeds = part.groupby(part["seed"].fillna(-1.0))["value"].mean()  # a repeated seed counts once
        mean, n, ci = mean_ci95(seeds)
        rows.append({**dict(zip(keys, key)), "test_metric_mean": mean, "test_metric_ci95": ci, "n_seeds": n,
                     **{c: part[c].iloc[0] for c in REFERENCE_COLUMNS},
                     "shortcut_metric": part["shortcut_metric"].median()})  # each seed's test data has its own
    return pd.DataFrame(rows, columns=columns)


def multiples_table(extrapolation: pd.DataFrame) -> pd.DataFrame:
    """The extrapolation table at whole multiples of the training length (1x, 2x, 4x, ...): one row per (task,
    series, training length, multiple) with the test score's mean and 95% CI over seeds and the best shortcut at
    that length. Only tasks trained at one length qualify (parity's 3-16 tokens padded to 64 have no multiple)."""
    columns = ["task", "series", "metric", "train_len", "multiple", "length", "test_metric_mean", "test_metric_ci95",
               "n_seeds", "shortcut_metric"]
    if extrapolation.empty:
        return pd.DataFrame(columns=columns)
    ratio = extrapolation["length"] / extrapolation["train_len"]
    one_length = ((extrapolation["train_min_len"] == extrapolation["train_len"])
                  & (extrapolation["train_max_len"] == extrapolation["train_len"]))
    keep = one_length & (ratio >= 1) & (ratio == ratio.round())
    rows = extrapolation[keep].assign(multiple=ratio[keep].round().astype(int))
    return rows[columns].sort_values(["task", "series", "multiple"]).reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- helpers
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("-", "--", "-.", ":")
DODGE = 0.035  # log2 units between neighbouring series that share an x value (about 2.5%)
CHANCE_LABEL = "chance level (dotted)"
SHORTCUT_LABEL = "best shortcut baseline (grey dashes)"  # arena/tasks/shortcuts.py, on the same test data


def series_colours(names) -> dict:
    names = sorted({str(n) for n in names})
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def series_styles(names) -> dict:
    """Series name -> colour, marker and line style; neighbours in the sorted order differ in all three, so two
    series drawn on top of each other still show both."""
    colours = series_colours(names)
    return {name: {"color": colours[name], "marker": MARKERS[i % len(MARKERS)],
                   "linestyle": LINESTYLES[i % len(LINESTYLES)]} for i, name in enumerate(sorted(colours))}


def dodge(values, index: int, count: int) -> np.ndarray:
    """x values of the index-th of `count` series, spread around the true x on a log axis (a factor of 2**(k *
    DODGE)), so equal points of different series sit side by side; the true x is in the table."""
    return np.asarray(values, dtype=float) * 2 ** (DODGE * (index - (count - 1) / 2))


def _panels(n: int, size=PANEL, ncols_max: int = 3):
    ncols = min(n, ncols_max)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols + 2.2, size[1] * nrows + 0.6),
                             squeeze=False, layout="constrained")
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _log2_axis(ax, values) -> None:
    ticks = sorted({int(v) for v in values if pd.notna(v) and v > 0})
    ax.set_xscale("log", base=2)
    if ticks:
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        margin = 1.6 if len(ticks) == 1 else 1.25
        ax.set_xlim(ticks[0] / margin, ticks[-1] * margin)
        if len(ticks) > 6:
            ax.tick_params(axis="x", labelrotation=45)


def human(value: float) -> str:
    """12000 -> "12k", 3e6 -> "3M": tick labels that read as counts, not as 1.2x10^4."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _log_count_axis(ax) -> None:
    """Log x axis labelled 1k, 2k, 5k, 10k, ...: decades and their 2x and 5x minor ticks."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human(v)))
    ax.xaxis.set_minor_formatter(FuncFormatter(
        lambda v, _: human(v) if v > 0 and f"{v:.0e}"[0] in "25" else ""))
    ax.tick_params(axis="x", which="both", labelsize=9)


def metric_name(metric: str) -> str:
    if metric == "neg_mse":  # a regression task (icl_regression): its accuracy slots hold -MSE, higher is better
        return "minus MSE"
    if metric == "valid_loss":  # language modelling's convergence: the loss its learning rate is chosen on
        return "validation loss"
    return "scaled accuracy" if metric == "scaled_accuracy" else "accuracy"


def metric_label(metric: str, split: str = "test") -> str:
    if metric == "valid_loss":
        return f"{split} loss\n(nats per scored token; lower is better)"
    if metric == "neg_mse":
        return f"{split} minus MSE\n(0 = perfect; see the MSE curves)"
    if metric == "scaled_accuracy":
        return f"{split} scaled accuracy\n(0 = chance, 1 = perfect)"
    return f"{split} accuracy\n(fraction of scored tokens)"


def _accuracy_axis(ax, metric: str = "accuracy", split: str = "test", lowest: float = 0.0) -> None:
    """0..1 with a little room; scaled accuracy may go below 0 (worse than chance), so the axis follows it. A loss
    (metric valid_loss) keeps matplotlib's own limits."""
    low = min(-0.03, lowest - 0.05) if np.isfinite(lowest) else -0.03
    if metric != "valid_loss":
        ax.set_ylim(low, 0.03 if metric == "neg_mse" else 1.03)  # minus MSE: at most 0
    ax.set_ylabel(metric_label(metric, split))
    ax.grid(True, alpha=0.3)


def _lowest(part: pd.DataFrame, mean: str, ci: str | None = None) -> float:
    """The lowest point an error bar of `part` reaches, cut at each row's lowest possible score."""
    y = part[mean].astype(float) - (part[ci].astype(float).fillna(0) if ci else 0)
    floor = [lowest_score(m, c) for m, c in zip(part["metric"], part["chance_accuracy"])]
    values = np.maximum(y.to_numpy(), np.asarray(floor, dtype=float))
    return float(np.nanmin(values)) if np.isfinite(values).any() else 0.0


def _chance_line(ax, part: pd.DataFrame) -> None:
    """The score of a uniform guess: 0 in scaled accuracy, the task's chance accuracy otherwise (a task that
    records none, or 0, gets no line: its chance level is not known)."""
    levels = set()
    for metric, chance in zip(part["metric"], part["chance_accuracy"]):
        if metric == "scaled_accuracy":
            levels.add(0.0)
        elif pd.notna(chance) and 0 < chance < 1:
            levels.add(float(chance))
    for level in sorted(levels):
        ax.axhline(level, color="0.35", linestyle=":", linewidth=1.2, label=CHANCE_LABEL, zorder=1)


def _shortcut_line(ax, part: pd.DataFrame, x: str | None = None) -> None:
    """The best shortcut baseline's score (a result at or below it shows no more than the shortcut does):
    against `x` where it varies with it (training or test length), else one level. Runs from before shortcuts
    were recorded have none and get no line."""
    if "shortcut_metric" not in part.columns or part["shortcut_metric"].isna().all():
        return
    style = {"color": "0.45", "linestyle": (0, (5, 3)), "linewidth": 1.3, "label": SHORTCUT_LABEL, "zorder": 1}
    if x is None or part[x].nunique() < 2:
        ax.axhline(part["shortcut_metric"].median(), **style)
        return
    line = part.groupby(x)["shortcut_metric"].median().dropna()
    ax.plot(line.index, line.to_numpy(), marker="_", markersize=8, **style)


def _panel_metric(part: pd.DataFrame) -> str:
    metrics = sorted(set(part["metric"].dropna()))
    return metrics[0] if len(metrics) == 1 else "accuracy"


def train_range_text(low, high) -> str:
    """"3-16" for a range of training lengths, "64" for one length, "?" when unknown."""
    if pd.isna(low) or pd.isna(high):
        return "?"
    return f"{int(low)}" if low == high else f"{int(low)}-{int(high)}"


def _trained_range(part: pd.DataFrame) -> str:
    """"3-16" where the training lengths are not the sequence length (parity and the other state-tracking probes
    pad shorter content to seq_len) and the panel has one such range; "" otherwise."""
    ranges = {(lo, hi) for lo, hi, L in zip(part["train_min_len"], part["train_max_len"], part["train_len"])
              if pd.notna(lo) and pd.notna(hi) and not lo == hi == L}
    return train_range_text(*next(iter(ranges))) if len(ranges) == 1 else ""


def _title(task: str, part: pd.DataFrame, with_length: bool = False) -> str:
    """"parity (scaled accuracy; seq_len 64, trained on 3-16 tokens)", wrapped to the panel's width."""
    metric = _panel_metric(part)
    bits = [] if metric == "accuracy" else [metric_name(metric)]
    trained = _trained_range(part)
    length = _length_text(part["train_len"].iloc[0])
    if trained:
        bits.append(f"seq_len {length}, trained on {trained} tokens" if with_length else f"trained on {trained} tokens")
    elif with_length:
        bits.append(f"training length {length}")
    return "\n".join(textwrap.wrap(f"{task} ({'; '.join(bits)})" if bits else task, 46))


def _finish(fig, path: Path, title: str, legend: bool = True) -> Path:
    width_chars = int(fig.get_figwidth() * 9)  # about 9 characters of 12-point text per inch
    fig.suptitle("\n".join(textwrap.wrap(title, width_chars)), fontsize=12)
    if legend:
        handles, labels = {}, []
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                if label not in handles:
                    handles[label] = handle
                    labels.append(label)
        # the same order in every figure: the series, then the reference lines
        labels.sort(key=lambda lab: (lab in (CHANCE_LABEL, SHORTCUT_LABEL) or lab.startswith("training length"),
                                     lab))
        if handles:
            fig.legend([handles[lab] for lab in labels], labels, loc="outside right center", title="mixer",
                       fontsize=9, title_fontsize=9, frameon=False)
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def clipped_yerr(y, ci, low: float = 0.0, high: float = 1.0):
    """Asymmetric error bars for a mean +- CI, cut at the metric's range (accuracy: 0 and 1); None without CIs."""
    y, ci = np.asarray(y, dtype=float), np.asarray(ci, dtype=float)
    if np.all(np.isnan(ci)):
        return None
    ci = np.nan_to_num(ci)
    return np.vstack([y - np.clip(y - ci, low, high), np.clip(y + ci, low, high) - y])


def lowest_score(metric: str, chance) -> float:
    """The score of accuracy 0: 0, or -chance / (1 - chance) in scaled accuracy; minus MSE has no floor."""
    if metric == "neg_mse":
        return -math.inf
    return to_metric(0.0, metric, chance) if metric == "scaled_accuracy" else 0.0


def _errorbar(ax, x, y, ci, style: dict, label: str, low: float = 0.0) -> None:
    ax.errorbar(x, y, yerr=clipped_yerr(y, ci, low), capsize=3, markersize=5, linewidth=1.5, label=label, **style)



def _series_errorbars(ax, part, x: str, styles: dict) -> str:
    """One error-bar line per series of `part` against column `x`, dodged so coinciding series stay visible;
    returns the panel's metric."""
    metric = _panel_metric(part)
    names = sorted(part["series"].unique())
    for index, series in enumerate(names):
        line = part[part["series"] == series].sort_values(x)
        low = lowest_score(metric, line["chance_accuracy"].iloc[0])
        _errorbar(ax, dodge(line[x], index, len(names)), line["test_metric_mean"], line["test_metric_ci95"],
                  styles[series], series, low)
    return metric

def _length_text(value) -> str:
    return "?" if pd.isna(value) else str(int(value))


# ----------------------------------------------------------------------------------------------- figures
def plot_accuracy_vs_length(table: pd.DataFrame, path) -> Path | None:
    """Kimi Linear's Figure 4 layout: one panel per task, test score against training length, one line per
    mixer; error bars are 95% CIs over seeds; the dotted line is chance."""
    table = table.dropna(subset=["train_len"])
    if table.empty:
        return None
    tasks = sorted(table["task"].unique())
    styles = series_styles(table["series"])
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        part = table[table["task"] == task]
        metric = _series_errorbars(ax, part, "train_len", styles)
        _chance_line(ax, part)
        _shortcut_line(ax, part, "train_len")
        _log2_axis(ax, part["train_len"])
        _accuracy_axis(ax, metric, lowest=_lowest(part, "test_metric_mean", "test_metric_ci95"))
        ax.set_xlabel("training length (tokens, log2 scale)" if not _trained_range(part)
                      else "sequence length seq_len (tokens, log2 scale)")
        ax.set_title(_title(task, part), fontsize=11)
    seeds = int(table["n_seeds"].max())
    note = "error bars: 95% CI over seeds" if seeds > 1 else "one seed: no error bars"
    return _finish(fig, path, f"Test score against training length (learning rate chosen on validation; {note}; "
                              "series side by side where they share a length)")


def plot_convergence(table: pd.DataFrame, path) -> Path | None:
    """Validation score against training step at a fixed training length, one panel per task, chosen rate
    only; the shaded band spans the seeds (min to max); the dotted line is chance."""
    if table.empty:
        return None
    tasks = sorted(table["task"].unique())
    styles = series_styles(table["series"])
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        part = table[table["task"] == task]
        metric = _panel_metric(part)
        for series, line in part.groupby("series"):
            line = line.sort_values("step")
            style = styles[series]
            # every point marked while they can be told apart; a dense curve marks about 12 of them
            ax.plot(line["step"], line["valid_metric_mean"], label=series, linewidth=1.5, markersize=4,
                    markevery=max(1, len(line) // 12), **style)
            if line["n_seeds"].max() > 1:
                ax.fill_between(line["step"], line["valid_metric_min"], line["valid_metric_max"],
                                color=style["color"], alpha=0.12, linewidth=0)
        _chance_line(ax, part)
        _shortcut_line(ax, part)  # measured on the test split: the level a validation score should clear too
        _accuracy_axis(ax, metric, "validation", lowest=_lowest(part, "valid_metric_min"))
        ax.set_xlim(0, part["step"].max() * 1.05)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human(v)))
        ax.set_xlabel("training step (optimizer updates)")
        ax.set_title(_title(task, part, with_length=True), fontsize=11)
    return _finish(fig, path, "Convergence: validation score during training (chosen learning rate; "
                              "band: range over seeds)")


def plot_frontier(table: pd.DataFrame, path) -> Path | None:
    """Zoology's frontier: test score against recurrent state size and against parameter count (log x), one
    row of two panels per task; the legend names the points (equal points sit side by side)."""
    if table.empty:
        return None
    tasks = sorted(table["task"].unique())
    styles = series_styles(table["series"])
    fig, axes = plt.subplots(len(tasks), 2, figsize=(2 * PANEL[0] + 2.4, PANEL[1] * len(tasks) + 0.6),
                             squeeze=False, layout="constrained")
    x_axes = (("state_size", "state size (elements per sequence, log scale)"),
              ("params_total", "parameters (count, log scale)"))
    for row, task in zip(axes, tasks):
        part = table[table["task"] == task]
        metric = _panel_metric(part)
        for ax, (column, xlabel) in zip(row, x_axes):
            points = part[part[column].notna() & (part[column] > 0)].sort_values("series")
            same_x = points.groupby(column)["series"]  # only points that share an x value are set apart
            places = zip(same_x.cumcount(), same_x.transform("size"))
            for (_, p), (index, count) in zip(points.iterrows(), places):
                style = styles[p["series"]]
                low = lowest_score(metric, p["chance_accuracy"])
                yerr = clipped_yerr([p["test_metric_mean"]], [p["test_metric_ci95"]], low)
                ax.errorbar(dodge([p[column]], index, count), [p["test_metric_mean"]], yerr=yerr,
                            marker=style["marker"], color=style["color"], markersize=6, capsize=3,
                            label=p["series"], linestyle="none")
            _chance_line(ax, part)
            _shortcut_line(ax, part)
            _log_count_axis(ax)
            if len(points):
                low, high = points[column].min(), points[column].max()
                ax.set_xlim(low / 1.6, high * 1.6)
            _accuracy_axis(ax, metric, lowest=_lowest(part, "test_metric_mean", "test_metric_ci95"))
            ax.set_xlabel(xlabel)
            ax.set_title(_title(task, part, with_length=True), fontsize=11)
    return _finish(fig, path, "Score against state size and parameters (chosen learning rate)")


def plot_length_extrapolation(table: pd.DataFrame, path) -> Path | None:
    """Test score against test length, one panel per task, one line per mixer; the shaded span is the range
    of lengths the model was trained on (a dashed line where that is one length); the dotted line is chance."""
    if table.empty:
        return None
    tasks = sorted(table["task"].unique())
    styles = series_styles(table["series"])
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        part = table[table["task"] == task]
        metric = _series_errorbars(ax, part, "length", styles)
        ranges = part[["train_min_len", "train_max_len", "train_len"]].drop_duplicates()
        edges = []
        for lo, hi, seq_len in ranges.itertuples(index=False):  # in the legend, not as text: text hid data
            lo, hi = (seq_len, seq_len) if pd.isna(lo) or pd.isna(hi) else (lo, hi)
            if pd.isna(lo):
                continue
            if lo == hi:
                ax.axvline(lo, color="0.3", linestyle="--", linewidth=1, label=f"training length {int(lo)} (dashed)")
            else:
                ax.axvspan(lo, hi, color="0.5", alpha=0.15, linewidth=0,
                           label=f"training lengths {train_range_text(lo, hi)} (shaded)")
            edges += [lo, hi]
        _chance_line(ax, part)
        _shortcut_line(ax, part, "length")
        _log2_axis(ax, list(part["length"]) + edges)
        _accuracy_axis(ax, metric, lowest=_lowest(part, "test_metric_mean", "test_metric_ci95"))
        ax.set_xlabel("test length (tokens, log2 scale)")
        ax.set_title(_title(task, part), fontsize=11)
    return _finish(fig, path, "Length extrapolation: test score beyond the training lengths (shaded or dashed)")


def plot_capability_matrix(matrix: pd.DataFrame, path,
                           title: str = "Capability matrix: test score at each task's longest training length",
                           metrics: dict | None = None) -> Path | None:
    """Mixers x tasks heatmap of test score, numbers written in the cells, colour scale fixed to 0..1 (a scaled
    accuracy below 0, worse than chance, takes the colour of 0; its cell prints the number). A task scored in
    scaled accuracy says so under its name (`metrics`: task -> metric)."""
    metrics = metrics or {}
    values = matrix.to_numpy(dtype=float)
    if not np.isfinite(values).any():
        return None
    n_mixers, n_tasks = values.shape
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * n_tasks + 3.0), max(2.6, 0.5 * n_mixers + 1.8)),
                           layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")  # grey: no result
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(n_mixers):
        for j in range(n_tasks):
            value = values[i, j]
            text = "n/a" if np.isnan(value) else f"{value:.2f}"
            colour = "black" if np.isnan(value) or value > 0.6 else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color=colour)
    names = [f"{t}\n(scaled)" if metrics.get(t) == "scaled_accuracy" else str(t) for t in matrix.columns]
    ax.set_xticks(range(n_tasks), names, rotation=30 if n_tasks > 4 else 0,
                  ha="right" if n_tasks > 4 else "center")
    ax.set_yticks(range(n_mixers), [str(m) for m in matrix.index])
    ax.set_xlabel("task (probe)")
    ax.set_ylabel("mixer")
    colourbar = fig.colorbar(image, ax=ax)
    scaled = any(metrics.get(t) == "scaled_accuracy" for t in matrix.columns)
    colourbar.set_label("test accuracy (scaled where marked)" if scaled else "test accuracy (fraction)")
    return _finish(fig, path, title, legend=False)
