"""Modality constraints: which ids each decoding row may produce next.

A task's target is ``output_1 <sep> output_2 ... <eos>`` (``JointVocab.target_ids``). Each
row tracks its *phase* (index of the output it is writing) and advances on ``<sep>``; the
phase's modality (text or audio) decides the allowed ids. ``<sep>`` is allowed before the
last output, ``<eos>`` only in the last one. Padding ids (``> sep_id``) are never allowed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from audiopalm_jax.vocab import TASK_OUTPUT, TASKS, JointVocab

TEXT, AUDIO, ANY = 0, 1, 2  # phase modalities
MODALITY_CODES = {"text": TEXT, "audio": AUDIO, "any": ANY}


@dataclasses.dataclass(frozen=True)
class TokenSpace:
    """The id ranges of a joint vocabulary, as static (hashable) ints for jitted code."""

    vocab_size: int  # the model's (padded) vocabulary
    text_vocab_size: int
    audio_offset: int
    sep_id: int
    eos_id: int
    banned_ids: tuple[int, ...] = ()  # text ids a target never holds (pad, bos)

    def is_audio(self, ids):
        """Which of ``ids`` (numpy or jax) are audio tokens: they lie just below <sep>."""
        return (ids >= self.audio_offset) & (ids < self.sep_id)

    @classmethod
    def from_vocab(cls, vocab: JointVocab) -> TokenSpace:
        banned = {vocab.pad_id} | ({vocab.bos_id} if vocab.bos_id is not None else set())
        banned.discard(vocab.eos_id)  # pad == eos for some tokenizers: eos must stay usable
        return cls(
            vocab_size=vocab.size,
            text_vocab_size=vocab.text_vocab_size,
            audio_offset=vocab.audio_offset,
            sep_id=vocab.sep_id,
            eos_id=vocab.eos_id,
            banned_ids=tuple(sorted(banned)),
        )


def output_modalities(tasks: str | Sequence[str]) -> tuple[str, ...]:
    """``["ASR", "S2ST"]`` -> ``("text", "audio")``: the target's outputs in order."""
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    for t in tasks:
        if t not in TASK_OUTPUT:
            raise ValueError(f"unknown task {t!r}; known tasks: {', '.join(TASKS)}")
    return tuple(TASK_OUTPUT[t] for t in tasks)


def structure_arrays(
    structures: Sequence[Sequence[str]], max_phases: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row output modalities -> ([batch, phases] int32 codes, [batch] int32 counts).

    A row with an empty structure decodes unconstrained (one ``any`` phase).
    """
    rows = [tuple(s) or ("any",) for s in structures]
    width = max_phases or max(len(r) for r in rows)
    codes = np.full((len(rows), width), ANY, np.int32)
    for i, r in enumerate(rows):
        if len(r) > width:
            raise ValueError(f"row {i} has {len(r)} outputs, more than max_phases={width}")
        codes[i, : len(r)] = [MODALITY_CODES[m] for m in r]
    return codes, np.asarray([len(r) for r in rows], np.int32)


def allowed_mask(
    space: TokenSpace,
    modalities: jax.Array,  # [batch, phases] int32 codes
    num_phases: jax.Array,  # [batch] int32
    phase: jax.Array,  # [batch] int32, the output being written
) -> jax.Array:
    """[batch, vocab] bool: ids each row may produce next."""
    ids = jnp.arange(space.vocab_size, dtype=jnp.int32)[None, :]  # [1, vocab]
    is_text = ids < space.text_vocab_size
    for banned in (space.eos_id,) + space.banned_ids:
        # eos is a text id, but it may only end the last output (added back below).
        is_text = is_text & (ids != banned)
    is_audio = space.is_audio(ids)
    mod = jnp.take_along_axis(modalities, phase[:, None], axis=1)  # [batch, 1]
    last = (phase >= num_phases - 1)[:, None]  # [batch, 1]
    any_phase = mod == ANY
    allowed = jnp.where(mod == TEXT, is_text, False) | jnp.where(mod == AUDIO, is_audio, False)
    allowed = allowed | (any_phase & (is_text | is_audio))
    allowed = allowed | ((ids == space.sep_id) & (~last | any_phase))
    return allowed | ((ids == space.eos_id) & last)


def advance(
    space: TokenSpace, token: jax.Array, phase: jax.Array, num_phases: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(next phase [batch], finished [batch]) after emitting ``token`` [batch]."""
    nxt = jnp.minimum(phase + (token == space.sep_id).astype(phase.dtype), num_phases - 1)
    return nxt, token == space.eos_id


def check_tokens(
    space: TokenSpace, tokens: np.ndarray, structure: Sequence[str]
) -> list[tuple[int, int]]:
    """Host-side check of one generated row: (position, id) pairs breaking the structure."""
    codes, count = structure_arrays([structure])
    phase, bad = 0, []
    for i, t in enumerate(np.asarray(tokens).tolist()):
        if t < 0:
            break
        mask = np.asarray(allowed_mask(space, codes, count, np.asarray([phase], np.int32)))
        if not mask[0, t]:
            bad.append((i, t))
        if t == space.eos_id:
            break
        phase = min(phase + int(t == space.sep_id), int(count[0]) - 1)
    return bad
