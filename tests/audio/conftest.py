"""Test-only speech: espeak-ng (from the ``espeakng_loader`` wheel) through ctypes.

Kept independent of ``audiopalm_jax.data`` on purpose. Synthesis is 22050 Hz int16.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np
import pytest

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

_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT enum: PLAYBACK=0, RETRIEVAL=1, SYNCHRONOUS=2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Espeak:
    """A process-wide espeak-ng handle (the C library keeps global state)."""

    def __init__(self):
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        data = espeakng_loader.get_data_path().encode()
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.sample_rate})")
        self._chunks: list[np.ndarray] = []

        def callback(wav, num_samples, events):
            if num_samples > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
            return 0  # 0 = continue synthesis

        self._callback = _CALLBACK(callback)  # keep a reference: C holds only the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib

    def say(self, text: str, voice: str = "en") -> np.ndarray:
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        self._chunks = []
        raw = text.encode("utf-8")
        err = self._lib.espeak_Synth(
            raw, len(raw) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
        )
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed ({err})")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


@functools.lru_cache(maxsize=1)
def _espeak() -> _Espeak:
    return _Espeak()


@functools.lru_cache(maxsize=64)
def synthesize(text: str, voice: str = "en") -> np.ndarray:
    """int16 speech at 22050 Hz (cached; treat as read-only)."""
    out = _espeak().say(text, voice)
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
