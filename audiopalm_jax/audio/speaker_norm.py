"""Speaker-normalised cepstral features: VTLN, per-utterance CMVN and frame context.

Why: k-means over raw log-mel frames gives each voice its own clusters. On demo_speech,
tokens of one sentence spoken by espeak's female and Klatt variants matched the male
``m1``'s on 4-20% of time-aligned frames (other male variants: 41-52%), so a model has
to learn every voice's token "dialect" separately. Three classic normalisations make
clusters shared:

* vocal tract length normalisation: each utterance's frequency axis is scaled by the warp
  factor (from a grid) whose average spectral envelope best matches a template fitted on
  the training audio, so formants of short and long vocal tracts land on the same filters;
* cepstra with per-utterance mean and variance normalisation remove channel, level and
  the remaining spectral-tilt differences;
* neighbouring frames stacked as context make a token describe a phone, not one slice.

Together they raise the agreement to 50-68% for every voice, held-out ones included
(``benchmarks/token_speaker_invariance.py``), and the demo model reads eight voices sooner
(docs/demo_run.md). Decoding is unaffected: the codebook keeps, per token, the mean
log-mel of its frames for synthesis.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import features as F

# The envelope statistic VTLN matches: cepstra 2..12 of an utterance's mean log-mel over
# its louder frames. c0 (level) and c1 (tilt) depend on the voice source and the
# recording, not on the vocal tract, and would bias the choice of warp.
ENVELOPE_CEPSTRA = slice(2, 13)


@functools.lru_cache(maxsize=8)
def dct_matrix(n: int, k: int) -> np.ndarray:
    """[n, k] orthonormal DCT-II: ``x @ dct_matrix(n, k)`` = the first k cepstra of x."""
    i = np.arange(n)[:, None] + 0.5
    m = np.cos(np.pi * i * np.arange(k)[None, :] / n) * np.sqrt(2.0 / n)
    m[:, 0] /= np.sqrt(2.0)
    return m.astype(np.float32)


@functools.lru_cache(maxsize=8)
def warped_filterbanks(
    sample_rate: int, n_fft: int, n_mels: int, warps: tuple[float, ...]
) -> np.ndarray:
    """[warps, n_fft // 2 + 1, n_mels] mel filterbanks with frequency axes scaled by each warp.

    Warp ``a`` places every filter at ``a`` times its frequency: speech whose formants sit
    ``a`` times higher than the template's gives the template's filter outputs.
    """
    base = F.slaney_mel_filterbank(sample_rate, n_fft, n_mels, 0.0, sample_rate / 2)
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    banks = [
        np.stack([np.interp(freqs / a, freqs, base[:, m], right=0.0) for m in range(n_mels)], 1)
        for a in warps
    ]
    return np.stack(banks).astype(np.float32)


def _log_mels(x: jax.Array, lengths: jax.Array, cfg, warps: tuple[float, ...]):
    """[B, N] audio -> ([B, A, T, M] log-mel per warp, [B, T] valid-frame mask)."""
    power = F.stft(
        x,
        cfg.analysis_n_fft,
        cfg.hop_length,
        jnp.asarray(F.hann_window(cfg.analysis_win_length, cfg.analysis_n_fft)),
    )
    power = jnp.real(power) ** 2 + jnp.imag(power) ** 2  # [B, T, F]
    banks = jnp.asarray(
        warped_filterbanks(cfg.sample_rate, cfg.analysis_n_fft, cfg.analysis_n_mels, warps)
    )
    mel = jnp.einsum("btf,afm->batm", power, banks, precision=jax.lax.Precision.HIGHEST)
    logmel = jnp.log(jnp.maximum(mel, cfg.log_floor))
    valid = jnp.arange(logmel.shape[2])[None, :] < (1 + lengths // cfg.hop_length)[:, None]
    return logmel, valid


def _masked_mean(x: jax.Array, mask: jax.Array, axis: int) -> jax.Array:
    w = mask.astype(x.dtype)
    return jnp.sum(x * w, axis) / jnp.maximum(jnp.sum(w, axis), 1.0)


def _envelope_shapes(logmel: jax.Array, valid: jax.Array) -> jax.Array:
    """[B, A, T, M] log-mel -> [B, A, S] envelope statistic over the frames louder than the
    utterance's median at each warp, so pauses do not count."""
    energy = logmel.mean(-1)  # [B, A, T]
    ranked = jnp.sort(jnp.where(valid[:, None], energy, jnp.inf), axis=-1)
    n = jnp.sum(valid, -1)[:, None, None]  # [B, 1, 1]
    # The median as numpy computes it: the mean of the two middle values for even counts.
    lo = jnp.take_along_axis(ranked, jnp.maximum(n - 1, 0) // 2, axis=-1)
    hi = jnp.take_along_axis(ranked, n // 2, axis=-1)
    loud = valid[:, None] & (energy > (lo + hi) / 2)  # [B, A, T]
    mean = _masked_mean(logmel, loud[..., None], axis=2)  # [B, A, M]
    dct = dct_matrix(mean.shape[-1], ENVELOPE_CEPSTRA.stop)[:, ENVELOPE_CEPSTRA]
    return mean @ jnp.asarray(dct)


def vtln_warps(cfg) -> tuple[float, ...]:
    """The grid of warp factors ``cfg`` searches (always including 1.0)."""
    grid = np.linspace(cfg.warp_min, cfg.warp_max, cfg.warp_steps)
    return tuple(sorted({round(float(a), 4) for a in grid} | {1.0}))


@functools.partial(jax.jit, static_argnums=0)
def envelope_shapes(cfg, x: jax.Array, lengths: jax.Array) -> jax.Array:
    """[B, N] audio -> [B, 1, S] unwarped envelope statistics (their mean is the template)."""
    logmel, valid = _log_mels(x, lengths, cfg, (1.0,))
    return _envelope_shapes(logmel, valid)


@functools.partial(jax.jit, static_argnums=0)
def normalized_cepstra(
    cfg, x: jax.Array, lengths: jax.Array, template: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Speaker-normalised token-rate features.

    Args:
      cfg: a ``MelConfig`` (analysis STFT, warp grid, ``cepstra``, ``context_frames``,
        ``stack``).
      x: [B, N] zero-padded audio; lengths: [B] valid samples.
      template: [S] envelope statistic the warps are matched to.
    Returns:
      ([B, T_tokens, cepstra * context_frames] features, [B] chosen warp factors).
    """
    warps = vtln_warps(cfg)
    logmel, valid = _log_mels(x, lengths, cfg, warps)  # [B, A, T, M], [B, T]
    shapes = _envelope_shapes(logmel, valid)  # [B, A, S]
    best = jnp.argmin(jnp.sum((shapes - template) ** 2, -1), -1)  # [B]
    chosen = jnp.take_along_axis(logmel, best[:, None, None, None], axis=1)[:, 0]  # [B, T, M]
    cep = chosen @ jnp.asarray(dct_matrix(chosen.shape[-1], cfg.cepstra))  # [B, T, C]
    mean = _masked_mean(cep, valid[..., None], axis=1)[:, None]
    var = _masked_mean((cep - mean) ** 2, valid[..., None], axis=1)[:, None]
    cep = (cep - mean) / jnp.sqrt(var + 1e-6)
    # Context frames repeat the utterance's edge frames rather than reading padding.
    t = cep.shape[1]
    last = jnp.maximum(jnp.sum(valid, -1) - 1, 0)[:, None]  # [B, 1]
    half = cfg.context_frames // 2
    views = []
    for offset in range(-half, half + 1):
        idx = jnp.clip(jnp.arange(t)[None, :] + offset, 0, last)  # [B, T]
        views.append(jnp.take_along_axis(cep, idx[..., None], axis=1))
    feats = jnp.concatenate(views, -1)[:, :: cfg.stack]  # [B, ceil(T / stack), C * context]
    return feats, jnp.asarray(warps)[best]
