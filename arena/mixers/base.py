"""The contract every token mixer follows.

A mixer maps `x: [B, T, D]` to `y: [B, T, D]` causally and can continue from a state:

    y, state = mixer(prompt)                 # parallel prefill over T tokens
    y1, state = mixer(next_token, state)     # then token by token (T = 1), or another chunk

`state` is whatever the mixer needs to continue (recurrent state, conv cache, KV cache) as a dict of
tensors; `None` means "start of sequence" (`empty_state(B, capacity)` is the alternative start for decoding,
which lets a growing cache preallocate). `state_size(seq_len)` counts the elements held per sequence
for decoding after `seq_len` tokens, so reports can plot accuracy against memory.

Each mixer class owns a nested `@dataclass Config` (commented defaults: the one place they live; it is the schema
of conf/mixer/<name>.yaml, which sets only what differs, see arena/config_schema.py) and lists
the implementations it offers in `impls`; `impl="torch"` (chunked, the default) and `impl="naive"` (the
token-loop oracle) always exist. See docs/adding_a_mixer.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from arena.errors import ConfigError, choice_error

State = dict[str, Any]


class Mixer(nn.Module):
    registry_name: ClassVar[str] = "?"
    impls: ClassVar[tuple[str, ...]] = ("torch", "naive")

    @dataclass
    class Config:
        impl: str = "torch"

    def __init__(self, d_model: int, cfg: Config):
        super().__init__()
        if cfg.impl not in self.impls:
            raise choice_error(f"mixer {self.registry_name}: impl", cfg.impl, self.impls)
        self.d_model = d_model
        self.cfg = cfg

    def heads_and_dim(self, num_heads: int, head_dim: int | None) -> tuple[int, int]:
        """(H, head_dim): head_dim defaults to d_model / num_heads, which must then divide evenly."""
        if num_heads < 1:
            raise ConfigError(f"mixer {self.registry_name}: num_heads={num_heads} must be >= 1")
        if head_dim is None:
            if self.d_model % num_heads:
                raise ConfigError(
                    f"mixer {self.registry_name}: d_model={self.d_model} is not divisible by "
                    f"num_heads={num_heads}; choose num_heads among the divisors of d_model or set head_dim"
                )
            head_dim = self.d_model // num_heads
        return num_heads, head_dim

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def empty_state(self, batch_size: int, capacity: int, device=None) -> State | None:
        """The state to start decoding `capacity` tokens from (prompt included). None, the default, suits a mixer
        whose state has a fixed size (the first call builds it); a growing cache preallocates here (MLA)."""
        return None

    def state_size(self, seq_len: int) -> int:
        """Elements held per sequence to decode the next token after `seq_len` tokens."""
        raise NotImplementedError

    def mixing_flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per token spent outside the linear layers (state update, attention scores)."""
        return 0.0

    def flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per token: 2 per weight of every linear layer plus the sequence-mixing work."""
        linear = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        return 2.0 * linear + self.mixing_flops_per_token(seq_len)
