"""Speaker-normalised cepstra: VTLN warp choice, parity with a librosa reference, and
tokens that voices share."""

import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import scipy.fft
import soxr

from audiopalm_jax.audio import MelKMeansTokenizer, speaker_norm
from audiopalm_jax.audio.mel_tokenizer import MelConfig

CFG = MelConfig(features="vtln_cepstra")


def _batch(waves):
    n = -(-max(len(w) for w in waves) // 640) * 640
    x = np.stack([np.pad(w, (0, n - len(w))) for w in waves])
    return jnp.asarray(x), jnp.asarray([len(w) for w in waves])


def _features(waves, template):
    feats, warps = speaker_norm.normalized_cepstra(CFG, *_batch(waves), jnp.asarray(template))
    return feats, np.asarray(warps)


@pytest.mark.parametrize("scale", [0.88, 1.12])
def test_vtln_warp_tracks_a_known_frequency_scaling(scale, speak):
    speech = speak()
    template = np.asarray(speaker_norm.envelope_shapes(CFG, *_batch(speech)))[:, 0].mean(0)
    # Resampling to 16000 / scale Hz and playing back at 16 kHz multiplies every frequency
    # (formants included) by `scale`: a vocal tract 1 / scale times as long.
    scaled = [soxr.resample(w, 16000, round(16000 / scale)).astype(np.float32) for w in speech]
    _, original = _features(speech, template)
    _, warps = _features(scaled, template)
    print("warps", original, warps)
    assert np.all(np.abs(original - 1.0) <= 0.04)
    assert np.all(np.abs(warps / original - scale) <= 0.05)


def _reference_features(wave: np.ndarray, template: np.ndarray) -> np.ndarray:
    """The same features from librosa's STFT and mel filters, one utterance, in numpy."""
    power = np.abs(librosa.stft(wave, n_fft=512, hop_length=320, win_length=400)) ** 2
    base = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, fmax=8000)  # [40, 257]
    freqs = np.linspace(0, 8000, 257)
    best, best_dist, logmels = None, np.inf, {}
    for a in speaker_norm.vtln_warps(CFG):
        bank = np.stack([np.interp(freqs / a, freqs, row, right=0.0) for row in base])
        lm = np.log(np.maximum(bank @ power, 1e-5)).T  # [T, 40]
        energy = lm.mean(1)
        envelope = lm[energy > np.median(energy)].mean(0)
        dist = np.sum((scipy.fft.dct(envelope, norm="ortho")[2:13] - template) ** 2)
        logmels[a] = lm
        if dist < best_dist:
            best, best_dist = a, dist
    c = scipy.fft.dct(logmels[best], norm="ortho", axis=-1)[:, :13]
    c = (c - c.mean(0)) / np.sqrt(c.var(0) + 1e-6)
    padded = np.pad(c, ((4, 4), (0, 0)), mode="edge")
    return np.concatenate([padded[i : i + len(c)] for i in range(9)], 1)[::2]


def test_features_match_a_librosa_reference(speak):
    speech = speak("en+f2", range(3)) + speak("en+m3", range(3, 5))
    template = np.asarray(speaker_norm.envelope_shapes(CFG, *_batch(speak())))[:, 0].mean(0)
    feats, _ = _features(speech, template)  # one padded batch: lengths differ
    for i, wave in enumerate(speech):
        ref = _reference_features(wave, template)
        np.testing.assert_allclose(np.asarray(feats[i, : len(ref)]), ref, atol=5e-3)


def _agreement(tok: MelKMeansTokenizer, a: list, b: list) -> float:
    """Fraction of DTW-aligned token pairs that are equal between two voices' utterances."""
    agree = []
    for wa, wb in zip(a, b, strict=True):
        ta, tb = tok.encode_one(wa, 16000), tok.encode_one(wb, 16000)
        mfcc = [librosa.feature.mfcc(y=w, sr=16000, n_mfcc=13, hop_length=640) for w in (wa, wb)]
        mfcc = [(m - m.mean(1, keepdims=True)) / m.std(1, keepdims=True) for m in mfcc]
        _, path = librosa.sequence.dtw(X=mfcc[0], Y=mfcc[1])
        i = np.minimum(path[:, 0], len(ta) - 1)
        j = np.minimum(path[:, 1], len(tb) - 1)
        agree.append(np.mean(ta[i] == tb[j]))
    return float(np.mean(agree))


def test_voices_share_tokens_after_normalisation(speak):
    voices = ("en+m1", "en+f2", "en+m3", "en+f4")
    fit = [w for v in voices for w in speak(v, range(8))]
    # Male-female pairs on sentences the tokenizers were not fitted on (m7, f1: unseen voices).
    pairs = [("en+m1", "en+f2"), ("en+m3", "en+f4"), ("en+m7", "en+f1")]
    pairs = [(speak(a, range(8, 12)), speak(b, range(8, 12))) for a, b in pairs]
    scores = {}
    for features in ("log_mel", "vtln_cepstra"):
        tok = MelKMeansTokenizer.fit(
            fit, 16000, num_tokens=32, seed=0, features=features, kmeans={"num_steps": 60}
        )
        scores[features] = np.mean([_agreement(tok, a, b) for a, b in pairs])
    print("male-female token agreement", scores)  # measured: ~0.5 vs ~0.2
    assert scores["vtln_cepstra"] > 1.6 * scores["log_mel"]
