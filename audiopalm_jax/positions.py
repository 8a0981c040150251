"""RoPE positions of a task sequence: sequential, or aligned in time across modalities.

``sequential`` (the default; what Hugging Face checkpoints were trained with): token k of a
segment sits at position k.

``aligned``: positions measure time, so that an output starts where its source starts
and tracks it. Text tokens advance the clock by ``text_step``, audio tokens by
``audio_step`` (their ratio is about the audio frames per text token: 1.3 frames per
character for espeak speech at 25 Hz, hence 4 and 3), and after every ``<sep>`` the clock
goes back to where the source began (just past the task tag)::

    [ASR English]  a1 a2 a3 ... <sep> t h e ... <eos>
    0 4 8 ... 52   56 59 62 ... 56+3n  56 60 64 ...

so the character that a frame spells sits near that frame in RoPE distance, and a model
that must learn to read audio, or to speak text, no longer has to count where it is in
the source (English ASR after 250 steps of the demo model: validation loss 0.24 vs 0.38,
docs/demo_run.md). Positions may repeat and go back; only RoPE reads them (the causal
and prefix masks use slot order), so the model itself is unchanged.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

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

    def segment(
        self, ids: np.ndarray, is_audio: np.ndarray, sep_id: int, source_start: int
    ) -> np.ndarray:
        """Positions of one segment ``ids`` [L] whose source begins at ``source_start``."""
        n = len(ids)
        if self.sequential:
            return np.arange(n, dtype=np.int32)
        steps = np.where(is_audio, self.audio_step, self.text_step)  # [L]
        before = np.concatenate([[0], np.cumsum(steps)[:-1]])  # time at each token
        restart = self.restart(ids, is_audio, source_start)
        out = before.copy()
        # Each span after a separator starts again at the source's start.
        for s in np.flatnonzero(ids[:-1] == sep_id) + 1:
            if s > source_start:
                out[s:] = before[s:] - before[s] + restart
        return out.astype(np.int32)

    def restart(self, ids: np.ndarray, is_audio: np.ndarray, source_start: int) -> int:
        """The position a span after ``<sep>`` starts at: the time at ``source_start``."""
        if self.sequential:
            return 0
        steps = np.where(is_audio[:source_start], self.audio_step, self.text_step)
        return int(steps.sum())

    def next(
        self,
        position: jax.Array,  # [b] position of ``token``
        token: jax.Array,  # [b] int32
        is_audio: jax.Array,  # [b] bool, whether ``token`` is an audio token
        sep_id: int,
        restart: jax.Array,  # [b] int32, from :meth:`restart`
    ) -> jax.Array:
        """The position of the token after ``token`` (jittable; decoding's clock)."""
        if self.sequential:
            return position + 1
        step = jnp.where(is_audio, self.audio_step, self.text_step)
        return jnp.where(token == sep_id, restart, position + step).astype(position.dtype)


SEQUENTIAL = PositionScheme()
