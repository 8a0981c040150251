"""Minimal ctypes binding to espeak-ng from the ``espeakng_loader`` wheel.

espeak-ng keeps global state and is not thread-safe, so each process owns one engine,
created lazily on first use and guarded by a lock. Worker processes (``spawn`` /
``forkserver``) initialise their own engine the first time they synthesize. Nothing is
downloaded: the shared library and voice data ship inside the wheel.

Reproducibility: espeak-ng carries hidden static state from one utterance to the next
(pitch-flutter phase, gain control, breath-noise filters; re-initialising does not reset
it), so the same call can differ by a few samples later in a process. Output *is*
reproducible for a fixed sequence of calls in a fresh process, which is what
:func:`synthesize_shard` relies on: run each shard in its own new process.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import threading

import numpy as np
import soxr

SAMPLE_RATE = 16000

# espeak-ng voice names of the languages we speak (espeak's plain "en" is British).
ESPEAK_LANGUAGES = {"en": "en-us", "fr": "fr", "de": "de", "es": "es"}

# From speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclasses.dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: a variant from ``espeak-ng-data/voices/!v`` plus prosody.

    ``rate`` is in words per minute (espeak default 175); ``pitch`` is 0..100 (50 default).
    """

    variant: str
    rate: int = 175
    pitch: int = 50

    @property
    def name(self) -> str:
        """Stable string id, e.g. ``m3_r182_p47``; parse back with :meth:`from_name`."""
        return f"{self.variant}_r{self.rate}_p{self.pitch}"

    @classmethod
    def from_name(cls, name: str) -> Voice:
        variant, rate, pitch = name.rsplit("_", 2)
        return cls(variant, int(rate[1:]), int(pitch[1:]))


class _Engine:
    """One initialised espeak-ng library in this process."""

    def __init__(self) -> None:
        import espeakng_loader  # deferred: only worker processes that synthesize need it

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None

        data_path = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({rate}) with data at {data_path!r}")
        self.lib = lib
        variant_dir = os.path.join(espeakng_loader.get_data_path(), "voices", "!v")
        self.variants = frozenset(os.listdir(variant_dir))
        # espeak's breath noise calls libc rand(); seed it too for reproducible output.
        self.libc = ctypes.CDLL(None)
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes frees the trampoline if the Python object dies.
        self._callback = _SYNTH_CALLBACK(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    def _on_audio(self, wav, num_samples: int, events) -> int:
        if num_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # 0 = keep synthesizing

    def synthesize(self, text: str, espeak_voice: str, voice: Voice, seed: int) -> np.ndarray:
        with self.lock:
            if self.lib.espeak_SetVoiceByName(espeak_voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {espeak_voice!r}")
            # Parameters after the voice: loading a voice may reset them.
            self.lib.espeak_SetParameter(_PARAM_RATE, int(voice.rate), 0)
            self.lib.espeak_SetParameter(_PARAM_PITCH, int(voice.pitch), 0)
            # Klatt variants add noise from espeak's RNG; seeding makes output reproducible.
            self.lib.espeak_ng_SetRandSeed(seed)
            self.libc.srand(ctypes.c_uint(seed & 0xFFFFFFFF))
            self._chunks = []
            data = text.encode("utf-8")
            err = self.lib.espeak_Synth(
                data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            self.lib.espeak_Synchronize()
            if err != 0:
                raise RuntimeError(f"espeak_Synth failed ({err}) for {text!r}")
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros((0,), np.int16)


_ENGINE: _Engine | None = None
_ENGINE_INIT_LOCK = threading.Lock()


def _engine() -> _Engine:
    global _ENGINE
    with _ENGINE_INIT_LOCK:
        if _ENGINE is None:
            _ENGINE = _Engine()
    return _ENGINE


def trim_silence(audio: np.ndarray, sample_rate: int, margin_s: float = 0.05) -> np.ndarray:
    """Drops leading/trailing near-silence, keeping ``margin_s`` of it on each side."""
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > 200)
    if loud.size == 0:
        return audio
    margin = int(margin_s * sample_rate)
    return audio[max(0, loud[0] - margin) : loud[-1] + 1 + margin]


def synthesize(
    text: str,
    language: str,
    variant: str = "m1",
    rate: int = 175,
    pitch: int = 50,
    *,
    sample_rate: int = SAMPLE_RATE,
    seed: int = 0,
    trim: bool = True,
) -> tuple[np.ndarray, int]:
    """Speaks ``text`` in ``language`` (ISO 639-1 or an espeak voice name).

    Returns ``(int16 samples, sample_rate)``; audio is resampled from espeak's native
    22.05 kHz with soxr and, with ``trim``, stripped of long leading/trailing silence.
    Reproducible for a fixed sequence of calls in a fresh process (see module doc).
    """
    engine = _engine()
    if variant not in engine.variants:
        # espeak silently ignores an unknown "+variant" suffix; fail loudly instead.
        raise ValueError(f"espeak-ng has no voice variant {variant!r}")
    espeak_voice = f"{ESPEAK_LANGUAGES.get(language, language)}+{variant}"
    raw = engine.synthesize(text, espeak_voice, Voice(variant, rate, pitch), seed)
    if sample_rate != engine.sample_rate and raw.size:
        raw = soxr.resample(raw, engine.sample_rate, sample_rate)
    audio = raw.astype(np.int16, copy=False)
    if trim:
        audio = trim_silence(audio, sample_rate)
    return audio, sample_rate


def synthesize_texts(texts: dict[str, str], voice: Voice, seed: int = 0) -> dict[str, np.ndarray]:
    """Speaks each ``{language: text}`` with the same voice, at :data:`SAMPLE_RATE`."""
    out = {}
    for lang, text in texts.items():
        out[lang], _ = synthesize(text, lang, voice.variant, voice.rate, voice.pitch, seed=seed)
    return out


def synthesize_shard(
    items: list[tuple[dict[str, str], Voice, int]],
) -> list[dict[str, np.ndarray]]:
    """Worker entry point: ``[(texts, voice, seed), ...]`` -> ``[{language: int16 audio}]``.

    Run each shard in a fresh process (e.g. a pool with ``maxtasksperchild=1``) so its
    output depends only on the shard, not on what the process synthesized before.
    """
    return [synthesize_texts(texts, voice, seed) for texts, voice, seed in items]
