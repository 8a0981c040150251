"""Tests for evaluation metrics, checked against jiwer / sacrebleu called directly and by hand."""

from __future__ import annotations

import json

import jiwer
import numpy as np
import pytest
import sacrebleu

from audiopalm_jax.evaluation import metrics
from audiopalm_jax.evaluation.text_normalization import (
    BUILTIN_ENGLISH_SPELLING_MAPPING,
    canonical_language,
    get_normalizer,
    load_english_spelling_mapping,
)

# Long enough that every n-gram order up to 4 has matches, so BLEU is not trivially 0 or 100.
HYPS = [
    "The quick brown fox jumps over the lazy dog.",
    "It is a truth universally acknowledged that a single man must be in want of a wife.",
    "call me ishmael",
]
REFS = [
    "The quick brown fox jumped over the lazy dog.",
    "It is a truth universally acknowledged, that a single man in possession of a fortune.",
    "Call me Ishmael.",
]


# --- normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mr. Smith's 2nd car", "mister smith is 2nd car"),
        ("I won't pay $20.50!", "i will not pay $20.50"),
        ("one hundred and two", "102"),
        ("Um, it's (laughs) [noise] fine.", "it is fine"),
        ("Dr. Who", "doctor who"),
        ("his second car", "his 2nd car"),
        ("My favourite colours", "my favorite colors"),
        ("Café résumé", "cafe resume"),
    ],
)
def test_english_normalizer(text: str, expected: str) -> None:
    assert get_normalizer("en")(text) == expected


@pytest.mark.parametrize(
    ("text", "remove_diacritics", "expected"),
    [
        ("Ça coûte 10 €, n'est-ce pas ?", False, "ça coûte 10 n est ce pas"),
        ("Ça coûte 10 €, n'est-ce pas ?", True, "ca coute 10 n est ce pas"),
        ("Die Straße (laut) ist ÜBER", False, "die straße ist über"),
        ("¿Qué tal, señor?", False, "qué tal señor"),
        ("你好，世界！", False, "你好 世界"),
    ],
)
def test_basic_normalizer(text: str, remove_diacritics: bool, expected: str) -> None:
    norm = get_normalizer("fr", remove_diacritics=remove_diacritics)
    assert norm(text) == expected


@pytest.mark.parametrize(
    ("language", "kind"),
    [
        ("en", "english"),
        ("EN-us", "english"),
        ("en_us", "english"),
        ("eng", "english"),
        ("fr", "basic"),
        ("de", "basic"),
        ("es", "basic"),
        ("xx", "basic"),
        (None, "basic"),
    ],
)
def test_normalizer_selection_by_language(language: str | None, kind: str) -> None:
    name = get_normalizer(language).name
    assert name.startswith(f"whisper_{kind}")
    if kind == "basic":
        # Accents must count for non-English by default.
        assert name == "whisper_basic(diacritics=keep)"


def test_canonical_language() -> None:
    assert canonical_language("zh-CN") == "zh"
    assert canonical_language("cmn_hans_cn") == "zh"
    assert canonical_language("Ja") == "ja"
    assert canonical_language("") is None
    assert canonical_language("qaa") == "qaa"


def test_spelling_mapping_is_configurable(tmp_path) -> None:
    assert get_normalizer("en")("grey colour") == "gray color"
    path = tmp_path / "normalizer.json"
    path.write_text(json.dumps({"colour": "kolor"}), encoding="utf-8")
    mapping = load_english_spelling_mapping(path)
    norm = get_normalizer("en", english_spelling_mapping=mapping)
    # Only the custom mapping applies: "grey" is no longer mapped.
    assert norm("grey colour") == "grey kolor"
    assert norm.name == "whisper_english(spelling=custom:1)"
    assert get_normalizer("en").name == (
        f"whisper_english(spelling=builtin:{len(BUILTIN_ENGLISH_SPELLING_MAPPING)})"
    )
    path.write_text(json.dumps(["colour"]), encoding="utf-8")
    with pytest.raises(ValueError, match="not a JSON object"):
        load_english_spelling_mapping(path)


def test_none_normalizer_only_collapses_whitespace() -> None:
    assert get_normalizer(None, kind="none")("  Hello,   World! ") == "Hello, World!"
    with pytest.raises(ValueError, match="unknown normaliser kind"):
        get_normalizer("en", kind="fancy")  # type: ignore[arg-type]


