"""Gated DeltaNet (one decay per head): chunked training op, token-loop oracle and decode step.

    from arena.kernels.gated_delta_rule import chunk_gated_delta_rule, naive_recurrent_gated_delta_rule
See arena/kernels/__init__.py for the shapes and docs/mixers.md §1.1 for the math.
"""

from arena.kernels.gated_delta_rule.chunk import chunk_gated_delta_rule
from arena.kernels.gated_delta_rule.naive import gated_delta_rule_decode_step, naive_recurrent_gated_delta_rule

__all__ = ["chunk_gated_delta_rule", "gated_delta_rule_decode_step", "naive_recurrent_gated_delta_rule"]
