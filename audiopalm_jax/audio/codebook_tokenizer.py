"""Shared machinery of the "features -> k-means codebook" tokenizers.

Subclasses say how to turn a padded waveform batch into token-rate features (a jitted
function) and how many tokens a waveform of ``n`` samples yields; this class does input
validation, length-grouped batching, sharding over devices, quantisation and fitting.
"""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Callable, Sequence

import jax
import numpy as np

from . import frontend
from .base import AudioTokenizer, pad_tokens
from .batching import BatchSharder, length_groups, pad_waveforms
from .kmeans import Codebook, KMeansConfig

log = logging.getLogger(__name__)

AudioItem = np.ndarray | str | os.PathLike


def audio_items(
    audio: Sequence[AudioItem] | str, sample_rate: int | Sequence[int] | None
) -> list[tuple[AudioItem, int | None]]:
    """Pairs every array with its rate (``sample_rate``: one for all or one per item) and
    expands a directory / glob into files; files are read later, chunk by chunk."""
    if isinstance(audio, (str, os.PathLike)):
        audio = frontend.list_audio_files(os.fspath(audio))
    audio = list(audio)
    if not audio:
        raise ValueError("no audio given: pass a non-empty list of arrays or file paths")
    rates = frontend.per_item_rates(sample_rate, len(audio))
    for i, (item, sr) in enumerate(zip(audio, rates, strict=True)):
        if not isinstance(item, (str, os.PathLike)) and sr is None:
            raise ValueError(
                f"audio item {i} is an array but no sample_rate was given; pass "
                "sample_rate=... (one for all, or one per item)"
            )
    return list(zip(audio, rates, strict=True))


def _read(item: AudioItem, sample_rate: int | None) -> tuple[np.ndarray, int]:
    if isinstance(item, (str, os.PathLike)):
        return frontend.load_audio(os.fspath(item))
    return item, sample_rate


@jax.jit
def _quantize(feats: jax.Array, centroids, mean, std) -> jax.Array:
    return Codebook(centroids, mean, std).quantize(feats)


