"""A decode-specialised forward pass over the Transformer's own modules and parameters.

Training's ``Transformer.__call__(cache=...)`` keeps k/v as ``[layers, b, s, kv, hd]`` and
scans over layers. For one-token steps that costs a transpose and a copy of every layer's
whole cache per step (and a copy of every layer's weights out of the stacked params),
which dominates decoding on CPU and grows with the cache size. Here each layer has its own
buffers in the layouts XLA's one-query attention dots read without a transposed copy
(keys ``[b, kv, s, hd]``, values ``[b, kv, hd, s]``: contracting axis minor), updated in
place inside the decode loop; layers are unrolled; the prefill attends only over the
prompt and projects only its last position to logits. Norms, MLPs, embeddings
and RoPE are the model's own code; parity with the model is tested.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from audiopalm_jax.model import ModelConfig
from audiopalm_jax.model.layers import NEG_INF, attention_mask, query_chunked, rope
from audiopalm_jax.sharding import constrain

Cache = dict[str, Any]  # {"k": tuple per layer of [b, kv, s, hd], "v": ... [b, kv, hd, s],
# "segment_ids": [b, s], "index": int32[]}
_K_AXES = ("cache_batch", "activation_kv_heads", "cache_length", None)
_V_AXES = ("cache_batch", "activation_kv_heads", None, "cache_length")
_ACT = ("activation_batch", "activation_length", "activation_embed")


def blocks(model: nnx.Module) -> list[nnx.Module]:
    """The model's blocks as a list (slices the stacked parameters of a scanned model)."""
    if not model.cfg.scan_layers:
        return list(model.blocks)
    graphdef, state = nnx.split(model.blocks)
    return [
        nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state))
        for i in range(model.cfg.num_layers)
    ]


def unstack_params(params: dict) -> dict:
    """Pure params of a scanned model -> the same weights in the unscanned layout.

    Decoding from these (with a ``scan_layers=False`` graphdef) slices the layers once at
    load time instead of once per generate call.
    """
    blocks_ = params["blocks"]
    num = jax.tree.leaves(blocks_)[0].shape[0]
    out = dict(params)
    out["blocks"] = {i: jax.tree.map(lambda a, i=i: a[i], blocks_) for i in range(num)}
    return out


def for_decoding(cfg: ModelConfig, params: dict) -> tuple[ModelConfig, nnx.GraphDef, dict]:
    """(config, graphdef, params) of the unscanned model with the same weights.

    Slicing the layers once here (arrays keep their shardings) spares every generate call
    a copy of all the weights.
    """
    from audiopalm_jax.train.step import abstract_model  # deferred: optax import

    if cfg.scan_layers:
        params = unstack_params(params)
    cfg = dataclasses.replace(cfg, scan_layers=False)
    return cfg, abstract_model(cfg)[0], params


def init_cache(cfg: ModelConfig, batch: int, length: int) -> Cache:
    """Empty cache: ``length`` slots per row, in the compute dtype, no slot attended."""
    kv, hd, dt = cfg.num_kv_heads, cfg.head_dim, jnp.dtype(cfg.dtype)
    layers = range(cfg.num_layers)
    return {
        "k": tuple(constrain(jnp.zeros((batch, kv, length, hd), dt), _K_AXES) for _ in layers),
        "v": tuple(constrain(jnp.zeros((batch, kv, hd, length), dt), _V_AXES) for _ in layers),
        # -1: an empty slot, never attended; 0: prompt padding; 1: real tokens.
        "segment_ids": jnp.full((batch, length), -1, jnp.int32),
        "index": jnp.zeros((), jnp.int32),
    }


def _qkv(attn: nnx.Module, cfg: ModelConfig, h: jax.Array, positions: jax.Array):
    """Projections + RoPE, as in ``Attention``: q [b, l, heads, hd], k/v [b, l, kv, hd]."""
    dt = jnp.dtype(cfg.dtype)
    q = jnp.einsum("bld,dhk->blhk", h, attn.q[...].astype(dt))
    k = jnp.einsum("bld,dhk->blhk", h, attn.k[...].astype(dt))
    v = jnp.einsum("bld,dhk->blhk", h, attn.v[...].astype(dt))
    if cfg.qkv_bias:
        q = q + attn.q_bias[...].astype(dt)
        k = k + attn.k_bias[...].astype(dt)
        v = v + attn.v_bias[...].astype(dt)
    q = constrain(q, ("activation_batch", "activation_length", "activation_heads", None))
    return rope(q, positions, cfg.rope_theta), rope(k, positions, cfg.rope_theta), v


