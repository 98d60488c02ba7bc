"""Derived columns, the printed table, the goal check, and the CSV / PNG files of `python -m arena.bench kernels`.

    frame = derive(pd.DataFrame(rows), bandwidth)   # rows from arena.bench.kernels.measure_cell
    print(format_table(frame)); write_csv(frame, path); write_plot(frame, path, title)

Pure pandas / matplotlib (Agg canvas, no pyplot state), no CUDA: the tests build fake frames. A ratio column
is fla_ms / this_ms of the same op and T, so > 1 means faster than fla; the floor fraction is the time to move
the minimum HBM bytes (arena/bench/floors.py) at the measured copy bandwidth over the measured time.
"""

from __future__ import annotations

import math
import re
from importlib import metadata
from pathlib import Path

import pandas as pd

from arena.bench import floors
from arena.provenance import write_atomic

IO_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
OP_ORDER = ("kda", "gdn", "ssd", "sdpa")
IMPL_ORDER = ("arena.triton", "arena.torch", "fla", "mamba_ssm", "sdpa.flash", "sdpa.cudnn")
MODES = (("fwd", "forward"), ("fwdbwd", "forward + backward"))
# Issue 15's speed goals, at every T measured: the least fla/arena.triton time ratio per op and mode (KDA fwd+bwd
# 1.5x faster than fla, i.e. <= 0.67x its time; the SSD against fla's simple GLA, the same recurrence), and peak
# extra memory of a forward+backward no more than fla's.
GOALS = {"kda": {"fwd": 1.0, "fwdbwd": 1.5}, "gdn": {"fwd": 1.0, "fwdbwd": 1.0}, "ssd": {"fwd": 1.0, "fwdbwd": 1.0}}
MIB = 2 ** 20


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': a file-name-safe device tag."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def row_bytes(row, backward: bool) -> int:
    io = IO_BYTES[row["dtype"]]
    if row["op"] == "sdpa":
        return floors.attention_bytes(row["B"], row["T"], row["H"], row["D"], io_bytes=io, backward=backward)
    # the SSD is the delta-rule count without beta: q, k, v, g in, o out (and their gradients)
    return floors.delta_rule_bytes(row["B"], row["T"], row["H"], row["D"], row["D"], io_bytes=io,
                                   g_bytes=IO_BYTES[row["g_dtype"]], per_channel=row["op"] == "kda",
                                   beta_bytes=0 if row["op"] == "ssd" else None, backward=backward)


def derive(frame: pd.DataFrame, bandwidth: float) -> pd.DataFrame:
    """Add bytes, GB/s, floor fraction, M tokens/s, TFLOP/s (attention) and the ratios to fla; sort rows."""
    frame = frame.copy()
    frame["copy_GBps"] = bandwidth / 1e9
    if "fwdbwd_peak_bytes" not in frame:  # a CSV of a bench from before memory was measured
        frame["fwdbwd_peak_bytes"] = math.nan
    fla = frame[frame["impl"] == "fla"].set_index(["op", "T"])
    for mode, _ in MODES:
        backward = mode == "fwdbwd"
        ms = frame[f"{mode}_ms"].astype(float)
        nbytes = frame.apply(row_bytes, axis=1, backward=backward).astype(float)
        frame[f"{mode}_bytes"] = nbytes
        frame[f"{mode}_GBps"] = [floors.achieved_gbps(b, t) for b, t in zip(nbytes, ms)]
        frame[f"{mode}_floor_ms"] = [floors.floor_ms(b, bandwidth) for b in nbytes]
        frame[f"{mode}_floor_frac"] = [floors.floor_fraction(b, t, bandwidth) for b, t in zip(nbytes, ms)]
        frame[f"{mode}_Mtok_s"] = frame["B"] * frame["T"] / (ms * 1e-3) / 1e6
        flops = [floors.attention_flops(r.B, r.T, r.H, r.D, backward=backward) if r.op == "sdpa" else math.nan
                 for r in frame.itertuples()]
        frame[f"{mode}_TFLOPs"] = [f / (t * 1e-3) / 1e12 for f, t in zip(flops, ms)]
        fla_ms = [fla[f"{mode}_ms"].get((r.op, r.T), math.nan) for r in frame.itertuples()]
        frame[f"{mode}_vs_fla"] = [float(f) / t for f, t in zip(fla_ms, ms)]
    fla_peak = [fla["fwdbwd_peak_bytes"].get((r.op, r.T), math.nan) for r in frame.itertuples()]
    # this / fla: < 1 uses less memory
    frame["peak_vs_fla"] = [p / float(f) for p, f in zip(frame["fwdbwd_peak_bytes"].astype(float), fla_peak)]
    order = frame["op"].map({op: i for i, op in enumerate(OP_ORDER)}) * 1e9 + frame["T"] * 10 + \
        frame["impl"].map({impl: i for i, impl in enumerate(IMPL_ORDER)})
    return frame.loc[order.sort_values(kind="stable").index].reset_index(drop=True)


def metadata_of(env: dict, bandwidth: float) -> dict:
    """The run-wide columns repeated on every CSV row, from arena.provenance.environment()."""
    versions = env.get("versions", {})
    return {"device": env.get("device_name"), "bandwidth_GBps": round(bandwidth / 1e9, 1),
            "torch": versions.get("torch"), "triton": versions.get("triton"), "fla_core": versions.get("fla-core"),
            "git_sha": env.get("git_sha"), "git_dirty": env.get("git_dirty"), "started_at": env.get("started_at")}


