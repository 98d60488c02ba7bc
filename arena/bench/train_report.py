"""The printed table, the CSV and the PNG of `python -m arena.bench train` (arena/bench/train.py).

    print(format_table(rows)); write_csv(rows, path); write_plot(rows, path, title)   # rows: one dict per (mixer, T)

No CUDA; matplotlib through an Agg canvas (no pyplot state). Like arena/bench/train.py, this file must also run
inside a checkout of an older arena, so it does not use arena/bench/report.py (the kernels bench's). Run through
`python -m arena.bench train`; tests: tests/bench/test_bench_train.py.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

# ----------------------------------------------------------------------------------------------------- output

COLUMNS = [("mixer", "mixer"), ("T", "T"), ("B", "B"), ("step_ms", "ms/step"), ("step_nogen_ms", "ms/step no gen"),
           ("gen_ms", "gen ms"), ("tokens_per_s", "tokens/s"), ("peak_memory_bytes", "peak MiB"),
           ("mixer_fwdbwd_ms", "mixers fwd+bwd ms"), ("kernel_fwdbwd_ms", "kernels fwd+bwd ms"), ("loop", "loop"),
           ("note", "note")]


def cell(key: str, value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    if key == "peak_memory_bytes":
        return f"{value / 2**20:.0f}"
    if key == "tokens_per_s":
        return f"{value:,.0f}"
    if key.endswith("_ms"):
        return f"{value:.0f}" if value >= 1000 else f"{value:.3g}"
    return str(value).replace("|", "/")


def format_table(rows: list[dict]) -> str:
    """A Markdown table, one line per (mixer, T)."""
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(cell(key, r[key]) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': a file-name-safe device tag."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def write_csv(rows: list[dict], path: Path) -> None:
    """Atomically (a temporary file, then os.replace): a reader never sees half a table."""
    import csv
    import io

    from arena.provenance import write_atomic

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


def write_plot(rows: list[dict], path: Path, title: str) -> None:
    """Left: tokens/s against T per mixer. Right: at the largest T, per mixer, the step (with and without
    generation), the mixer layers and their kernels (fwd+bwd) and the batch generation, in ms."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    mixers = list(dict.fromkeys(r["mixer"] for r in rows))
    lengths = sorted({r["T"] for r in rows})
    for i, mixer in enumerate(mixers):
        points = sorted((r["T"], r["tokens_per_s"]) for r in rows if r["mixer"] == mixer
                        and math.isfinite(r["tokens_per_s"]))
        if points:
            left.plot(*zip(*points), marker="o", color=f"C{i}", label=mixer)
    left.set_xscale("log", base=2)
    left.set_xticks(lengths, [str(T) for T in lengths])
    left.set_yscale("log")
    left.set_xlabel("sequence length T")
    left.set_ylabel("tokens / s (full training step)")
    left.grid(True, which="both", alpha=0.3)
    if left.lines:
        left.legend(fontsize="small")
    T = lengths[-1]
    parts = [("step_ms", "step"), ("step_nogen_ms", "step, no gen"), ("mixer_fwdbwd_ms", "mixer layers fwd+bwd"),
             ("kernel_fwdbwd_ms", "kernels fwd+bwd"), ("gen_ms", "batch generation")]
    at_T = {r["mixer"]: r for r in rows if r["T"] == T}
    width = 0.8 / len(parts)
    for j, (key, label) in enumerate(parts):
        values = [at_T[m][key] if m in at_T else math.nan for m in mixers]
        right.bar([i + (j - (len(parts) - 1) / 2) * width for i in range(len(mixers))],
                  [v if math.isfinite(v) else 0.0 for v in values], width, label=label, color=f"C{j}")
    right.set_xticks(range(len(mixers)), mixers)
    right.set_ylabel("ms")
    right.set_title(f"T = {T}")
    right.grid(True, axis="y", alpha=0.3)
    right.legend(fontsize="small")
    fig.suptitle(title)
    try:
        from arena.provenance import save_figure_atomic
    except ImportError:  # an older arena (this file also runs inside a baseline checkout): a plain save
        fig.savefig(path, format="png", dpi=110)
        return
    save_figure_atomic(fig, path, dpi=110)
