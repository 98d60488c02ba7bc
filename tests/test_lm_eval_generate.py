"""generate_until of the lm-eval model `arena` (arena/lm_eval_model.py) without a trained run: a batch stops as soon
as every row's output is settled (stop strings on the decoded text, <eod>), with the outputs of generating all
max_gen_toks tokens, and top_p sampling. A scripted model (each row writes a fixed byte script) counts its forwards;
a tiny random LanguageModel checks against full-length generation. CPU, fp32, a few seconds.

    python -m pytest -q tests/test_lm_eval_generate.py
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("lm_eval", reason="lm-eval is not installed: pip install -e '.[lm-eval]' (CI installs it)")

from arena.errors import ConfigError  # noqa: E402
from arena.lm_eval_model import ArenaLM  # noqa: E402
from arena.model import LanguageModel, ModelConfig  # noqa: E402
from arena.tasks.text import TextTokenizer  # noqa: E402

EOD = 256
FILLER = ord("~")  # what a scripted row writes after its script


class Scripted(LanguageModel):
    """Row b writes scripts[first byte of its prompt], one token per step, then FILLER; `forwards` records the
    token count of every forward (prefill, then 1 per decode step)."""

    def __init__(self, scripts: dict[str, bytes | list[int]]):
        super().__init__(ModelConfig(vocab_size=EOD + 1, d_model=32, n_layers=1), {"gdn": {"name": "gdn"}})
        self.scripts = {ord(key): list(value) for key, value in scripts.items()}
        self.forwards: list[int] = []

    def empty_states(self, batch_size, capacity, device=None):
        return None

    def forward(self, tokens, states=None):
        self.forwards.append(tokens.shape[1])
        if states is None:  # prefill: the prompt picks the script
            states = {"pos": 0, "rows": [self.scripts[t] for t in tokens[:, 0].tolist()]}
        pos = states["pos"]
        logits = torch.zeros(tokens.shape[0], tokens.shape[1], EOD + 1)
        for b, script in enumerate(states["rows"]):
            logits[b, -1, script[pos] if pos < len(script) else FILLER] = 1.0
        return logits, {"pos": pos + 1, "rows": states["rows"]}


def requests(*items: tuple[str, dict]):
    return [SimpleNamespace(args=(context, kwargs)) for context, kwargs in items]


def reference(new: list[int], until: list[str]) -> str:
    """The old behaviour, written out: all tokens, cut at <eod>, decoded, then `text.split(stop)[0]` per stop."""
    new = new[: new.index(EOD)] if EOD in new else new
    text = bytes(t for t in new if t < EOD).decode("utf-8", errors="replace")
    for stop in until:
        text = text.split(stop)[0] if stop else text
    return text


def scripted_run(scripts: dict, items, batch_size: int = 8, max_gen_toks: int = 32):
    """(outputs, forwards) of generate_until on a Scripted model; each item is (prompt, until)."""
    model = Scripted(scripts)
    lm = ArenaLM(model=model, tokenizer=TextTokenizer("byte"), seq_len=64, amp=None, batch_size=batch_size)
    out = lm.generate_until(requests(*[(prompt, {"until": until, "max_gen_toks": max_gen_toks})
                                       for prompt, until in items]), disable_tqdm=True)
    for (prompt, until), text in zip(items, out):  # every output equals the old full-length behaviour
        script = list(scripts[prompt[0]])
        assert text == reference((script + [FILLER] * max_gen_toks)[:max_gen_toks], until), (prompt, until)
    return out, model.forwards


def test_a_batch_stops_when_every_row_is_settled():
    """Rows settle at different steps (a stop string spanning two tokens at 4, <eod> at 4, '.' at 12): the batch
    runs 12 tokens (prefill + 11 steps), not 32, and every row keeps its own cut."""
    scripts = {"A": b"ab\n\ncdefgh", "B": b"hello world. more", "C": list(b"xyz") + [EOD] + list(b"qq.")}
    out, forwards = scripted_run(scripts, [("A?", ["\n\n"]), ("B?", ["."]), ("C?", ["\n"])])  # C: only <eod>
    assert out == ["ab", "hello world", "xyz"]
    assert forwards == [2] + [1] * 11
    # the row that settles last decides, wherever it is in the batch
    out, forwards = scripted_run(scripts, [("B?", ["."]), ("A?", ["\n\n"])])
    assert out == ["hello world", "ab"] and len(forwards) == 12


def test_no_stop_reached_runs_max_gen_toks():
    out, forwards = scripted_run({"A": b"abc"}, [("A!", ["\n\n", "zz"])], max_gen_toks=9)
    assert out == ["abc~~~~~~"] and len(forwards) == 9
    out, forwards = scripted_run({"A": b"abc"}, [("A!", [])], max_gen_toks=5)  # no stop strings, no <eod>
    assert out == ["abc~~"] and len(forwards) == 5


@pytest.mark.parametrize("script, until, text, tokens", [
    (b"aXYZ----", ["YZ", "XY"], "aX", 4),  # YZ, listed first, cuts before XY lies whole: XY alone would give "a"
    (b"aXYQ----", ["YZ", "XY"], "a", 4),  # after Q no YZ can start before XY's end: settled one token after XY
    (b"aXY-----", ["XY", "YZ"], "a", 3),  # the first stop of `until` settles as soon as it appears
    (b"abc.def.", [".", "abc.defg"], "abc", 4),  # a later stop cuts only within the text already cut
    ("xbcé----".encode(), ["cé", "bc"], "xb", 5),  # é is 2 bytes: the half-character U+FFFD does not count
    (b"0123456789", ["89", "0"], "", 2),  # 0 is settled once no 89 could start inside it
    (b"0123456789", ["56789", "34"], "012", 9),  # 34 waits until 56789 could only start after it
])
def test_stop_order_and_overlaps_give_the_full_length_output(script, until, text, tokens):
    """lm-eval cuts at each stop in turn (`split(stop)[0]`), so a stop listed earlier that is not yet complete can
    still change the output: the row settles only when none can; the tokens generated are checked exactly."""
    out, forwards = scripted_run({"S": script}, [("S", until)], max_gen_toks=12)
    assert out == [text] and len(forwards) == tokens


def tiny_model() -> LanguageModel:
    """A random byte LanguageModel; init_std 0.3 so logits are not flat, and the LM head rows of bytes >= 128
    and <eod> zeroed so it mostly writes ASCII (stop strings to find)."""
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=EOD + 1, d_model=32, n_layers=1, init_std=0.3),
                          {"gdn": {"name": "gdn"}}).eval()
    with torch.no_grad():
        model.lm_head.weight[128:] = 0.0
    return model


def test_unchanged_outputs_on_a_tiny_model_greedy_and_sampled():
    """A random LanguageModel on byte tokens: generate_until with stop strings taken from its own full-length
    generations equals cutting those generations (greedy, and sampled with top_k/top_p under one seed), in
    fewer forwards."""
    model = tiny_model()
    forwards = []
    model.register_forward_hook(lambda module, args, out: forwards.append(args[0].shape[1]))
    lm = ArenaLM(model=model, tokenizer=TextTokenizer("byte"), seq_len=64, amp=None, batch_size=4)
    prompts = ["The cat", "A dog s", "Numbers", "0123456"]  # one length: one batch
    prompt = torch.tensor([list(p.encode()) for p in prompts])
    for sampling in [{}, {"do_sample": True, "temperature": 1.0, "top_k": 50, "top_p": 0.9}]:
        torch.manual_seed(1)
        full = model.generate(prompt, 24, temperature=sampling.get("temperature", 0.0), top_k=sampling.get("top_k"),
                              top_p=sampling.get("top_p"))[:, 7:].tolist()
        # a stop string from each row's own text, at different depths: the first two characters from 2 + 3 i on
        # without U+FFFD (a random byte model also writes bytes that are no UTF-8)
        texts = [reference(row, []) for row in full]
        until = [[next(t[j: j + 2] for j in range(2 + 3 * i, len(t) - 1) if "\ufffd" not in t[j: j + 2])]
                 for i, t in enumerate(texts)]
        forwards.clear()
        torch.manual_seed(1)
        out = lm.generate_until(requests(*[(p, {"until": u, "max_gen_toks": 24, **sampling})
                                           for p, u in zip(prompts, until)]), disable_tqdm=True)
        assert out == [reference(row, u) for row, u in zip(full, until)], sampling
        assert len(forwards) < 24, f"{sampling}: the batch ran {len(forwards)} forwards, all 24 tokens"


def test_sampling_is_seeded_and_top_p_one_is_plain_sampling():
    lm = ArenaLM(model=tiny_model(), tokenizer=TextTokenizer("byte"), seq_len=64, amp=None, batch_size=4)

    def generate(seed, **kwargs):
        torch.manual_seed(seed)
        return lm.generate_until(requests(*[(p, {"until": ["\n"], "max_gen_toks": 16, "do_sample": True,
                                                 "temperature": 1.0, **kwargs}) for p in ["ab", "cd", "ef"]]),
                                 disable_tqdm=True)

    assert generate(3, top_p=0.8) == generate(3, top_p=0.8)
    assert generate(3, top_p=1.0) == generate(3) == generate(3, top_p="1")
    assert generate(3, top_p=0.8) != generate(3), "top_p = 0.8 should change some sample"
    greedy = lm.generate_until(requests(*[(p, {"until": ["\n"], "max_gen_toks": 16, "do_sample": False,
                                               "temperature": 1.0, "top_p": 0.5}) for p in ["ab", "cd", "ef"]]),
                               disable_tqdm=True)
    assert greedy == generate(3, top_p=1e-9), "do_sample=False stays greedy; a tiny nucleus is the argmax"


@pytest.mark.parametrize("top_p", [0, 1.5, "x", True, float("nan")])
def test_bad_top_p_fails_in_one_line(top_p):
    lm = ArenaLM(model=Scripted({"A": b"a"}), tokenizer=TextTokenizer("byte"), seq_len=64, amp=None)
    with pytest.raises(ConfigError, match=re.escape(f"top_p={top_p!r} must be a number in (0, 1]")) as err:
        lm.generate_until(requests(("A", {"do_sample": True, "temperature": 1.0, "top_p": top_p})))
    assert "\n" not in str(err.value)
