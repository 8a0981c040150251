"""Cross-entropy on target tokens only, with optional z-loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSS_SUM_KEYS = ("loss_sum", "z_loss_sum", "correct_sum", "weight_sum")


def weighted_cross_entropy(
    logits: jax.Array,  # [batch, length, vocab] float32
    targets: jax.Array,  # [batch, length] int
    weights: jax.Array,  # [batch, length] float, 0 on inputs and padding
    z_loss: float = 0.0,
) -> dict[str, jax.Array]:
    """Sums (not means) so micro-batches and devices can be added, then divided once.

    Returns ``loss_sum`` (cross-entropy + z-loss), ``z_loss_sum``, ``correct_sum`` and
    ``weight_sum``.
    """
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)  # [batch, length]
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = log_z - target_logit
    z = z_loss * jnp.square(log_z)
    weights = weights.astype(jnp.float32)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return {
        "loss_sum": jnp.sum((nll + z) * weights),
        "z_loss_sum": jnp.sum(z * weights),
        "correct_sum": jnp.sum(correct * weights),
        "weight_sum": jnp.sum(weights),
    }
