"""Building blocks of the decoder: RMSNorm, embeddings, RoPE, attention, gated MLP."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from audiopalm_jax.model.config import ModelConfig
from audiopalm_jax.sharding import constrain, current_spec

# Parameters carry logical names and are placed by explicit out_shardings, not eagerly.
nnx.use_eager_sharding(False)

NEG_INF = -2.3819763e38  # most negative bf16-representable value, also fine in f32

Cache = dict[str, jax.Array]  # {"k": [b, s, kv, hd], "v": [b, s, kv, hd]}


@jax.custom_vjp
def _matmul_explicit_transpose(x: jax.Array, w: jax.Array) -> jax.Array:
    """[n, i] @ [i, o] whose weight gradient transposes the smaller of x and the cotangent."""
    return x @ w


def _matmul_fwd(x, w):
    return x @ w, (x, w)


def _matmul_bwd(residuals, g):  # g: [n, o]
    x, w = residuals
    # The weight gradient contracts x and g over their major axis, so one of them is
    # transposed; here the smaller, behind a barrier that keeps XLA from folding the
    # transpose back into the dot. Left to XLA:CPU's layout pass, the MLP's gate/up
    # gradients transposed their larger [n, mlp] cotangent inside its elementwise
    # producer (the silu backward), a fusion ~10x slower than a plain transpose.
    if x.shape[1] <= g.shape[1]:
        dw = jax.lax.optimization_barrier(x.T) @ g  # [i, n] @ [n, o]
    else:
        dw = (jax.lax.optimization_barrier(g.T) @ x).T  # ([o, n] @ [n, i])^T
    return g @ w.T, dw


_matmul_explicit_transpose.defvjp(_matmul_fwd, _matmul_bwd)


def _target_platform() -> str:
    """The platform being compiled for: the mesh's (an ahead-of-time TPU compile on a CPU
    host has TPU devices there), else the default backend's."""
    mesh = jax.sharding.get_abstract_mesh()
    device = getattr(mesh, "abstract_device", None)
    if not mesh.empty and device is not None:
        return device.platform
    return jax.default_backend()


def dense(x: jax.Array, w: jax.Array, in_axes: int, weight_grad: str) -> jax.Array:
    """``x [..., *in] . w [*in, *out] -> [..., *out]`` over the last ``in_axes`` axes of x.

    ``weight_grad`` (``ModelConfig.weight_grad``): ``explicit_transpose`` computes the
    weight gradient ``x^T @ dy`` with the smaller of ``x`` and ``dy`` transposed first;
    ``xla`` leaves the layout to XLA; ``auto`` is ``explicit_transpose`` on CPU, ``xla``
    elsewhere.
    """
    if weight_grad == "auto":
        weight_grad = "explicit_transpose" if _target_platform() == "cpu" else "xla"
    if weight_grad == "xla":
        return jnp.tensordot(x, w, axes=in_axes)
    lead, inner, outer = x.shape[: x.ndim - in_axes], w.shape[:in_axes], w.shape[in_axes:]
    size_in = math.prod(inner)
    y = _matmul_explicit_transpose(x.reshape(-1, size_in), w.reshape(size_in, -1))
    return y.reshape(*lead, *outer)


def _param(init, rngs: nnx.Rngs, shape, names, dtype) -> nnx.Param:
    return nnx.Param(init(rngs.params(), shape, jnp.dtype(dtype)), out_sharding=names)


def _dense_init(fan_in_axes: int):
    """Fan-in scaled normal init over the first ``fan_in_axes`` dimensions."""
    return nnx.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal", in_axis=tuple(range(fan_in_axes)), out_axis=-1
    )


