"""Sharded training matches a single-device run; parameters land where the rules say."""

import dataclasses

import jax
import numpy as np
import optax
import optax.contrib
import pytest
from jax.sharding import PartitionSpec as P

from audiopalm_jax import sharding
from audiopalm_jax.model import ModelConfig
from audiopalm_jax.train.optimizer import make_optimizer
from audiopalm_jax.train.step import (
    abstract_model,
    global_batch,
    init_state,
    make_setup,
    make_train_step,
)
from audiopalm_jax.train.synthetic import synthetic_batch

CFG = ModelConfig(
    vocab_size=256,
    d_model=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    mlp_dim=128,
)


def _losses(
    mesh_config, devices, optimizer="adamw", accum=1, steps=5, loss_chunk=0, attention_chunk=0
):
    mesh = sharding.make_mesh(mesh_config, devices)
    tx, schedule = make_optimizer(
        dict(
            name=optimizer,
            learning_rate=1e-2,
            warmup_steps=2,
            schedule="cosine",
            clip_norm=1.0,
            weight_decay=0.1,
            min_dim_size_to_factor=32,
        ),
        10,
        abstract_model(CFG)[2],
    )
    with jax.set_mesh(mesh), sharding.axis_rules(sharding.DEFAULT_RULES):
        cfg = dataclasses.replace(CFG, attention_chunk_length=attention_chunk)
        setup = make_setup(cfg, tx, schedule, mesh, sharding.DEFAULT_RULES)
        state = init_state(setup, seed=0)
        step = make_train_step(setup, seed=0, grad_accum_steps=accum, loss_chunk_length=loss_chunk)
        losses = []
        for i in range(steps):
            state, metrics = step(state, global_batch(setup, synthetic_batch(0, i, 8, 64, 256)))
            losses.append(float(metrics["loss"]))
    return np.array(losses), state


@pytest.fixture(scope="module")
def single_device():
    return {
        opt: _losses(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1], opt)[0]
        for opt in ("adamw", "adafactor", "muon")
    }


LAYOUTS = {
    "data8": (dict(data=8, fsdp=1, tensor=1), P()),
    "fsdp2x4": (dict(data=2, fsdp=4, tensor=1), P(None, "fsdp")),
    "tensor2x2x2": (dict(data=2, fsdp=2, tensor=2), P(None, "fsdp", "tensor")),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_matches_single_device(layout, single_device):
    mesh_config, gate_spec = LAYOUTS[layout]
    losses, state = _losses(mesh_config, jax.devices())
    np.testing.assert_allclose(losses, single_device["adamw"], rtol=1e-5)
    gate = state["params"]["blocks"]["mlp"]["gate"]  # [layers, embed, mlp]
    print(layout, "blocks/mlp/gate", gate.sharding.spec)
    assert gate.sharding.spec == gate_spec
    # Adam's moments live where their parameter lives.
    mu = state["opt_state"][1][0].mu["blocks"]["mlp"]["gate"]
    assert mu.sharding.spec == gate_spec
    assert losses[-1] < losses[0]


def test_adafactor_factored_state_sharded_and_matches(single_device):
    losses, state = _losses(dict(data=2, fsdp=2, tensor=2), jax.devices(), "adafactor")
    np.testing.assert_allclose(losses, single_device["adafactor"], rtol=1e-5)
    factored = state["opt_state"][1][0]  # optax adafactor's FactoredState
    v_row = factored.v_row["blocks"]["mlp"]["gate"]  # [layers, embed]
    assert v_row.sharding.spec == P(None, "fsdp")


def test_muon_momentum_sharded_and_matches(single_device):
    # Newton-Schulz runs on each layer's whole matrix; XLA gathers the shards it needs.
    losses, state = _losses(dict(data=2, fsdp=2, tensor=2), jax.devices(), "muon")
    np.testing.assert_allclose(losses, single_device["muon"], rtol=1e-5)
    assert losses[-1] < losses[0]
    is_muon = lambda x: isinstance(x, optax.contrib.MuonState)  # noqa: E731
    (muon_state,) = [s for s in jax.tree.leaves(state["opt_state"], is_leaf=is_muon) if is_muon(s)]
    mu = muon_state.mu["blocks"]["mlp"]["gate"]  # [layers, embed, mlp]
    assert mu.sharding.spec == P(None, "fsdp", "tensor")


def test_gradient_accumulation_matches_full_batch(single_device):
    losses, _ = _losses(dict(data=2, fsdp=2, tensor=2), jax.devices(), accum=2)
    np.testing.assert_allclose(losses, single_device["adamw"], rtol=1e-5)


def test_chunked_loss_and_attention_match_whole_sequence(single_device):
    # Logits and loss 16 positions at a time (4 chunks of the 64), attention 24 queries
    # at a time (a padded last chunk), sharded, accumulated.
    losses, _ = _losses(
        dict(data=2, fsdp=2, tensor=2), jax.devices(), accum=2, loss_chunk=16, attention_chunk=24
    )
    np.testing.assert_allclose(losses, single_device["adamw"], rtol=1e-5)


def test_mesh_fills_minus_one_and_rejects_bad_sizes():
    assert sharding.mesh_shape(dict(data=-1, fsdp=2, tensor=2), 8)[0] == (2, 2, 2)
    assert sharding.mesh_shape(dict(data=2, fsdp=-1, tensor=1, dcn_data=2), 8) == (
        (2, 2, 1),
        (2, 1, 1),
    )
    with pytest.raises(ValueError, match=r"data\*fsdp\*tensor=3\*1\*1=3 does not match the 8"):
        sharding.mesh_shape(dict(data=3, fsdp=1, tensor=1), 8)
    with pytest.raises(ValueError, match="cannot fill 8 devices"):
        sharding.mesh_shape(dict(data=-1, fsdp=3, tensor=1), 8)
    with pytest.raises(ValueError, match="at most one"):
        sharding.mesh_shape(dict(data=-1, fsdp=-1, tensor=1), 8)


def test_logical_rules_skip_non_dividing_and_used_axes():
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
    rules = sharding.DEFAULT_RULES
    assert sharding.logical_to_spec(("embed", "mlp"), rules, mesh, (64, 128)) == P("fsdp", "tensor")
    # kv_heads=1 cannot split over tensor=2: replicated rather than a compile error.
    assert sharding.logical_to_spec(
        ("embed", "kv_heads", "head_dim"), rules, mesh, (64, 1, 16)
    ) == P("fsdp")
    assert sharding.logical_to_spec(("activation_batch", None), rules, mesh, (8, 4)) == P(
        ("data", "fsdp")
    )
    with pytest.raises(ValueError, match="unknown mesh axis"):
        sharding.normalize_rules([("embed", "model")])
