"""The weight-free default tokenizer: k-means over (stacked) log-mel frames.

Encode (``features="log_mel"``): 16 kHz audio, loudness-normalised -> 80-bin log-mel every
20 ms (50 Hz) -> for 25 Hz, pairs of frames stacked to 160 dims -> standardised -> nearest
of K centroids. ``features="vtln_cepstra"`` clusters speaker-normalised cepstra instead
(:mod:`.speaker_norm`), so voices share tokens.
Decode: each token's log-mel frames (its centroid, or with ``vtln_cepstra`` the mean
log-mel of the frames it was fitted on) -> mel power -> linear spectrum (NNLS) ->
Griffin-Lim.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import features as F
from . import speaker_norm
from .base import unpad_tokens
from .codebook_tokenizer import AudioItem, CodebookTokenizer, kmeans_config
from .kmeans import Codebook, KMeansConfig

FEATURES = ("log_mel", "vtln_cepstra")


@dataclasses.dataclass(frozen=True)
class MelConfig:
    """Feature and synthesis settings of :class:`MelKMeansTokenizer` (saved as JSON)."""

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 320  # 20 ms: the 50 Hz base frame rate
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    log_floor: float = 1e-5
    frame_rate: float = 25.0  # tokens per second: base rate / frames stacked per token
    normalize_loudness: bool = True
    griffin_lim_iters: int = 32
    decode_seed: int = 0
    # What the codebook clusters: "log_mel" (the frames above) or "vtln_cepstra"
    # (speaker-normalised cepstra, :mod:`.speaker_norm`; the settings below).
    features: str = "log_mel"
    cepstra: int = 13
    context_frames: int = 9  # 50 Hz frames per token's features, centred (odd)
    analysis_n_fft: int = 512
    analysis_win_length: int = 400  # 25 ms
    analysis_n_mels: int = 40
    warp_min: float = 0.76  # the VTLN grid: frequency-axis scale factors searched
    warp_max: float = 1.24
    warp_steps: int = 25

    @property
    def base_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def stack(self) -> int:
        return int(round(self.base_rate / self.frame_rate))

    def validate(self) -> MelConfig:
        if self.frame_rate <= 0 or abs(self.base_rate / self.frame_rate - self.stack) > 1e-6:
            raise ValueError(
                f"frame_rate={self.frame_rate} must divide the mel frame rate "
                f"{self.base_rate:g} Hz (sample_rate / hop_length) by a whole number, "
                f"e.g. {self.base_rate:g} or {self.base_rate / 2:g}"
            )
        if self.win_length > self.n_fft or self.fmax > self.sample_rate / 2:
            raise ValueError("need win_length <= n_fft and fmax <= sample_rate / 2")
        if self.features not in FEATURES:
            raise ValueError(f"features={self.features!r}; choose one of {FEATURES}")
        if self.features == "vtln_cepstra":
            if self.context_frames < 1 or self.context_frames % 2 == 0:
                raise ValueError(f"context_frames={self.context_frames} must be odd and >= 1")
            if not 1 <= self.cepstra <= self.analysis_n_mels:
                raise ValueError(f"cepstra={self.cepstra} must be in 1..{self.analysis_n_mels}")
            if self.analysis_win_length > self.analysis_n_fft:
                raise ValueError("need analysis_win_length <= analysis_n_fft")
            if not 0 < self.warp_min <= 1.0 <= self.warp_max or self.warp_steps < 1:
                raise ValueError(
                    f"need 0 < warp_min <= 1 <= warp_max and warp_steps >= 1, got "
                    f"{self.warp_min}, {self.warp_max}, {self.warp_steps}"
                )
        return self


@functools.partial(jax.jit, static_argnums=0)
def stacked_log_mel(cfg: MelConfig, x: jax.Array, lengths: jax.Array) -> jax.Array:
    """[B, N] audio -> [B, T, stack * n_mels] token-rate log-mel; padding is silence."""
    floor = float(np.log(cfg.log_floor))
    feats, _ = F.log_mel(
        x,
        lengths,
        n_fft=cfg.n_fft,
        hop=cfg.hop_length,
        window=jnp.asarray(F.hann_window(cfg.win_length, cfg.n_fft)),
        filterbank=jnp.asarray(
            F.slaney_mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        ),
        floor=cfg.log_floor,
        pad_value=floor,
    )
    b, t, m = feats.shape
    t_pad = -(-t // cfg.stack) * cfg.stack
    feats = jnp.pad(feats, ((0, 0), (0, t_pad - t), (0, 0)), constant_values=floor)
    return feats.reshape(b, t_pad // cfg.stack, cfg.stack * m)


@functools.partial(jax.jit, static_argnums=0)
def _analysis_features(cfg: MelConfig, x, lengths, template) -> jax.Array:
    """[B, N] audio -> [B, T, feature_dim]: what the codebook clusters (``cfg.features``)."""
    if cfg.features == "vtln_cepstra":
        return speaker_norm.normalized_cepstra(cfg, x, lengths, template)[0]
    return stacked_log_mel(cfg, x, lengths)


@functools.partial(jax.jit, static_argnums=0)
def _tokens(cfg: MelConfig, x, lengths, template, centroids, mean, std) -> jax.Array:
    """[B, N] audio -> [B, T] token ids (features and quantisation in one program)."""
    return Codebook(centroids, mean, std).quantize(_analysis_features(cfg, x, lengths, template))


@functools.partial(jax.jit, static_argnums=0)
def synthesize_log_mel(cfg: MelConfig, feats: jax.Array) -> jax.Array:
    """[B, T, stack * n_mels] token-rate log-mel -> [B, T * stack * hop] waveforms."""
    b, t, _ = feats.shape
    logmel = feats.reshape(b, t * cfg.stack, cfg.n_mels)
    fb = F.slaney_mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    power = F.mel_to_linear(jnp.exp(logmel), fb)  # [B, frames, n_fft // 2 + 1]
    wave = F.griffin_lim(
        jnp.sqrt(power),
        n_fft=cfg.n_fft,
        hop=cfg.hop_length,
        window=jnp.asarray(F.hann_window(cfg.win_length, cfg.n_fft)),
        length=t * cfg.stack * cfg.hop_length,
        iterations=cfg.griffin_lim_iters,
        key=jax.random.key(cfg.decode_seed),
    )
    return jnp.clip(wave, -1.0, 1.0)


class MelKMeansTokenizer(CodebookTokenizer):
    """k-means tokens over log-mel frames; weight-free, fast, and able to decode."""

    kind = "mel_kmeans"
    can_decode = True

    def __init__(
        self,
        codebook: Codebook | None,
        config: MelConfig | None = None,
        devices=None,
        vtln_template: np.ndarray | None = None,
    ):
        super().__init__(codebook, devices)
        self.config = (config or MelConfig()).validate()
        # [S] envelope statistic VTLN matches ("vtln_cepstra"); fitted with the codebook.
        self.vtln_template = (
            None if vtln_template is None else np.asarray(vtln_template, np.float32)
        )
        self._silence_token: int | None = None

    # -- properties -----------------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        return float(self.config.frame_rate)

    @property
    def sample_rate(self) -> int:
        return int(self.config.sample_rate)

    @property
    def feature_dim(self) -> int:
        c = self.config
        return c.cepstra * c.context_frames if c.features == "vtln_cepstra" else c.stack * c.n_mels

    @property
    def normalize_loudness(self) -> bool:
        return self.config.normalize_loudness

    @property
    def length_multiple(self) -> int:
        return self.config.hop_length * self.config.stack

    def token_lengths(self, num_samples: np.ndarray) -> np.ndarray:
        frames = F.num_stft_frames(np.asarray(num_samples), self.config.hop_length)
        return -(-frames // self.config.stack)

    def _template(self) -> jax.Array | None:
        if self.config.features != "vtln_cepstra":
            return None
        if self.vtln_template is None:
            raise RuntimeError("this vtln_cepstra tokenizer has no VTLN template; fit it first")
        return jnp.asarray(self.vtln_template)

    def _features_fn(self):
        template = self._template()
        return lambda x, n: _analysis_features(self.config, x, n, template)

    def _tokens_fn(self):
        cb, template = self.codebook, self._template()
        return lambda x, n: _tokens(self.config, x, n, template, cb.centroids, cb.mean, cb.std)

    def _decode_features_fn(self):
        # log_mel centroids are log-mel frames already; cepstral ones need a synthesis table.
        if self.config.features == "vtln_cepstra":
            return functools.partial(stacked_log_mel, self.config)
        return None

    # -- fitting ----------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        audio: Sequence[AudioItem] | str,
        sample_rate: int | Sequence[int] | None = None,
        num_tokens: int = 1024,
        frame_rate: float = 25.0,
        seed: int = 0,
        *,
        kmeans: KMeansConfig | dict | None = None,
        max_frames: int | None = None,
        progress: bool = False,
        devices: list | None = None,
        **mel_options: Any,
    ) -> MelKMeansTokenizer:
        """Fits a codebook on a list of waveforms (with ``sample_rate``) or audio file paths
        (or a directory / glob). ``mel_options`` override :class:`MelConfig` fields and
        ``kmeans`` overrides :class:`KMeansConfig` fields (steps, batch size, ...)."""
        config = MelConfig(frame_rate=float(frame_rate), **mel_options)
        tok = cls(None, config, devices)
        if config.features == "vtln_cepstra":
            # VTLN needs its template before the features the codebook clusters exist.
            (shapes,), _ = tok._map_audio(
                audio,
                sample_rate,
                functools.partial(speaker_norm.envelope_shapes, config),
                per_item=True,
                progress=progress,
                desc="VTLN template",
            )
            tok.vtln_template = np.mean([s[0] for s in shapes], axis=0).astype(np.float32)
        tok.fit_codebook(
            audio,
            sample_rate,
            kmeans_config(num_tokens, seed, kmeans),
            max_frames=max_frames,
            progress=progress,
        )
        return tok

    # -- decoding ---------------------------------------------------------------------------
    @property
    def silence_token(self) -> int:
        """The token whose log-mel frames are quietest; fills padding when decoding."""
        if self._silence_token is None:
            frames = self.codebook.lookup(jnp.arange(self.num_tokens))  # [K, stack * n_mels]
            self._silence_token = int(jnp.argmin(frames.mean(-1)))
        return self._silence_token

    def decode(self, tokens: np.ndarray, lengths: np.ndarray | None = None) -> list[np.ndarray]:
        """[batch, len] tokens (+ [batch] lengths; default: up to the first PAD_TOKEN) ->
        list of float32 waveforms at ``sample_rate``, ``len * stack * hop`` samples each."""
        rows = unpad_tokens(tokens, lengths, self.num_tokens)
        cfg, out = self.config, [None] * len(rows)
        samples_per_token = cfg.stack * cfg.hop_length
        order = np.argsort([len(r) for r in rows], kind="stable")
        for start in range(0, len(rows), self.max_batch):
            group = order[start : start + self.max_batch]
            t = max(1, max(len(rows[i]) for i in group))
            t_pad = -(-t // 8) * 8  # few distinct shapes -> few compilations
            batch = np.full((len(group), t_pad), self.silence_token, np.int32)
            for j, i in enumerate(group):
                batch[j, : len(rows[i])] = rows[i]
            feats = self.codebook.lookup(jnp.asarray(batch))
            waves = np.asarray(synthesize_log_mel(cfg, feats))
            for j, i in enumerate(group):
                out[i] = waves[j, : len(rows[i]) * samples_per_token].astype(np.float32)
        return out

    # -- persistence ------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def get_arrays(self) -> dict[str, np.ndarray]:
        if self.codebook is None:
            raise RuntimeError("cannot save an unfitted tokenizer")
        arrays = self.codebook.arrays()
        if self.vtln_template is not None:
            arrays["vtln_template"] = self.vtln_template
        return arrays

    @classmethod
    def from_saved(cls, config, arrays, directory) -> MelKMeansTokenizer:
        template = arrays.get("vtln_template")
        return cls(Codebook.from_arrays(arrays), MelConfig(**config), vtln_template=template)
