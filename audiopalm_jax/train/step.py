"""Train state born sharded, and the jitted train step (with gradient accumulation)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from audiopalm_jax import sharding
from audiopalm_jax.model import ModelConfig, Transformer
from audiopalm_jax.train.loss import LOSS_SUM_KEYS, weighted_cross_entropy

State = dict[str, Any]  # {"step": int32[], "params": {...}, "opt_state": optax state}
BATCH_KEYS = ("inputs", "targets", "loss_weights", "segment_ids", "positions", "prefix_mask")


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    """Everything static about a training run's state: structure, shardings, functions."""

    model_config: ModelConfig
    graphdef: nnx.GraphDef
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    mesh: Mesh
    rules: tuple
    abstract_state: State  # ShapeDtypeStructs with .sharding set
    state_shardings: State
    param_logical_specs: Any

    @property
    def batch_sharding(self) -> NamedSharding:
        return sharding.batch_sharding(self.mesh, self.rules)


def abstract_model(cfg: ModelConfig) -> tuple[nnx.GraphDef, Any, Any]:
    """(graphdef, abstract params, logical PartitionSpecs) without allocating anything.

    Plain ``jax.eval_shape``: ``nnx.eval_shape`` under a global mesh would read the
    logical names as mesh axes.
    """
    static = {}

    def build():
        graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)), nnx.Param)
        static["graphdef"] = graphdef
        static["specs"] = nnx.to_pure_dict(nnx.get_partition_spec(params))
        return nnx.to_pure_dict(params)

    abstract = jax.eval_shape(build)
    return static["graphdef"], abstract, static["specs"]


def _opt_state_spec(path, leaf, param_specs: dict, param_shapes: dict) -> PartitionSpec:
    """Optimizer-state leaves mirror a parameter (Adam moments) or drop one of its axes
    (Adafactor's factored row/column statistics drop one of the two largest dims);
    anything else (counts, placeholders) is replicated."""
    keys = tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
    for start in range(len(keys)):
        suffix = keys[start:]
        if suffix not in param_specs:
            continue
        spec, shape = tuple(param_specs[suffix]), tuple(param_shapes[suffix])
        spec = spec + (None,) * (len(shape) - len(spec))
        if leaf.shape == shape:
            return PartitionSpec(*spec)
        if len(leaf.shape) == len(shape) - 1:
            for dim in reversed(range(len(shape))):
                if leaf.shape == shape[:dim] + shape[dim + 1 :]:
                    return PartitionSpec(*(spec[:dim] + spec[dim + 1 :]))
        return PartitionSpec()
    return PartitionSpec()


def _flatten_by_path(tree) -> dict[tuple[str, ...], Any]:
    flat = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )[0]
    return {tuple(str(getattr(k, "key", k)) for k in path): v for path, v in flat}


def make_setup(
    model_config: ModelConfig,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    rules,
) -> TrainSetup:
    """Derives the abstract train state and its shardings from the logical axis names."""
    rules = sharding.normalize_rules(rules)
    graphdef, abstract_params, logical = abstract_model(model_config)
    abstract = {
        "step": jax.ShapeDtypeStruct((), jnp.int32),
        "params": abstract_params,
        "opt_state": jax.eval_shape(tx.init, abstract_params),
    }
    param_specs = _flatten_by_path(logical)
    param_shapes = {k: v.shape for k, v in _flatten_by_path(abstract_params).items()}

    def leaf_sharding(path, leaf):
        names = [str(getattr(k, "key", "")) for k in path]
        if names and names[0] == "params":
            spec = param_specs[tuple(str(getattr(k, "key", k)) for k in path[1:])]
        elif names and names[0] == "opt_state":
            spec = _opt_state_spec(path[1:], leaf, param_specs, param_shapes)
        else:
            spec = PartitionSpec()
        mesh_spec = sharding.logical_to_spec(tuple(spec), rules, mesh, leaf.shape)
        return NamedSharding(mesh, mesh_spec)

    shardings = jax.tree_util.tree_map_with_path(leaf_sharding, abstract)
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return TrainSetup(
        model_config, graphdef, tx, schedule, mesh, rules, abstract, shardings, logical
    )


