"""RoPE positions of a task sequence: sequential, or aligned in time across modalities.

``sequential`` (the default; what Hugging Face checkpoints were trained with): token k of a
segment sits at position k.

``aligned``: positions measure time, so that an output starts where the content it
re-expresses starts and tracks it. Text tokens advance the clock by ``text_step``, audio
tokens by ``audio_step`` (their ratio is about the audio frames per text token: 1.3 frames
per character for espeak speech at 25 Hz, hence 4 and 3). An output in the source's
language (ASR, TTS) starts again where the source began (just past the task tag)::

    [ASR English]  a1 a2 a3 ... <sep> t h e ... <eos>
    0 4 8 ... 52   56 59 62 ... 56+3n  56 60 64 ...

so the character that a frame spells sits near that frame in RoPE distance, and a model
that must learn to read audio, or to speak text, no longer has to count where it is in
the source (English ASR after 250 steps of the demo model: validation loss 0.24 vs 0.38,
docs/demo_run.md). An output in the other language (AST, S2ST, MT) starts just past the
source's ``<sep>``, as it would with sequential positions: a translation does not follow
its source word for word, and placing it on top of the source teaches the model to copy
(``[MT English French]`` outputs mixed the two languages). Outputs in the same target
language start at the same point, so the speech of ``[ASR AST S2ST ...]`` tracks its
translated text. Positions may repeat and go back; only RoPE reads them (the causal and
prefix masks use slot order), so the model itself is unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from audiopalm_jax.vocab import TASK_OUTPUT_LANGUAGE

SCHEMES = ("sequential", "aligned")


@dataclasses.dataclass(frozen=True)
class PositionScheme:
    """How a segment's RoPE positions follow from its ids (hashable: a static jit arg)."""

    kind: str = "sequential"
    text_step: int = 4
    audio_step: int = 3

    def __post_init__(self):
        if self.kind not in SCHEMES:
            raise ValueError(f"position_scheme={self.kind!r}; allowed: {', '.join(SCHEMES)}")
        if self.text_step < 1 or self.audio_step < 1:
            raise ValueError(
                f"text_position_step={self.text_step} and audio_position_step="
                f"{self.audio_step} must be >= 1"
            )

    @classmethod
    def of(cls, model_cfg) -> PositionScheme:
        """The scheme a :class:`~audiopalm_jax.model.config.ModelConfig` was trained with."""
        # getattr: configs saved before these keys existed are sequential.
        return cls(
            getattr(model_cfg, "position_scheme", "sequential"),
            getattr(model_cfg, "text_position_step", 4),
            getattr(model_cfg, "audio_position_step", 3),
        )

    @property
    def sequential(self) -> bool:
        return self.kind == "sequential"

    def _steps(self, is_audio: np.ndarray) -> np.ndarray:
        return np.where(is_audio, self.audio_step, self.text_step)

    def segment(
        self,
        ids: np.ndarray,  # [L]
        is_audio: np.ndarray,  # [L] bool
        sep_id: int,
        source_start: int,
        translated: Sequence[bool] = (),
    ) -> np.ndarray:
        """Positions [L] of one segment whose source begins at ``source_start``;
        ``translated[k]``: output k is in another language than the source
        (:func:`translated_outputs`; missing entries: False)."""
        n = len(ids)
        if self.sequential:
            return np.arange(n, dtype=np.int32)
        before = np.concatenate([[0], np.cumsum(self._steps(is_audio))[:-1]])  # [L] time
        spans = [s for s in np.flatnonzero(ids[:-1] == sep_id) + 1 if s > source_start]
        starts = self.output_starts(ids, is_audio, sep_id, source_start, translated, len(spans))
        out = before.copy()
        for s, start in zip(spans, starts, strict=True):
            out[s:] = before[s:] - before[s] + start
        return out.astype(np.int32)

    def output_starts(
        self,
        ids: np.ndarray,  # [L] the segment, or a prompt (task tag, source, <sep>)
        is_audio: np.ndarray,  # [L] bool
        sep_id: int,
        source_start: int,
        translated: Sequence[bool],
        num_outputs: int,
    ) -> np.ndarray:
        """[num_outputs] int32: where each output after a ``<sep>`` starts: the source's
        start, or for a translated output the time just past the source's ``<sep>``."""
        if self.sequential:
            return np.zeros((num_outputs,), np.int32)
        steps = self._steps(is_audio)
        start = int(steps[:source_start].sum())
        seps = np.flatnonzero(ids[source_start:] == sep_id)
        end = int(steps[: source_start + seps[0] + 1].sum()) if len(seps) else int(steps.sum())
        flags = list(translated)[:num_outputs]
        flags += [False] * (num_outputs - len(flags))
        return np.asarray([end if f else start for f in flags], np.int32)

    def next(
        self,
        position: jax.Array,  # [...] position of ``token``
        token: jax.Array,  # [...] int32
        is_audio: jax.Array,  # [...] bool, whether ``token`` is an audio token
        sep_id: int,
        starts: jax.Array,  # [..., outputs] int32, from :meth:`output_starts`
        phase: jax.Array,  # [...] int32, the output a ``<sep>`` token opens
    ) -> jax.Array:
        """The position of the token after ``token`` (jittable; decoding's clock)."""
        if self.sequential:
            return position + 1
        step = jnp.where(is_audio, self.audio_step, self.text_step)
        k = jnp.clip(jnp.broadcast_to(phase, jnp.shape(position)), 0, starts.shape[-1] - 1)
        k = k[..., None]
        start = jnp.take_along_axis(
            jnp.broadcast_to(starts, k.shape[:-1] + starts.shape[-1:]), k, -1
        )
        return jnp.where(token == sep_id, start[..., 0], position + step).astype(position.dtype)


def translated_outputs(tasks: str | Sequence[str]) -> tuple[bool, ...]:
    """Per output of ``tasks`` (tag order): whether it is in the target language."""
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    return tuple(TASK_OUTPUT_LANGUAGE[t] == "target" for t in tasks)


SEQUENTIAL = PositionScheme()
