"""The learning rate is chosen on the seeds every rate of a group ran (the shared seeds).

    python -m pytest -q tests/report/test_shared_seed_choice.py

Studies tune the rate on seed 0 over the whole grid, then replicate only the chosen rate on seeds 1 and 2. The rate
with three seeds must meet the others on seed 0 alone (a paired comparison), while its test number stays the mean
over all three seeds.
"""

from __future__ import annotations

import math

import pytest
from test_report import config_for, summary_for, write_run

from arena.report import load_runs, lr_table, select

A, B = 1e-3, 3e-3


def runs_of(root, spec) -> tuple:
    """spec: (lr, seed, valid, test, status) per run, all of one group (kda, mqar, 64) -> (select, lr_table)."""
    for lr, seed, valid, test, status in spec:
        write_run(root, f"kda-mqar-64-{lr:g}-s{seed}", config_for("kda", "mqar", 64, lr, seed),
                  summary_for("kda", "mqar", 64, valid, test, status=status))
    runs = load_runs(root)
    selected = select(runs)
    assert len(selected) == 1
    return selected.iloc[0], lr_table(runs).set_index("lr")


def test_a_rate_replicated_on_more_seeds_is_chosen_on_the_seed_every_rate_ran(tmp_path):
    # A: seed 0 valid 0.9, seeds 1 and 2 valid 0.5 (all-seed mean 0.633); B: seed 0 alone, valid 0.8. On seed 0,
    # the only seed both ran, A wins (0.9 > 0.8) although its all-seed mean is below B's.
    chosen, per_lr = runs_of(tmp_path / "r", [
        (A, 0, 0.9, 0.6, "completed"), (A, 1, 0.5, 0.7, "completed"), (A, 2, 0.5, 0.8, "completed"),
        (B, 0, 0.8, 0.99, "completed")])
    assert chosen["lr"] == A
    # the test number is over all three of A's seeds: mean 0.7, sd 0.1, CI 4.3027 * 0.1 / sqrt(3)
    assert chosen["n_seeds"] == 3 and chosen["test_accuracy_mean"] == pytest.approx(0.7)
    assert chosen["test_accuracy_ci95"] == pytest.approx(4.3027 * 0.1 / math.sqrt(3))
    assert chosen["valid_accuracy_mean"] == pytest.approx((0.9 + 0.5 + 0.5) / 3)
    assert "rate chosen on seed 0 (the seeds every rate ran); test over seeds 0, 1, 2" in chosen["note"]
    # lr_table: valid/test columns over all seeds, the choice score over the shared seed
    assert per_lr.loc[A, "valid_accuracy_mean"] == pytest.approx((0.9 + 0.5 + 0.5) / 3)
    assert per_lr.loc[A, "valid_score_mean"] == pytest.approx((0.9 + 0.5 + 0.5) / 3)
    assert per_lr.loc[A, "choice_score_mean"] == pytest.approx(0.9)
    assert per_lr.loc[B, "choice_score_mean"] == pytest.approx(0.8)
    assert list(per_lr["choice_seeds"]) == ["0", "0"]
    assert per_lr.loc[A, "n_seeds"] == 3 and per_lr.loc[A, "selected"] and not per_lr.loc[B, "selected"]


def test_a_full_grid_chooses_on_all_seeds_as_before(tmp_path):
    # every rate ran seeds 0, 1, 2: the shared seeds are all seeds, so the all-seed means decide. A: valid 0.9,
    # 0.5, 0.5 (mean 0.633); B: 0.7 each (mean 0.7) -> B, although A is better on seed 0 alone.
    chosen, per_lr = runs_of(tmp_path / "r", [
        (A, 0, 0.9, 0.9, "completed"), (A, 1, 0.5, 0.9, "completed"), (A, 2, 0.5, 0.9, "completed"),
        (B, 0, 0.7, 0.60, "completed"), (B, 1, 0.7, 0.65, "completed"), (B, 2, 0.7, 0.70, "completed")])
    assert chosen["lr"] == B
    # B's test: mean 0.65, sd 0.05, CI 4.3027 * 0.05 / sqrt(3) = 0.124208
    assert chosen["test_accuracy_mean"] == pytest.approx(0.65) and chosen["n_seeds"] == 3
    assert chosen["test_accuracy_ci95"] == pytest.approx(4.3027 * 0.05 / math.sqrt(3))
    assert chosen["valid_accuracy_mean"] == pytest.approx(0.7) and chosen["valid_score_mean"] == pytest.approx(0.7)
    assert (chosen["n_runs"], chosen["n_completed"]) == (6, 6)
    assert "rate chosen on" not in chosen["note"] and "every learning rate" not in chosen["note"]
    assert list(per_lr["choice_seeds"]) == ["0, 1, 2", "0, 1, 2"]
    assert list(per_lr["choice_score_mean"]) == pytest.approx(list(per_lr["valid_score_mean"]))
    assert per_lr.loc[A, "choice_score_mean"] == pytest.approx((0.9 + 0.5 + 0.5) / 3)