def _attend(
    attn: nnx.Module,
    cfg: ModelConfig,
    q: jax.Array,  # [b, l, heads, hd]
    k: jax.Array,  # [b, kv, s, hd]
    v: jax.Array,  # [b, kv, hd, s] (values transposed)
    mask: jax.Array,  # [b, l, s] bool
    k_new: jax.Array | None = None,  # [b, kv, 1, hd]: one step's own key (l == 1)
    v_new: jax.Array | None = None,  # [b, kv, hd, 1]
) -> jax.Array:
    """Softmax attention (over the cache, plus the step's own key) + output projection.

    Reading the step's own k/v separately, rather than from the updated cache, leaves
    the cache update with a single user, so XLA updates the buffer in place.
    """
    dt = jnp.dtype(cfg.dtype)
    b, length, h, hd = q.shape
    kv = k.shape[1]
    scale = cfg.query_scale if cfg.query_scale is not None else hd**-0.5
    q = (q * jnp.asarray(scale, dt)).reshape(b, length, kv, h // kv, hd)
    logits = jnp.einsum("blkgd,bksd->bkgls", q, k.astype(dt))  # [b, kv, g, l, s]
    if k_new is not None:
        own = jnp.einsum("blkgd,bknd->bkgln", q, k_new.astype(dt))  # [b, kv, g, l, 1]
        logits = jnp.concatenate([logits, own], axis=-1)
        mask = jnp.concatenate([mask, jnp.ones(mask.shape[:2] + (1,), bool)], axis=-1)
    logits = logits.astype(jnp.float32)
    if cfg.attn_logit_softcap:
        logits = jnp.tanh(logits / cfg.attn_logit_softcap) * cfg.attn_logit_softcap
    logits = jnp.where(mask[:, None, None, :, :], logits, NEG_INF)
    probs = jax.nn.softmax(logits, axis=-1).astype(dt)
    s = k.shape[2]
    out = jnp.einsum("bkgls,bkds->blkgd", probs[..., :s], v.astype(dt))
    if v_new is not None:
        out = out + jnp.einsum("bkgln,bkdn->blkgd", probs[..., s:], v_new.astype(dt))
    out = out.reshape(b, length, h, hd)
    return jnp.einsum("blhk,hkd->bld", out, attn.o[...].astype(dt))


def _block(block: nnx.Module, cfg: ModelConfig, x: jax.Array, attn_out_fn) -> jax.Array:
    """Residual wiring of ``Block`` (no dropout at inference)."""
    h = block.attn_norm(x)
    a = attn_out_fn(h)
    if cfg.parallel_block:
        x = x + a + block.mlp(h)
    else:
        x = x + a
        x = x + block.mlp(block.mlp_norm(x))
    return constrain(x, _ACT)


def _logits(model: nnx.Module, x: jax.Array) -> jax.Array:
    """Final norm + output projection of [b, d] -> [b, vocab] float32."""
    return model.logits(model.final_norm(x))


def prefill(
    model: nnx.Module,
    tokens: jax.Array,  # [b, p] int32, left-padded
    lengths: jax.Array,  # [b] int32 real tokens per row
    cache_length: int,
    layers: list[nnx.Module] | None = None,
    positions: jax.Array | None = None,  # [b, p] int32 RoPE positions; None: 0, 1, ...
) -> tuple[jax.Array, Cache]:
    """Prompts (the bidirectional prefix) into a fresh cache -> (last logits [b, vocab], cache).

    ``layers``: :func:`blocks` of ``model``, computed once outside a decode loop.
    """
    cfg = model.cfg
    b, p = tokens.shape
    col = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    start = (p - lengths)[:, None]
    real = (col >= start).astype(jnp.int32)  # segment 1 = prompt, 0 = left padding
    if positions is None:
        positions = jnp.maximum(col - start, 0)
    mask = attention_mask(real, real, col, col, real, real)  # [b, p, p]
    cache = init_cache(cfg, b, cache_length)
    new_k, new_v = [], []
    x = constrain(model.embedder.encode(tokens), _ACT)
    for i, block in enumerate(blocks(model) if layers is None else layers):

        def attn_out(h, i=i, block=block):
            q, k, v = _qkv(block.attn, cfg, h, positions)
            k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 3, 1)  # [b,kv,p,hd], [b,kv,hd,p]
            for store, val, buf in ((new_k, k, cache["k"][i]), (new_v, v, cache["v"][i])):
                store.append(jax.lax.dynamic_update_slice(buf, val.astype(buf.dtype), (0,) * 4))
            # Long prompts: one chunk of queries' scores at a time.
            return query_chunked(
                lambda q, m: _attend(block.attn, cfg, q, k, v, m),
                q,
                mask,
                cfg.attention_chunk_length,
            )

        x = _block(block, cfg, x, attn_out)
    segments = jax.lax.dynamic_update_slice(cache["segment_ids"], real, (0, 0))
    cache = {"k": tuple(new_k), "v": tuple(new_v), "segment_ids": segments, "index": jnp.int32(p)}
    return _logits(model, x[:, -1]), cache


