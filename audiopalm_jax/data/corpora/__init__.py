"""TFDS builders for real speech corpora read from files the user downloaded (manual_dir).

Importing this package registers the TFDS builders ``covost2``, ``cvss``, ``fleurs`` and
``librispeech_manual``. They write ArrayRecord, need no TensorFlow and download nothing.
Read the result with ``tfds.data_source("covost2/fr_en", data_dir=...)`` or
``prepare(...).as_data_source()``, and map records to the parallel view of
docs/contracts.md with ``to_parallel(name, record)``. See docs/datasets.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import tensorflow_datasets as tfds

from audiopalm_jax.data.corpora import covost2, cvss, fleurs, librispeech
from audiopalm_jax.data.corpora.common import SAMPLE_RATE, ManualDirError, load_audio
from audiopalm_jax.data.corpora.covost2 import Covost2
from audiopalm_jax.data.corpora.cvss import Cvss
from audiopalm_jax.data.corpora.fleurs import Fleurs
from audiopalm_jax.data.corpora.librispeech import LibrispeechManual

__all__ = [
    "ADAPTERS",
    "BUILDERS",
    "SAMPLE_RATE",
    "Covost2",
    "Cvss",
    "Fleurs",
    "LibrispeechManual",
    "ManualDirError",
    "load_audio",
    "prepare",
    "to_parallel",
]

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    b.name: b for b in (Covost2, Cvss, Fleurs, LibrispeechManual)
}
ADAPTERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    Covost2.name: covost2.to_parallel,
    Cvss.name: cvss.to_parallel,
    Fleurs.name: fleurs.to_parallel,
    LibrispeechManual.name: librispeech.to_parallel,
}


def _builder_name(name: str) -> str:
    return name.split("/")[0].split(":")[0]


def prepare(
    name: str, *, manual_dir: str | os.PathLike, data_dir: str | os.PathLike
) -> tfds.core.DatasetBuilder:
    """Builds ``"<builder>/<config>"`` (e.g. ``"cvss/c_fr_en"``) from ``manual_dir`` into
    ``data_dir`` as ArrayRecord, unless already built, and returns the builder.

    Raises ManualDirError naming the expected files when manual_dir is missing or incomplete.
    """
    builder_name, _, config = name.partition("/")
    if builder_name not in BUILDERS:
        raise ValueError(f"unknown corpus {builder_name!r}; one of {sorted(BUILDERS)}")
    builder = BUILDERS[builder_name](config=config or None, data_dir=os.fspath(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
    )
    return builder


def to_parallel(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """Maps a record of dataset ``name`` (``"covost2"`` or ``"covost2/fr_en"``) to the
    parallel view ``{"id", "voice", "utterances": {lang: {"text", "audio"}}}``."""
    return ADAPTERS[_builder_name(name)](record)
