"""Comparison reports from run directories: `python -m arena.report <results dir> [--out DIR] [--length L]`.

    from arena.report import load_runs, select, write_report
    runs = load_runs("results/runs")      # one tidy row per run directory (summary.json + config.yaml)
    best = select(runs)                   # learning rate chosen on validation, test accuracy mean and 95% CI
    write_report("results/runs")          # CSVs, PNGs, report.md and a self-contained report.html

Modules: load (run dirs -> tables), protocol (selection, seeds, budgets), plots (figures), render (Markdown,
HTML, atomic writing), __main__ (the command line). The names below are imported on first use, so that
`python -m arena.report` can reject a bad folder before pandas and matplotlib load.
"""

from importlib import import_module

_HOMES = {
    "load_runs": "load", "load_curves": "load", "load_lengths": "load",
    "select": "protocol", "lr_table": "protocol", "mean_ci95": "protocol",
    "write_report": "render", "NoRunsError": "render",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(f"arena.report.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'arena.report' has no attribute {name!r}")
