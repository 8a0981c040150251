"""Corpus-level ASR / AST / S2ST metrics: WER, CER, BLEU, chrF, ASR-BLEU and exact match.

All metrics are *corpus-level*: WER = total word edits / total reference words (not the mean of
per-sentence rates), BLEU / chrF pool n-gram statistics over the corpus as ``sacrebleu`` does.
Results are plain dicts (JSON-serialisable) with at least ``metric``, ``score``, ``num_examples``
and ``signature``. Units follow the underlying libraries: WER / CER / exact match are fractions
(WER may exceed 1), BLEU / chrF are on a 0-100 scale.

BLEU tokeniser rule (``bleu_tokenizer_for_language``): ``zh`` -> ``"zh"``; languages written
without spaces (``ja``, ``th``, ``lo``, ``my``, ``km``) -> ``"char"`` (``ja-mecab`` needs MeCab,
which is not installed); everything else, including ``None`` and unknown codes -> ``"13a"``
(sacrebleu's default, which also covers space-delimited Korean since ``ko-mecab`` is unavailable).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

import jiwer
from sacrebleu.metrics import BLEU, CHRF

from audiopalm_jax.evaluation.text_normalization import (
    NO_SPACE_LANGUAGES,
    TextNormalizer,
    canonical_language,
    get_normalizer,
)


class ErrorRateResult(TypedDict):
    """WER / CER with the raw edit counts (``unit`` is ``"word"`` or ``"char"``)."""

    metric: str
    score: float
    num_examples: int
    signature: str
    unit: str
    errors: int
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    reference_length: int


class BleuResult(TypedDict):
    """Corpus BLEU plus the statistics sacrebleu reports."""

    metric: str
    score: float
    num_examples: int
    signature: str
    tokenize: str
    precisions: list[float]
    brevity_penalty: float
    sys_len: int
    ref_len: int


class ChrfResult(TypedDict):
    """Corpus chrF (chrF++ when ``word_order=2``)."""

    metric: str
    score: float
    num_examples: int
    signature: str


class AsrBleuResult(BleuResult):
    """BLEU of ASR transcripts of generated speech; ``transcripts`` are the raw ASR outputs."""

    transcripts: list[str]
    normalizer: str


class ExactMatchResult(TypedDict):
    """Fraction of examples whose normalised prediction equals the normalised reference."""

    metric: str
    score: float
    num_examples: int
    signature: str
    num_matches: int


_BLEU_TOKENIZER_BY_LANGUAGE: dict[str, str] = {"zh": "zh"} | {
    lang: "char" for lang in NO_SPACE_LANGUAGES - {"zh"}
}
_DEFAULT_BLEU_TOKENIZER = "13a"


def bleu_tokenizer_for_language(language: str | None) -> str:
    """Pick the sacrebleu tokeniser for a target language (rule in the module docstring)."""
    lang = canonical_language(language)
    return _BLEU_TOKENIZER_BY_LANGUAGE.get(lang or "", _DEFAULT_BLEU_TOKENIZER)


def _check_texts(name: str, texts: Sequence[str]) -> list[str]:
    # A bare string is a Sequence[str] too; iterating it would silently score characters.
    if isinstance(texts, str | bytes):
        raise TypeError(
            f"{name} must be a sequence of strings, not a single {type(texts).__name__}"
        )
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] is {type(text).__name__}, expected str")
    return out


def _check_pair(
    predictions: Sequence[str], references: Sequence[str], pred_name: str = "predictions"
) -> tuple[list[str], list[str]]:
    preds = _check_texts(pred_name, predictions)
    refs = _check_texts("references", references)
    _check_lengths(pred_name, len(preds), len(refs))
    return preds, refs


def _check_lengths(pred_name: str, num_preds: int, num_refs: int) -> None:
    if num_preds != num_refs:
        raise ValueError(
            f"{pred_name} and references differ in length: "
            f"{num_preds} {pred_name} vs {num_refs} references"
        )
    if num_preds == 0:
        raise ValueError(f"cannot score an empty corpus (0 {pred_name}, 0 references)")


def _jiwer_version() -> str:
    return importlib.metadata.version("jiwer")


def _error_rate(
    metric: str,
    predictions: Sequence[str],
    references: Sequence[str],
    language: str | None,
    normalizer: TextNormalizer | None,
) -> ErrorRateResult:
    preds, refs = _check_pair(predictions, references)
    norm = normalizer if normalizer is not None else get_normalizer(language)
    lang = canonical_language(language)
    preds = [norm(p) for p in preds]
    refs = [norm(r) for r in refs]
    unit = "word" if metric == "wer" else "char"
    if unit == "char" and lang in NO_SPACE_LANGUAGES:
        # Spaces are not part of these scripts; they only appear where the normaliser removed
        # punctuation, and must not count as character errors.
        preds = ["".join(p.split()) for p in preds]
        refs = ["".join(r.split()) for r in refs]

    def length(text: str) -> int:
        return len(text.split()) if unit == "word" else len(text)

    # References that normalise to nothing (e.g. "(laughs)") contribute their hypothesis as pure
    # insertions. Handled here because jiwer < 4 refuses empty references.
    insertions = sum(length(p) for p, r in zip(preds, refs, strict=True) if not r)
    kept = [(p, r) for p, r in zip(preds, refs, strict=True) if r]
    subs = dels = hits = 0
    if kept:
        hyps_kept, refs_kept = [p for p, _ in kept], [r for _, r in kept]
        process = jiwer.process_words if unit == "word" else jiwer.process_characters
        out = process(refs_kept, hyps_kept)
        subs, dels, hits = out.substitutions, out.deletions, out.hits
        insertions += out.insertions
    reference_length = subs + dels + hits
    if reference_length == 0:
        raise ValueError(
            f"all {len(refs)} references are empty after normalisation ({norm.name}); "
            f"{metric.upper()} is undefined"
        )
    errors = subs + dels + insertions
    return {
        "metric": metric,
        "score": errors / reference_length,
        "num_examples": len(refs),
        "signature": f"{metric}|lang:{lang or 'none'}|norm:{norm.name}|jiwer:{_jiwer_version()}",
        "unit": unit,
        "errors": errors,
        "substitutions": subs,
        "deletions": dels,
        "insertions": insertions,
        "hits": hits,
        "reference_length": reference_length,
    }


def wer(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    language: str | None,
    normalizer: TextNormalizer | None = None,
) -> ErrorRateResult:
    """Corpus word error rate after Whisper-style normalisation.

    ``normalizer=None`` picks it from ``language`` (English -> English normaliser, else basic,
    diacritics kept). For zh / ja / th etc. whitespace-split WER is meaningless: use ``cer``.
    """
    return _error_rate("wer", predictions, references, language, normalizer)


def cer(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    language: str | None,
    normalizer: TextNormalizer | None = None,
) -> ErrorRateResult:
    """Corpus character error rate after Whisper-style normalisation.

    Spaces between words count as characters, except for languages written without spaces
    (``NO_SPACE_LANGUAGES``), where all whitespace is dropped before alignment.
    """
    return _error_rate("cer", predictions, references, language, normalizer)


def _resolve_tokenizer(language: str | None, tokenize: str | None) -> str:
    if tokenize is None:
        return bleu_tokenizer_for_language(language)
    if tokenize not in BLEU.TOKENIZERS:
        raise ValueError(
            f"unknown sacrebleu tokenizer {tokenize!r}; choose from {sorted(BLEU.TOKENIZERS)}"
        )
    return tokenize


def _bleu(
    preds: list[str], refs: list[str], tokenize: str, lowercase: bool, metric: str
) -> BleuResult:
    scorer = BLEU(tokenize=tokenize, lowercase=lowercase)
    score = scorer.corpus_score(preds, [refs])
    return {
        "metric": metric,
        "score": float(score.score),
        "num_examples": len(preds),
        "signature": str(scorer.get_signature()),
        "tokenize": tokenize,
        "precisions": [float(p) for p in score.precisions],
        "brevity_penalty": float(score.bp),
        "sys_len": int(score.sys_len),
        "ref_len": int(score.ref_len),
    }


def bleu(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    language: str | None = None,
    tokenize: str | None = None,
    lowercase: bool = False,
) -> BleuResult:
    """Corpus BLEU via sacrebleu (one reference per example), with its signature string.

    Args:
      language: target language; selects the tokeniser when ``tokenize`` is None.
      tokenize: explicit sacrebleu tokeniser name (overrides ``language``).
      lowercase: case-insensitive BLEU (``case:lc`` in the signature).
    """
    preds, refs = _check_pair(predictions, references)
    return _bleu(preds, refs, _resolve_tokenizer(language, tokenize), lowercase, "bleu")


def chrf(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    lowercase: bool = False,
    word_order: int = 0,
) -> ChrfResult:
    """Corpus chrF via sacrebleu (``word_order=2`` gives chrF++).

    chrF works on characters with whitespace removed, so it needs no language-specific tokeniser.
    """
    preds, refs = _check_pair(predictions, references)
    scorer = CHRF(lowercase=lowercase, word_order=word_order)
    score = scorer.corpus_score(preds, [refs])
    return {
        "metric": "chrf++" if word_order else "chrf",
        "score": float(score.score),
        "num_examples": len(preds),
        "signature": str(scorer.get_signature()),
    }


def asr_bleu(
    generated_waveforms: Sequence[Any],
    references: Sequence[str],
    transcribe: Callable[[list[Any]], list[str]],
    *,
    language: str | None = None,
    tokenize: str | None = None,
    batch_size: int | None = None,
) -> AsrBleuResult:
    """ASR-BLEU for speech-to-speech translation.

    Transcribes the generated speech with ``transcribe`` (any callable from a list of waveforms to
    a list of strings; normally the model's own ASR task), lower-cases and normalises both the
    transcripts and the references with the basic Whisper normaliser (punctuation removed,
    diacritics kept), then computes corpus BLEU with the tokeniser for ``language``.

    Args:
      generated_waveforms: one waveform (e.g. a 1-D numpy array) per example.
      references: reference target-language texts.
      transcribe: the ASR callable.
      language: target language (tokeniser selection only; the normaliser is language-neutral).
      tokenize: explicit sacrebleu tokeniser name.
      batch_size: call ``transcribe`` on chunks of this many waveforms (None: all at once).
    """
    if isinstance(generated_waveforms, str | bytes):
        raise TypeError("generated_waveforms must be a sequence of waveforms")
    waveforms = list(generated_waveforms)
    refs = _check_texts("references", references)
    _check_lengths("generated_waveforms", len(waveforms), len(refs))
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    tok = _resolve_tokenizer(language, tokenize)  # fail on a bad tokeniser before running ASR
    step = batch_size or len(waveforms)
    transcripts: list[str] = []
    for start in range(0, len(waveforms), step):
        chunk = waveforms[start : start + step]
        out = _check_texts("transcripts", transcribe(chunk))
        if len(out) != len(chunk):
            raise ValueError(
                f"transcribe returned {len(out)} transcripts for {len(chunk)} waveforms"
            )
        transcripts.extend(out)
    norm = get_normalizer(language, kind="basic")
    hyps = [norm(t) for t in transcripts]
    norm_refs = [norm(r) for r in refs]
    result = _bleu(hyps, norm_refs, tok, lowercase=True, metric="asr_bleu")
    return {**result, "transcripts": transcripts, "normalizer": norm.name}


def exact_match(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    language: str | None,
    normalizer: TextNormalizer | None = None,
) -> ExactMatchResult:
    """Fraction of examples whose normalised prediction equals the normalised reference."""
    preds, refs = _check_pair(predictions, references)
    norm = normalizer if normalizer is not None else get_normalizer(language)
    matches = sum(norm(p) == norm(r) for p, r in zip(preds, refs, strict=True))
    lang = canonical_language(language)
    return {
        "metric": "exact_match",
        "score": matches / len(refs),
        "num_examples": len(refs),
        "signature": f"exact_match|lang:{lang or 'none'}|norm:{norm.name}",
        "num_matches": matches,
    }
