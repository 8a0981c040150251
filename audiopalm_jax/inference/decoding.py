"""Jitted autoregressive decoding with the KV cache: greedy, sampling and beam search.

Prompts of different lengths are left-padded: pads get segment id 0 (they only see
pads), real tokens segment 1, RoPE positions follow the model's scheme (0, 1, 2, ... by
default; :mod:`audiopalm_jax.positions`), and the prompt is the bidirectional prefix.
One prefill writes the prompt into the cache; then each step
writes one token per row at the shared cache index inside a ``lax.while_loop``, so a
whole generation is one device call with static shapes. A step attends over the
fixed-size cache, so its cost does not grow with the position. The forward pass and the
cache layout are :mod:`~audiopalm_jax.inference.cached_forward`'s (per-layer buffers
updated in place; no per-step copy of the cache or of the weights).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from audiopalm_jax.inference import beam as beam_lib
from audiopalm_jax.inference.cached_forward import blocks, decode_step, prefill
from audiopalm_jax.inference.constraints import TokenSpace, advance, allowed_mask
from audiopalm_jax.positions import SEQUENTIAL, PositionScheme

Params = dict[str, Any]
METHODS = ("greedy", "sample", "beam")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How to pick tokens.

    ``greedy``: argmax. ``sample``: temperature, then top-k (0: off), then top-p
    (1.0: off), seeded by ``seed``. ``beam``: ``num_beams`` beams, final scores are
    ``sum log p / length ** length_penalty`` (Hugging Face's convention).
    """

    method: str = "greedy"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    num_beams: int = 4
    length_penalty: float = 1.0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"sampling method {self.method!r}; allowed: {', '.join(METHODS)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.num_beams < 1:
            raise ValueError(f"top_k must be >= 0 and num_beams >= 1, got {self}")

    @classmethod
    def parse(cls, value: SamplingConfig | str | dict | None) -> SamplingConfig:
        """``None`` / ``"greedy"`` / ``"beam"`` / ``{"method": "sample", ...}`` -> config."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(method=value)
        return cls(**dict(value))


@dataclasses.dataclass
class DecodeOutput:
    """Host results. ``tokens`` [batch, max_new] int32 (-1 past each row's end),
    ``lengths`` [batch] (generated tokens, eos included), ``scores`` [batch] (sum of
    log-probs under the constrained distribution; beam: length-penalised)."""

    tokens: np.ndarray
    lengths: np.ndarray
    scores: np.ndarray

    def rows(self) -> list[np.ndarray]:
        return [self.tokens[i, : int(n)] for i, n in enumerate(self.lengths)]


def left_pad(
    prompts: Sequence[np.ndarray], length: int | None = None, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Prompts -> ([batch, length] int32 left-padded, [batch] int32 lengths)."""
    lengths = np.asarray([len(p) for p in prompts], np.int32)
    if lengths.min(initial=1) < 1:
        raise ValueError("every prompt needs at least one token")
    length = int(lengths.max()) if length is None else length
    if lengths.max() > length:
        raise ValueError(f"prompt of {lengths.max()} tokens does not fit length {length}")
    out = np.full((len(prompts), length), pad_id, np.int32)
    for i, p in enumerate(prompts):
        out[i, length - len(p) :] = np.asarray(p, np.int32)
    return out, lengths


def prompt_positions(
    space: TokenSpace,
    scheme: PositionScheme,
    prompts: np.ndarray,  # [batch, prompt] left-padded
    lengths: np.ndarray,  # [batch]
    source_starts: np.ndarray | None = None,  # [batch]
    translated: Sequence[Sequence[bool]] | None = None,  # [batch][outputs]
    num_outputs: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """(RoPE positions [batch, prompt], 0 on the left padding; output starts [batch,
    num_outputs]): where each output after a ``<sep>`` starts
    (:meth:`~audiopalm_jax.positions.PositionScheme.output_starts`)."""
    b, p = prompts.shape
    starts = np.zeros((b,), np.int32) if source_starts is None else np.asarray(source_starts)
    translated = translated or [()] * b
    positions = np.zeros((b, p), np.int32)
    output_starts = np.zeros((b, num_outputs), np.int32)
    for r in range(b):
        ids = prompts[r, p - int(lengths[r]) :]
        audio = space.is_audio(ids)
        src = int(starts[r])
        positions[r, p - len(ids) :] = scheme.segment(ids, audio, space.sep_id, src)
        output_starts[r] = scheme.output_starts(
            ids, audio, space.sep_id, src, translated[r], num_outputs
        )
    return positions, output_starts


def _model(graphdef: nnx.GraphDef, params: Params) -> nnx.Module:
    return nnx.merge(graphdef, nnx.State(params))


@functools.partial(jax.jit, static_argnums=(0, 4))
def jit_prefill(graphdef, params, tokens, lengths, cache_length: int):
    """Jitted :func:`prefill` (benchmarks, external loops)."""
    return prefill(_model(graphdef, params), tokens, lengths, cache_length)


@functools.partial(jax.jit, static_argnums=(0,), donate_argnums=(2,))
def jit_decode_step(graphdef, params, cache, tokens, positions):
    """One jitted step with the cache donated (benchmarks, external loops)."""
    return decode_step(_model(graphdef, params), cache, tokens, positions)


def _filter_logits(logits: jax.Array, top_k: int, top_p: jax.Array) -> jax.Array:
    """Top-k then nucleus filtering of [batch, vocab] logits (-inf outside)."""
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [batch, 1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    desc = -jnp.sort(-logits, axis=-1)  # [batch, vocab] descending
    probs = jax.nn.softmax(desc, axis=-1)
    keep = (jnp.cumsum(probs, axis=-1) - probs) < top_p  # the first token is always kept
    threshold = jnp.min(jnp.where(keep, desc, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < threshold, -jnp.inf, logits)


def _choose(logits, allowed, key, temperature, top_p, method: str, top_k: int, use_top_p: bool):
    """(token [batch], its log-prob under the constrained distribution [batch])."""
    logits = jnp.where(allowed, logits, -jnp.inf)  # [batch, vocab]
    logp = jax.nn.log_softmax(logits, axis=-1)
    if method == "greedy":
        token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
        scaled = logits / temperature
        if top_k or use_top_p:
            scaled = _filter_logits(scaled, top_k, top_p if use_top_p else jnp.float32(1.0))
        token = jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)
    return token, jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]


def _clock(scheme: PositionScheme, space: TokenSpace, output_starts: jax.Array):
    """(position of a token, the token, the phase after it) -> the next token's position."""

    def clock(position, token, phase):
        is_audio = space.is_audio(token)
        return scheme.next(position, token, is_audio, space.sep_id, output_starts, phase)

    return clock


@functools.partial(
    jax.jit,
    static_argnames=(
        "graphdef",
        "space",
        "scheme",
        "max_new_tokens",
        "method",
        "top_k",
        "use_top_p",
    ),
)
def _generate(
    params: Params,
    tokens: jax.Array,  # [batch, prompt] int32
    lengths: jax.Array,  # [batch] int32
    positions: jax.Array,  # [batch, prompt] int32
    output_starts: jax.Array,  # [batch, phases] int32
    modalities: jax.Array,  # [batch, phases] int32
    num_phases: jax.Array,  # [batch] int32
    limits: jax.Array,  # [batch] int32, per-row max new tokens (<= max_new_tokens)
    key: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    space: TokenSpace,
    scheme: PositionScheme,
    max_new_tokens: int,
    method: str,
    top_k: int,
    use_top_p: bool,
):
    model = _model(graphdef, params)
    layers = blocks(model)  # sliced once, outside the loop, if the params are stacked
    b = tokens.shape[0]
    cache_length = tokens.shape[1] + max_new_tokens
    logits, cache = prefill(model, tokens, lengths, cache_length, layers, positions)
    clock = _clock(scheme, space, output_starts)
    choose = functools.partial(
        _choose, method=method, top_k=top_k, use_top_p=use_top_p, temperature=temperature
    )

    def emit(i, logits, phase, done, out, scores, count):
        allowed = allowed_mask(space, modalities, num_phases, phase)
        token, logp = choose(logits, allowed, jax.random.fold_in(key, i), top_p=top_p)
        token = jnp.where(done, space.eos_id, token)
        out = out.at[:, i].set(jnp.where(done, -1, token))
        scores = scores + jnp.where(done, 0.0, logp)
        count = count + (~done).astype(jnp.int32)
        phase, finished = advance(space, token, phase, num_phases)
        done = done | finished | (i + 1 >= limits)
        return token, phase, done, out, scores, count

    out = jnp.full((b, max_new_tokens), -1, jnp.int32)
    zeros = jnp.zeros((b,), jnp.int32)
    state = emit(0, logits, zeros, limits <= 0, out, jnp.zeros((b,), jnp.float32), zeros)

    def cond(carry):
        i, _, _, _, _, done, *_ = carry
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        i, cache, position, token, phase, done, out, scores, count = carry
        logits, cache = decode_step(model, cache, token, position, layers)
        following = clock(position, token, phase)
        return (i + 1, cache, following) + emit(i, logits, phase, done, out, scores, count)

    # The prompt's last token (its last column) is the <sep> that opens output 0.
    first = clock(positions[:, -1], tokens[:, -1], zeros)
    carry = jax.lax.while_loop(cond, body, (jnp.int32(1), cache, first) + state)
    *_, out, scores, count = carry
    return out, count, scores


@functools.partial(
    jax.jit, static_argnames=("graphdef", "space", "scheme", "max_new_tokens", "num_beams")
)
def _beam_generate(
    params,
    tokens,
    lengths,
    positions,
    output_starts,
    modalities,
    num_phases,
    length_penalty,
    *,
    graphdef,
    space,
    scheme,
    max_new_tokens,
    num_beams,
):
    model = _model(graphdef, params)
    layers = blocks(model)
    cache_length = tokens.shape[1] + max_new_tokens
    logits, cache = prefill(model, tokens, lengths, cache_length, layers, positions)
    return beam_lib.beam_search(
        functools.partial(decode_step, model, layers=layers),
        logits,
        cache,
        positions[:, -1],
        tokens[:, -1],
        _clock(scheme, space, output_starts[:, None, :]),
        modalities,
        num_phases,
        length_penalty,
        space=space,
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
    )


def generate(
    graphdef: nnx.GraphDef,
    params: Params,
    space: TokenSpace,
    prompts: jax.Array | np.ndarray,  # [batch, prompt] int32, left-padded
    prompt_lengths: jax.Array | np.ndarray,  # [batch] int32
    *,
    max_new_tokens: int,
    modalities: np.ndarray | None = None,  # [batch, phases] (constraints.structure_arrays)
    num_phases: np.ndarray | None = None,  # [batch]
    limits: np.ndarray | None = None,  # [batch] per-row max new tokens (not for beam)
    sampling: SamplingConfig | str | dict | None = None,
    scheme: PositionScheme = SEQUENTIAL,
    source_starts: np.ndarray | None = None,  # [batch] where each source begins (0)
    translated: Sequence[Sequence[bool]] | None = None,  # [batch][outputs]
) -> DecodeOutput:
    """Decodes a left-padded batch in one jitted call; returns host arrays.

    Without ``modalities`` rows decode unconstrained (any text/audio id, sep, eos).
    ``scheme``: the model's RoPE positions (:class:`~audiopalm_jax.positions.PositionScheme`,
    ``PositionScheme.of(model_config)``); the aligned scheme needs each prompt's
    ``source_starts`` (the task tag's length) and which outputs are ``translated``
    (:func:`~audiopalm_jax.positions.translated_outputs`). Run it under ``jax.set_mesh(mesh)`` and
    ``sharding.axis_rules(rules)`` with params in their training shardings to decode
    sharded.
    """
    s = SamplingConfig.parse(sampling)
    b = int(np.shape(prompts)[0])
    if modalities is None:
        modalities = np.full((b, 1), 2, np.int32)
        num_phases = np.ones((b,), np.int32)
    positions, output_starts = prompt_positions(
        space,
        scheme,
        np.asarray(prompts),
        np.asarray(prompt_lengths),
        source_starts,
        translated,
        num_outputs=int(np.shape(modalities)[1]),
    )
    prompts = jnp.asarray(prompts, jnp.int32)
    prompt_lengths = jnp.asarray(prompt_lengths, jnp.int32)
    modalities = jnp.asarray(modalities, jnp.int32)
    num_phases = jnp.asarray(num_phases, jnp.int32)
    if s.method == "beam":
        out = _beam_generate(
            params,
            prompts,
            prompt_lengths,
            positions,
            output_starts,
            modalities,
            num_phases,
            jnp.float32(s.length_penalty),
            graphdef=graphdef,
            space=space,
            scheme=scheme,
            max_new_tokens=max_new_tokens,
            num_beams=s.num_beams,
        )
    else:
        limits = np.full((b,), max_new_tokens, np.int32) if limits is None else limits
        out = _generate(
            params,
            prompts,
            prompt_lengths,
            positions,
            output_starts,
            modalities,
            num_phases,
            jnp.minimum(jnp.asarray(limits, jnp.int32), max_new_tokens),
            jax.random.key(s.seed),
            jnp.float32(s.temperature),
            jnp.float32(s.top_p),
            graphdef=graphdef,
            space=space,
            scheme=scheme,
            max_new_tokens=max_new_tokens,
            method=s.method,
            top_k=s.top_k,
            use_top_p=s.top_p < 1.0,
        )
    tokens, lengths, scores = jax.device_get(out)
    return DecodeOutput(np.asarray(tokens), np.asarray(lengths), np.asarray(scores))