def test_disjoint_seeds_fall_back_to_all_seeds_with_a_note(tmp_path):
    # A ran seed 0 only, B seed 1 only: no seed is shared, so each rate's mean over its own seeds decides (B, 0.8)
    chosen, per_lr = runs_of(tmp_path / "r", [(A, 0, 0.7, 0.5, "completed"), (B, 1, 0.8, 0.6, "completed")])
    assert chosen["lr"] == B and chosen["test_accuracy_mean"] == pytest.approx(0.6) and chosen["n_seeds"] == 1
    assert "no seed was run at every learning rate: rate chosen on each rate's mean over all its seeds" \
        in chosen["note"]
    assert per_lr.loc[A, "choice_seeds"] == "0" and per_lr.loc[B, "choice_seeds"] == "1"
    assert per_lr.loc[A, "choice_score_mean"] == pytest.approx(0.7)
    assert per_lr.loc[B, "choice_score_mean"] == pytest.approx(0.8)


def test_a_diverged_run_counts_as_the_rate_having_run_its_seed(tmp_path):
    # A: seeds 0, 1, 2 (valid 0.9, 0.5, 0.5); B: seed 0 completed (valid 0.8), seed 1 diverged (a tempting 0.99,
    # never used). B ran seeds 0 and 1, so the shared seeds are 0 and 1: A scores (0.9 + 0.5) / 2 = 0.7, B 0.8
    # (its completed seed 0; the diverged run is out of the mean) -> B. Were the diverged run not counted as run,
    # the shared seed would be 0 alone and A (0.9) would win.
    chosen, per_lr = runs_of(tmp_path / "r", [
        (A, 0, 0.9, 0.6, "completed"), (A, 1, 0.5, 0.7, "completed"), (A, 2, 0.5, 0.8, "completed"),
        (B, 0, 0.8, 0.95, "completed"), (B, 1, 0.99, None, "diverged")])
    assert list(per_lr["choice_seeds"]) == ["0, 1", "0, 1"]
    assert per_lr.loc[A, "choice_score_mean"] == pytest.approx(0.7)
    assert per_lr.loc[B, "choice_score_mean"] == pytest.approx(0.8) and per_lr.loc[B, "n_diverged"] == 1
    assert chosen["lr"] == B and chosen["test_accuracy_mean"] == pytest.approx(0.95) and chosen["n_seeds"] == 1
    assert chosen["n_diverged"] == 1
    # B ran exactly the shared seeds: no "rate chosen on" note
    assert "rate chosen on" not in chosen["note"]


def test_unfinished_runs_are_counted_apart_from_failed_ones(tmp_path):
    # an interrupted run (a time limit) is neither a result nor a failure: the table says "+1 unfinished"
    chosen, _ = runs_of(tmp_path / "r", [
        (A, 0, 0.9, 0.9, "completed"), (A, 1, 0.5, 0.5, "failed"), (A, 2, 0.4, 0.4, "interrupted")])
    assert (chosen["n_runs"], chosen["n_completed"], chosen["n_failed"], chosen["n_unfinished"]) == (3, 1, 1, 1)
    from arena.report.render import build_tables, write_tables

    out = write_tables(tmp_path / "r", build_tables(tmp_path / "r", None), tmp_path / "out")
    assert "| 1/0/1 +1 unfinished |" in (out / "report.md").read_text()


def test_shared_seeds_none_completed_fall_back_to_each_rates_seeds(tmp_path):
    # both rates ran seed 0 (shared) but both failed there: each rate is judged on all its seeds, and says which
    chosen, per_lr = runs_of(tmp_path / "r", [
        (A, 0, 0.9, 0.9, "failed"), (A, 1, 0.6, 0.6, "completed"),
        (B, 0, 0.9, 0.9, "failed"), (B, 2, 0.7, 0.7, "completed")])
    assert chosen["lr"] == B and chosen["test_accuracy_mean"] == pytest.approx(0.7)
    assert "no rate completed a seed that every rate ran" in chosen["note"]
    assert per_lr.loc[A, "choice_seeds"] == "0, 1" and per_lr.loc[B, "choice_seeds"] == "0, 2"
    assert per_lr.loc[A, "choice_score_mean"] == pytest.approx(0.6)
    assert per_lr.loc[B, "choice_score_mean"] == pytest.approx(0.7)
