"""JointVocab: id layout, mixed sequences, task tags, persistence and mismatch errors."""

import numpy as np
import pytest

from audiopalm_jax.vocab import (
    DEFAULT_CHARS,
    JointVocab,
    build_char_tokenizer,
    load_text_tokenizer,
    task_tag,
)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    d = build_char_tokenizer(list(DEFAULT_CHARS), str(tmp_path_factory.mktemp("tok")))
    return JointVocab(load_text_tokenizer(d), num_audio_tokens=300)


def test_layout_and_padding(vocab):
    assert vocab.audio_offset == vocab.text_vocab_size
    assert vocab.sep_id == vocab.audio_offset + 300
    assert vocab.size % 128 == 0 and vocab.size > vocab.sep_id
    ids = np.arange(vocab.size)
    assert vocab.is_audio(ids).sum() == 300 and vocab.is_text(ids).sum() == vocab.text_vocab_size


def test_mixed_round_trip(vocab):
    audio = np.array([0, 5, 299])
    ids = vocab.encode(["hello ", audio, "world"])
    spans = vocab.decode(ids)
    assert spans[0] == "hello " and spans[2] == "world"
    np.testing.assert_array_equal(spans[1], audio)
    with pytest.raises(ValueError, match=r"audio tokens must lie in \[0, 300\)"):
        vocab.audio_to_ids([300])


def test_task_sequences_round_trip(vocab):
    prompt = vocab.prompt_ids(["ASR", "AST", "S2ST"], "fr", "en", np.array([1, 2]))
    assert prompt[-1] == vocab.sep_id
    assert vocab.decode(prompt[:-1])[0] == "[ASR AST S2ST French English] "
    target = vocab.target_ids(["bonjour", "hello", np.array([7, 8])])
    assert target[-1] == vocab.eos_id
    out = vocab.split_target(target)
    assert out[:2] == ["bonjour", "hello"]
    np.testing.assert_array_equal(out[2], [7, 8])
    with pytest.raises(ValueError, match="read text, but the source is audio"):
        vocab.prompt_ids("TTS", "en", None, np.array([1]))


def test_task_tags():
    assert task_tag("ASR", "en") == "[ASR English]"
    assert task_tag(["AST"], "French", "en") == "[AST French English]"
    with pytest.raises(ValueError, match="unknown task 'XYZ'"):
        task_tag("XYZ", "en")
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        task_tag("ASR", "xx")


def test_save_load_and_mismatch(vocab, tmp_path):
    vocab.save(str(tmp_path))
    loaded = JointVocab.load(str(tmp_path))
    vocab.check_matches(loaded)
    assert loaded.encode_text("hello") == vocab.encode_text("hello")
    other = JointVocab(vocab.text, 301)
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        vocab.check_matches(other)


def test_missing_tokenizer_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a Hugging Face tokenizer directory"):
        load_text_tokenizer(str(tmp_path / "nope"))


def test_sentencepiece_model_round_trip(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["hello world", "bonjour le monde", "hola mundo"] * 50))
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(tmp_path / "sp"),
        vocab_size=20,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
    )
    vocab = JointVocab(load_text_tokenizer(str(tmp_path / "sp.model")), 16)
    restored = JointVocab.from_json(vocab.to_json())  # from a temporary directory, now gone
    vocab.check_matches(restored)
    assert restored.decode_text(restored.encode_text("hello world")) == "hello world"
    assert restored.to_json() == vocab.to_json()
