"""CVSS builder on a fake CVSS release + CoVoST 2 source layout, read back without TF."""

import numpy as np
import pytest
import soundfile as sf
from corpus_fakes import read_split, resampled_length, write_cvss

from audiopalm_jax.data.corpora import ManualDirError, cvss, prepare, to_parallel


def test_cvss_c_joins_source_and_target(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("libsndfile cannot write mp3 here")
    expected = write_cvss(tmp_path / "m", "c", "fr")
    built = prepare("cvss/c_fr_en", manual_dir=tmp_path / "m", data_dir=tmp_path / "d")
    for split, want in expected.items():
        got = read_split(built, split)
        assert sorted(got) == sorted(want)
        for key, exp in want.items():
            rec, src = got[key], exp.extra[0]
            assert rec["target_text"].decode() == exp.text
            assert rec["covost_translation"].decode() == src.extra[0]
            assert rec["source_text"].decode() == src.text
            assert rec["target_speaker"].decode() == "cvss_c"
            assert len(rec["target_audio"]) == resampled_length(exp.samples, exp.rate)
            assert abs(len(rec["source_audio"]) - resampled_length(src.samples, src.rate)) <= 16
    rec = read_split(built, "dev")["common_voice_fr_3"]
    view = to_parallel("cvss", rec)
    assert view["voice"] == "cv:spk_a|cvss_c"
    assert set(view["utterances"]) == {"fr", "en"}
    assert view["utterances"]["en"]["text"] == "normalized three."
    assert view["utterances"]["en"]["audio"].dtype == np.int16
    assert view["utterances"]["fr"]["text"] == "Trois."


def test_cvss_t_voice_is_the_source_speaker():
    record = {
        "id": b"common_voice_fr_1",
        "speaker": b"spk_a",
        "target_speaker": b"spk_a",
        "source_language": b"fr",
        "source_text": b"Un.",
        "source_audio": np.zeros(3, np.int16),
        "target_language": b"en",
        "target_text": b"one.",
        "target_audio": np.zeros(5, np.int16),
    }
    assert cvss.to_parallel(record)["voice"] == "cv:spk_a"


def test_cvss_config_names_use_release_codes():
    names = {c.name for c in cvss.Cvss.BUILDER_CONFIGS}
    assert {"c_fr_en", "t_zh_en", "c_sv_en"} <= names and len(names) == 42
    assert cvss.Cvss.builder_configs["t_zh_en"].covost_source == "zh-CN"


def test_cvss_missing_release_names_it(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "unrelated.txt").write_text("x")
    with pytest.raises(ManualDirError) as err:
        prepare("cvss/t_de_en", manual_dir=tmp_path / "m", data_dir=tmp_path / "d")
    assert "cvss_t_de_en_v1.0/train.tsv" in str(err.value)
    assert "storage.googleapis.com/cvss" in str(err.value)
