"""LibriSpeech (English read speech, ASR) from the extracted OpenSLR tarballs in manual_dir.

Registered as ``librispeech_manual`` so it does not shadow the TFDS catalog's
``librispeech`` (which downloads and needs TensorFlow).
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
    load_audio,
    parallel,
    require,
    utterance,
)

# Published subset directory -> TFDS split name (as in the TFDS catalog's librispeech).
SUBSETS = {
    "train-clean-100": "train_clean100",
    "train-clean-360": "train_clean360",
    "train-other-500": "train_other500",
    "dev-clean": "dev_clean",
    "dev-other": "dev_other",
    "test-clean": "test_clean",
    "test-other": "test_other",
}

INSTRUCTIONS = """\
LibriSpeech is built from files you download yourself (nothing is downloaded here):
download the subsets the config needs from https://www.openslr.org/12
(e.g. https://www.openslr.org/resources/12/train-clean-100.tar.gz, dev-clean.tar.gz,
test-clean.tar.gz) and extract them in <manual_dir> (`tar xzf <subset>.tar.gz -C
<manual_dir>`), which gives
  <manual_dir>/LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
  <manual_dir>/LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
Configs: clean100 = train-clean-100, dev-clean, test-clean; clean = clean100 +
train-clean-360; all = all seven subsets (960 h); eval = dev/test clean/other only.
"""


@dataclasses.dataclass(eq=False)
class LibrispeechConfig(tfds.core.BuilderConfig):
    """Which published subsets (directory names) become splits."""

    subsets: tuple[str, ...] = ()


_CONFIGS = {
    "clean100": ("train-clean-100", "dev-clean", "test-clean"),
    "clean": ("train-clean-100", "train-clean-360", "dev-clean", "test-clean"),
    "all": tuple(SUBSETS),
    "eval": ("dev-clean", "dev-other", "test-clean", "test-other"),
}


def subset_dir(manual_dir: Path, subset: str) -> Path:
    """``manual_dir/LibriSpeech/<subset>``, or ``manual_dir/<subset>`` if extracted flat."""
    nested = manual_dir / "LibriSpeech" / subset
    return nested if nested.is_dir() or not (manual_dir / subset).is_dir() else manual_dir / subset


def list_utterances(root: Path) -> list[tuple[str, str, Path]]:
    """``(utterance id, transcript, flac path)`` for every line of every ``*.trans.txt``."""
    items = []
    for trans in sorted(root.glob("*/*/*.trans.txt")):
        for line in trans.read_text(encoding="utf-8").splitlines():
            if line.strip():
                utt, _, text = line.strip().partition(" ")
                items.append((utt, text, trans.parent / f"{utt}.flac"))
    return items


class LibrispeechManual(ManualCorpusBuilder):
    """LibriSpeech from the extracted OpenSLR ``LibriSpeech/<subset>`` directories."""

    BUILDER_CONFIGS = [
        LibrispeechConfig(name=n, description=f"LibriSpeech {', '.join(s)}", subsets=s)
        for n, s in _CONFIGS.items()
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS
    DESCRIPTION = "LibriSpeech ASR corpus; audio 16 kHz mono int16, transcripts uppercase."
    HOMEPAGE = "https://www.openslr.org/12"
    CITATION = "Panayotov, Chen, Povey, Khudanpur. LibriSpeech: an ASR corpus. ICASSP 2015."

    def _features(self) -> dict[str, Any]:
        text = tfds.features.Text
        return {
            "id": text(doc="<speaker>-<chapter>-<utterance>"),
            "speaker": text(),
            "chapter": text(),
            "text": text(doc="original uppercase transcript"),
            "audio": audio_feature(),
        }

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = self._manual_root(dl_manager)
        dirs = {s: subset_dir(manual_dir, s) for s in self.builder_config.subsets}
        missing = [f"{manual_dir}/LibriSpeech/{s}/" for s, d in dirs.items() if not d.is_dir()]
        require(f"{self.name}/{self.builder_config.name}", missing, INSTRUCTIONS)
        return {
            SUBSETS[s]: self._generate_examples(list_utterances(d), str(d)) for s, d in dirs.items()
        }

    def _make_example(self, item: tuple[str, str, Path]) -> tuple[str, dict[str, Any]] | None:
        utt, text, flac = item
        if not flac.exists():
            return None
        speaker, chapter, _ = utt.split("-")
        return utt, {
            "id": utt,
            "speaker": speaker,
            "chapter": chapter,
            "text": text,
            "audio": load_audio(flac),
        }


def to_parallel(record: dict[str, Any]) -> dict[str, Any]:
    """LibriSpeech record -> parallel view with one English utterance (text as published)."""
    return parallel(
        record["id"],
        f"librispeech:{as_str(record['speaker'])}",
        {"en": utterance(record["text"], record["audio"])},
    )
