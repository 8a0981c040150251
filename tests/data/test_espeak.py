"""espeak-ng ctypes binding: audio format, voices, prosody and per-process reproducibility."""

import multiprocessing

import numpy as np
import pytest

from audiopalm_jax.data import espeak


def test_synthesize_int16_16khz_nonsilent():
    audio, sr = espeak.synthesize("Le chat noir dort.", "fr", "m3", 175, 50)
    assert sr == 16000 == espeak.SAMPLE_RATE
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert 0.5 < len(audio) / sr < 3.0
    assert np.abs(audio.astype(np.int32)).max() > 3000


@pytest.mark.parametrize("variant", ["m1", "f2", "klatt4", "f3"])
@pytest.mark.parametrize("language", ["en", "de", "es"])
def test_variants_and_languages(variant, language):
    audio, _ = espeak.synthesize("uno dos tres", language, variant)
    assert len(audio) > 8000 and np.abs(audio).max() > 1000


def test_rate_changes_duration():
    slow, _ = espeak.synthesize("The black cat sees two small dogs.", "en", "m1", rate=130)
    fast, _ = espeak.synthesize("The black cat sees two small dogs.", "en", "m1", rate=230)
    assert len(fast) < 0.8 * len(slow)


def test_unknown_voice_raises():
    with pytest.raises(ValueError, match="no voice variant"):
        espeak.synthesize("hello", "en", "no_such_variant")


def test_voice_name_roundtrip():
    voice = espeak.Voice("klatt4", 182, 47)
    assert voice.name == "klatt4_r182_p47"
    assert espeak.Voice.from_name(voice.name) == voice


def test_shard_reproducible_in_fresh_processes():
    items = [
        ({"en": "The dog sleeps.", "fr": "Le chien dort."}, espeak.Voice("f2", 160, 40), 3),
        ({"en": "A red bird runs."}, espeak.Voice("klatt", 190, 60), 4),
    ]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        a, b = pool.map(espeak.synthesize_shard, [items, items], chunksize=1)
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for lang in ra:
            np.testing.assert_array_equal(ra[lang], rb[lang])
