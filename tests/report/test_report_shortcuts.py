"""The report against the shortcut baselines runs record (summary.json `best_shortcut_accuracy`): a result that
does not beat the best shortcut is marked with a dagger (and a legend line), and the plots draw the baseline.

    python -m pytest -q tests/report/test_report_shortcuts.py
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from arena.report import plots  # noqa: E402
from arena.report.render import DAGGER, SHORTCUT_BEATEN_NOTE, SHORTCUT_NOTE, build_blocks, build_tables, render_markdown  # noqa: E402
from tests.report.test_report import config_for, summary_for, write_run  # noqa: E402

SHORTCUT = 0.96  # stack_kimi's "last pushed to this stack id" at 256 tokens (arena issue 14)


def grid(root):
    """kda at 0.95 (below the shortcut) and gdn at 0.99 (above it), two seeds each, one learning rate."""
    for mixer, test in (("kda", 0.95), ("gdn", 0.99)):
        for seed in (0, 1):
            write_run(root, f"{mixer}-{seed}", config_for(mixer, "stack", 256, 1e-3, seed),
                      summary_for(mixer, "stack", 256, test, test, best_shortcut="last_pushed",
                                  best_shortcut_accuracy=SHORTCUT + 0.002 * seed,
                                  length_eval={"512": {"accuracy": test - 0.1, "best_shortcut_accuracy": 0.93}}))
    return root


def test_results_table_marks_results_that_do_not_beat_the_best_shortcut(tmp_path):
    tables = build_tables(grid(tmp_path))
    selected = tables["selected"].set_index("mixer")
    assert selected.loc["kda", "shortcut_metric"] == SHORTCUT + 0.001  # the median over the two seeds
    assert selected.loc["kda", "best_shortcut"] == "last_pushed"
    md = render_markdown(build_blocks(tmp_path, tables, {}))
    results = md.split("## Results at the chosen learning rate")[1].split("\n## ")[0]  # the first table only
    rows = {line.split("|")[1].strip(): line for line in results.splitlines() if
            line.startswith(("| kda ", "| gdn "))}
    assert f"0.950 ± 0.000 {DAGGER}" in rows["kda"] and DAGGER not in rows["gdn"]
    assert "0.961 (last_pushed)" in rows["gdn"]
    assert SHORTCUT_NOTE.split(":")[0] in md


def test_the_dagger_note_appears_only_where_a_row_carries_the_dagger(tmp_path):
    root = tmp_path / "r"
    for seed in (0, 1):  # gdn alone, above the shortcut
        write_run(root, f"gdn-{seed}", config_for("gdn", "stack", 256, 1e-3, seed),
                  summary_for("gdn", "stack", 256, 0.99, 0.99, best_shortcut="last_pushed",
                              best_shortcut_accuracy=SHORTCUT))
    md = render_markdown(build_blocks(root, build_tables(root), {}))
    assert DAGGER not in md and SHORTCUT_BEATEN_NOTE in md
    md = render_markdown(build_blocks(tmp_path, build_tables(grid(tmp_path / "g")), {}))
    assert SHORTCUT_NOTE in md and SHORTCUT_BEATEN_NOTE not in md


def test_plots_draw_the_shortcut_where_runs_recorded_it(tmp_path):
    tables = build_tables(grid(tmp_path))
    # length extrapolation: the shortcut measured at the test length, not the training length's
    ext = tables["extrapolation_table"]
    assert set(ext.loc[ext["length"] == 512, "shortcut_metric"]) == {0.93}
    assert set(ext.loc[ext["length"] == 256, "shortcut_metric"]) == {SHORTCUT + 0.001}
    fig, ax = plt.subplots()
    plots._shortcut_line(ax, ext, "length")
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == plots.SHORTCUT_LABEL]
    assert list(line.get_ydata()) == [SHORTCUT + 0.001, 0.93]
    plt.close(fig)
    # older runs without the field: no line, no error
    fig, ax = plt.subplots()
    plots._shortcut_line(ax, pd.DataFrame({"length": [1, 2], "shortcut_metric": [float("nan")] * 2}), "length")
    assert not ax.get_lines()
    plt.close(fig)