# --- WER / CER ------------------------------------------------------------------------------


def test_wer_hand_computed_is_corpus_level() -> None:
    # Sentence 1: "sat"->"sit" (1 sub), "the" deleted (1 del) over 6 words.
    # Sentence 2: "again" inserted (1 ins) over 2 words.
    # Corpus WER = 3 / 8; the mean of per-sentence rates would be (2/6 + 1/2) / 2 != 3/8.
    result = metrics.wer(
        ["The cat sit on mat.", "Hello world again"],
        ["the cat sat on the mat", "hello, world"],
        language="en",
    )
    assert result["score"] == pytest.approx(3 / 8)
    assert result["score"] != pytest.approx((2 / 6 + 1 / 2) / 2)
    assert (result["substitutions"], result["deletions"], result["insertions"]) == (1, 1, 1)
    assert (result["hits"], result["errors"], result["reference_length"]) == (6, 3, 8)
    assert result["num_examples"] == 2
    assert result["unit"] == "word"
    assert result["signature"].startswith("wer|lang:en|norm:whisper_english")


def test_wer_matches_jiwer_on_hand_normalised_text() -> None:
    preds = ["Mr. Smith's 2nd car is red!", "Bonjour... the World", "i won't go"]
    refs = ["Mister Smith's second car is blue.", "bonjour world", "I will not go, um."]
    # Hand-applied Whisper English normalisation of the strings above ("second" -> "2nd").
    hand_preds = ["mister smith is 2nd car is red", "bonjour the world", "i will not go"]
    hand_refs = ["mister smith is 2nd car is blue", "bonjour world", "i will not go"]
    result = metrics.wer(preds, refs, language="en")
    assert result["score"] == pytest.approx(jiwer.wer(hand_refs, hand_preds))
    assert result["errors"] == 2  # "red"/"blue" substitution + "the" insertion


def test_wer_french_counts_accents() -> None:
    result = metrics.wer(["le café est fermé"], ["Le cafe est fermé."], language="fr")
    assert result["score"] == pytest.approx(jiwer.wer("le cafe est fermé", "le café est fermé"))
    assert result["substitutions"] == 1


def test_cer_hand_computed() -> None:
    # "abc" vs "abd": 1 substitution / 3 chars; "a b" vs "ab": the space is deleted, 1 / 3.
    result = metrics.cer(["abd", "ab"], ["ABC", "a b"], language="de")
    assert result["score"] == pytest.approx(2 / 6)
    assert (result["substitutions"], result["deletions"], result["insertions"]) == (1, 1, 0)
    assert result["reference_length"] == 6
    assert result["unit"] == "char"


def test_cer_matches_jiwer_on_hand_normalised_text() -> None:
    preds = ["Hola, ¿qué tal?", "Buenos dias"]
    refs = ["hola que tal", "Buenos días."]
    hand_preds, hand_refs = ["hola qué tal", "buenos dias"], ["hola que tal", "buenos días"]
    result = metrics.cer(preds, refs, language="es")
    assert result["score"] == pytest.approx(jiwer.cer(hand_refs, hand_preds))
    assert result["errors"] == 2


def test_cer_ignores_whitespace_for_languages_without_spaces() -> None:
    # Punctuation becomes a space under normalisation; that must not count as an error.
    assert metrics.cer(["你好世界"], ["你好，世界！"], language="zh")["score"] == 0.0
    result = metrics.cer(["你好世"], ["你好，世界！"], language="zh")
    assert (result["deletions"], result["reference_length"]) == (1, 4)


def test_empty_normalised_reference_counts_insertions() -> None:
    # "(laughs)" normalises to "": the hypothesis word "x" is one insertion, no reference words.
    result = metrics.wer(["x", "a b"], ["(laughs)", "a b"], language="en")
    assert (result["insertions"], result["reference_length"]) == (1, 2)
    assert result["score"] == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="empty after normalisation"):
        metrics.wer(["x"], ["[noise]"], language="en")


def test_custom_normalizer_is_used() -> None:
    raw = get_normalizer(None, kind="none")
    result = metrics.wer(["Hello world"], ["hello world"], language="en", normalizer=raw)
    assert result["substitutions"] == 1
    assert "norm:none" in result["signature"]


