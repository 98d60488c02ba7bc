"""The experiment presets in conf/experiment/: every one composes at the points of its sweep, and a mini runs.

    python -m pytest -q tests/test_experiments.py

A preset is `# @package _global_` with its sweep under `hydra.sweeper.params`; `python -m arena.run -m
+experiment=<name>` runs the grid. Here each grid point is composed with Hydra's compose API exactly as the
basic sweeper composes a job (the preset, then the point's overrides) and turned into a `Run`, which builds the
task and the model and so checks every shape constraint. Mini presets: every point. Full presets: the first, the
last and a few random points (their grids have hundreds). The end-to-end test runs the fastest mini through
`python -m arena.run -m` and checks that every grid point left a summary.json.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from arena.run import CONF, mixer_specs
from arena.train import Run

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
FULL = [name for name in PRESETS if not name.endswith("_mini")]
MINI = [name for name in PRESETS if name.endswith("_mini")]
FASTEST_MINI = "zoology_mqar_mini"  # the end-to-end test's preset: 12 runs of a few seconds


def sweep_grid(name: str) -> list[list[str]]:
    """The preset's grid as the basic sweeper builds it: one override list per job, in launch order."""
    params = OmegaConf.load(CONF / "experiment" / f"{name}.yaml").hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    axes = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in parsed]
    return [list(point) for point in itertools.product(*axes)]


TEXT_MINI = REPO / "data" / "text_lm_mini" / "corpus.jsonl"  # text_lm_mini's corpus, built from the shipped stories


@pytest.fixture(autouse=True, scope="module")
def text_lm_corpus():
    """The text_lm presets read a corpus that scripts/make_text_lm_corpus.py writes (git-ignored): the mini's is built
    here from the shipped stories (deterministic, a second); text_lm's own (Debian's Jane Austen package) is not
    fetched by the tests: where it is missing its points compose on the mini's corpus (text_lm_path)."""
    if not (TEXT_MINI.parent / "PROVENANCE.txt").exists():  # written last: the folder is whole
        subprocess.run([sys.executable, "scripts/make_text_lm_corpus.py", "--source", "tiny_stories"], cwd=REPO,
                       check=True, capture_output=True)


def text_lm_path(name: str) -> list[str]:
    """text_lm's data on a machine that has not built it (CI): the mini's corpus and lm-eval tasks stand in."""
    full = REPO / "data" / "text_lm" / "corpus.jsonl"
    if name != "text_lm" or full.exists():
        return []
    return [f"task.path={TEXT_MINI}", f"eval.lm_eval.include_path={TEXT_MINI.parent / 'lm_eval'}"]


