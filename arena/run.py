"""The main job: train one model on one task and score it on held-out data.

    python -m arena.run                                   # kda on MQAR, tiny model, CPU-friendly defaults
    python -m arena.run mixer=gdn train.lr=1e-3           # another mixer, another learning rate
    python -m arena.run model=hybrid_3to1                 # Kimi Linear's 3 KDA : 1 MLA (NoPE) layout
    python -m arena.run model.layout=[kda,mla_nope] model.n_layers=4 mixer.num_heads=4
    python -m arena.run -m mixer=kda,gdn,mla train.lr=1e-3,3e-3   # a Hydra multirun sweep
    python -m arena.run -m +experiment=kimi_synthetic_mini        # a preset (conf/experiment/), its own grid
    python -m arena.run -m ... hydra/launcher=joblib hydra.launcher.n_jobs=2   # runs in parallel processes

Resuming: a run whose resolved config (paths and logger aside) matches a run under `results_dir` that completed
or diverged is skipped, so rerunning an interrupted sweep picks up where it stopped. A matching run that was
interrupted (Ctrl-C, SIGTERM), failed or killed (no summary.json) and has a checkpoint (train.checkpoint_every,
arena/checkpoint.py) continues from it in its own run dir: a single run finds it anywhere under `results_dir`, a
sweep point in its own folder (a fixed hydra.sweep.dir); without a checkpoint it runs again from the start.
`resume=false` reruns everything from the start. In a sweep, a failed run is recorded and the sweep goes on.
A skip prints one line with the earlier run's path and test accuracy. A skipped single run leaves nothing; a
skipped sweep point whose run lies elsewhere keeps its folder with skipped.json naming that run, so a sweep
folder accounts for every point of its grid (`python -m arena.report` follows the record; see skip_point).

Config groups live in conf/ (mixer, task, model, train, logger); each option extends a schema derived from the
dataclasses (arena/config_schema.py: keys, types and defaults live there), so Hydra rejects unknown keys and
mistyped values while composing. Each run writes results/runs/<date>/<time>_<...>/ (see arena/train.py). Bad input
(unknown names or keys, wrong types, impossible shapes) exits with status 2 and a one-line error, before any run
directory exists: `main` lets Hydra raise its composition errors and `arena.config_utils.one_line` shortens them.

Layout entries name YAML files in conf/mixer/; the entry equal to the `mixer=` choice uses the composed
`mixer` node (so `mixer.*` overrides reach it), the others their option as composed alone (its YAML on its schema).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from arena import parallel
from arena.checkpoint import CHECKPOINT, read_meta, resumable_run
from arena.config_schema import CONF, compose_option, schema_for
from arena.config_utils import CONFIG_ERRORS, SweepDirNote, one_line
from arena.errors import ConfigError, choice_error
from arena.provenance import write_atomic, write_json_atomic
from arena.train import Run, train

HYDRA_FILES = {".hydra", "run.log"}  # what Hydra writes into a run dir (run.log: older configs' job logging)
SKIP_RECORD = "skipped.json"  # a sweep point skipped for a finished twin elsewhere: the pointer to it (skip_point)


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def mixer_specs(cfg: DictConfig, chosen: str) -> dict[str, dict]:
    """Mixer spec per layout name: the composed `mixer` node for the chosen one, for the others their conf/mixer
    option composed alone (its YAML on its schema: every key, defaults included)."""
    specs = {chosen: OmegaConf.to_container(cfg.mixer, resolve=True)}
    for name in cfg.model.get("layout") or []:
        if name not in specs:
            if name not in group_options("mixer"):
                raise choice_error("model.layout entry", name, group_options("mixer"))
            specs[name] = compose_option("mixer", name)
    return specs


def _discard_run_dir(run_dir: Path, results_dir: Path | None = None, hydra_files: set[str] = HYDRA_FILES) -> None:
    """Remove a run dir that holds only what Hydra wrote before the config was found bad (or the run not needed);
    with results_dir, also the folders between the two that this leaves empty (a date folder made for this run)."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= hydra_files:
        for p in run_dir.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        run_dir.rmdir()
        if results_dir is not None:
            top, folder = results_dir.resolve(), run_dir.resolve().parent
            while top in folder.parents and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent


