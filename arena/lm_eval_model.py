"""The lm-eval model type `arena`: an arena LanguageModel (a task=text run) behind lm-eval's LM interface.

    python -m arena.lm_eval --model arena --model_args run_dir=results/runs/<date>/<run> --tasks lambada_openai
    # from Python (arena/lm_eval.py registers the type on import):
    from arena.lm_eval_model import ArenaLM
    lm = ArenaLM(run_dir="results/runs/<date>/<run>", device="cuda", batch_size=32)
    lm_eval.simple_evaluate(model=lm, tasks=["lambada_openai"])

Importing this module needs lm-eval (`pip install -e '.[lm-eval]'`) and registers the class as `arena` in lm-eval's
model registry. model_args: run_dir (required unless a model is passed from Python), device (auto | cpu | cuda[:n]),
batch_size (an integer), max_length (tokens per forward; default: the run's training seq_len), precision (auto =
bf16 autocast on CUDA, fp32 on CPU; or fp32 | bf16). lm-eval's own --device and --batch_size flags set the same.

The three request types:
- loglikelihood: context + continuation in one causal forward, right-padded to the longest of the batch (a causal
  model's outputs at the real positions do not see the padding after them), sorted longest first; the sum of the
  continuation's log-probabilities and whether each of its tokens is the argmax. An input longer than max_length + 1
  keeps its last max_length + 1 tokens (the context is cut from the left).
- loglikelihood_rolling: lm-eval's rolling windows of max_length tokens (lm_eval.utils.get_rolling_token_windows,
  context_len=1, <eod> as the prefix), each window scored from an empty state, summed per document.
- generate_until: LanguageModel.generate (one prefill, then token steps carrying each layer's cache or state),
  batched over requests whose contexts have the same token count and the same generation settings (left padding
  would run pad tokens through a recurrent state); greedy unless do_sample with temperature > 0 (then top_k and
  top_p apply); at most max_gen_toks tokens (default 256). The text is cut at <eod>, then at each stop string of
  `until` in turn (lm-eval's Hugging Face model: `text.split(stop)[0]`). A batch stops early once every row's cut
  is settled (_StopWatch: checked on the decoded text, so a stop string may span tokens), with the same output
  as generating all max_gen_toks tokens.
Tests: tests/test_lm_eval.py, tests/test_lm_eval_generate.py (generate_until: early stop, top_p).
"""

from __future__ import annotations

import logging
from pathlib import Path

import lm_eval.models  # noqa: F401  lm-eval fills its registry only when it is empty: keep its own models listed
import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import model_registry
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm.auto import tqdm

from arena.errors import ConfigError

log = logging.getLogger(__name__)
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default for generate_until tasks that do not set max_gen_toks


def _int_arg(key: str, value, low: int) -> int:
    """A model_args integer (lm-eval passes them as strings from the command line)."""
    try:
        number = int(value)
        if isinstance(value, bool) or number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        number = None
    if number is None or number < low:
        raise ConfigError(f"lm-eval model arena: {key}={value!r} must be an integer >= {low}")
    return number


def _top_p_arg(value) -> float | None:
    """A generation kwarg top_p as a float in (0, 1), or None for no nucleus cut (None or 1)."""
    try:
        number = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = None
    if value is not None and (number is None or not 0 < number <= 1):
        raise ConfigError(f"lm-eval model arena: top_p={value!r} must be a number in (0, 1] (1 = no nucleus cut)")
    return None if value is None or number == 1 else number