def decode_step(
    model: nnx.Module,
    cache: Cache,
    tokens: jax.Array,  # [b] int32
    positions: jax.Array,  # [b] int32 RoPE positions
    layers: list[nnx.Module] | None = None,
) -> tuple[jax.Array, Cache]:
    """One token per row written at ``cache["index"]`` -> (logits [b, vocab], cache)."""
    cfg = model.cfg
    index = cache["index"]
    b = tokens.shape[0]
    # Slots filled by earlier tokens (segment 1); the step's own slot is still empty here.
    mask = (cache["segment_ids"] == 1)[:, None, :]  # [b, 1, s]
    new_k, new_v = [], []
    x = constrain(model.embedder.encode(tokens[:, None]), _ACT)  # [b, 1, d]
    for i, block in enumerate(blocks(model) if layers is None else layers):

        def attn_out(h, i=i, block=block):
            q, k, v = _qkv(block.attn, cfg, h, positions[:, None])
            k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 3, 1)  # [b,kv,1,hd], [b,kv,hd,1]
            ks, vs = cache["k"][i], cache["v"][i]
            out = _attend(block.attn, cfg, q, ks, vs, mask, k, v)
            # Write after the read: an update that depends on the attention output (by an
            # always-zero term, NaN/inf safe) lets XLA update the buffer in place instead
            # of copying the whole cache every step (optimization_barrier does not, on CPU).
            after = (out[:, :1, :1, None] > jnp.inf).astype(k.dtype)  # [b, 1, 1, 1] zeros
            k, v = k + after, v + after
            ks = jax.lax.dynamic_update_slice(ks, k.astype(ks.dtype), (0, 0, index, 0))
            vs = jax.lax.dynamic_update_slice(vs, v.astype(vs.dtype), (0, 0, 0, index))
            new_k.append(constrain(ks, _K_AXES))
            new_v.append(constrain(vs, _V_AXES))
            return out

        x = _block(block, cfg, x, attn_out)
    segments = jax.lax.dynamic_update_slice(
        cache["segment_ids"], jnp.ones((b, 1), jnp.int32), (0, index)
    )
    cache = {"k": tuple(new_k), "v": tuple(new_v), "segment_ids": segments, "index": index + 1}
    return _logits(model, x[:, 0]), cache


def reorder(cache: Cache, rows: jax.Array) -> Cache:
    """Cache rows gathered by ``rows`` [b] (beam search: each beam follows its parent)."""
    take = lambda a: jnp.take(a, rows, axis=0)
    return {
        "k": tuple(take(a) for a in cache["k"]),
        "v": tuple(take(a) for a in cache["v"]),
        "segment_ids": take(cache["segment_ids"]),
        "index": cache["index"],
    }


def repeat(cache: Cache, times: int) -> Cache:
    """Each cache row repeated ``times`` (batch -> batch x beams, beams adjacent)."""
    rep = lambda a: jnp.repeat(a, times, axis=0)
    return {
        "k": tuple(rep(a) for a in cache["k"]),
        "v": tuple(rep(a) for a in cache["v"]),
        "segment_ids": rep(cache["segment_ids"]),
        "index": cache["index"],
    }
