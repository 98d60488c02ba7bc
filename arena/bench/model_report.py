"""Cache bytes, memory floors, the printed table, the report section, CSV and plots of `python -m arena.bench model`.

    from arena.bench import model_report as mr
    mr.layer_cache_bytes(mixer, L, act_bytes)       # (bytes held per sequence after L tokens, bytes written per step)
    mr.state_tensor_bytes(states)                    # bytes of the state tensors a model really holds (all sequences)
    mr.write_outputs(rows, out_dir, stem, meta)      # <stem>.csv, <stem>.png (log-log) and <stem>.md (report section)

No CUDA here: the tests call it on CPU with tiny models and fake rows. Rows are dicts with the CSV COLUMNS below.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from arena.provenance import write_atomic

COLUMNS = ("mixer", "part", "L", "batch", "mode", "ms", "tokens_per_s", "peak_mem_bytes", "cache_bytes",
           "cache_bytes_measured", "floor_ms", "floor_frac", "note")
PARTS = ("train", "prefill", "decode", "cache")
RECURRENT = ("kda", "gdn", "mamba2")


def layer_cache_bytes(mixer, L: int, act_bytes: int) -> tuple[int, int]:
    """(bytes of one layer's decode state per sequence after L tokens, bytes a decode step writes per sequence).

    From the layer's shapes and the dtypes the mixers keep (arena/mixers): the delta rules hold S [H, K, V] and
    Mamba2 its SSM state [H, N, P], both fp32, plus their short-conv caches in the activation dtype (act_bytes);
    MLA holds the latent cache [L, R + Kr] in promote(weight dtype, fp32) and writes one slot per step. A recurrent
    step rewrites its whole state, so the bytes written are the bytes held.
    """
    kind = type(mixer).__name__
    if kind in ("KDA", "GatedDeltaNet") or hasattr(mixer, "qkv"):
        held = mixer.H * mixer.K * mixer.V * 4 + mixer.qkv.cache_size() * act_bytes
        return held, held
    if hasattr(mixer, "nheads"):  # Mamba2
        held = mixer.nheads * mixer.cfg.d_state * mixer.cfg.headdim * 4 + mixer.conv.cache_size() * act_bytes
        return held, held
    if hasattr(mixer, "kv_a_proj"):  # MLA, RoPE or NoPE
        import torch

        slot = (mixer.R + mixer.Kr) * torch.promote_types(mixer.kv_a_proj.weight.dtype, torch.float32).itemsize
        return L * slot, slot
    raise ValueError(f"no cache-byte formula for mixer class {kind}; add one to arena/bench/model_report.py")


def model_cache_bytes(model, L: int, act_bytes: int) -> tuple[int, int]:
    """layer_cache_bytes summed over the model's layers."""
    pairs = [layer_cache_bytes(block.mixer, L, act_bytes) for block in model.blocks]
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def state_tensor_bytes(states) -> int:
    """Bytes of the tensors in a list of per-layer state dicts, each storage once; MLA's `*_buffer` capacity is
    skipped in favour of its length-L views (c_kv, k_rope), so this is the cache of the tokens seen so far."""
    total, seen = 0, set()
    for state in states:
        for key, t in (state or {}).items():
            if key.endswith("_buffer") or not hasattr(t, "untyped_storage"):
                continue
            ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
            if ident not in seen:
                seen.add(ident)
                total += t.numel() * t.element_size()
    return total


def decode_floor_bytes(weight_bytes: int, batch: int, held: int, written: int) -> int:
    """The least HBM traffic of one decode step: every weight read once (shared by the batch) and, per sequence,
    the state read once and the bytes it changes written once."""
    return weight_bytes + batch * (held + written)


# ------------------------------------------------------------------------------------------------ tables

def _fmt(v, kind: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if kind == "bytes":
        for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if v >= div:
                return f"{v / div:.3g} {unit}"
        return f"{v:.0f} B"
    return f"{v:.3g}"


def _label(L: int) -> str:
    return f"{L >> 20}M" if L >= 1 << 20 and L % (1 << 20) == 0 else f"{L >> 10}k" if L >= 1024 and L % 1024 == 0 \
        else str(L)


def pivot(frame: pd.DataFrame, part: str, column: str, kind: str, mode: str | None = None,
          batch_one: bool = False) -> str:
    """A markdown table: mixers down, L across, one value per cell; a skipped or failed point shows its note."""
    rows = frame[frame["part"] == part]
    skipped = rows["mode"].isna()  # a skipped point's row has no mode or batch: shown in every table of its part
    if mode is not None:
        rows, skipped = rows[(rows["mode"] == mode) | skipped], skipped[(rows["mode"] == mode) | skipped]
    if batch_one:
        rows = rows[(rows["batch"] == 1) | skipped]
    if rows["mode"].notna().sum() == 0:
        return "(not measured)"
    lengths = sorted(rows["L"].unique())
    lines = ["| mixer | " + " | ".join(_label(L) for L in lengths) + " |", "|---" * (len(lengths) + 1) + "|"]
    for mixer, group in rows.groupby("mixer", sort=False):
        cells = []
        for L in lengths:
            hit = group[group["L"] == L]
            if hit.empty:
                cells.append("")
                continue
            r = hit.iloc[0]
            value = r[column]
            note = r["note"] if isinstance(r["note"], str) else "-"
            cells.append(_fmt(value, kind) if not pd.isna(value) else note.split(":")[0])
        lines.append(f"| {mixer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def step_table(frame: pd.DataFrame) -> str:
    """layer_step rows: mixer, batch, us per step, floor us, floor fraction."""
    rows = frame[(frame["part"] == "decode") & (frame["mode"] == "layer_step")].dropna(subset=["ms"])
    if rows.empty:
        return "(not measured)"
    lines = ["| mixer | batch | state bytes / seq | us / step | floor us | floor fraction |", "|---" * 6 + "|"]
    for r in rows.itertuples():
        lines.append(f"| {r.mixer} | {int(r.batch)} | {_fmt(r.cache_bytes, 'bytes')} | {r.ms * 1e3:.3g} | "
                     f"{_fmt(r.floor_ms * 1e3, 'num')} | {_fmt(r.floor_frac, 'num')} |")
    return "\n".join(lines)


def claims(frame: pd.DataFrame) -> list[str]:
    """The Kimi claims and the issue's goals, each a line with its numbers and a verdict."""
    out = []
    cache = frame[(frame["part"] == "cache")].set_index(["mixer", "L"])["cache_bytes"]
    for full in ("mla_nope", "mla"):
        if any(m == full for m, _ in cache.index):
            ratios = [(L, cache[("hybrid_3to1", L)] / cache[(full, L)]) for m, L in cache.index
                      if m == full and ("hybrid_3to1", L) in cache.index]
            if ratios:
                out.append(f"cache hybrid_3to1 / {full}: " + ", ".join(f"{_label(L)} {r:.3f}" for L, r in ratios)
                           + " (Kimi: approaches 0.25)")
                at128 = [r for L, r in ratios if L == 131072]
                if at128 and full == "mla_nope":
                    out.append(f"goal hybrid cache <= 0.3x full MLA at 128k: {at128[0]:.3f} "
                               f"{'met' if at128[0] <= 0.3 else 'NOT met'}")
    dec = frame[(frame["part"] == "decode") & (frame["batch"] == 1) & (frame["mode"] == "eager")]
    ms = dec.set_index(["mixer", "L"])["ms"]
    for full in ("mla_nope", "mla"):
        pairs = [(L, ms[(full, L)] / ms[("hybrid_3to1", L)]) for m, L in ms.index
                 if m == full and ("hybrid_3to1", L) in ms.index]
        pairs = [(L, r) for L, r in pairs if not pd.isna(r)]
        if pairs:
            out.append(f"decode speedup hybrid_3to1 over {full} (batch 1, eager): "
                       + ", ".join(f"{_label(L)} {s:.2f}x" for L, s in pairs) + " (Kimi: grows with context)")
    for mixer, group in dec.groupby("mixer", sort=False):
        group = group.dropna(subset=["ms"]).sort_values("L")
        base, longest = group[group["L"] == 4096], group.iloc[-1] if len(group) else None
        if base.empty or longest is None or longest["L"] <= 4096:
            continue
        growth = longest["ms"] / base.iloc[0]["ms"]
        if mixer in RECURRENT:
            verdict = "met" if growth <= 1.2 else "NOT met"
            out.append(f"goal {mixer} decode latency flat (<= 1.2x from 4k to {_label(longest['L'])}): "
                       f"{growth:.2f}x {verdict}")
        else:
            out.append(f"{mixer} decode latency 4k -> {_label(longest['L'])}: {growth:.2f}x")
    # the goal is about a recurrent layer's step: its state update alone (layer_step rows, one per batch)
    floor = frame[(frame["part"] == "decode") & (frame["mode"] == "layer_step")].dropna(subset=["floor_frac"])
    for mixer, group in floor[floor["mixer"].isin(RECURRENT)].groupby("mixer", sort=False):
        best = group.loc[group["floor_frac"].idxmax()]
        out.append(f"goal {mixer} layer decode step within 2x of its memory floor (floor fraction >= 0.5): best "
                   f"{best['floor_frac']:.2f} at batch {int(best['batch'])} "
                   f"{'met' if best['floor_frac'] >= 0.5 else 'NOT met'} (batches: "
                   + ", ".join(f"{int(r.batch)}: {r.floor_frac:.2f}" for r in group.itertuples()) + ")")
    return out


def section(frame: pd.DataFrame, meta: dict) -> str:
    """The report section (markdown): settings, one table per measurement, the claims and goals."""
    parts = [f"## Model benchmark: {meta.get('device', '?')}", "",
             f"`python -m arena.bench model {meta.get('command', '')}`".replace(" `", "`"), "",
             f"{meta.get('settings', '')}", "",
             "### Training: tokens/s (fwd + bwd + AdamW step)", pivot(frame, "train", "tokens_per_s", "num"),
             "", "### Training: peak memory", pivot(frame, "train", "peak_mem_bytes", "bytes"),
             "", "### Prefill: ms (batch 1)", pivot(frame, "prefill", "ms", "num"),
             "", "### Decode: ms per token, batch 1, eager", pivot(frame, "decode", "ms", "num", "eager", True),
             "", "### Decode: ms per token, batch 1, CUDA graph", pivot(frame, "decode", "ms", "num", "graph", True),
             "", "### Decode: tokens/s at the largest batch run (eager)",
             pivot(frame[frame["batch"] > 1], "decode", "tokens_per_s", "num", "eager"),
             "", "### Decode: fraction of the memory floor, batch 1 (eager)",
             pivot(frame, "decode", "floor_frac", "num", "eager", True),
             "", "### Decode: one recurrent layer's state update alone (fraction of its memory floor by batch)",
             step_table(frame),
             "", "### Cache / state bytes per sequence", pivot(frame, "cache", "cache_bytes", "bytes"),
             "", "### Claims and goals", *[f"- {line}" for line in claims(frame)], ""]
    return "\n".join(parts)


def write_plot(frame: pd.DataFrame, path: Path, title: str) -> None:
    """Four log-log panels against context: training tokens/s, prefill ms, decode ms/token (batch 1), cache bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from arena.provenance import save_figure_atomic

    fig = Figure(figsize=(14, 10), layout="constrained")
    FigureCanvasAgg(fig)
    panels = [("train", "tokens_per_s", "training tokens/s", None),
              ("prefill", "ms", "prefill ms (batch 1)", None),
              ("decode", "ms", "decode ms/token (batch 1)", "eager"),
              ("cache", "cache_bytes", "cache bytes / seq", None)]
    for ax, (part, column, label, mode) in zip(fig.subplots(2, 2).flat, panels):
        rows = frame[frame["part"] == part]
        if mode:
            rows = rows[(rows["mode"] == mode) & (rows["batch"] == 1)]
        drawn = False
        for i, (mixer, group) in enumerate(rows.groupby("mixer", sort=False)):
            group = group.dropna(subset=[column]).sort_values("L")
            if len(group):
                ax.plot(group["L"], group[column], marker="o", color=f"C{i}", label=mixer)
                drawn = True
        if drawn:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no measurement", ha="center", va="center", transform=ax.transAxes)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlabel("context / sequence length (tokens)")
        ax.set_ylabel(label)
    fig.suptitle(title)
    save_figure_atomic(fig, path, dpi=110)


def short_table(frame: pd.DataFrame) -> str:
    """The few numbers printed last: per mixer, training tok/s at its longest T, decode ms at 4k-ish and the
    longest context, and cache bytes at the longest context."""
    lines = [f"{'mixer':<12} {'train tok/s (T)':>22} {'decode ms (L) first':>22} {'decode ms (L) last':>22} "
             f"{'cache/seq (L)':>20}"]

    def last(rows, column, first=False):
        rows = rows.dropna(subset=[column]).sort_values("L")
        if rows.empty:
            return "-"
        r = rows.iloc[0 if first else -1]
        return f"{_fmt(r[column], 'bytes' if column == 'cache_bytes' else 'num')} ({_label(int(r['L']))})"

    for mixer, g in frame.groupby("mixer", sort=False):
        dec = g[(g["part"] == "decode") & (g["batch"] == 1) & (g["mode"] == "eager")]
        lines.append(f"{mixer:<12} {last(g[g['part'] == 'train'], 'tokens_per_s'):>22} "
                     f"{last(dec, 'ms', True):>22} {last(dec, 'ms'):>22} "
                     f"{last(g[g['part'] == 'cache'], 'cache_bytes'):>20}")
    return "\n".join(lines)


def write_outputs(rows: list[dict], out: Path, stem: str, meta: dict) -> pd.DataFrame:
    """<out>/<stem>.csv (COLUMNS, then the run-wide meta columns), .png and .md; returns the frame."""
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for key in ("device", "d_model", "n_layers", "dtype", "torch", "triton"):
        frame[key] = meta.get(key)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{stem}.csv", frame.to_csv(index=False))
    write_plot(frame, out / f"{stem}.png", f"arena.bench model: {meta.get('device')}, d_model {meta.get('d_model')}, "
                                           f"{meta.get('n_layers')} layers, {meta.get('dtype')}")
    write_atomic(out / f"{stem}.md", section(frame, meta))
    return frame
