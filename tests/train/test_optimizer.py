"""Schedules and weight-decay masks."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from audiopalm_jax.train.loss import weighted_cross_entropy
from audiopalm_jax.train.optimizer import decay_mask, make_optimizer, make_schedule

BASE = dict(learning_rate=1.0, warmup_steps=10, end_learning_rate=0.1, decay_steps=100)


@pytest.mark.parametrize("kind", ["constant", "cosine", "linear", "exponential", "rsqrt"])
def test_warmup_then_decay(kind):
    s = make_schedule({**BASE, "schedule": kind}, 1000)
    assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(0.5)
    assert float(s(10)) == pytest.approx(1.0)
    later = float(s(60))
    if kind == "constant":
        assert later == pytest.approx(1.0)
    else:
        assert 0.0 < later < 1.0
    if kind in ("cosine", "linear", "exponential"):
        assert float(s(110)) == pytest.approx(0.1, rel=1e-4)


def test_unknown_schedule_and_optimizer():
    with pytest.raises(ValueError, match="schedule='step'"):
        make_schedule({**BASE, "schedule": "step"}, 10)
    with pytest.raises(ValueError, match="name='sgd'"):
        make_optimizer({**BASE, "name": "sgd"}, 10)


def test_decay_mask_skips_norms_biases_embeddings():
    params = {
        "embedder": {"embedding": 0},
        "final_norm": {"scale": 0},
        "blocks": {"attn": {"q": 0, "q_bias": 0}, "attn_norm": {"scale": 0}},
    }
    mask = decay_mask(params, False)
    assert mask == {
        "embedder": {"embedding": False},
        "final_norm": {"scale": False},
        "blocks": {"attn": {"q": True, "q_bias": False}, "attn_norm": {"scale": False}},
    }
    assert all(optax.tree_utils.tree_get(decay_mask(params, True), k) is not False for k in ("q",))


def test_weighted_cross_entropy_matches_optax():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 5, 11)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 11, (2, 5)))
    weights = jnp.asarray(rng.integers(0, 2, (2, 5)), jnp.float32)
    out = weighted_cross_entropy(logits, targets, weights, z_loss=0.0)
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    np.testing.assert_allclose(out["loss_sum"], float((expected * weights).sum()), rtol=1e-6)
    assert float(out["weight_sum"]) == float(weights.sum())
    z = weighted_cross_entropy(logits, targets, weights, z_loss=1e-2)
    assert float(z["loss_sum"]) > float(out["loss_sum"])
