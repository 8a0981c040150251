"""Padding, bucketing and batch sharding shared by the tokenizers.

Jitted functions recompile for every new input shape, so batches are padded to a small set
of bucketed lengths (~8 per octave, under 1/4 wasted) and the batch axis is padded to a
multiple of the device count so it can be sharded over a 1-D ``data`` mesh.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"  # the one mesh axis: batch items / k-means frames are split over it


def data_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh with axis ``data`` over ``devices`` (default: all of ``jax.devices()``)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def bucket(n: int, multiple: int = 1, minimum: int = 1) -> int:
    """Rounds ``n`` up to one of ~8 sizes per octave, and to a multiple of ``multiple``."""
    n = max(int(n), minimum, 1)
    step = max(1, 2 ** max(0, int(np.ceil(np.log2(n))) - 3))
    n = -(-n // step) * step
    return -(-n // multiple) * multiple


def pad_waveforms(
    waves: Sequence[np.ndarray], length_multiple: int, batch_multiple: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """float32 waveforms -> ([B', N] zero-padded, [B'] lengths); B' and N are bucketed.

    Extra rows (to reach a multiple of ``batch_multiple``) have length 0 and are dropped by
    the caller.
    """
    lengths = np.asarray([len(w) for w in waves], np.int32)
    n = bucket(int(lengths.max()), length_multiple)
    b = -(-bucket(len(waves)) // batch_multiple) * batch_multiple
    out = np.zeros((b, n), np.float32)
    for i, w in enumerate(waves):
        out[i, : len(w)] = w
    full = np.zeros((b,), np.int32)
    full[: len(waves)] = lengths
    return out, full


def length_groups(lengths: Sequence[int], max_batch: int, max_samples: int) -> Iterator[list[int]]:
    """Indices grouped by similar length: at most ``max_batch`` items and about
    ``max_samples`` padded samples per group (a longer single item gets its own group)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    group: list[int] = []
    for i in order:
        longest = lengths[i]  # sorted ascending: the newest item is the longest
        if group and (len(group) + 1 > max_batch or (len(group) + 1) * longest > max_samples):
            yield group
            group = []
        group.append(int(i))
    if group:
        yield group


class BatchSharder:
    """Puts batch-major host arrays on a 1-D device mesh, sharded over the batch axis.

    Batches are always padded to a multiple of the device count, so every jitted call sees
    one device set (parameters replicated on all of them).
    """

    def __init__(self, devices: list | None = None):
        self.mesh = data_mesh(devices)
        self.num_devices = self.mesh.devices.size

    def batch_multiple(self, batch: int) -> int:
        return self.num_devices

    def put(self, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
        """Shards each array's leading (batch) axis over the mesh."""
        return tuple(
            jax.device_put(a, NamedSharding(self.mesh, P(AXIS, *([None] * (a.ndim - 1)))))
            for a in arrays
        )

    def replicate(self, tree):
        """Copies a pytree (e.g. model parameters) to every device of the mesh."""
        return jax.device_put(tree, NamedSharding(self.mesh, P()))
