"""Learning-rate schedules and optimizers (AdamW, Adafactor, Muon) from the config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax
import optax.contrib
from jax.sharding import PartitionSpec

SCHEDULES = ("constant", "cosine", "rsqrt", "exponential", "linear")
OPTIMIZERS = ("adamw", "adafactor", "muon")


def make_schedule(opt: Mapping[str, Any], num_train_steps: int) -> optax.Schedule:
    """Linear warm-up to ``learning_rate``, then the named decay.

    ``end_learning_rate`` is where cosine / linear / exponential decay arrive at
    ``decay_steps`` (default: the end of training).
    """
    lr = float(opt["learning_rate"])
    warmup = int(opt.get("warmup_steps", 0))
    kind = opt.get("schedule", "constant")
    end = float(opt.get("end_learning_rate", 0.0))
    decay_steps = int(opt.get("decay_steps", 0) or max(num_train_steps - warmup, 1))
    if kind == "constant":
        decay = optax.constant_schedule(lr)
    elif kind == "cosine":
        decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=end / lr if lr else 0.0)
    elif kind == "linear":
        decay = optax.linear_schedule(lr, end, decay_steps)
    elif kind == "exponential":
        # PaLM-2 style: lr * (end/lr) ** (t / decay_steps), floored at end.
        decay = optax.exponential_decay(
            lr, decay_steps, end / lr if lr and end else 0.1, end_value=end or None
        )
    elif kind == "rsqrt":
        timescale = max(warmup, 1)

        def decay(step):
            return lr * jax.lax.rsqrt((step + timescale) / timescale)
    else:
        raise ValueError(f"optimizer.schedule={kind!r}; allowed: {', '.join(SCHEDULES)}")
    if warmup <= 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def decay_mask(params: Any, decay_norms_and_embeddings: bool) -> Any:
    """True where weight decay applies: matrices, not norm scales, biases or embeddings."""

    def keep(path, _):
        names = [getattr(k, "key", getattr(k, "name", "")) for k in path]
        names = [str(n) for n in names]
        if decay_norms_and_embeddings:
            return True
        is_norm = any(n.endswith("norm") for n in names)
        is_bias = names[-1].endswith("bias")
        is_embedding = names[-1] == "embedding"
        return not (is_norm or is_bias or is_embedding)

    return jax.tree_util.tree_map_with_path(keep, params)


def muon_dimension_numbers(logical_specs: Any) -> Any:
    """Per parameter, which axes Muon orthogonalizes over, read from its logical names.

    A projection's input side is ``embed`` on the way in (q/k/v, MLP gate/up: embed ->
    the rest) and the rest on the way out (o, MLP down: the rest -> embed); ``layers`` is
    a batch axis (each scanned layer is its own matrix). Embeddings (``vocab``), norm
    scales and anything else get None: AdamW updates them.
    """

    def dims(spec):
        names = tuple(spec)
        axes = [i for i, n in enumerate(names) if n != "layers"]
        if "vocab" in names or len(axes) < 2:
            return None
        if names[axes[0]] == "embed":
            return optax.contrib.MuonDimensionNumbers(axes[0], tuple(axes[1:]))
        if names[axes[-1]] == "embed":
            return optax.contrib.MuonDimensionNumbers(tuple(axes[:-1]), axes[-1])
        return None

    return jax.tree.map(dims, logical_specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def make_optimizer(
    opt: Mapping[str, Any], num_train_steps: int, logical_specs: Any = None
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, schedule). Gradient accumulation is done by the train step itself.

    ``logical_specs``: the parameters' logical PartitionSpecs; Muon needs them to tell
    matrices (and their input and output axes) from embeddings and norm scales.
    """
    schedule = make_schedule(opt, num_train_steps)
    name = opt.get("name", "adamw")
    wd = float(opt.get("weight_decay", 0.0))
    mask = lambda p: decay_mask(p, bool(opt.get("decay_norms_and_embeddings", False)))  # noqa: E731
    chain = []
    if opt.get("clip_norm"):
        chain.append(optax.clip_by_global_norm(float(opt["clip_norm"])))
    if name == "adamw":
        chain.append(
            optax.adamw(
                schedule,
                b1=float(opt.get("b1", 0.9)),
                b2=float(opt.get("b2", 0.95)),
                eps=float(opt.get("eps", 1e-8)),
                weight_decay=wd,
                mask=mask,
            )
        )
    elif name == "adafactor":
        chain.append(
            optax.adafactor(
                schedule,
                multiply_by_parameter_scale=bool(opt.get("multiply_by_parameter_scale", False)),
                decay_rate=float(opt.get("decay_rate", 0.8)),
                momentum=opt.get("momentum") or None,
                weight_decay_rate=wd or None,
                weight_decay_mask=mask,
                min_dim_size_to_factor=int(opt.get("min_dim_size_to_factor", 128)),
            )
        )
    elif name == "muon":
        if logical_specs is None:
            raise ValueError("optimizer.name='muon' needs the parameters' logical specs")
        chain.append(
            optax.contrib.muon(
                schedule,
                ns_steps=int(opt.get("muon_ns_steps", 5)),
                beta=float(opt.get("muon_momentum", 0.95)),
                weight_decay=wd,
                weight_decay_mask=mask,
                adam_b1=float(opt.get("b1", 0.9)),
                adam_b2=float(opt.get("b2", 0.95)),
                adam_learning_rate=schedule,
                muon_weight_dimension_numbers=muon_dimension_numbers(logical_specs),
                # Updates with AdamW's RMS (Moonlight), so one learning rate and weight
                # decay serve the matrices (Muon) and the rest (AdamW) alike.
                consistent_rms=0.2,
            )
        )
    else:
        raise ValueError(f"optimizer.name={name!r}; allowed: {', '.join(OPTIMIZERS)}")
    return optax.chain(*chain), schedule
