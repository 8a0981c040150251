"""The acoustic stage's training utterances from a prepared workdir, and the main job's step.

On a parallel corpus (demo_speech: one voice reads a sentence in every language) the
voice prompt of an utterance is the same speaker in another language, which is what
speech-to-speech translation asks of the stage at inference.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from ml_collections import ConfigDict

from audiopalm_jax.acoustic.model import AcousticConfig
from audiopalm_jax.acoustic.train import settings_from_config, train_acoustic
from audiopalm_jax.audio import frontend
from audiopalm_jax.data import pipeline

ACOUSTIC_DIR = "acoustic"


class ParallelUtterances:
    """``example(i)``: a random language of record ``i`` with its stored tokens, its audio
    and, as the voice prompt, the same record's audio in another language."""

    def __init__(self, source: pipeline.RecordSource, languages: Sequence[str]):
        self.source, self.languages = source, sorted(languages)

    def __len__(self) -> int:
        return len(self.source)

    def _audio(self, view: dict, lang: str) -> np.ndarray | None:
        audio = (view["utterances"].get(lang) or {}).get("audio")
        if audio is None or not len(audio):
            return None
        return frontend.prepare_waveform(audio, 16_000, 16_000, normalize=True)

    def example(self, index: int, rng: np.random.Generator):
        view = pipeline.to_parallel(self.source.tfds_name, self.source.records[index])
        have = [lang for lang in self.languages if self._audio_ok(view, index, lang)]
        if not have:
            return None
        lang = have[int(rng.integers(len(have)))]
        others = [x for x in have if x != lang] or [lang]
        prompt_lang = others[int(rng.integers(len(others)))]
        units = self.source.store(lang)[index]
        return units, self._audio(view, lang), self._audio(view, prompt_lang)

    def _audio_ok(self, view: dict, index: int, lang: str) -> bool:
        audio = (view["utterances"].get(lang) or {}).get("audio")
        store = self.source.store(lang)
        return (
            audio is not None
            and len(audio) > 0
            and store is not None
            and (store.status(index) == 1)
        )


def acoustic_dir(workdir: str) -> str:
    return os.path.join(workdir, ACOUSTIC_DIR)


def fit_acoustic(config: ConfigDict, workdir: str):
    """The main job's acoustic stage: trained on the first audio dataset's train split
    (tokens and tokenizer as ``prepare`` left them), saved in ``workdir/acoustic``."""
    from audiopalm_jax.audio import load_tokenizer
    from audiopalm_jax.data.prepare import audio_languages

    section = config.acoustic
    overrides, settings = settings_from_config(section)
    langs = audio_languages(config)
    if not langs:
        raise ValueError("acoustic.enabled: the mixture reads no audio to train the stage on")
    alias = sorted(langs)[0]
    tokens_dir, tok_dir = pipeline.prepared_dirs(config.data, workdir)
    tok = load_tokenizer(tok_dir)
    name, _ = pipeline.dataset_info(config, alias)
    split = pipeline.dataset_split(config, alias, "train")
    source = pipeline.RecordSource(alias, name, split, pipeline.data_dir(config), tokens_dir)
    cfg = AcousticConfig(
        num_tokens=int(tok.num_tokens),
        token_rate=float(tok.frame_rate),
        sample_rate=int(tok.sample_rate),
        **overrides,
    )
    return train_acoustic(
        ParallelUtterances(source, sorted(langs[alias])), cfg, settings, acoustic_dir(workdir)
    )