class ArenaLM(TemplateLM):
    """An arena LanguageModel and its TextTokenizer as an lm-eval LM (model type `arena`)."""

    def __init__(self, run_dir: str | None = None, device: str | None = None, batch_size=16, max_length=0,
                 precision: str = "auto", max_batch_size=None, *, model=None, tokenizer=None,
                 seq_len: int | None = None, amp: torch.dtype | None = None, **unused):
        """From a run dir (model_args), or from Python with `model` (a LanguageModel), `tokenizer` (a TextTokenizer),
        `seq_len` (its training length) and `amp` (autocast dtype or None): what arena.train passes at the end of a
        run. `max_batch_size` (lm-eval passes it) is unused: the batch size is fixed."""
        super().__init__()
        from arena.train import autocast_dtype, resolve_device

        if unused:
            raise ConfigError(f"lm-eval model arena: unknown model_args {', '.join(sorted(unused))}; valid: run_dir, "
                              "device, batch_size, max_length, precision")
        if batch_size == "auto" or (isinstance(batch_size, str) and batch_size.startswith("auto")):
            raise ConfigError(f"lm-eval model arena: batch_size={batch_size!r}: give an integer (auto is not "
                              "supported)")
        self.batch_size = _int_arg("batch_size", batch_size, 1)
        if model is None:
            if not run_dir:
                raise ConfigError("lm-eval model arena: model_args run_dir=<run dir of a task=text run with a "
                                  "checkpoint> is required")
            from arena.checkpoint import load, load_tokenizer, read_meta

            if device and str(device).startswith("cuda") and not torch.cuda.is_available():
                # lm-eval's command line passes --device cuda:0 unless told otherwise, also on a CPU-only machine
                log.warning("lm-eval model arena: device=%s but no CUDA device is visible; running on the CPU", device)
                device = "cpu"
            self._device = resolve_device(device or "auto")
            model, tokenizer = load(run_dir, self._device), load_tokenizer(run_dir)
            seq_len = read_meta(run_dir).get("seq_len") or _config_seq_len(run_dir)
            amp = autocast_dtype(precision, self._device)
        else:
            self._device = next(model.parameters()).device
        self.model, self.tokenizer_ = model.eval(), tokenizer
        if tokenizer.eod >= model.cfg.vocab_size:
            raise ConfigError(f"lm-eval model arena: the tokenizer's <eod> id {tokenizer.eod} is outside the model's "
                              f"vocabulary ({model.cfg.vocab_size})")
        self._max_length = _int_arg("max_length", max_length, 0) or seq_len
        if not self._max_length:
            raise ConfigError("lm-eval model arena: the run records no training seq_len; pass max_length=<tokens>")
        self.amp = amp

    # --- what TemplateLM asks for -------------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer_.eod  # <eod>: the separator the model saw between documents, so a document's start

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return f"arena-{self.tokenizer_.name}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer_.encode(string)

    def tok_decode(self, tokens) -> str:
        return self.tokenizer_.decode(tokens)

    # --- scoring ------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _score(self, inputs: list[list[int]], targets: list[list[int]]) -> list[tuple[float, bool]]:
        """One right-padded forward over `inputs` (each at most max_length tokens); row i's last len(targets[i])
        positions predict targets[i]: (summed log-probability, every target token the argmax)."""
        B, T = len(inputs), max(map(len, inputs))
        tokens = torch.zeros(B, T, dtype=torch.int64)  # pad id 0: never read (causal, padding comes after)
        for i, row in enumerate(inputs):
            tokens[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
        tokens = tokens.to(self._device)
        with torch.autocast(self._device.type, dtype=self.amp, enabled=self.amp is not None):
            hidden, _ = self.model.hidden_states(tokens)  # [B, T, D]
            # the LM head only on the scored rows: [B, T, vocab] would be large for a big vocabulary
            picked = torch.cat([hidden[i, len(row) - len(tgt): len(row)] for i, (row, tgt)
                                in enumerate(zip(inputs, targets))])  # [S, D]
            logits = self.model.lm_head(picked)
        logprobs = F.log_softmax(logits.float(), dim=-1)  # [S, vocab]
        flat = torch.tensor([t for tgt in targets for t in tgt], dtype=torch.int64, device=logprobs.device)
        chosen = logprobs.gather(1, flat[:, None])[:, 0].cpu()  # [S]
        greedy = (logprobs.argmax(-1) == flat).cpu()
        out, start = [], 0
        for tgt in targets:
            end = start + len(tgt)
            out.append((float(chosen[start:end].sum()), bool(greedy[start:end].all())))
            start = end
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: ((context, continuation) or None, context ids, continuation ids) -> (log-prob, is_greedy)."""
        rows = []
        for index, (key, context, continuation) in enumerate(requests):
            if not continuation:
                raise ConfigError(f"lm-eval model arena: an empty continuation for {key!r} (nothing to score)")
            if len(continuation) > self.max_length:
                raise ConfigError(f"lm-eval model arena: a continuation of {len(continuation)} tokens is longer "
                                  f"than max_length={self.max_length}; raise max_length")
            whole = (context + continuation)[-(self.max_length + 1):]  # context cut from the left to fit
            rows.append((index, whole[:-1], continuation))
        rows.sort(key=lambda r: -len(r[1]))  # longest first: similar lengths share a batch, less padding
        results: list = [None] * len(requests)
        for start in tqdm(range(0, len(rows), self.batch_size), disable=disable_tqdm, desc="arena loglikelihood"):
            batch = rows[start: start + self.batch_size]
            for (index, _, _), answer in zip(batch, self._score([r[1] for r in batch], [r[2] for r in batch])):
                results[index] = answer
                key = requests[index][0]
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, answer)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each document's total log-likelihood over lm-eval's disjoint rolling windows of max_length tokens."""
        windows, owner = [], []
        for index, (string,) in enumerate(req.args for req in requests):
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, context, continuation))
                owner.append(index)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        totals = [0.0] * len(requests)
        for index, (logprob, _) in zip(owner, scores):
            totals[index] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # --- generation ---------------------------------------------------------------------------------------------
    def _generation_settings(self, gen_kwargs: dict) -> tuple[list[str], int, float, int | None, float | None]:
        """(stop strings, max_gen_toks, temperature (0 = greedy), top_k, top_p) from a request's generation kwargs;
        top_k and top_p are None when greedy or unrestricted."""
        kwargs = dict(gen_kwargs or {})
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_gen_toks = _int_arg("max_gen_toks", kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS), 1)
        do_sample = bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        top_k = kwargs.pop("top_k", None)
        top_p = kwargs.pop("top_p", None)
        if kwargs:
            log.warning("lm-eval model arena: ignoring generation kwargs %s", sorted(kwargs))
        if not do_sample or temperature <= 0:
            return until, max_gen_toks, 0.0, None, None
        return until, max_gen_toks, temperature, None if top_k is None else int(top_k), _top_p_arg(top_p)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Continuations through LanguageModel.generate, cut at <eod> and at the stop strings; a batch ends as soon
        as every row's output is settled (_StopWatch)."""
        groups: dict[tuple, list[int]] = {}
        prepared = []
        for index, req in enumerate(requests):
            context, gen_kwargs = req.args
            until, max_gen_toks, temperature, top_k, top_p = self._generation_settings(gen_kwargs)
            ids = self.tok_encode(context) or [self.eot_token_id]  # an empty context starts a document
            ids = ids[-max(1, self.max_length - max_gen_toks):]  # room for the generated tokens, as lm-eval's HF LM
            prepared.append((ids, [stop for stop in until if stop]))  # '' never cuts (lm-eval ignores it too)
            groups.setdefault((len(ids), max_gen_toks, temperature, top_k, top_p), []).append(index)
        results: list = [None] * len(requests)
        batches = [(key, members[i: i + self.batch_size]) for key, members in groups.items()
                   for i in range(0, len(members), self.batch_size)]
        for (_, max_gen_toks, temperature, top_k, top_p), members in tqdm(batches, disable=disable_tqdm,
                                                                          desc="arena generate_until"):
            prompt = torch.tensor([prepared[i][0] for i in members], dtype=torch.int64, device=self._device)
            watch = _StopWatch([prepared[i][1] for i in members], self.tok_decode, self.eot_token_id)
            with torch.autocast(self._device.type, dtype=self.amp, enabled=self.amp is not None):
                self.model.generate(prompt, max_gen_toks, temperature=temperature, top_k=top_k, top_p=top_p,
                                    stop=watch)
            for row, i in enumerate(members):
                results[i] = text = watch.output(row)
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return results


