"""Kimi Delta Attention (per-channel gate): chunked training op, token-loop oracle and decode step.

    from arena.kernels.kda import chunk_kda, naive_recurrent_kda, kda_decode_step
See arena/kernels/__init__.py for the shapes and docs/mixers.md §1.1 and §1.4 for the math.
"""

from arena.kernels.kda.chunk import chunk_kda
from arena.kernels.kda.naive import kda_decode_step, naive_recurrent_kda

__all__ = ["chunk_kda", "kda_decode_step", "naive_recurrent_kda"]