# --- BLEU / chrF ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "tokenize"),
    [
        ("en", "13a"),
        (None, "13a"),
        ("fr", "13a"),
        ("ko", "13a"),
        ("xx-unknown", "13a"),
        ("zh", "zh"),
        ("zh-TW", "zh"),
        ("ja", "char"),
        ("th", "char"),
    ],
)
def test_bleu_tokenizer_for_language(language: str | None, tokenize: str) -> None:
    assert metrics.bleu_tokenizer_for_language(language) == tokenize


@pytest.mark.parametrize("lowercase", [False, True])
def test_bleu_matches_sacrebleu(lowercase: bool) -> None:
    result = metrics.bleu(HYPS, REFS, lowercase=lowercase)
    expected = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="13a", lowercase=lowercase)
    assert result["score"] == pytest.approx(expected.score)
    assert 0.0 < result["score"] < 100.0
    assert result["precisions"] == pytest.approx(expected.precisions)
    assert result["brevity_penalty"] == pytest.approx(expected.bp)
    assert (result["sys_len"], result["ref_len"]) == (expected.sys_len, expected.ref_len)
    assert result["num_examples"] == 3
    case = "lc" if lowercase else "mixed"
    assert result["signature"] == (
        f"nrefs:1|case:{case}|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    )


def test_bleu_lowercase_changes_score() -> None:
    # "call me ishmael" only matches "Call me Ishmael." case-insensitively.
    assert metrics.bleu(HYPS, REFS, lowercase=True)["score"] > metrics.bleu(HYPS, REFS)["score"]


@pytest.mark.parametrize(
    ("language", "hyps", "refs", "tokenize"),
    [
        ("zh", ["我们今天去公园散步了。"], ["我们今天去公园散步。"], "zh"),
        ("ja", ["今日は公園に行きました。"], ["今日は公園へ行きました。"], "char"),
    ],
)
def test_bleu_language_tokenizers_match_sacrebleu(
    language: str, hyps: list[str], refs: list[str], tokenize: str
) -> None:
    result = metrics.bleu(hyps, refs, language=language)
    expected = sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize)
    assert result["score"] == pytest.approx(expected.score)
    assert 0.0 < result["score"] < 100.0
    assert f"tok:{tokenize}" in result["signature"]
    # With 13a the unsegmented sentence is one token, which differs from the reference: BLEU 0.
    assert metrics.bleu(hyps, refs, tokenize="13a")["score"] == 0.0


def test_bleu_rejects_unknown_tokenizer() -> None:
    with pytest.raises(ValueError, match="unknown sacrebleu tokenizer 'nope'"):
        metrics.bleu(HYPS, REFS, tokenize="nope")


@pytest.mark.parametrize(("lowercase", "word_order"), [(False, 0), (True, 0), (False, 2)])
def test_chrf_matches_sacrebleu(lowercase: bool, word_order: int) -> None:
    result = metrics.chrf(HYPS, REFS, lowercase=lowercase, word_order=word_order)
    # corpus_chrf has no lowercase flag: lower-case the inputs by hand instead.
    hyps = [h.lower() for h in HYPS] if lowercase else HYPS
    refs = [r.lower() for r in REFS] if lowercase else REFS
    expected = sacrebleu.corpus_chrf(hyps, [refs], word_order=word_order)
    assert result["score"] == pytest.approx(expected.score)
    assert 0.0 < result["score"] < 100.0
    assert result["metric"] == ("chrf++" if word_order else "chrf")
    assert f"nw:{word_order}" in result["signature"]


# --- ASR-BLEU -------------------------------------------------------------------------------


