"""Memory-bandwidth floors for the benchmarked kernels: minimum HBM bytes, achieved GB/s, fraction of the floor.

    from arena.bench.floors import delta_rule_bytes, floor_fraction
    nbytes = delta_rule_bytes(8, 4096, 16, 128, 128, io_bytes=2, g_bytes=4, per_channel=True, backward=True)
    floor_fraction(nbytes, ms=9.9, bandwidth=3.0e12)        # floor time / measured time, in (0, 1]

Pure arithmetic, no torch. The counts follow docs performance.md section 6: a fully fused kernel must read its
inputs and write its outputs once, and nothing else (chunk states and other intermediates never reach HBM).
  delta rule forward:   read q, k, v, g, beta; write o
  delta rule fwd+bwd:   the forward, then read dO and q, k, v, g, beta again; write dq, dk, dv, dg, dbeta
  attention forward:    read q, k, v; write o (the log-sum-exp row statistics are ~1/D of o: left out)
  attention fwd+bwd:    the forward, then read dO, q, k, v, o; write dq, dk, dv
g is [B, T, H, K] for KDA (per channel) or [B, T, H] for GDN; g and beta are counted in their actual dtypes
(section 6's table leaves beta out: it is ~0.2 % of the total at K = 128). Initial and final states are not
counted: the benchmark passes neither.
"""

from __future__ import annotations


def delta_rule_bytes(B: int, T: int, H: int, K: int, V: int, *, io_bytes: int, g_bytes: int, per_channel: bool,
                     beta_bytes: int | None = None, backward: bool = False) -> int:
    """Minimum HBM bytes of a chunkwise KDA (per_channel=True) or GDN forward, or forward+backward.

    io_bytes: bytes per element of q, k, v, o and their gradients (2 for bf16); g_bytes: of g and dg;
    beta_bytes: of beta and dbeta (default io_bytes).
    """
    beta_bytes = io_bytes if beta_bytes is None else beta_bytes
    tokens = B * T * H
    qk = 2 * tokens * K * io_bytes
    v = tokens * V * io_bytes  # v, o, dO and dv are each this size
    g = tokens * (K if per_channel else 1) * g_bytes
    beta = tokens * beta_bytes
    inputs = qk + v + g + beta
    forward = inputs + v  # read the inputs, write o
    if not backward:
        return forward
    return forward + v + inputs + inputs  # read dO, reread the inputs, write their gradients


def attention_bytes(B: int, T: int, H: int, D: int, *, io_bytes: int, backward: bool = False) -> int:
    """Minimum HBM bytes of a fused attention forward, or forward+backward (q, k, v, o all [B, H, T, D])."""
    one = B * H * T * D * io_bytes
    forward = 4 * one  # q, k, v read; o written
    return forward + (8 * one if backward else 0)  # dO, q, k, v, o read; dq, dk, dv written


def attention_flops(B: int, T: int, H: int, D: int, *, causal: bool = True, backward: bool = False) -> float:
    """Matmul FLOPs of attention: 4 B H T^2 D forward (QK^T and PV), halved when causal; backward is 2.5x forward
    (the convention of the FlashAttention papers), so forward+backward is 3.5x."""
    forward = 4.0 * B * H * T * T * D * (0.5 if causal else 1.0)
    return forward * (3.5 if backward else 1.0)


def achieved_gbps(nbytes: float, ms: float) -> float:
    """Bytes moved per second, in GB/s (1e9 bytes), for `nbytes` in `ms` milliseconds (NaN in, NaN out)."""
    return nbytes / (ms * 1e-3) / 1e9


def floor_ms(nbytes: float, bandwidth: float) -> float:
    """Time in ms to move `nbytes` at `bandwidth` bytes/s: the memory floor."""
    return nbytes / bandwidth * 1e3


def floor_fraction(nbytes: float, ms: float, bandwidth: float) -> float:
    """Memory-floor time over measured time: 1.0 means the kernel runs at the card's bandwidth."""
    return floor_ms(nbytes, bandwidth) / ms
