"""lm-eval on arena models (arena/lm_eval_model.py, arena/lm_eval.py), offline: a tiny task=text run trained with
`eval.lm_eval.tasks` set, then lm-eval's model type `arena` on its run dir, on three tasks defined by local YAMLs
and JSONL files (tests/data/lm_eval: multiple choice, rolling perplexity, generation); every score is checked
against a direct computation with the checkpoint's model (full forwards, no padding, no lm-eval code).

    pip install -e '.[lm-eval]'     # CI installs it (.ci/run); without it this file is skipped
    python -m pytest -q tests/test_lm_eval.py
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval", reason="lm-eval is not installed: pip install -e '.[lm-eval]' (CI installs it)")

from arena import run as arena_run  # noqa: E402
from arena.errors import ConfigError  # noqa: E402
from arena.model import load  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASKS_DIR = "tests/data/lm_eval"  # the YAMLs' data_files are relative to the repository root
TASKS = ["arena_mc", "arena_ppl", "arena_gen"]
MAX_LENGTH = 48  # tokens per forward: the documents of arena_ppl need 2-3 rolling windows
EOD = 256
# on the CPU also where a GPU is present: the direct computation is the CPU fp32 model (the GPU test compares to it)
TRAIN = ["train.device=cpu", "task=text", "task.seq_len=32", "task.num_test=16", "train.steps=30",
         "train.eval_every=30", "train.batch_size=8", "model.d_model=32", "model.n_layers=1", "mixer=gdn",
         "mixer.num_heads=2"]


@pytest.fixture
def local_tasks_only(monkeypatch):
    """lm-eval indexes only --include_path's tasks, not its own 14,000 (seconds of YAML parsing on every
    TaskManager): the arena_* tasks are all these tests use, and an unknown name stays unknown."""
    import lm_eval.tasks

    import arena.lm_eval

    class LocalTaskManager(lm_eval.tasks.TaskManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "include_defaults": False})

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", LocalTaskManager)
    monkeypatch.setattr(arena.lm_eval, "_MANAGERS", {})  # none of these managers outlives the test


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (REPO / TASKS_DIR / f"{name}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run dir trained by `python -m arena.run` (in process) with lm-eval at the end: (run dir, summary)."""
    results = tmp_path_factory.mktemp("lm_eval_runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setattr(sys, "argv", ["arena.run", f"results_dir={results}", *TRAIN,
                                 f"eval.lm_eval.tasks=[{','.join(TASKS)}]", f"eval.lm_eval.include_path={TASKS_DIR}",
                                 f"eval.lm_eval.max_length={MAX_LENGTH}", "eval.lm_eval.batch_size=3"])
        arena_run.main()
    (summary_path,) = results.rglob("summary.json")
    return summary_path.parent, json.loads(summary_path.read_text())


# --- the direct computation: one sequence at a time, whole forwards, byte tokens ---------------------------------
def token_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t >= 1, from one forward: [len(ids) - 1]."""
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
    return torch.log_softmax(logits[0, :-1].double(), -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def continuation(model, context: str, cont: str) -> tuple[float, bool]:
    ctx, tail = list(context.encode()), list(cont.encode())
    ids = ctx + tail
    lp = token_logprobs(model, ids)[len(ctx) - 1:]
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
    greedy = logits[0, len(ctx) - 1: -1].argmax(-1).tolist() == tail
    return float(lp.sum()), greedy


def rolling(model, text: str, window: int) -> float:
    """Each byte predicted once: byte j in chunk [a, b) of `window` targets is read with the `window` inputs
    before b ((<eod> + text)[b - window: b]), as lm-eval's rolling windows define it."""
    target, stream = list(text.encode()), [EOD] + list(text.encode())
    total = 0.0
    for a in range(0, len(target), window):
        b = min(a + window, len(target))
        start = max(0, b - window)
        lp = token_logprobs(model, stream[start: b] + [target[b - 1]])  # predicts stream[start + 1: b + 1]
        total += float(lp[a - start:].sum())
    return total