def init_state(setup: TrainSetup, seed: int, params: Mapping | None = None) -> State:
    """A fresh train state, created directly in its shardings (never whole on one device).

    ``params``: host arrays to start from (e.g. an imported HF checkpoint) instead of
    random init.
    """
    cfg, tx = setup.model_config, setup.tx
    if params is None:

        def init_fn(rng):
            model = Transformer(cfg, rngs=nnx.Rngs(params=rng))
            p = nnx.to_pure_dict(nnx.state(model, nnx.Param))
            return {"step": jnp.zeros((), jnp.int32), "params": p, "opt_state": tx.init(p)}

        return jax.jit(init_fn, out_shardings=setup.state_shardings)(jax.random.key(seed))
    placed = jax.device_put(
        jax.tree.map(
            lambda a, s: np.asarray(a, s.dtype), dict(params), setup.abstract_state["params"]
        ),
        setup.state_shardings["params"],
    )

    def with_opt(p):
        return {"step": jnp.zeros((), jnp.int32), "params": p, "opt_state": tx.init(p)}

    return jax.jit(with_opt, out_shardings=setup.state_shardings)(placed)


def batch_loss_sums(
    graphdef: nnx.GraphDef,
    params: Any,
    batch: Mapping,
    z_loss: float = 0.0,
    dropout_rng=None,
    loss_chunk_length: int = 0,
) -> dict[str, jax.Array]:
    """The model on a training-format batch -> summed loss statistics (see loss.py).

    ``loss_chunk_length`` > 0: the output projection and the loss run over that many
    positions at a time, each chunk's logits recomputed in the backward pass, so the
    [batch, length, vocab] f32 logits never exist whole (the largest buffers of a big-vocab
    step). Same sums up to float rounding.
    """
    model = nnx.merge(graphdef, nnx.State(params))
    x, _ = model.hidden_states(
        batch["inputs"],
        batch["positions"],
        segment_ids=batch["segment_ids"],
        prefix_mask=batch["prefix_mask"],
        dropout_rng=dropout_rng,
    )  # [batch, length, embed]
    targets, weights = batch["targets"], batch["loss_weights"]
    length = x.shape[1]
    if not loss_chunk_length or loss_chunk_length >= length:
        return weighted_cross_entropy(model.logits(x), targets, weights, z_loss)
    if length % loss_chunk_length:
        raise ValueError(
            f"loss_chunk_length={loss_chunk_length} does not divide the sequence length "
            f"{length}; use a divisor of it, or 0 for the whole sequence"
        )
    n = length // loss_chunk_length

    # Taken once and passed to every chunk: the backward pass then sums the chunks'
    # gradients of it before one reduction (closed over instead, each chunk reduced its
    # own: 9 full-weight collectives instead of 3 in the 8B's v5p-128 program).
    w_out = model.output_weight()

    def chunks(a):  # [batch, length, ...] -> [n, batch, chunk, ...]
        return jnp.moveaxis(a.reshape(a.shape[0], n, loss_chunk_length, *a.shape[2:]), 1, 0)

    @jax.checkpoint
    def chunk_sums(h, w_out, t, w):
        return weighted_cross_entropy(model.logits(h, w_out), t, w, z_loss)

    def body(acc, xs):
        h, t, w = xs
        return jax.tree.map(jnp.add, acc, chunk_sums(h, w_out, t, w)), None

    # A scan, not a Python loop: it runs the chunks one after another (unrolled, XLA may
    # schedule several chunks' logits at once, which cost more memory than it saved).
    zeros = {k: jnp.zeros((), jnp.float32) for k in LOSS_SUM_KEYS}
    sums, _ = jax.lax.scan(body, zeros, (chunks(x), chunks(targets), chunks(weights)))
    return sums


