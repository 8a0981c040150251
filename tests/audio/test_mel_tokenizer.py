"""MelKMeansTokenizer: encode shapes and invariances, decode quality, persistence, fitting."""

import os

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft
import soundfile as sf

from audiopalm_jax.audio import (
    PAD_TOKEN,
    AudioInputError,
    AudioTokenizer,
    MelKMeansTokenizer,
    frontend,
    load_tokenizer,
)
from audiopalm_jax.audio import features as F
from audiopalm_jax.audio.mel_tokenizer import MelConfig


def test_interface(mel_tokenizer):
    tok = mel_tokenizer
    assert isinstance(tok, AudioTokenizer)
    assert (tok.num_tokens, tok.frame_rate, tok.sample_rate, tok.can_decode) == (
        64,
        25.0,
        16000,
        True,
    )


def test_encode_shapes_lengths_and_padding(mel_tokenizer, speech, speech_rate):
    tokens, lengths = mel_tokenizer.encode(speech[:3], speech_rate)
    assert tokens.dtype == np.int32 and lengths.dtype == np.int32
    assert tokens.shape == (3, lengths.max())
    for i, s in enumerate(speech[:3]):
        n16 = len(frontend.prepare_waveform(s, speech_rate, 16000))
        assert lengths[i] == -(-(1 + n16 // 320) // 2)  # 50 Hz frames, stacked in pairs
        assert abs(lengths[i] - len(s) / speech_rate * 25) <= 2
        row = tokens[i, : lengths[i]]
        assert row.min() >= 0 and row.max() < 64
        assert np.all(tokens[i, lengths[i] :] == PAD_TOKEN)
    assert len(np.unique(tokens[tokens >= 0])) > 32  # speech uses much of the codebook


def test_batching_does_not_change_tokens(mel_tokenizer, speech, speech_rate):
    tokens, lengths = mel_tokenizer.encode(speech[:4], speech_rate)
    for i in range(4):
        np.testing.assert_array_equal(
            mel_tokenizer.encode_one(speech[i], speech_rate), tokens[i, : lengths[i]]
        )


def test_rate_dtype_and_gain_invariance(mel_tokenizer, speech, speech_rate):
    ref = mel_tokenizer.encode_one(speech[0], speech_rate)
    as16k = frontend.prepare_waveform(speech[0], speech_rate, 16000)
    quiet_float = (speech[0] / 32768.0 * 0.05).astype(np.float32)
    stereo = np.stack([speech[0], speech[0]])
    for wave, sr in [(as16k, 16000), (quiet_float, speech_rate), (stereo, speech_rate)]:
        other = mel_tokenizer.encode_one(wave, sr)
        assert len(other) == len(ref)
        assert np.mean(other == ref) > 0.9


def test_bad_input_fails_loudly(mel_tokenizer):
    with pytest.raises(AudioInputError, match="all zeros.*batch item 0"):
        mel_tokenizer.encode([np.zeros(16000, np.int16)], 16000)
    with pytest.raises(AudioInputError, match="NaN"):
        mel_tokenizer.encode([np.full(16000, np.nan, np.float32)], 16000)
    with pytest.raises(AudioInputError, match="plausible"):
        mel_tokenizer.encode([np.ones(16000, np.float32)], 1)
    with pytest.raises(ValueError, match=r"must lie in \[0, 64\)"):
        mel_tokenizer.decode(np.array([[1, 2, 64]]))


def _mel_cepstra(wave: np.ndarray) -> np.ndarray:
    """[frames, 12] mel-cepstral coefficients 1..12 of 16 kHz audio (DCT of log-mel)."""
    feats, _ = F.log_mel(
        jnp.asarray(wave[None]),
        jnp.asarray([len(wave)]),
        n_fft=1024,
        hop=320,
        window=jnp.asarray(F.hann_window(1024, 1024)),
        filterbank=jnp.asarray(F.slaney_mel_filterbank(16000, 1024, 80, 0.0, 8000.0)),
    )
    log_amplitude = np.asarray(feats[0]) / 2  # log power -> log amplitude (usual MCD scale)
    return scipy.fft.dct(log_amplitude, norm="ortho", axis=-1)[:, 1:13]


def mcd(a: np.ndarray, b: np.ndarray) -> float:
    """Mel-cepstral distortion (dB-scaled, frame-aligned, no time warping)."""
    ca, cb = _mel_cepstra(a), _mel_cepstra(b)
    n = min(len(ca), len(cb))
    return float(np.mean(10 / np.log(10) * np.sqrt(2 * np.sum((ca[:n] - cb[:n]) ** 2, -1))))


def test_decode_round_trip_is_recognisably_the_same_speech(mel_tokenizer, speech, speech_rate):
    tokens, lengths = mel_tokenizer.encode(speech[:3], speech_rate)
    decoded = mel_tokenizer.decode(tokens, lengths)
    rng = np.random.default_rng(0)
    random = mel_tokenizer.decode(rng.integers(0, 64, tokens.shape), lengths)
    report = []
    for i in range(3):
        ref = frontend.prepare_waveform(speech[i], speech_rate, 16000, normalize=True)
        assert decoded[i].dtype == np.float32 and len(decoded[i]) == lengths[i] * 640
        assert np.abs(decoded[i]).max() <= 1.0
        report.append((mcd(ref, decoded[i]), mcd(ref, random[i])))
    print("MCD round trip vs random tokens:", [f"{a:.1f} vs {b:.1f}" for a, b in report])
    for round_trip, baseline in report:
        assert round_trip < 0.5 * baseline


def test_decode_is_deterministic_and_ignores_padding(mel_tokenizer, speech, speech_rate):
    tokens, lengths = mel_tokenizer.encode(speech[:2], speech_rate)
    a = mel_tokenizer.decode(tokens, lengths)
    b = mel_tokenizer.decode(tokens)  # lengths implied by PAD_TOKEN
    np.testing.assert_array_equal(a[1], b[1])


def test_save_load_round_trip_without_pickle(mel_tokenizer, speech, speech_rate, tmp_path):
    mel_tokenizer.save(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["tokenizer.json", "tokenizer.safetensors"]
    for cls in (load_tokenizer, MelKMeansTokenizer.load, AudioTokenizer.load):
        tok = cls(str(tmp_path))
        assert isinstance(tok, MelKMeansTokenizer) and tok.config == mel_tokenizer.config
        assert tok.fingerprint() == mel_tokenizer.fingerprint()
    np.testing.assert_array_equal(
        tok.encode(speech[:2], speech_rate)[0], mel_tokenizer.encode(speech[:2], speech_rate)[0]
    )
    with pytest.raises(FileNotFoundError, match="not a saved audio tokenizer"):
        load_tokenizer(str(tmp_path / "nope"))


def test_fit_from_files_at_50hz(speech, speech_rate, tmp_path):
    for i, s in enumerate(speech[:4]):
        sf.write(str(tmp_path / f"{i}.wav"), s, speech_rate, subtype="PCM_16")
    tok = MelKMeansTokenizer.fit(
        str(tmp_path),
        num_tokens=16,
        frame_rate=50,
        seed=1,
        kmeans={"num_steps": 10, "init_sample": 1024},
    )
    assert tok.frame_rate == 50 and tok.config.stack == 1 and tok.num_tokens == 16
    assert tok.fit_info["items"] == 4
    tokens = tok.encode_one(speech[0], speech_rate)
    assert abs(len(tokens) - len(speech[0]) / speech_rate * 50) <= 2
    with pytest.raises(ValueError, match="must divide"):
        MelKMeansTokenizer.fit(speech[:1], speech_rate, frame_rate=30)
    with pytest.raises(ValueError, match="no sample_rate"):
        MelKMeansTokenizer.fit(speech[:1])


@pytest.fixture(scope="module")
def vtln_tokenizer(speech, speech_rate):
    """The same tokenizer over speaker-normalised cepstra (features="vtln_cepstra")."""
    return MelKMeansTokenizer.fit(
        speech,
        speech_rate,
        num_tokens=64,
        seed=0,
        features="vtln_cepstra",
        kmeans={"num_steps": 60, "batch_size": 1024, "init_sample": 2048},
    )


def test_vtln_cepstra_tokenizer_decodes_and_round_trips(
    vtln_tokenizer, speech, speech_rate, tmp_path
):
    tok = vtln_tokenizer
    assert tok.feature_dim == 13 * 9 and tok.codebook.decode_table.shape == (64, 160)
    tokens, lengths = tok.encode(speech[:3], speech_rate)
    assert np.all(np.abs(lengths - np.array([len(s) for s in speech[:3]]) / speech_rate * 25) <= 2)
    decoded = tok.decode(tokens, lengths)
    random = tok.decode(np.random.default_rng(0).integers(0, 64, tokens.shape), lengths)
    for i in range(3):
        ref = frontend.prepare_waveform(speech[i], speech_rate, 16000, normalize=True)
        assert mcd(ref, decoded[i]) < 0.6 * mcd(ref, random[i])
    tok.save(str(tmp_path))
    back = load_tokenizer(str(tmp_path))
    assert back.config == tok.config and back.fingerprint() == tok.fingerprint()
    np.testing.assert_array_equal(back.vtln_template, tok.vtln_template)
    np.testing.assert_array_equal(back.encode(speech[:3], speech_rate)[0], tokens)
    np.testing.assert_array_equal(back.decode(tokens, lengths)[1], decoded[1])


def test_bad_feature_settings_name_the_value():
    with pytest.raises(
        ValueError, match=r"features='mfcc'; choose one of \('log_mel', 'vtln_cepstra'\)"
    ):
        MelKMeansTokenizer(None, MelConfig(features="mfcc"))
    with pytest.raises(ValueError, match="context_frames=4 must be odd"):
        MelKMeansTokenizer(None, MelConfig(features="vtln_cepstra", context_frames=4))
    with pytest.raises(RuntimeError, match="no VTLN template; fit it first"):
        MelKMeansTokenizer(None, MelConfig(features="vtln_cepstra")).features(
            [np.ones(16000, np.float32)], 16000
        )