def greedy_text(model, prompt: str, max_tokens: int, until: list[str]) -> tuple[str, str]:
    """(the greedy continuation cut at <eod> and the earliest stop string, the same uncut)."""
    ids = list(prompt.encode())
    new = []
    for _ in range(max_tokens):
        with torch.no_grad():
            logits, _ = model(torch.tensor([ids + new]))
        new.append(int(logits[0, -1].argmax()))
    if EOD in new:
        new = new[: new.index(EOD)]
    text = bytes(t for t in new if t < EOD).decode("utf-8", errors="replace")
    return text[: min([text.index(s) for s in until if s in text] or [len(text)])], text


@pytest.fixture(scope="module")
def direct(trained):
    """Per-request answers and task scores computed directly from the checkpoint's model."""
    model = load(trained[0])
    mc = [[continuation(model, d["question"], " " + c) for c in d["choices"]] for d in rows("mc")]
    acc = sum(max(range(len(s)), key=lambda i: s[i][0]) == d["answer"] for s, d in zip(mc, rows("mc"))) / len(mc)
    docs = [d["text"] for d in rows("docs")]
    ll = [rolling(model, text, MAX_LENGTH) for text in docs]
    nbytes, words = sum(len(t.encode()) for t in docs), sum(len(re.split(r"\s+", t)) for t in docs)
    texts = [greedy_text(model, d["prompt"], 12, [" ", "."]) for d in rows("gen")]  # arena_gen.yaml's settings
    assert any(cut != whole for cut, whole in texts), "no stop string reached: the test would not check cutting"
    gen = [cut for cut, _ in texts]
    match = sum(g == d["target"] for g, d in zip(gen, rows("gen"))) / len(gen)
    scores = {"arena_mc": {"acc": acc},
              "arena_ppl": {"word_perplexity": math.exp(-sum(ll) / words),
                            "byte_perplexity": math.exp(-sum(ll) / nbytes),
                            "bits_per_byte": -sum(ll) / nbytes / math.log(2)},
              "arena_gen": {"exact_match": match}}
    return {"mc": mc, "ll": ll, "gen": gen, "scores": scores}


def assert_scores(found: dict, expected: dict) -> None:
    assert set(found) == set(expected)
    for task, metrics in expected.items():
        for metric, value in metrics.items():
            assert found[task][metric] == pytest.approx(value, rel=1e-5), (task, metric)


def test_lm_eval_at_the_end_of_training_matches_a_direct_computation(trained, direct):
    run_dir, summary = trained
    assert summary["status"] == "completed" and "lm_eval_error" not in summary
    assert_scores(summary["lm_eval"], direct["scores"])
    assert json.loads((run_dir / "lm_eval.json").read_text())["results"]["arena_mc"]["acc,none"] == \
        summary["lm_eval"]["arena_mc"]["acc"]
    meta = json.loads((run_dir / "checkpoint" / "meta.json").read_text())
    assert meta["tokenizer"] == {"name": "byte", "eod": EOD} and meta["seq_len"] == 32


def closed_form_stderr(correct: list[bool]) -> float:
    """lm-eval's mean_stderr of a 0/1 score: sample standard deviation / sqrt(n) = sqrt(p (1 - p) / (n - 1))."""
    n, p = len(correct), sum(correct) / len(correct)
    return math.sqrt(p * (1 - p) / (n - 1))


def test_lm_eval_scores_carry_the_closed_form_stderr(trained, direct):
    """eval.lm_eval.bootstrap_iters (default 1000) reaches lm-eval: acc and exact_match (mean metrics) carry
    `<metric>_stderr` equal to the closed form over the direct per-example results; the rolling-perplexity metrics,
    which lm-eval gives no stderr ("N/A" in lm_eval.json), carry none."""
    run_dir, summary = trained
    found = summary["lm_eval"]
    mc = [max(range(len(s)), key=lambda i: s[i][0]) == d["answer"] for s, d in zip(direct["mc"], rows("mc"))]
    gen = [g == d["target"] for g, d in zip(direct["gen"], rows("gen"))]
    assert found["arena_mc"]["acc_stderr"] == pytest.approx(closed_form_stderr(mc), rel=1e-9, abs=1e-12)
    assert found["arena_gen"]["exact_match_stderr"] == pytest.approx(closed_form_stderr(gen), rel=1e-9, abs=1e-12)
    assert not any(key.endswith("_stderr") for key in found["arena_ppl"])
    written = json.loads((run_dir / "lm_eval.json").read_text())
    assert written["results"]["arena_ppl"]["bits_per_byte_stderr,none"] == "N/A"
    assert written["config"]["bootstrap_iters"] == 1000


