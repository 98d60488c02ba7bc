"""Checkpoints of a run: the weights in safetensors, the trainer's state for resuming, written atomically.

    from arena.model import load                  # re-exported there
    model = load("results/runs/<date>/<run>")     # LanguageModel on the CPU, weights of the run's last checkpoint

`arena.train` writes `<run_dir>/checkpoint/` at the end of every completed run, every `train.checkpoint_every`
steps, and when SIGTERM stops a run:
    model.safetensors   the weights (safetensors.torch.save_model: tensors that share memory are stored once)
    best.safetensors    the weights of the best validation evaluation so far (train.test_on=best, the default):
                        restored before the test, so a resumed run tests the same model as an unbroken one
    trainer.pt          optimizer state, step, the Trainer's window accumulators, best accuracy so far and the
                        RNG states (torch CPU/CUDA, python, numpy): what a resumed run needs to go on bitwise
    meta.json           step, config hash, the resolved model config and the composed mixer specs (all load()
                        needs; the whole resolved config is the run dir's config.yaml) and, for task=text, the
                        tokenizer (`byte` by name) and seq_len; written last
    tokenizer.json      task=text with a tokenizers file only: a copy of it (`load_tokenizer` reads it)
A checkpoint is built in a temporary folder beside it (`.checkpoint.tmp-*`) and swapped in by renames, so a kill
while writing leaves the previous checkpoint (or none), never a half one; leftover temporary folders are ignored by
`resumable_run` and `load`, and removed by the next write. `python -m arena.run` resumes a run that was killed or
interrupted from its checkpoint (arena/run.py, `resumable_run`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from arena.errors import ConfigError, choice_error
from arena.provenance import _umask, write_atomic, write_json_atomic

CHECKPOINT = "checkpoint"
RESUMABLE = ("interrupted", "failed")  # summary.json statuses (or none: SIGKILL) a rerun continues from a checkpoint


def rng_state() -> dict:
    """Every global random stream a run might draw from (none is used by today's step, but a mixer with dropout
    or a task drawing from the global numpy stream would be): restored on resume so the run goes on as if never
    stopped. numpy's array becomes a list so that trainer.pt loads with torch.load(weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None}


