"""The report's view of regression tasks (icl_regression): test MSE against the number of in-context examples, each
mixer at its chosen learning rate beside the closed-form predictors, and which mixers track the optimal learner.

    from arena.report import regression
    table = regression.curve_table(root, chosen)     # long table: panel, series, k, mse mean / 95% CI over seeds
    regression.plot_mse_curves(table, "mse_vs_examples.png")   # the PNG, or None without regression runs
    regression.verdict_table(table)                  # one row per (panel, mixer): MSE at the last k against ridge

Built by arena/report/render.py when some run's summary.json holds `test_mse_curve` (written by arena/train.py for a
task of kind "regression"); the closed-form curves come from the same summaries (`baselines`, computed on each
run's own test sequences), averaged over the distinct seeds like the models. Lower is better throughout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from arena.report import plots
from arena.report.protocol import mean_ci95

# baseline key in summary.json -> legend label, drawn as black / grey reference lines
BASELINES = {
    "ridge": "ridge, Bayes-optimal (closed form)",
    "least_squares": "least squares (closed form)",
    "one_step_gd": "one GD step, best step size (closed form)",
    "zero": "zero predictor",
}
BASELINE_STYLES = {
    "ridge": {"color": "black", "linestyle": "-", "linewidth": 2.0},
    "least_squares": {"color": "0.45", "linestyle": ":", "linewidth": 1.5},
    "one_step_gd": {"color": "black", "linestyle": "--", "linewidth": 1.5},
    "zero": {"color": "0.6", "linestyle": "-.", "linewidth": 1.2},
}
COLUMNS = ["task", "train_len", "series", "kind", "k", "mse_mean", "mse_ci95", "n_seeds"]
# verdict thresholds on the MSE at the last in-context index (a reading aid; the curves are the result)
TRACKS_RIDGE = 1.5  # within 1.5x the Bayes-optimal ridge
NOT_LEARNED = 0.9  # above 0.9x the zero predictor: the context is not used


def _summary(root: Path, run_dir: str) -> dict:
    try:
        return json.loads((root / run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def curve_table(root, chosen: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% CI over seeds of the test MSE at each number of in-context examples k, for each chosen run's
    series (kind "model") and the closed-form baselines of the same runs (kind "baseline", one set per distinct
    seed: every mixer of a seed scores the same test sequences). Empty without regression runs."""
    root = Path(root)
    model_rows, baseline_rows = [], {}
    for _, run in chosen.iterrows():
        summary = _summary(root, run["run_dir"])
        curve = summary.get("test_mse_curve")
        if not curve:
            continue
        panel = {"task": run["task"], "train_len": run["train_len"]}
        for k, mse in enumerate(curve):
            model_rows.append({**panel, "series": run["series"], "kind": "model", "seed": run["seed"], "k": k,
                               "mse": mse})
        for name, base in (summary.get("baselines") or {}).get("curves", {}).items():
            for k, mse in enumerate(base):  # keyed by seed: the mixers of one seed repeat the same numbers
                baseline_rows[(run["task"], run["train_len"], name, run["seed"], k)] = {
                    **panel, "series": BASELINES.get(name, name), "kind": "baseline", "seed": run["seed"], "k": k,
                    "mse": mse}
    long = pd.DataFrame(model_rows + list(baseline_rows.values()))
    if long.empty:
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for keys, part in long.groupby(["task", "train_len", "series", "kind", "k"], sort=True):
        mean, n, ci = mean_ci95(part.groupby("seed")["mse"].mean())  # one value per seed
        rows.append(dict(zip(["task", "train_len", "series", "kind", "k"], keys), mse_mean=mean, mse_ci95=ci,
                         n_seeds=n))
    return pd.DataFrame(rows, columns=COLUMNS)


