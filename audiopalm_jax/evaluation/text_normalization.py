"""Whisper-style text normalisation for WER / CER / exact-match / ASR-BLEU.

Selection rule (``get_normalizer(language)``):

* English (``en``, ``en-US``, ``en_us``, ``eng``) -> Whisper's ``EnglishTextNormalizer``
  (lower-case, contractions and titles expanded, fillers dropped, numbers standardised,
  British -> American spelling, punctuation and diacritics removed).
* Every other language, unknown codes and ``None`` -> Whisper's ``BasicTextNormalizer``
  (lower-case, bracketed/parenthesised spans dropped, punctuation and symbols removed). Diacritics
  are *kept* by default (``remove_diacritics=False``, as Whisper evaluates non-English) so that
  accent errors in French / German / Spanish count.

The British -> American spelling mapping: Whisper reads ~1.7k entries from the tokenizer's
``normalizer.json``, which is not available offline. We ship a small built-in subset
(``BUILTIN_ENGLISH_SPELLING_MAPPING``) so that results never depend on what happens to be in a
cache; pass the full mapping (``load_english_spelling_mapping(path_to_normalizer_json)``) to
reproduce Whisper's published numbers exactly. The normaliser's ``name`` records which mapping was
used, and metric signatures include it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from transformers.models.whisper.english_normalizer import (
    BasicTextNormalizer,
    EnglishTextNormalizer,
)

NormalizerKind = Literal["auto", "english", "basic", "none"]

# Three-letter / macro-language codes seen in common corpora (FLEURS uses e.g. "cmn_hans_cn").
_LANGUAGE_ALIASES: dict[str, str] = {
    "eng": "en",
    "fra": "fr",
    "fre": "fr",
    "deu": "de",
    "ger": "de",
    "spa": "es",
    "zho": "zh",
    "chi": "zh",
    "cmn": "zh",
    "yue": "zh",
    "jpn": "ja",
    "tha": "th",
    "lao": "lo",
    "mya": "my",
    "bur": "my",
    "khm": "km",
}

# Languages written without spaces between words: WER is meaningless for them (use CER), CER
# ignores whitespace, and BLEU needs a character-level tokeniser.
NO_SPACE_LANGUAGES: frozenset[str] = frozenset({"zh", "ja", "th", "lo", "my", "km"})

# A hand-picked, unambiguous subset of Whisper's British -> American list (same direction and
# spelling as Whisper's english.json); inflected forms are listed because the mapping is per word.
BUILTIN_ENGLISH_SPELLING_MAPPING: dict[str, str] = {
    "aeroplane": "airplane",
    "aeroplanes": "airplanes",
    "analyse": "analyze",
    "analysed": "analyzed",
    "analysing": "analyzing",
    "behaviour": "behavior",
    "behaviours": "behaviors",
    "centre": "center",
    "centres": "centers",
    "colour": "color",
    "coloured": "colored",
    "colours": "colors",
    "defence": "defense",
    "favour": "favor",
    "favourite": "favorite",
    "favourites": "favorites",
    "flavour": "flavor",
    "flavours": "flavors",
    "grey": "gray",
    "harbour": "harbor",
    "honour": "honor",
    "humour": "humor",
    "jewellery": "jewelry",
    "labour": "labor",
    "litre": "liter",
    "litres": "liters",
    "metre": "meter",
    "metres": "meters",
    "neighbour": "neighbor",
    "neighbours": "neighbors",
    "neighbourhood": "neighborhood",
    "organisation": "organization",
    "organisations": "organizations",
    "organise": "organize",
    "organised": "organized",
    "realise": "realize",
    "realised": "realized",
    "recognise": "recognize",
    "recognised": "recognized",
    "theatre": "theater",
    "theatres": "theaters",
    "travelled": "traveled",
    "travelling": "traveling",
    "traveller": "traveler",
    "travellers": "travelers",
}


def canonical_language(language: str | None) -> str | None:
    """Reduce a language tag to its lower-case primary subtag (``"en-US"`` -> ``"en"``).

    Known three-letter codes are mapped to ISO 639-1 (``"eng"`` -> ``"en"``); anything else is
    returned as-is (lower-cased), so unknown codes simply get the language-neutral defaults.
    """
    if language is None or not language.strip():
        return None
    code = re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0]
    return _LANGUAGE_ALIASES.get(code, code)


def load_english_spelling_mapping(path: str | os.PathLike[str]) -> dict[str, str]:
    """Load a British -> American mapping, e.g. a Whisper tokenizer's ``normalizer.json``."""
    with open(path, encoding="utf-8") as f:
        mapping = json.load(f)
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise ValueError(f"{os.fspath(path)!r} is not a JSON object mapping strings to strings")
    return mapping


@dataclass(frozen=True)
class TextNormalizer:
    """A named text normaliser; ``name`` goes into metric signatures for reproducibility."""

    name: str
    fn: Callable[[str], str]

    def __call__(self, text: str) -> str:
        # Whisper's normalisers can leave leading/trailing or doubled spaces; collapse them so
        # exact-match and character counts do not depend on whitespace artefacts.
        return " ".join(self.fn(text).split())


def get_normalizer(
    language: str | None,
    *,
    kind: NormalizerKind = "auto",
    remove_diacritics: bool = False,
    english_spelling_mapping: Mapping[str, str] | None = None,
) -> TextNormalizer:
    """Return the Whisper-style normaliser for ``language`` (see the module docstring).

    Args:
      language: language tag; only used when ``kind="auto"`` (English -> English normaliser,
        anything else including ``None`` -> basic normaliser).
      kind: force ``"english"``, ``"basic"`` or ``"none"`` (whitespace collapsing only).
      remove_diacritics: basic normaliser only; the English normaliser always strips them, as in
        Whisper.
      english_spelling_mapping: British -> American mapping for the English normaliser; ``None``
        uses ``BUILTIN_ENGLISH_SPELLING_MAPPING``.
    """
    if kind == "auto":
        kind = "english" if canonical_language(language) == "en" else "basic"
    if kind == "english":
        if english_spelling_mapping is None:
            mapping, source = BUILTIN_ENGLISH_SPELLING_MAPPING, "builtin"
        else:
            mapping, source = dict(english_spelling_mapping), "custom"
        return TextNormalizer(
            name=f"whisper_english(spelling={source}:{len(mapping)})",
            fn=EnglishTextNormalizer(mapping),
        )
    if kind == "basic":
        diacritics = "remove" if remove_diacritics else "keep"
        return TextNormalizer(
            name=f"whisper_basic(diacritics={diacritics})",
            fn=BasicTextNormalizer(remove_diacritics=remove_diacritics),
        )
    if kind == "none":
        return TextNormalizer(name="none", fn=lambda text: text)
    raise ValueError(f"unknown normaliser kind {kind!r}; expected auto, english, basic or none")
