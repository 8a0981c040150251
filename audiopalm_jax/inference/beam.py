"""Beam search over the KV cache, batch x beams flattened into the cache's batch axis.

Two pools per batch row, as in T5X / Hugging Face: ``alive`` beams (ranked by raw log-prob)
and ``finished`` hypotheses (ranked by ``log p / length ** length_penalty``). Each step
takes the top ``2 * beams`` continuations; an eos among the first ``beams`` ranks finishes
a hypothesis (later-ranked eos are dropped, so one beam reproduces greedy), the best
non-eos ones stay alive. The search stops when no alive beam can beat the worst finished.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from audiopalm_jax.inference import cached_forward
from audiopalm_jax.inference.constraints import TokenSpace, advance, allowed_mask

NEG = -jnp.inf


def _repeat(x: jax.Array, k: int, axis: int) -> jax.Array:
    return jnp.repeat(x, k, axis=axis)


def _take(x: jax.Array, idx: jax.Array) -> jax.Array:
    """x [batch, n, ...], idx [batch, m] -> [batch, m, ...]."""
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


def beam_search(
    step: Callable[[dict, jax.Array, jax.Array], tuple[jax.Array, dict]],
    logits: jax.Array,  # [batch, vocab] after the prompt
    cache: dict,  # prefilled, batch rows
    last_position: jax.Array,  # [batch] RoPE position of the prompt's last token
    last_token: jax.Array,  # [batch] the prompt's last token
    # (position, token, phase after it) [batch, beams] -> the next position
    clock: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    modalities: jax.Array,  # [batch, phases]
    num_phases: jax.Array,  # [batch]
    length_penalty: jax.Array,
    *,
    space: TokenSpace,
    max_new_tokens: int,
    num_beams: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns the best hypothesis per row: (tokens [batch, N], lengths [batch], scores)."""
    k, n = num_beams, max_new_tokens
    b, v = logits.shape
    cache = cached_forward.repeat(cache, k)
    flat_mod, flat_phases = _repeat(modalities, k, 0), _repeat(num_phases, k, 0)
    logits = _repeat(logits, k, 0)  # [batch * beams, vocab]

    def penalty(length):
        return jnp.asarray(length, jnp.float32) ** length_penalty

    def expand(i, logits, alive_logp, alive_seq, alive_phase, alive_next, fin):
        """One step of candidates: new alive pool and finished pool.

        ``alive_next`` [batch, beams]: the position a beam's next token takes."""
        fin_seq, fin_score, fin_len = fin
        allowed = allowed_mask(space, flat_mod, flat_phases, alive_phase.reshape(-1))
        logp = jax.nn.log_softmax(jnp.where(allowed, logits, NEG), axis=-1)
        cand = (alive_logp[:, :, None] + logp.reshape(b, k, v)).reshape(b, k * v)
        top_score, top_idx = jax.lax.top_k(cand, 2 * k)  # [batch, 2k]
        origin, token = top_idx // v, (top_idx % v).astype(jnp.int32)
        seq = _take(alive_seq, origin).at[:, :, i].set(token)  # [batch, 2k, N]
        is_eos = token == space.eos_id
        rank = jnp.arange(2 * k)[None, :]
        # Finished pool: merge eos candidates of the first k ranks, keep the best k.
        new_fin = jnp.where(is_eos & (rank < k), top_score / penalty(i + 1), NEG)
        all_score = jnp.concatenate([fin_score, new_fin], axis=1)  # [batch, 3k]
        all_seq = jnp.concatenate([fin_seq, seq], axis=1)
        all_len = jnp.concatenate([fin_len, jnp.full((b, 2 * k), i + 1, jnp.int32)], axis=1)
        fin_score, sel = jax.lax.top_k(all_score, k)
        fin = (_take(all_seq, sel), fin_score, _take(all_len, sel))
        # Alive pool: the best k non-eos candidates.
        alive_logp, sel = jax.lax.top_k(jnp.where(is_eos, NEG, top_score), k)
        origin, token = _take(origin, sel), _take(token, sel)  # [batch, k]
        phase, _ = advance(
            space,
            token.reshape(-1),
            _take(alive_phase, origin).reshape(-1),
            flat_phases,
        )
        phase = phase.reshape(b, k)
        flat_origin = (jnp.arange(b)[:, None] * k + origin).reshape(-1)  # [batch * beams]
        position = _take(alive_next, origin)  # [batch, k] of the chosen tokens
        return (
            token,
            position,
            flat_origin,
            alive_logp,
            _take(seq, sel),
            phase,
            clock(position, token, phase),
            fin,
        )

    alive_logp = jnp.where(jnp.arange(k)[None, :] == 0, 0.0, NEG) * jnp.ones((b, 1))
    alive_seq = jnp.full((b, k, n), -1, jnp.int32)
    fin = (
        jnp.full((b, k, n), -1, jnp.int32),
        jnp.full((b, k), NEG, jnp.float32),
        jnp.zeros((b, k), jnp.int32),
    )
    alive_phase = jnp.zeros((b, k), jnp.int32)
    # The prompt's last token is the <sep> that opens output 0.
    first = clock(last_position[:, None], last_token[:, None], alive_phase[:, :1])
    first = first * jnp.ones((1, k), jnp.int32)
    state = expand(0, logits, alive_logp, alive_seq, alive_phase, first, fin)

    def cond(carry):
        i, _, _, _, _, alive_logp, _, _, _, fin = carry
        # Log-probs only fall, so an alive beam's best final score is logp / max penalty.
        best = jnp.max(alive_logp, axis=1) / jnp.maximum(penalty(n), penalty(i + 1))
        worst_finished = fin[1][:, -1]
        return (i < n) & ~jnp.all(worst_finished >= best)

    def body(carry):
        i, cache, token, position, flat_origin, alive_logp, alive_seq, alive_phase, nxt, fin = carry
        cache = cached_forward.reorder(cache, flat_origin)
        logits, cache = step(cache, token.reshape(-1), position.reshape(-1))
        return (i + 1, cache) + expand(i, logits, alive_logp, alive_seq, alive_phase, nxt, fin)

    carry = jax.lax.while_loop(cond, body, (jnp.int32(1), cache) + state)
    i, _, _, _, _, alive_logp, alive_seq, _, _, (fin_seq, fin_score, fin_len) = carry
    # Rows that hit max_new_tokens: alive beams compete with their length-i score.
    score = jnp.concatenate([fin_score, alive_logp / penalty(i)], axis=1)  # [batch, 2k]
    seq = jnp.concatenate([fin_seq, alive_seq], axis=1)
    length = jnp.concatenate([fin_len, jnp.full((b, k), i, jnp.int32)], axis=1)
    best = jnp.argmax(score, axis=1)[:, None]  # [batch, 1]
    return _take(seq, best)[:, 0], _take(length, best)[:, 0], _take(score, best)[:, 0]
