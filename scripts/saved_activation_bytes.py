"""Activation memory of one mixer layer: bytes autograd keeps for backward, and the forward's peak, per token.

    python scripts/saved_activation_bytes.py                               # kda, gdn, mamba2, mla at d_model 1024
    python scripts/saved_activation_bytes.py --mixers mamba2 --detail 12   # + the largest saved tensors
    python scripts/saved_activation_bytes.py --d-model 256 --seq-len 256 --set impl=torch --set recompute=false

Each mixer is built as `arena.bench model` builds it (arena/bench/model.py model_specs: KDA / GDN 8 heads of 128 at
d_model 1024, Mamba2 its defaults, MLA 8 heads), in fp32 on CPU unless --dtype / --autocast say otherwise.
- saved: what torch.autograd.graph.saved_tensors_hooks sees packed during one forward, deduplicated by storage (a
  view keeps its whole storage alive, so the storage's bytes count), parameters left out, the layer input in.
- held: the bytes of the storages the forward allocated that are still alive after it, once its output and returned
  state are dropped (so what the autograd graph keeps), plus the input's (under --autocast in_proj keeps its
  low-precision copy as well, counted too). The authoritative count: a layer that saves through its own hooks
  (torch.utils.checkpoint, as Mamba2 does) hides those saves from the `saved` hooks, which only the innermost pair
  sees, and tensors kept as attributes of an autograd.Function's ctx escape them, but not this count.
- peak: the most bytes of storages allocated during the forward and alive at once (a TorchDispatchMode that
  follows every op's outputs with storage weak references), the output included, the input and weights not.
- decode ops: the aten ops (under no_grad, below autograd) of one decoding step (T = 1 after a 16-token prefill,
  batch 1), and how many of them write new memory or in place: the kernels a GPU would launch, roughly. Under
  TRITON_INTERPRET=1 they include the interpreter's own tensor ops, so compare them on the torch path only.
The byte counts are measured at batch 1 and batch 2 and differenced, so per token = (bytes(B=2) - bytes(B=1)) / T: what
grows with the token count, free of per-layer constants (weight casts under autocast, states, masks).
--set key=value overrides a config field of every mixer that has it (e.g. impl=triton fused=on under
TRITON_INTERPRET=1 to count the GPU path's tensors; slow at d_model 1024). CPU only; a few seconds per mixer.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arena.bench.model import model_specs  # noqa: E402
from arena.mixers import build_mixer, get_mixer  # noqa: E402

MIXERS = ("kda", "gdn", "mamba2", "mla")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


def saved_tensors(mixer: torch.nn.Module, x: torch.Tensor, autocast: torch.dtype | None = None) -> dict:
    """{storage key: (bytes, shape, dtype)} of every tensor autograd saves in one forward of `mixer` on `x`
    (requires_grad), parameters left out. The first tensor packed names its storage."""
    params = {_storage_key(p) for p in mixer.parameters()}
    seen: dict = {}

    def pack(t: torch.Tensor):
        key = _storage_key(t)
        if key not in params and key not in seen and key[1] > 0:
            seen[key] = (key[1], tuple(t.shape), t.dtype)
        return t

    ctx = torch.autocast("cpu", dtype=autocast) if autocast is not None else nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
        out = mixer(x)
    del out
    return seen


class _PeakTracker(TorchDispatchMode):
    """Live bytes of the storages that ops create, after every op; `peak` is the largest. A storage counts from the
    op that creates it until nothing refers to it (checked at every later op)."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = {_storage_key(t)[0] for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:  # not a view/in-place
                s = t.untyped_storage()
                known = self.live.get(s._cdata)
                if s.nbytes() and (known is None or known[0].expired()):  # new, or at a freed one's address
                    self.live[s._cdata] = (StorageWeakRef(s), s.nbytes())
        self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
        self.peak = max(self.peak, sum(n for _, n in self.live.values()))
        return out


def forward_peak(mixer: torch.nn.Module, x: torch.Tensor, autocast: torch.dtype | None = None) -> tuple[int, int]:
    """(peak, held): the most bytes allocated and alive at once during one training forward (grad on) of `mixer` on
    `x`, and the bytes of those still alive once the output and the state are dropped, plus x's (in_proj keeps it)."""
    ctx = torch.autocast("cpu", dtype=autocast) if autocast is not None else nullcontext()
    tracker = _PeakTracker()
    with tracker, ctx:
        out, state = mixer(x)
    output = out.untyped_storage()._cdata
    del state
    gc.collect()  # Triton's CPU interpreter leaves its launches' arguments in reference cycles: no GPU run holds them
    held = sum(n for key, (ref, n) in tracker.live.items() if key != output and not ref.expired())
    del out
    return tracker.peak, held + x.untyped_storage().nbytes()


class _OpCounter(TorchDispatchMode):
    """Counts aten ops, and those whose output is new memory or that write in place (name ending in _)."""

    def __init__(self):
        super().__init__()
        self.ops = self.writes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if func._schema.name.endswith("_") or any(t.untyped_storage().data_ptr() not in inputs for t in outs):
            self.writes += 1
        return out


