"""Peak FLOP/s per device, for MFU."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

# Published dense bf16 peaks (FLOP/s per chip).
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}


def measure_matmul_peak(size: int = 2048, repeats: int = 10, dtype=jnp.float32) -> float:
    """FLOP/s of a square matmul on the default device, measured now (best of repeats)."""
    a = jnp.ones((size, size), dtype)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


def peak_flops_per_device(configured: float = 0.0) -> tuple[float, str]:
    """(peak FLOP/s of one device, where the number came from).

    CPU devices share the host's cores, so the measured peak is the host's whole
    throughput: per-device MFU on simulated devices divides by the host total.
    """
    if configured:
        return float(configured), "config"
    kind = jax.devices()[0].device_kind
    for prefix, flops in PEAK_FLOPS.items():
        if kind.startswith(prefix):
            return flops, f"table:{prefix}"
    return measure_matmul_peak(), "measured_matmul"