class RMSNorm(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        init = nnx.initializers.zeros if cfg.norm_plus_one else nnx.initializers.ones
        self.scale = _param(init, rngs, (cfg.d_model,), ("embed",), cfg.param_dtype)
        self.eps = cfg.norm_eps
        self.plus_one = cfg.norm_plus_one
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        scale = self.scale[...].astype(jnp.float32)
        if self.plus_one:
            scale = 1.0 + scale
        return (x32 * scale).astype(self.dtype)


class Embedder(nnx.Module):
    """Token embedding (also the output projection when tied: ``Transformer.output_weight``)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        init = nnx.initializers.normal(cfg.embed_init_std)
        self.embedding = _param(
            init, rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), cfg.param_dtype
        )
        self.scale = cfg.d_model**0.5 if cfg.scale_embeddings else None
        self.dtype = jnp.dtype(cfg.dtype)

    def encode(self, tokens: jax.Array) -> jax.Array:
        # Gather from a table sharded only along vocab: gathering rows whose embed dim is
        # fsdp-sharded into batch-sharded activations makes XLA replicate the result.
        # Cast first, so the all-gathered table (and its gradient) is in the compute
        # dtype, as for every FSDP weight, not a whole f32 copy per chip.
        table = self.embedding[...].astype(self.dtype)
        spec = current_spec(("vocab", "embed"), table.shape)
        if spec is not None and len(spec) > 1 and spec[1] is not None:
            # The embed dim is gathered. Keep XLA from sinking the cast below the gather:
            # with 64-way fsdp (shards 64 wide, under a TPU tile) it gathers through a
            # zero-filled whole table, then f32 (2 GiB a chip for the 8B on v5p-128).
            # Unsharded, the cast stays free to shrink to the looked-up rows.
            table = jax.lax.optimization_barrier(table)
        table = constrain(table, ("vocab", None))
        x = jnp.take(table, tokens, axis=0)
        if self.scale is not None:
            # Gemma rounds the normalizer to the compute dtype before multiplying.
            x = x * jnp.asarray(self.scale, self.dtype)
        return x  # [batch, length, embed]


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding, half-split convention (as HF Llama's ``rotate_half``).

    x: [batch, length, heads, head_dim]; positions: [batch, length].
    """
    head_dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [b, l, head_dim/2]
    sin = jnp.sin(angles)[:, :, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def attention_mask(
    q_segments: jax.Array,
    kv_segments: jax.Array,
    q_index: jax.Array,
    kv_index: jax.Array,
    q_prefix: jax.Array | None = None,
    kv_prefix: jax.Array | None = None,
) -> jax.Array:
    """Which keys each query may see: [batch, q_len, kv_len] bool.

    Causal by slot index within the same segment; with prefix masks, queries in the
    prefix also see later prefix keys of their segment (prefix-LM, T5X style).
    Padding (segment 0) sees only padding, so no row is empty and softmax stays finite.
    """
    same = q_segments[:, :, None] == kv_segments[:, None, :]
    allowed = q_index[:, :, None] >= kv_index[:, None, :]
    if q_prefix is not None and kv_prefix is not None:
        allowed = allowed | (q_prefix[:, :, None].astype(bool) & kv_prefix[:, None, :].astype(bool))
    return same & allowed


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, h, kv, hd = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        pd = cfg.param_dtype
        self.q = _param(_dense_init(1), rngs, (d, h, hd), ("embed", "heads", "head_dim"), pd)
        self.k = _param(_dense_init(1), rngs, (d, kv, hd), ("embed", "kv_heads", "head_dim"), pd)
        self.v = _param(_dense_init(1), rngs, (d, kv, hd), ("embed", "kv_heads", "head_dim"), pd)
        self.o = _param(_dense_init(2), rngs, (h, hd, d), ("heads", "head_dim", "embed"), pd)
        if cfg.qkv_bias:
            zeros = nnx.initializers.zeros
            self.q_bias = _param(zeros, rngs, (h, hd), ("heads", "head_dim"), pd)
            self.k_bias = _param(zeros, rngs, (kv, hd), ("kv_heads", "head_dim"), pd)
            self.v_bias = _param(zeros, rngs, (kv, hd), ("kv_heads", "head_dim"), pd)
        self.cfg = cfg

    def __call__(
        self,
        x: jax.Array,  # [batch, length, embed]
        positions: jax.Array,  # [batch, length]
        mask: jax.Array,  # [batch, length, kv_length]
        cache: Cache | None = None,
        cache_index: jax.Array | None = None,
    ) -> tuple[jax.Array, Cache | None]:
        cfg = self.cfg
        dt = jnp.dtype(cfg.dtype)
        wg = cfg.weight_grad
        q = dense(x, self.q[...].astype(dt), 1, wg)  # [batch, length, heads, head_dim]
        k = dense(x, self.k[...].astype(dt), 1, wg)
        v = dense(x, self.v[...].astype(dt), 1, wg)
        if cfg.qkv_bias:
            q = q + self.q_bias[...].astype(dt)
            k = k + self.k_bias[...].astype(dt)
            v = v + self.v_bias[...].astype(dt)
        q = constrain(q, ("activation_batch", "activation_length", "activation_heads", None))
        q = rope(q, positions, cfg.rope_theta)
        k = rope(k, positions, cfg.rope_theta)

        if cache is not None:
            # Write this chunk at cache_index; attend over the whole (static) cache.
            k = jax.lax.dynamic_update_slice(
                cache["k"], k.astype(cache["k"].dtype), (0, cache_index, 0, 0)
            )
            v = jax.lax.dynamic_update_slice(
                cache["v"], v.astype(cache["v"].dtype), (0, cache_index, 0, 0)
            )
            cache = {"k": k, "v": v}
            k, v = k.astype(dt), v.astype(dt)

        scale = cfg.query_scale if cfg.query_scale is not None else q.shape[-1] ** -0.5
        q = q * jnp.asarray(scale, dt)
        softcap = cfg.attn_logit_softcap
        out = query_chunked(
            lambda q, mask: _dot_product_attention(q, k, v, mask, softcap),
            q,
            mask,
            cfg.attention_chunk_length,
        )
        out = dense(out, self.o[...].astype(dt), 2, wg)  # [batch, length, embed]
        return out, cache


def _dot_product_attention(
    q: jax.Array,  # [b, l, h, hd], already scaled
    k: jax.Array,  # [b, s, kv, hd]
    v: jax.Array,  # [b, s, kv, hd]
    mask: jax.Array,  # [b, l, s] bool
    softcap: float | None,
) -> jax.Array:
    """Softmax attention with f32 scores -> [b, l, h, hd] in q's dtype."""
    b, length, h, hd = q.shape
    kv_heads = k.shape[2]
    if kv_heads == h:
        # Multi-head: 4-D einsums. The grouped 5-D form with a group of 1 makes XLA:CPU
        # transpose around every batched dot (attention fwd+bwd 0.80 s vs 0.38 s per
        # layer at [2, 16, 1024, 64]).
        axes, mask = ("blhd", "bshd", "bhls"), mask[:, None]
    else:
        q = q.reshape(b, length, kv_heads, h // kv_heads, hd)
        axes, mask = ("blkgd", "bskd", "bkgls"), mask[:, None, None]
    return _softmax_attention(q, k, v, mask, softcap, axes).reshape(b, length, h, hd)


def _scores(q, k, mask, softcap, axes):
    """(masked f32 scores, tanh of the soft cap or None): [*scores]."""
    qa, ka, sa = axes
    logits = jnp.einsum(f"{qa},{ka}->{sa}", q, k).astype(jnp.float32)
    capped = None
    if softcap:
        capped = jnp.tanh(logits / softcap)
        logits = capped * softcap
    return jnp.where(mask, logits, NEG_INF), capped


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _softmax_attention(q, k, v, mask, softcap, axes):
    """softmax(q.k) v over einsum axes ``(q, k, scores)``; v has k's axes, out q's.

    The backward recomputes the probabilities from the saved log-sum-exp, as flash
    attention does, instead of saving them: the [b, h, l, s] f32 probabilities are the
    biggest activation, and stacking them for every layer of the scan (then reading them
    back) cost more on CPU than recomputing q.k (6.8 -> 6.0 s per step at d_model 1024,
    seq 1024).
    """
    return _softmax_attention_fwd(q, k, v, mask, softcap, axes)[0]


def _softmax_attention_fwd(q, k, v, mask, softcap, axes):
    qa, ka, sa = axes
    logits, _ = _scores(q, k, mask, softcap, axes)
    top = jnp.max(logits, axis=-1, keepdims=True)
    unnormalized = jnp.exp(logits - top)
    total = jnp.sum(unnormalized, axis=-1, keepdims=True)
    probs = (unnormalized / total).astype(q.dtype)
    out = jnp.einsum(f"{sa},{ka}->{qa}", probs, v)
    log_sum_exp = top + jnp.log(total)  # [*scores[:-1], 1] f32
    return out, (q, k, v, mask, out, log_sum_exp)


def _softmax_attention_bwd(softcap, axes, residuals, d_out):
    qa, ka, sa = axes
    q, k, v, mask, out, log_sum_exp = residuals
    dt, f32 = q.dtype, jnp.float32
    logits, capped = _scores(q, k, mask, softcap, axes)
    probs = jnp.where(mask, jnp.exp(logits - log_sum_exp), 0.0)  # f32
    d_v = jnp.einsum(f"{sa},{qa}->{ka}", probs.astype(dt), d_out)
    d_probs = jnp.einsum(f"{qa},{ka}->{sa}", d_out, v).astype(f32)
    # sum_s probs * d_probs, from the small tensors: d_out . out.
    row = jnp.einsum(f"{qa},{qa}->{sa[:-1]}", d_out.astype(f32), out.astype(f32))[..., None]
    d_logits = probs * (d_probs - row)
    if capped is not None:
        d_logits = d_logits * (1.0 - capped * capped)
    d_logits = d_logits.astype(dt)
    d_q = jnp.einsum(f"{sa},{ka}->{qa}", d_logits, k)
    d_k = jnp.einsum(f"{sa},{qa}->{ka}", d_logits, q)
    return d_q, d_k, d_v, None


_softmax_attention.defvjp(_softmax_attention_fwd, _softmax_attention_bwd)


def query_chunked(
    attend: Callable[[jax.Array, jax.Array], jax.Array],
    q: jax.Array,  # [b, l, ...] queries
    mask: jax.Array,  # [b, l, s] bool
    chunk: int,
) -> jax.Array:
    """``attend(q, mask)`` ``chunk`` queries at a time, in a scan whose body is
    rematerialised: the [b, h, l, s] f32 scores (the biggest activation of long-sequence
    training) exist one [b, h, chunk, s] slice at a time, in the backward pass too.
    Queries are padded to a whole number of chunks (padded rows see nothing, are dropped).
    ``chunk`` 0, or not fewer queries than it: one ``attend`` call, no loop.
    """
    b, length = q.shape[:2]
    if not chunk or length <= chunk:
        return attend(q, mask)
    n = -(-length // chunk)
    pad = n * chunk - length
    if pad:
        q = jnp.pad(q, ((0, 0), (0, pad)) + ((0, 0),) * (q.ndim - 2))
        mask = jnp.pad(mask, ((0, 0), (0, pad), (0, 0)))

    def chunks(a):  # [b, n * chunk, ...] -> [n, b, chunk, ...]
        return jnp.moveaxis(a.reshape(b, n, chunk, *a.shape[2:]), 1, 0)

    attend = jax.checkpoint(attend)

    def body(_, xs):
        return None, attend(*xs)

    _, out = jax.lax.scan(body, None, (chunks(q), chunks(mask)))  # [n, b, chunk, ...]
    return jnp.moveaxis(out, 0, 1).reshape(b, n * chunk, *out.shape[3:])[:, :length]


class MLP(nnx.Module):
    """Gated MLP: SwiGLU (silu) or GeGLU (tanh-approximate gelu)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, f, pd = cfg.d_model, cfg.mlp_dim, cfg.param_dtype
        self.gate = _param(_dense_init(1), rngs, (d, f), ("embed", "mlp"), pd)
        self.up = _param(_dense_init(1), rngs, (d, f), ("embed", "mlp"), pd)
        self.down = _param(_dense_init(1), rngs, (f, d), ("mlp", "embed"), pd)
        self.activation = jax.nn.silu if cfg.mlp_type == "swiglu" else _gelu_tanh
        self.dtype = jnp.dtype(cfg.dtype)
        self.weight_grad = cfg.weight_grad

    def __call__(self, x: jax.Array) -> jax.Array:
        dt, wg = self.dtype, self.weight_grad
        gate = dense(x, self.gate[...].astype(dt), 1, wg)  # [batch, length, mlp]
        up = dense(x, self.up[...].astype(dt), 1, wg)
        hidden = constrain(
            self.activation(gate) * up, ("activation_batch", "activation_length", "activation_mlp")
        )
        return dense(hidden, self.down[...].astype(dt), 1, wg)


def _gelu_tanh(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=True)