class FakeTranscriber:
    """Maps each waveform (whose first sample is an index) to a canned transcript."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.batch_sizes: list[int] = []

    def __call__(self, waveforms: list[np.ndarray]) -> list[str]:
        self.batch_sizes.append(len(waveforms))
        return [self.texts[int(w[0])] for w in waveforms]


def _waveforms(n: int) -> list[np.ndarray]:
    return [np.full(160, i, dtype=np.float32) for i in range(n)]


def test_asr_bleu_with_fake_transcriber() -> None:
    transcribe = FakeTranscriber(HYPS)
    result = metrics.asr_bleu(_waveforms(3), REFS, transcribe, language="en", batch_size=2)
    assert transcribe.batch_sizes == [2, 1]
    assert result["transcripts"] == HYPS  # raw ASR output, before normalisation
    # Hand-normalised (lower-case, punctuation removed) hypotheses and references.
    hand_hyps = [
        "the quick brown fox jumps over the lazy dog",
        "it is a truth universally acknowledged that a single man must be in want of a wife",
        "call me ishmael",
    ]
    hand_refs = [
        "the quick brown fox jumped over the lazy dog",
        "it is a truth universally acknowledged that a single man in possession of a fortune",
        "call me ishmael",
    ]
    scorer = sacrebleu.metrics.BLEU(tokenize="13a", lowercase=True)
    expected = scorer.corpus_score(hand_hyps, [hand_refs])
    assert result["score"] == pytest.approx(expected.score)
    assert result["signature"] == str(scorer.get_signature())
    assert "case:lc" in result["signature"]
    assert result["normalizer"] == "whisper_basic(diacritics=keep)"
    assert result["metric"] == "asr_bleu"
    json.dumps(result)


def test_asr_bleu_perfect_up_to_case_and_punctuation() -> None:
    refs = ["Hello there, General Kenobi! You are a bold one.", "Ça va très bien, merci."]
    transcribe = FakeTranscriber(
        ["hello there general kenobi you are a bold one", "ça va très bien merci"]
    )
    result = metrics.asr_bleu(_waveforms(2), refs, transcribe, language="fr")
    assert result["score"] == pytest.approx(100.0)
    assert transcribe.batch_sizes == [2]


def test_asr_bleu_errors() -> None:
    transcribe = FakeTranscriber(HYPS)
    with pytest.raises(ValueError, match=r"2 generated_waveforms vs 3 references"):
        metrics.asr_bleu(_waveforms(2), REFS, transcribe)
    with pytest.raises(ValueError, match="transcribe returned 1 transcripts for 3 waveforms"):
        metrics.asr_bleu(_waveforms(3), REFS, lambda ws: ["only one"])
    with pytest.raises(ValueError, match="batch_size must be positive"):
        metrics.asr_bleu(_waveforms(3), REFS, transcribe, batch_size=0)
    with pytest.raises(ValueError, match="empty corpus"):
        metrics.asr_bleu([], [], transcribe)
    with pytest.raises(ValueError, match="unknown sacrebleu tokenizer"):
        metrics.asr_bleu(_waveforms(3), REFS, transcribe, tokenize="nope")
    assert transcribe.batch_sizes == []  # validation happens before any transcription


# --- exact match ----------------------------------------------------------------------------


def test_exact_match() -> None:
    result = metrics.exact_match(
        ["Hello, world!", "Mr. Smith", "foo"],
        ["hello world", "mister smith", "bar"],
        language="en",
    )
    assert (result["num_matches"], result["num_examples"]) == (2, 3)
    assert result["score"] == pytest.approx(2 / 3)
    # Accents count for French: "cafe" != "café".
    assert metrics.exact_match(["cafe"], ["café"], language="fr")["score"] == 0.0


# --- input validation and serialisation ----------------------------------------------------

TEXT_METRICS = [
    lambda p, r: metrics.wer(p, r, language="en"),
    lambda p, r: metrics.cer(p, r, language="en"),
    lambda p, r: metrics.bleu(p, r),
    lambda p, r: metrics.chrf(p, r),
    lambda p, r: metrics.exact_match(p, r, language="en"),
]


@pytest.mark.parametrize("metric", TEXT_METRICS)
def test_length_mismatch_names_both_lengths(metric) -> None:
    with pytest.raises(ValueError, match="3 predictions vs 2 references"):
        metric(["a", "b", "c"], ["a", "b"])


@pytest.mark.parametrize("metric", TEXT_METRICS)
def test_empty_inputs_rejected(metric) -> None:
    with pytest.raises(ValueError, match="empty corpus"):
        metric([], [])


@pytest.mark.parametrize("metric", TEXT_METRICS)
def test_bare_string_and_non_string_rejected(metric) -> None:
    with pytest.raises(TypeError, match="single str"):
        metric("a b c", ["a b c"])
    with pytest.raises(TypeError, match=r"references\[1\] is int"):
        metric(["a", "b"], ["a", 3])


@pytest.mark.parametrize("metric", TEXT_METRICS)
def test_results_are_json_serialisable(metric) -> None:
    result = metric(HYPS, REFS)
    assert json.loads(json.dumps(result)) == result
    assert isinstance(result["score"], float)
    assert result["num_examples"] == len(REFS)
    assert isinstance(result["signature"], str) and result["signature"]
