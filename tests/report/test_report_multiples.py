"""The report's accuracy at multiples of the training length (1x, 2x, 4x, 8x, ...): the table that answers a
length-extrapolation study such as nope_vs_rope (issue 14.2).

    python -m pytest -q tests/report/test_report_multiples.py

Hand-written run directories (tests/report/test_report.py's layout): induction_heads trained at 64 by mla and
mla_nope, 2 learning rates x 3 seeds, each scored at eval.lengths 32, 64, 96, 128, 256, 512. lr 1e-3 wins on
validation for both mixers but extrapolates worse than 3e-3, so a table taken at the test-best rate would differ.
"""

from __future__ import annotations

import pytest
from test_report import config_for, curve, summary_for, write_run

from arena.report import mean_ci95, plots, write_report
from arena.report.render import DAGGER, build_tables, multiples_display

LENGTHS = (32, 64, 96, 128, 256, 512)
SHORTCUT = 0.3  # the best shortcut rule's accuracy at every test length


def accuracy(mixer: str, lr: float, seed: int, length: int) -> float:
    """mla keeps 0.9 up to 2x and falls to 0.2 beyond; mla_nope keeps 0.8 everywhere; lr 3e-3 adds 0.05 beyond 1x."""
    base = 0.9 if mixer == "mla" and length <= 128 else 0.2 if mixer == "mla" else 0.8
    return base + (0.05 if lr == 3e-3 and length > 64 else 0.0) + 0.01 * seed


def write_grid(root):
    for mixer in ("mla", "mla_nope"):
        for lr in (1e-3, 3e-3):
            for seed in (0, 1, 2):
                by_length = {str(L): {"accuracy": accuracy(mixer, lr, seed, L), "sequence_accuracy": 0.0,
                                      "best_shortcut_accuracy": SHORTCUT} for L in LENGTHS}
                valid = 0.95 if lr == 1e-3 else 0.9  # validation prefers 1e-3
                write_run(root, f"{mixer}-{lr:g}-s{seed}", config_for(mixer, "induction_heads", 64, lr, seed),
                          summary_for(mixer, "induction_heads", 64, valid, accuracy(mixer, lr, seed, 64),
                                      length_eval=by_length, best_shortcut_accuracy=SHORTCUT),
                          curve(valid))
    return root


@pytest.fixture
def tables(tmp_path):
    return build_tables(write_grid(tmp_path / "runs"))


def test_whole_multiples_at_the_rate_chosen_on_validation(tables):
    table = tables["multiples_table"]
    assert sorted(table["multiple"].unique()) == [1, 2, 4, 8]  # 32 (0.5x) and 96 (1.5x) are no multiples
    assert set(table["length"]) == {64, 128, 256, 512}
    for mixer in ("mla", "mla_nope"):
        for multiple in (1, 2, 4, 8):
            row = table[(table["series"] == mixer) & (table["multiple"] == multiple)]
            assert len(row) == 1
            mean, n, ci = mean_ci95([accuracy(mixer, 1e-3, seed, 64 * multiple) for seed in (0, 1, 2)])
            assert row["test_metric_mean"].item() == pytest.approx(mean)  # lr 1e-3: validation's choice
            assert row["test_metric_ci95"].item() == pytest.approx(ci) and row["n_seeds"].item() == n == 3
            assert row["shortcut_metric"].item() == pytest.approx(SHORTCUT)


def test_display_has_one_column_per_multiple_and_marks_results_under_the_shortcut(tables):
    wide = multiples_display(tables["multiples_table"])
    assert list(wide["series"]) == ["mla", "mla_nope", "best shortcut"]
    assert [c for c in wide.columns if c.endswith("x")] == ["1x", "2x", "4x", "8x"]
    mla = wide[wide["series"] == "mla"].iloc[0]
    assert mla["2x"].startswith("0.910 ± ") and DAGGER not in mla["2x"]
    assert mla["4x"].startswith("0.210 ± ") and mla["4x"].endswith(DAGGER)  # 0.21 does not beat 0.3
    assert wide[wide["series"] == "best shortcut"].iloc[0]["8x"] == "0.300"
    assert wide[wide["series"] == "mla_nope"].iloc[0]["seeds"] == 3


def test_report_prints_the_table_and_its_csv(tmp_path):
    out = write_report(write_grid(tmp_path / "runs"), tmp_path / "report")
    text = (out / "report.md").read_text()
    assert "Accuracy at multiples of the training length" in text
    assert "| task | train_len | series | metric | 1x | 2x | 4x | 8x | seeds |" in text
    assert (out / "lengths_by_multiple.csv").read_text().startswith("task,series,metric,train_len,multiple,length")


def test_a_task_trained_on_a_range_of_lengths_has_no_multiples():
    """parity trains on 3-16 tokens padded to seq_len 64: 128 is no multiple of what it was trained on."""
    import pandas as pd

    extrapolation = pd.DataFrame([{"task": "parity", "series": "kda", "metric": "scaled_accuracy", "train_len": 64,
                                   "length": 128, "test_metric_mean": 0.5, "test_metric_ci95": 0.1, "n_seeds": 2,
                                   "chance_accuracy": 0.5, "train_min_len": 3, "train_max_len": 16,
                                   "shortcut_metric": 0.0}])
    assert plots.multiples_table(extrapolation).empty
