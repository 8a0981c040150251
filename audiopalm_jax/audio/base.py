"""The ``AudioTokenizer`` interface, its on-disk format and run-length merging of units.

A saved tokenizer is a directory with ``tokenizer.json`` (``{"kind", "version", "config"}``)
and ``tokenizer.safetensors`` (its arrays); subclasses may add files. No pickle anywhere.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

CONFIG_FILE = "tokenizer.json"
ARRAYS_FILE = "tokenizer.safetensors"
FORMAT_VERSION = 1
PAD_TOKEN = -1  # fills token rows past ``lengths``; never a valid token id

_REGISTRY: dict[str, type[AudioTokenizer]] = {}


class AudioTokenizer(abc.ABC):
    """Waveforms <-> discrete audio tokens in ``[0, num_tokens)`` at ``frame_rate`` Hz."""

    kind: ClassVar[str] = ""
    can_decode: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            _REGISTRY[cls.kind] = cls

    # -- properties -----------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def num_tokens(self) -> int:
        """Codebook size: tokens lie in ``[0, num_tokens)``."""

    @property
    @abc.abstractmethod
    def frame_rate(self) -> float:
        """Tokens per second of audio."""

    @property
    @abc.abstractmethod
    def sample_rate(self) -> int:
        """The rate audio is resampled to before tokenizing, and decoded audio's rate."""

    # -- encode / decode ------------------------------------------------------------------
    @abc.abstractmethod
    def encode(
        self, waveforms: Sequence[np.ndarray], sample_rate: int | Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """A batch of mono waveforms -> ([batch, max_len] int32 tokens, [batch] int32 lengths).

        ``sample_rate`` is one rate for all waveforms or one per waveform; audio is
        validated, downmixed and resampled by :mod:`audiopalm_jax.audio.frontend`. Rows are
        padded with ``PAD_TOKEN`` (-1) past their length.
        """

    def decode(self, tokens: np.ndarray, lengths: np.ndarray | None = None) -> list[np.ndarray]:
        """[batch, len] tokens (+ [batch] lengths) -> float32 waveforms at ``sample_rate``."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot synthesize audio (can_decode is False)"
        )

    def encode_one(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        """One waveform -> [len] int32 tokens."""
        tokens, lengths = self.encode([waveform], sample_rate)
        return tokens[0, : lengths[0]]

    # -- persistence ----------------------------------------------------------------------
    @abc.abstractmethod
    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable settings (everything but the arrays)."""

    @abc.abstractmethod
    def get_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays saved to ``tokenizer.safetensors``."""

    @classmethod
    @abc.abstractmethod
    def from_saved(cls, config: dict[str, Any], arrays: dict[str, np.ndarray], directory: str):
        """Rebuilds the tokenizer from :meth:`get_config` / :meth:`get_arrays` output."""

    def save(self, directory: str) -> str:
        """Writes ``tokenizer.json`` + ``tokenizer.safetensors`` to ``directory``."""
        from safetensors.numpy import save_file

        os.makedirs(directory, exist_ok=True)
        arrays = {k: np.ascontiguousarray(v) for k, v in self.get_arrays().items()}
        save_file(arrays, os.path.join(directory, ARRAYS_FILE))
        meta = {"kind": self.kind, "version": FORMAT_VERSION, "config": self.get_config()}
        tmp = os.path.join(directory, CONFIG_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        # The config is written last and atomically: its presence marks a complete save.
        os.replace(tmp, os.path.join(directory, CONFIG_FILE))
        return directory

    @classmethod
    def load(cls, directory: str) -> AudioTokenizer:
        """Loads a tokenizer saved by :meth:`save` (of this class or, on the base, any kind)."""
        tok = load_tokenizer(directory)
        if cls is not AudioTokenizer and not isinstance(tok, cls):
            raise TypeError(f"{directory!r} holds a {tok.kind!r} tokenizer, not {cls.kind!r}")
        return tok

    def fingerprint(self) -> str:
        """A short hash of config and arrays: identifies the token inventory."""
        h = hashlib.sha256()
        h.update(self.kind.encode())
        h.update(json.dumps(self.get_config(), sort_keys=True).encode())
        for name, arr in sorted(self.get_arrays().items()):
            h.update(name.encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]

    # Run-length helpers, also reachable from an instance.
    merge_repeats = staticmethod(lambda tokens: merge_repeats(tokens))
    expand_repeats = staticmethod(lambda units, durations: expand_repeats(units, durations))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_tokens={self.num_tokens}, frame_rate={self.frame_rate}, "
            f"sample_rate={self.sample_rate}, can_decode={self.can_decode})"
        )


def is_saved_tokenizer(directory: str) -> bool:
    """Whether ``directory`` holds a tokenizer saved with :meth:`AudioTokenizer.save`."""
    return os.path.exists(os.path.join(directory, CONFIG_FILE))


def load_tokenizer(directory: str) -> AudioTokenizer:
    """Loads any tokenizer saved with :meth:`AudioTokenizer.save`, dispatching on its kind."""
    from safetensors.numpy import load_file

    from . import mel_tokenizer, w2v_bert_tokenizer  # noqa: F401  (register the kinds)

    path = os.path.join(directory, CONFIG_FILE)
    if not is_saved_tokenizer(directory):
        raise FileNotFoundError(f"no {CONFIG_FILE} in {directory!r}: not a saved audio tokenizer")
    with open(path) as f:
        meta = json.load(f)
    kind = meta.get("kind")
    if kind not in _REGISTRY:
        raise ValueError(f"{path}: unknown tokenizer kind {kind!r}; known: {sorted(_REGISTRY)}")
    if meta.get("version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {meta['version']}, newer than this code "
            f"({FORMAT_VERSION}); upgrade audiopalm_jax"
        )
    arrays = load_file(os.path.join(directory, ARRAYS_FILE))
    return _REGISTRY[kind].from_saved(meta["config"], arrays, directory)


def merge_repeats(tokens: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Run-length merge (SpeechGPT "reduced units"): [T] -> ([U] units, [U] durations).

    ``expand_repeats(*merge_repeats(t))`` gives ``t`` back.
    """
    t = np.asarray(tokens)
    if t.ndim != 1:
        raise ValueError(f"merge_repeats takes one 1-D token sequence, got shape {t.shape}")
    if t.size == 0:
        return t.astype(np.int32), np.zeros((0,), np.int32)
    starts = np.flatnonzero(np.concatenate([[True], t[1:] != t[:-1]]))
    durations = np.diff(np.concatenate([starts, [t.size]]))
    return t[starts].astype(np.int32), durations.astype(np.int32)


def expand_repeats(units: np.ndarray | Sequence[int], durations: np.ndarray | Sequence[int]):
    """Undoes :func:`merge_repeats`: ([U] units, [U] durations >= 1) -> [sum(durations)]."""
    u, d = np.asarray(units), np.asarray(durations)
    if u.shape != d.shape or u.ndim != 1:
        raise ValueError(f"units {u.shape} and durations {d.shape} must be equal-length 1-D")
    if d.size and d.min() < 1:
        raise ValueError(f"durations must be >= 1, got min {d.min()}")
    return np.repeat(u, d).astype(np.int32)


def pad_tokens(rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length int rows -> ([batch, max_len] int32 padded with PAD_TOKEN, [batch])."""
    lengths = np.asarray([len(r) for r in rows], np.int32)
    out = np.full((len(rows), int(lengths.max(initial=0))), PAD_TOKEN, np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out, lengths


def unpad_tokens(tokens: np.ndarray, lengths: np.ndarray | None, num_tokens: int) -> list:
    """[batch, len] tokens (+ lengths) -> list of valid rows; checks the id range."""
    tokens = np.asarray(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [batch, length], got shape {tokens.shape}")
    if lengths is None:
        lengths = np.sum(tokens != PAD_TOKEN, axis=1)
    lengths = np.asarray(lengths).reshape(-1)
    if lengths.shape[0] != tokens.shape[0]:
        raise ValueError(f"{lengths.shape[0]} lengths for {tokens.shape[0]} token rows")
    rows = [tokens[i, : int(n)] for i, n in enumerate(lengths)]
    for i, r in enumerate(rows):
        if r.size and (r.min() < 0 or r.max() >= num_tokens):
            raise ValueError(
                f"row {i}: tokens must lie in [0, {num_tokens}), got [{r.min()}, {r.max()}]"
            )
    return rows