def header(meta: dict, settings: str) -> str:
    return "\n".join([
        f"device: {meta['device']}; copy bandwidth {meta['bandwidth_GBps']:.0f} GB/s; torch {meta['torch']}, "
        f"triton {meta['triton']}, fla-core {meta['fla_core']}; git {meta['git_sha']}"
        f"{' (dirty)' if meta['git_dirty'] else ''}",
        settings,
        "fla/this: fla's median ms over this row's (> 1: faster than fla); % floor: minimum HBM bytes "
        "(arena/bench/floors.py) at the copy bandwidth, over the measured time",
    ])


def _num(value, fmt, missing: str = "n/a") -> str:
    return missing if value is None or (isinstance(value, float) and not math.isfinite(value)) else fmt(value)


def _ms(v: float) -> str:
    return f"{v:.0f}" if v >= 1000 else f"{v:.3g}"


def format_table(frame: pd.DataFrame) -> str:
    """A Markdown table, one row per op x implementation x T, ready to paste into the performance notes."""
    cols = ["op", "impl", "T", "B", "fwd ms", "fwd+bwd ms", "fla/this fwd", "fla/this fwd+bwd", "fwd GB/s",
            "fwd % floor", "fwd+bwd GB/s", "fwd+bwd % floor", "fwd+bwd peak MiB (this/fla)", "o rel RMS (vs)",
            "note"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in frame.to_dict("records"):
        rel = _num(r["o_rel_rms"], lambda v: f"{v:.1e}")
        cells = [
            r["op"], r["impl"], str(r["T"]), str(r["B"]),
            _num(r["fwd_ms"], _ms), _num(r["fwdbwd_ms"], _ms),
            _num(r["fwd_vs_fla"], lambda v: f"{v:.2f}x"), _num(r["fwdbwd_vs_fla"], lambda v: f"{v:.2f}x"),
            _num(r["fwd_GBps"], lambda v: f"{v:.0f}"), _num(r["fwd_floor_frac"], lambda v: f"{100 * v:.1f}%"),
            _num(r["fwdbwd_GBps"], lambda v: f"{v:.0f}"), _num(r["fwdbwd_floor_frac"], lambda v: f"{100 * v:.1f}%"),
            _num(r.get("fwdbwd_peak_bytes", math.nan), lambda v: f"{v / MIB:.0f}")
            + _num(r.get("peak_vs_fla", math.nan), lambda v: f" ({v:.2f}x)", missing=""),
            rel + (f" ({r['o_ref']})" if r.get("o_ref") and rel != "n/a" else ""),
            "; ".join(x for x in (r.get("detail"), r.get("note")) if x).replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goal_lines(frame: pd.DataFrame) -> list[str]:
    """Per op with goals: arena.triton's fla/arena time ratio at each T, forward and forward+backward, and its peak
    extra memory over fla's, each with its goal (GOALS, at every T) and met / NOT met / not measured."""
    lines = []
    for op, goals in GOALS.items():
        rows = frame[(frame["op"] == op) & (frame["impl"] == "arena.triton")]
        if rows.empty:
            continue
        checks = [(mode, "fla/arena.triton", rows[f"{mode}_vs_fla"], f">= {least:g}x", lambda v, g=least: v >= g)
                  for mode, least in goals.items()]
        checks.append(("peak memory fwd+bwd", "arena.triton/fla", rows["peak_vs_fla"], "<= 1x", lambda v: v <= 1.0))
        for mode, ratio_name, column, goal, ok in checks:
            ratios = dict(zip(rows["T"], column.astype(float)))
            shown = ", ".join(f"T={T} {_num(v, lambda x: f'{x:.2f}x')}" for T, v in ratios.items())
            finite = [v for v in ratios.values() if math.isfinite(v)]
            if len(finite) < len(ratios) or not finite:
                verdict = "not measured (fla or arena missing at some T)"
            else:
                verdict = "met" if all(ok(v) for v in finite) else "NOT met"
            label = {"fwd": "fwd", "fwdbwd": "fwd+bwd"}.get(mode, mode)
            lines.append(f"goal {op.upper()} {label}, {ratio_name}: {shown} (goal {goal} at every T): {verdict}")
    return lines


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    write_atomic(path, frame.to_csv(index=False))


def write_plot(frame: pd.DataFrame, path: Path, title: str) -> None:
    """ms vs T on log axes, one line per op x implementation, forward and forward+backward panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    markers = {"kda": "o", "gdn": "s", "ssd": "D", "sdpa": "^"}
    styles = {"kda": "-", "gdn": "--", "ssd": "-.", "sdpa": ":"}
    colors = {impl: f"C{i}" for i, impl in enumerate(IMPL_ORDER)}  # one colour per implementation
    lengths = sorted(frame["T"].unique())
    for ax, (mode, label) in zip(axes, MODES):
        drawn = False
        for (op, impl), rows in frame.groupby(["op", "impl"], sort=False):
            rows = rows.sort_values("T")
            ms = rows[f"{mode}_ms"].astype(float)
            if not ms.notna().any():
                continue
            ax.plot(rows["T"], ms, marker=markers.get(op, "x"), linestyle=styles.get(op, "-"),
                    color=colors.get(impl), label=impl if op == "sdpa" else f"{op} {impl}")
            drawn = True
        if drawn:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            # 0.5, 2, 10 rather than 5x10^-1; minor ticks labelled at 2, 3 and 5 only, so labels never collide
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(
                lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "235" else ""))
            ax.set_xticks(lengths, [str(T) for T in lengths])
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no measurement", ha="center", va="center", transform=ax.transAxes)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(label)
        ax.set_xlabel("sequence length T (tokens; B = tokens / T)")
        ax.set_ylabel("median time (ms)")
    fig.suptitle(title)
    from arena.provenance import save_figure_atomic

    save_figure_atomic(fig, path, dpi=120)
