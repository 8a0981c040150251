"""CoVoST 2 builder on a fake Common Voice v4 + CoVoST 2 layout, read back without TF."""

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds
from corpus_fakes import read_split, resampled_length, write_covost

from audiopalm_jax.data.corpora import ManualDirError, prepare, to_parallel


def _check(built, expected, source, target, tolerance):
    for split, want in expected.items():
        got = read_split(built, split)
        assert sorted(got) == sorted(want)  # the clip listed without a file is skipped
        for key, exp in want.items():
            rec = got[key]
            assert rec["source_text"].decode() == exp.text
            assert rec["target_text"].decode() == exp.extra[0]
            assert rec["speaker"].decode() == exp.speaker
            assert (rec["source_language"].decode(), rec["target_language"].decode()) == (
                source,
                target,
            )
            audio = rec["source_audio"]
            assert audio.dtype == np.int16
            assert abs(len(audio) - resampled_length(exp.samples, exp.rate)) <= tolerance


def test_covost2_split_tsvs_mp3(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("libsndfile cannot write mp3 here")
    expected = write_covost(tmp_path / "manual", "fr", "en", clip_ext="mp3")
    built = prepare("covost2/fr_en", manual_dir=tmp_path / "manual", data_dir=tmp_path / "data")
    assert built.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
    _check(built, expected, "fr", "en", tolerance=16)
    # Also readable by name, through the generic TFDS entry point.
    source = tfds.data_source("covost2/fr_en", data_dir=tmp_path / "data", split="test")
    rec = source[0]
    view = to_parallel("covost2/fr_en", rec)
    assert view["id"] == "common_voice_fr_4" and view["voice"] == "cv:spk_c"
    assert view["utterances"]["fr"]["text"] == "Quatre."
    assert view["utterances"]["fr"]["audio"].dtype == np.int16
    assert view["utterances"]["en"] == {"text": "Four.", "audio": None}


def test_covost2_raw_tsv_and_wav_clips(tmp_path):
    """En->X from covost_v2.en_de.tsv + validated.tsv (no split TSVs), clips as .wav."""
    expected = write_covost(tmp_path / "m", "en", "de", clip_ext="wav", split_tsvs=False)
    built = prepare("covost2/en_de", manual_dir=tmp_path / "m", data_dir=tmp_path / "d")
    _check(built, expected, "en", "de", tolerance=1)  # "train_covost" row folded into train


def test_covost2_missing_or_malformed_manual_dir(tmp_path):
    with pytest.raises(ManualDirError, match="does not exist or is empty") as err:
        prepare("covost2/fr_en", manual_dir=tmp_path / "nothing", data_dir=tmp_path / "d")
    assert "dl.fbaipublicfiles.com/covost" in str(err.value)
    assert "clips" in str(err.value)

    (tmp_path / "m" / "fr").mkdir(parents=True)
    (tmp_path / "m" / "fr" / "readme.txt").write_text("not the corpus")
    with pytest.raises(ManualDirError) as err:
        prepare("covost2/fr_en", manual_dir=tmp_path / "m", data_dir=tmp_path / "d")
    assert "covost_v2.fr_en.train.tsv" in str(err.value)
    assert "validated.tsv" in str(err.value)

    write_covost(tmp_path / "m", "fr", "en", clip_ext="wav")
    for clip in (tmp_path / "m" / "fr" / "clips").iterdir():
        clip.unlink()
    (tmp_path / "m" / "fr" / "clips").rmdir()
    with pytest.raises(ManualDirError, match="clips/"):
        prepare("covost2/fr_en", manual_dir=tmp_path / "m", data_dir=tmp_path / "d")
