"""lm-eval (EleutherAI's lm-evaluation-harness) on arena models: the command line, and lm-eval after training.

    pip install -e '.[lm-eval]'
    python -m arena.lm_eval --model arena --model_args run_dir=results/runs/<date>/<run> --tasks lambada_openai
    python -m arena.lm_eval --model arena --model_args run_dir=<run dir> --device cuda --batch_size 64 \\
        --tasks my_task --include_path my_tasks/            # a task defined by a local YAML
    python -m arena.lm_eval ls tasks                        # every task lm-eval knows
    python -m arena.run task=text eval.lm_eval.tasks=[lambada_openai]   # lm-eval at the end of training

`python -m arena.lm_eval` is lm-eval's own command line (every flag of `lm_eval`) with the model type `arena`
registered first (arena/lm_eval_model.py). A plain `lm_eval --model arena` does not find it: lm-eval 0.4 looks
models up in its own package only (lm_eval/models/__init__.py), with no plugin hook to register one from outside.

At the end of training (`eval.lm_eval.*`, LmEvalConfig in arena/evaluate.py; `check_config` runs before training):
`evaluate_run` scores the trained model in memory, writes lm-eval's results to <run_dir>/lm_eval.json and returns
`{"lm_eval": {task: {metric: value}}}` for summary.json (metric names as lm-eval's, without the `,none` filter
suffix, with `<metric>_stderr` where lm-eval gives one). A failure is recorded as `lm_eval_error` and the run stays
completed.

Standard errors (`eval.lm_eval.bootstrap_iters`, default 1000; 0 = none, lm-eval writes "N/A"): lm-eval 0.4
computes them only when bootstrap_iters > 0 (lm_eval/evaluator_utils.py, api/metrics.py `stderr_for_metric`).
A mean-aggregated metric (acc, acc_norm, exact_match) gets the closed form `mean_stderr`, sample standard deviation
over sqrt(n): sqrt(p (1 - p) / (n - 1)) for a 0/1 score; no resampling. Aggregations on lm-eval's bootstrappable
list (perplexity, median, f1, mcc, bleu, ...) are resampled bootstrap_iters times, in one process here
(DISABLE_MULTIPROC; lm-eval would otherwise fork a pool of cpu_count() workers from the training process).
bits_per_byte, word_perplexity and byte_perplexity (loglikelihood_rolling) are on neither list: no stderr.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from pathlib import Path
from unittest import mock

from arena.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
_MANAGERS: dict[tuple, object] = {}  # (include_path, with lm-eval's own tasks) -> lm-eval TaskManager


def _import_lm_eval(where: str):
    try:
        import lm_eval  # noqa: F401

        import arena.lm_eval_model  # noqa: F401  registers the model type `arena`
    except ImportError as err:
        raise ConfigError(f"{where} needs lm-eval ({err.name or err} is not installed): "
                          "pip install -e '.[lm-eval]'") from None


def resolve_include_path(include_path: str) -> str | None:
    """An include_path as given (absolute, or from the working directory), else from the repository root."""
    if not include_path:
        return None
    given = Path(include_path).expanduser()
    path = given if given.exists() or given.is_absolute() else ROOT / given
    if not path.is_dir():
        raise ConfigError(f"eval.lm_eval.include_path={include_path!r} is not a folder (of lm-eval task YAMLs)")
    return str(path.resolve())


def task_manager(include_path: str | None, tasks: list[str] = ()):
    """lm-eval's TaskManager for `tasks`: `include_path`'s alone when it defines them all (indexing lm-eval's own
    14,000 task YAMLs takes seconds), else with lm-eval's tasks beside it; cached."""
    from lm_eval.tasks import TaskManager

    if include_path:
        if (include_path, False) not in _MANAGERS:
            _MANAGERS[include_path, False] = TaskManager(include_path=include_path, include_defaults=False)
        if set(tasks) <= set(_MANAGERS[include_path, False].all_tasks):
            return _MANAGERS[include_path, False]
    if (include_path, True) not in _MANAGERS:
        _MANAGERS[include_path, True] = TaskManager(include_path=include_path)
    return _MANAGERS[include_path, True]