def decode_ops(mixer: torch.nn.Module, d_model: int, dtype=torch.float32) -> tuple[int, int]:
    """(aten ops, ops that write) of one decoding step of `mixer` at batch 1 after a 16-token prefill, no grad."""
    with torch.no_grad():
        _, state = mixer(torch.randn(1, 16, d_model, dtype=dtype))
        x1 = torch.randn(1, 1, d_model, dtype=dtype)
        _, state = mixer(x1, state)  # warm: a cache that grows (MLA) has taken its steady form
        counter = _OpCounter()
        with counter:
            mixer(x1, state)
    return counter.ops, counter.writes


def build(name: str, d_model: int, overrides: dict, dtype: torch.dtype) -> torch.nn.Module:
    """The bench's layer `name` at d_model, with each override applied where the mixer's Config has that field."""
    spec = dict(model_specs(name, d_model)[0][name])
    spec.pop("name")
    cls = get_mixer(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    # an impl the mixer lacks (MLA has no triton) leaves its default, like a field it lacks
    spec.update({k: v for k, v in overrides.items() if k in fields and (k != "impl" or v in cls.impls)})
    return build_mixer(name, d_model, **spec).to(dtype)


def per_token(name: str, d_model: int, seq_len: int, overrides: dict | None = None, dtype=torch.float32,
              autocast: torch.dtype | None = None, peak: bool = True) -> dict:
    """{"saved", "held", "peak": bytes per token, "largest": [(bytes/token, shape, dtype)], "decode": (ops, writes)}
    of one layer, each byte count the difference between batch 2 and batch 1 divided by seq_len."""
    torch.manual_seed(0)
    mixer = build(name, d_model, overrides or {}, dtype)
    res: dict = {}
    by_batch, peaks, held = {}, {}, {}
    for b in (1, 2):
        x = torch.randn(b, seq_len, d_model, dtype=dtype, requires_grad=True)
        by_batch[b] = saved_tensors(mixer, x, autocast)
        if peak:
            peaks[b], held[b] = forward_peak(mixer, x, autocast)
    total = {b: sum(n for n, _, _ in s.values()) for b, s in by_batch.items()}
    res["saved"] = (total[2] - total[1]) / seq_len
    if peak:
        res["peak"] = (peaks[2] - peaks[1]) / seq_len
        res["held"] = (held[2] - held[1]) / seq_len
    res["decode"] = decode_ops(mixer, d_model, dtype)
    res["largest"] = sorted(((n / (2 * seq_len), shape, dt) for n, shape, dt in by_batch[2].values()),
                            key=lambda r: -r[0])
    return res


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected key=value, e.g. --set impl=torch")
        low = value.lower()
        out[key] = (low == "true") if low in ("true", "false") else int(value) if value.lstrip("-").isdigit() else value
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mixers", default=",".join(MIXERS), help="comma-separated, from " + ",".join(MIXERS))
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="the weights' and input's dtype")
    ap.add_argument("--autocast", choices=["bf16", "fp16"], default=None, help="CPU autocast around the forward")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="mixer config override")
    ap.add_argument("--no-peak", action="store_true", help="skip the held / forward-peak pass (faster)")
    ap.add_argument("--detail", type=int, default=0, metavar="N", help="also list each mixer's N largest saved")
    args = ap.parse_args(argv)
    names = [m for m in args.mixers.split(",") if m]
    bad = [m for m in names if m not in MIXERS]
    if bad:
        raise SystemExit(f"--mixers: unknown {bad}; allowed: {', '.join(MIXERS)}")
    if args.d_model < 1 or args.seq_len < 1:
        raise SystemExit(f"--d-model={args.d_model} and --seq-len={args.seq_len} must be >= 1")
    overrides = parse_sets(args.set)
    autocast = DTYPES[args.autocast] if args.autocast else None
    head = f"d_model {args.d_model}, T {args.seq_len}, {args.dtype}"
    head += f", autocast {args.autocast}" if autocast else ""
    print(head + (f", overrides {overrides}" if overrides else "") + "; bytes per token per layer")
    print(f"{'mixer':8} {'saved':>10} {'held':>10} {'held/d':>7} {'fwd peak':>10} {'peak/d':>7} {'decode ops':>10}"
          f" {'writes':>7}")
    rows = {}
    for name in names:
        r = per_token(name, args.d_model, args.seq_len, overrides, DTYPES[args.dtype], autocast, not args.no_peak)
        rows[name] = r
        mem = (f"{r['held']:10.0f} {r['held'] / args.d_model:7.1f} {r['peak']:10.0f} {r['peak'] / args.d_model:7.1f}"
               if "peak" in r else f"{'-':>10} {'-':>7} {'-':>10} {'-':>7}")
        print(f"{name:8} {r['saved']:10.0f} {mem} {r['decode'][0]:10d} {r['decode'][1]:7d}", flush=True)
    for name in names if args.detail else []:
        print(f"\n{name}: largest saved tensors at batch 2 (bytes per token, shape, dtype)")
        for n, shape, dt in rows[name]["largest"][: args.detail]:
            print(f"  {n:10.0f}  {list(shape)}  {str(dt).replace('torch.', '')}")


if __name__ == "__main__":
    main()
