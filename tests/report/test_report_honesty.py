"""arena.report must not mislead: distinct seeds, warnings on the console, honest plots (issue 12, items 6, 8, 9).

    python -m pytest -q tests/report/test_report_honesty.py

Run directories are written by hand with test_report.py's helpers (the layout arena.run produces). Figures are
inspected as matplotlib objects: `plt.close` is replaced so the test keeps the figure a plot function drew.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from test_report import config_for, curve, run_cli, summary_for, write_run

from arena.report import load_runs, lr_table, plots, select, write_report
from arena.report.render import build_tables


def kept_figures(monkeypatch) -> list:
    """Figures that plot functions close from now on (kept open for inspection instead)."""
    figures = []
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: figures.append(fig))
    return figures


def panel(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_title()][0]


# ----------------------------------------------------------------------------------------------- item 6: seeds
def three_seed_zero_runs(root, **summary_extra):
    """Seed 0 three times: the default, impl=naive (another config hash), and a rerun of the default."""
    base = config_for("kda", "mqar", 64, 1e-3, 0)
    naive = config_for("kda", "mqar", 64, 1e-3, 0, mixer__impl="naive")
    write_run(root, "a-default", base, summary_for("kda", "mqar", 64, 0.99, 0.991, config_hash="hA", **summary_extra))
    write_run(root, "b-naive", naive, summary_for("kda", "mqar", 64, 0.99, 0.991, config_hash="hB"))
    write_run(root, "c-rerun", base, summary_for("kda", "mqar", 64, 0.99, 0.991, config_hash="hA"))


def test_one_seed_run_three_times_is_one_seed_with_a_note(tmp_path):
    root = tmp_path / "r"
    three_seed_zero_runs(root)
    runs = load_runs(root)
    assert (runs["duplicate_of"] != "").sum() == 1  # the rerun of one config hash collapses to one row
    selected = select(runs)
    assert len(selected) == 1
    row = selected.iloc[0]
    assert row["n_seeds"] == 1 and np.isnan(row["test_accuracy_ci95"])  # not "0.991 +- 0.000, seeds 3"
    assert "mixer.impl" in row["note"] and "seed 0" in row["note"]  # pooled runs that differ: said, not silent
    assert row["n_runs"] == 2  # the duplicate is not counted twice
    assert lr_table(runs).iloc[0]["n_seeds"] == 1


def test_distinct_seeds_still_give_an_interval(tmp_path):
    root = tmp_path / "r"
    three_seed_zero_runs(root)
    write_run(root, "d-seed1", config_for("kda", "mqar", 64, 1e-3, 1),
              summary_for("kda", "mqar", 64, 0.98, 0.97, config_hash="hC"))
    row = select(load_runs(root)).iloc[0]
    assert row["n_seeds"] == 2 and row["test_accuracy_mean"] == pytest.approx((0.991 + 0.97) / 2)
    assert row["test_accuracy_ci95"] > 0


def test_duplicates_are_named_in_the_report(tmp_path):
    root = tmp_path / "r"
    three_seed_zero_runs(root)
    md = (write_report(root, tmp_path / "out") / "report.md").read_text()
    assert "c-rerun" in md.split("## Duplicate runs")[1].split("##")[0]
    assert "| 1 |" in md.split("## Results at the chosen learning rate")[1].split("##")[0]  # seeds column: 1


# ----------------------------------------------------------------------------------------------- item 8: console
def small_grid(root):
    for seed in (0, 1):
        for length in (32, 64):
            write_run(root, f"kda-{length}-s{seed}", config_for("kda", "mqar", length, 1e-3, seed),
                      summary_for("kda", "mqar", length, 0.9, 0.8, config_hash=f"h{length}{seed}"), curve(0.9))
    return root


def test_cli_length_that_no_run_has_is_a_one_line_error(tmp_path):
    root = small_grid(tmp_path / "r")
    before = sorted(tmp_path.rglob("*"))
    proc = run_cli(str(root), "--out", str(tmp_path / "out"), "--length", "999")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("arena.report: error: --length 999")
    assert "32, 64" in lines[0]  # what is allowed
    assert sorted(tmp_path.rglob("*")) == before


def test_length_missing_for_one_task_is_a_warning(tmp_path):
    root = small_grid(tmp_path / "r")
    write_run(root, "gdn-parity", config_for("gdn", "parity", 128, 1e-3, 0),
              summary_for("gdn", "parity", 128, 0.9, 0.8, config_hash="hp"))
    assert build_tables(root, 64)["warnings"] == [
        "--length 64: task parity has no run at that training length (it has 128); its single-length views use 128"]
    assert build_tables(root)["warnings"] == []  # a clean report warns about nothing


def test_cli_warns_about_a_torn_metrics_file_and_a_corrupted_summary(tmp_path):
    root = small_grid(tmp_path / "r")
    path = root / "kda-64-s0" / "metrics.jsonl"
    path.write_text(path.read_text()[:-25])  # the last line cut mid-write
    (root / "kda-32-s1" / "summary.json").write_text('{"status": "compl')
    proc = run_cli(str(root), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("arena.report: warning:")]
    assert len(warnings) == 2, proc.stderr
    assert "kda-32-s1" in warnings[0] and "summary.json" in warnings[0] and "unreadable" in warnings[0]
    assert "kda-64-s0" in warnings[1] and "metrics.jsonl" in warnings[1] and "3 readable" in warnings[1]
    curves = pd.read_csv(tmp_path / "out" / "curves.csv")
    assert (curves["run_dir"] == "kda-64-s0").sum() == 3  # 4 records, the torn fourth left out
    listed = (tmp_path / "out" / "report.md").read_text().split("## Warnings")[1].split("##")[0]
    assert "metrics.jsonl" in listed and "summary.json" in listed


# ----------------------------------------------------------------------------------------------- item 9: plots
def parity_and_flip_flop(root):
    """parity (chance 0.5, scaled accuracy, trains on 3..16 tokens of seq_len 64, tested at 32..128) and
    flip_flop (chance 0.5, plain accuracy); kda and gdn give identical numbers everywhere (coinciding series)."""
    for mixer in ("kda", "gdn"):
        for seed in (0, 1):
            config = config_for(mixer, "parity", 64, 1e-3, seed, task__train_min_len=3, task__train_max_len=16,
                                task__test_min_len=16, task__test_max_len=64)
            by_length = {str(L): {"accuracy": 0.75, "scaled_accuracy": 0.5, "sequence_accuracy": 0.75}
                         for L in (32, 64, 128)}
            write_run(root, f"{mixer}-parity-s{seed}", config,
                      summary_for(mixer, "parity", 64, 0.8, 0.75, chance_accuracy=0.5, length_eval=by_length,
                                  config_hash=f"p{mixer}{seed}"), curve(0.8))
            write_run(root, f"{mixer}-flip-s{seed}", config_for(mixer, "flip_flop", 64, 1e-3, seed),
                      summary_for(mixer, "flip_flop", 64, 0.6, 0.6, chance_accuracy=0.5,
                                  config_hash=f"f{mixer}{seed}"), curve(0.6))
    return root


def test_parity_is_reported_in_scaled_accuracy(tmp_path):
    root = parity_and_flip_flop(tmp_path / "r")
    selected = select(load_runs(root))
    parity = selected[selected["task"] == "parity"].iloc[0]
    assert parity["metric"] == "scaled_accuracy"
    assert parity["test_metric_mean"] == pytest.approx(0.5)  # (0.75 - 0.5) / (1 - 0.5)
    flip = selected[selected["task"] == "flip_flop"].iloc[0]
    assert flip["metric"] == "accuracy" and flip["test_metric_mean"] == pytest.approx(0.6)
    tables = build_tables(root)
    length_rows = tables["length_table"]
    assert length_rows[length_rows["task"] == "parity"]["test_metric_mean"].tolist() == pytest.approx([0.5, 0.5])
    out = write_report(root, tmp_path / "out")
    results = (out / "report.md").read_text().split("## Results at the chosen learning rate")[1].split("##")[0]
    assert re.search(r"\| parity \|.*\| scaled_accuracy \|.*\| 0\.500 ± 0\.000 \|", results), results
    for name in ("accuracy_vs_length.png", "convergence.png", "frontier.png", "length_extrapolation.png"):
        assert (out / name).stat().st_size > 5000, name


def test_a_length_probe_is_labelled_with_the_lengths_it_trained_on(tmp_path):
    """parity trains on 3..16 tokens padded to seq_len 64: "train_len 64" alone would claim 64-token training."""
    out = write_report(parity_and_flip_flop(tmp_path / "r"), tmp_path / "out")
    md = (out / "report.md").read_text()
    assert "parity 64 (sequences of 3-16 tokens)" in md.split("## Protocol")[0]
    assert "flip_flop 64," in md.split("## Protocol")[0]  # trained at its train_len: nothing added
    results = md.split("## Results at the chosen learning rate")[1].split("##")[0]
    header = results.strip().splitlines()[0].split("|")
    rows = {line.split("|")[2].strip(): line.split("|") for line in results.splitlines()[2:] if line.startswith("|")}
    column = [c.strip() for c in header].index("trained on lengths")
    assert rows["parity"][column].strip() == "3-16" and rows["flip_flop"][column].strip() == ""
    assert "`trained on lengths` gives their lengths" in results


def test_no_trained_lengths_column_where_every_run_trains_at_its_train_len(tmp_path):
    md = (write_report(small_grid(tmp_path / "r"), tmp_path / "out") / "report.md").read_text()
    assert "trained on lengths" not in md and "(sequences of" not in md


def test_accuracy_plots_draw_the_chance_level(tmp_path, monkeypatch):
    tables = build_tables(parity_and_flip_flop(tmp_path / "r"))
    figures = kept_figures(monkeypatch)
    plots.plot_accuracy_vs_length(tables["length_table"], tmp_path / "a.png")
    plots.plot_convergence(tables["convergence_table"], tmp_path / "c.png")
    for fig in figures:
        by_task = {ax.get_title().split()[0]: ax for ax in fig.axes if ax.get_title()}
        for task, level in (("flip_flop", 0.5), ("parity", 0.0)):  # parity: scaled accuracy, chance is 0
            chance = [line for line in by_task[task].get_lines() if "chance" in str(line.get_label())]
            assert chance and all(np.allclose(line.get_ydata(), level) for line in chance), task
        assert "scaled" in by_task["parity"].get_ylabel()


def test_the_training_length_marker_spans_the_real_training_range(tmp_path, monkeypatch):
    tables = build_tables(parity_and_flip_flop(tmp_path / "r"))
    figures = kept_figures(monkeypatch)
    plots.plot_length_extrapolation(tables["extrapolation_table"], tmp_path / "x.png")
    ax = panel(figures[0])
    marked = [artist for artist in [*ax.patches, *ax.get_lines()] if "training" in str(artist.get_label())]
    assert marked
    xs = []
    for artist in marked:  # a shaded span (Rectangle in data x) or a vertical line
        xs += [artist.get_x(), artist.get_x() + artist.get_width()] if hasattr(artist, "get_width") else \
            list(artist.get_xdata())
    xs = np.asarray(xs, dtype=float)
    assert xs.min() == pytest.approx(3) and xs.max() == pytest.approx(16)  # not the seq_len 64


def test_coinciding_series_stay_visible(tmp_path, monkeypatch):
    tables = build_tables(parity_and_flip_flop(tmp_path / "r"))
    figures = kept_figures(monkeypatch)
    plots.plot_accuracy_vs_length(tables["length_table"], tmp_path / "a.png")
    plots.plot_convergence(tables["convergence_table"], tmp_path / "c.png")
    plots.plot_frontier(tables["frontier_table"], tmp_path / "f.png")
    for fig in figures:
        for ax in fig.axes:
            data = [line for line in ax.get_lines() if str(line.get_label()) in ("kda", "gdn")]
            if len(data) < 2:
                continue
            a, b = data[:2]
            same_place = np.allclose(a.get_xdata(), b.get_xdata()) and np.allclose(a.get_ydata(), b.get_ydata())
            same_look = (a.get_marker(), a.get_linestyle()) == (b.get_marker(), b.get_linestyle())
            assert not (same_place and same_look), ax.get_title()


def test_frontier_points_carry_no_text_labels(tmp_path, monkeypatch):
    tables = build_tables(parity_and_flip_flop(tmp_path / "r"))
    figures = kept_figures(monkeypatch)
    plots.plot_frontier(tables["frontier_table"], tmp_path / "f.png")
    assert all(not ax.texts for ax in figures[0].axes)  # the legend names the series; text labels collided


def test_every_preset_evaluates_at_least_ten_times_per_run():
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from arena.run import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for path in sorted((CONF / "experiment").glob("*.yaml")):
            cfg = compose(config_name="config", overrides=[f"+experiment={path.stem}"], return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            try:
                train = OmegaConf.to_container(cfg.train, resolve=True)
            finally:
                HydraConfig.instance().cfg = None
            assert train["steps"] // train["eval_every"] >= 10, (path.stem, train["steps"], train["eval_every"])
