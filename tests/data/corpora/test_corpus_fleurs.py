"""FLEURS builder on a fake Hugging Face google/fleurs layout, read back without TF."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from corpus_fakes import read_split, write_fleurs

from audiopalm_jax.data.corpora import ManualDirError, fleurs, prepare, to_parallel


def test_fleurs_pair_joins_on_sentence_id(tmp_path):
    expected = write_fleurs(tmp_path / "m", tarred=("en_us",))  # fr_fr already extracted
    built = prepare("fleurs/en_us-fr_fr", manual_dir=tmp_path / "m", data_dir=tmp_path / "d")
    train = read_split(built, "train")
    # id 11: 2 en takes x 1 fr take -> 2 records (fr cycled); 12 and 13 are unpaired.
    assert sorted(train) == ["11_0", "11_1"]
    assert [train[k]["fr_fr"]["file"] for k in ("11_0", "11_1")] == [b"1105.wav", b"1105.wav"]
    assert sorted(read_split(built, "test")) == ["31_0", "31_1"]
    for split in ("train", "dev", "test"):
        for rec in read_split(built, split).values():
            for lang in ("en_us", "fr_fr"):
                exp = expected[lang][split][rec[lang]["file"].decode()]
                assert rec[lang]["raw_transcription"].decode() == exp.text
                assert rec[lang]["transcription"].decode() == exp.extra[1]
                assert rec[lang]["gender"] == b"female"
                assert rec["sentence_id"] == exp.extra[0]
                assert rec[lang]["audio"].dtype == np.int16
                assert len(rec[lang]["audio"]) == exp.samples
    view = to_parallel("fleurs/en_us-fr_fr", read_split(built, "dev")["21_0"])
    assert set(view["utterances"]) == {"en", "fr"}
    assert view["utterances"]["fr"]["text"] == "fr_fr sentence 21, take 0."
    assert view["voice"].count("|") == 1 and "fleurs:en_us/" in view["voice"]
    # The tarball was extracted once under data_dir, not into manual_dir.
    assert (tmp_path / "d" / "downloads" / "extracted" / "fleurs" / "en_us" / "dev").is_dir()


def test_fleurs_single_language_and_read_by_name(tmp_path):
    expected = write_fleurs(tmp_path / "m")
    prepare("fleurs/en_us", manual_dir=tmp_path / "m", data_dir=tmp_path / "d")
    source = tfds.data_source("fleurs/en_us", data_dir=tmp_path / "d", split="train")
    assert len(source) == len(expected["en_us"]["train"]) == 3
    view = to_parallel("fleurs", source[0])
    assert list(view["utterances"]) == ["en"]


def test_fleurs_configs():
    assert fleurs.Fleurs.get_builder_config("de_de-fr_fr").languages == ("de_de", "fr_fr")
    assert fleurs.Fleurs.get_builder_config("xx_yy") is None
    with pytest.raises(ValueError, match="two different"):
        fleurs.fleurs_config("en_us-en_us")


def test_fleurs_missing_language_is_named(tmp_path):
    write_fleurs(tmp_path / "m")
    with pytest.raises(ManualDirError) as err:
        prepare("fleurs/en_us-de_de", manual_dir=tmp_path / "m", data_dir=tmp_path / "d")
    msg = str(err.value)
    listed = msg.split("\n\n")[0]
    assert "data/de_de/train.tsv" in listed and "data/en_us" not in listed
    assert "huggingface.co/datasets/google/fleurs" in msg