def test_report_shows_lm_eval_scores_beside_the_run_results(trained, tmp_path):
    from arena.report.render import build_blocks, build_tables, render_markdown, write_tables

    run_dir, summary = trained
    tables = build_tables(run_dir.parents[1])
    (row,) = tables["lm_eval_table"].to_dict("records")
    assert row["test bits/byte"] == pytest.approx(summary["test_bits_per_byte"])
    for task, metrics in summary["lm_eval"].items():
        for metric, value in metrics.items():
            name = metric.replace("_stderr", " stderr")  # acc_stderr -> the column "arena_mc acc stderr"
            assert row[f"{task} {name}"] == pytest.approx(value)
    assert "arena_ppl bits_per_byte stderr" not in row
    page = render_markdown(build_blocks(run_dir.parents[1], tables, {}))
    assert "## Standard benchmarks (lm-eval)" in page and "arena_mc acc" in page and "1.96 x stderr" in page
    for task, metric in (("arena_mc", "acc"), ("arena_gen", "exact_match")):
        value, err = summary["lm_eval"][task][metric], summary["lm_eval"][task][f"{metric}_stderr"]
        assert f"| {value:.3f} ± {1.96 * err:.3f} |" in page, (task, metric)
    bpb = summary["lm_eval"]["arena_ppl"]["bits_per_byte"]
    assert f"{bpb:.3f}" in page and f"{bpb:.3f} ±" not in page  # no stderr: the bare score
    import pandas as pd

    csv = pd.read_csv(write_tables(run_dir.parents[1], tables, tmp_path / "report") / "lm_eval.csv")
    assert list(csv.columns) == ["run_dir", "benchmark", "metric", "value", "stderr", "ci95"]
    (gen,) = csv[(csv["benchmark"] == "arena_gen") & (csv["metric"] == "exact_match")].to_dict("records")
    assert gen["stderr"] == pytest.approx(err, rel=1e-5) and gen["ci95"] == pytest.approx(1.96 * err, rel=1e-5)
    assert csv[csv["benchmark"] == "arena_ppl"]["stderr"].isna().all() and not csv["metric"].str.contains(
        "_stderr").any()


def test_model_type_arena_on_a_run_dir_matches_request_by_request(trained, direct, monkeypatch):
    """lm-eval's simple_evaluate with model="arena" and model_args (the registry and create_from_arg_string, as
    the command line uses them); every logged request's answer equals the direct one."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    import arena.lm_eval  # noqa: F401  registers the model type
    from arena.lm_eval import scores

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = lm_eval.simple_evaluate(model="arena", model_args=f"run_dir={trained[0]},max_length={MAX_LENGTH}",
                                  tasks=TASKS, batch_size=2, device="cpu", bootstrap_iters=0, log_samples=True,
                                  task_manager=TaskManager(include_path=str(REPO / TASKS_DIR), include_defaults=False))
    assert_scores(scores(out), direct["scores"])
    samples = {task: sorted(out["samples"][task], key=lambda s: s["doc_id"]) for task in TASKS}
    for sample, expected in zip(samples["arena_mc"], direct["mc"]):
        for (logprob, greedy), (want, want_greedy) in zip(sample["filtered_resps"], expected):
            assert logprob == pytest.approx(want, rel=1e-5, abs=1e-4) and greedy == want_greedy
    for sample, want in zip(samples["arena_ppl"], direct["ll"]):
        assert sample["filtered_resps"][0] == pytest.approx(want, rel=1e-5)
    assert [s["filtered_resps"][0] for s in samples["arena_gen"]] == direct["gen"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision, rel", [("fp32", 2e-3), ("bf16", 5e-2)])
def test_model_type_arena_on_cuda_matches_the_cpu_computation(trained, direct, monkeypatch, precision, rel):
    """The same requests on the GPU (Triton kernels; bf16 autocast by default there): every log-likelihood within
    `rel` of the CPU fp32 direct computation (the trained run is on the CPU), generation well-formed."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    import arena.lm_eval  # noqa: F401  registers the model type

    monkeypatch.chdir(REPO)
    out = lm_eval.simple_evaluate(model="arena", model_args=f"run_dir={trained[0]},max_length={MAX_LENGTH},"
                                  f"precision={precision}", tasks=TASKS, batch_size=4, device="cuda",
                                  bootstrap_iters=0, log_samples=True,
                                  task_manager=TaskManager(include_path=str(REPO / TASKS_DIR), include_defaults=False))
    samples = {task: sorted(out["samples"][task], key=lambda s: s["doc_id"]) for task in TASKS}
    for sample, expected in zip(samples["arena_mc"], direct["mc"]):
        for (logprob, _), (want, _) in zip(sample["filtered_resps"], expected):
            assert logprob == pytest.approx(want, rel=rel, abs=rel)
    for sample, want in zip(samples["arena_ppl"], direct["ll"]):
        assert sample["filtered_resps"][0] == pytest.approx(want, rel=rel)
    for sample in samples["arena_gen"]:
        assert isinstance(sample["filtered_resps"][0], str) and " " not in sample["filtered_resps"][0]


