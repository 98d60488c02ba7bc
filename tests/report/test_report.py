"""arena.report on hand-written run directories: tables, protocol, plots, pages, CLI.

    python -m pytest -q tests/report

The run directories are written by hand in the layout arena.run produces. `results_grid` builds 2 mixers (kda, gdn)
x 2 tasks (mqar, parity) x 2 training lengths (64, 128) x 2 learning rates (1e-3, 3e-3) x 2 seeds = 32 completed
runs, plus a diverged run (kda, mqar, 64, lr 1e-2, with a tempting validation accuracy), a failed run (gdn, parity,
64, lr 3e-3, nulls, no metrics.jsonl) and length evaluations for the mqar runs at length 128 (kda through
summary.json, gdn through metrics.jsonl only). The group (kda, mqar, 64) is built so that validation and test
disagree: lr 1e-3 wins on validation (0.90 vs 0.80) but loses on test (0.50 vs 0.95), so the report must show 0.50.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from arena.report import load_runs, lr_table, mean_ci95, select, write_report
from arena.report.load import RUN_COLUMNS, load_curves, load_lengths, mixer_label, setting_columns
from arena.report.protocol import add_series, t_quantile_975
from arena.report.render import FIGURES, build_blocks, build_tables, draw_figures, render_html, render_markdown

REPO = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------------------------------------- fixture runs
MIXERS = ("kda", "gdn")
TASKS = ("mqar", "parity")
LENGTHS = (64, 128)
LRS = (1e-3, 3e-3)
SEEDS = (0, 1)
# (mixer, task) -> base test accuracy at length 64; longer sequences lose 0.2 (kda) or 0.3 (gdn)
BASE = {("kda", "mqar"): 0.95, ("gdn", "mqar"): 0.85, ("kda", "parity"): 0.6, ("gdn", "parity"): 0.9}
HASHES = itertools.count()  # every written run is its own config (runs sharing a config_hash are duplicates)


def write_run(root: Path, name: str, config: dict, summary: dict, metrics: list[dict] | None = None) -> Path:
    run_dir = root / name
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if metrics is not None:
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    return run_dir


def config_for(mixer: str, task: str, length: int, lr: float, seed: int, model: str = "tiny", **extra) -> dict:
    layout = ["kda", "kda", "kda", "mla_nope"] if model == "hybrid_3to1" else None
    config = {
        "mixer": {"name": mixer, "impl": "torch", "num_heads": 2, "allow_neg_eigval": False},
        "task": {"name": task, "seq_len": length, "vocab_size": 64},
        "model": {"d_model": 64, "n_layers": 2 if layout is None else 4, "layout": layout, "mlp_ratio": 0.0},
        "train": {"steps": 200, "batch_size": 64, "lr": lr, "seed": seed, "device": "auto"},
        "eval": {"lengths": None},
        "logger": {"kind": "none"},
        "results_dir": "results/runs",
        "experiment": "fixture",
    }
    for dotted, value in extra.items():
        group, key = dotted.split("__")
        config[group][key] = value
    return config


def summary_for(mixer: str, task: str, length: int, valid: float | None, test: float | None,
                status: str = "completed", model: str = "tiny", **extra) -> dict:
    layers = ["kda", "kda", "kda", "mla_nope"] if model == "hybrid_3to1" else [mixer, mixer]
    summary = {
        "name": f"{model}-{mixer}-{task}", "status": status, "message": "ran all train.steps", "steps": 200,
        "mixer": mixer, "model": model, "task": task, "experiment": "fixture",
        "config_hash": f"h-{mixer}-{task}-{next(HASHES)}",
        "valid_accuracy": valid, "best_accuracy": valid, "best_step": 200, "test_accuracy": test,
        "test_sequence_accuracy": None if test is None else test / 2, "train_accuracy": 1.0,
        "parameters": {"embedding": 4096, "lm_head": 4096, f"mixer/{mixer}": 50000 if mixer == "kda" else 40000,
                       "mlp": 0, "norms": 192, "total": 58384 if mixer == "kda" else 48384},
        "state_size": (5000 if mixer == "kda" else 4000) * length // 64,
        "flops_per_token": 150000.0 + length, "layers": layers, "device": "cpu", "seq_len": length,
        "wall_time_s": 12.5,
    }
    summary.update(extra)
    return summary


def curve(final: float, steps=(50, 100, 150, 200)) -> list[dict]:
    return [{"step": s, "split": "valid", "loss": 3.0 * (1 - s / 250), "train_accuracy": 1.0,
             "accuracy": final * s / steps[-1], "lr": 1e-3} for s in steps]


def accuracies(mixer: str, task: str, length: int, lr: float, seed: int) -> tuple[float, float]:
    """(valid, test): the base minus a length penalty, lr 3e-3 slightly better on both, seeds +-0.01."""
    if (mixer, task, length) == ("kda", "mqar", 64):  # validation and test disagree on the better rate
        return (0.90, 0.50) if lr == 1e-3 else (0.80, 0.95)
    acc = BASE[mixer, task] - (0.2 if mixer == "kda" else 0.3) * (length == 128) - (0.05 if lr == 1e-3 else 0)
    acc += 0.01 if seed else -0.01
    return acc + 0.02, acc


def build_grid(root: Path) -> Path:
    for mixer in MIXERS:
        for task in TASKS:
            for length in LENGTHS:
                for lr in LRS:
                    for seed in SEEDS:
                        valid, test = accuracies(mixer, task, length, lr, seed)
                        name = f"{mixer}-{task}-{length}-{lr:g}-s{seed}"
                        config = config_for(mixer, task, length, lr, seed)
                        summary = summary_for(mixer, task, length, valid, test)
                        metrics = curve(valid)
                        if task == "mqar" and length == 128:
                            by_length = {str(L): {"accuracy": test * 64 / L if L > length else test,
                                                  "sequence_accuracy": 0.0} for L in (128, 256, 512)}
                            if mixer == "kda":
                                summary["length_eval"] = by_length
                            metrics += [{"step": 200, "eval": "length", "split": "test", "length": int(L),
                                         "train_seq_len": length, **r} for L, r in by_length.items()]
                        write_run(root / "sweep", name, config, summary, metrics)
    write_run(root / "sweep", "kda-mqar-64-0.01-s0", config_for("kda", "mqar", 64, 1e-2, 0),
              summary_for("kda", "mqar", 64, 0.99, None, status="diverged",
                          message="loss became nan at step 120; try a lower train.lr (now 0.01)", steps=120),
              curve(0.99, steps=(50, 100)))
    write_run(root / "sweep", "gdn-parity-64-0.003-s2", config_for("gdn", "parity", 64, 3e-3, 2),
              {"name": "tiny-gdn-parity", "status": "failed", "message": "RuntimeError: boom", "steps": 0,
               "valid_accuracy": None, "best_accuracy": None, "test_accuracy": None, "parameters": {}})
    return root


@pytest.fixture
def results_grid(tmp_path) -> Path:
    return build_grid(tmp_path / "results")


def row(selected: pd.DataFrame, mixer: str, task: str, length: int) -> pd.Series:
    hit = selected[(selected["mixer"] == mixer) & (selected["task"] == task) & (selected["train_len"] == length)]
    assert len(hit) == 1, hit
    return hit.iloc[0]


# ----------------------------------------------------------------------------------------------- load
def test_runs_table_has_one_row_per_run_and_the_expected_columns(results_grid):
    runs = load_runs(results_grid)
    assert len(runs) == 32 + 2
    assert list(runs.columns[: len(RUN_COLUMNS)]) == RUN_COLUMNS
    assert setting_columns(runs) == []  # nothing but lr, seed and length varies inside a group
    kda = runs[runs["run_dir"] == "sweep/kda-mqar-64-0.001-s0"].iloc[0]
    assert (kda["mixer"], kda["task"], kda["train_len"], kda["lr"], kda["seed"]) == ("kda", "mqar", 64, 1e-3, 0)
    assert (kda["valid_accuracy"], kda["test_accuracy"], kda["train_accuracy"]) == (0.90, 0.50, 1.0)
    assert (kda["params_total"], kda["params_mixer"], kda["state_size"]) == (58384, 50000, 5000)
    assert kda["experiment"] == "fixture" and kda["config_hash"].startswith("h-kda-mqar-")
    assert set(runs["duplicate_of"]) == {""} and set(runs["metric"]) == {"accuracy", "scaled_accuracy"}
    failed = runs[runs["status"] == "failed"].iloc[0]  # summary lacks mixer/task: taken from config.yaml
    assert (failed["mixer"], failed["task"], failed["seed"]) == ("gdn", "parity", 2)
    assert math.isnan(failed["valid_accuracy"]) and math.isnan(failed["params_total"])
    assert set(runs["status"]) == {"completed", "diverged", "failed"}


def test_curves_and_lengths_tables(results_grid):
    runs = load_runs(results_grid)
    curves = load_curves(results_grid, runs)
    assert list(curves.columns) == ["run_dir", "step", "split", "accuracy", "train_loss", "valid_loss"]
    assert len(curves) == 32 * 4 + 2 and set(curves["split"]) == {"valid"}  # length records are not curves
    lengths = load_lengths(results_grid, runs)
    assert {"run_dir", "length", "train_len", "accuracy"} <= set(lengths.columns)
    # kda's come from summary.json's length_eval, gdn's from metrics.jsonl's length records only
    assert len(lengths) == 2 * 2 * 2 * 3 and set(lengths["length"]) == {128, 256, 512}
    assert set(lengths["train_len"]) == {128}


def test_setting_columns_are_the_config_values_that_split_a_group(tmp_path):
    root = tmp_path / "r"
    for neg in (False, True):
        for seed in (0, 1):
            # mixer.allow_neg_eigval splits the comparison; train.steps changes only with the length: no setting;
            # how a run executed (device, CUDA graphs, checkpoints, data workers) differs between seeds: no setting
            for length in (64, 128):
                config = config_for("gdn", "parity", length, 1e-3, seed, mixer__allow_neg_eigval=neg,
                                    train__steps=100 * length, train__device="cuda" if seed else "cpu",
                                    train__cuda_graphs="auto" if seed else "off",
                                    train__checkpoint_every=1000 * seed, train__data_workers=seed - 1)
                write_run(root, f"{neg}-{seed}-{length}", config,
                          summary_for("gdn", "parity", length, 0.9 if neg else 0.5, 0.8 if neg else 0.4))
    write_run(root, "hybrid", config_for("kda", "parity", 64, 1e-3, 0, model="hybrid_3to1"),
              summary_for("kda", "parity", 64, 0.7, 0.6, model="hybrid_3to1"))
    runs = load_runs(root)
    assert setting_columns(runs) == ["mixer.allow_neg_eigval"]
    assert set(runs["mixer"]) == {"gdn", "hybrid_3to1"} and set(runs["raw_mixer"]) == {"gdn", "kda"}
    # the seeds pooled in one comparison name how they differ (the report's notes say so)
    gdn_runs = runs[runs["mixer"] == "gdn"]
    assert set(gdn_runs["variant"]) == {"train.device=cpu, train.cuda_graphs=off",
                                        "train.device=cuda, train.cuda_graphs=auto"}
    selected = add_series(select(runs))
    gdn = selected[selected["mixer"] == "gdn"]
    assert len(gdn) == 4  # 2 eigenvalue ranges x 2 lengths
    assert set(gdn["series"]) == {"gdn (allow_neg_eigval=False)", "gdn (allow_neg_eigval=True)"}
    assert sorted(gdn[gdn["train_len"] == 64]["test_accuracy_mean"]) == pytest.approx([0.4, 0.8])


def test_mixer_label():
    assert mixer_label("kda", "tiny", ["kda", "kda"]) == "kda"
    assert mixer_label("kda", "hybrid_3to1", ["kda", "kda", "kda", "mla_nope"]) == "hybrid_3to1"
    assert mixer_label("kda", "tiny", ["kda", "mla"]) == "kda+mla"  # model.layout=[kda,mla] on the plain model
    assert mixer_label("gdn", None, None) == "gdn"


def test_a_layout_that_follows_the_mixer_choice_gets_the_mixer_in_its_label(tmp_path):
    """hybrid_3to1_mixer is KDA x3 + the `mixer=` choice: one model group, several models."""
    root = tmp_path / "r"
    for mixer in ("mla", "mla_nope"):
        layers = ["kda", "kda", "kda", mixer]
        config = config_for(mixer, "mqar", 64, 1e-3, 0)
        config["model"].update(layout=layers, n_layers=4)
        write_run(root, mixer, config, summary_for(mixer, "mqar", 64, 0.5, 0.5, model="hybrid_3to1_mixer",
                                                   layers=layers))
    runs = load_runs(root)
    assert sorted(runs["mixer"]) == ["hybrid_3to1_mixer:mla", "hybrid_3to1_mixer:mla_nope"]
    assert len(select(runs)) == 2


# ----------------------------------------------------------------------------------------------- protocol
def test_ci_of_a_known_sample():
    mean, n, half = mean_ci95([0.5, 0.6, 0.7])
    # sd 0.1, n 3: t_{0.975,2} = 4.3027 -> 4.3027 * 0.1 / sqrt(3)
    assert (mean, n) == (pytest.approx(0.6), 3) and half == pytest.approx(0.248417, abs=1e-5)
    mean, n, half = mean_ci95([0.8, float("nan"), None])
    assert (mean, n) == (0.8, 1) and math.isnan(half)
    assert mean_ci95([])[1] == 0
    assert t_quantile_975(1) == pytest.approx(12.7062) and t_quantile_975(30) == pytest.approx(2.0423)
    assert t_quantile_975(40) == pytest.approx(2.0211, abs=2e-4) and t_quantile_975(120) == pytest.approx(1.9799,
                                                                                                            abs=2e-4)


def test_learning_rate_is_chosen_on_validation_not_test(results_grid):
    selected = select(load_runs(results_grid))
    assert len(selected) == 2 * 2 * 2
    kda = row(selected, "kda", "mqar", 64)
    # lr 1e-3: validation 0.90, test 0.50; lr 3e-3: validation 0.80, test 0.95; the diverged lr 1e-2 run
    # claims validation 0.99 but cannot be chosen
    assert kda["lr"] == 1e-3 and kda["valid_accuracy_mean"] == pytest.approx(0.90)
    assert kda["test_accuracy_mean"] == pytest.approx(0.50) and kda["n_seeds"] == 2
    assert (kda["n_runs"], kda["n_completed"], kda["n_diverged"], kda["n_failed"]) == (5, 4, 1, 0)
    assert kda["lrs_tried"] == "0.001, 0.003, 0.01"
    gdn = row(selected, "gdn", "mqar", 64)
    # seeds: test 0.84 and 0.86 -> mean 0.85, sd 0.01414, CI 12.7062 * 0.01414 / sqrt(2) = 0.127062
    assert gdn["lr"] == 3e-3 and gdn["test_accuracy_mean"] == pytest.approx(0.85)
    assert gdn["test_accuracy_ci95"] == pytest.approx(0.127062, abs=1e-6)
    assert (gdn["params_total"], gdn["state_size"], gdn["flops_per_token"]) == (48384, 4000, 150064)
    assert row(selected, "gdn", "parity", 64)["n_failed"] == 1


def test_ties_go_to_the_lower_rate_and_an_all_diverged_group_stays_visible(tmp_path):
    root = tmp_path / "r"
    for lr, test in ((3e-3, 0.9), (1e-3, 0.1)):
        write_run(root, f"tie-{lr}", config_for("kda", "mqar", 64, lr, 0), summary_for("kda", "mqar", 64, 0.7, test))
    for lr in (1e-3, 3e-3):
        write_run(root, f"div-{lr}", config_for("gdn", "mqar", 64, lr, 0),
                  summary_for("gdn", "mqar", 64, None, None, status="diverged"))
    runs = load_runs(root)
    selected = select(runs)
    tie = row(selected, "kda", "mqar", 64)
    assert tie["lr"] == 1e-3 and tie["test_accuracy_mean"] == pytest.approx(0.1)
    assert math.isnan(tie["test_accuracy_ci95"])  # one seed: no interval
    dead = row(selected, "gdn", "mqar", 64)
    assert math.isnan(dead["lr"]) and math.isnan(dead["test_accuracy_mean"]) and dead["n_diverged"] == 2
    assert dead["note"]
    per_lr = lr_table(runs)
    assert not per_lr[per_lr["mixer"] == "gdn"]["selectable"].any()
    assert per_lr["selected"].sum() == 1


def test_training_accuracy_is_never_the_reported_number(tmp_path):
    root = tmp_path / "r"
    write_run(root, "a", config_for("kda", "mqar", 64, 1e-3, 0), summary_for("kda", "mqar", 64, 0.6, 0.55))
    selected = select(load_runs(root))
    assert row(selected, "kda", "mqar", 64)["test_accuracy_mean"] == pytest.approx(0.55)  # train_accuracy is 1.0
    assert not any("train_acc" in c for c in selected.columns)


def test_text_chooses_the_learning_rate_on_validation_loss(tmp_path):
    """Two text rates where accuracy and loss disagree: lr 3e-3 has the higher validation accuracy (0.62 vs 0.60),
    lr 1e-3 the lower validation loss (1.10 vs 1.20 nats): the report must choose 1e-3 and say why. A run written
    before summary.json named its selection (no selected_by) is judged on its valid_loss alike; a probe in the
    same results still chooses on accuracy."""
    root = tmp_path / "r"
    for lr, valid, loss, test in ((1e-3, 0.60, 1.10, 0.55), (3e-3, 0.62, 1.20, 0.58)):
        for seed, older in ((0, False), (1, True)):
            fields = {"valid_loss": loss, "test_bits_per_byte": (loss + 0.01) / math.log(2)}
            if not older:
                fields.update(selected_by="loss", selection_score=-loss)
            # validation curves: loss falls to the run's valid_loss while accuracy rises (both drawn would differ)
            metrics = [{"step": step, "split": "valid", "accuracy": valid * step / 200, "train_loss": 2.0,
                        "valid_loss": loss + (200 - step) / 100 + seed / 10} for step in (100, 200)]
            write_run(root, f"text-{lr:g}-s{seed}", config_for("kda", "text", 64, lr, seed),
                      summary_for("kda", "text", 64, valid, test, **fields), metrics)
        write_run(root, f"mqar-{lr:g}", config_for("kda", "mqar", 64, lr, 0),
                  summary_for("kda", "mqar", 64, valid, test, selected_by="accuracy", selection_score=valid))
    runs = load_runs(root)
    assert set(runs[runs["task"] == "text"]["selected_by"]) == {"loss"}
    selected = select(runs)
    text = row(selected, "kda", "text", 64)
    assert text["lr"] == 1e-3 and text["selected_by"] == "loss" and text["n_seeds"] == 2
    assert text["valid_score_mean"] == pytest.approx(-1.10) and text["test_accuracy_mean"] == pytest.approx(0.55)
    assert text["test_bits_per_byte_mean"] == pytest.approx(1.11 / math.log(2))
    probe = row(selected, "kda", "mqar", 64)
    assert probe["lr"] == 3e-3 and probe["selected_by"] == "accuracy"  # the higher validation accuracy
    out = write_report(root, tmp_path / "out")
    md = (out / "report.md").read_text()
    assert "For text (language modelling) validation selects by loss instead" in md
    assert "valid loss (mean)" in md
    # the two older text runs tested their best-accuracy weights: the protocol says so, with their count
    assert list(runs[runs["task"] == "text"].sort_values("run_dir")["checkpoint_selected_by"]) == \
        ["loss", "accuracy", "loss", "accuracy"]
    assert "2 of these 4 runs were made before that rule" in md
    # the convergence plot draws what chose the rate: text its validation loss (seeds 1.10 + 0 / 0.1, + 1 at step
    # 100), with no chance or shortcut level; the probe its accuracy
    tables = build_tables(root)
    conv = tables["convergence_table"].set_index(["task", "step"])
    assert conv.loc[("text", 200), "metric"] == "valid_loss"
    assert conv.loc[("text", 200), "valid_metric_mean"] == pytest.approx(1.15)
    assert conv.loc[("text", 100), "valid_metric_min"] == pytest.approx(2.10)
    assert conv.loc[("text", 100), "valid_metric_max"] == pytest.approx(2.20)
    assert pd.isna(conv.loc[("text", 200), "chance_accuracy"]) and pd.isna(conv.loc[("text", 200), "shortcut_metric"])
    assert (out / "convergence.png").exists()


def test_lm_eval_scores_keep_their_stderr_filter_names_included(tmp_path):
    """summary.json's lm_eval scores as lm-eval names them: `acc` with `acc_stderr`, a filtered metric
    `exact_match,strict-match` with `exact_match_stderr,strict-match`, bits_per_byte with none; each row carries its
    own metric's stderr and 1.96 x it, and no stderr becomes a row of its own."""
    from arena.report.load import load_lm_eval

    root = tmp_path / "r"
    lm_eval = {"mc": {"acc": 0.6, "acc_stderr": 0.05},
               "gen": {"exact_match,strict-match": 0.3, "exact_match_stderr,strict-match": 0.02,
                       "exact_match,flexible": 0.4, "exact_match_stderr,flexible": 0.03},
               "ppl": {"bits_per_byte": 1.5}}
    write_run(root, "t", config_for("kda", "text", 64, 1e-3, 0),
              summary_for("kda", "text", 64, 0.5, 0.5, lm_eval=lm_eval))
    rows = load_lm_eval(root, load_runs(root)).set_index(["benchmark", "metric"])
    assert sorted(rows.index) == [("gen", "exact_match,flexible"), ("gen", "exact_match,strict-match"),
                                  ("mc", "acc"), ("ppl", "bits_per_byte")]
    assert rows.loc[("gen", "exact_match,strict-match"), "stderr"] == pytest.approx(0.02)
    assert rows.loc[("gen", "exact_match,flexible"), "ci95"] == pytest.approx(1.96 * 0.03)
    assert rows.loc[("mc", "acc"), "stderr"] == pytest.approx(0.05)
    assert math.isnan(rows.loc[("ppl", "bits_per_byte"), "stderr"])