def verdict_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (panel, model series): mean MSE over k, MSE at the last k beside ridge's and one GD step's, the
    ratio to ridge, and a verdict: `tracks the optimal learner` (within TRACKS_RIDGE x ridge at the last k),
    `beats one GD step` (between ridge and one step of GD), `saturates` (no better than one GD step) or `not
    learned` (within NOT_LEARNED x the zero predictor: nothing was learned from the context)."""
    out = []
    for (task, train_len), panel in table.groupby(["task", "train_len"], sort=True):
        last = panel["k"].max()
        at_last = panel[panel["k"] == last].set_index("series")["mse_mean"]
        ridge = at_last.get(BASELINES["ridge"], np.nan)
        gd = at_last.get(BASELINES["one_step_gd"], np.nan)
        zero = at_last.get(BASELINES["zero"], np.nan)
        for series, part in panel[panel["kind"] == "model"].groupby("series", sort=True):
            mse_last = float(part.loc[part["k"] == last, "mse_mean"].iloc[0])
            if mse_last <= TRACKS_RIDGE * ridge:
                verdict = "tracks the optimal learner"
            elif mse_last < gd:
                verdict = "beats one GD step"
            elif mse_last < NOT_LEARNED * zero:
                verdict = "saturates"
            else:
                verdict = "not learned"
            out.append({"task": task, "train_len": train_len, "series": series, "k_last": int(last),
                        "mse_mean_over_k": float(part["mse_mean"].mean()), "mse_last": mse_last,
                        "ridge_last": ridge, "one_step_gd_last": gd, "ratio_to_ridge_last": mse_last / ridge,
                        "verdict": verdict})
    return pd.DataFrame(out)


def plot_mse_curves(table: pd.DataFrame, path) -> Path | None:
    """One panel per (task, training length): test MSE (log scale) against in-context examples k, a line per
    mixer (band: 95% CI over seeds) and the closed-form predictors as black / grey reference lines."""
    if table.empty:
        return None
    panels = list(table.groupby(["task", "train_len"], sort=True))
    fig, axes = plots._panels(len(panels))
    styles = plots.series_styles(table.loc[table["kind"] == "model", "series"].unique())
    for ax, ((task, train_len), panel) in zip(axes, panels):
        zero = panel.loc[panel["series"] == BASELINES["zero"], "mse_mean"]
        # least squares blows up near k = d_x (the interpolation peak): cap the axis a little above the zero
        # predictor, so the peak leaves the frame instead of flattening every other curve
        top = 3.0 * float(zero.max()) if len(zero) else None
        for series, part in panel[panel["kind"] == "model"].groupby("series", sort=True):
            style = styles[series]
            ax.plot(part["k"], part["mse_mean"], label=series, color=style["color"], linestyle=style["linestyle"],
                    marker=style["marker"], markersize=3, linewidth=1.5)
            ci = part["mse_ci95"].fillna(0.0)
            ax.fill_between(part["k"], (part["mse_mean"] - ci).clip(lower=1e-12), part["mse_mean"] + ci,
                            color=style["color"], alpha=0.15, linewidth=0)
        for name, label in BASELINES.items():
            part = panel[panel["series"] == label]
            if len(part):
                ax.plot(part["k"], part["mse_mean"], label=label, **BASELINE_STYLES[name])
        ax.set_yscale("log")
        if top is not None:
            ax.set_ylim(top=top)
        ax.set_xlabel("in-context examples k")
        ax.set_ylabel("test MSE per output component\n(lower is better)")
        ax.set_title(f"{task}, T = {int(train_len)}", fontsize=10)
        ax.grid(True, alpha=0.3)
    return plots._finish(fig, path, "Test MSE against the number of in-context examples, at the chosen learning "
                                    "rate")


CAPTION = ("Mean test MSE over seeds (per output component) at each number of in-context examples k, at the "
           "learning rate chosen on validation MSE; bands are 95% confidence intervals. Reference lines, computed "
           "in closed form on the same test sequences: ridge regression at the Bayes-optimal strength (the optimal "
           "learner for Gaussian W), minimum-norm least squares (its error peaks at k = d_x), one gradient step "
           "from 0 with the best step size for each k (what a plain linear-attention / Hebbian state computes) "
           "and the zero predictor. The verdict compares each mixer's MSE at the last k with ridge's (within "
           f"{TRACKS_RIDGE:g}x: tracks the optimal learner) and one GD step's (no better: saturates; above "
           f"{NOT_LEARNED:g}x the zero predictor: not learned).")