@pytest.fixture(autouse=True)
def hydra_conf():
    """Hydra's compose API on conf/, initialised once per test (each initialisation costs ~0.2 s)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def compose_point(name: str, point: list[str]) -> dict:
    """The resolved job config of one grid point (HydraConfig set, as inside `python -m arena.run`)."""
    return compose_run(name, point)[0]


def compose_run(name: str, point: list[str]) -> tuple[dict, Run, dict]:
    """compose_point's config, with the Run built from it and the job's group choices."""
    cfg = compose(config_name="config", overrides=[f"+experiment={name}", *point, "train.device=cpu",
                                                   *text_lm_path(name)], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # the ${hydra:runtime.choices.*} interpolations read it
    try:
        choices = dict(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            del cfg["hydra"]
        config = OmegaConf.to_container(cfg, resolve=True)
        run = Run(config, mixer_specs(cfg, choices["mixer"]), choices["mixer"])
    finally:
        HydraConfig.instance().cfg = None  # no stale choices for other tests in this process
    assert config["experiment"] == name
    assert config["results_dir"] == f"results/runs/{name}"
    assert len(run.model.blocks) == config["model"]["n_layers"]
    return config, run, choices


def check_point_matches(config: dict, point: list[str]) -> None:
    """Each swept key landed in the resolved config (group choices via their node's name where it has one)."""
    for override in point:
        key, value = override.split("=", 1)
        if key in ("mixer", "model", "task") or "." not in key and key not in config:
            continue
        node = config
        for part in key.split("."):
            node = node[part]
        assert str(node).lower() == value.lower() or float(node) == float(value), (override, node)


def test_every_preset_file_is_global_and_has_a_mini_twin():
    assert set(FULL) == {"kimi_synthetic", "zoology_mqar", "state_tracking", "nope_vs_rope", "reasoning", "kda_vs_gdn",
                         "icl_regression", "text_lm"}
    assert set(MINI) == {f"{name}_mini" for name in FULL}
    for name in PRESETS:
        text = (CONF / "experiment" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_\n"), name
        assert "\n# Question" in text[:200], f"{name}: the second line states the question it answers"
        assert OmegaConf.load(CONF / "experiment" / f"{name}.yaml").experiment == name


@pytest.mark.parametrize("name", FULL)
def test_full_preset_keeps_the_structure_of_its_mini(name):
    """The mini sweeps a subset of the keys its full preset sweeps (it may fix some of them to one value)."""
    full = set(OmegaConf.load(CONF / "experiment" / f"{name}.yaml").hydra.sweeper.params)
    mini = set(OmegaConf.load(CONF / "experiment" / f"{name}_mini.yaml").hydra.sweeper.params)
    assert mini <= full, mini - full


@pytest.mark.parametrize("name", FULL)
def test_full_preset_composes_at_first_last_and_random_points(name):
    grid = sweep_grid(name)
    assert len(grid) > 1
    points = [grid[0], grid[-1], *random.Random(name).sample(grid, 3)]
    for point in points:
        check_point_matches(compose_point(name, point), point)
    compose_point(name, [])  # a single run of the preset (no -m) is the grid's first point's group choices


@pytest.mark.parametrize("name", MINI)
def test_mini_preset_composes_at_every_point(name):
    grid = sweep_grid(name)
    assert 2 <= len(grid) <= 24, f"{name}: {len(grid)} runs; a mini must stay a few minutes on 2 CPU cores"
    for point in grid:
        config = compose_point(name, point)
        check_point_matches(config, point)
        assert config["train"]["steps"] <= 100 and config["model"]["d_model"] <= 64


def test_kimi_preset_is_figure_4():
    grid = sweep_grid("kimi_synthetic")
    assert len(grid) == 4 * 3 * 6 * 4  # lengths x tasks x mixers (the five, and mla_conv) x learning rates
    config = compose_point("kimi_synthetic", ["task=mqar_kimi", "mixer=mla_conv"])
    assert config["mixer"]["name"] == "mla" and config["mixer"]["conv_size"] == 4
    config = compose_point("kimi_synthetic", ["task=stack_kimi", "task.seq_len=2048", "mixer=gdn"])
    assert config["model"]["d_model"] == 256 and config["model"]["n_layers"] == 2
    assert config["mixer"]["num_heads"] == 2 and config["train"]["steps"] == 20000
    assert {float(p.split("=")[1]) for point in grid for p in point if p.startswith("train.lr=")} == {
        5e-5, 1e-4, 5e-4, 1e-3}
    # the published 64 stacks (conf/task/stack_kimi.yaml), at every swept length
    for length in (256, 2048):
        config = compose_point("kimi_synthetic", ["task=stack_kimi", f"task.seq_len={length}"])
        assert config["task"]["num_stacks"] == 64 and config["task"]["vocab_size"] == 128


def test_text_lm_preset_compares_six_models_of_one_recipe_at_matched_size():
    """arch= names the six models (a sweep axis cannot pair model=hybrid_3to1 with mixer=mla_nope); every one has
    the same d_model, depth, MLP, data and tokens, and their parameter counts lie within 10 % of their mean."""
    grid = sweep_grid("text_lm")
    assert [p[0] for p in grid] == [f"arch={a}" for a in ("kda", "gdn", "mamba2", "mla", "mla_nope", "hybrid_3to1")]
    counts, layouts = {}, {}
    for point in grid:
        config, run, choices = compose_run("text_lm", point)
        arch = point[0].split("=")[1]
        counts[arch] = sum(p.numel() for p in run.model.parameters())
        layouts[arch] = [b.mixer.__class__.__name__ for b in run.model.blocks]
        assert (config["model"]["d_model"], config["model"]["n_layers"], config["task"]["seq_len"]) == (256, 16, 1024)
        assert config["eval"]["lm_eval"]["tasks"] == ["text_lm_ppl", "text_lm_cloze"]
        assert choices["model"] == ("hybrid_3to1" if arch == "hybrid_3to1" else "tiny")
        assert choices["mixer"] == ("mla_nope" if arch == "hybrid_3to1" else arch)
    mean = sum(counts.values()) / len(counts)
    assert all(abs(n / mean - 1) < 0.10 for n in counts.values()), counts
    assert 20e6 <= min(counts.values()) and max(counts.values()) <= 50e6, counts
    assert len(set(layouts["hybrid_3to1"])) == 2 and layouts["hybrid_3to1"][3] != layouts["hybrid_3to1"][0]


def test_hybrid_model_takes_the_chosen_mixer_as_fourth_layer():
    config = compose_point("nope_vs_rope_mini", ["model=hybrid_3to1_mixer", "mixer=mla"])
    assert config["model"]["layout"] == ["kda", "kda", "kda", "mla"]
    config = compose_point("nope_vs_rope_mini", ["model=hybrid_3to1_mixer", "mixer=mla_nope"])
    assert config["model"]["layout"] == ["kda", "kda", "kda", "mla_nope"]


def run_sweep(name: str, results_dir: Path, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "arena.run", "-m", f"+experiment={name}", f"results_dir={results_dir}"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("name", MINI)
def test_mini_preset_runs_end_to_end_with_its_report(name, tmp_path):
    """The whole grid of a mini through `python -m arena.run -m` (every point leaves a finished summary.json),
    then `python -m arena.report` over it; for the fastest mini also a rerun, which must skip every point."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = run_sweep(name, tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in tmp_path.rglob("summary.json")]
    assert len(summaries) == len(sweep_grid(name))
    assert all(s["status"] in ("completed", "diverged") for s in summaries), [s["message"] for s in summaries]
    configs = [OmegaConf.load(p) for p in tmp_path.rglob("config.yaml") if p.parent.name != ".hydra"]
    assert {c.experiment for c in configs} == {name}
    assert len({s["config_hash"] for s in summaries}) == len(summaries)  # every grid point once
    if name == "text_lm_mini":  # lm-eval's offline tasks ran at the end of every run, none failed
        assert all(set(s.get("lm_eval", {})) == {"text_lm_ppl", "text_lm_cloze"} for s in summaries), \
            [s.get("lm_eval_error") for s in summaries]

    if name == FASTEST_MINI:  # rerunning the sweep finds every point finished: nothing runs again
        again = run_sweep(name, tmp_path, env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert again.stderr.count("arena: skipping") == len(summaries)
        assert len(list(tmp_path.rglob("summary.json"))) == len(summaries)

    # the report over the sweep: one command, every table and plot its data allows
    out = tmp_path / "report"
    rep = subprocess.run([sys.executable, "-m", "arena.report", str(tmp_path), "--out", str(out)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-3000:]
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == len(summaries) and set(runs["experiment"]) == {name}
    expected = ["report.md", "report.html", "selected.csv", "accuracy_vs_length.png", "convergence.png",
                "frontier.png", "capability_matrix.png"]
    if any("length_eval" in s for s in summaries):
        expected.append("length_extrapolation.png")
    if any("lm_eval" in s for s in summaries):  # lm-eval scores: the report's standard-benchmarks table
        expected.append("lm_eval.csv")
    if any("test_mse_curve" in s for s in summaries):  # a regression study: MSE against in-context examples
        expected += ["mse_vs_examples.png", "mse_curves.csv"]
    for file in expected:
        assert (out / file).stat().st_size > 0, file
    if name == "nope_vs_rope_mini":  # the study's answer: accuracy at 1x, 2x, 4x (, 8x) the training length per model
        multiples = pd.read_csv(out / "lengths_by_multiple.csv")
        assert set(multiples["task"]) == {"induction_heads", "position_lookup_fill", "mqar_filler"}
        assert (multiples.groupby(["task", "series"])["multiple"].apply(set) >= {1, 2, 4}).all()
        assert multiples.groupby("task")["series"].nunique().eq(4).all()  # mla, mla_nope, both hybrids
        assert "Accuracy at multiples of the training length" in (out / "report.md").read_text()
