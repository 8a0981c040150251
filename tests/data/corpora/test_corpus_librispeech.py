"""LibriSpeech builder on a fake OpenSLR layout, read back without TF."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from corpus_fakes import read_split, write_librispeech

from audiopalm_jax.data.corpora import ManualDirError, librispeech, prepare, to_parallel


def test_librispeech_clean100(tmp_path):
    subsets = ("train-clean-100", "dev-clean", "test-clean")
    expected = write_librispeech(tmp_path / "m", subsets)
    built = prepare("librispeech_manual/clean100", manual_dir=tmp_path / "m", data_dir=tmp_path)
    assert set(built.info.splits) == {"train_clean100", "dev_clean", "test_clean"}
    for subset, want in expected.items():
        got = read_split(built, librispeech.SUBSETS[subset])
        assert sorted(got) == sorted(want)
        for key, exp in want.items():
            assert got[key]["text"].decode() == exp.text
            assert got[key]["speaker"].decode() == exp.speaker
            assert got[key]["audio"].dtype == np.int16
            assert len(got[key]["audio"]) == exp.samples  # 16 kHz flac: stored as is
    # Readable from the files alone (no builder class), as another process without it would.
    files_only = tfds.builder_from_directory(built.data_dir)
    assert len(files_only.as_data_source(split="test_clean")) == len(expected["test-clean"])
    source = tfds.data_source("librispeech_manual/clean100", data_dir=tmp_path, split="dev_clean")
    view = to_parallel("librispeech_manual", source[0])
    assert list(view["utterances"]) == ["en"]
    assert view["voice"].startswith("librispeech:")
    assert view["utterances"]["en"]["text"].startswith("WORD DEV-CLEAN")


def test_librispeech_missing_subset_is_named(tmp_path):
    write_librispeech(tmp_path / "m", ("dev-clean",))
    with pytest.raises(ManualDirError) as err:
        prepare("librispeech_manual/clean", manual_dir=tmp_path / "m", data_dir=tmp_path / "d")
    msg = str(err.value)
    assert "LibriSpeech/train-clean-360/" in msg and "LibriSpeech/dev-clean/" not in msg
    assert "openslr.org/12" in msg
