"""Shared corpus helpers: audio decoding/resampling, language codes, voices."""

import numpy as np
import pytest
import soundfile as sf
from corpus_fakes import tone

from audiopalm_jax.data.corpora.common import iso_language, join_voices, load_audio, ordered_map


@pytest.mark.parametrize("fmt,rate", [("WAV", 48_000), ("FLAC", 16_000), ("MP3", 48_000)])
def test_load_audio_resamples_to_16k_int16(tmp_path, fmt, rate):
    if fmt not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} has no {fmt}")
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, np.stack([tone(rate, rate), tone(rate, rate)], axis=1), rate, format=fmt)
    audio = load_audio(path)
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert abs(len(audio) - 16_000) <= 16_000 * 0.01
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float32)))
    assert abs(np.argmax(spectrum) * 16_000 / len(audio) - 440) < 5  # pitch kept
    assert 0.25 < np.abs(audio).max() / 32768 < 0.35  # level kept through stereo mixdown


def test_load_audio_16k_mono_is_bit_exact(tmp_path):
    pcm = (np.arange(-800, 800) * 20).astype(np.int16)
    sf.write(tmp_path / "a.wav", pcm, 16_000, subtype="PCM_16")
    np.testing.assert_array_equal(load_audio(tmp_path / "a.wav"), pcm)


def test_language_and_voice_helpers():
    assert [iso_language(c) for c in ("zh-CN", "sv-SE", "fr_fr", "cmn_hans_cn", "yue_hant_hk")] == [
        "zh",
        "sv",
        "fr",
        "zh",
        "yue",
    ]
    assert join_voices("cv:a", "cv:a") == "cv:a"
    assert join_voices("cv:a", "cvss_c") == "cv:a|cvss_c"


def test_ordered_map_keeps_order():
    assert list(ordered_map(lambda x: x * x, range(50), threads=3)) == [x * x for x in range(50)]
