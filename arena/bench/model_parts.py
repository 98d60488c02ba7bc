"""The measurements of `python -m arena.bench model` (arena/bench/model.py): time box, timing, and the four parts.

    part_train / part_prefill / part_decode / part_cache(s, model, device, rows, base, deadline, ...)
each appends CSV rows (arena/bench/model_report.COLUMNS) for its lengths, shortest first, via `sweep`, which
records an OOM as "OOM (stops here)" and skips the longer lengths with the reason. Decode states are built at length
L directly (`decode_states`); `decode_runner` gives an eager step or the replay of a captured CUDA graph.
Run through `python -m arena.bench model`; tests: tests/test_bench_model.py.
"""

from __future__ import annotations

import gc
import math
import statistics
import time

# ------------------------------------------------------------------------------------------------ timing

WEIGHTS = {"train": 3.0, "prefill": 2.0, "decode": 3.0, "cache": 1.0}  # relative time shares of the parts


class Box:
    """The bench's time box: each (mixer, part) cell gets its weight's share of the budget left, so time a fast
    cell leaves over goes to the cells after it."""

    def __init__(self, budget_s: float, parts: list[str], n_mixers: int):
        self.end, self.weight_left = time.perf_counter() + budget_s, n_mixers * sum(WEIGHTS[p] for p in parts)
        HARD_END[0] = self.end

    def open_cell(self, part: str) -> float:
        now = time.perf_counter()
        share = max(self.end - now, 0.0) * WEIGHTS[part] / max(self.weight_left, 1e-9)
        self.weight_left -= WEIGHTS[part]
        return now + share


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def free(device) -> None:
    import torch

    if device.type == "cuda":  # only the CUDA caching allocator needs the garbage back before the next point
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


WARMUP_S = [0.0]  # seconds spent in warmup calls so far
CALLS_S = [0.0]  # sum of the median call time of every timed() so far
HARD_END = [math.inf]  # the whole bench's end (Box); no cell's deadline passes it
DEADLINE = [math.inf]  # the deadline of the point running now (sweep sets it; timed() cuts its repeats there)


def timed(fn, device, repeats: int) -> tuple[float, float]:
    """(median s, peak bytes) of fn() after one warmup call; fewer repeats when the time box is short."""
    import torch

    t0 = time.perf_counter()
    fn()
    sync(device)
    WARMUP_S[0] += time.perf_counter() - t0  # Triton compiles here: sweep leaves it out of its predictions
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() + times[-1] > DEADLINE[0]:
            break
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else math.nan
    CALLS_S[0] += statistics.median(times)
    return statistics.median(times), float(peak)


def sweep(lengths, measure, rows: list, base: dict, deadline: float, exponent: float, device) -> None:
    """Run measure(L) -> list of row dicts for each length, shortest first. The rest of the lengths get a row
    saying why they were skipped after an OOM, a failure, or when the least a length costs (a warmup call and one
    timed call of each timed() in it, from the last point's median calls scaled by (L / L_last) ** exponent) would
    pass the deadline. The cell's warmup calls (where Triton compiles) extend its deadline, up to the bench's end;
    timed() takes fewer repeats near it."""
    import torch

    stop, last, warm0 = None, None, WARMUP_S[0]
    for L in lengths:
        # the cell's warmup calls (Triton's first compiles among them) extend its deadline, not the bench's
        DEADLINE[0] = min(deadline + WARMUP_S[0] - warm0, HARD_END[0])
        if stop is None and last is not None:
            predicted = 2 * last[1] * (L / last[0]) ** exponent  # a warmup call and one timed call per timed()
            if time.perf_counter() + predicted > DEADLINE[0]:
                stop = f"skipped: time box (predicted {predicted:.0f} s at L={L})"
        if stop is not None:
            rows.append({**base, "L": L, "note": stop})
            continue
        c0 = CALLS_S[0]
        try:
            rows.extend({**base, "L": L, **r} for r in measure(L))
            last = (L, CALLS_S[0] - c0)
        except torch.cuda.OutOfMemoryError:
            rows.append({**base, "L": L, "note": "OOM (stops here)"})
            stop = f"skipped: after OOM at L={L}"
        except Exception as exc:  # a failing point must not lose the rest of the bench
            msg = " ".join(str(exc).split())[:120]
            if "out of memory" in msg.lower() or "ALLOC_FAILED" in msg:  # cuBLAS / Triton say it their own way
                rows.append({**base, "L": L, "note": f"OOM (stops here): {type(exc).__name__}: {msg}"})
                stop = f"skipped: after OOM at L={L}"
            else:
                rows.append({**base, "L": L, "note": f"error: {type(exc).__name__}: {msg}"})
                stop = f"skipped: after an error at L={L}"
        free(device)