def set_rng_state(state: dict) -> None:
    # trainer.pt loads onto the run's device (the optimizer state belongs there), but torch takes RNG states only as
    # CPU byte tensors: a resumed CUDA run failed here ("RNG state must be a torch.ByteTensor") before this .cpu()
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(tuple(s if not isinstance(s, list) else tuple(s) for s in state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([cuda_state.cpu() for cuda_state in state["cuda"]])


def copy_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict copied to the CPU, one entry per tensor storage: a tied weight (an embedding shared
    with the head) is kept once, under its first name, as safetensors stores it (`restore_weights` reverses it)."""
    out, seen = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            out[name] = tensor.detach().to("cpu", copy=True)
    return out


def restore_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load a `copy_weights` result into `model` in place; a name it lacks must share its tensor with one it has."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    state = model.state_dict()
    loaded = {state[name].data_ptr() for name in weights if name in state}
    bad = list(unexpected) + [name for name in missing if state[name].data_ptr() not in loaded]
    if bad:
        raise RuntimeError(f"saved weights do not fit the model: {', '.join(sorted(bad))}")


def save(run_dir: Path, run, trainer_state: dict, meta: dict, weights: dict | None = None,
         best: dict | None = None) -> Path:
    """Write `<run_dir>/checkpoint/` for `run` (an arena.train.Run) atomically; returns its path. `weights` (a
    `copy_weights` result) is written as model.safetensors instead of run.model's own, `best` as best.safetensors."""
    from safetensors.torch import save_file, save_model

    run_dir = Path(run_dir)
    final = run_dir / CHECKPOINT
    for stale in run_dir.glob(f".{CHECKPOINT}.*"):  # left by a kill during an earlier write
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{CHECKPOINT}.tmp-"))
    try:
        if weights is None:
            save_model(run.model, str(tmp / "model.safetensors"), metadata={"step": str(meta["step"])})
        else:
            save_file(weights, str(tmp / "model.safetensors"), metadata={"step": str(meta["step"])})
        if best is not None:
            save_file(best, str(tmp / "best.safetensors"), metadata={"step": str(meta.get("best_step"))})
        torch.save({**trainer_state, "rng": rng_state()}, tmp / "trainer.pt")
        meta = {**meta, "model": asdict(run.model.cfg), "specs": run.mixer_specs, "default_spec": run.default_spec}
        tokenizer = getattr(getattr(run, "task", None), "tokenizer", None)  # text: what lm-eval needs to read text
        if callable(tokenizer):  # and the training length, lm-eval's default window
            meta.update(tokenizer=tokenizer().save(tmp), seq_len=run.task.seq_len)
        write_json_atomic(tmp / "meta.json", meta)  # last: a folder without it is not a checkpoint
        os.chmod(tmp, 0o777 & ~_umask())
        # a folder cannot replace a non-empty one in one rename: move the old one aside first, then drop it. A kill
        # between the two renames leaves no `checkpoint` (a rerun starts over), never a mixed one
        old = run_dir / f".{CHECKPOINT}.old-{os.getpid()}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_meta(run_dir: Path) -> dict | None:
    """meta.json of the run's checkpoint, or None where there is no complete checkpoint."""
    try:
        return json.loads((Path(run_dir) / CHECKPOINT / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def _checkpoint_dir(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run dir {run_dir} does not exist")
    if read_meta(run_dir) is None:
        raise ConfigError(f"run dir {run_dir} has no checkpoint ({CHECKPOINT}/meta.json); it is written at the "
                          "end of a completed run and every train.checkpoint_every steps")
    return run_dir / CHECKPOINT


WEIGHTS = ("tested", "last", "best")


def load(run_dir: Path | str, device: str | torch.device = "cpu", weights: str = "tested"):
    """The LanguageModel of a run's checkpoint, rebuilt from its recorded model config and mixer specs (the specs
    as arena.run composed them), with the checkpoint's weights, in eval mode on `device`. `weights`: tested (the
    default: the weights summary.json's test scores are of, best or last as train.test_on chose), last (after the
    checkpoint's step) or best (the best validation evaluation's)."""
    from safetensors.torch import load_model

    from arena.model import LanguageModel, ModelConfig

    if weights not in WEIGHTS:
        raise choice_error("weights", weights, WEIGHTS)
    folder = _checkpoint_dir(run_dir)
    meta = read_meta(run_dir)
    has_best = (folder / "best.safetensors").is_file()
    if weights == "best" and not has_best:
        raise ConfigError(f"run dir {run_dir}: the checkpoint holds no best weights (best.safetensors); they are "
                          "kept with train.test_on=best")
    best = weights == "best" or (weights == "tested" and meta.get("test_model") == "best" and has_best)
    model = LanguageModel(ModelConfig(**meta["model"]), meta["specs"], meta["default_spec"])
    path = folder / ("best.safetensors" if best else "model.safetensors")
    load_model(model, str(path), strict=True, device=str(device))
    return model.to(device).eval()


def load_tokenizer(run_dir: Path | str):
    """The TextTokenizer (arena/tasks/text.py) a task=text run trained with: from its checkpoint's record, or, for
    a checkpoint written before tokenizers were recorded, `byte` when the run dir's config.yaml names it."""
    from arena.tasks.text import TextTokenizer

    folder = _checkpoint_dir(run_dir)
    record = read_meta(run_dir).get("tokenizer")
    if record is not None:
        return TextTokenizer.load(folder, record)
    import yaml

    try:
        task = dict(yaml.safe_load((Path(run_dir) / "config.yaml").read_text())["task"])
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        task = {}
    if task.get("name") == "text" and task.get("tokenizer") == "byte":
        return TextTokenizer("byte")
    raise ConfigError(f"run dir {run_dir} records no text tokenizer: lm-eval needs a task=text run (this one: "
                      f"task={task.get('name', 'unknown')}); a text run with a tokenizer file made before tokenizers "
                      f"were saved needs a new checkpoint")


def load_into(run_dir: Path, run) -> dict:
    """Load the checkpoint's weights into `run.model` and restore the RNG states; returns trainer.pt's content
    (optimizer state, step, accumulators, progress) for Trainer.load_state_dict and the loop."""
    from safetensors.torch import load_model

    folder = _checkpoint_dir(run_dir)
    load_model(run.model, str(folder / "model.safetensors"), strict=True, device=str(run.device))
    state = torch.load(folder / "trainer.pt", map_location=run.device, weights_only=True)
    set_rng_state(state["rng"])
    if (folder / "best.safetensors").is_file():  # kept on the CPU, as the loop keeps them
        from safetensors.torch import load_file

        state["best_weights"] = load_file(str(folder / "best.safetensors"), device="cpu")
    return state


def resumable_run(results_dir: Path, digest: str, prefer: Path | None = None) -> Path | None:
    """A run dir under results_dir (`prefer` first) whose checkpoint has this config hash and whose run did not
    finish: summary.json says interrupted or failed, or is missing (the process was killed). The one with the
    most steps wins; final checkpoints (finished runs) and attempts set aside by arena.run are never resumed.
    Temporary checkpoint folders never match (their meta.json is not under `checkpoint/`)."""
    found = []
    paths = list(Path(results_dir).rglob(f"{CHECKPOINT}/meta.json")) if Path(results_dir).is_dir() else []
    if prefer is not None and (Path(prefer) / CHECKPOINT / "meta.json").is_file():
        paths.insert(0, Path(prefer) / CHECKPOINT / "meta.json")
    for meta_path in paths:
        run_dir = meta_path.parent.parent
        if run_dir.name.startswith("attempt_"):  # an attempt arena.run set aside (resume=false): never resumed
            continue
        meta = read_meta(run_dir)
        if meta is None or meta.get("config_hash") != digest or meta.get("final"):
            continue
        try:
            status = json.loads((run_dir / "summary.json").read_text()).get("status")
        except FileNotFoundError:
            status = None
        except (OSError, ValueError):
            continue
        if status is None or status in RESUMABLE:
            if prefer is not None and run_dir.resolve() == Path(prefer).resolve():
                return run_dir
            found.append((meta.get("step", 0), run_dir))
    return max(found, key=lambda f: f[0])[1] if found else None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics.jsonl rows after `step` (written after the checkpoint, and to be written again on resume)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            row_step = json.loads(line).get("step", 0)
        except ValueError:
            continue  # a line cut by the kill
        if row_step <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    write_atomic(path, "".join(kept))


__all__ = ["CHECKPOINT", "WEIGHTS", "copy_weights", "load", "load_into", "load_tokenizer", "read_meta",
           "restore_weights", "resumable_run", "save", "truncate_metrics"]
