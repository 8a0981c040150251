"""fit_tokenizer, tokenize_dataset (sharding, resume, errors) and TokenStore."""

import importlib.util
import json
import os

import numpy as np
import pytest
import soundfile as sf
from safetensors import safe_open

from audiopalm_jax.audio import AudioInputError, MelKMeansTokenizer, frontend, load_tokenizer
from audiopalm_jax.audio.commands import TokenStore, fit_tokenizer, tokenize_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def records(speech, speech_rate):
    """demo_speech-style records: int16 16 kHz audio under ``audio/en``; record 4 has none."""
    out = []
    for i in range(7):
        wave = frontend.prepare_waveform(speech[i % len(speech)], speech_rate, 16000)
        wave = wave[: 16000 + 4000 * i]  # varied lengths
        audio = None if i == 4 else {"en": np.round(wave * 32767).astype(np.int16)}
        out.append({"id": f"r{i}", "audio": audio})
    return out


class Interrupted(Exception):
    pass


class FailingSource:
    """Raises while reading record ``fail_at``, like a crash halfway through a run."""

    def __init__(self, records, fail_at):
        self.records, self.fail_at = records, fail_at

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        if i == self.fail_at:
            raise Interrupted(f"simulated crash at record {i}")
        return self.records[i]


def shard_files(directory):
    return sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))


def test_tokenize_dataset_matches_direct_encoding(mel_tokenizer, records, tmp_path):
    manifest = tokenize_dataset(
        mel_tokenizer, records, str(tmp_path), audio_key="audio/en", shard_size=3, batch_size=2,
        progress=False,
    )  # fmt: skip
    assert manifest["complete"] and manifest["num_shards"] == 3
    assert shard_files(tmp_path) == [f"tokens-0000{i}.safetensors" for i in range(3)]
    store = TokenStore(str(tmp_path))
    assert len(store) == 7 and store.complete
    assert store.tokenizer_info["fingerprint"] == mel_tokenizer.fingerprint()
    for i, rec in enumerate(records):
        if rec["audio"] is None:
            assert store.status(i) == 0 and store[i].size == 0
            continue
        expected = mel_tokenizer.encode_one(rec["audio"]["en"], 16000)
        assert store.status(i) == 1
        np.testing.assert_array_equal(store[i], expected)
    np.testing.assert_array_equal(store[-1], store[6])
    with pytest.raises(IndexError):
        store[7]
    total = sum(len(store[i]) for i in range(7))
    assert manifest["total_tokens"] == total


def test_resume_after_interruption_redoes_only_missing_shards(mel_tokenizer, records, tmp_path):
    kwargs = dict(audio_key="audio/en", shard_size=2, batch_size=4, progress=False)
    reference = tmp_path / "reference"
    tokenize_dataset(mel_tokenizer, records, str(reference), **kwargs)

    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        tokenize_dataset(mel_tokenizer, FailingSource(records, fail_at=5), str(out), **kwargs)
    finished = shard_files(out)
    assert finished == ["tokens-00000.safetensors", "tokens-00001.safetensors"]
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    with open(out / "manifest.json") as f:
        assert json.load(f)["complete"] is False
    with pytest.raises(FileNotFoundError, match="missing"):
        TokenStore(str(out))[6]
    before = {f: (os.stat(out / f).st_ino, os.stat(out / f).st_mtime_ns) for f in finished}

    manifest = tokenize_dataset(mel_tokenizer, records, str(out), **kwargs)
    assert manifest["complete"]
    after = {f: (os.stat(out / f).st_ino, os.stat(out / f).st_mtime_ns) for f in finished}
    assert after == before  # finished shards were not rewritten
    assert shard_files(out) == shard_files(reference)
    a, b = TokenStore(str(out)), TokenStore(str(reference))
    for i in range(len(records)):
        np.testing.assert_array_equal(a[i], b[i])
    for name in shard_files(out):  # identical shard contents (metadata order may vary)
        with (
            safe_open(str(out / name), "numpy") as x,
            safe_open(str(reference / name), "numpy") as y,
        ):
            assert x.metadata() == y.metadata() and x.keys() == y.keys()
            for key in x.keys():
                np.testing.assert_array_equal(x.get_tensor(key), y.get_tensor(key))


