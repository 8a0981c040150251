"""Shared pieces of the manual-download corpus builders.

Audio decoding to 16 kHz mono int16, TSV reading, manual_dir checks with helpful errors,
threaded decoding, language-code and voice helpers, and the TFDS base builder that writes
ArrayRecord without TensorFlow.
"""

from __future__ import annotations

import csv
import inspect
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np
import soundfile as sf
import soxr
import tensorflow_datasets as tfds
from etils import epath

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
AUDIO_DOC = "mono int16 PCM at 16 kHz"
# Decoding (mp3/flac) and soxr resampling release the GIL, so threads scale on real corpora.
DECODE_THREADS = int(os.environ.get("AUDIOPALM_DECODE_THREADS", min(8, os.cpu_count() or 1)))

T = TypeVar("T")
R = TypeVar("R")


class ManualDirError(FileNotFoundError):
    """The user-supplied ``manual_dir`` is missing or lacks the files a corpus needs."""


def audio_feature() -> tfds.features.Tensor:
    """The feature used for every waveform: a variable-length int16 vector at 16 kHz."""
    # BYTES stores raw little-endian int16 (2 bytes/sample); the default encoding writes an
    # int64 varint list, about 3x larger for speech.
    return tfds.features.Tensor(
        shape=(None,), dtype=np.int16, encoding=tfds.features.Encoding.BYTES, doc=AUDIO_DOC
    )


def load_audio(source: str | os.PathLike | BinaryIO) -> np.ndarray:
    """Decodes wav/flac/mp3 (anything libsndfile reads) to mono int16 at 16 kHz."""
    data, rate = sf.read(source, dtype="int16", always_2d=True)
    if data.shape[1] == 1 and rate == SAMPLE_RATE:
        return np.ascontiguousarray(data[:, 0])  # already in the stored format: bit-exact copy
    mono = data.astype(np.float32).mean(axis=1) / 32768.0
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16)


def check_mp3_support() -> None:
    """Raises if libsndfile cannot decode mp3 (needs libsndfile >= 1.1, soundfile >= 0.12)."""
    if "MP3" not in sf.available_formats():
        raise RuntimeError(
            f"libsndfile {sf.__libsndfile_version__} cannot decode mp3 clips; install "
            "soundfile>=0.12.1 (its wheels bundle libsndfile>=1.1) or convert clips/*.mp3 "
            "to .wav next to the originals (same stem)."
        )


def read_tsv(path: Path, *, header: bool, escapechar: str | None = None) -> list[Any]:
    """Reads a tab-separated file without quoting: dicts if ``header`` else lists of fields.

    ``escapechar='\\\\'`` matches the CoVoST scripts (pandas ``QUOTE_NONE`` + backslash).
    """
    with open(path, encoding="utf-8", newline="") as f:
        kwargs = dict(delimiter="\t", quoting=csv.QUOTE_NONE, escapechar=escapechar)
        if header:
            return [dict(row) for row in csv.DictReader(f, **kwargs)]
        return [row for row in csv.reader(f, **kwargs) if row]


def require(corpus: str, missing: Sequence[str], instructions: str) -> None:
    """Raises ManualDirError naming ``missing`` files (if any) plus how to get them."""
    if missing:
        listed = "\n".join(f"  - {m}" for m in missing)
        raise ManualDirError(
            f"{corpus}: manual_dir is incomplete; missing:\n{listed}\n\n{instructions.strip()}"
        )


def first_existing(candidates: Iterable[Path]) -> Path | None:
    """The first path in ``candidates`` that exists, else None."""
    return next((p for p in candidates if p.exists()), None)


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], threads: int = DECODE_THREADS
) -> Iterator[R]:
    """``map(fn, items)`` on a thread pool, in order, with a bounded number in flight."""
    if threads <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(threads) as pool:
        window: deque = deque()
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 4 * threads:  # bound memory: decoded audio waits here
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def as_str(value: Any) -> str:
    """Text features come back as bytes from ``as_data_source``; normalise to str."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# Corpus language codes whose ISO 639-1 form is not simply their first component.
_ISO_OVERRIDES = {"cmn": "zh"}


def iso_language(code: str) -> str:
    """Maps corpus codes (``zh-CN``, ``sv-SE``, ``fr_fr``, ``cmn_hans_cn``) to ISO 639-1.

    Languages without a 639-1 code keep their 639-3 code (``yue``, ``ast``, ``fil``).
    """
    base = code.replace("-", "_").split("_")[0].lower()
    return _ISO_OVERRIDES.get(base, base)


def join_voices(*voices: str) -> str:
    """One ``voice`` string for a record: the distinct speakers, in order, joined by ``|``."""
    return "|".join(dict.fromkeys(v for v in voices if v))


def utterance(text: Any = None, audio: np.ndarray | None = None) -> dict[str, Any]:
    """One entry of the parallel view's ``utterances``."""
    return {"text": None if text is None else as_str(text), "audio": audio}


def parallel(record_id: Any, voice: str, utterances: Mapping[str, dict]) -> dict[str, Any]:
    """The parallel view of docs/contracts.md."""
    return {"id": as_str(record_id), "voice": voice, "utterances": dict(utterances)}


class ManualCorpusBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base for builders that read user-downloaded files from ``manual_dir``.

    Subclasses define ``_features``, ``_split_generators`` (returning
    ``{split: self._generate_examples(items, where)}``) and ``_make_example(item)``, which
    returns ``(key, example)`` or None when the item's audio file is missing.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    DESCRIPTION = ""
    HOMEPAGE = ""
    CITATION = ""

    def __init__(self, *, file_format: str | tfds.core.FileFormat | None = None, **kwargs: Any):
        # ArrayRecord: random access for grain / tfds.data_source, and writable without TF.
        super().__init__(file_format=file_format or tfds.core.FileFormat.ARRAY_RECORD, **kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """This module's file. TFDS's default goes through importlib.resources, which
        fails for setuptools editable installs imported from outside the checkout."""
        return epath.Path(inspect.getfile(cls))

    def _features(self) -> dict[str, Any]:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo(builder=...) directly: dataset_info_from_configs would look for
        # TFDS package metadata files (README/CITATIONS) next to the module.
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(self._features()),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
        )

    def _manual_root(self, dl_manager: tfds.download.DownloadManager) -> Path:
        """``manual_dir`` as a Path, or ManualDirError with the instructions if absent/empty."""
        try:
            return Path(os.fspath(dl_manager.manual_dir))
        except AssertionError as err:  # TFDS's "does not exist or is empty" check
            raise ManualDirError(f"{self.name}/{self.builder_config.name}: {err}") from err

    def _make_example(self, item: Any) -> tuple[str, dict[str, Any]] | None:
        raise NotImplementedError

    def _generate_examples(self, items: Sequence[Any], where: str):
        """Decodes ``items`` on threads; skips (and reports) those whose audio is missing."""
        produced, skipped = 0, []
        for out in ordered_map(self._make_example, items):
            if out is None:
                skipped.append(items[produced + len(skipped)])
                continue
            produced += 1
            yield out
        if skipped:
            log.warning(
                "%s: %d of %d items skipped, audio not found under %s (first: %s)",
                self.name,
                len(skipped),
                len(items),
                where,
                skipped[:3],
            )
        if not produced:
            raise ManualDirError(
                f"{self.name}/{self.builder_config.name}: none of the {len(items)} listed "
                f"audio files were found under {where}.\n\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
