"""Tiny fake copies of the real published corpus layouts, for the builder tests.

Each writer creates the files a user would have after downloading/extracting the corpus and
returns what the built dataset should contain: ``{split: {id: Expected}}``.
"""

from __future__ import annotations

import csv
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf


@dataclass(frozen=True)
class Expected:
    """What one built record should hold; ``samples``/``rate`` are of the source file."""

    text: str
    samples: int
    rate: int
    speaker: str = ""
    extra: tuple = ()


def tone(samples: int, rate: int, freq: float = 440.0) -> np.ndarray:
    """A quiet sine, float32 in [-1, 1]."""
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(samples) / rate)).astype(np.float32)


def write_audio(path: Path, samples: int, rate: int, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(samples, rate), rate, format=fmt or path.suffix[1:].upper())


def _write_tsv(path: Path, rows: list[list[str]], *, escaped: bool = True) -> None:
    # pandas to_csv(sep="\t", quoting=QUOTE_NONE, escapechar="\\"), as the CoVoST scripts do.
    # Otherwise plain tab-joined lines, as CVSS and FLEURS ship them (quotes left as is).
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        if escaped:
            writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
            writer.writerows(rows)
        else:
            f.writelines("\t".join(row) + "\n" for row in rows)


# (split, clip number, sentence, translation, client_id, seconds); clip 99 has no file.
_COVOST_ROWS = [
    ("train", 1, 'Il a dit "bonjour".', 'He said "hello".', "spk_a", 0.30),
    ("train", 2, "Deux chats.", "Two cats.", "spk_b", 0.20),
    ("train", 99, "Absent.", "Missing.", "spk_b", 0.10),
    ("dev", 3, "Trois.", "Three.", "spk_a", 0.25),
    ("test", 4, "Quatre.", "Four.", "spk_c", 0.15),
]


def write_covost(
    manual_dir: Path,
    source: str = "fr",
    target: str = "en",
    *,
    clip_ext: str = "mp3",
    split_tsvs: bool = True,
    rate: int = 48_000,
) -> dict[str, dict[str, Expected]]:
    """Common Voice v4 ``<src>/clips`` + CoVoST 2 TSVs (split TSVs, or raw + validated.tsv)."""
    lang_dir = manual_dir / source
    expected: dict[str, dict[str, Expected]] = {"train": {}, "dev": {}, "test": {}}
    splits: dict[str, list[list[str]]] = {s: [] for s in expected}
    raw, validated = [], []
    for i, (split, n, sentence, translation, client, secs) in enumerate(_COVOST_ROWS):
        stem = f"common_voice_{source}_{n}"
        samples = int(secs * rate)
        if n != 99:
            write_audio(lang_dir / "clips" / f"{stem}.{clip_ext}", samples, rate)
            expected[split][stem] = Expected(sentence, samples, rate, client, (translation,))
        splits[split].append([f"{stem}.mp3", sentence, translation, client])
        # The raw CoVoST TSV marks some training rows "train_covost".
        raw_split = "train_covost" if (split, i) == ("train", 1) else split
        raw.append([f"{stem}.mp3", translation, raw_split])
        validated.append([client, f"{stem}.mp3", sentence, "2", "0", "", "", ""])
    prefix = f"covost_v2.{source}_{target}"
    if split_tsvs:
        for split, rows in splits.items():
            header = ["path", "sentence", "translation", "client_id"]
            _write_tsv(lang_dir / f"{prefix}.{split}.tsv", [header, *rows])
    else:
        _write_tsv(manual_dir / f"{prefix}.tsv", [["path", "translation", "split"], *raw])
        cols = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender"]
        _write_tsv(lang_dir / "validated.tsv", [[*cols, "accent"], *validated])
    return expected


def write_cvss(
    manual_dir: Path, variant: str = "c", source: str = "fr", rate: int = 24_000
) -> dict[str, dict[str, Expected]]:
    """A CVSS release dir next to a CoVoST fake: ``{split}.tsv`` + ``{split}/*.mp3.wav``."""
    covost = write_covost(manual_dir, source)
    release = manual_dir / f"cvss_{variant}_{source}_en_v1.0"
    expected: dict[str, dict[str, Expected]] = {}
    for split, records in covost.items():
        rows, expected[split] = [], {}
        for j, (stem, src) in enumerate(records.items()):
            text = f"normalized {src.extra[0].lower()}"
            samples = int((0.2 + 0.1 * j) * rate)
            write_audio(release / split / f"{stem}.mp3.wav", samples, rate, "WAV")
            rows.append([f"{stem}.mp3", text])
            expected[split][stem] = Expected(text, samples, rate, src.speaker, (src,))
        _write_tsv(release / f"{split}.tsv", rows, escaped=False)
    return expected


