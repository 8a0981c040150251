"""Decoding (greedy / sampling / beam with the KV cache), modality constraints, and the
:class:`AudioPaLM` API (``from audiopalm_jax.inference import AudioPaLM``)."""

from __future__ import annotations

from typing import Any

__all__ = ["AudioPaLM", "Generation", "SamplingConfig", "SpeechTokens"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not pull in orbax / the audio stack.
    if name == "AudioPaLM":
        from audiopalm_jax.inference.api import AudioPaLM

        return AudioPaLM
    if name == "SamplingConfig":
        from audiopalm_jax.inference.decoding import SamplingConfig

        return SamplingConfig
    if name in ("Generation", "SpeechTokens"):
        from audiopalm_jax.inference import inputs

        return getattr(inputs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
