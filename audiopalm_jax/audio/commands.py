"""CLI building blocks: fit a tokenizer, tokenize a dataset into shards, read the shards.

Token shards are safetensors files holding, for records ``[start, end)`` of the source:
``tokens`` (int32, all records' tokens concatenated), ``offsets`` (int64 [n + 1]),
``record_indices`` (int64 [n]) and ``status`` (uint8 [n]: 1 ok, 0 no audio, 2 invalid
audio skipped). ``manifest.json`` names the tokenizer (kind + fingerprint) and the shards.
A shard is written under a temporary name and renamed when complete, so an interrupted
run resumes by redoing only the shards that are missing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .base import AudioTokenizer, load_tokenizer
from .frontend import AudioInputError, list_audio_files
from .kmeans import KMeansConfig

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "audiopalm-audio-tokens"
STATUS_MISSING, STATUS_OK, STATUS_INVALID = 0, 1, 2
FIT_KEYS = {
    "kind", "audio", "max_files", "sample_rate", "num_tokens", "frame_rate", "seed",
    "max_frames", "progress", "kmeans", "mel", "w2v_bert",
}  # fmt: skip
AudioGetter = Callable[[Mapping], "tuple[np.ndarray, int] | None"]


# -- fitting --------------------------------------------------------------------------------


def _as_dict(config: Any) -> dict:
    if config is None:
        return {}
    if hasattr(config, "to_dict"):  # ml_collections.ConfigDict
        return config.to_dict()
    return {k: _as_dict(v) if isinstance(v, Mapping) else v for k, v in dict(config).items()}


def fit_tokenizer(
    config: Any,
    output_dir: str,
    audio: Sequence[np.ndarray] | None = None,
    sample_rate: int | Sequence[int] | None = None,
) -> AudioTokenizer:
    """Fits the tokenizer described by ``config`` and saves it to ``output_dir``.

    Audio comes from ``audio`` (waveforms, with ``sample_rate`` or ``config.sample_rate``)
    or else from ``config.audio``: a directory (searched recursively), a glob, or a list of
    file paths, optionally capped by ``config.max_files``. See configs/tokenizer_mel.py.
    """
    from .mel_tokenizer import MelKMeansTokenizer
    from .w2v_bert_tokenizer import W2vBertTokenizer

    cfg = _as_dict(config)
    unknown = sorted(set(cfg) - FIT_KEYS)
    if unknown:
        raise ValueError(f"fit_tokenizer: unknown config keys {unknown}; known: {sorted(FIT_KEYS)}")
    kmeans_keys = set(KMeansConfig.__dataclass_fields__) - {"num_clusters", "seed"}
    bad = sorted(set(cfg.get("kmeans") or {}) - kmeans_keys)
    if bad:
        raise ValueError(f"fit_tokenizer: unknown kmeans keys {bad}; known: {sorted(kmeans_keys)}")
    if audio is None:
        source = cfg.get("audio")
        if not source:
            raise ValueError(
                "fit_tokenizer: set config.audio (dir, glob or file list) or pass audio"
            )
        files = list_audio_files(source) if isinstance(source, str) else list(source)
        if cfg.get("max_files"):
            rng = np.random.default_rng(cfg.get("seed", 0))
            files = sorted(rng.choice(files, min(len(files), cfg["max_files"]), replace=False))
        audio, sample_rate = files, None
    else:
        sample_rate = sample_rate if sample_rate is not None else cfg.get("sample_rate")
    common = dict(
        sample_rate=sample_rate,
        num_tokens=cfg.get("num_tokens", 1024),
        frame_rate=cfg.get("frame_rate", 25.0),
        seed=cfg.get("seed", 0),
        kmeans=cfg.get("kmeans") or None,
        max_frames=cfg.get("max_frames"),
        progress=cfg.get("progress", True),
    )
    kind = cfg.get("kind", MelKMeansTokenizer.kind)
    if kind == MelKMeansTokenizer.kind:
        tok = MelKMeansTokenizer.fit(audio, **common, **(cfg.get("mel") or {}))
    elif kind == W2vBertTokenizer.kind:
        w2v = cfg.get("w2v_bert") or {}
        if not w2v.get("checkpoint"):
            raise ValueError("w2v_bert_kmeans needs config.w2v_bert.checkpoint (a local HF dir)")
        tok = W2vBertTokenizer.fit(
            audio, **common, checkpoint=w2v["checkpoint"], layer=w2v.get("layer", 17)
        )
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; use mel_kmeans or w2v_bert_kmeans")
    tok.save(output_dir)
    with open(os.path.join(output_dir, "fit_info.json"), "w") as f:
        json.dump({"config": cfg, "info": getattr(tok, "fit_info", {})}, f, indent=2, default=str)
    return tok


# -- dataset tokenization ---------------------------------------------------------------------


def _audio_getter(audio_key: str | AudioGetter, sample_rate: int) -> AudioGetter:
    """A record -> (wave, rate) | None function from a key path like ``"audio/en"``."""
    if callable(audio_key):
        return audio_key

    def get(record: Mapping):
        value: Any = record
        for part in audio_key.split("/"):
            if not isinstance(value, Mapping):
                raise KeyError(f"audio_key {audio_key!r}: {part!r} is not inside a mapping")
            value = value.get(part)
            if value is None:
                return None
        if isinstance(value, Mapping) and "array" in value:  # HF datasets Audio feature
            return value["array"], value.get("sampling_rate", sample_rate)
        return value, sample_rate

    return get


def _shard_name(index: int) -> str:
    return f"tokens-{index:05d}.safetensors"


def _write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _encode_records(
    tokenizer: AudioTokenizer, audio: list, batch_size: int, on_error: str
) -> tuple[list[np.ndarray], np.ndarray, float]:
    """Encodes (wave, rate) | None items -> (token rows, status, audio seconds)."""
    rows: list[np.ndarray] = [np.zeros((0,), np.int32)] * len(audio)
    status = np.full(len(audio), STATUS_MISSING, np.uint8)
    present = [i for i, a in enumerate(audio) if a is not None]
    # Similar lengths share a batch: less padding, fewer compiled shapes.
    present.sort(key=lambda i: len(audio[i][0]))
    seconds = 0.0
    for s in range(0, len(present), batch_size):
        idx = present[s : s + batch_size]
        try:
            toks, lens = tokenizer.encode([audio[i][0] for i in idx], [audio[i][1] for i in idx])
            done = list(zip(idx, toks, lens, strict=True))
        except AudioInputError:
            if on_error == "raise":
                raise
            done = []
            for i in idx:  # find the bad item(s) one at a time
                try:
                    t, n = tokenizer.encode([audio[i][0]], audio[i][1])
                    done.append((i, t[0], n[0]))
                except AudioInputError as e:
                    log.warning("record %d: skipped invalid audio: %s", i, e)
                    status[i] = STATUS_INVALID
        for i, t, n in done:
            rows[i] = np.asarray(t[:n], np.int32)
            status[i] = STATUS_OK
            seconds += len(audio[i][0]) / float(audio[i][1])
    return rows, status, seconds


def tokenize_dataset(
    tokenizer: AudioTokenizer | str,
    source: Sequence[Mapping],
    output_dir: str,
    *,
    audio_key: str | AudioGetter = "audio",
    shard_size: int = 1000,
    batch_size: int = 16,
    sample_rate: int = 16000,
    on_error: str = "raise",
    progress: bool = True,
) -> dict:
    """Tokenizes every record of ``source`` into resumable shards under ``output_dir``.

    Args:
      tokenizer: an :class:`AudioTokenizer` or a saved tokenizer directory.
      source: random-access records (``len(source)``, ``source[i] -> dict``).
      audio_key: a key path into each record (``"audio"``, ``"audio/en"``; the value is an
        int16/float array at ``sample_rate``, a HF ``{"array", "sampling_rate"}`` dict, or
        None for "no audio"), or a callable ``record -> (wave, rate) | None``.
      on_error: ``"raise"`` on invalid audio, or ``"skip"`` (recorded as status 2).
    Returns the manifest dict.
    """
    from safetensors.numpy import save_file

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer)
    get_audio = _audio_getter(audio_key, sample_rate)
    n = len(source)
    num_shards = max(1, -(-n // shard_size))
    header = {
        "format": FORMAT,
        "version": 1,
        "tokenizer": {
            "kind": tokenizer.kind,
            "fingerprint": tokenizer.fingerprint(),
            "num_tokens": tokenizer.num_tokens,
            "frame_rate": tokenizer.frame_rate,
            "sample_rate": tokenizer.sample_rate,
        },
        "num_records": n,
        "shard_size": shard_size,
        "num_shards": num_shards,
        "audio_key": audio_key if isinstance(audio_key, str) else repr(audio_key),
    }
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, MANIFEST)
    manifest = {**header, "shards": {}, "complete": False}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        for key in ("format", "tokenizer", "num_records", "shard_size"):
            if old.get(key) != header[key]:
                raise ValueError(
                    f"{output_dir} already holds tokens with a different {key} "
                    f"({old.get(key)!r} != {header[key]!r}); use a new output_dir or delete it"
                )
        manifest["shards"] = old.get("shards", {})
    _write_json(path, manifest)

    todo = [
        i for i in range(num_shards) if not os.path.exists(os.path.join(output_dir, _shard_name(i)))
    ]
    for i in range(num_shards):  # shards renamed in place but not yet in the manifest
        name = _shard_name(i)
        if i not in todo and name not in manifest["shards"]:
            manifest["shards"][name] = _read_shard_meta(os.path.join(output_dir, name))
    done_records = n - sum(min(n, (i + 1) * shard_size) - i * shard_size for i in todo)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, initial=done_records, desc="tokenize", unit="rec")
    t0, audio_seconds = time.perf_counter(), 0.0
    for i in todo:
        start, end = i * shard_size, min(n, (i + 1) * shard_size)
        audio = [get_audio(source[r]) for r in range(start, end)]
        rows, status, seconds = _encode_records(tokenizer, audio, batch_size, on_error)
        lengths = np.asarray([len(r) for r in rows], np.int64)
        meta = {
            "start": start,
            "end": end,
            "num_tokens": int(lengths.sum()),
            "audio_seconds": round(seconds, 3),
            "invalid": int(np.sum(status == STATUS_INVALID)),
            "missing": int(np.sum(status == STATUS_MISSING)),
        }
        arrays = {
            "tokens": np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "record_indices": np.arange(start, end, dtype=np.int64),
            "status": status,
        }
        name = _shard_name(i)
        tmp = os.path.join(output_dir, f".{name}.tmp")
        save_file(arrays, tmp, metadata={k: str(v) for k, v in meta.items()})
        os.replace(tmp, os.path.join(output_dir, name))  # atomic: a shard exists only whole
        manifest["shards"][name] = meta
        _write_json(path, manifest)
        audio_seconds += seconds
        if bar is not None:
            wall = time.perf_counter() - t0
            bar.update(end - start)
            bar.set_postfix(hours=f"{audio_seconds / 3600:.3f}", rtf=f"{audio_seconds / wall:.0f}x")
    if bar is not None:
        bar.close()
    manifest["complete"] = True
    manifest["total_tokens"] = sum(s["num_tokens"] for s in manifest["shards"].values())
    manifest["total_audio_hours"] = (
        sum(s["audio_seconds"] for s in manifest["shards"].values()) / 3600
    )
    _write_json(path, manifest)
    return manifest


def _read_shard_meta(path: str) -> dict:
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
    return {k: (float(v) if "." in v else int(v)) for k, v in meta.items()}


class TokenStore(Sequence):
    """Random access to tokens written by :func:`tokenize_dataset`: ``store[i]`` -> int32 [T].

    Shards are opened lazily (safetensors memory-maps them); only ``offsets`` and ``status``
    of an opened shard are held in memory.
    """

    def __init__(self, directory: str):
        path = os.path.join(directory, MANIFEST)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no {MANIFEST} in {directory!r}: not a token directory")
        with open(path) as f:
            self.manifest = json.load(f)
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{path} is not an {FORMAT} manifest")
        self.directory = directory
        self.shard_size = int(self.manifest["shard_size"])
        self._open: dict[int, tuple[Any, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self.manifest["num_records"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def tokenizer_info(self) -> dict:
        return dict(self.manifest["tokenizer"])

    def _shard(self, index: int):
        s = index // self.shard_size
        if s not in self._open:
            from safetensors import safe_open

            path = os.path.join(self.directory, _shard_name(s))
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"record {index}: shard {path} is missing (tokenization not finished?)"
                )
            handle = safe_open(path, framework="numpy")
            self._open[s] = (handle, handle.get_tensor("offsets"), handle.get_tensor("status"))
        return self._open[s]

    def status(self, index: int) -> int:
        """1 ok, 0 the record had no audio, 2 its audio was invalid and skipped."""
        _, _, status = self._shard(self._check(index))
        return int(status[index % self.shard_size])

    def _check(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"record {index} out of range for {len(self)} records")
        return index % len(self)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        index = self._check(index)
        handle, offsets, _ = self._shard(index)
        j = index % self.shard_size
        a, b = int(offsets[j]), int(offsets[j + 1])
        if a == b:  # safetensors cannot slice an empty range
            return np.zeros((0,), np.int32)
        return handle.get_slice("tokens")[a:b]
