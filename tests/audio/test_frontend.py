"""Audio front end: dtypes, channels, resampling, loudness and every kind of bad input."""

import numpy as np
import pytest
import soundfile as sf

from audiopalm_jax.audio import AudioInputError, frontend, load_audio


def tone(freq=440.0, sr=16000, seconds=0.5, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_int_and_float_dtypes_scale_to_unit_range():
    x = tone()
    as_int16 = np.round(x * 32767).astype(np.int16)
    as_int32 = np.round(x.astype(np.float64) * 2**31 * 0.999).astype(np.int32)
    as_uint8 = np.round(x * 127 + 128).astype(np.uint8)
    for w, tol in [(as_int16, 1e-4), (as_int32, 2e-3), (as_uint8, 1e-2), (x.astype(np.float64), 0)]:
        out = frontend.prepare_waveform(w, 16000, 16000)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, x, atol=tol)


@pytest.mark.parametrize("dtype", [bool, np.complex64])
def test_unsupported_dtypes_are_rejected(dtype):
    with pytest.raises(AudioInputError, match="dtype"):
        frontend.prepare_waveform(np.ones(1000, dtype), 16000, 16000)


def test_channels_in_either_orientation_are_averaged():
    left, right = tone(440), tone(660)
    stereo = np.stack([left, right])  # [channels, samples]
    expected = (left + right) / 2
    np.testing.assert_allclose(frontend.prepare_waveform(stereo, 16000, 16000), expected)
    np.testing.assert_allclose(frontend.prepare_waveform(stereo.T, 16000, 16000), expected)


@pytest.mark.parametrize("shape", [(100, 200), (4, 4), (2, 3, 1000)])
def test_ambiguous_or_high_rank_arrays_are_rejected(shape):
    with pytest.raises(AudioInputError, match="ambiguous|1-D"):
        frontend.prepare_waveform(np.ones(shape, np.float32), 16000, 16000)


@pytest.mark.parametrize(
    "wave, match",
    [
        (np.zeros(0, np.float32), "empty"),
        (np.zeros(16000, np.float32), "all zeros"),
        (np.zeros(16000, np.int16), "all zeros"),
        (np.r_[tone(), np.nan].astype(np.float32), "NaN/inf"),
        (np.r_[np.inf, tone()].astype(np.float32), "NaN/inf"),
        (np.array([None, 1.0], dtype=object), "object"),
        (None, "None"),
    ],
)
def test_bad_samples_raise_naming_the_problem(wave, match):
    with pytest.raises(AudioInputError, match=match):
        frontend.prepare_waveform(wave, 16000, 16000)


@pytest.mark.parametrize("sr", [0, -16000, 16, 1e9, float("nan"), 16000.5, True, "16000"])
def test_absurd_sample_rates_raise_with_allowed_range(sr):
    with pytest.raises(AudioInputError, match="sample_rate|Hz"):
        frontend.prepare_waveform(tone(), sr, 16000)


def test_sample_rate_array_suggests_swapped_arguments():
    with pytest.raises(AudioInputError, match="swap"):
        frontend.prepare_waveform(16000, tone(), 16000)


def test_too_short_audio_names_the_minimum():
    with pytest.raises(AudioInputError, match="at least 560 samples"):
        frontend.prepare_waveform(tone(seconds=0.01), 16000, 16000, min_samples=560)


def test_batch_errors_name_the_item_and_shape_mistakes():
    with pytest.raises(AudioInputError, match="batch item 1"):
        frontend.prepare_batch([tone(), np.zeros(10, np.float32)], 16000, 16000)
    with pytest.raises(AudioInputError, match="wrap it in a list"):
        frontend.prepare_batch(tone(), 16000, 16000)
    with pytest.raises(AudioInputError, match="2 sample rates for 3"):
        frontend.prepare_batch([tone()] * 3, [16000, 16000], 16000)
    with pytest.raises(AudioInputError, match="empty batch"):
        frontend.prepare_batch([], 16000, 16000)


def test_resampling_keeps_the_pitch():
    x = tone(1000.0, sr=44100, seconds=1.0)
    y = frontend.prepare_waveform(x, 44100, 16000)
    assert abs(len(y) - 16000) <= 1
    peak_hz = np.argmax(np.abs(np.fft.rfft(y))) * 16000 / len(y)
    assert abs(peak_hz - 1000.0) < 2.0


def test_loudness_normalisation_is_peak_safe():
    quiet = tone(amp=0.001)
    out = frontend.prepare_waveform(quiet, 16000, 16000, normalize=True)
    np.testing.assert_allclose(np.sqrt(np.mean(out**2)), frontend.TARGET_RMS, rtol=1e-3)
    # A spiky signal cannot reach the RMS target without clipping: the peak limit wins.
    spiky = np.zeros(16000, np.float32)
    spiky[::4000] = 1e-3
    out = frontend.prepare_waveform(spiky, 16000, 16000, normalize=True)
    np.testing.assert_allclose(np.abs(out).max(), frontend.PEAK_LIMIT, rtol=1e-5)


def test_load_audio_downmixes_and_resamples(tmp_path):
    stereo = np.stack([tone(440, 44100), tone(440, 44100)], axis=1)  # [samples, channels]
    path = str(tmp_path / "a.wav")
    sf.write(path, (stereo * 32767).astype(np.int16), 44100, subtype="PCM_16")
    wave, sr = load_audio(path)
    assert sr == 44100 and wave.ndim == 1 and len(wave) == len(stereo)
    wave16, sr16 = load_audio(path, target_rate=16000)
    assert sr16 == 16000 and abs(len(wave16) - len(wave) * 16000 / 44100) <= 1
    with pytest.raises(AudioInputError, match="cannot read"):
        load_audio(str(tmp_path / "missing.wav"))


def test_list_audio_files(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ["b.wav", "sub/a.flac", "notes.txt"]:
        path = tmp_path / name
        if name.endswith(".txt"):
            path.write_text("x")
        else:
            sf.write(str(path), tone(), 16000)
    files = frontend.list_audio_files(str(tmp_path))
    assert [f.rsplit("/", 1)[-1] for f in files] == ["b.wav", "a.flac"]
    assert frontend.list_audio_files(str(tmp_path / "*.wav")) == [str(tmp_path / "b.wav")]
    with pytest.raises(FileNotFoundError, match="no audio files"):
        frontend.list_audio_files(str(tmp_path / "*.mp3"))
