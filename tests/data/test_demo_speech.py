"""demo_speech: grammar agreement, split hygiene, TFDS build + TF-free reading, determinism."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from audiopalm_jax.data import demo_grammar as g
from audiopalm_jax.data import demo_speech
from audiopalm_jax.data.demo_grammar import NounPhrase as NP
from audiopalm_jax.data.demo_grammar import Sentence

LANGS = ("en", "fr", "de", "es")


def test_grammar_agreement_and_word_order():
    s = Sentence(NP("cat", "def_pl", adjective="black"), "sleep")
    assert g.render_all(s) == {
        "en": "The black cats sleep.",
        "fr": "Les chats noirs dorment.",
        "de": "Die schwarzen Katzen schlafen.",
        "es": "Los gatos negros duermen.",
    }
    # French pre-noun adjective with vowel form, German dative after "helfen",
    # Spanish personal "a" contracted to "al".
    s = Sentence(NP("girl", "indef"), "help", NP("man", "def", adjective="old"))
    assert g.render_all(s) == {
        "en": "A girl helps the old man.",
        "fr": "Une fille aide le vieil homme.",
        "de": "Ein Mädchen hilft dem alten Mann.",
        "es": "Una niña ayuda al hombre viejo.",
    }
    # German V2 after a fronted adverb, weak noun, "de" before a pre-noun plural adjective.
    s = Sentence(NP("boy", "def"), "see", NP("bird", "bare", adjective="small"), adverb="today")
    assert g.render_all(s) == {
        "en": "Today the boy sees small birds.",
        "fr": "Aujourd'hui le garçon voit de petits oiseaux.",
        "de": "Heute sieht der Junge kleine Vögel.",
        "es": "Hoy el chico ve pájaros pequeños.",
    }
    s = Sentence(NP("mouse", "num", 3, "white"), "follow", NP("boy", "def"), location=None)
    assert g.render(s, "de") == "Drei weiße Mäuse folgen dem Jungen."
    assert g.render(s, "fr") == "Trois souris blanches suivent le garçon."
    s = Sentence(NP("friend", "def"), "have", NP("apple", "indef", adjective="old"))
    assert g.render(s, "en") == "The friend has an old apple."
    assert g.render(s, "fr") == "L'ami a une vieille pomme."
    assert g.render(s, "de") == "Der Freund hat einen alten Apfel."


def test_sampled_sentences_lengths_and_holdout():
    rng = np.random.default_rng(0)
    train = g.sample_sentences(rng, 300, held_out=False)
    test = g.sample_sentences(rng, 100, held_out=True)
    assert len(set(train)) == 300 and not set(train) & set(test)
    for s in train + test:
        for lang in LANGS:
            assert g.MIN_WORDS <= len(g.render_words(s, lang)) <= g.MAX_WORDS
    assert not any(s.is_held_out() for s in train)
    assert all(s.combinations() & (g.HELD_OUT_ADJ_NOUN | g.HELD_OUT_SUBJ_VERB) for s in test)


def test_plan_is_deterministic_and_seed_dependent():
    config = demo_speech.config_for("tiny")
    assert demo_speech.plan_records(config) == demo_speech.plan_records(config)
    other = demo_speech.plan_records(demo_speech.config_for("tiny", seed=1))
    assert other != demo_speech.plan_records(config)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    demo_speech.prepare_demo_speech(data_dir, size="tiny", num_workers=2)
    return data_dir


def _read_split(data_dir, split):
    # The reader TF-free consumers use: TFDS ArrayRecord data source.
    source = tfds.data_source("demo_speech/tiny", split=split, data_dir=data_dir)
    return [demo_speech.decode_record(source[i]) for i in range(len(source))]


def test_build_and_read_without_tensorflow(built):
    sizes = demo_speech.config_for("tiny").split_sizes()
    texts = {}
    for split in demo_speech.SPLITS:
        records = _read_split(built, split)
        assert len(records) == sizes[split]
        for r in records:
            assert set(r) == {"id", "voice", "text", "audio"}
            assert set(r["text"]) == set(r["audio"]) == set(LANGS)
            assert r["id"].startswith(split) and isinstance(r["voice"], str)
            for lang in LANGS:
                audio = r["audio"][lang]
                assert audio.dtype == np.int16 and audio.ndim == 1
                assert 0.5 < len(audio) / 16000 < 6.0
                assert np.abs(audio.astype(np.int32)).max() > 2000  # not silent
        texts[split] = {r["text"]["en"] for r in records}
    info = tfds.builder("demo_speech/tiny", data_dir=built).info
    assert info.metadata["sample_rate"] == 16000 and str(info.version) == "1.0.0"
    # No sentence is shared between splits.
    for a in demo_speech.SPLITS:
        for b in demo_speech.SPLITS:
            assert a == b or not texts[a] & texts[b]


def test_held_out_combinations_and_voices(built):
    plans = demo_speech.plan_records(demo_speech.config_for("tiny"))
    train = _read_split(built, "train")
    train_variants = {demo_speech.Voice.from_name(r["voice"]).variant for r in train}
    assert train_variants <= set(demo_speech.TRAIN_VARIANTS)
    unseen = _read_split(built, "test_unseen_voice")
    for r in unseen:
        assert demo_speech.Voice.from_name(r["voice"]).variant not in train_variants
        assert demo_speech.Voice.from_name(r["voice"]).variant in demo_speech.HELD_OUT_VARIANTS
    # Train never uses a held-out combination; every test sentence does.
    assert not any(p.sentence.is_held_out() for p in plans["train"] + plans["validation"])
    assert all(p.sentence.is_held_out() for p in plans["test"] + plans["test_unseen_voice"])
    # What is stored is what was planned, so the same holds for the built dataset.
    assert [r["text"] for r in sorted(train, key=lambda r: r["id"])] == [
        p.text for p in plans["train"]
    ]
    train_en = {r["text"]["en"] for r in train}
    for split in ("test", "test_unseen_voice"):
        assert not train_en & {r["text"]["en"] for r in _read_split(built, split)}


def test_generation_is_deterministic(built):
    plans = demo_speech.plan_records(demo_speech.config_for("tiny"))["validation"]
    # Regenerate with a different worker count and start method; audio must be identical.
    again = list(demo_speech.synthesize_records(plans, num_workers=1, start_method="spawn"))
    stored = {r["id"]: r for r in _read_split(built, "validation")}
    for plan, audio in zip(plans, again, strict=True):
        record = stored[plan.id]
        assert record["text"] == plan.text and record["voice"] == plan.voice.name
        for lang in LANGS:
            np.testing.assert_array_equal(record["audio"][lang], audio[lang])


def test_load_demo_speech_gives_str_records(built):
    source = demo_speech.load_demo_speech(built, "test", size="tiny")
    r = source[0]
    assert len(source) == 8 and isinstance(r["text"]["fr"], str) and isinstance(r["id"], str)
