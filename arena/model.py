"""The language-model backbone shared by every mixer, and hybrids by a repeated layout.

    embed -> N x [x + mixer(RMSNorm(x)); x + SwiGLU(RMSNorm(x))] -> RMSNorm -> LM head

`layout` names one mixer spec per layer and is repeated to `n_layers`, so `[kda, kda, kda, mla_nope]` with
8 layers is Kimi Linear's 3:1 hybrid twice. A mixer spec is `{"name": <registered mixer>, **its Config}`.
`mlp_ratio: 0` drops the MLP (Zoology's MQAR models have none).

    model = LanguageModel(ModelConfig(vocab_size=256, d_model=64, n_layers=2), {"kda": {"name": "kda"}})
    logits, states = model(tokens)                 # tokens: [B, T] -> logits [B, T, vocab]
    logits, states = model(next_tokens, states)    # continue from the returned per-layer states
    tokens = model.generate(prompt, max_new_tokens=16)                       # greedy: [B, T0] -> [B, T0 + 16]
    tokens = model.generate(prompt, 16, temperature=0.8, top_k=20, generator=torch.Generator().manual_seed(0))
    tokens = model.generate(prompt, 16, temperature=0.8, top_p=0.9, stop=lambda token: bool((token == 0).all()))

Decoding (`generate`): one parallel prefill over the prompt from each mixer's `empty_state` (MLA preallocates its
latent cache for prompt + new tokens there), then one T = 1 call per new token that feeds only that token with
the per-layer states: KDA/GDN take their recurrent decode step (the fused Triton kernel on CUDA), Mamba2 its SSD
step, MLA the absorbed step over its in-place cache. `stop` (a callable shown each step's new tokens [B, 1]) can end
generation early. Tests: tests/test_generate.py; docs/mixers.md §4.1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from arena.errors import ConfigError, choice_error
from arena.mixers import Mixer, State, build_mixer


@dataclass
class ModelConfig:
    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 2
    layout: list[str] | None = None  # mixer spec names, repeated to n_layers; None = the run's one mixer
    # SwiGLU hidden width / d_model; 0 (the default: every conf/model option and so every run so far) disables the
    # MLP, as in Zoology's recall models, where the mixer alone must do the recall
    mlp_ratio: float = 0.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    # real-valued tasks (Task.kind == "regression", e.g. icl_regression): both > 0 swap the token embedding for a
    # linear read-in of input_dim-vectors and the LM head for a linear read-out of output_dim-vectors. Set from the
    # task at run time, like vocab_size (so not in the Hydra schema); 0 and 0 = a token model
    input_dim: int = 0
    output_dim: int = 0


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, mixer: Mixer, d_model: int, mlp_hidden: int, eps: float):
        super().__init__()
        self.mixer_norm = nn.RMSNorm(d_model, eps=eps)
        self.mixer = mixer
        self.mlp_norm = nn.RMSNorm(d_model, eps=eps) if mlp_hidden else None
        self.mlp = SwiGLU(d_model, mlp_hidden) if mlp_hidden else None

    def forward(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        y, state = self.mixer(self.mixer_norm(x), state)
        x = x + y
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x, state


def resolve_layout(cfg: ModelConfig, specs: dict[str, dict[str, Any]], default: str) -> list[str]:
    """The spec name of every layer: `cfg.layout` repeated (or `default` everywhere), checked against `specs`."""
    layout = list(cfg.layout) if cfg.layout else [default]
    if not layout or cfg.n_layers < 1:
        raise ConfigError(f"model.n_layers={cfg.n_layers} and model.layout={layout} must both be non-empty")
    for name in layout:
        if name not in specs:
            raise choice_error("model.layout entry", name, specs)
    return [layout[i % len(layout)] for i in range(cfg.n_layers)]


class LanguageModel(nn.Module):
    def __init__(self, cfg: ModelConfig, specs: dict[str, dict[str, Any]], default: str | None = None):
        """`specs` maps a layout name to its mixer spec; `default` is used when `cfg.layout` is None."""
        super().__init__()
        self.cfg = cfg
        self.layer_names = resolve_layout(cfg, specs, default or next(iter(specs)))
        mlp_hidden = int(round(cfg.mlp_ratio * cfg.d_model))
        if cfg.mlp_ratio < 0:
            raise ConfigError(f"model.mlp_ratio={cfg.mlp_ratio} must be >= 0 (0 disables the MLP)")
        blocks = []
        for name in self.layer_names:
            spec = dict(specs[name])
            mixer = build_mixer(spec.pop("name"), cfg.d_model, **spec)
            blocks.append(Block(mixer, cfg.d_model, mlp_hidden, cfg.norm_eps))
        if (cfg.input_dim > 0) != (cfg.output_dim > 0) or cfg.input_dim < 0 or cfg.output_dim < 0:
            raise ConfigError(f"model.input_dim={cfg.input_dim} and model.output_dim={cfg.output_dim} must both be "
                              "> 0 (a regression model) or both 0 (a token model)")
        self.regression = cfg.input_dim > 0
        # a regression model keeps the names embed / lm_head for its read-in / read-out, so every path that reads
        # them (weight-decay groups, scored_logits, parameter counts) serves both kinds. The read-in has a bias: it
        # lets a zero-padded input vector (icl_regression's [x, 0] and [0, y] tokens) still move off the origin
        self.embed = (nn.Linear(cfg.input_dim, cfg.d_model) if self.regression
                      else nn.Embedding(cfg.vocab_size, cfg.d_model))
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.output_dim if self.regression else cfg.vocab_size, bias=False)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # N(0, 0.02) for every projection and the embedding (fla/GPT-2 style); the mixers' own special
        # parameters (A_log, dt_bias, D, norm weights) keep the inits their constructors gave them.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def hidden_states(self, tokens: torch.Tensor, states: list[State] | None = None):
        """tokens [B, T] (a regression model: vectors [B, T, input_dim]) -> final-normed hidden states [B, T, D]
        and the per-layer states."""
        x = self.embed(tokens)  # [B, T, D]
        states = states or [None] * len(self.blocks)
        new_states = []
        for block, state in zip(self.blocks, states):
            x, state = block(x, state)
            new_states.append(state)
        return self.final_norm(x), new_states

    def forward(self, tokens: torch.Tensor, states: list[State] | None = None):
        h, states = self.hidden_states(tokens, states)
        return self.lm_head(h), states

    def empty_states(self, batch_size: int, capacity: int, device=None) -> list[State | None]:
        """Every layer's state to start decoding `capacity` tokens (prompt included) from; see Mixer.empty_state."""
        return [block.mixer.empty_state(batch_size, capacity, device) for block in self.blocks]

    @torch.inference_mode()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int, *, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
                 return_logits: bool = False, stop: Callable[[torch.Tensor], bool] | None = None):
        """Continue `prompt` [B, T0] (int64) by `max_new_tokens` tokens -> [B, T0 + max_new_tokens].

        Greedy (argmax) at temperature 0; otherwise samples softmax(logits / temperature), restricted to the
        `top_k` most likely tokens if given, then to the nucleus of `top_p` if given (the most likely tokens whose
        probabilities first sum to >= top_p; None or 1 = no restriction), with torch.multinomial and `generator`.
        `stop`, if given, is called with each step's new tokens [B, 1] in order; when it returns True generation
        ends there, so fewer than max_new_tokens tokens may come back. Runs in eval mode (restored after).
        return_logits=True also returns the fp32 logits each new token was picked from, [B, new, vocab].
        """
        self._check_generate_args(prompt, max_new_tokens, temperature, top_k, generator, top_p, stop)
        was_training = self.training
        self.eval()
        try:
            B, T0 = prompt.shape
            states = self.empty_states(B, T0 + max_new_tokens, prompt.device)
            logits, states = self(prompt, states)  # one parallel prefill; states now hold the prompt
            tokens, picked_from = [prompt], []
            for step in range(max_new_tokens):
                last = logits[:, -1].float()  # [B, vocab]
                picked_from.append(last)
                token = self._pick(last, temperature, top_k, generator, top_p)  # [B, 1]
                tokens.append(token)
                if stop is not None and stop(token):
                    break  # checked before the forward: the token that ends generation needs none
                if step + 1 < max_new_tokens:  # the last token needs no forward of its own
                    logits, states = self(token, states)
        finally:
            self.train(was_training)
        out = torch.cat(tokens, dim=1)
        if not return_logits:
            return out
        vocab = self.cfg.vocab_size
        return out, torch.stack(picked_from, dim=1) if picked_from else prompt.new_zeros(B, 0, vocab).float()

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, generator,
              top_p: float | None = None) -> torch.Tensor:
        """Next token [B, 1] from logits [B, vocab]: argmax at temperature 0, else a (top-k, top-p) sample."""
        if temperature == 0:
            return logits.argmax(dim=-1, keepdim=True)
        logits = logits / temperature
        if top_k is not None and top_k < logits.shape[-1]:
            kth = logits.topk(top_k, dim=-1).values[:, -1:]  # [B, 1], the k-th largest
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p is not None and top_p < 1:
            # nucleus: drop a token when the more likely ones before it already hold top_p of the mass, so the
            # most likely token always stays; the order is temperature, top-k, top-p, as Hugging Face's warpers
            sorted_p, order = logits.softmax(dim=-1).sort(dim=-1, descending=True)  # [B, vocab] each
            drop_sorted = sorted_p.cumsum(dim=-1) - sorted_p >= top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
            logits = logits.masked_fill(drop, float("-inf"))
        return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)

    def _check_generate_args(self, prompt, max_new_tokens, temperature, top_k, generator, top_p=None,
                             stop=None) -> None:
        vocab = self.cfg.vocab_size
        if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.dtype != torch.int64 \
                or prompt.shape[0] < 1 or prompt.shape[1] < 1:
            shown = tuple(prompt.shape) if isinstance(prompt, torch.Tensor) else type(prompt).__name__
            dtype = f" {prompt.dtype}" if isinstance(prompt, torch.Tensor) else ""
            raise ConfigError(f"generate: prompt must be an int64 tensor [B, T0] with B, T0 >= 1, got {shown}{dtype}")
        if prompt.numel() and (prompt.min() < 0 or prompt.max() >= vocab):
            raise ConfigError(f"generate: prompt token ids must lie in [0, {vocab}) (vocab_size), got "
                              f"[{int(prompt.min())}, {int(prompt.max())}]")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ConfigError(f"generate: max_new_tokens={max_new_tokens!r} must be an integer >= 0")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0 \
                or temperature == float("inf"):
            raise ConfigError(f"generate: temperature={temperature!r} must be a finite number >= 0 (0 = greedy)")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= vocab):
            raise ConfigError(f"generate: top_k={top_k!r} must be None or an integer in [1, {vocab}] (vocab_size)")
        if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                                  or not 0 < top_p <= 1):
            raise ConfigError(f"generate: top_p={top_p!r} must be None or a number in (0, 1] (1 = no nucleus cut)")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ConfigError(f"generate: generator must be a torch.Generator or None, got {type(generator).__name__}")
        if stop is not None and not callable(stop):
            raise ConfigError(f"generate: stop must be None or a callable (new tokens [B, 1] -> bool), got "
                              f"{type(stop).__name__}")

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component: embedding, mixers (per layer kind), mlp, norms, lm_head, total."""
        def count(module) -> int:
            return sum(p.numel() for p in module.parameters()) if module is not None else 0

        counts: dict[str, int] = {"embedding": count(self.embed), "lm_head": count(self.lm_head)}
        for name, block in zip(self.layer_names, self.blocks):
            counts[f"mixer/{name}"] = counts.get(f"mixer/{name}", 0) + count(block.mixer)
        counts["mlp"] = sum(count(b.mlp) for b in self.blocks)
        counts["norms"] = count(self.final_norm) + sum(count(b.mixer_norm) + count(b.mlp_norm) for b in self.blocks)
        counts["total"] = count(self)
        return counts

    def state_size(self, seq_len: int) -> int:
        """Elements held per sequence to decode after `seq_len` tokens, summed over layers."""
        return sum(block.mixer.state_size(seq_len) for block in self.blocks)

    def flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per token (mixers + MLPs + LM head); training is about 3x this."""
        mixers = sum(b.mixer.flops_per_token(seq_len) for b in self.blocks)
        mlps = sum(2.0 * sum(p.numel() for p in b.mlp.parameters()) for b in self.blocks if b.mlp is not None)
        return mixers + mlps + 2.0 * self.lm_head.weight.numel()


def load(run_dir, device="cpu", weights: str = "tested") -> LanguageModel:
    """The model of a run dir's checkpoint (`<run_dir>/checkpoint/`, written by arena.train), rebuilt from its
    recorded config and mixer specs with its safetensors weights, in eval mode on `device`; a run dir without a
    checkpoint is a one-line ConfigError. `weights`: tested (default; the weights the run's test scores are of),
    last or best. See arena/checkpoint.py."""
    from arena.checkpoint import load as load_checkpoint  # here: arena.checkpoint builds LanguageModel

    return load_checkpoint(run_dir, device, weights)
