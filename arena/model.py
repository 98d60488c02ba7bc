"""The language-model backbone shared by every mixer, and hybrids by a repeated layout.

    embed -> N x [x + mixer(RMSNorm(x)); x + SwiGLU(RMSNorm(x))] -> RMSNorm -> LM head

`layout` names one mixer spec per layer and is repeated to `n_layers`, so `[kda, kda, kda, mla_nope]` with
8 layers is Kimi Linear's 3:1 hybrid twice. A mixer spec is `{"name": <registered mixer>, **its Config}`.
`mlp_ratio: 0` drops the MLP (Zoology's MQAR models have none).

    model = LanguageModel(ModelConfig(vocab_size=256, d_model=64, n_layers=2), {"kda": {"name": "kda"}})
    logits, states = model(tokens)                 # tokens: [B, T] -> logits [B, T, vocab]
    logits, states = model(next_tokens, states)    # continue from the returned per-layer states
"""

from __future__ import annotations

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
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # N(0, 0.02) for every projection and the embedding (fla/GPT-2 style); the mixers' own special
        # parameters (A_log, dt_bias, D, norm weights) keep the inits their constructors gave them.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def hidden_states(self, tokens: torch.Tensor, states: list[State] | None = None):
        """tokens [B, T] -> final-normed hidden states [B, T, D] and the per-layer states."""
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