# ------------------------------------------------------------------------------------------------ parts

def part_train(s, model, device, rows, base, deadline):
    import torch
    import torch.nn.functional as F

    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    model.train()

    def measure(T):
        B = max(1, s["train_tokens"] // T)
        x = torch.randint(0, s["vocab"], (B, T), device=device)
        y = torch.randint(0, s["vocab"], (B, T), device=device)

        def step():
            with torch.autocast(device.type, torch.bfloat16, enabled=cuda):
                logits, _ = model(x)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        sec, peak = timed(step, device, s["repeats"])
        return [{"batch": B, "mode": "train", "ms": sec * 1e3, "tokens_per_s": B * T / sec, "peak_mem_bytes": peak}]

    sweep(s["train_lens"], measure, rows, {**base, "part": "train"}, deadline, 1.0, device)
    model.zero_grad(set_to_none=True)


def part_prefill(s, model, device, rows, base, deadline, exponent):
    import torch

    dtype = next(model.parameters()).dtype

    def measure(L):
        x = torch.randint(0, s["vocab"], (1, L), device=device)

        def call():
            # autocast as in training, so attention runs in bf16 (SDPA's flash kernel): without it MLA's glue and
            # SDPA compute in fp32 (arena/mixers/mla.py)
            with torch.inference_mode(), torch.autocast(device.type, dtype, enabled=dtype != torch.float32):
                h, states = model.hidden_states(x)
                model.lm_head(h[:, -1:])  # a server scores only the last position

        sec, peak = timed(call, device, s["repeats"])
        return [{"batch": 1, "mode": "eager", "ms": sec * 1e3, "tokens_per_s": L / sec, "peak_mem_bytes": peak}]

    sweep(s["prefill_lens"], measure, rows, {**base, "part": "prefill"}, deadline, exponent, device)


def decode_states(model, B: int, L: int, capacity: int, device):
    """Every layer's state as after L tokens (module docstring): recurrent states from an 8-token prefill, MLA's
    latent cache a random buffer of `capacity` >= L slots whose first L are the cache."""
    import torch

    with torch.inference_mode():
        _, states = model.hidden_states(torch.zeros(B, 8, dtype=torch.long, device=device),
                                        model.empty_states(B, 8, device))
        for i, st in enumerate(states):
            if "c_kv_buffer" in st:
                dt, R, Kr = st["c_kv_buffer"].dtype, st["c_kv_buffer"].shape[-1], st["k_rope_buffer"].shape[-1]
                c = torch.randn(B, capacity, R, dtype=dt, device=device)
                k = torch.randn(B, capacity, Kr, dtype=dt, device=device)
                states[i] = {"c_kv": c[:, :L], "k_rope": k[:, :L], "c_kv_buffer": c, "k_rope_buffer": k}
    return states


def decode_step(model, states, B, device, in_place: bool):
    """One decode step (greedy token fed back) as a function of nothing: `in_place` copies the new recurrent states
    back into `states`' tensors (the form a CUDA graph can replay), else the step moves on to the new states."""
    import torch

    tok = torch.zeros(B, 1, dtype=torch.long, device=device)
    holder = [states]

    def step():
        with torch.inference_mode():
            logits, new = model(tok, holder[0])
            tok.copy_(logits[:, -1].argmax(-1, keepdim=True))
            if not in_place:
                holder[0] = new
                return
            for st, nw in zip(holder[0], new):
                for key in st:
                    # MLA wrote its slot into the buffer in place; its length-(L + 1) view stays as captured
                    if st[key].shape == nw[key].shape and st[key].data_ptr() != nw[key].data_ptr():
                        st[key].copy_(nw[key])

    step.holder = holder  # the states the step continues from (tests read them)
    return step


def decode_runner(model, states, B, device, graph: bool):
    """A function running one decode step, eager or replaying a captured CUDA graph of the in-place step."""
    import torch

    step = decode_step(model, states, B, device, in_place=graph)
    if not graph:
        return step
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    return g.replay


def layer_step(mixer, B: int, device, act_dtype):
    """(fn, floor bytes, state bytes) of one recurrent layer's state update alone at batch B, on random inputs of
    the shapes and dtypes its decode step feeds it: KDA / GDN the op run_delta_rule picks (the fused Triton step on
    CUDA), Mamba2 the op its T = 1 path picks (fused_recurrent_ssd_decode_step where the Triton SSD runs, else
    ssd_decode_step), in fp32 as its step computes. Floor: the inputs and the state read once, the state and o
    written once. None for a layer without a recurrent state (MLA)."""
    import torch

    if hasattr(mixer, "qkv"):  # KDA / GDN: q, k, v in the activation dtype; g, beta and the state fp32
        from arena.mixers.delta_rule import _fast_decode

        H, K, V = mixer.H, mixer.K, mixer.V
        q, k = (torch.nn.functional.normalize(torch.randn(B, H, K, device=device), dim=-1).to(act_dtype)
                for _ in range(2))
        v = torch.randn(B, H, V, device=device, dtype=act_dtype)
        g = -torch.rand(*((B, H, K) if mixer.registry_name == "kda" else (B, H)), device=device) * 0.1
        beta, S = torch.rand(B, H, device=device), torch.randn(B, H, K, V, device=device) * 0.01
        with torch.inference_mode():
            fast = _fast_decode(mixer.cfg.impl, q)
        if fast:
            from arena.kernels.triton_delta.recurrent import fused_recurrent_decode_step as op
        else:
            op = mixer.DECODE_STEP
        inputs, o_bytes = (q, k, v, g, beta), B * H * V * act_dtype.itemsize
    elif hasattr(mixer, "nheads"):  # Mamba2: its step computes in fp32
        from arena.kernels.ssd import ssd_decode_step as op

        H, N, P = mixer.nheads, mixer.cfg.d_state, mixer.cfg.headdim
        q, k, v = torch.randn(B, H, N, device=device), torch.randn(B, H, N, device=device), \
            torch.randn(B, H, P, device=device)
        with torch.inference_mode():
            if mixer._triton_decode(torch.empty(1, 1, 1, device=device, dtype=act_dtype)):
                from arena.kernels.ssd.recurrent import fused_recurrent_ssd_decode_step as op
        g, S = -torch.rand(B, H, device=device) * 0.1, torch.randn(B, H, N, P, device=device) * 0.01
        inputs, o_bytes = (q, k, v, g), B * H * P * 4
    else:
        return None
    state = S.numel() * S.element_size()

    def fn():
        with torch.inference_mode():
            op(*inputs, S)

    return fn, sum(t.numel() * t.element_size() for t in inputs) + 2 * state + o_bytes, state


def part_decode(s, model, device, rows, base, deadline, bandwidth, act_bytes):
    import torch

    from arena.bench import model_report as mr

    has_mla = any(hasattr(b.mixer, "kv_a_proj") for b in model.blocks)
    modes = ["eager"] + (["graph"] if device.type == "cuda" and s["graphs"] != "off" else [])
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) - \
        model.embed.weight.numel() * model.embed.weight.element_size()  # one embedding row is read, not the table
    steps = s["steps"] * (s["repeats"] + 4) + 8  # cache slots the timed and warmup steps will write

    def max_batch(L):
        if device.type != "cuda":  # no allocator to ask: the cap
            return s["decode_batch_cap"]
        held = mr.model_cache_bytes(model, L + steps, act_bytes)[0]
        b = max(1, min(s["decode_batch_cap"], int(0.6 * torch.cuda.mem_get_info()[0] // max(held, 1))))
        return 1 << (b.bit_length() - 1)

    def one(B, L, held, written) -> list[dict]:
        """Rows of every mode at batch B; a mode that fails (not for memory) gets a note and the others go on."""
        out = []
        states = decode_states(model, B, L, L + steps, device)
        for mode in modes:
            try:
                fn = decode_runner(model, states, B, device, mode == "graph")

                def window(fn=fn):
                    for _ in range(s["steps"]):
                        fn()

                sec, peak = timed(window, device, s["repeats"])
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:  # e.g. a step that cannot be captured in a CUDA graph
                out.append({"batch": B, "mode": mode, "note": f"{mode} failed: {type(exc).__name__}: "
                                                              f"{' '.join(str(exc).split())[:80]}"})
                continue
            ms = sec * 1e3 / s["steps"]
            fl = mr.decode_floor_bytes(weights, B, held, written) / bandwidth * 1e3
            out.append({"batch": B, "mode": mode, "ms": ms, "tokens_per_s": B / ms * 1e3, "peak_mem_bytes": peak,
                        "cache_bytes": held, "floor_ms": fl, "floor_frac": fl / ms})
        return out

    def measure(L):
        out, done, ran = [], set(), []
        held, written = mr.model_cache_bytes(model, L, act_bytes)
        for batch in s["decode_batches"]:
            B = max_batch(L) if batch == "max" else batch
            while B not in done:  # "max" may come out at a batch already run
                done.add(B)
                try:
                    out.extend(one(B, L, held, written))
                    ran.append(B)
                except torch.cuda.OutOfMemoryError:
                    free(device)
                    if not out:  # nothing fits at this length: the sweep records where the mixer stops
                        raise
                    if batch == "max" and B > 1:
                        B //= 2  # the analytic fit left too little room for the step's work: halve
                        continue
                    out.append({"batch": B, "mode": "eager", "note": "OOM (stops here)"})
        recurrent = next((blk.mixer for blk in model.blocks if not hasattr(blk.mixer, "kv_a_proj")), None)
        if L == s["decode_lens"][0] and recurrent is not None:  # the state, hence this step, does not depend on L
            for B in ran:
                fn, nbytes, state = layer_step(recurrent, B, device, next(model.parameters()).dtype)

                def window(fn=fn):
                    for _ in range(s["steps"]):
                        fn()

                ms = timed(window, device, s["repeats"])[0] * 1e3 / s["steps"]
                fl = nbytes / bandwidth * 1e3
                out.append({"batch": B, "mode": "layer_step", "ms": ms, "tokens_per_s": B / ms * 1e3,
                            "cache_bytes": state // B, "floor_ms": fl, "floor_frac": fl / ms})
        return out

    # a recurrent step does not depend on L; MLA's grows with L once reading its cache dominates
    exponent = 1.0 if has_mla else 0.1
    sweep(s["decode_lens"], measure, rows, {**base, "part": "decode"}, deadline, exponent, device)


def part_cache(s, model, device, rows, base, deadline, act_bytes):
    import torch

    from arena.bench import model_report as mr

    def measure(L):
        free(device)
        before = torch.cuda.memory_allocated() if device.type == "cuda" else 0
        states = decode_states(model, 1, L, L, device)
        sync(device)
        measured = torch.cuda.memory_allocated() - before if device.type == "cuda" else mr.state_tensor_bytes(states)
        return [{"batch": 1, "mode": "analytic", "cache_bytes": mr.model_cache_bytes(model, L, act_bytes)[0],
                 "cache_bytes_measured": measured}]

    sweep(s["decode_lens"], measure, rows, {**base, "part": "cache"}, deadline, 1.0, device)


def copy_bandwidth(device) -> float:
    """Bytes/s of a 1 GiB device-to-device copy (read + write), median of 5; NaN off CUDA (no floor there)."""
    import torch

    if device.type != "cuda":
        return math.nan
    src = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    del src, dst
    free(device)
    return 2 * (1 << 30) / (statistics.median(times) * 1e-3)