# Keys that say where a run goes or how it is logged, not what it computes: left out of the config hash, so
# a sweep rerun elsewhere or with wandb on still finds its finished twins.
NOT_HASHED = ("results_dir", "logger", "resume")
# Keys added to a dataclass after runs were recorded whose default does what those runs did before the key existed:
# left out of the hash while at that default (the schema's). A composed config holds every field of its schema
# (arena/config_schema.py), so an added field would otherwise change every hash and resume would no longer find
# the earlier runs. A key whose default changes what a run computes does not belong here.
HASH_NEUTRAL = {
    # KDA/GDN/Mamba2 init, KDA's gate and MLA's input conv (issue 14's reference), GDN's decay switch: defaults = the
    # old layers; Mamba2's recompute (issue 16) changes what backward keeps, not one bit of what it computes
    "mixer": ("init", "gate", "gate_lower_bound", "conv_size", "decay", "recompute"),
    # checkpoint_every only adds checkpoint files; parallel=none is how every earlier run trained (the world size is
    # never in the config, so a run resumed with another number of torchrun processes is found)
    "train": ("checkpoint_every", "parallel"),
    # lm-eval after training (issue 17): off by default, and it changes no trained number; a dotted key is one key of
    # a nested node: bootstrap_iters only adds the stderr of lm-eval's scores (runs before it had none)
    "eval": ("lm_eval", "lm_eval.bootstrap_iters"),
    "task": ("filler_avoids_keys",),  # mqar's key-free filler (issue 14.2): off by default = Zoology's generator
}
# Keys left out of the hash at ANY value: they choose how the same computation runs, not what it computes.
# cuda_graphs replays the eager step's kernels (off, on and auto train the same run; its default went from off to
# auto after runs were recorded with off, which must still be found)
HASH_IGNORED = {"train": ("cuda_graphs",)}
FINISHED = ("completed", "diverged")  # a rerun of these gives the same answer; "failed" (or interrupted) is rerun


def _neutral_defaults(group: str, node: dict) -> dict:
    """HASH_NEUTRAL keys of `node` (the config's `group` node; dotted for a key of a nested node) -> their schema
    default; {} for a node no schema knows (a config recorded by an older arena)."""
    try:
        schema = schema_for(group, node.get("name")) if group in ("mixer", "task") else schema_for(group)
    except KeyError:
        return {}
    fields = {f.name: _field_default(f) for f in dataclasses.fields(schema)}
    out = {}
    for key in HASH_NEUTRAL.get(group, ()):
        value, found = fields, True
        for part in key.split("."):
            found = isinstance(value, dict) and part in value
            if not found:
                break
            value = value[part]
        if found:
            out[key] = value
    return out


def _without_neutral(node: dict, neutral: dict) -> dict:
    """`node` less the `neutral` keys (dotted: nested) at their defaults, deepest first; a nested node's default is
    compared less its own neutral keys, so a config recorded before such a key existed compares equal."""
    node = copy.deepcopy(node)
    for key in sorted(neutral, key=lambda k: -k.count(".")):
        *parents, last = key.split(".")
        target = node
        for part in parents:
            target = target.get(part) if isinstance(target, dict) else None
        default = neutral[key]
        if isinstance(default, dict):
            inner = {k[len(key) + 1:]: v for k, v in neutral.items() if k.startswith(key + ".")}
            default = _without_neutral(default, inner)
        # sorted keys: a node read back from a file written with sorted keys is the same node
        if isinstance(target, dict) and last in target and json.dumps(
                target[last], sort_keys=True, default=str) == json.dumps(default, sort_keys=True, default=str):
            del target[last]
    return node


def _field_default(f: dataclasses.Field):
    """A schema field's default as it appears in a resolved config: a nested dataclass (eval.lm_eval) as a dict."""
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return f.default


def config_hash(config: dict) -> str:
    """Identity of a run's resolved config: sha256 of its canonical JSON, minus NOT_HASHED, the HASH_IGNORED keys and
    the HASH_NEUTRAL keys at their defaults, first 16 hex digits."""
    kept = {}
    for key, node in config.items():
        if key in NOT_HASHED:
            continue
        if key in HASH_IGNORED and isinstance(node, dict):
            node = {k: v for k, v in node.items() if k not in HASH_IGNORED[key]}
        if key in HASH_NEUTRAL and isinstance(node, dict):
            node = _without_neutral(node, _neutral_defaults(key, node))
        kept[key] = node
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


RUN_FILES = ("summary.json", "metrics.jsonl", "config.yaml", "env.json")


def finished_twin(results_dir: Path, digest: str, prefer: Path | None = None) -> Path | None:
    """A run dir under results_dir whose summary.json has this config hash and a FINISHED status; `prefer` (the
    job's own run dir: a sweep rerun in the same folder) first, so a finished point is never set aside for a twin."""
    paths = sorted(results_dir.rglob("summary.json")) if results_dir.is_dir() else []
    if prefer is not None and (prefer / "summary.json").is_file():
        paths.insert(0, prefer / "summary.json")
    for summary_path in paths:
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError):
            continue  # a run being written by a parallel job, or damaged: not a twin
        if summary.get("config_hash") == digest and summary.get("status") in FINISHED:
            return summary_path.parent
    return None


