"""The report's figures, each from one tidy table that the report also prints (the table behind the plot).

    from arena.report import plots
    table = plots.length_table(selected)                  # the data
    plots.plot_accuracy_vs_length(table, "acc.png")       # the PNG, or None when the table is empty

Every `*_table` function is pure pandas; every `plot_*` function takes its table and a path, writes a PNG with
matplotlib's Agg backend (no display needed) and returns the path, or None when there is nothing to draw.
Colours follow the series name, so one mixer has one colour in every figure.
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

from arena.report.protocol import mean_ci95  # noqa: E402

DPI = 110
PANEL = (4.4, 3.4)  # inches per panel
ACCURACY_LABEL = "test accuracy (fraction of scored tokens)"


# ----------------------------------------------------------------------------------------------- tables
def length_table(selected: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy at the chosen learning rate against training length: one row per (task, series, length)."""
    columns = ["task", "series", "train_len", "test_accuracy_mean", "test_accuracy_ci95", "n_seeds", "lr"]
    rows = selected[selected["test_accuracy_mean"].notna()] if len(selected) else selected
    return rows[columns].sort_values(["task", "series", "train_len"]).reset_index(drop=True)


def convergence_table(curves: pd.DataFrame, chosen: pd.DataFrame, lengths: dict) -> pd.DataFrame:
    """Validation accuracy against step for the chosen-rate runs at each task's fixed length, averaged over
    seeds (min and max kept for the band)."""
    columns = ["task", "series", "train_len", "step", "valid_accuracy_mean", "valid_accuracy_min",
               "valid_accuracy_max", "n_seeds"]
    if curves.empty or chosen.empty:
        return pd.DataFrame(columns=columns)
    runs = chosen[chosen.apply(lambda r: r["train_len"] == lengths.get(r["task"]), axis=1)]
    data = curves[curves["split"] == "valid"].merge(runs[["run_dir", "task", "series", "train_len"]], on="run_dir")
    if data.empty:
        return pd.DataFrame(columns=columns)
    table = (data.groupby(["task", "series", "train_len", "step"])["accuracy"]
             .agg(valid_accuracy_mean="mean", valid_accuracy_min="min", valid_accuracy_max="max", n_seeds="count")
             .reset_index())
    return table[columns]


def frontier_table(selected_at_length: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy against state size and parameters, one point per (task, series) at the fixed length."""
    columns = ["task", "train_len", "series", "state_size", "params_total", "flops_per_token", "test_accuracy_mean",
               "test_accuracy_ci95", "n_seeds"]
    rows = selected_at_length[selected_at_length["test_accuracy_mean"].notna()]
    return rows[columns].sort_values(["task", "state_size", "series"]).reset_index(drop=True)


def extrapolation_table(lengths: pd.DataFrame, chosen: pd.DataFrame, fixed: dict) -> pd.DataFrame:
    """Test accuracy against test length for the chosen-rate runs at each task's fixed training length, mean and
    95% CI over seeds. The training length itself comes from the runs' test accuracy where it was not re-scored."""
    columns = ["task", "series", "train_len", "length", "accuracy_mean", "accuracy_ci95", "n_seeds"]
    if lengths.empty or chosen.empty:
        return pd.DataFrame(columns=columns)
    runs = chosen[chosen.apply(lambda r: r["train_len"] == fixed.get(r["task"]), axis=1)]
    meta = runs[["run_dir", "task", "series", "train_len"]]
    data = lengths[["run_dir", "length", "accuracy"]].merge(meta, on="run_dir")
    if data.empty:
        return pd.DataFrame(columns=columns)
    at_train = runs[runs["run_dir"].isin(data["run_dir"])][["run_dir", "train_len", "test_accuracy"]]
    at_train = at_train.rename(columns={"train_len": "length", "test_accuracy": "accuracy"}).merge(meta, on="run_dir")
    scored = set(zip(data["run_dir"], data["length"]))
    at_train = at_train[[(d, L) not in scored for d, L in zip(at_train["run_dir"], at_train["length"])]]
    data = pd.concat([data, at_train], ignore_index=True)
    rows = []
    for (task, series, train_len, length), part in data.groupby(["task", "series", "train_len", "length"]):
        mean, n, ci = mean_ci95(part["accuracy"])
        rows.append({"task": task, "series": series, "train_len": train_len, "length": length,
                     "accuracy_mean": mean, "accuracy_ci95": ci, "n_seeds": n})
    return pd.DataFrame(rows, columns=columns)


# ----------------------------------------------------------------------------------------------- helpers
def series_colours(names) -> dict:
    names = sorted({str(n) for n in names})
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


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


def _accuracy_axis(ax, label: str = ACCURACY_LABEL) -> None:
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)


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
        labels.sort()  # the same order in every figure
        if handles:
            fig.legend([handles[lab] for lab in labels], labels, loc="outside right center", title="mixer",
                       fontsize=9, title_fontsize=9, frameon=False)
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def clipped_yerr(y, ci):
    """Asymmetric error bars for a mean +- CI, cut at 0 and 1 (no accuracy lies outside); None without CIs."""
    y, ci = np.asarray(y, dtype=float), np.asarray(ci, dtype=float)
    if np.all(np.isnan(ci)):
        return None
    ci = np.nan_to_num(ci)
    return np.vstack([y - np.clip(y - ci, 0, 1), np.clip(y + ci, 0, 1) - y])


