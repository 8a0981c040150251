"""Test-only speech: espeak-ng (from the ``espeakng_loader`` wheel), 22050 Hz int16.

Through the package's one espeak-ng engine (``audiopalm_jax.data.espeak``): the C
library's state and synth callback are process-wide, so this cannot have its own.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from audiopalm_jax.data import espeak

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
    "Peter Piper picked a peck of pickled peppers.",
    "A journey of a thousand miles begins with a single step.",
    "All that glitters is not gold, and not all who wander are lost.",
    "The rain in Spain stays mainly in the plain.",
    "Seven silly swans swam silently seaward.",
    "Music is the universal language of mankind.",
    "Bright stars shine over the quiet northern valley tonight.",
    "Good morning, please open the window and let the fresh air in.",
    "Numbers like one, two, three and four are easy to say.",
)


@functools.lru_cache(maxsize=64)
def synthesize(text: str, voice: str = "en") -> np.ndarray:
    """int16 speech at 22050 Hz (cached; treat as read-only)."""
    # The package's engine: espeak-ng's synth callback is process-wide, so a second
    # binding would take the audio of every later espeak.synthesize in this process.
    # Its native 22.05 kHz output, at espeak's default rate and pitch.
    out = espeak._engine().synthesize(text, voice, espeak.Voice("m1"), seed=0)
    out.setflags(write=False)
    return out


ESPEAK_RATE = 22050


@pytest.fixture(scope="session")
def speech() -> list[np.ndarray]:
    """A dozen English sentences as int16 arrays at 22050 Hz (``ESPEAK_RATE``)."""
    return [synthesize(s) for s in SENTENCES]


@pytest.fixture(scope="session")
def speech_rate() -> int:
    return ESPEAK_RATE


@pytest.fixture(scope="session")
def mel_tokenizer(speech):
    """A small mel k-means tokenizer (64 tokens, 25 Hz) fitted on the test speech."""
    from audiopalm_jax.audio import MelKMeansTokenizer

    return MelKMeansTokenizer.fit(
        speech,
        ESPEAK_RATE,
        num_tokens=64,
        frame_rate=25,
        seed=0,
        kmeans={"num_steps": 60, "batch_size": 1024, "init_sample": 2048},
    )


@pytest.fixture(scope="session")
def speak():
    """``speak(voice, indices)``: 16 kHz float32, loudness-normalised utterances of
    ``SENTENCES[i]`` for each index, in an espeak-ng voice such as ``"en+f2"``."""
    from audiopalm_jax.audio import frontend

    def utterances(voice: str = "en", indices=range(4)) -> list[np.ndarray]:
        return [
            frontend.prepare_waveform(
                synthesize(SENTENCES[i], voice), ESPEAK_RATE, 16000, normalize=True
            )
            for i in indices
        ]

    return utterances
