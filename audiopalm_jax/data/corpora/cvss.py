"""CVSS-C / CVSS-T speech-to-speech translation (21 X->En pairs) from a manual_dir.

CVSS ships only the English target side (``{split}/<clip>.mp3.wav`` at 24 kHz plus
``{split}.tsv`` with normalized translations); the source side is CoVoST 2 / Common Voice
v4, joined on the Common Voice clip file name.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from audiopalm_jax.data.corpora import covost2
from audiopalm_jax.data.corpora.common import (
    ManualCorpusBuilder,
    as_str,
    audio_feature,
    iso_language,
    join_voices,
    load_audio,
    log,
    parallel,
    read_tsv,
    require,
    utterance,
)

# CVSS release codes; CoVoST 2 / Common Voice spell two of them differently.
SOURCES = ("ar", "ca", "cy", "de", "et", "es", "fa", "fr", "id", "it", "ja")
SOURCES += ("lv", "mn", "nl", "pt", "ru", "sl", "sv", "ta", "tr", "zh")
COVOST_CODE = {"zh": "zh-CN", "sv": "sv-SE"}
SPLITS = covost2.SPLITS
CANONICAL_SPEAKER = "cvss_c"  # CVSS-C's single synthetic target voice

INSTRUCTIONS = """\
CVSS is built from files you download yourself (nothing is downloaded here).
For config <variant>_<src>_en (variant c or t; src as in the CVSS release: zh, sv, ...):
1. The CVSS target side from https://github.com/google-research-datasets/cvss, e.g.
   https://storage.googleapis.com/cvss/cvss_c_v1.0/cvss_c_fr_en_v1.0.tar.gz
   https://storage.googleapis.com/cvss/cvss_t_v1.0/cvss_t_fr_en_v1.0.tar.gz
   extracted so that <manual_dir>/cvss_<variant>_<src>_en_v1.0/ holds train.tsv,
   dev.tsv, test.tsv (no header: clip file name <TAB> normalized translation) and
   train/, dev/, test/ with <clip>.mp3.wav files.
2. The CoVoST 2 source side, in the same manual_dir, as for the covost2 builder with
   <tgt> = en (use CoVoST codes zh-CN / sv-SE in directory and file names there):