def _sweep_device(job_num: int) -> str:
    """One sweep point per GPU: with several GPUs, job n of a multirun (joblib workers run several at once)
    takes cuda:(n mod GPUs); otherwise "auto" as usual."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"cuda:{job_num % count}" if count > 1 else "auto"


def set_aside_earlier_attempt(run_dir: Path) -> None:
    """A fixed sweep dir reruns a failed point in the same run dir: move the old attempt's files into
    run_dir/attempt_<n>/ first, so its record stays (and metrics.jsonl, append-only, does not mix two runs).
    A skip record left by an earlier run of the sweep goes: the point now has its own run here. A killed attempt
    (metrics but no summary.json) and its checkpoint go too, so a later resume never mixes two attempts."""
    (run_dir / SKIP_RECORD).unlink(missing_ok=True)
    if not any((run_dir / name).exists() for name in ("summary.json", "metrics.jsonl", CHECKPOINT)):
        return
    n = 1 + sum(1 for p in run_dir.glob("attempt_*") if p.is_dir())
    dest = run_dir / f"attempt_{n}"
    dest.mkdir()
    for name in (*RUN_FILES, CHECKPOINT):
        if (run_dir / name).exists():
            (run_dir / name).replace(dest / name)


def skip_point(run_dir: Path, twin: Path, name: str, digest: str, results_dir: Path, multirun: bool) -> str:
    """Leave what a job skipped for a finished twin should leave, and return the line that says so.

    A single run leaves nothing: its run dir goes, with a date folder made for it alone. A sweep point whose twin
    lies elsewhere keeps its run dir with SKIP_RECORD naming the twin, so the sweep folder accounts for every
    point of its grid (`arena.report <sweep folder>` follows the record and reads the twin's run). A point rerun
    in its own folder (the twin is run_dir) is left as it is."""
    try:
        summary = json.loads((twin / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}  # a twin being rewritten this instant: the line still names it
    status, test = summary.get("status", "finished"), summary.get("test_accuracy")
    if twin.resolve() != run_dir.resolve():
        if multirun:
            set_aside_earlier_attempt(run_dir)  # a failed attempt of this point in a reused folder stays on record
            for leftover in HYDRA_FILES - {".hydra"}:  # .hydra/overrides.yaml names the grid point: it stays
                (run_dir / leftover).unlink(missing_ok=True)
            write_json_atomic(run_dir / SKIP_RECORD, {
                "status": "skipped", "name": name, "config_hash": digest,
                "twin": os.path.relpath(twin.resolve(), run_dir.resolve()), "twin_absolute": str(twin.resolve()),
                "twin_status": status, "twin_test_accuracy": test,
                "message": "an identical config had already finished under results_dir; resume=false reruns it",
            })
        else:
            _discard_run_dir(run_dir, results_dir)
    test_text = "n/a" if not isinstance(test, (int, float)) else round(test, 4)
    return (f"arena: skipping {name}: an identical config already {status} in {twin} (test accuracy {test_text}); "
            f"resume=false reruns it")


@hydra.main(config_path=str(CONF), config_name="config", version_base="1.3")  # absolute: also when imported
def hydra_main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    choices = hydra_cfg.runtime.choices
    chosen = choices["mixer"]
    name = f"{choices['model']}-{chosen}-{choices['task']}"
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
        digest = config_hash(config)
        if cfg.get("resume", True):
            # under torchrun rank 0 looks and every rank follows its answer (arena/parallel.py)
            twin = parallel.agree(finished_twin(Path(cfg.results_dir), digest, prefer=run_dir))
            if twin is not None:
                if parallel.is_main():
                    print(skip_point(run_dir, twin, name, digest, Path(cfg.results_dir), multirun), file=sys.stderr)
                return
        if multirun and config["train"].get("device") == "auto":
            config["train"]["device"] = _sweep_device(hydra_cfg.job.num)
        run = Run(config, mixer_specs(cfg, chosen), chosen)
    except (ConfigError, *CONFIG_ERRORS) as err:  # CONFIG_ERRORS: e.g. an interpolation that does not resolve
        _discard_run_dir(run_dir, Path(cfg.results_dir))  # with a date folder made for this run alone
        if parallel.is_main():  # under torchrun every rank finds the same error: said once
            print(f"arena: error: {err if isinstance(err, ConfigError) else one_line(err)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        _discard_run_dir(run_dir, Path(cfg.results_dir))
        print("arena: interrupted before training started; nothing was written", file=sys.stderr)
        sys.exit(130)  # SystemExit passes through Hydra's launcher: a sweep stops here too
    # a killed or interrupted attempt with a checkpoint goes on where it stopped, in its own run dir
    earlier = resumable_run(Path(cfg.results_dir), digest, prefer=run_dir) if cfg.get("resume", True) else None
    # torchrun: rank 0's run dir and resume decision for every rank (the others' Hydra dir is a scratch folder)
    earlier, run_dir = parallel.agree((earlier, run_dir))
    if earlier is not None and multirun and earlier.resolve() != run_dir.resolve():
        earlier = None  # a sweep point resumes only in its own folder, so the sweep folder holds its runs
    if earlier is not None:
        if earlier.resolve() != run_dir.resolve():
            if parallel.is_main():
                _discard_run_dir(run_dir, Path(cfg.results_dir))  # the fresh dir Hydra made is not needed
            run_dir = earlier
        if parallel.is_main():
            print(f"arena: resuming {name} from step {read_meta(run_dir)['step']} in {run_dir}", file=sys.stderr)
    elif parallel.is_main():
        set_aside_earlier_attempt(run_dir)
        write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    extra = {"mixer": chosen, "model": choices["model"], "task": choices["task"],
             "experiment": cfg.get("experiment"), "config_hash": digest}
    try:
        summary = train(run, run_dir, name, extra, resume=earlier is not None)
    except KeyboardInterrupt:
        # train wrote summary.json (status "interrupted", not FINISHED, so a rerun runs this point again); exit
        # 130 as a shell does for Ctrl-C, and in a sweep stop rather than go on with the next point
        try:
            steps = json.loads((run_dir / "summary.json").read_text())["steps"]
        except (OSError, ValueError, KeyError):
            steps = 0  # interrupted before the loop began
        meta = read_meta(run_dir)
        again = (f"resume it from step {meta['step']}" if meta and not meta.get("final")
                 else "start this run again")
        print(f"arena: interrupted after {steps} step{'' if steps == 1 else 's'}; rerun the same command to {again} "
              f"(progress so far in {run_dir}/summary.json)", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        if not multirun:
            raise
        # summary.json already says "failed"; the sweep goes on with the next point (rerunning it retries this one)
        print(f"arena: error: {name} failed ({type(err).__name__}: {err}); recorded in {run_dir}, sweep continues",
              file=sys.stderr)
        return
    if not parallel.is_main():
        return
    acc, test = summary.get("valid_accuracy"), summary.get("test_accuracy")
    metric = "accuracy"
    if "test_mse" in summary:  # a regression task: its accuracy slots hold -MSE; say the MSE itself
        metric, acc, test = "MSE", summary.get("valid_mse"), summary.get("test_mse")
    chosen = "best validation"
    if summary.get("selected_by") == "loss":  # text: the lowest validation loss chose the evaluation, not accuracy
        chosen = f"lowest validation loss {_rounded(summary.get('valid_loss'))}, its validation"
    print(
        f"arena: {summary['status']} after {summary['steps']} steps in {summary['wall_time_s']:.1f}s; "
        f"{chosen} {metric} {_rounded(acc)}, test {metric} {_rounded(test)}; results in {run_dir}",
        file=sys.stderr,
    )


def _rounded(value):
    return value if value is None else round(value, 4)


def main() -> None:
    # Hydra checks names, keys and types while composing (before it makes a run dir) and would print its error in
    # several lines and exit 1; HYDRA_FULL_ERROR=1 makes it raise the error to us instead, to be said in one line
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    SweepDirNote.sweep_dir = None
    try:
        # under torchrun: the process group, and ranks > 0 a scratch Hydra dir (only rank 0 writes the run dir)
        extra = parallel.hydra_overrides(sys.argv[1:])
        parallel.init()
        sys.argv += extra
        hydra_main()
    except CONFIG_ERRORS as err:
        note = SweepDirNote  # a sweep makes its folder before composing its grid: one with no job yet goes
        if note.sweep_dir is not None:
            _discard_run_dir(note.sweep_dir, note.results_dir, {"multirun.yaml"})
        print(f"arena: error: {one_line(err, overrides=sys.argv[1:])}", file=sys.stderr)
        sys.exit(2)
    except ConfigError as err:  # torchrun with a sweep (arena.parallel.hydra_overrides), before composing
        print(f"arena: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # e.g. a joblib sweep's parent: its workers already recorded their runs
        print("arena: interrupted; rerun the same command to go on (finished points are skipped)", file=sys.stderr)
        sys.exit(130)
    except SystemExit as stop:  # a sweep's first job found bad input (hydra_main said so): its folder goes too
        if stop.code == 2 and SweepDirNote.sweep_dir is not None:
            _discard_run_dir(SweepDirNote.sweep_dir, SweepDirNote.results_dir, {"multirun.yaml"})
        raise
    finally:
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error


if __name__ == "__main__":
    main()