def test_the_protocol_names_no_loss_selection_without_text_runs(results_grid):
    blocks = build_blocks(results_grid, build_tables(results_grid), {})
    assert not any("selects by loss" in block.text for block in blocks if block.kind == "p")


# ----------------------------------------------------------------------------------------------- report
@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = build_grid(tmp_path_factory.mktemp("grid") / "results")
    out = write_report(root)
    return root, out


def test_report_writes_every_file_and_plot(report):
    root, out = report
    assert out == root / "report"
    names = {p.name for p in out.iterdir()}
    assert names == {"runs.csv", "curves.csv", "lengths.csv", "selected.csv", "report.md", "report.html", *FIGURES,
                     "lengths_by_multiple.csv"}  # the mqar runs are scored at 2x, 4x the length they trained at
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert len(data) > 5000 and data[:8] == b"\x89PNG\r\n\x1a\n", name
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs.columns) == RUN_COLUMNS and len(runs) == 34
    assert runs["train_len"].dtype.kind == "i"  # whole numbers stay whole: 64, not 64.0
    selected = pd.read_csv(out / "selected.csv")
    assert {"lr", "test_accuracy_mean", "test_accuracy_ci95", "n_seeds", "n_diverged", "n_failed", "params_total",
            "state_size", "flops_per_token"} <= set(selected.columns)
    assert not list(root.glob(".report.tmp-*"))  # the staging folder is gone