""" + textwrap.indent(covost2.SOURCE_STEPS, "   ")


@dataclasses.dataclass(eq=False)
class CvssConfig(tfds.core.BuilderConfig):
    """A CVSS variant ('c' or 't') and source language (CVSS code)."""

    variant: str = "c"
    source: str = ""

    @property
    def release(self) -> str:
        return f"cvss_{self.variant}_{self.source}_en_v1.0"

    @property
    def covost_source(self) -> str:
        return COVOST_CODE.get(self.source, self.source)


def _config(variant: str, source: str) -> CvssConfig:
    return CvssConfig(
        name=f"{variant}_{source}_en",
        description=f"CVSS-{variant.upper()} {source} speech -> English speech",
        variant=variant,
        source=source,
    )


def _stem(clip: str) -> str:
    return clip[: -len(".mp3")] if clip.endswith(".mp3") else clip


def release_dir(manual_dir: Path, release: str) -> Path | None:
    """``manual_dir/<release>``; tolerates one extra level from extracting with -C."""
    for cand in (manual_dir / release, manual_dir / release / release):
        if (cand / "train.tsv").exists() or (cand / "test.tsv").exists():
            return cand
    return None


class Cvss(ManualCorpusBuilder):
    """CVSS-C / CVSS-T target speech joined with CoVoST 2 source speech."""

    BUILDER_CONFIGS = [_config(v, s) for v in ("c", "t") for s in SOURCES]
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS
    DESCRIPTION = "CVSS speech-to-speech translation into English; audio 16 kHz mono int16."
    HOMEPAGE = "https://github.com/google-research-datasets/cvss"
    CITATION = "Jia, Tadmor Ramanovich, Wang, Zen. CVSS Corpus and Massively Multilingual S2ST."

    def _features(self) -> dict[str, Any]:
        text = tfds.features.Text
        return {
            "id": text(doc="Common Voice clip file stem"),
            "speaker": text(doc="Common Voice client_id of the source speech"),
            "source_language": text(doc="ISO 639-1"),
            "source_text": text(),
            "source_audio": audio_feature(),
            "target_language": text(doc="ISO 639-1 (always en)"),
            "target_text": text(doc="CVSS normalized translation, matches target_audio"),
            "target_audio": audio_feature(),
            "target_speaker": text(doc="'cvss_c' (canonical voice) or the source client_id"),
            "covost_translation": text(doc="CoVoST 2 translation before normalization"),
        }

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = self._manual_root(dl_manager)
        cfg = self.builder_config
        corpus = f"{self.name}/{cfg.name}"
        rel = release_dir(manual_dir, cfg.release)
        if rel is None:
            require(
                corpus,
                [f"{manual_dir / cfg.release}/{s}.tsv and {s}/*.mp3.wav" for s in SPLITS],
                INSTRUCTIONS,
            )
        missing = [f"{rel}/{s}.tsv" for s in SPLITS if not (rel / f"{s}.tsv").exists()]
        missing += [f"{rel}/{s}/" for s in SPLITS if not (rel / s).is_dir()]
        require(corpus, missing, INSTRUCTIONS)
        # Join on the clip name against all CoVoST splits: CVSS follows CoVoST's split.
        by_stem = {
            _stem(r.path): r
            for rows in covost2.load_covost(
                manual_dir, cfg.covost_source, "en", corpus=corpus, instructions=INSTRUCTIONS
            ).values()
            for r in rows
        }
        self._clips = covost2.clips_dir(
            manual_dir, cfg.covost_source, corpus=corpus, instructions=INSTRUCTIONS
        )
        gens = {}
        for split in SPLITS:
            items, unmatched = [], 0
            for fields in read_tsv(rel / f"{split}.tsv", header=False):
                path, translation = fields[0], fields[1] if len(fields) > 1 else ""
                row = by_stem.get(_stem(path))
                if row is None:
                    unmatched += 1
                else:
                    items.append((row, translation, rel / split / f"{_stem(path)}.mp3.wav"))
            if unmatched:
                log.warning("%s %s: %d CVSS rows not in CoVoST 2", cfg.name, split, unmatched)
            gens[split] = self._generate_examples(items, f"{self._clips} and {rel / split}")
        return gens

    def _make_example(self, item: tuple[Any, str, Path]) -> tuple[str, dict[str, Any]] | None:
        row, translation, target_wav = item
        clip = covost2.find_clip(self._clips, row.path)
        if clip is None or not target_wav.exists():
            return None
        cfg = self.builder_config
        key = Path(row.path).stem
        return key, {
            "id": key,
            "speaker": row.client_id,
            "source_language": iso_language(cfg.source),
            "source_text": row.sentence,
            "source_audio": load_audio(clip),
            "target_language": "en",
            "target_text": translation,
            "target_audio": load_audio(target_wav),
            "target_speaker": CANONICAL_SPEAKER if cfg.variant == "c" else row.client_id,
            "covost_translation": row.translation,
        }


def to_parallel(record: dict[str, Any]) -> dict[str, Any]:
    """CVSS record -> parallel view with source and English target speech.

    voice is ``cv:<client_id>`` for CVSS-T (target voice transferred from the source) and
    ``cv:<client_id>|cvss_c`` for CVSS-C (a different, canonical target voice).
    """
    speaker, target_speaker = as_str(record["speaker"]), as_str(record["target_speaker"])
    target_voice = CANONICAL_SPEAKER if target_speaker == CANONICAL_SPEAKER else f"cv:{speaker}"
    return parallel(
        record["id"],
        join_voices(f"cv:{speaker}", target_voice),
        {
            as_str(record["source_language"]): utterance(
                record["source_text"], record["source_audio"]
            ),
            as_str(record["target_language"]): utterance(
                record["target_text"], record["target_audio"]
            ),
        },
    )
