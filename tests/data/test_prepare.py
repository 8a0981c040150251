"""prepare(): builds demo_speech, fits the audio tokenizer, tokenizes; idempotent."""

import os

import ml_collections
import numpy as np
import pytest

from audiopalm_jax.audio.commands import TokenStore
from audiopalm_jax.data import pipeline, prepare
from audiopalm_jax.train.config import base_config

MIXTURE = ["demo_speech:ASR:en", "demo_speech:MT:fr-de"]  # audio of English only


def _config(data_dir: str) -> ml_collections.ConfigDict:
    c = base_config()
    c.vocab.num_audio_tokens = 32
    c.data = ml_collections.ConfigDict(
        dict(
            source="tfds",
            batch_size=4,
            seq_len=256,
            data_dir=data_dir,
            datasets={"demo_speech": {"name": "demo_speech/tiny", "splits": {}}},
            mixture=MIXTURE,
            tokens_dir="",
            audio_tokenizer_dir="",
            prepare_workers=2,
            audio_tokenizer=dict(
                num_tokens=32,
                fit_records=4,
                kmeans=dict(num_steps=5, batch_size=256, init_sample=512),
                progress=False,
            ),
        )
    )
    return c


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepare")
    config = _config(str(root / "tfds"))
    workdir = str(root / "run")
    timings = prepare.prepare(config, workdir)
    return config, workdir, timings


def test_prepare_builds_everything_the_mixture_needs(prepared):
    config, workdir, timings = prepared
    assert {"dataset/demo_speech", "audio_tokenizer", "total"} <= set(timings)
    assert config.data.tokens_dir == os.path.join(workdir, "tokens")
    assert config.data.audio_tokenizer_dir == os.path.join(workdir, "audio_tokenizer")
    assert os.path.exists(os.path.join(workdir, "audio_tokenizer", "tokenizer.json"))
    for split, n in (("train", 16), ("validation", 8)):
        store = TokenStore(pipeline.tokens_path(config.data.tokens_dir, "demo_speech", split, "en"))
        assert store.complete and len(store) == n
        assert all(len(store[i]) > 10 for i in range(n))  # ~1-3 s at 25 Hz
        # Only the languages whose audio the mixture reads are tokenized.
        assert not os.path.exists(
            pipeline.tokens_path(config.data.tokens_dir, "demo_speech", split, "fr")
        )


def test_prepare_is_idempotent(prepared):
    config, workdir, _ = prepared
    manifest = os.path.join(config.data.tokens_dir, "demo_speech", "train", "en", "manifest.json")
    before = os.path.getmtime(manifest)
    timings = prepare.prepare(_config(config.data.data_dir), workdir)
    assert os.path.getmtime(manifest) == before
    assert timings["audio_tokenizer"] < 5 and timings["total"] < 30


def test_on_the_fly_tokens_match_stored_ones(prepared):
    config, _, _ = prepared
    d = config.data
    stored = pipeline.RecordSource(
        "demo_speech", "demo_speech/tiny", "validation", d.data_dir, d.tokens_dir
    )
    live = pipeline.RecordSource(
        "demo_speech", "demo_speech/tiny", "validation", d.data_dir, "", d.audio_tokenizer_dir
    )
    fields = {("en", "audio"), ("en", "text")}
    a, b = stored.view(3, fields), live.view(3, fields)
    assert a["utterances"]["en"]["text"] == b["utterances"]["en"]["text"]
    np.testing.assert_array_equal(a["utterances"]["en"]["audio"], b["utterances"]["en"]["audio"])


def test_tokenize_more_splits_and_vocab_mismatch(prepared):
    config, workdir, _ = prepared
    prepare.tokenize_splits(config, workdir, splits=["test"])
    store = TokenStore(pipeline.tokens_path(config.data.tokens_dir, "demo_speech", "test", "en"))
    assert store.complete and len(store) == 8
    bad = _config(config.data.data_dir)
    bad.vocab.num_audio_tokens = 64
    with pytest.raises(ValueError, match="num_audio_tokens"):
        prepare.prepare(bad, workdir)


def test_other_processes_wait_for_process_0(prepared):
    config, workdir, _ = prepared
    follower = _config(config.data.data_dir)
    follower.distributed.update(num_processes=2, process_id=1)
    timings = prepare.prepare(follower, workdir)
    assert set(timings) == {"wait"}
    assert follower.data.tokens_dir == config.data.tokens_dir
