"""The train step's loss sums: chunked output projection against the whole sequence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from audiopalm_jax.model import ModelConfig, Transformer
from audiopalm_jax.train.step import batch_loss_sums
from audiopalm_jax.train.synthetic import synthetic_batch


@pytest.mark.parametrize("tied", [True, False])
def test_chunked_loss_sums_and_grads_match_whole_sequence(tied):
    cfg = ModelConfig(
        vocab_size=384,
        d_model=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        mlp_dim=128,
        tie_embeddings=tied,
        final_logit_softcap=30.0,
    )
    graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    batch = {k: jnp.asarray(v) for k, v in synthetic_batch(0, 0, 4, 64, 384).items()}

    def sums(p, chunk):
        return batch_loss_sums(graphdef, p, batch, z_loss=1e-3, loss_chunk_length=chunk)

    whole = sums(params, 0)
    assert float(whole["weight_sum"]) > 0 and float(whole["z_loss_sum"]) > 0
    for chunk in (16, 32):
        got = sums(params, chunk)
        for k in whole:
            np.testing.assert_allclose(got[k], whole[k], rtol=1e-5, err_msg=k)

    def loss(p, chunk):
        return sums(p, chunk)["loss_sum"]

    g_whole = jax.grad(loss)(params, 0)
    g_chunk = jax.grad(loss)(params, 16)
    for a, b in zip(jax.tree.leaves(g_whole), jax.tree.leaves(g_chunk), strict=True):
        # f32 sums in another order: compare at the scale of each gradient.
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(a))))


def test_chunk_that_does_not_divide_the_sequence_is_an_error():
    cfg = ModelConfig(
        vocab_size=256, d_model=32, num_layers=1, num_heads=2, num_kv_heads=2, head_dim=16
    )
    graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    batch = {k: jnp.asarray(v) for k, v in synthetic_batch(0, 0, 2, 64, 256).items()}
    with pytest.raises(ValueError, match="loss_chunk_length=24 does not divide .* 64"):
        batch_loss_sums(graphdef, params, batch, loss_chunk_length=24)
