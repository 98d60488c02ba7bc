"""Decoding as a real path: `LanguageModel.generate` (prefill, then one T = 1 step per token with every layer's
state) against the full-sequence forward, for every registered mixer and the 3:1 KDA/MLA-NoPE hybrid, plus MLA's
preallocated latent cache and absorbed decode step. fp32 on CPU, tiny models.

Run: python -m pytest -q tests/test_generate.py
"""

from __future__ import annotations

import pytest
import torch

from arena.errors import ConfigError
from arena.mixers import build_mixer
from arena.model import LanguageModel, ModelConfig
from arena.testing import assert_close

VOCAB, D = 37, 32
SPECS = {
    "kda": {"name": "kda"}, "gdn": {"name": "gdn"}, "mamba2": {"name": "mamba2"},
    "mla": {"name": "mla"}, "mla_nope": {"name": "mla", "rope": False},
    "mla_conv": {"name": "mla", "rope": False, "conv_size": 4},  # MLA-NoPE behind a short conv (a reference)
}
LAYOUTS = {name: [name] for name in SPECS} | {"hybrid": ["kda", "kda", "kda", "mla_nope"]}


def make_model(layout: list[str], seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    # init_std 0.3, not 0.02: a 0.02 model's logits are nearly flat, so argmax would hinge on rounding noise
    cfg = ModelConfig(vocab_size=VOCAB, d_model=D, n_layers=len(layout), layout=layout, mlp_ratio=2.0, init_std=0.3)
    return LanguageModel(cfg, SPECS).eval()


def prompt_batch(B: int = 3, T0: int = 13, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (B, T0), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layout", list(LAYOUTS), ids=list(LAYOUTS))
def test_greedy_generation_equals_full_forward_argmax(layout):
    """Each decode step's logits == the full forward's last-position logits over prompt + generated so far, and
    each generated token is their argmax (batch 3, prompt 13: not a multiple of any chunk size)."""
    model = make_model(LAYOUTS[layout])
    prompt = prompt_batch()
    new = 6
    tokens, logits = model.generate(prompt, new, return_logits=True)
    assert tokens.shape == (3, 13 + new) and tokens.dtype == torch.int64 and logits.shape == (3, new, VOCAB)
    assert torch.equal(tokens[:, :13], prompt)
    with torch.no_grad():
        for i in range(new):
            full, _ = model(tokens[:, : 13 + i])  # no state: one parallel pass over the whole prefix
            assert_close(f"{layout} step {i} logits", full[:, -1], logits[:, i], 1e-5)
            assert torch.equal(full[:, -1].argmax(-1), tokens[:, 13 + i]), f"{layout}: token {i} is not the argmax"
    assert len(set(tokens[:, 13:].flatten().tolist())) > 1, "degenerate test: every generated token is the same"


def test_generation_across_a_chunk_boundary():
    """Prompt 59 + 8 new tokens crosses the 64-token chunk of the chunked kernels during decoding."""
    model = make_model(LAYOUTS["hybrid"])
    prompt = prompt_batch(B=2, T0=59)
    tokens, logits = model.generate(prompt, 8, return_logits=True)
    with torch.no_grad():
        full, _ = model(tokens[:, :-1])
    assert_close("hybrid logits past the chunk", full[:, 58:], logits, 1e-5)


@pytest.mark.parametrize("layout", ["mla", "kda"])
def test_sampling_is_reproducible_and_top1_is_greedy(layout):
    model = make_model(LAYOUTS[layout])
    prompt = prompt_batch()

    def sample(seed, **kw):
        return model.generate(prompt, 10, temperature=1.5, generator=torch.Generator().manual_seed(seed), **kw)

    first, again, other = sample(0), sample(0), sample(1)
    assert torch.equal(first, again)
    assert not torch.equal(first, other), "different seeds should sample differently"
    assert not torch.equal(first, model.generate(prompt, 10)), "temperature 1.5 should leave the greedy path"
    assert torch.equal(sample(0, top_k=1), model.generate(prompt, 10))
    # top_k = 2 only ever picks one of the two most likely tokens of each step
    tokens, logits = model.generate(prompt, 10, temperature=1.5, top_k=2, generator=torch.Generator().manual_seed(3),
                                    return_logits=True)
    top2 = logits.topk(2, dim=-1).indices  # [B, new, 2]
    assert (top2 == tokens[:, 13:, None]).any(-1).all()


def nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Reference nucleus of each row of logits [N, vocab] (already divided by the temperature): the fewest most
    likely tokens whose probabilities sum to >= top_p, as a bool mask [N, vocab]; one row at a time, in float64."""
    keep = torch.zeros(logits.shape, dtype=torch.bool)
    for n, row in enumerate(logits.double().softmax(-1)):
        total = 0.0
        for token in row.argsort(descending=True).tolist():
            keep[n, token] = True
            total += float(row[token])
            if total >= top_p:
                break
    return keep


def test_top_p_samples_within_the_nucleus_and_top_p_one_is_plain_sampling():
    model = make_model(["kda"])
    prompt = prompt_batch()

    def sample(seed, n=24, **kw):
        return model.generate(prompt, n, temperature=1.5, generator=torch.Generator().manual_seed(seed), **kw)

    assert torch.equal(sample(0, top_p=0.6), sample(0, top_p=0.6)), "a seed must fix the sample"
    assert torch.equal(sample(5, top_p=1.0), sample(5)), "top_p = 1 must be plain sampling, draw for draw"
    assert torch.equal(sample(5, top_p=1e-6), model.generate(prompt, 24)), "a tiny nucleus is the argmax alone"
    tokens, logits = sample(7, top_p=0.6, return_logits=True)
    keep = nucleus(logits.reshape(-1, VOCAB) / 1.5, 0.6)  # [B * new, vocab]
    assert keep.sum(-1).min() >= 1 and keep.sum(-1).max() >= 3, "the test needs nuclei of several tokens"
    picked = tokens[:, 13:].reshape(-1)
    assert keep[torch.arange(len(picked)), picked].all(), "a token outside the top-p nucleus was sampled"
    # and plain sampling of the same logits does leave the nucleus: the check above has teeth
    plain, plain_logits = sample(7, return_logits=True)
    plain_keep = nucleus(plain_logits.reshape(-1, VOCAB) / 1.5, 0.6)
    assert not plain_keep[torch.arange(len(picked)), plain[:, 13:].reshape(-1)].all()
    # top_k then top_p: the nucleus of the top-2 renormalized distribution
    tokens, logits = sample(8, top_k=2, top_p=0.6, return_logits=True)
    top2 = (logits / 1.5).topk(2, dim=-1)
    cut = torch.full_like(logits, float("-inf")).scatter(-1, top2.indices, top2.values).reshape(-1, VOCAB)
    assert nucleus(cut, 0.6)[torch.arange(len(picked)), tokens[:, 13:].reshape(-1)].all()


def test_stop_ends_generation_early_with_the_same_tokens():
    """`stop` sees each step's new tokens [B, 1] in order; True ends generation there: the tokens so far equal
    the full generation's, and no forward runs for the token that stopped it (prefill + 3 steps for 4 tokens)."""
    model = make_model(["mla"])
    prompt = prompt_batch()
    full = model.generate(prompt, 10)
    seen, forwards = [], []
    hook = model.register_forward_hook(lambda module, args, out: forwards.append(args[0].shape[1]))
    try:
        out = model.generate(prompt, 10, stop=lambda token: seen.append(token.clone()) or len(seen) == 4)
    finally:
        hook.remove()
    assert torch.equal(out, full[:, :17]) and torch.equal(torch.cat(seen, 1), full[:, 13:17])
    assert forwards == [13, 1, 1, 1]
    assert torch.equal(model.generate(prompt, 10, stop=lambda token: False), full)


def test_generate_restores_training_mode_and_zero_new_tokens():
    model = make_model(["mla"]).train()
    prompt = prompt_batch()
    assert torch.equal(model.generate(prompt, 0), prompt)
    assert model.training


@pytest.mark.parametrize("kwargs,match", [
    (dict(prompt=torch.zeros(3, dtype=torch.int64)), "prompt must be an int64 tensor"),
    (dict(prompt=torch.zeros(2, 4)), "prompt must be an int64 tensor"),
    (dict(prompt=torch.full((2, 4), VOCAB)), r"prompt token ids must lie in \[0, 37\)"),
    (dict(max_new_tokens=-1), "max_new_tokens=-1 must be an integer >= 0"),
    (dict(max_new_tokens=2.0), "max_new_tokens=2.0 must be an integer"),
    (dict(temperature=-0.5), "temperature=-0.5 must be a finite number >= 0"),
    (dict(temperature=float("nan")), "temperature=nan must be"),
    (dict(temperature=1.0, top_k=0), r"top_k=0 must be None or an integer in \[1, 37\]"),
    (dict(temperature=1.0, top_k=VOCAB + 1), "top_k=38 must be"),
    (dict(temperature=1.0, generator=0), "generator must be a torch.Generator"),
    (dict(temperature=1.0, top_p=0.0), r"top_p=0.0 must be None or a number in \(0, 1\]"),
    (dict(temperature=1.0, top_p=1.5), "top_p=1.5 must be"),
    (dict(temperature=1.0, top_p=True), "top_p=True must be"),
    (dict(stop=3), "stop must be None or a callable"),
], ids=["1d", "float", "oov", "neg-new", "float-new", "neg-temp", "nan-temp", "topk0", "topk-big", "generator",
        "topp0", "topp-big", "topp-bool", "stop"])
def test_bad_arguments_fail_in_one_line(kwargs, match):
    model = make_model(["kda"])
    args = dict(prompt=prompt_batch(), max_new_tokens=3) | kwargs
    with pytest.raises(ValueError, match=match) as err:
        model.generate(args.pop("prompt"), args.pop("max_new_tokens"), **args)
    assert isinstance(err.value, ConfigError) and "\n" not in str(err.value)


@pytest.mark.parametrize("rope", [True, False], ids=["rope", "nope"])
def test_mla_absorbed_step_equals_plain_step(rope):
    """The absorbed T = 1 step (scores against c_kv via q_nope W_UK, output via W_UV) == up-projecting the cache."""
    m = build_mixer("mla", D, rope=rope, q_lora_rank=24).eval()
    for p in m.parameters():  # non-trivial norm weights as well
        torch.nn.init.normal_(p, mean=1.0 if p.dim() == 1 else 0.0, std=0.3)
    x = torch.randn(3, 17, D)
    with torch.no_grad():
        _, state = m(x[:, :11])
        for t in range(11, 17):
            m.absorb_decode = False
            y_plain, s_plain = m(x[:, t: t + 1], state)
            m.absorb_decode = True
            y_abs, state = m(x[:, t: t + 1], state)
            assert_close(f"absorbed step at {t}", y_plain, y_abs, 1e-5)
            for key in ("c_kv", "k_rope"):
                torch.testing.assert_close(state[key], s_plain[key], rtol=0, atol=0)
        y_full, _ = m(x)
    assert_close("absorbed decode vs parallel", y_full[:, -1:], y_abs, 1e-5)


def test_mla_cache_is_preallocated_and_written_in_place():
    """empty_state allocates [B, capacity, *] once; prefill and each step write their slots in place (the
    buffer's data_ptr never moves within capacity), RoPE positions follow the cache length, and past the
    capacity the buffer doubles."""
    m = build_mixer("mla", D).eval()
    x = torch.randn(2, 16, D)
    with torch.no_grad():
        y_full, ref = m(x)
        state = m.empty_state(2, capacity=12)
        assert state["c_kv"].shape == (2, 0, m.R) and state["c_kv_buffer"].shape == (2, 12, m.R)
        ptrs = (state["c_kv_buffer"].data_ptr(), state["k_rope_buffer"].data_ptr())
        ys = []
        y, state = m(x[:, :9], state)
        ys.append(y)
        for t in range(9, 16):
            y, state = m(x[:, t: t + 1], state)
            ys.append(y)
            assert state["c_kv"].shape == (2, t + 1, m.R) and state["k_rope"].shape == (2, t + 1, m.Kr)
            moved = (state["c_kv_buffer"].data_ptr(), state["k_rope_buffer"].data_ptr()) != ptrs
            assert moved == (t + 1 > 12), f"after {t + 1} tokens the buffer {'moved' if moved else 'stayed'}"
            assert state["c_kv"].data_ptr() == state["c_kv_buffer"].data_ptr(), "c_kv must view the buffer"
    assert state["c_kv_buffer"].shape[1] == 24  # doubled once past capacity 12
    assert_close("preallocated decode vs parallel", y_full, torch.cat(ys, dim=1), 1e-5)
    for key in ("c_kv", "k_rope"):
        assert_close(f"cache {key}", ref[key], state[key], 1e-6)
    assert m.state_size(16) == state["c_kv"][0].numel() + state["k_rope"][0].numel()
