"""Interventions on trained models for analysis scripts: change one mechanism, keep the weights, score again.

    from arena.interventions import delta_rule_layers, scale_decay
    with scale_decay(model, [(0, 3)], 0.25):   # layer 0's head 3: alpha -> alpha ** 0.25
        logits, _ = model(tokens)

Used by scripts/parity_gates.py and scripts/accuracy_by_length.py (`--open-gate`) to test whether a GDN / KDA head's
decay gate is what makes a trained state-tracking model forget beyond its training lengths: if scaling that head's
log-decay towards 0 (alpha towards 1) lifts the long lengths while the same on other heads does not, the decay is
the cause. Nothing here trains or saves; the model is as loaded again on leaving the block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from arena.errors import ConfigError
from arena.mixers.delta_rule import DeltaRuleMixer


def delta_rule_layers(model) -> list[DeltaRuleMixer]:
    """The model's GDN / KDA mixers in block order; `layer` below indexes this list. ConfigError if there are none."""
    mixers = [b.mixer for b in model.blocks if isinstance(b.mixer, DeltaRuleMixer)]
    if not mixers:
        raise ConfigError("the model has no GDN or KDA layer whose decay gate could be scaled")
    return mixers


def parse_heads(spec: str, model) -> list[tuple[int, int]]:
    """'LAYER:HEAD,...' or 'all' (every head of every GDN / KDA layer) -> [(layer, head)], checked against `model`."""
    mixers = delta_rule_layers(model)
    if spec == "all":
        return [(layer, head) for layer, m in enumerate(mixers) for head in range(m.H)]
    try:
        heads = [(int(a), int(b)) for a, b in (item.split(":") for item in spec.split(","))]
    except ValueError:
        raise ConfigError(f"heads {spec!r}: give 'all' or LAYER:HEAD pairs, e.g. 0:3,1:0") from None
    check_heads(heads, mixers)
    return heads


def check_heads(heads: list[tuple[int, int]], mixers: list[DeltaRuleMixer]) -> None:
    """ConfigError naming the first (layer, head) that `mixers` (delta_rule_layers) does not have."""
    for layer, head in heads:
        if not (0 <= layer < len(mixers) and 0 <= head < mixers[layer].H):
            raise ConfigError(f"head {layer}:{head} does not exist: GDN / KDA layers 0-{len(mixers) - 1}, heads "
                              f"0-{mixers[0].H - 1}")


@contextlib.contextmanager
def scale_decay(model, heads: list[tuple[int, int]], scale: float) -> Iterator[None]:
    """Within the block, the log-decay g of each (layer, head) in `heads` is scale * g (alpha -> alpha ** scale; 0:
    alpha = 1, the gate open) at every token and channel; the rest of the model is untouched. The layer's forward
    reads the decay through its `decay` or `fused_decay` method; instance attributes shadow both here (the fused
    one with the plain decay, which it equals)."""
    if not 0.0 <= scale <= 1.0:
        raise ConfigError(f"gate scale {scale} is outside [0, 1] (0 opens the gate, 1 leaves it as trained)")
    mixers = delta_rule_layers(model)
    check_heads(heads, mixers)
    patched = sorted({layer for layer, _ in heads})
    for index in patched:
        mixer, chosen = mixers[index], [h for layer, h in heads if layer == index]
        def scaled(x, decay=mixer.decay, chosen=chosen):
            g = decay(x).clone()  # [B, T, H] or [B, T, H, K]
            g[:, :, chosen] *= scale
            return g
        mixer.decay = mixer.fused_decay = scaled
    try:
        yield
    finally:
        for index in patched:
            del mixers[index].decay, mixers[index].fused_decay
