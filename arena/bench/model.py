"""`python -m arena.bench model [key=value ...]`: training, prefill, decode and cache of whole models against context.

    python -m arena.bench model                                   # CUDA: the GPU default below; CPU: the tiny one
    python -m arena.bench model mixers=kda,mla_nope parts=decode,cache decode_lens=4k,128k,1M
    python -m arena.bench.model device=cpu out=/tmp/bench          # the same, without the subcommand table

Models (arena.model.LanguageModel, built directly: no run config, no Hydra composition):
    GPU default  d_model 1024, 8 layers, SwiGLU MLP 2.75 x d_model, vocab 32768; kda / gdn: 8 heads of K = V = 128
                 (gdn expand_v 1, so its state equals kda's); mamba2: mamba_ssm defaults (d_state 128, headdim 64,
                 expand 2: 32 heads); mla / mla_nope: 8 heads, head dim 128, rope dim 64, latent rank 512;
                 hybrid_3to1: [kda, kda, kda, mla_nope] x 2. Training keeps fp32 weights under bf16 autocast with
                 fused AdamW, as arena.train does; prefill, decode and cache use bf16 weights (`dtype`), prefill
                 under autocast too (else MLA's attention computes in fp32), decode without it, as generate() runs
                 a bf16 model (MLA's absorbed step then reads its fp32 latent cache once, with no cast copy of it).
    CPU default  ("tiny") d_model 64, 4 layers, vocab 256, fp32, T up to 256: the whole command in seconds (CI).
Keys (an unknown key or a bad value is one line on stderr and exit code 2, before any work):
    mixers       kda,gdn,mamba2,mla,mla_nope,hybrid_3to1         parts   train,prefill,decode,cache
    d_model n_layers vocab mlp_ratio                              the model (n_layers a multiple of 4 for the hybrid)
    train_lens   1k..64k (x2)  train_tokens 64k (B = max(1, train_tokens / T): packed rows of T tokens)
    prefill_lens 1k,4k,16k,64k,128k,256k,1M (batch 1)             decode_lens 1k,4k,16k,64k,128k,256k,1M
    decode_batches 1,max   max = the largest power of two whose cache fits in 60 % of free memory, at most
                 decode_batch_cap (256); an OOM halves it (up to 3 times)
    steps 16     decode steps per timed window          repeats 5  timed windows / calls (median)
    graphs auto  CUDA-graph decode rows too (auto and on: on CUDA; off: eager only). A replayed step repeats the
                 captured shapes: recurrent states are copied back into the captured buffers, and MLA's step
                 attends the same L + 1 slots each replay (rewriting slot L): the latency at context L
    budget_s 420 the whole bench's time box: each (mixer, part) gets a share of what is left (train 3 : prefill 2
                 : decode 3 : cache 1; its warmup calls, where Triton compiles, extend it), and a length whose
                 least predicted time passes the share is skipped ("skipped: time box"); timed calls stop early
                 near it
    device auto|cuda|cpu    dtype bf16|fp16|fp32 (of prefill / decode)    out results/bench
Lengths take k = 1024 and M = 2^20 suffixes; lists are a,b,c or [a,b,c].
Each point: a warmup call (Triton compiles there), torch.cuda.synchronize, the median of repeats, the peak memory
(torch.cuda.max_memory_allocated after a reset); an OOM is recorded as "OOM (stops here)" and the mixer's longer
lengths of that part are skipped. Decode builds the state at length L directly (no prefill of L tokens, which would
take minutes at 1M): the recurrent layers' states from an 8-token prefill (their size does not depend on L), MLA's
latent cache as a random [B, L, R + Kr] buffer with room for the timed steps. The memory floor of a decode step is
every weight read once plus, per sequence, the state read once and the changed bytes written once
(model_report.decode_floor_bytes); floor_frac = floor time at the measured copy bandwidth / measured time. At the
first decode length, rows of mode layer_step time one recurrent layer's state update alone (the op its decode
step calls: the fused Triton step for KDA / GDN on CUDA) at each batch run, against its own floor (inputs and
state read once, state and output written once): the issue's "decode step of a recurrent layer" goal.
CSV columns (model_report.COLUMNS, then device, d_model, n_layers, dtype, torch, triton): mixer, part, L (T or
context), batch, mode (train | eager | graph | layer_step | analytic), ms (per step / call / token), tokens_per_s,
peak_mem_bytes, cache_bytes (per sequence), cache_bytes_measured, floor_ms, floor_frac, note (why a point is
missing: OOM, time box, error).
Cache rows: cache_bytes is analytic (model_report.layer_cache_bytes), cache_bytes_measured the allocation the state
really took (CUDA: memory_allocated before / after; CPU: the state tensors' bytes).
Writes <out>/model_<device>_<stamp>.csv, .png (log-log against context) and .md (the report section), then prints
a short table. Tests: tests/test_bench_model.py; GPU driver: scripts/gpu_bench_model.sh.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import datetime
from pathlib import Path

PREFIX = "arena.bench model"
ALL_MIXERS = ("kda", "gdn", "mamba2", "mla", "mla_nope", "hybrid_3to1")
PARTS = ("train", "prefill", "decode", "cache")
K, M = 1024, 1 << 20
GPU = dict(d_model=1024, n_layers=8, vocab=32768, mlp_ratio=2.75, train_lens=[K << i for i in range(7)],
           train_tokens=64 * K, prefill_lens=[K, 4 * K, 16 * K, 64 * K, 128 * K, 256 * K, M],
           decode_lens=[K, 4 * K, 16 * K, 64 * K, 128 * K, 256 * K, M], decode_batches=[1, "max"],
           decode_batch_cap=256, steps=16, repeats=5, budget_s=420.0, dtype="bf16")
CPU = dict(d_model=64, n_layers=4, vocab=256, mlp_ratio=2.0, train_lens=[64, 256], train_tokens=256,
           prefill_lens=[64, 256], decode_lens=[64, 256], decode_batches=[1, "max"], decode_batch_cap=4, steps=3,
           repeats=2, budget_s=60.0, dtype="fp32")
INTS = ("d_model", "n_layers", "vocab", "train_tokens", "decode_batch_cap", "steps", "repeats")
LISTS = ("train_lens", "prefill_lens", "decode_lens")
CHOICES = {"device": ("auto", "cuda", "cpu"), "dtype": ("bf16", "fp16", "fp32"), "graphs": ("auto", "on", "off")}
KEYS = ("mixers", "parts", *INTS, *LISTS, "mlp_ratio", "decode_batches", "budget_s", "out", *CHOICES)


# ------------------------------------------------------------------------------------------------ arguments

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"keys: {', '.join(KEYS)}")


def _int(key: str, text: str) -> int:
    t = text.strip()
    mult = {"k": K, "K": K, "M": M}.get(t[-1:], 1)
    try:
        value = int(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise ValueError(f"{key}: {text!r} is not a positive integer (suffixes k = 1024, M = 2^20)") from None
    if value < 1:
        raise ValueError(f"{key}: {text!r} must be a positive integer")
    return value


def _list(text: str) -> list[str]:
    items = [t.strip() for t in text.strip().strip("[]").split(",") if t.strip()]
    return items


def parse(items: list[str]) -> dict:
    """key=value items -> a dict of the given keys, checked; raises a one-line ValueError naming what is wrong."""
    given: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not key=value; valid keys: {', '.join(KEYS)}")
        if key not in KEYS:
            raise ValueError(f"unknown key {key!r}; valid keys: {', '.join(KEYS)}")
        if key in ("mixers", "parts"):
            allowed = ALL_MIXERS if key == "mixers" else PARTS
            names = _list(value) or [""]
            for name in names:
                if name not in allowed:
                    raise ValueError(f"{key}: {name!r} is not valid; choose from {', '.join(allowed)}")
            given[key] = list(dict.fromkeys(names))
        elif key in INTS:
            given[key] = _int(key, value)
        elif key in LISTS:
            given[key] = sorted({_int(key, v) for v in _list(value)}) or _int(key, "")
        elif key == "decode_batches":
            given[key] = [v if v == "max" else _int(key, v) for v in _list(value)] or _int(key, "")
        elif key in ("mlp_ratio", "budget_s"):
            try:
                given[key] = float(value)
            except ValueError:
                given[key] = math.nan
            if not given[key] >= 0 or (key == "budget_s" and given[key] == 0):
                raise ValueError(f"{key}={value!r} must be a number {'> 0' if key == 'budget_s' else '>= 0'}")
        elif key in CHOICES:
            if value not in CHOICES[key]:
                raise ValueError(f"{key}={value!r} is not valid; choose one of: {', '.join(CHOICES[key])}")
            given[key] = value
        else:
            given[key] = value
    return given


def settings(given: dict, cuda_available: bool) -> dict:
    """Defaults for the device (GPU or tiny CPU), overridden by the given keys; shape checks in one line."""
    device = given.get("device", "auto")
    if device == "cuda" and not cuda_available:
        raise ValueError("device=cuda but torch.cuda.is_available() is False; use device=cpu or auto")
    cuda = cuda_available if device == "auto" else device == "cuda"
    s = {**(GPU if cuda else CPU), "mixers": list(ALL_MIXERS), "parts": list(PARTS), "graphs": "auto",
         "out": "results/bench", **given, "device": "cuda" if cuda else "cpu"}
    if "hybrid_3to1" in s["mixers"] and s["n_layers"] % 4:
        raise ValueError(f"n_layers={s['n_layers']} must be a multiple of 4 for hybrid_3to1 (3 KDA : 1 MLA-NoPE)")
    if s["d_model"] % head_dim(s["d_model"]):
        raise ValueError(f"d_model={s['d_model']} must be a multiple of {head_dim(s['d_model'])} (the head dim)")
    return s


# ------------------------------------------------------------------------------------------------ models

def head_dim(d_model: int) -> int:
    return 128 if d_model >= 256 else max(8, d_model // 2)


def model_specs(mixer: str, d_model: int) -> tuple[dict, list[str]]:
    """(mixer specs, layout) of one bench row at this width (shapes in the module docstring)."""
    hd = head_dim(d_model)
    H = d_model // hd
    delta = {"num_heads": H, "head_dim": hd}
    specs = {"kda": {"name": "kda", **delta}, "gdn": {"name": "gdn", **delta, "expand_v": 1.0},
             "mamba2": {"name": "mamba2"}, "mla": {"name": "mla", "num_heads": H},
             "mla_nope": {"name": "mla", "num_heads": H, "rope": False}}
    if mixer == "hybrid_3to1":
        return {"kda": specs["kda"], "mla_nope": specs["mla_nope"]}, ["kda", "kda", "kda", "mla_nope"]
    return {mixer: specs[mixer]}, [mixer]


def build(s: dict, mixer: str, device):
    from arena.model import LanguageModel, ModelConfig

    specs, layout = model_specs(mixer, s["d_model"])
    cfg = ModelConfig(vocab_size=s["vocab"], d_model=s["d_model"], n_layers=s["n_layers"], layout=layout,
                      mlp_ratio=s["mlp_ratio"])
    return LanguageModel(cfg, specs).to(device)


# ------------------------------------------------------------------------------------------------ run

def run(s: dict, command: str) -> int:
    import pandas as pd
    import torch

    from arena.bench import model_report as mr
    from arena.bench.model_parts import Box, copy_bandwidth, free, part_cache, part_decode, part_prefill, part_train
    from arena.bench.report import slug, version
    from arena.provenance import write_atomic

    device = torch.device(s["device"])
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[s["dtype"]]
    act_bytes = dtype.itemsize
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    bandwidth = copy_bandwidth(device)
    box = Box(s["budget_s"], s["parts"], len(s["mixers"]))
    stem = f"model_{slug(name)}_{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    Path(s["out"]).mkdir(parents=True, exist_ok=True)
    rows, params = [], {}
    for mixer in s["mixers"]:
        torch.manual_seed(0)
        model = build(s, mixer, device)
        params[mixer] = sum(p.numel() for p in model.parameters())
        base = {"mixer": mixer}
        print(f"[{PREFIX}] {mixer}: {params[mixer] / 1e6:.1f} M parameters", file=sys.stderr, flush=True)
        for part in [p for p in PARTS if p in s["parts"]]:
            deadline = box.open_cell(part)
            if part == "train":
                part_train(s, model, device, rows, base, deadline)
                continue
            model = model.to(dtype).eval()
            if part == "prefill":
                exponent = 2.0 if any(hasattr(b.mixer, "kv_a_proj") for b in model.blocks) else 1.0
                part_prefill(s, model, device, rows, base, deadline, exponent)
            elif part == "decode":
                part_decode(s, model, device, rows, base, deadline, bandwidth, act_bytes)
            else:
                part_cache(s, model, device, rows, base, deadline, act_bytes)
        del model
        free(device)
        # the rows so far, in case the call is cut off before the end (the final files replace this one)
        write_atomic(Path(s["out"]) / f"{stem}.partial.csv", pd.DataFrame(rows, columns=list(mr.COLUMNS)).to_csv())
    meta = {"device": name, "d_model": s["d_model"], "n_layers": s["n_layers"], "dtype": s["dtype"],
            "torch": torch.__version__, "triton": version("triton"), "command": command,
            "settings": (f"d_model {s['d_model']}, {s['n_layers']} layers, mlp_ratio {s['mlp_ratio']}, vocab "
                         f"{s['vocab']}, {s['dtype']} weights (training: fp32 weights, bf16 autocast on CUDA; prefill: "
                         "autocast; decode: none); parameters: "
                         + ", ".join(f"{m} {n / 1e6:.1f} M" for m, n in params.items())
                         + f"; copy bandwidth {bandwidth / 1e9:.0f} GB/s; budget {s['budget_s']:.0f} s")}
    frame = mr.write_outputs(rows, Path(s["out"]), stem, meta)
    (Path(s["out"]) / f"{stem}.partial.csv").unlink(missing_ok=True)
    print(f"wrote {Path(s['out']) / stem}.csv, .png, .md")
    stops = frame[frame["note"].notna()].drop_duplicates(["mixer", "part", "batch", "mode"])
    for r in stops.itertuples():  # where each mixer stops, and why (the first such point of each series)
        print(f"stops: {r.mixer} {r.part} L={r.L}: {r.note}")
    print("\n".join(mr.claims(frame)))
    print(mr.short_table(frame))
    return 0


def main(args: argparse.Namespace) -> int:
    """Entry point of the `model` subcommand: bad keys or values are one line on stderr and exit code 2."""
    try:
        given = parse(args.overrides)
        import torch

        s = settings(given, torch.cuda.is_available())
    except ValueError as exc:
        print(f"{PREFIX}: error: {exc}", file=sys.stderr)
        return 2
    return run(s, " ".join(args.overrides))


if __name__ == "__main__":
    from arena.bench.__main__ import OneLineParser

    parser = OneLineParser(prog="python -m arena.bench.model", description=__doc__.strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
