"""CoVoST 2 speech-to-text translation (21 X->En, 15 En->X pairs) from a manual_dir.

Source speech is Common Voice v4 (``clips/*.mp3``, 48 kHz mp3, stored resampled to
16 kHz int16); transcripts and translations come from the CoVoST 2 TSVs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from audiopalm_jax.data.corpora.common import (
    ManualCorpusBuilder,
    as_str,
    audio_feature,
    check_mp3_support,
    first_existing,
    iso_language,
    load_audio,
    parallel,
    read_tsv,
    require,
    utterance,
)

XX_EN = ("fr", "de", "es", "ca", "it", "ru", "zh-CN", "pt", "fa", "et", "mn")
XX_EN += ("nl", "tr", "ar", "sv-SE", "lv", "sl", "ta", "ja", "id", "cy")
EN_XX = ("de", "tr", "fa", "sv-SE", "mn", "zh-CN", "cy", "ca", "sl", "et", "id")
EN_XX += ("ar", "ta", "lv", "ja")
SPLITS = ("train", "dev", "test")

SOURCE_STEPS = """\
1. Common Voice version 4 (cv-corpus-4-2019-12-10) for <src>, from
   https://commonvoice.mozilla.org/en/datasets (CoVoST 2 needs exactly v4). Put or
   symlink its language directory at <manual_dir>/<src>/ so that
   <manual_dir>/<src>/clips/*.mp3 and <manual_dir>/<src>/validated.tsv exist
   (clips converted to .wav with the same stem are accepted too).
2. The CoVoST 2 translations
   https://dl.fbaipublicfiles.com/covost/covost_v2.<src>_<tgt>.tsv.tar.gz
   extracted into <manual_dir>/<src>/ (or <manual_dir>/), giving covost_v2.<src>_<tgt>.tsv.
   Either leave it there (the builder merges it with validated.tsv), or run
   https://github.com/facebookresearch/covost/blob/main/get_covost_splits.py:
     python get_covost_splits.py --version 2 --src-lang <src> --tgt-lang <tgt> \\
       --root <manual_dir>/<src> --cv-tsv <manual_dir>/<src>/validated.tsv
   which writes covost_v2.<src>_<tgt>.{train,dev,test}.tsv
   (columns: path, sentence, translation, client_id); those are used when present.
"""
INSTRUCTIONS = (
    "CoVoST 2 is built from files you download yourself (nothing is downloaded here).\n"
    "For a pair <src>_<tgt> (e.g. fr_en, en_de; Chinese is zh-CN, Swedish sv-SE):\n" + SOURCE_STEPS
)


@dataclasses.dataclass(frozen=True)
class CovostRow:
    """One CoVoST 2 utterance: the clip file name, transcript, translation and speaker."""

    path: str
    sentence: str
    translation: str
    client_id: str


@dataclasses.dataclass(eq=False)
class Covost2Config(tfds.core.BuilderConfig):
    """A CoVoST 2 language pair in CoVoST codes, e.g. source='zh-CN', target='en'."""

    source: str = ""
    target: str = ""


def _pair_config(source: str, target: str) -> Covost2Config:
    return Covost2Config(
        name=f"{source}_{target}",
        description=f"CoVoST 2 {source} speech -> {target} text",
        source=source,
        target=target,
    )


def language_dir(manual_dir: Path, source: str) -> Path:
    """The Common Voice language directory: ``manual_dir/<src>`` if present, else manual_dir."""
    sub = manual_dir / source
    return sub if sub.is_dir() else manual_dir


def find_clip(clips: Path, name: str) -> Path | None:
    """The clip file for a TSV ``path`` entry; accepts a .wav conversion with the same stem."""
    stem = name[: -len(".mp3")] if name.endswith(".mp3") else name
    return first_existing([clips / name, clips / f"{stem}.mp3", clips / f"{stem}.wav"])


def _covost_split(split: str) -> str:
    # CoVoST 2's raw TSV marks extra training rows "train_covost"; get_covost_splits.py
    # folds them into train, and so do we.
    return "train" if split == "train_covost" else split


def load_covost(
    manual_dir: Path, source: str, target: str, *, corpus: str = "covost2", instructions: str = ""
) -> dict[str, list[CovostRow]]:
    """CoVoST 2 rows per split, from the split TSVs or from the raw TSV + validated.tsv."""
    lang_dir = language_dir(manual_dir, source)
    dirs = list(dict.fromkeys([lang_dir, manual_dir]))
    prefix = f"covost_v2.{source}_{target}"
    split_tsvs = {s: first_existing(d / f"{prefix}.{s}.tsv" for d in dirs) for s in SPLITS}
    if all(split_tsvs.values()):
        return {
            split: [
                CovostRow(r["path"], r["sentence"], r["translation"], r["client_id"])
                for r in read_tsv(tsv, header=True, escapechar="\\")
            ]
            for split, tsv in split_tsvs.items()
        }
    raw = first_existing(d / f"{prefix}.tsv" for d in dirs)
    validated = first_existing(d / "validated.tsv" for d in dirs)
    if raw is None or validated is None:
        missing = [f"{manual_dir / source}/{prefix}.{s}.tsv" for s in SPLITS if not split_tsvs[s]]
        alt = "or, instead of those: "
        if raw is None:
            missing.append(f"{alt}{manual_dir / source}/{prefix}.tsv")
            alt = "and: "
        if validated is None:
            missing.append(f"{alt}{manual_dir / source}/validated.tsv (from Common Voice v4)")
        require(corpus, missing, instructions or INSTRUCTIONS)
    # Same inner join as get_covost_splits.py: CV gives sentence + speaker, CoVoST the rest.
    cv = {r["path"]: r for r in read_tsv(validated, header=True, escapechar="\\")}
    rows: dict[str, list[CovostRow]] = {s: [] for s in SPLITS}
    for r in read_tsv(raw, header=True, escapechar="\\"):
        split, v = _covost_split(r["split"]), cv.get(r["path"])
        if v is not None and split in rows:
            rows[split].append(
                CovostRow(r["path"], v["sentence"], r["translation"], v["client_id"])
            )
    return rows


def clips_dir(
    manual_dir: Path, source: str, *, corpus: str = "covost2", instructions: str = ""
) -> Path:
    """``<language dir>/clips``, checked to exist; also checks mp3 decoding is available."""
    clips = language_dir(manual_dir, source) / "clips"
    if not clips.is_dir():
        missing = [f"{manual_dir / source}/clips/ (Common Voice v4 clips)"]
        require(corpus, missing, instructions or INSTRUCTIONS)
    if next(clips.glob("*.mp3"), None) is not None:
        check_mp3_support()
    return clips


class Covost2(ManualCorpusBuilder):
    """CoVoST 2 from Common Voice v4 clips + CoVoST 2 TSVs in ``manual_dir``."""

    BUILDER_CONFIGS = [_pair_config(s, "en") for s in XX_EN] + [
        _pair_config("en", t) for t in EN_XX
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS
    DESCRIPTION = "CoVoST 2 speech translation; audio is 16 kHz mono int16."
    HOMEPAGE = "https://github.com/facebookresearch/covost"
    CITATION = "Wang, Wu, Pino. CoVoST 2 and Massively Multilingual Speech Translation. 2021."

    def _features(self) -> dict[str, Any]:
        text = tfds.features.Text
        return {
            "id": text(doc="clip file stem, e.g. common_voice_fr_17732749"),
            "speaker": text(doc="Common Voice client_id"),
            "source_language": text(doc="ISO 639-1"),
            "source_text": text(),
            "source_audio": audio_feature(),
            "target_language": text(doc="ISO 639-1"),
            "target_text": text(),
        }

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = self._manual_root(dl_manager)
        cfg = self.builder_config
        corpus = f"{self.name}/{cfg.name}"
        rows = load_covost(manual_dir, cfg.source, cfg.target, corpus=corpus)
        self._clips = clips_dir(manual_dir, cfg.source, corpus=corpus)
        return {s: self._generate_examples(rows[s], str(self._clips)) for s in SPLITS}

    def _make_example(self, row: CovostRow) -> tuple[str, dict[str, Any]] | None:
        clip = find_clip(self._clips, row.path)
        if clip is None:
            return None
        cfg = self.builder_config
        key = Path(row.path).stem
        return key, {
            "id": key,
            "speaker": row.client_id,
            "source_language": iso_language(cfg.source),
            "source_text": row.sentence,
            "source_audio": load_audio(clip),
            "target_language": iso_language(cfg.target),
            "target_text": row.translation,
        }


def to_parallel(record: dict[str, Any]) -> dict[str, Any]:
    """CoVoST 2 record -> parallel view: source text + audio, target text only."""
    source, target = as_str(record["source_language"]), as_str(record["target_language"])
    return parallel(
        record["id"],
        f"cv:{as_str(record['speaker'])}",
        {
            source: utterance(record["source_text"], record["source_audio"]),
            target: utterance(record["target_text"]),
        },
    )