def test_resume_refuses_a_different_tokenizer(
    mel_tokenizer, records, speech, speech_rate, tmp_path
):
    tokenize_dataset(
        mel_tokenizer, records[:2], str(tmp_path), audio_key="audio/en", progress=False
    )
    other = MelKMeansTokenizer(mel_tokenizer.codebook, mel_tokenizer.config)
    other.codebook = type(other.codebook)(
        other.codebook.centroids + 1.0, other.codebook.mean, other.codebook.std
    )
    with pytest.raises(ValueError, match="different tokenizer"):
        tokenize_dataset(other, records[:2], str(tmp_path), audio_key="audio/en", progress=False)


def test_invalid_audio_raises_or_is_recorded(mel_tokenizer, records, tmp_path):
    bad = [dict(r) for r in records[:3]]
    bad[1] = {"id": "bad", "audio": {"en": np.zeros(16000, np.int16)}}
    with pytest.raises(AudioInputError, match="all zeros"):
        tokenize_dataset(
            mel_tokenizer, bad, str(tmp_path / "a"), audio_key="audio/en", progress=False
        )
    manifest = tokenize_dataset(
        mel_tokenizer,
        bad,
        str(tmp_path / "b"),
        audio_key="audio/en",
        on_error="skip",
        progress=False,
    )
    store = TokenStore(str(tmp_path / "b"))
    assert [store.status(i) for i in range(3)] == [1, 2, 1]
    assert manifest["shards"]["tokens-00000.safetensors"]["invalid"] == 1


def test_callable_audio_getter_and_saved_tokenizer_dir(mel_tokenizer, records, tmp_path):
    mel_tokenizer.save(str(tmp_path / "tok"))
    src = [{"wave": r["audio"]["en"].astype(np.float32) / 32768} for r in records if r["audio"]]
    tokenize_dataset(
        str(tmp_path / "tok"), src, str(tmp_path / "out"),
        audio_key=lambda rec: (rec["wave"], 16000), progress=False,
    )  # fmt: skip
    store = TokenStore(str(tmp_path / "out"))
    np.testing.assert_array_equal(store[0], mel_tokenizer.encode_one(src[0]["wave"], 16000))


def load_config_file():
    spec = importlib.util.spec_from_file_location(
        "tokenizer_mel", f"{REPO}/configs/tokenizer_mel.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_fit_tokenizer_from_config_and_directory(speech, speech_rate, tmp_path):
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    for i, s in enumerate(speech[:4]):
        sf.write(str(audio_dir / f"{i}.flac"), s, speech_rate)
    config = load_config_file()
    config.audio = str(audio_dir)
    config.num_tokens = 16
    config.kmeans.num_steps = 10
    config.kmeans.init_sample = 1024
    config.progress = False
    tok = fit_tokenizer(config, str(tmp_path / "tok"))
    assert isinstance(tok, MelKMeansTokenizer) and tok.num_tokens == 16
    loaded = load_tokenizer(str(tmp_path / "tok"))
    assert loaded.fingerprint() == tok.fingerprint()
    with open(tmp_path / "tok" / "fit_info.json") as f:
        assert json.load(f)["info"]["items"] == 4
    # Waveforms passed in directly, with a plain dict config.
    tok2 = fit_tokenizer(
        {"num_tokens": 16, "kmeans": {"num_steps": 10, "init_sample": 1024}, "progress": False},
        str(tmp_path / "tok2"), audio=speech[:4], sample_rate=speech_rate,
    )  # fmt: skip
    assert tok2.num_tokens == 16
    with pytest.raises(ValueError, match="config.audio"):
        fit_tokenizer({}, str(tmp_path / "tok3"))
    with pytest.raises(ValueError, match="unknown config keys.*num_token"):
        fit_tokenizer({"num_token": 16}, str(tmp_path / "tok3"), audio=speech[:1], sample_rate=1)
    with pytest.raises(ValueError, match="unknown kmeans keys"):
        fit_tokenizer({"kmeans": {"steps": 3}}, str(tmp_path / "tok3"), audio=speech[:1])