def cut_at_stops(text: str, until: list[str]) -> str:
    """`text` cut at each stop string of `until` in turn, as lm-eval's Hugging Face model does
    (`text.split(stop)[0]` per stop): a later stop cuts only where it lies wholly before the earlier cuts."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


class _StopWatch:
    """`LanguageModel.generate`'s `stop` for one generate_until batch: keeps each row's new tokens and says stop
    once every row's output is settled, i.e. no further token could change it:
    - the row produced <eod> (the text is cut there), or
    - the first stop string of `until` (in its order) found in the decoded text, at its first occurrence ending
      at character e of L decoded, has e <= L - (longest earlier stop - 1): an earlier stop, absent so far, can
      then only start at or after e, so its cut leaves this one whole, and this one cuts at its start; every
      later stop then cuts (or not) within text already decoded (the first stop of `until` settles a row as soon
      as it appears). So `cut_at_stops` of this text equals that of any longer one.
    Decoded text, not token ids: a stop string may span tokens, or be tokenized otherwise than the model wrote it.
    Trailing U+FFFD is left out of L (a byte token cut inside a UTF-8 character; the next token completes it).
    Assumes a decoded prefix stays a prefix of the longer decode (true of byte tokens and byte-level BPE).
    Costs one device-to-host copy of [B] token ids per step and one decode per unsettled row."""

    def __init__(self, until: list[list[str]], decode, eod: int):
        self.until, self.decode, self.eod = until, decode, eod
        self.tokens: list[list[int]] = [[] for _ in until]
        self.done = [False] * len(until)

    def __call__(self, token: torch.Tensor) -> bool:
        for row, new in enumerate(token[:, 0].tolist()):
            self.tokens[row].append(new)
            if not self.done[row]:
                self.done[row] = new == self.eod or self._settled(row)
        return all(self.done)

    def _settled(self, row: int) -> bool:
        text = self.decode(self.tokens[row]).rstrip("\ufffd")
        longest_before = 0
        for stop in self.until[row]:
            start = text.find(stop)
            if start >= 0:
                return start + len(stop) <= len(text) - max(0, longest_before - 1)
            longest_before = max(longest_before, len(stop))
        return False

    def output(self, row: int) -> str:
        """Row `row`'s text: its tokens up to <eod>, decoded, cut at the stop strings."""
        new = self.tokens[row]
        if self.eod in new:
            new = new[: new.index(self.eod)]
        return cut_at_stops(self.decode(new), self.until[row])


def _config_seq_len(run_dir) -> int | None:
    """task.seq_len from a run dir's config.yaml (checkpoints before seq_len was recorded in meta.json)."""
    import yaml

    try:
        return int(yaml.safe_load((Path(run_dir) / "config.yaml").read_text())["task"]["seq_len"])
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return None


if model_registry.get("arena", None) is not ArenaLM:
    model_registry.register("arena", target=ArenaLM)

__all__ = ["ArenaLM"]