def write_librispeech(manual_dir: Path, subsets: tuple[str, ...]) -> dict[str, dict[str, Expected]]:
    """``LibriSpeech/<subset>/<spk>/<chapter>/`` with flac files and a trans.txt per chapter."""
    expected: dict[str, dict[str, Expected]] = {}
    for s, subset in enumerate(subsets):
        expected[subset] = {}
        for speaker, chapter, n_utts in ((100 + s, 7, 2), (200 + s, 9, 1)):
            chapter_dir = manual_dir / "LibriSpeech" / subset / str(speaker) / str(chapter)
            lines = []
            for u in range(n_utts):
                utt = f"{speaker}-{chapter}-{u:04d}"
                text, samples = f"WORD {subset.upper()} {u}", 1600 + 800 * u
                write_audio(chapter_dir / f"{utt}.flac", samples, 16_000)
                lines.append(f"{utt} {text}\n")
                expected[subset][utt] = Expected(text, samples, 16_000, str(speaker))
            (chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
    return expected


# split -> {sentence id: number of recordings} per language
_FLEURS_IDS = {
    "en_us": {"train": {11: 2, 12: 1}, "dev": {21: 1}, "test": {31: 1}},
    "fr_fr": {"train": {11: 1, 13: 1}, "dev": {21: 1}, "test": {31: 2}},
}


def write_fleurs(manual_dir: Path, tarred: tuple[str, ...] = ("en_us",)) -> dict[str, dict]:
    """HF ``google/fleurs`` layout: ``data/<lang>/<split>.tsv`` + ``audio/<split>.tar.gz``
    for languages in ``tarred``, extracted ``audio/<split>/*.wav`` for the others.

    Returns ``{lang: {split: {file_name: Expected(raw_transcription, ..., extra=(id,))}}}``.
    """
    out: dict[str, dict] = {}
    for lang, splits in _FLEURS_IDS.items():
        lang_dir = manual_dir / "data" / lang
        out[lang] = {}
        for split, ids in splits.items():
            out[lang][split], rows, wavs = {}, [], {}
            for sid, count in ids.items():
                for r in range(count):
                    name, samples = f"{sid}{r}{len(lang)}.wav", 3200 + 1600 * r
                    raw = f"{lang} sentence {sid}, take {r}."
                    norm = raw.lower().replace(",", "").replace(".", "")
                    rows.append([str(sid), name, raw, norm, "p h o n", str(samples), "FEMALE"])
                    buf = io.BytesIO()
                    sf.write(buf, tone(samples, 16_000), 16_000, format="WAV")
                    wavs[name] = buf.getvalue()
                    out[lang][split][name] = Expected(raw, samples, 16_000, extra=(sid, norm))
            _write_tsv(lang_dir / f"{split}.tsv", rows, escaped=False)
            if lang in tarred:
                (lang_dir / "audio").mkdir(parents=True, exist_ok=True)
                with tarfile.open(lang_dir / "audio" / f"{split}.tar.gz", "w:gz") as tar:
                    for name, data in wavs.items():
                        info = tarfile.TarInfo(f"{split}/{name}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
            else:
                for name, data in wavs.items():
                    (lang_dir / "audio" / split).mkdir(parents=True, exist_ok=True)
                    (lang_dir / "audio" / split / name).write_bytes(data)
    return out


def read_split(builder, split: str) -> dict[str, dict]:
    """All records of a built split, read back without TensorFlow, keyed by id."""
    source = builder.as_data_source(split=split)
    records = [source[i] for i in range(len(source))]
    return {r["id"].decode(): r for r in records}


def resampled_length(samples: int, rate: int) -> int:
    """Expected length after resampling ``samples`` at ``rate`` to 16 kHz."""
    return round(samples * 16_000 / rate)
