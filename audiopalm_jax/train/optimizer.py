"""Learning-rate schedules and optimizers (AdamW, Adafactor) from the config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax

SCHEDULES = ("constant", "cosine", "rsqrt", "exponential", "linear")
OPTIMIZERS = ("adamw", "adafactor")


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


def make_optimizer(
    opt: Mapping[str, Any], num_train_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, schedule). Gradient accumulation is done by the train step itself."""
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
    else:
        raise ValueError(f"optimizer.name={name!r}; allowed: {', '.join(OPTIMIZERS)}")
    return optax.chain(*chain), schedule