def make_train_step(
    setup: TrainSetup,
    *,
    seed: int,
    z_loss: float = 0.0,
    grad_accum_steps: int = 1,
    loss_chunk_length: int = 0,
) -> Callable[[State, dict], tuple[State, dict]]:
    """The jitted step: explicit in/out shardings, the state donated."""
    graphdef, tx, schedule = setup.graphdef, setup.tx, setup.schedule
    use_dropout = setup.model_config.dropout_rate > 0
    batch_spec = setup.batch_sharding.spec

    def loss_fn(params, mb, rng):
        sums = batch_loss_sums(graphdef, params, mb, z_loss, rng, loss_chunk_length)
        return sums["loss_sum"], sums

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: State, batch: dict) -> tuple[State, dict]:
        params = state["params"]
        rng = jax.random.fold_in(jax.random.key(seed), state["step"]) if use_dropout else None
        if grad_accum_steps == 1:
            (_, sums), grads = grad_fn(params, batch, rng)
        else:
            # Micro-batch j takes rows j, j+k, j+2k...: every device keeps working on each.
            def split(x):
                b = x.shape[0]
                x = x.reshape((b // grad_accum_steps, grad_accum_steps) + x.shape[1:])
                return jnp.swapaxes(x, 0, 1)

            micro = jax.tree.map(split, batch)

            def accumulate(carry, mb):
                mb = jax.tree.map(
                    lambda x: (
                        jax.lax.with_sharding_constraint(x, batch_spec)
                        if not setup.mesh.empty and setup.mesh.size > 1
                        else x
                    ),
                    mb,
                )
                i, g_acc, s_acc = carry
                r = None if rng is None else jax.random.fold_in(rng, i)
                (_, sums), g = grad_fn(params, mb, r)
                return (
                    i + 1,
                    jax.tree.map(jnp.add, g_acc, g),
                    jax.tree.map(jnp.add, s_acc, sums),
                ), None

            zeros_g = jax.tree.map(jnp.zeros_like, params)
            zeros_s = {k: jnp.zeros((), jnp.float32) for k in LOSS_SUM_KEYS}
            (_, grads, sums), _ = jax.lax.scan(accumulate, (0, zeros_g, zeros_s), micro)
        total = jnp.maximum(sums["weight_sum"], 1.0)
        grads = jax.tree.map(lambda g: g / total, grads)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        metrics = {
            "loss": sums["loss_sum"] / total,
            "z_loss": sums["z_loss_sum"] / total,
            "accuracy": sums["correct_sum"] / total,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": schedule(state["step"]),
            "target_tokens": sums["weight_sum"],
        }
        new_state = {"step": state["step"] + 1, "params": new_params, "opt_state": opt_state}
        return new_state, metrics

    batch_shardings = {k: setup.batch_sharding for k in BATCH_KEYS}
    return jax.jit(
        step,
        in_shardings=(setup.state_shardings, batch_shardings),
        out_shardings=(setup.state_shardings, None),
        donate_argnums=0,
    )


def make_eval_step(setup: TrainSetup, loss_chunk_length: int = 0) -> Callable[[dict, dict], dict]:
    """Jitted loss sums on a batch (no dropout, no update)."""
    graphdef = setup.graphdef

    def evaluate(params, batch):
        return batch_loss_sums(graphdef, params, batch, loss_chunk_length=loss_chunk_length)

    batch_shardings = {k: setup.batch_sharding for k in BATCH_KEYS}
    return jax.jit(evaluate, in_shardings=(setup.state_shardings["params"], batch_shardings))


def global_batch(setup: TrainSetup, local: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """Assembles global arrays from each process's rows (multi-host safe)."""
    return {
        k: jax.make_array_from_process_local_data(setup.batch_sharding, np.asarray(local[k]))
        for k in BATCH_KEYS
    }
