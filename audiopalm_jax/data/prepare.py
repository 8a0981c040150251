"""``prepare(config, workdir)``: build, fit and tokenize what a config's mixture needs.

Stages, each skipped when its output is already complete (so a rerun is cheap):

1. datasets: ``demo_speech`` is generated; real corpora are built from ``data.manual_dir``
   (or must already exist) in ``data.data_dir``;
2. the audio tokenizer: fitted on training audio into ``workdir/audio_tokenizer`` (or
   ``data.audio_tokenizer_dir``) unless present;
3. audio tokens of ``data.tokenize_splits`` for every (dataset, split, language) whose
   audio the mixture reads, into ``workdir/tokens/<dataset>/<split>/<lang>``.

With several processes (``distributed.num_processes > 1``) process 0 prepares and writes
``workdir/data_prepared.json``; the others wait for it. With ``distributed.auto`` (TPU
pods) run ``audiopalm prepare`` once before training: every stage is then a quick check.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ml_collections import ConfigDict

from audiopalm_jax.data import pipeline

if TYPE_CHECKING:  # the audio package imports JAX; load it only when needed
    from audiopalm_jax.audio.base import AudioTokenizer

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
DEFAULT_TOKENIZE_SPLITS = ("train", "validation")


def _say(msg: str) -> None:
    print(f"prepare: {msg}", flush=True)


def _set(config: ConfigDict, key: str, value: Any) -> None:
    """Sets ``config.data.<key>`` (unlocking if the file did not declare the key)."""
    if key in config.data:
        config.data[key] = value
    else:
        with config.data.unlocked():
            config.data[key] = value


def resolve_dirs(config: ConfigDict, workdir: str | None) -> tuple[str, str]:
    """(tokens dir, audio tokenizer dir); fills ``data.tokens_dir`` / ``audio_tokenizer_dir``
    from ``workdir`` when unset, so the training iterator finds them."""
    tokens, tok = pipeline.prepared_dirs(config.data, os.path.abspath(workdir) if workdir else None)
    if not (tokens and tok):
        raise ValueError("prepare needs --workdir (or data.tokens_dir + data.audio_tokenizer_dir)")
    _set(config, "tokens_dir", tokens)
    _set(config, "audio_tokenizer_dir", tok)
    return tokens, tok


def audio_languages(config: ConfigDict) -> dict[str, set[str]]:
    """{dataset alias: languages whose audio the mixture reads or writes}."""
    out: dict[str, set[str]] = {}
    for entry in pipeline.all_entries(config):
        langs = {lang for lang, modality in entry.task.fields() if modality == "audio"}
        out.setdefault(entry.dataset, set()).update(langs)
    return out


# -- stage 1: datasets ----------------------------------------------------------------------
def _demo_size(tfds_name: str) -> tuple[str, int]:
    """``demo_speech/tiny_seed3`` -> ("tiny", 3); ``demo_speech`` -> ("default", 0)."""
    config = tfds_name.partition("/")[2].split(":")[0] or "default"
    size, _, seed = config.partition("_seed")
    return size, int(seed or 0)


def build_dataset(config: ConfigDict, alias: str) -> None:
    """Builds dataset ``alias`` into the data dir unless it is there already."""
    name, _ = pipeline.dataset_info(config, alias)
    root = pipeline.data_dir(config)
    builder = name.split("/")[0]
    t0 = time.perf_counter()
    if builder == "demo_speech":
        from audiopalm_jax.data import demo_speech

        size, seed = _demo_size(name)
        workers = int(config.data.get("prepare_workers", 0)) or None
        b = demo_speech.prepare_demo_speech(root, size=size, num_workers=workers, seed=seed)
        splits = {k: v.num_examples for k, v in b.info.splits.items()}
        _say(f"{name}: ready in {root} {splits} ({time.perf_counter() - t0:.0f} s)")
        return
    manual = config.data.get("manual_dir", "")
    if manual:
        from audiopalm_jax.data import corpora

        corpora.prepare(name, manual_dir=manual, data_dir=root)
        _say(f"{name}: ready in {root} ({time.perf_counter() - t0:.0f} s)")
        return
    import tensorflow_datasets as tfds

    try:
        tfds.builder(name, data_dir=root).info.splits  # noqa: B018  (raises if not built)
    except Exception as e:
        raise FileNotFoundError(
            f"dataset {name!r} is not built in {root}; set data.manual_dir to the downloaded "
            "corpus (see docs/datasets.md) or build it with audiopalm_jax.data.corpora.prepare"
        ) from e


# -- stage 2: the audio tokenizer -----------------------------------------------------------
def _fit_audio(config: ConfigDict, alias: str, max_records: int) -> list[np.ndarray]:
    """Waveforms (every language) of up to ``max_records`` random training records."""
    name, _ = pipeline.dataset_info(config, alias)
    split = pipeline.dataset_split(config, alias, "train")
    source = pipeline.RecordSource(alias, name, split, pipeline.data_dir(config))
    n = len(source)
    pick = np.arange(n)
    if max_records and n > max_records:
        pick = np.sort(np.random.default_rng(config.seed).choice(n, max_records, replace=False))
    waves = []
    for i in pick:
        view = pipeline.to_parallel(name, source.records[int(i)])
        waves += [u["audio"] for u in view["utterances"].values() if u.get("audio") is not None]
    return waves


def ensure_tokenizer(config: ConfigDict, tokenizer_dir: str) -> AudioTokenizer:
    """Loads the audio tokenizer, fitting it on training audio first if missing."""
    from audiopalm_jax.audio import is_saved_tokenizer, load_tokenizer

    if is_saved_tokenizer(tokenizer_dir):
        tok = load_tokenizer(tokenizer_dir)
    else:
        from audiopalm_jax.audio.commands import fit_tokenizer

        t0 = time.perf_counter()
        tcfg = config.data.get("audio_tokenizer") or {}
        tcfg = tcfg.to_dict() if hasattr(tcfg, "to_dict") else dict(tcfg)
        max_records = int(tcfg.pop("fit_records", 0) or 0)
        waves = []
        for alias in sorted(audio_languages(config)):
            waves += _fit_audio(config, alias, max_records)
        if not waves:
            raise ValueError("no training audio to fit the audio tokenizer on")
        seconds = sum(len(w) for w in waves) / SAMPLE_RATE
        _say(f"fitting the audio tokenizer on {len(waves)} utterances ({seconds / 60:.1f} min)")
        tok = fit_tokenizer(tcfg, tokenizer_dir, audio=waves, sample_rate=SAMPLE_RATE)
        _say(f"audio tokenizer {tok} -> {tokenizer_dir} ({time.perf_counter() - t0:.0f} s)")
    want = int(config.vocab.num_audio_tokens)
    if tok.num_tokens != want:
        raise ValueError(
            f"the audio tokenizer in {tokenizer_dir} has {tok.num_tokens} tokens but "
            f"config.vocab.num_audio_tokens={want}; make them equal (or use a new workdir)"
        )
    return tok


# -- stage 3: tokens ------------------------------------------------------------------------
class _AudioGetter:
    """record -> (waveform, rate) | None for one language of the parallel view."""

    def __init__(self, tfds_name: str, language: str):
        self.tfds_name, self.language = tfds_name, language

    def __call__(self, record) -> tuple[np.ndarray, int] | None:
        utt = pipeline.to_parallel(self.tfds_name, record)["utterances"].get(self.language)
        audio = None if utt is None else utt.get("audio")
        return None if audio is None or not len(audio) else (audio, SAMPLE_RATE)


def _tokens_ok(path: str, tok: AudioTokenizer, num_records: int) -> bool:
    """Whether ``path`` holds complete tokens of this tokenizer; stale ones are removed."""
    manifest = os.path.join(path, "manifest.json")
    if not os.path.exists(manifest):
        return False
    with open(manifest) as f:
        m = json.load(f)
    same = (
        m.get("tokenizer", {}).get("fingerprint") == tok.fingerprint()
        and m.get("num_records") == num_records
    )
    if not same:
        log.warning("%s: tokens of another tokenizer or dataset size; re-tokenizing", path)
        shutil.rmtree(path)
        return False
    return bool(m.get("complete"))


def tokenize_splits(
    config: ConfigDict, workdir: str | None, splits: Sequence[str] | None = None
) -> dict[str, float]:
    """Writes audio tokens of ``splits`` (default ``data.tokenize_splits``) for every
    dataset and language the mixture reads; returns seconds per dataset/split."""
    from audiopalm_jax.audio.commands import tokenize_dataset

    tokens_dir, tok_dir = resolve_dirs(config, workdir)
    splits = list(splits or config.data.get("tokenize_splits", DEFAULT_TOKENIZE_SPLITS))
    tok = ensure_tokenizer(config, tok_dir)
    timings = {}
    for alias, langs in sorted(audio_languages(config).items()):
        name, _ = pipeline.dataset_info(config, alias)
        for split in splits:
            ds_split = pipeline.dataset_split(config, alias, split)
            source = pipeline.RecordSource(alias, name, ds_split, pipeline.data_dir(config))
            t0 = time.perf_counter()
            for lang in sorted(langs):
                path = pipeline.tokens_path(tokens_dir, alias, ds_split, lang)
                if _tokens_ok(path, tok, len(source)):
                    continue
                _say(f"tokenizing {alias}/{ds_split}/{lang} ({len(source)} records)")
                tokenize_dataset(
                    tok,
                    source.records,
                    path,
                    audio_key=_AudioGetter(name, lang),
                    batch_size=int(config.data.get("tokenize_batch_size", 32)),
                    on_error="skip",
                )
            timings[f"{alias}/{ds_split}"] = time.perf_counter() - t0
    return timings


MARKER = "data_prepared.json"


def _data_fingerprint(config: ConfigDict) -> str:
    keys = (
        "datasets",
        "mixture",
        "warmup_mixture",
        "tokenize_splits",
        "audio_tokenizer",
        "data_dir",
    )
    d = config.data.to_dict()
    return json.dumps({k: d.get(k) for k in keys}, sort_keys=True, default=str)


def _wait_for_process_0(config: ConfigDict, workdir: str | None) -> dict[str, float]:
    """Non-zero processes: wait until process 0 has written the marker for this config."""
    if not workdir:
        raise ValueError("several processes prepare through a shared --workdir")
    path = os.path.join(workdir, MARKER)
    timeout = float(config.data.get("prepare_timeout_s", 3 * 3600))
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if os.path.exists(path):
            with open(path) as f:
                if json.load(f).get("fingerprint") == _data_fingerprint(config):
                    resolve_dirs(config, workdir)
                    return {"wait": time.perf_counter() - t0}
        time.sleep(5)
    raise TimeoutError(f"process 0 did not finish preparing data ({path}) in {timeout:.0f} s")


def prepare(config: ConfigDict, workdir: str | None) -> dict[str, float]:
    """Builds datasets, fits the audio tokenizer and tokenizes the splits the config needs.

    Idempotent; returns the seconds each stage took (near 0 when already done).
    """
    if config.data.get("source", "synthetic") == "synthetic":
        return {}
    dist = config.get("distributed", {}) or {}
    if int(dist.get("num_processes", 1)) > 1 and int(dist.get("process_id", 0)) > 0:
        return _wait_for_process_0(config, workdir)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    for alias in sorted({e.dataset for e in pipeline.all_entries(config)}):
        t = time.perf_counter()
        build_dataset(config, alias)
        timings[f"dataset/{alias}"] = time.perf_counter() - t
    _, tok_dir = resolve_dirs(config, workdir)
    t = time.perf_counter()
    ensure_tokenizer(config, tok_dir)
    timings["audio_tokenizer"] = time.perf_counter() - t
    for key, seconds in tokenize_splits(config, workdir).items():
        timings[f"tokens/{key}"] = seconds
    timings["total"] = time.perf_counter() - t0
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        tmp = os.path.join(workdir, MARKER + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"fingerprint": _data_fingerprint(config), "timings": timings}, f)
        os.replace(tmp, os.path.join(workdir, MARKER))
    _say("done: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return timings
