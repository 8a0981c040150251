"""Decoder behaviour beyond HF parity: prefix-LM, KV cache, remat, logical axis names."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from audiopalm_jax.model import ModelConfig, Transformer, init_cache, layers

CFG = ModelConfig(
    vocab_size=128, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64
)
LOGICAL = {"vocab", "embed", "mlp", "heads", "kv_heads", "head_dim", "layers"}


def _model(**overrides):
    return Transformer(dataclasses.replace(CFG, **overrides), rngs=nnx.Rngs(0))


def _inputs(b=2, n=10, seed=0):
    tokens = jax.random.randint(jax.random.key(seed), (b, n), 0, CFG.vocab_size)
    return tokens, jnp.broadcast_to(jnp.arange(n), (b, n))


def test_every_parameter_has_logical_axis_names():
    for scan in (True, False):
        state = nnx.state(_model(scan_layers=scan, tie_embeddings=False, qkv_bias=True), nnx.Param)
        for path, var in jax.tree_util.tree_flatten_with_path(
            state, is_leaf=lambda x: isinstance(x, nnx.Variable)
        )[0]:
            names = var.get_metadata().get("out_sharding")
            assert names is not None and len(names) == var.ndim, path
            assert set(names) <= LOGICAL, (path, names)


def test_causal_without_prefix_and_bidirectional_within_prefix():
    model = _model()
    tokens, pos = _inputs(1, 8)
    changed = tokens.at[0, 5].set((tokens[0, 5] + 1) % CFG.vocab_size)
    base, _ = model(tokens, pos)
    after, _ = model(changed, pos)
    np.testing.assert_allclose(base[0, :5], after[0, :5], atol=1e-6)  # causal: no peeking
    prefix = jnp.array([[1] * 6 + [0] * 2])
    base_p, _ = model(tokens, pos, prefix_mask=prefix)
    after_p, _ = model(changed, pos, prefix_mask=prefix)
    assert np.abs(np.asarray(base_p[0, :5] - after_p[0, :5])).max() > 1e-4  # prefix sees ahead
    # ...but tokens after the prefix still cannot see the future.
    changed_late = tokens.at[0, 7].set((tokens[0, 7] + 1) % CFG.vocab_size)
    after_late, _ = model(changed_late, pos, prefix_mask=prefix)
    np.testing.assert_allclose(base_p[0, :7], after_late[0, :7], atol=1e-6)


@pytest.mark.parametrize("scan", [True, False])
def test_cached_decoding_equals_full_forward_with_prefix(scan):
    model = _model(scan_layers=scan)
    tokens, pos = _inputs(2, 10)
    prefix = jnp.array([[1] * 4 + [0] * 6] * 2)
    full, _ = model(tokens, pos, prefix_mask=prefix)
    cache = init_cache(model.cfg, 2, 16)
    out, cache = model(tokens[:, :4], pos[:, :4], prefix_mask=prefix[:, :4], cache=cache)
    outs = [out]
    for i in range(4, 10):
        out, cache = model(tokens[:, i : i + 1], pos[:, i : i + 1], cache=cache)
        outs.append(out)
    np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=1e-5)
    assert int(cache["index"]) == 10


@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch", "save_attention_out"])
def test_remat_policies_give_the_same_gradients(policy):
    tokens, pos = _inputs()

    def grads(model):
        def loss(m):
            return jnp.mean(m(tokens, pos)[0] ** 2)

        return nnx.grad(loss)(model)

    reference = grads(_model())
    other = grads(_model(remat_policy=policy))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        nnx.state(reference),
        nnx.state(other),
    )


@pytest.mark.parametrize("in_axes, w_shape", [(1, (6, 10)), (1, (10, 3)), (2, (2, 5, 3))])
def test_dense_explicit_transpose_matches_tensordot_gradients(in_axes, w_shape):
    # Both branches of the weight gradient (input narrower / wider than the output) and a
    # two-axis contraction (the attention output projection), against jax's own autodiff.
    x = jax.random.normal(jax.random.key(0), (3, 4, *w_shape[:in_axes]))
    w = jax.random.normal(jax.random.key(1), w_shape)
    dy = jax.random.normal(jax.random.key(2), (3, 4, *w_shape[in_axes:]))

    def loss(mode):
        return lambda x, w: jnp.sum(layers.dense(x, w, in_axes, mode) * dy)

    want = jax.grad(lambda x, w: jnp.sum(jnp.tensordot(x, w, in_axes) * dy), (0, 1))(x, w)
    for mode in ("explicit_transpose", "xla", "auto"):
        got = jax.jit(jax.grad(loss(mode), (0, 1)))(x, w)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        layers.dense(x, w, in_axes, "explicit_transpose"),
        jnp.tensordot(x, w, in_axes),
        rtol=1e-5,
        atol=1e-5,
    )


def test_weight_grad_modes_give_the_same_model_gradients():
    tokens, pos = _inputs()

    def grads(model):
        return nnx.grad(lambda m: jnp.mean(m(tokens, pos)[0] ** 2))(model)

    reference = grads(_model(weight_grad="xla", tie_embeddings=False, qkv_bias=True))
    other = grads(_model(weight_grad="explicit_transpose", tie_embeddings=False, qkv_bias=True))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        nnx.state(reference),
        nnx.state(other),
    )


@pytest.mark.parametrize("kv_heads", [2, 4])  # grouped-query and multi-head
@pytest.mark.parametrize("softcap", [None, 3.0])
def test_attention_gradients_match_autodiff_of_plain_softmax(kv_heads, softcap):
    """The attention's own backward (probabilities recomputed from the log-sum-exp)
    against JAX autodiff of a plain softmax, over a packed, prefixed, padded mask."""
    b, n, h, hd = 2, 11, 4, 8
    shapes = [(b, n, h, hd), (b, n, kv_heads, hd), (b, n, kv_heads, hd), (b, n, h, hd)]
    keys = jax.random.split(jax.random.key(3), len(shapes))
    q, k, v, d_out = (jax.random.normal(key, s) for key, s in zip(keys, shapes, strict=True))
    segments = jnp.array([[1] * 6 + [2] * 5, [1] * 9 + [0] * 2])
    prefix = jnp.array([[1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0], [1] * 4 + [0] * 7])
    index = jnp.broadcast_to(jnp.arange(n), (b, n))
    mask = layers.attention_mask(segments, segments, index, index, prefix, prefix)

    def plain(q, k, v):
        group = h // kv_heads
        kr, vr = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
        scores = jnp.einsum("blhd,bshd->bhls", q, kr)
        if softcap:
            scores = jnp.tanh(scores / softcap) * softcap
        scores = jnp.where(mask[:, None], scores, -jnp.inf)
        return jnp.einsum("bhls,bshd->blhd", jax.nn.softmax(scores, axis=-1), vr)

    def ours(q, k, v):
        return layers._dot_product_attention(q, k, v, mask, softcap)

    out, vjp = jax.vjp(ours, q, k, v)
    expected_out, expected_vjp = jax.vjp(plain, q, k, v)
    np.testing.assert_allclose(out, expected_out, rtol=1e-5, atol=1e-5)
    for got, expected in zip(vjp(d_out), expected_vjp(d_out), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kv_heads", [2, 4])  # grouped-query and multi-head
def test_query_chunked_attention_matches_whole(kv_heads):
    """Chunks of 4 queries over 11 positions (a padded last chunk), two packed segments
    with prefixes, soft-capped scores: same logits and gradients as all queries at once."""
    tokens, pos = _inputs(2, 11)
    segments = jnp.array([[1] * 6 + [2] * 5, [1] * 9 + [0] * 2])
    pos = jnp.array([list(range(6)) + list(range(5)), list(range(9)) + [0, 0]])
    prefix = jnp.array([[1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0], [1] * 4 + [0] * 7])
    kw = dict(num_kv_heads=kv_heads, attn_logit_softcap=3.0)

    def logits_and_grads(model):
        def loss(m):
            logits = m(tokens, pos, segment_ids=segments, prefix_mask=prefix)[0]
            return jnp.mean(logits**2), logits

        (_, logits), grads = nnx.value_and_grad(loss, has_aux=True)(model)
        return logits, nnx.state(grads)

    whole, whole_grads = logits_and_grads(_model(**kw))
    chunked, chunked_grads = logits_and_grads(_model(attention_chunk_length=4, **kw))
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
        chunked_grads,
        whole_grads,
    )

    # The chunk loop is in the program (the equality above is not two whole-attention runs).
    def loops(model):
        graphdef, params = nnx.split(model)
        forward = jax.jit(lambda p: nnx.merge(graphdef, p)(tokens, pos)[0])
        return forward.lower(params).as_text().count("stablehlo.while")

    assert loops(_model(attention_chunk_length=4, **kw)) == loops(_model(**kw)) + 1


def test_parallel_block_softcap_and_embedding_scale():
    model = _model(
        parallel_block=True,
        final_logit_softcap=2.0,
        attn_logit_softcap=5.0,
        scale_embeddings=True,
        norm_plus_one=True,
        mlp_type="geglu",
    )
    assert not hasattr(model.blocks, "mlp_norm")
    logits, _ = model(*_inputs())
    assert np.abs(np.asarray(logits)).max() <= 2.0
    assert np.isfinite(np.asarray(logits)).all()


def test_bf16_compute_stays_close_to_f32():
    tokens, pos = _inputs()
    f32, _ = _model()(tokens, pos)
    bf16, _ = _model(dtype="bfloat16")(tokens, pos)
    assert bf16.dtype == jnp.float32  # logits are always f32 for the loss
    np.testing.assert_allclose(bf16, f32, atol=5e-2)


def test_config_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="mlp_type='relu'"):
        dataclasses.replace(CFG, mlp_type="relu")
    with pytest.raises(ValueError, match="num_heads=4 must be a multiple of num_kv_heads=3"):
        dataclasses.replace(CFG, num_kv_heads=3)
    with pytest.raises(ValueError, match="weight_grad='fast'; allowed: auto, explicit_transpose"):
        dataclasses.replace(CFG, weight_grad="fast")
    with pytest.raises(ValueError, match="attention_chunk_length=-1"):
        dataclasses.replace(CFG, attention_chunk_length=-1)
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"vocab_size": 8, "d_modle": 3})


def test_num_params_counts_the_real_parameters():
    for kw in ({}, {"tie_embeddings": False, "qkv_bias": True}, {"parallel_block": True}):
        model = _model(**kw)
        n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        assert model.cfg.num_params() == n, kw


def test_scanned_program_does_not_grow_with_depth():
    """Scanned layers compile one block whatever the depth; unrolled ones one per layer."""

    def hlo_size(num_layers, scan):
        cfg = dataclasses.replace(CFG, num_layers=num_layers, scan_layers=scan)
        graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
        tokens, pos = _inputs()

        def forward(p):
            return nnx.merge(graphdef, p)(tokens, pos)[0]

        return len(jax.jit(forward).lower(params).as_text())

    assert hlo_size(6, True) < 1.1 * hlo_size(2, True)
    assert hlo_size(6, False) > 2 * hlo_size(2, False)