def test_cli_wrapper_runs_lm_eval_with_the_arena_model(trained, local_tasks_only, monkeypatch, tmp_path, capsys):
    """`python -m arena.lm_eval` is lm-eval's command line with `arena` registered."""
    from arena.lm_eval import main

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    main(["--model", "arena", "--model_args", f"run_dir={trained[0]}", "--tasks", "arena_mc", "--include_path",
          TASKS_DIR, "--limit", "2", "--batch_size", "4", "--output_path", str(tmp_path / "out")])
    assert "arena_mc" in capsys.readouterr().out
    (written,) = (tmp_path / "out").rglob("results*.json")
    assert json.loads(written.read_text())["results"]["arena_mc"]["sample_len"] == 2


@pytest.mark.parametrize("overrides, expected", [
    (["eval.lm_eval.tasks=[no_such_task_xyz]", f"eval.lm_eval.include_path={TASKS_DIR}"],
     "eval.lm_eval.tasks: 'no_such_task_xyz' is not an lm-eval task"),
    (["eval.lm_eval.tasks=[arena_mc]", "eval.lm_eval.include_path=no/such/dir"],
     "eval.lm_eval.include_path='no/such/dir' is not a folder"),
    (["task=mqar", "eval.lm_eval.tasks=[arena_mc]"], "needs task=text"),
    (["eval.lm_eval.limit=-1"], "eval.lm_eval.limit=-1 must be an integer >= 0"),
    (["eval.lm_eval.bootstrap_iters=-1"], "eval.lm_eval.bootstrap_iters=-1 must be an integer >= 0"),
])
def test_bad_lm_eval_input_fails_in_one_line_before_training(overrides, expected, tmp_path, monkeypatch, capsys,
                                                            local_tasks_only):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["arena.run", f"results_dir={tmp_path}", *TRAIN, *overrides])
    with pytest.raises(SystemExit) as stop:
        arena_run.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and expected in err[0], err
    assert not any(tmp_path.iterdir())  # nothing written: it failed before training


def test_missing_lm_eval_fails_in_one_line(monkeypatch):
    from arena.evaluate import LmEvalConfig
    from arena.lm_eval import check_config
    from arena.tasks import build_task

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval raises ImportError
    task = build_task("text", seq_len=32)
    with pytest.raises(ConfigError, match=r"needs lm-eval .*pip install -e '\.\[lm-eval\]'"):
        check_config(LmEvalConfig(tasks=["arena_mc"]), task)


def test_bad_model_args_fail_in_one_line(trained):
    from arena.lm_eval_model import ArenaLM

    for kwargs, expected in [({}, "run_dir=<run dir of a task=text run"), ({"run_dir": str(trained[0]),
                             "batch_size": "auto"}, "auto is not supported"),
                             ({"run_dir": str(trained[0]), "max_length": "x"}, "max_length='x' must be an integer"),
                             ({"run_dir": str(trained[0]), "colour": "red"}, "unknown model_args colour")]:
        with pytest.raises(ConfigError, match=re.escape(expected)):
            ArenaLM(**kwargs)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", *sys.argv[1:]]))