def test_markdown_shows_protocol_tables_images_and_problem_runs(report):
    _, out = report
    md = (out / "report.md").read_text()
    assert "32 completed, 1 diverged, 1 failed" in md
    assert "validation accuracy" in md and "Training accuracy is never reported" in md
    for name in FIGURES:
        assert f"]({name})" in md
    problems = md.split("## Runs that diverged or failed")[1]
    assert "sweep/kda-mqar-64-0.01-s0" in problems and "diverged" in problems and "loss became nan" in problems
    assert "sweep/gdn-parity-64-0.003-s2" in problems and "RuntimeError: boom" in problems
    assert "| kda | mqar | 64 | 0.001 | accuracy | 0.900 | 0.500 ± 0.000 | 2 | 4/1/0 |" in md  # chosen on validation
    assert md.count("| --- |") >= 8  # results, five plot tables, the lr sweep, the problem runs


def test_html_is_self_contained(report):
    _, out = report
    page = (out / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) == len(FIGURES)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(?!data:)', page)  # no external file or URL
    assert "<link" not in page and "<script" not in page
    assert "RuntimeError: boom" in page and "<table>" in page


def test_missing_data_skips_plots_with_a_note(tmp_path):
    """One old-style run: no test accuracy, no curves, no lengths -> pages still render, plots skipped."""
    root = tmp_path / "r"
    write_run(root, "old", config_for("kda", "mqar", 64, 1e-3, 0), {"name": "tiny-kda-mqar", "status": "completed",
                                                                      "best_accuracy": 0.9, "steps": 10})
    tables = build_tables(root)
    figures = draw_figures(tables, tmp_path)
    assert all(path is None for path in figures.values())
    blocks = build_blocks(root, tables, figures)
    md = render_markdown(blocks)
    assert md.count("Plot skipped") == len(FIGURES)
    assert "None: every run completed." in md and "## Runs that diverged or failed" in md
    assert "<img" not in render_html(blocks, tmp_path)
    assert tables["selected"].iloc[0]["valid_accuracy_mean"] == 0.9  # best_accuracy stands in for valid_accuracy