def _errorbar(ax, x, y, ci, **kwargs) -> None:
    ax.errorbar(x, y, yerr=clipped_yerr(y, ci), capsize=3, marker="o", markersize=4, linewidth=1.5, **kwargs)


def _length_text(value) -> str:
    return "?" if pd.isna(value) else str(int(value))


# ----------------------------------------------------------------------------------------------- figures
def plot_accuracy_vs_length(table: pd.DataFrame, path) -> Path | None:
    """Kimi Linear's Figure 4 layout: one panel per task, test accuracy against training length, one line per
    mixer; error bars are 95% CIs over seeds."""
    table = table.dropna(subset=["train_len"])
    if table.empty:
        return None
    tasks = sorted(table["task"].unique())
    colours = series_colours(table["series"])
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        part = table[table["task"] == task]
        for series, line in part.groupby("series"):
            line = line.sort_values("train_len")
            _errorbar(ax, line["train_len"], line["test_accuracy_mean"], line["test_accuracy_ci95"],
                      color=colours[series], label=series)
        _log2_axis(ax, part["train_len"])
        _accuracy_axis(ax)
        ax.set_xlabel("training length (tokens, log2 scale)")
        ax.set_title(task)
    seeds = int(table["n_seeds"].max())
    note = "error bars: 95% CI over seeds" if seeds > 1 else "one seed: no error bars"
    return _finish(fig, path, f"Test accuracy against training length (learning rate chosen on validation; {note})")


def plot_convergence(table: pd.DataFrame, path) -> Path | None:
    """Validation accuracy against training step at a fixed training length, one panel per task, chosen rate
    only; the shaded band spans the seeds (min to max)."""
    if table.empty:
        return None
    tasks = sorted(table["task"].unique())
    colours = series_colours(table["series"])
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        part = table[table["task"] == task]
        for series, line in part.groupby("series"):
            line = line.sort_values("step")
            # markers for sparse curves (a run with one evaluation must still show); dense ones read better without
            ax.plot(line["step"], line["valid_accuracy_mean"], color=colours[series], label=series, linewidth=1.5,
                    marker="o" if len(line) <= 12 else None, markersize=3)
            if line["n_seeds"].max() > 1:
                ax.fill_between(line["step"], line["valid_accuracy_min"], line["valid_accuracy_max"],
                                color=colours[series], alpha=0.15, linewidth=0)
        _accuracy_axis(ax, "validation accuracy (fraction)")
        ax.set_xlim(0, part["step"].max() * 1.05)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human(v)))
        ax.set_xlabel("training step (optimizer updates)")
        ax.set_title(f"{task} (training length {_length_text(part['train_len'].iloc[0])})")
    return _finish(fig, path, "Convergence: validation accuracy during training (chosen learning rate; "
                              "band: range over seeds)")


