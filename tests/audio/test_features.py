"""JAX spectral features against librosa and transformers' SeamlessM4TFeatureExtractor."""

import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from audiopalm_jax.audio import features as F
from audiopalm_jax.audio import frontend
from audiopalm_jax.audio.batching import pad_waveforms

SR, N_FFT, HOP = 16000, 1024, 320


@pytest.fixture(scope="module")
def waves(speech, speech_rate):
    return [frontend.prepare_waveform(s, speech_rate, SR) for s in speech[:3]]


def test_slaney_filterbank_matches_librosa():
    ours = F.slaney_mel_filterbank(SR, N_FFT, 80, 0.0, 8000.0)
    ref = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=80, fmin=0.0, fmax=8000.0)
    np.testing.assert_allclose(ours, ref.T, atol=1e-7)
    ours = F.slaney_mel_filterbank(22050, 512, 40, 50.0, 7000.0)
    ref = librosa.filters.mel(sr=22050, n_fft=512, n_mels=40, fmin=50.0, fmax=7000.0)
    np.testing.assert_allclose(ours, ref.T, atol=1e-7)


@pytest.mark.parametrize("win_length", [1024, 800])
def test_batched_log_mel_matches_librosa_per_item(waves, win_length):
    # Different lengths in one padded batch: every item's valid frames match librosa on the
    # unpadded audio, and the mask marks exactly those frames.
    batch = [waves[0], waves[1][:12345], waves[2][:7001]]
    x, lengths = pad_waveforms(batch, HOP)
    feats, mask = F.log_mel(
        jnp.asarray(x),
        jnp.asarray(lengths),
        n_fft=N_FFT,
        hop=HOP,
        window=jnp.asarray(F.hann_window(win_length, N_FFT)),
        filterbank=jnp.asarray(F.slaney_mel_filterbank(SR, N_FFT, 80, 0.0, 8000.0)),
    )
    feats, mask = np.asarray(feats), np.asarray(mask)
    for i, w in enumerate(batch):
        ref = librosa.feature.melspectrogram(
            y=w, sr=SR, n_fft=N_FFT, hop_length=HOP, win_length=win_length, n_mels=80,
            fmax=8000.0, center=True, pad_mode="constant", power=2.0,
        ).T  # fmt: skip
        assert mask[i].sum() == len(ref) == F.num_stft_frames(len(w), HOP)
        np.testing.assert_allclose(feats[i, : len(ref)], np.log(np.maximum(ref, 1e-5)), atol=2e-4)
        assert np.all(feats[i, len(ref) :] == 0.0)


def test_stft_istft_round_trip(waves):
    w = jnp.asarray(waves[0][None, :20000])
    window = jnp.asarray(F.hann_window(N_FFT, N_FFT))
    spec = F.stft(w, N_FFT, HOP, window)
    back = F.istft(spec, N_FFT, HOP, window, length=20000)
    np.testing.assert_allclose(np.asarray(back), np.asarray(w), atol=1e-5)


def test_griffin_lim_recovers_a_consistent_spectrogram(waves):
    w = waves[1][:24000]
    window = jnp.asarray(F.hann_window(N_FFT, N_FFT))
    mag = jnp.abs(F.stft(jnp.asarray(w[None]), N_FFT, HOP, window))
    rec = F.griffin_lim(mag, n_fft=N_FFT, hop=HOP, window=window, length=len(w), iterations=32)
    rec_mag = jnp.abs(F.stft(rec, N_FFT, HOP, window))
    # Spectral convergence: far below the 1.0 of a random-phase reconstruction.
    sc = float(jnp.linalg.norm(rec_mag - mag) / jnp.linalg.norm(mag))
    assert sc < 0.25, sc


def test_kaldi_filterbank_and_window_match_transformers():
    from transformers.audio_utils import window_function
    from transformers.models.seamless_m4t import SeamlessM4TFeatureExtractor

    np.testing.assert_allclose(
        F.kaldi_mel_filterbank(), SeamlessM4TFeatureExtractor().mel_filters, atol=1e-6
    )
    np.testing.assert_allclose(
        F.povey_window(), window_function(400, "povey", periodic=False), atol=1e-7
    )


def test_seamless_features_match_the_feature_extractor(waves):
    from transformers.models.seamless_m4t import SeamlessM4TFeatureExtractor

    batch = [waves[0][:20000], waves[1][:15999], waves[2][:30960]]
    ref = SeamlessM4TFeatureExtractor()(batch, sampling_rate=SR, return_tensors="np")
    x, lengths = pad_waveforms(batch, 4 * F.FBANK_HOP)
    num_frames = int(F.num_fbank_frames(x.shape[1])) // 2 * 2
    feats, mask = F.seamless_features(jnp.asarray(x), jnp.asarray(lengths), num_frames)
    feats, mask = np.asarray(feats), np.asarray(mask)
    t = ref["input_features"].shape[1]
    assert feats.shape[2] == 160 and feats.shape[1] >= t
    np.testing.assert_array_equal(mask[:, :t], ref["attention_mask"].astype(bool))
    assert not mask[:, t:].any()
    # float32 FFT vs numpy's float64: normalised features agree to ~1e-4.
    valid = ref["attention_mask"].astype(bool)
    np.testing.assert_allclose(feats[:, :t][valid], ref["input_features"][valid], atol=2e-3)
    assert np.abs(feats[:, :t][valid] - ref["input_features"][valid]).mean() < 1e-4
