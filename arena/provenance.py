"""What a run needs to be reproduced: code version, package versions, device -> `env.json`; atomic writes.

    from arena.provenance import environment, write_atomic, write_json_atomic
    write_json_atomic(run_dir / "env.json", environment(device))   # whole or not at all, mode 0666 & ~umask
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("torch", "triton", "hydra-core", "omegaconf", "numpy", "pandas", "tqdm", "wandb", "fla-core")
REPO = Path(__file__).resolve().parents[1]


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and a rename: never half-written."""
    _atomic(path, "w", lambda f: f.write(text))


def save_figure_atomic(fig, path: Path, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG the same way: a reader never sees half an image."""
    _atomic(path, "wb", lambda f: fig.savefig(f, format="png", dpi=dpi))


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask can only set it, and setting
    it briefly would race other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic(path: Path, mode: str, write) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; give it the mode open() would (0666 less the umask), as metrics.jsonl
        # has, so colleagues sharing a results directory can read every file of a run
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"cpu ({cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict:
    versions = {"python": platform.python_version(), "arena": _version("arena")}
    for name in PACKAGES:
        versions[name] = _version(name)
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_sha": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "versions": versions,
        "device": str(device),
        "device_name": device_name(device),
        "cuda": torch.version.cuda,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "argv": sys.argv,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
