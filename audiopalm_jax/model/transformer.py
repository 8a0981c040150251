"""The decoder-only Transformer: embed, scanned blocks, norm, logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from audiopalm_jax.model.config import ModelConfig
from audiopalm_jax.model.layers import (
    MLP,
    Attention,
    Cache,
    Embedder,
    RMSNorm,
    attention_mask,
    dense,
)
from audiopalm_jax.sharding import constrain

_ACT = ("activation_batch", "activation_length", "activation_embed")

REMAT_POLICIES = {
    "full": None,  # save nothing, recompute the whole block
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "save_attention_out": jax.checkpoint_policies.save_only_these_names("attention_out"),
}


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.attn_norm = RMSNorm(cfg, rngs=rngs)
        self.attn = Attention(cfg, rngs=rngs)
        if not cfg.parallel_block:
            self.mlp_norm = RMSNorm(cfg, rngs=rngs)
        self.mlp = MLP(cfg, rngs=rngs)
        self.cfg = cfg

    def __call__(self, x, positions, mask, cache=None, cache_index=None, dropout_rng=None):
        def dropout(y, salt):
            rate = self.cfg.dropout_rate
            if dropout_rng is None or rate == 0.0:
                return y
            keep = jax.random.bernoulli(jax.random.fold_in(dropout_rng, salt), 1.0 - rate, y.shape)
            return jnp.where(keep, y / (1.0 - rate), 0).astype(y.dtype)

        h = self.attn_norm(x)
        attn_out, cache = self.attn(h, positions, mask, cache, cache_index)
        attn_out = checkpoint_name(attn_out, "attention_out")
        if self.cfg.parallel_block:
            x = x + dropout(attn_out, 0) + dropout(self.mlp(h), 1)
        else:
            x = x + dropout(attn_out, 0)
            x = x + dropout(self.mlp(self.mlp_norm(x)), 1)
        return constrain(x, _ACT), cache


class Transformer(nnx.Module):
    """Parameters in, logits out. Layers are stacked on a leading ``layers`` axis and
    run with ``lax.scan`` (``scan_layers=True``) so compile time does not grow with depth.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embedder = Embedder(cfg, rngs=rngs)
        if cfg.scan_layers:

            @nnx.split_rngs(splits=cfg.num_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
            def make_blocks(rngs: nnx.Rngs) -> Block:
                return Block(cfg, rngs=rngs)

            self.blocks = make_blocks(rngs)
        else:
            self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.final_norm = RMSNorm(cfg, rngs=rngs)
        if not cfg.tie_embeddings:
            init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
            self.lm_head = nnx.Param(
                init(rngs.params(), (cfg.d_model, cfg.vocab_size), jnp.dtype(cfg.param_dtype)),
                out_sharding=("embed", "vocab"),
            )

    def __call__(
        self,
        tokens: jax.Array,  # [batch, length] int
        positions: jax.Array,  # [batch, length] int, RoPE positions
        *,
        segment_ids: jax.Array | None = None,  # [batch, length], 0 = padding
        prefix_mask: jax.Array | None = None,  # [batch, length], 1 = bidirectional prefix
        cache: Cache | None = None,  # {"k","v": [layers, b, s, kv, hd], "segment_ids",
        # "prefix_mask": [b, s], "index": [] int}
        dropout_rng: jax.Array | None = None,
    ) -> tuple[jax.Array, Cache | None]:
        """Returns (logits [batch, length, vocab] float32, updated cache or None)."""
        x, new_cache = self.hidden_states(
            tokens,
            positions,
            segment_ids=segment_ids,
            prefix_mask=prefix_mask,
            cache=cache,
            dropout_rng=dropout_rng,
        )
        return self.logits(x), new_cache

    def hidden_states(
        self,
        tokens: jax.Array | None,
        positions: jax.Array,
        *,
        segment_ids: jax.Array | None = None,
        prefix_mask: jax.Array | None = None,
        cache: Cache | None = None,
        dropout_rng: jax.Array | None = None,
        inputs_embeds: jax.Array | None = None,
    ) -> tuple[jax.Array, Cache | None]:
        """As ``__call__`` up to the final norm: ([batch, length, embed], cache or None).
        The train step projects these to logits a chunk at a time (``loss_chunk_length``).
        ``inputs_embeds`` [batch, length, embed] replaces the token embeddings (``tokens``
        None): the acoustic stage feeds mel frames and units through the same blocks."""
        b, length = (tokens if inputs_embeds is None else inputs_embeds).shape[:2]
        if segment_ids is None:
            segment_ids = jnp.ones((b, length), jnp.int32)
        q_index = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))

        if cache is None:
            mask = attention_mask(
                segment_ids, segment_ids, q_index, q_index, prefix_mask, prefix_mask
            )
            layer_caches, index = None, None
        else:
            index = cache["index"]
            cache_len = cache["k"].shape[2]
            kv_segments = jax.lax.dynamic_update_slice(
                cache["segment_ids"], segment_ids, (0, index)
            )
            kv_prefix = None
            if prefix_mask is not None:
                kv_prefix = jax.lax.dynamic_update_slice(
                    cache["prefix_mask"], prefix_mask.astype(cache["prefix_mask"].dtype), (0, index)
                )
            kv_index = jnp.broadcast_to(jnp.arange(cache_len, dtype=jnp.int32), (b, cache_len))
            mask = attention_mask(
                segment_ids, kv_segments, q_index + index, kv_index, prefix_mask, kv_prefix
            )
            layer_caches = {"k": cache["k"], "v": cache["v"]}

        x = self.embedder.encode(tokens) if inputs_embeds is None else inputs_embeds
        x = constrain(x, _ACT)
        x, new_layer_caches = self._run_blocks(x, positions, mask, layer_caches, index, dropout_rng)
        x = self.final_norm(x)

        new_cache = None
        if cache is not None:
            new_cache = dict(new_layer_caches)
            new_cache["segment_ids"] = kv_segments
            new_cache["prefix_mask"] = cache["prefix_mask"] if kv_prefix is None else kv_prefix
            new_cache["index"] = index + length
        return x, new_cache

    def output_weight(self) -> jax.Array:
        """The output projection [embed, vocab] in the compute dtype (tied: the embedding)."""
        dt = jnp.dtype(self.cfg.dtype)
        if self.cfg.tie_embeddings:
            return self.embedder.embedding[...].astype(dt).T
        return self.lm_head[...].astype(dt)

    def logits(self, x: jax.Array, weight: jax.Array | None = None) -> jax.Array:
        """Final-norm states [..., embed] -> logits [..., vocab] float32. ``weight``:
        ``output_weight()``, taken once by a caller that projects chunk by chunk."""
        cfg = self.cfg
        w = self.output_weight() if weight is None else weight
        logits = dense(x, w, 1, cfg.weight_grad).astype(jnp.float32)
        if cfg.final_logit_softcap:
            logits = jnp.tanh(logits / cfg.final_logit_softcap) * cfg.final_logit_softcap
        names = ("activation_batch", "activation_length")[: x.ndim - 1]
        return constrain(logits, (*names, "activation_vocab"))

    def _run_blocks(self, x, positions, mask, caches, index, dropout_rng):
        cfg = self.cfg
        if cfg.scan_layers:
            graphdef, params = nnx.split(self.blocks)
        else:
            splits = [nnx.split(block) for block in self.blocks]
            graphdef = splits[0][0]  # every block has the same structure
            params = jax.tree.map(lambda *p: jnp.stack(p), *[p for _, p in splits])

        def apply(layer_params, x, cache, layer):
            rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng, layer)
            block = nnx.merge(graphdef, layer_params)
            return block(x, positions, mask, cache, index, rng)

        if cfg.remat_policy != "none":
            apply = jax.checkpoint(apply, policy=REMAT_POLICIES[cfg.remat_policy])

        def body(carry, xs):
            layer_params, layer_cache, layer = xs
            return apply(layer_params, carry, layer_cache, layer)

        layers = jnp.arange(cfg.num_layers, dtype=jnp.int32)
        if cfg.scan_layers:
            return jax.lax.scan(body, x, (params, caches, layers))
        # Unrolled: one copy of the block per layer in the compiled program.
        new = []
        for i in range(cfg.num_layers):
            x, c = body(x, jax.tree.map(lambda a, i=i: a[i], (params, caches, layers)))
            new.append(c)
        stacked = None if caches is None else jax.tree.map(lambda *c: jnp.stack(c), *new)
        return x, stacked


def init_cache(cfg: ModelConfig, batch: int, max_length: int, dtype: str | None = None) -> Cache:
    """An empty KV cache for ``max_length`` slots (prompt + generated tokens)."""
    dt = jnp.dtype(dtype or cfg.dtype)
    shape = (cfg.num_layers, batch, max_length, cfg.num_kv_heads, cfg.head_dim)
    return {
        "k": jnp.zeros(shape, dt),
        "v": jnp.zeros(shape, dt),
        # Empty slots belong to segment -1, which no query has: they are never attended.
        "segment_ids": jnp.full((batch, max_length), -1, jnp.int32),
        "prefix_mask": jnp.zeros((batch, max_length), jnp.int32),
        "index": jnp.zeros((), jnp.int32),
    }
