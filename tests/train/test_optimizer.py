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


def test_muon_orthogonalizes_each_layer_projection_and_adamw_updates_the_rest(load_config):
    """Muon on the scanned model equals optax's plain 2-D Muon applied to every layer's
    projection written as an [inputs, outputs] matrix, and AdamW on the rest."""
    import jax

    from audiopalm_jax.model import ModelConfig
    from audiopalm_jax.train.step import abstract_model

    c = load_config("tiny")
    model_cfg = ModelConfig.from_dict({**c.model.to_dict(), "vocab_size": 256})
    _, abstract, specs = abstract_model(model_cfg)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), abstract)
    grads = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), abstract)
    opt = dict(name="muon", learning_rate=0.1, weight_decay=0.0, clip_norm=0.0, b2=0.99)
    tx, _ = make_optimizer(opt, 10, specs)
    state = tx.init(params)
    for _ in range(2):  # the second step also reads the momentum and Adam's moments
        updates, state = tx.update(grads, state, params)

    # Every scanned projection as 2-D matrices [inputs, outputs], one per layer.
    attn, mlp = grads["blocks"]["attn"], grads["blocks"]["mlp"]
    layers, embed = attn["q"].shape[:2]
    as_2d = {
        "q": attn["q"].reshape(layers, embed, -1),
        "k": attn["k"].reshape(layers, embed, -1),
        "v": attn["v"].reshape(layers, embed, -1),
        "o": attn["o"].reshape(layers, -1, embed),
        "gate": mlp["gate"],
        "up": mlp["up"],
        "down": mlp["down"],
    }
    matrices = {f"{k}{i}": m[i] for k, m in as_2d.items() for i in range(layers)}
    reference = optax.contrib.muon(0.1, consistent_rms=0.2, adam_b2=0.99)
    ref_state = reference.init(matrices)
    for _ in range(2):
        ref_updates, ref_state = reference.update(matrices, ref_state, matrices)
    got = {
        **{k: updates["blocks"]["attn"][k] for k in ("q", "k", "v", "o")},
        **{k: updates["blocks"]["mlp"][k] for k in ("gate", "up", "down")},
    }
    for name, update in got.items():
        for i in range(layers):
            np.testing.assert_allclose(
                np.asarray(update[i]).reshape(as_2d[name].shape[1:]),
                ref_updates[f"{name}{i}"],
                rtol=2e-4,
                atol=2e-6,
                err_msg=f"{name} layer {i}",
            )

    # Embeddings and norm scales: AdamW (optax's muon uses Nesterov momentum there).
    rest = {
        "embedding": grads["embedder"]["embedding"],
        "final_norm": grads["final_norm"]["scale"],
        "attn_norm": grads["blocks"]["attn_norm"]["scale"],
    }
    adam = optax.adamw(0.1, b1=0.9, b2=0.99, weight_decay=0.0, nesterov=True)
    adam_state = adam.init(rest)
    for _ in range(2):
        adam_updates, adam_state = adam.update(rest, adam_state, rest)
    np.testing.assert_allclose(
        updates["embedder"]["embedding"], adam_updates["embedding"], rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        updates["blocks"]["attn_norm"]["scale"], adam_updates["attn_norm"], rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        updates["final_norm"]["scale"], adam_updates["final_norm"], rtol=1e-5, atol=1e-7
    )
    with pytest.raises(ValueError, match="logical specs"):
        make_optimizer(opt, 10)