class CodebookTokenizer(AudioTokenizer):
    """Base of tokenizers that quantise token-rate features with a :class:`Codebook`."""

    # Upper bounds on one jitted call: items and padded samples (at ``sample_rate``).
    max_batch: int = 32
    max_batch_samples: int = 16000 * 240

    def __init__(self, codebook: Codebook | None, devices: list | None = None):
        self.codebook = codebook
        self._sharder = BatchSharder(devices)

    # -- subclass hooks -------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def feature_dim(self) -> int:
        """Dimension of the token-rate features the codebook quantises."""

    @property
    def min_samples(self) -> int:
        """Shortest waveform (at ``sample_rate``) that yields at least one token."""
        return 1

    @property
    def normalize_loudness(self) -> bool:
        return False

    @property
    def length_multiple(self) -> int:
        """Padded waveform lengths are multiples of this (keeps frame counts aligned)."""
        return 1

    @abc.abstractmethod
    def token_lengths(self, num_samples: np.ndarray) -> np.ndarray:
        """[batch] waveform lengths at ``sample_rate`` -> [batch] token counts."""

    @abc.abstractmethod
    def _features_fn(self) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """A jitted ``(x [B, N], lengths [B]) -> [B, T, feature_dim]`` feature function."""

    def _tokens_fn(self) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """A ``(x [B, N], lengths [B]) -> [B, T]`` token function; subclasses may fuse it."""
        features, cb = self._features_fn(), self.codebook
        return lambda x, n: _quantize(features(x, n), cb.centroids, cb.mean, cb.std)

    def _decode_features_fn(self) -> Callable[[jax.Array, jax.Array], jax.Array] | None:
        """Features :meth:`Codebook.lookup` should return per token, when they are not the
        clustered features themselves (see :meth:`Codebook.with_decode_table`); None: they are."""
        return None

    # -- shared implementation ------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        if self.codebook is None:
            raise RuntimeError(f"{type(self).__name__} has no codebook yet; fit it first")
        return self.codebook.size

    def prepare(
        self, waveforms: Sequence[np.ndarray], sample_rate: int | Sequence[int]
    ) -> list[np.ndarray]:
        """Validates, downmixes, resamples (and maybe loudness-normalises) a batch."""
        return frontend.prepare_batch(
            waveforms,
            sample_rate,
            self.sample_rate,
            normalize=self.normalize_loudness,
            min_samples=self.min_samples,
        )

    def _run(
        self, waves: list[np.ndarray], fn: Callable, per_item: bool = False
    ) -> list[np.ndarray]:
        """Applies a jitted batch function to prepared waves, in length-sorted groups.

        ``fn`` returns [B, T, ...] token-rate rows, cut to each wave's token count, or
        with ``per_item`` one [...] result per wave, returned as is."""
        lengths = np.asarray([len(w) for w in waves])
        tok_lens = self.token_lengths(lengths)
        out: list[np.ndarray] = [None] * len(waves)  # type: ignore[list-item]
        for group in length_groups(lengths, self.max_batch, self.max_batch_samples):
            x, lens = pad_waveforms(
                [waves[i] for i in group],
                self.length_multiple,
                self._sharder.batch_multiple(len(group)),
            )
            result = np.asarray(fn(*self._sharder.put(x, lens)))  # [B', T, ...]
            for j, i in enumerate(group):
                if per_item:
                    out[i] = result[j]
                    continue
                if result.shape[1] < tok_lens[i]:
                    raise AssertionError(f"feature function returned {result.shape[1]} frames")
                out[i] = result[j, : tok_lens[i]]
        return out

    def features(
        self, waveforms: Sequence[np.ndarray], sample_rate: int | Sequence[int]
    ) -> list[np.ndarray]:
        """The token-rate features the codebook sees: a list of [T_i, feature_dim] arrays."""
        return self._run(self.prepare(waveforms, sample_rate), self._features_fn())

    def encode(
        self, waveforms: Sequence[np.ndarray], sample_rate: int | Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`AudioTokenizer.encode`."""
        if self.codebook is None:
            raise RuntimeError(f"{type(self).__name__} has no codebook yet; fit it first")
        rows = self._run(self.prepare(waveforms, sample_rate), self._tokens_fn())
        return pad_tokens(rows)

    def _map_audio(
        self,
        audio: Sequence[AudioItem] | str,
        sample_rate: int | Sequence[int] | None,
        *fns: Callable,
        per_item: bool = False,
        progress: bool = False,
        desc: str = "features",
    ) -> tuple[list[list[np.ndarray]], float]:
        """Applies each of ``fns`` (see :meth:`_run`) to every item of ``audio``; files are
        read chunk by chunk, so only the results stay in memory.

        Returns one list of results per fn, and the seconds of audio read."""
        items = audio_items(audio, sample_rate)
        results: list[list[np.ndarray]] = [[] for _ in fns]
        seconds = 0.0
        chunk = 64
        starts = range(0, len(items), chunk)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=desc, unit="chunk")
        for start in starts:
            waves, rates = zip(
                *[_read(*item) for item in items[start : start + chunk]], strict=True
            )
            prepared = self.prepare(list(waves), list(rates))
            seconds += sum(len(w) for w in prepared) / self.sample_rate
            for fn, out in zip(fns, results, strict=True):
                out.extend(self._run(prepared, fn, per_item))
        return results, seconds

    def fit_codebook(
        self,
        audio: Sequence[AudioItem],
        sample_rate: int | Sequence[int] | None,
        kmeans: KMeansConfig,
        *,
        max_frames: int | None = None,
        progress: bool = False,
    ) -> dict:
        """Extracts features from ``audio`` and fits this tokenizer's codebook in place."""
        fns = [self._features_fn()]
        decode_fn = self._decode_features_fn()
        if decode_fn is not None:
            fns.append(decode_fn)
        outputs, seconds = self._map_audio(audio, sample_rate, *fns, progress=progress)
        data = np.concatenate(outputs[0]).astype(np.float32)
        decode = np.concatenate(outputs[1]).astype(np.float32) if decode_fn else None
        num_items = len(outputs[0])
        if max_frames is not None and len(data) > max_frames:
            keep = np.random.default_rng(kmeans.seed).choice(len(data), max_frames, replace=False)
            data = data[np.sort(keep)]
            decode = None if decode is None else decode[np.sort(keep)]
        self.codebook, info = Codebook.fit(data, kmeans, mesh=self._sharder.mesh, progress=progress)
        if decode is not None:
            self.codebook = self.codebook.with_decode_table(data, decode)
        info.update(audio_seconds=seconds, items=num_items)
        log.info("fitted %s codebook: %s", self.kind, info)
        self.fit_info = info
        return info


def kmeans_config(
    num_tokens: int, seed: int, overrides: KMeansConfig | dict | None
) -> KMeansConfig:
    """A :class:`KMeansConfig` with ``num_tokens`` clusters and ``seed``, plus overrides."""
    if isinstance(overrides, KMeansConfig):
        overrides = {
            k: v for k, v in overrides.__dict__.items() if k not in ("num_clusters", "seed")
        }
    return KMeansConfig(num_clusters=int(num_tokens), seed=int(seed), **dict(overrides or {}))
