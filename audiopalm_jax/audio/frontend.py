"""Audio front end: load, validate, downmix, resample and loudness-normalise waveforms.

Every tokenizer funnels its input through :func:`prepare_waveform`, so bad audio fails
here with one clear message instead of turning into a silent garbage token stream.

Policy (also in docs/audio.md):
- dtypes: int16 / int32 (scaled by full scale), uint8 (offset binary), float16/32/64
  (taken as is). bool, complex and object arrays are rejected.
- shapes: 1-D mono, or 2-D with a channel axis of at most ``MAX_CHANNELS``; the channel
  axis is the short one, in either orientation, and channels are averaged (documented
  fix-up). Anything else, or a 2-D array whose both sides are long, is an error.
- sample rates must be numbers in ``[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]`` Hz.
- NaN / inf samples, empty audio and all-zero (digital silence) audio are errors.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

import numpy as np

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 8
# Loudness target for the mel tokenizer: -23 dBFS RMS (EBU R128-ish), never clipping.
TARGET_RMS = 10 ** (-23 / 20)
PEAK_LIMIT = 0.99
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au")


class AudioInputError(ValueError):
    """Audio that cannot be tokenized; the message names the problem and what is allowed."""


def check_sample_rate(sample_rate: object, what: str = "sample_rate") -> int:
    """Validates a sample rate and returns it as an int."""
    if isinstance(sample_rate, (np.ndarray, list, tuple)):
        raise AudioInputError(
            f"{what} must be a number of Hz, got {type(sample_rate).__name__}; did you swap "
            "the waveform and sample_rate arguments?"
        )
    if isinstance(sample_rate, bool) or not isinstance(
        sample_rate, (int, float, np.integer, np.floating)
    ):
        raise AudioInputError(
            f"{what} must be a number of Hz, got {type(sample_rate).__name__} {sample_rate!r}"
        )
    if not np.isfinite(float(sample_rate)):
        raise AudioInputError(f"{what} must be a finite number of Hz, got {sample_rate!r}")
    sr = float(sample_rate)
    if sr != int(sr) or not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioInputError(
            f"{what}={sample_rate!r} is not a plausible audio sample rate; allowed: whole "
            f"numbers of Hz in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] (e.g. 16000, 22050, 48000)"
        )
    return int(sr)


def to_float(wave: np.ndarray) -> np.ndarray:
    """Integer PCM or float samples -> float32 in nominal [-1, 1] (floats are kept as is)."""
    wave = np.asarray(wave)
    kind = wave.dtype.kind
    if kind == "f":
        return wave.astype(np.float32, copy=False)
    if kind == "i":
        return (wave.astype(np.float32) / float(np.iinfo(wave.dtype).max + 1)).astype(np.float32)
    if kind == "u" and wave.dtype == np.uint8:
        return ((wave.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    raise AudioInputError(
        f"audio dtype {wave.dtype} is not supported; allowed: int16, int32, uint8 PCM or "
        "float16/float32/float64 samples"
    )


def to_mono(wave: np.ndarray) -> np.ndarray:
    """[samples] | [channels, samples] | [samples, channels] -> [samples] (channel mean)."""
    if wave.ndim == 1:
        return wave
    if wave.ndim == 2:
        rows, cols = wave.shape
        # The channel axis is the short one; with both sides short we cannot tell which
        # is time, and with both long it is not multi-channel audio at all.
        if rows <= MAX_CHANNELS < cols:
            return wave.mean(axis=0, dtype=np.float32)
        if cols <= MAX_CHANNELS < rows:
            return wave.mean(axis=1, dtype=np.float32)
        raise AudioInputError(
            f"2-D audio of shape {wave.shape} is ambiguous: expected [channels, samples] or "
            f"[samples, channels] with at most {MAX_CHANNELS} channels and more samples than "
            "channels; pass a batch as a list of 1-D arrays"
        )
    raise AudioInputError(
        f"audio must be 1-D [samples] or 2-D [channels, samples]/[samples, channels], "
        f"got shape {wave.shape}; pass a batch as a list of 1-D arrays"
    )


def resample(wave: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Resamples a float32 mono waveform with soxr (high quality)."""
    if sample_rate == target_rate:
        return wave
    import soxr

    return soxr.resample(wave, sample_rate, target_rate, quality="HQ").astype(np.float32)


def normalize_loudness(
    wave: np.ndarray, target_rms: float = TARGET_RMS, peak_limit: float = PEAK_LIMIT
) -> np.ndarray:
    """Scales to ``target_rms`` unless that would push the peak past ``peak_limit``."""
    peak = float(np.max(np.abs(wave)))
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    gain = min(target_rms / max(rms, 1e-12), peak_limit / max(peak, 1e-12))
    return (wave * gain).astype(np.float32)


