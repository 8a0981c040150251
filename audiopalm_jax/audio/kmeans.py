"""Mini-batch k-means in JAX, sharded over a 1-D device mesh.

Frames are sharded over the ``data`` axis of a mesh built from ``jax.devices()`` and the
centroids are replicated. Fitting is k-means++ seeding on a random sample followed by
mini-batch updates (Sculley 2010, per-centroid learning rate ``1 / count``). Each device
draws its share of a mini-batch from its own shard, so no frames move between devices;
only the ``[K, D]`` centroid sums are all-reduced. Results are deterministic for a given
seed and device count.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .batching import AXIS, bucket, data_mesh

log = logging.getLogger(__name__)
_HP = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class KMeansConfig:
    """Hyper-parameters of :func:`kmeans_fit`."""

    num_clusters: int = 1024
    batch_size: int = 8192  # global mini-batch, split over devices
    num_steps: int = 300
    init_sample: int = 32768  # frames used for k-means++ seeding and the reported inertia
    seed: int = 0
    steps_per_call: int = 50  # steps fused in one jitted call between progress reports


def _shard_rows(x: np.ndarray, mesh: Mesh) -> tuple[jax.Array, jax.Array]:
    """[N, D] host rows -> ([ndev * n_loc, D] sharded zero-padded rows, [ndev] valid per shard)."""
    ndev = mesh.devices.size
    n = x.shape[0]
    n_loc = bucket(-(-n // ndev))  # bucketed: similar data sizes share compiled code
    padded = np.zeros((ndev * n_loc, x.shape[1]), np.float32)
    padded[:n] = x
    valid = np.clip(n - n_loc * np.arange(ndev), 0, n_loc).astype(np.int32)
    rows = jax.device_put(padded, NamedSharding(mesh, P(AXIS, None)))
    counts = jax.device_put(valid, NamedSharding(mesh, P(AXIS)))
    return rows, counts


def sq_distances(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """[..., D], [K, D] -> [..., K] squared euclidean distances (clipped at 0)."""
    x2 = jnp.sum(x * x, axis=-1, keepdims=True)
    c2 = jnp.sum(centroids * centroids, axis=-1)
    cross = jnp.matmul(x, centroids.T, precision=_HP)
    return jnp.maximum(x2 - 2.0 * cross + c2, 0.0)


def assign(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """[..., D] frames -> [...] int32 index of the nearest centroid."""
    # ||x||^2 is the same for every centroid, so it is left out of the argmin.
    c2 = jnp.sum(centroids * centroids, axis=-1)
    score = c2 - 2.0 * jnp.matmul(x, centroids.T, precision=_HP)
    return jnp.argmin(score, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("k", "trials"))
def _kmeans_pp(x: jax.Array, valid: jax.Array, key: jax.Array, k: int, trials: int) -> jax.Array:
    """Greedy k-means++ seeding (as scikit-learn): x [M, D] sharded, valid [M] -> [k, D].

    Each step draws ``trials`` candidates with probability ~ D(x)^2 and keeps the one that
    lowers the total potential most, which avoids most of plain k-means++'s bad seeds.
    """
    m = x.shape[0]
    x2 = jnp.sum(x * x, axis=-1)

    def dist(c: jax.Array) -> jax.Array:  # [L, D] -> [L, M]
        d = x2 - 2.0 * jnp.matmul(c, x.T, precision=_HP) + jnp.sum(c * c, -1, keepdims=True)
        return jnp.where(valid, jnp.maximum(d, 0.0), 0.0)

    def pick(logits: jax.Array, key: jax.Array, n: int) -> jax.Array:
        # Gumbel-max sampling (with replacement); a one-hot contraction rather than x[idx]
        # keeps x sharded.
        idx = jnp.argmax(logits + jax.random.gumbel(key, (n, m)), axis=-1)  # [n]
        onehot = (jnp.arange(m)[None, :] == idx[:, None]).astype(x.dtype)
        return jnp.matmul(onehot, x, precision=_HP)  # [n, D]

    first = pick(jnp.where(valid, 0.0, -jnp.inf), jax.random.fold_in(key, 0), 1)
    centroids = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first[0])

    def body(i, carry):
        centroids, d2 = carry
        # Duplicates of chosen centroids (d2 = 0) get a vanishing probability.
        logits = jnp.where(valid, jnp.log(d2 + 1e-30), -jnp.inf)
        cands = pick(logits, jax.random.fold_in(key, i), trials)  # [L, D]
        new_d2 = jnp.minimum(d2[None, :], dist(cands))  # [L, M]
        best = jnp.argmin(jnp.sum(new_d2, axis=-1))
        return centroids.at[i].set(cands[best]), new_d2[best]

    centroids, _ = jax.lax.fori_loop(1, k, body, (centroids, dist(first)[0]))
    return centroids


@functools.lru_cache(maxsize=8)
def _minibatch_steps(mesh: Mesh, batch_per_device: int, num_steps: int) -> Callable:
    """A jitted function running ``num_steps`` mini-batch updates, sharded with shard_map."""

    def local(rows, count, centroids, counts, key, start):
        # rows: [n_loc, D] this device's frames; count: [1] how many are real.
        k = centroids.shape[0]
        dev_key = jax.random.fold_in(key, jax.lax.axis_index(AXIS))

        def step(i, carry):
            centroids, counts = carry
            step_key = jax.random.fold_in(dev_key, start + i)
            idx = jax.random.randint(step_key, (batch_per_device,), 0, count[0])
            xb = rows[idx]  # [b, D] local gather
            ids = assign(xb, centroids)
            # A shard with no real frames (tiny inputs, many devices) must contribute nothing.
            w = (count[0] > 0).astype(xb.dtype)
            sums = jax.ops.segment_sum(xb * w, ids, num_segments=k)  # [K, D]
            n = jax.ops.segment_sum(jnp.full(ids.shape, w, xb.dtype), ids, num_segments=k)
            sums, n = jax.lax.psum((sums, n), AXIS)
            counts = counts + n
            # c <- c + (sum_b x - n_b c) / count: each point moves its centroid by 1/count.
            centroids = (
                centroids + (sums - n[:, None] * centroids) / jnp.maximum(counts, 1.0)[:, None]
            )
            return centroids, counts

        return jax.lax.fori_loop(0, num_steps, step, (centroids, counts))

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(AXIS, None), P(AXIS), P(), P(), P(), P()),
        out_specs=(P(), P()),
        check_vma=False,
    )
    return jax.jit(fn)


@jax.jit
def _inertia(x: jax.Array, valid: jax.Array, centroids: jax.Array) -> jax.Array:
    d = jnp.min(sq_distances(x, centroids), axis=-1)
    return jnp.sum(jnp.where(valid, d, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def kmeans_fit(
    data: np.ndarray,
    config: KMeansConfig,
    *,
    mesh: Mesh | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, dict]:
    """Fits k-means to ``data`` [N, D] -> ([K, D] float32 centroids, info dict).

    ``info`` holds the mean squared distance to the nearest centroid on the seeding sample
    (``inertia``), cluster usage during the mini-batch phase and timings.
    """
    data = np.asarray(data, np.float32)
    if data.ndim != 2:
        raise ValueError(f"k-means data must be [frames, dims], got shape {data.shape}")
    n, k = data.shape[0], config.num_clusters
    if n < k:
        raise ValueError(
            f"k-means with {k} clusters needs at least {k} frames, got {n}; give it more audio "
            "or fewer clusters"
        )
    if not np.isfinite(data).all():
        raise ValueError("k-means data contains NaN/inf")
    mesh = mesh or data_mesh()
    ndev = mesh.devices.size
    t0 = time.perf_counter()
    # Shuffle once on the host, so every shard is a uniform sample of all audio.
    rng = np.random.default_rng(config.seed)
    data = data[rng.permutation(n)]
    key = jax.random.key(config.seed)

    m = min(n, max(config.init_sample, k))
    m_pad = bucket(m, multiple=ndev)
    sample = np.zeros((m_pad, data.shape[1]), np.float32)
    sample[:m] = data[:m]
    sharding = NamedSharding(mesh, P(AXIS, None))
    sample_dev = jax.device_put(sample, sharding)
    sample_valid = jax.device_put(np.arange(m_pad) < m, NamedSharding(mesh, P(AXIS)))
    trials = 2 + int(np.log(k))
    centroids = _kmeans_pp(sample_dev, sample_valid, jax.random.fold_in(key, 1), k, trials)
    init_inertia = float(_inertia(sample_dev, sample_valid, centroids))
    t_init = time.perf_counter() - t0

    rows, counts_per_shard = _shard_rows(data, mesh)
    batch_per_device = max(1, config.batch_size // ndev)
    counts = jnp.zeros((k,), jnp.float32)
    step_key = jax.random.fold_in(key, 2)
    done = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.num_steps, desc="k-means", unit="step")
    while done < config.num_steps:
        chunk = min(config.steps_per_call, config.num_steps - done)
        run = _minibatch_steps(mesh, batch_per_device, chunk)
        centroids, counts = run(rows, counts_per_shard, centroids, counts, step_key, done)
        done += chunk
        if bar is not None:
            bar.update(chunk)
    if bar is not None:
        bar.close()
    inertia = float(_inertia(sample_dev, sample_valid, centroids))
    counts = np.asarray(counts)
    info = {
        "frames": int(n),
        "devices": int(ndev),
        "init_inertia": init_inertia,
        "inertia": inertia,
        "unused_clusters": int(np.sum(counts == 0)),
        "seconds_init": t_init,
        "seconds_total": time.perf_counter() - t0,
    }
    log.info("k-means: %s", info)
    return np.asarray(centroids, np.float32), info


@dataclasses.dataclass
class Codebook:
    """k-means centroids over per-dim standardised features.

    ``mean`` / ``std`` [D] standardise raw features before clustering (so no dimension
    dominates the distance); ``centroids`` [K, D] live in the standardised space.
    ``decode_table`` [K, E] (optional): what :meth:`lookup` returns per token when the
    clustered features are not the ones a decoder needs (see :meth:`with_decode_table`).
    """

    centroids: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    decode_table: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @classmethod
    def fit(
        cls,
        frames: np.ndarray,
        config: KMeansConfig,
        *,
        mesh: Mesh | None = None,
        progress: bool = False,
    ) -> tuple[Codebook, dict]:
        """Standardises ``frames`` [N, D] and clusters them."""
        frames = np.asarray(frames, np.float32)
        mean = frames.mean(axis=0, dtype=np.float64)
        std = np.sqrt(frames.var(axis=0, dtype=np.float64))
        # Constant dims (e.g. a mel band above a low-passed signal) would divide by zero.
        std = np.maximum(std, 1e-3 * max(float(std.max()), 1e-6))
        z = ((frames - mean) / std).astype(np.float32)
        centroids, info = kmeans_fit(z, config, mesh=mesh, progress=progress)
        return cls(centroids, mean.astype(np.float32), std.astype(np.float32)), info

    def quantize(self, feats: jax.Array) -> jax.Array:
        """[..., D] raw features -> [...] int32 token ids (jit-friendly)."""
        z = (feats - jnp.asarray(self.mean)) / jnp.asarray(self.std)
        return assign(z, jnp.asarray(self.centroids))

    def lookup(self, ids: jax.Array) -> jax.Array:
        """[...] token ids -> [..., D] raw-space centroid features, or [..., E] rows of the
        decode table when there is one (jit-friendly)."""
        if self.decode_table is not None:
            return jnp.take(jnp.asarray(self.decode_table), ids, axis=0)
        c = jnp.asarray(self.centroids) * jnp.asarray(self.std) + jnp.asarray(self.mean)
        return jnp.take(c, ids, axis=0)

    def with_decode_table(self, frames: np.ndarray, decode_frames: np.ndarray) -> Codebook:
        """A copy whose :meth:`lookup` gives, per token, the mean of ``decode_frames`` [N, E]
        over the rows of ``frames`` [N, D] (the same N frames) that quantise to it."""
        ids = jnp.concatenate(
            [
                self.quantize(jnp.asarray(frames[i : i + 65536]))
                for i in range(0, len(frames), 65536)
            ]
        )
        decode = jnp.asarray(decode_frames, jnp.float32)
        sums = jax.ops.segment_sum(decode, ids, num_segments=self.size)  # [K, E]
        counts = jax.ops.segment_sum(jnp.ones_like(ids, jnp.float32), ids, num_segments=self.size)
        # A token no frame quantises to (rare) decodes as the average frame.
        table = jnp.where(
            counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], decode.mean(0)
        )
        return dataclasses.replace(self, decode_table=np.asarray(table, np.float32))

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        out = {
            f"{prefix}centroids": self.centroids,
            f"{prefix}feature_mean": self.mean,
            f"{prefix}feature_std": self.std,
        }
        if self.decode_table is not None:
            out[f"{prefix}decode_table"] = self.decode_table
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "") -> Codebook:
        get = lambda k: np.asarray(arrays[f"{prefix}{k}"], np.float32)
        table = arrays.get(f"{prefix}decode_table")
        return cls(
            get("centroids"),
            get("feature_mean"),
            get("feature_std"),
            None if table is None else np.asarray(table, np.float32),
        )