def check_config(cfg, task, world: int = 1) -> None:
    """Bad `eval.lm_eval` input as one line, before training: a task without a text tokenizer, lm-eval missing,
    a missing include_path, an unknown lm-eval task name, a multi-process run."""
    if not cfg.tasks:
        return
    tasks = list(cfg.tasks)
    if not callable(getattr(task, "tokenizer", None)):
        raise ConfigError(f"eval.lm_eval.tasks={tasks} needs task=text (lm-eval feeds text through the run's "
                          f"tokenizer); this task has none: use eval.lm_eval.tasks=[]")
    if world > 1:
        raise ConfigError(f"eval.lm_eval.tasks={tasks} is not supported with several processes; run "
                          "`python -m arena.lm_eval --model arena --model_args run_dir=<run dir> ...` after training")
    _import_lm_eval(f"eval.lm_eval.tasks={tasks}")
    known = set(task_manager(resolve_include_path(cfg.include_path), tasks).all_tasks)
    for name in tasks:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"eval.lm_eval.tasks: {name!r} is not an lm-eval task{hint} (`python -m arena.lm_eval "
                              f"ls tasks` lists them; a local YAML needs eval.lm_eval.include_path)")


def scores(results: dict) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} from lm-eval's results: numeric metrics and their numeric `<metric>_stderr` ("N/A"
    left out), the `,none` filter suffix dropped (`exact_match,strict-match` keeps its filter)."""
    out = {}
    for name, metrics in results.get("results", {}).items():
        out[name] = {key.replace(",none", ""): float(value) for key, value in metrics.items()
                     if isinstance(value, (int, float)) and not isinstance(value, bool)
                     and key != "sample_len"}  # sample_len: examples scored (lm_eval.json's n-samples)
    return out


def stderr_key(metric: str) -> str:
    """The scores key of a metric's stderr: acc -> acc_stderr, exact_match,strict-match ->
    exact_match_stderr,strict-match (lm-eval's naming)."""
    name, comma, filter_name = metric.partition(",")
    return f"{name}_stderr{comma}{filter_name}"


def simple_evaluate(lm, cfg, **kwargs) -> dict:
    """lm-eval's simple_evaluate on `lm` with LmEvalConfig `cfg`'s tasks, include_path, limit and bootstrap_iters
    (stderr: closed form for mean metrics, a one-process bootstrap for lm-eval's bootstrappable ones, none at 0)."""
    from lm_eval import simple_evaluate as lm_eval_simple_evaluate

    # no fork of a pool from a process that holds the model (and CUDA); the environment is restored afterwards
    with mock.patch.dict(os.environ, {"DISABLE_MULTIPROC": "1"}):
        return lm_eval_simple_evaluate(model=lm, tasks=list(cfg.tasks),
                                       task_manager=task_manager(resolve_include_path(cfg.include_path), cfg.tasks),
                                       limit=cfg.limit or None, bootstrap_iters=cfg.bootstrap_iters,
                                       log_samples=False, **kwargs)


def evaluate_run(run, run_dir: Path) -> dict:
    """lm-eval's `eval.lm_eval.tasks` on `run.model` (the tested weights) at the end of training: lm_eval.json in
    the run dir, {"lm_eval": scores} for summary.json, or {"lm_eval_error": ...} (the run stays completed)."""
    cfg = run.eval_cfg.lm_eval
    try:
        _import_lm_eval("eval.lm_eval.tasks")
        from lm_eval.utils import handle_non_serializable

        from arena.lm_eval_model import ArenaLM

        lm = ArenaLM(model=run.model, tokenizer=run.task.tokenizer(), seq_len=run.task.seq_len, amp=run.amp,
                     batch_size=cfg.batch_size, max_length=cfg.max_length)
        was_training = run.model.training
        try:
            results = simple_evaluate(lm, cfg)
        finally:
            run.model.train(was_training)
        (Path(run_dir) / "lm_eval.json").write_text(json.dumps(results, indent=2, default=handle_non_serializable))
        found = scores(results)
        print("arena: lm-eval: " + "; ".join(f"{task} " + ", ".join(
            f"{k} {v:.4g}" + (f" ± {m[stderr_key(k)]:.2g} (stderr)" if stderr_key(k) in m else "")
            for k, v in m.items() if "_stderr" not in k) for task, m in found.items()), file=sys.stderr)
        return {"lm_eval": found}
    except Exception as err:  # lm-eval must never cost the trained result
        message = f"{type(err).__name__}: {err}"
        print(f"arena: warning: eval.lm_eval failed ({message}); the trained result is kept", file=sys.stderr)
        return {"lm_eval_error": message}


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line with the model type `arena` registered."""
    try:
        _import_lm_eval("python -m arena.lm_eval")
    except ConfigError as err:
        print(f"arena: error: {err}", file=sys.stderr)
        sys.exit(2)
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