def prepare_waveform(
    wave: np.ndarray,
    sample_rate: object,
    target_rate: int,
    *,
    normalize: bool = False,
    min_samples: int = 1,
    index: int | None = None,
) -> np.ndarray:
    """Validates one waveform and returns float32 mono audio at ``target_rate``.

    Args:
      wave: int or float samples, 1-D or 2-D (see the module docstring).
      sample_rate: the rate ``wave`` was recorded at.
      target_rate: the tokenizer's rate.
      normalize: loudness-normalise (peak-safe) after resampling.
      min_samples: the shortest audio (at ``target_rate``) the caller can tokenize.
      index: position in the batch, for error messages.
    """
    where = "" if index is None else f" (batch item {index})"
    try:
        sr = check_sample_rate(sample_rate)
        if wave is None:
            raise AudioInputError("audio is None")
        wave = np.asarray(wave)
        if wave.dtype == object:
            raise AudioInputError("audio is an object array; pass numeric 1-D arrays")
        wave = to_mono(to_float(wave))
        if wave.size == 0:
            raise AudioInputError("audio is empty (0 samples)")
        bad = ~np.isfinite(wave)
        if bad.any():
            first = int(np.argmax(bad))
            raise AudioInputError(
                f"audio has {int(bad.sum())} NaN/inf samples (first at sample {first}, "
                f"{first / sr:.3f} s); only finite samples are allowed"
            )
        if not np.any(wave):
            raise AudioInputError(
                f"audio is all zeros ({wave.size} samples of digital silence); there is no "
                "speech to tokenize"
            )
        wave = resample(wave, sr, target_rate)
        if wave.size < min_samples:
            raise AudioInputError(
                f"audio is {wave.size} samples ({1000 * wave.size / target_rate:.1f} ms) at "
                f"{target_rate} Hz; at least {min_samples} samples "
                f"({1000 * min_samples / target_rate:.1f} ms) are needed"
            )
        if normalize:
            wave = normalize_loudness(wave)
    except AudioInputError as e:
        raise AudioInputError(f"{e}{where}") from None
    return wave


def per_item_rates(sample_rate: object, count: int) -> list:
    """One sample rate for all ``count`` items, or a sequence of one per item -> a list."""
    if isinstance(sample_rate, (list, tuple, np.ndarray)) and np.ndim(sample_rate) == 1:
        if len(sample_rate) != count:
            raise AudioInputError(
                f"got {len(sample_rate)} sample rates for {count} waveforms; pass one rate "
                "for all or one per waveform"
            )
        return list(sample_rate)
    return [sample_rate] * count


def prepare_batch(
    waveforms: np.ndarray | Sequence[np.ndarray],
    sample_rate: object | Sequence[object],
    target_rate: int,
    *,
    normalize: bool = False,
    min_samples: int = 1,
) -> list[np.ndarray]:
    """A list of waveforms (one sample rate, or one per waveform) -> validated float32 list."""
    if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
        raise AudioInputError(
            "encode takes a batch: a list of 1-D waveforms, got a single 1-D array; "
            "wrap it in a list"
        )
    waveforms = list(waveforms)
    if not waveforms:
        raise AudioInputError("empty batch: pass at least one waveform")
    rates = per_item_rates(sample_rate, len(waveforms))
    return [
        prepare_waveform(w, r, target_rate, normalize=normalize, min_samples=min_samples, index=i)
        for i, (w, r) in enumerate(zip(waveforms, rates, strict=True))
    ]


def load_audio(path: str, target_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Reads an audio file with soundfile -> (float32 mono samples, sample rate).

    With ``target_rate`` the audio is resampled to it (and that rate is returned).
    """
    import soundfile as sf

    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)  # [samples, channels]
    except (RuntimeError, OSError) as e:  # soundfile's errors subclass RuntimeError
        raise AudioInputError(f"cannot read audio file {path!r}: {e}") from None
    wave = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if target_rate is not None:
        wave = resample(wave, int(sr), int(target_rate))
        sr = int(target_rate)
    return wave, int(sr)


def list_audio_files(pattern: str) -> list[str]:
    """Audio files under a directory (recursively) or matching a glob, sorted."""
    if os.path.isdir(pattern):
        files = [
            os.path.join(root, f)
            for root, _, names in os.walk(pattern)
            for f in names
            if f.lower().endswith(AUDIO_EXTENSIONS)
        ]
    else:
        files = [f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f)]
    if not files:
        raise FileNotFoundError(
            f"no audio files found for {pattern!r} (a directory is searched recursively for "
            f"{', '.join(AUDIO_EXTENSIONS)}; anything else is treated as a glob)"
        )
    return sorted(files)