def test_a_skipped_plot_does_not_survive_from_an_older_report(results_grid, tmp_path):
    out = tmp_path / "out"
    write_report(results_grid, out)
    assert (out / "length_extrapolation.png").exists()
    for path in results_grid.rglob("metrics.jsonl"):
        path.unlink()
    for path in results_grid.rglob("summary.json"):
        path.write_text(path.read_text().replace('"length_eval"', '"no_length_eval"'))
    write_report(results_grid, out)
    assert not (out / "length_extrapolation.png").exists() and not (out / "convergence.png").exists()
    assert "Plot skipped" in (out / "report.md").read_text()


# ----------------------------------------------------------------------------------------------- CLI
def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "arena.report", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("make", ["missing", "empty", "no_summaries"])
def test_cli_without_runs_exits_2_and_writes_nothing(tmp_path, make):
    root = tmp_path / "results"
    if make != "missing":
        root.mkdir()
    if make == "no_summaries":
        (root / "half_run").mkdir()
        (root / "half_run" / "config.yaml").write_text("task: {name: mqar}\n")
    before = sorted(tmp_path.rglob("*"))
    proc = run_cli(str(root), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("arena.report: error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert sorted(tmp_path.rglob("*")) == before


def test_cli_writes_the_report_and_says_where(results_grid, tmp_path):
    out = tmp_path / "elsewhere"
    proc = run_cli(str(results_grid), "--out", str(out), "--length", "64")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert str(out / "report.html") in proc.stdout
    md = (out / "report.md").read_text()
    assert "mqar 64, parity 64" in md  # --length picks the single-length views
    assert "Plot skipped" in md  # no length evaluations at length 64
    assert not (out / "length_extrapolation.png").exists() and (out / "capability_matrix.png").exists()


def test_an_error_midway_leaves_no_partial_report(results_grid, tmp_path, monkeypatch):
    from arena.report import plots

    def broken(table, path):
        Path(path).write_bytes(b"\x89PNG half")  # a half-written figure in the staging folder
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(plots, "plot_frontier", broken)
    (tmp_path / "reports").mkdir()
    out = tmp_path / "reports" / "out"
    with pytest.raises(RuntimeError, match="plotting failed"):
        write_report(results_grid, out)
    assert list((tmp_path / "reports").iterdir()) == []  # no report folder, no staging folder


def test_small_learning_rates_keep_their_digits():
    """The results table showed a chosen rate of 3e-4 as "0.000" (3 decimals), hiding which rate won."""
    from arena.report.render import cell

    assert cell(3e-4, "lr (chosen)") == "0.0003" and cell(5e-5, "lr") == "5e-05"
    assert cell(0.1234, "valid (mean)") == "0.123"
