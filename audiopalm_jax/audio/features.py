"""Spectral features in JAX: STFT / ISTFT, log-mel, Kaldi fbank and Griffin-Lim.

All functions work on padded batches ``[batch, samples]`` and are jit-friendly: shapes
depend only on static arguments. Frames are cut with reshapes and slices rather than a
gather, which is several times faster on CPU.

- :func:`log_mel` matches ``librosa.feature.melspectrogram`` (centered, zero-padded STFT,
  periodic Hann window, Slaney mel filterbank) followed by ``log(max(mel, floor))``.
- :func:`kaldi_fbank` matches ``SeamlessM4TFeatureExtractor`` (80-bin Kaldi fbank with DC
  removal, pre-emphasis and the Povey window) before its per-utterance normalisation,
  which :func:`seamless_features` adds together with the stride-2 stacking.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# -- filterbanks and windows (numpy, float64, built once per configuration) -------------------


def _hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    mels = f / f_sp
    log_region = f >= min_log_hz
    return np.where(
        log_region, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels
    )


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def _triangles(bin_points: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """[bins] bin positions, [mels + 2] filter edges -> [bins, mels] triangular weights."""
    diff = np.diff(edges)
    slopes = edges[None, :] - bin_points[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    return np.maximum(0.0, np.minimum(down, up))


@functools.lru_cache(maxsize=16)
def slaney_mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """[n_fft // 2 + 1, n_mels] Slaney-normalised mel filterbank, as ``librosa.filters.mel``."""
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz_slaney(
        np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2)
    )
    weights = _triangles(fft_freqs, edges)
    weights *= 2.0 / (edges[2 : n_mels + 2] - edges[:n_mels])[None, :]
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=4)
def kaldi_mel_filterbank(
    sample_rate: int = 16000, n_fft: int = 512, n_mels: int = 80
) -> np.ndarray:
    """[n_fft // 2 + 1, n_mels] Kaldi mel filterbank (triangles in mel space, 20 Hz..Nyquist)."""
    mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)
    edges = np.linspace(mel(20.0), mel(sample_rate // 2), n_mels + 2)
    bins = mel(sample_rate / n_fft * np.arange(n_fft // 2 + 1))
    return _triangles(bins, edges).astype(np.float32)


def hann_window(length: int, n_fft: int) -> np.ndarray:
    """Periodic Hann window of ``length`` zero-padded (centered) to ``n_fft``, as librosa."""
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)
    left = (n_fft - length) // 2
    return np.pad(w, (left, n_fft - length - left)).astype(np.float32)


def povey_window(length: int = 400) -> np.ndarray:
    """Kaldi's Povey window: a symmetric Hann window to the power 0.85."""
    return (np.hanning(length) ** 0.85).astype(np.float32)


# -- framing and overlap-add --------------------------------------------------------------


def frame(x: jax.Array, frame_length: int, hop: int, num_frames: int) -> jax.Array:
    """[..., samples] -> [..., num_frames, frame_length]; frame t starts at t * hop.

    ``x`` is zero-padded as needed. Built from ``ceil(frame_length / hop)`` shifted views of
    ``x`` cut into hop-sized blocks, so no gather is needed.
    """
    r = -(-frame_length // hop)
    need = (num_frames + r) * hop
    pad = [(0, 0)] * (x.ndim - 1) + [(0, max(0, need - x.shape[-1]))]
    x = jnp.pad(x, pad)[..., :need]
    blocks = x.reshape(*x.shape[:-1], num_frames + r, hop)  # [..., T + r, hop]
    views = [blocks[..., j : j + num_frames, :] for j in range(r)]
    # stack + reshape, not concatenate: XLA:CPU runs a last-axis concat ~10x slower.
    frames = jnp.stack(views, axis=-2).reshape(*x.shape[:-1], num_frames, r * hop)
    return frames[..., :frame_length]


def overlap_add(frames: jax.Array, hop: int) -> jax.Array:
    """[..., T, L] frames -> [..., (T - 1) * hop + L] signal (the inverse of :func:`frame`)."""
    num_frames, length = frames.shape[-2:]
    r = -(-length // hop)
    pad = [(0, 0)] * (frames.ndim - 1) + [(0, r * hop - length)]
    chunks = jnp.pad(frames, pad).reshape(*frames.shape[:-1], r, hop)  # [..., T, r, hop]
    out = 0.0
    for j in range(r):
        shift = [(0, 0)] * (frames.ndim - 2) + [(j, r - 1 - j), (0, 0)]
        out = out + jnp.pad(chunks[..., j, :], shift)  # [..., T + r - 1, hop]
    out = out.reshape(*frames.shape[:-2], (num_frames + r - 1) * hop)
    return out[..., : (num_frames - 1) * hop + length]


# -- STFT / log-mel (librosa conventions) ---------------------------------------------------


def num_stft_frames(num_samples, hop: int):
    """Frames of a centered STFT over ``num_samples`` samples (int or array): ``1 + n // hop``."""
    return 1 + num_samples // hop


def stft(x: jax.Array, n_fft: int, hop: int, window: jax.Array) -> jax.Array:
    """Centered, zero-padded STFT: [..., samples] -> complex [..., 1 + samples // hop, F]."""
    num_frames = 1 + x.shape[-1] // hop
    pad = [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    frames = frame(jnp.pad(x, pad), n_fft, hop, num_frames)  # [..., T, n_fft]
    return jnp.fft.rfft(frames * window, axis=-1)


def istft(spec: jax.Array, n_fft: int, hop: int, window: jax.Array, length: int) -> jax.Array:
    """Inverse of :func:`stft` by weighted overlap-add: complex [..., T, F] -> [..., length]."""
    frames = jnp.fft.irfft(spec, n=n_fft, axis=-1) * window  # [..., T, n_fft]
    y = overlap_add(frames, hop)
    wsum = overlap_add(jnp.broadcast_to(window**2, frames.shape[-2:]), hop)
    y = y / jnp.where(wsum > 1e-8, wsum, 1.0)
    y = y[..., n_fft // 2 :]
    pad = [(0, 0)] * (y.ndim - 1) + [(0, max(0, length - y.shape[-1]))]
    return jnp.pad(y, pad)[..., :length]


def mel_power(
    x: jax.Array, n_fft: int, hop: int, window: jax.Array, filterbank: jax.Array
) -> jax.Array:
    """[..., samples] -> [..., frames, n_mels] mel power spectrogram (librosa ``power=2``)."""
    spec = stft(x, n_fft, hop, window)
    power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
    return jnp.matmul(power, filterbank, precision=jax.lax.Precision.HIGHEST)


def log_mel(
    x: jax.Array,
    lengths: jax.Array,
    *,
    n_fft: int,
    hop: int,
    window: jax.Array,
    filterbank: jax.Array,
    floor: float = 1e-5,
    pad_value: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """Batched log-mel with a padding mask.

    Args:
      x: [batch, samples] zero-padded float waveforms.
      lengths: [batch] valid samples per row.
    Returns:
      ([batch, frames, n_mels] log-mel, ``pad_value`` on padding; [batch, frames] mask).
    Valid frames are ``1 + length // hop``; since the STFT pads with zeros, they equal the
    frames of the unpadded waveform exactly.
    """
    mel = mel_power(x, n_fft, hop, window, filterbank)
    feats = jnp.log(jnp.maximum(mel, floor))
    mask = jnp.arange(feats.shape[-2])[None, :] < (1 + lengths // hop)[:, None]
    return jnp.where(mask[..., None], feats, pad_value), mask


def mel_to_linear(mel: jax.Array, filterbank: np.ndarray, iterations: int = 16) -> jax.Array:
    """Non-negative least-squares inverse of the mel projection: [..., n_mels] -> [..., F].

    Starts from the clipped pseudo-inverse and refines with multiplicative (NMF-style)
    updates, which keep the spectrum non-negative as librosa's NNLS inverse does.
    ``filterbank`` [F, n_mels] is a host array: its pseudo-inverse is computed once, at
    trace time.
    """
    fb64 = np.asarray(filterbank, np.float64)
    pinv = jnp.asarray(np.linalg.pinv(fb64), jnp.float32)  # [n_mels, F]
    fb = jnp.asarray(fb64, jnp.float32)
    hp = jax.lax.Precision.HIGHEST
    lin = jnp.maximum(jnp.matmul(mel, pinv, precision=hp), 1e-10)
    target = jnp.matmul(mel, fb.T, precision=hp)  # [..., F]

    def body(_, p):
        # p <- p * (M fb^T) / (p fb fb^T), with the [F, F] Gram matrix left factored.
        approx = jnp.matmul(jnp.matmul(p, fb, precision=hp), fb.T, precision=hp)
        return p * target / jnp.maximum(approx, 1e-10)

    return jax.lax.fori_loop(0, iterations, body, lin)


def griffin_lim(
    magnitude: jax.Array,
    *,
    n_fft: int,
    hop: int,
    window: jax.Array,
    length: int,
    iterations: int = 32,
    momentum: float = 0.99,
    key: jax.Array | None = None,
) -> jax.Array:
    """Fast Griffin-Lim (Perraudin et al. 2013, librosa's default): [..., T, F] -> [..., length].

    Random initial phase from ``key`` (fixed if omitted), so decoding is deterministic.
    """
    key = jax.random.key(0) if key is None else key
    phase = jax.random.uniform(key, magnitude.shape, magnitude.dtype) * (2 * jnp.pi)
    angles = jnp.exp(1j * phase)
    rebuilt = jnp.zeros_like(angles)

    def body(_, carry):
        angles, rebuilt = carry
        prev = rebuilt
        wave = istft(magnitude * angles, n_fft, hop, window, length)
        rebuilt = stft(wave, n_fft, hop, window)[..., : magnitude.shape[-2], :]
        angles = rebuilt - (momentum / (1 + momentum)) * prev
        angles = angles / (jnp.abs(angles) + 1e-16)
        return angles, rebuilt

    angles, _ = jax.lax.fori_loop(0, iterations, body, (angles, rebuilt))
    return istft(magnitude * angles, n_fft, hop, window, length)


# -- Kaldi fbank (SeamlessM4TFeatureExtractor conventions) ----------------------------------

FBANK_FRAME, FBANK_HOP, FBANK_FFT = 400, 160, 512
FBANK_FLOOR = 1.192092955078125e-07


def num_fbank_frames(num_samples: int | np.ndarray) -> np.ndarray:
    """Kaldi frames (25 ms window, 10 ms hop, no centering) over ``num_samples`` samples."""
    n = np.asarray(num_samples)
    return np.where(n >= FBANK_FRAME, 1 + (n - FBANK_FRAME) // FBANK_HOP, 0)


def kaldi_fbank(x: jax.Array, num_frames: int) -> jax.Array:
    """[batch, samples] float waveforms in [-1, 1] -> [batch, num_frames, 80] log fbank."""
    frames = frame(x * 32768.0, FBANK_FRAME, FBANK_HOP, num_frames)  # [B, T, 400]
    frames = frames - jnp.mean(frames, axis=-1, keepdims=True)  # remove DC per frame
    frames = jnp.concatenate(
        [frames[..., :1] * (1 - 0.97), frames[..., 1:] - 0.97 * frames[..., :-1]], axis=-1
    )
    frames = frames * jnp.asarray(povey_window(FBANK_FRAME))
    spec = jnp.fft.rfft(frames, n=FBANK_FFT, axis=-1)
    power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2  # [B, T, 257]
    fb = jnp.asarray(kaldi_mel_filterbank(16000, FBANK_FFT, 80))
    mel = jnp.matmul(power, fb, precision=jax.lax.Precision.HIGHEST)
    return jnp.log(jnp.maximum(mel, FBANK_FLOOR))


def seamless_features(
    x: jax.Array, lengths: jax.Array, num_frames: int, stride: int = 2
) -> tuple[jax.Array, jax.Array]:
    """SeamlessM4TFeatureExtractor in JAX: fbank, per-utterance per-bin norm, stride stacking.

    Args:
      x: [batch, samples] zero-padded waveforms at 16 kHz in [-1, 1].
      lengths: [batch] valid samples.
      num_frames: fbank frames to compute, a multiple of ``stride``.
    Returns:
      ([batch, num_frames // stride, 80 * stride] features, [batch, num_frames // stride]
      bool mask). A stacked frame is valid when all of its fbank frames are.
    """
    feats = kaldi_fbank(x, num_frames)  # [B, T, 80]
    valid = jnp.where(lengths >= FBANK_FRAME, 1 + (lengths - FBANK_FRAME) // FBANK_HOP, 0)
    mask = (jnp.arange(num_frames)[None, :] < valid[:, None])[..., None]  # [B, T, 1]
    n = jnp.maximum(valid, 2)[:, None, None].astype(feats.dtype)
    mean = jnp.sum(jnp.where(mask, feats, 0.0), axis=1, keepdims=True) / n
    var = jnp.sum(jnp.where(mask, (feats - mean) ** 2, 0.0), axis=1, keepdims=True) / (n - 1)
    feats = jnp.where(mask, (feats - mean) / jnp.sqrt(var + 1e-7), 0.0)
    b, t, d = feats.shape
    stacked = feats.reshape(b, t // stride, d * stride)
    out_mask = jnp.arange(t // stride)[None, :] < (valid // stride)[:, None]
    return stacked, out_mask