def plot_frontier(table: pd.DataFrame, path) -> Path | None:
    """Zoology's frontier: test accuracy against recurrent state size and against parameter count (log x), one
    row of two panels per task, each point labelled with its series."""
    if table.empty:
        return None
    tasks = sorted(table["task"].unique())
    colours = series_colours(table["series"])
    fig, axes = plt.subplots(len(tasks), 2, figsize=(2 * PANEL[0] + 2.4, PANEL[1] * len(tasks) + 0.6),
                             squeeze=False, layout="constrained")
    x_axes = (("state_size", "state size (elements per sequence, log scale)"),
              ("params_total", "parameters (count, log scale)"))
    for row, task in zip(axes, tasks):
        part = table[table["task"] == task]
        for ax, (column, xlabel) in zip(row, x_axes):
            points = part[part[column].notna() & (part[column] > 0)]
            for _, p in points.iterrows():
                yerr = clipped_yerr([p["test_accuracy_mean"]], [p["test_accuracy_ci95"]])
                ax.errorbar(p[column], p["test_accuracy_mean"], yerr=yerr, marker="o", markersize=6, capsize=3,
                            color=colours[p["series"]], label=p["series"], linestyle="none")
                ax.annotate(p["series"], (p[column], p["test_accuracy_mean"]), textcoords="offset points",
                            xytext=(5, 5), fontsize=7, color=colours[p["series"]])
            _log_count_axis(ax)
            if len(points):
                low, high = points[column].min(), points[column].max()
                ax.set_xlim(low / 2, high * 2)  # room for the labels at either end
            _accuracy_axis(ax)
            ax.set_xlabel(xlabel)
            ax.set_title(f"{task} (training length {_length_text(part['train_len'].iloc[0])})")
    return _finish(fig, path, "Accuracy against state size and parameters (chosen learning rate)")


def plot_length_extrapolation(table: pd.DataFrame, path) -> Path | None:
    """Test accuracy against test length, one panel per task, one line per mixer; the dashed vertical line is
    the training length."""
    if table.empty:
        return None
    tasks = sorted(table["task"].unique())
    colours = series_colours(table["series"])
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        part = table[table["task"] == task]
        for series, line in part.groupby("series"):
            line = line.sort_values("length")
            _errorbar(ax, line["length"], line["accuracy_mean"], line["accuracy_ci95"], color=colours[series],
                      label=series)
        for train_len in part["train_len"].dropna().unique():  # in the legend, not as text: text hid data
            ax.axvline(train_len, color="0.3", linestyle="--", linewidth=1, label="training length (dashed)")
        _log2_axis(ax, list(part["length"]) + list(part["train_len"]))
        _accuracy_axis(ax)
        ax.set_xlabel("test length (tokens, log2 scale)")
        ax.set_title(task)
    return _finish(fig, path, "Length extrapolation: test accuracy beyond the training length (dashed)")


def plot_capability_matrix(matrix: pd.DataFrame, path,
                           title: str = "Capability matrix: test accuracy at each task's longest training length",
                           ) -> Path | None:
    """Mixers x tasks heatmap of test accuracy, numbers written in the cells, colour scale fixed to 0..1."""
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
    ax.set_xticks(range(n_tasks), [str(t) for t in matrix.columns], rotation=30 if n_tasks > 4 else 0,
                  ha="right" if n_tasks > 4 else "center")
    ax.set_yticks(range(n_mixers), [str(m) for m in matrix.index])
    ax.set_xlabel("task (probe)")
    ax.set_ylabel("mixer")
    colourbar = fig.colorbar(image, ax=ax)
    colourbar.set_label("test accuracy (fraction)")
    return _finish(fig, path, title, legend=False)
