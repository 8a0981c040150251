"""w2v-BERT 2.0 features + k-means: AudioPaLM's tokenizer recipe with an open encoder.

16 kHz audio -> SeamlessM4T fbank (160 dims, 50 Hz) -> conformer encoder up to ``layer`` ->
(for 25 Hz) mean of frame pairs -> standardised -> nearest of K centroids. The encoder runs
jitted with its parameters replicated and the batch sharded over all devices. There is no
decoder: turning these tokens back into audio needs an acoustic model.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import features as F
from .codebook_tokenizer import AudioItem, CodebookTokenizer, kmeans_config
from .kmeans import Codebook, KMeansConfig
from .w2v_bert import W2vBertConfig, W2vBertEncoder, load_hf_encoder, save_hf_encoder

ENCODER_DIR = "encoder"
DEFAULT_LAYER = 17  # other open AudioPaLM-style projects use w2v-BERT 2.0 layers 16-17
BASE_RATE = 50.0  # encoder frames per second (10 ms fbank hop, stacked by 2)


# Module-level jitted functions with the model structure as a static argument: every
# tokenizer instance with the same architecture shares the compiled code.
@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _features(graphdef, layer: int, frame_rate: float, state, x: jax.Array, lengths: jax.Array):
    """[B, N] 16 kHz audio -> [B, T, H] layer-``layer`` features at ``frame_rate``."""
    model = nnx.merge(graphdef, state)
    num_frames = int(F.num_fbank_frames(x.shape[1])) // 2 * 2
    inputs, mask = F.seamless_features(x, lengths, num_frames)  # [B, T, 160] at 50 Hz
    h = model(inputs, mask, num_layers=layer)[layer]  # [B, T, H]
    if frame_rate == BASE_RATE:
        return h
    # 25 Hz: the mean of the valid frames of each pair (a lone last frame stays itself).
    b, t, d = h.shape
    h = jnp.pad(jnp.where(mask[..., None], h, 0.0), ((0, 0), (0, t % 2), (0, 0)))
    m = jnp.pad(mask, ((0, 0), (0, t % 2))).astype(h.dtype)
    return h.reshape(b, -1, 2, d).sum(2) / jnp.maximum(m.reshape(b, -1, 2).sum(2), 1.0)[..., None]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _tokens(graphdef, layer, frame_rate, state, centroids, mean, std, x, lengths):
    """[B, N] 16 kHz audio -> [B, T] token ids."""
    feats = _features(graphdef, layer, frame_rate, state, x, lengths)
    return Codebook(centroids, mean, std).quantize(feats)


class W2vBertTokenizer(CodebookTokenizer):
    """k-means tokens over hidden states of a w2v-BERT 2.0 encoder layer (encode only)."""

    kind = "w2v_bert_kmeans"
    can_decode = False
    max_batch = 16
    max_batch_samples = 16000 * 160

    def __init__(
        self,
        encoder: W2vBertEncoder,
        codebook: Codebook | None = None,
        *,
        layer: int = DEFAULT_LAYER,
        frame_rate: float = 25.0,
        devices: list | None = None,
    ):
        super().__init__(codebook, devices)
        n = encoder.cfg.num_hidden_layers
        if not 0 <= layer <= n:
            raise ValueError(f"layer={layer} but the encoder has {n} layers (0 = projection)")
        if frame_rate not in (25.0, 50.0):
            raise ValueError(
                f"frame_rate must be 50 (encoder rate) or 25 (pairs averaged), got {frame_rate}"
            )
        self.layer, self._frame_rate = int(layer), float(frame_rate)
        self.encoder = encoder
        self._graphdef, state = nnx.split(encoder)
        self._state = self._sharder.replicate(state)
        nnx.update(encoder, self._state)  # hold the replicated copy only, not two
        self._digest: str | None = None

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str,
        codebook: Codebook | None = None,
        *,
        layer: int = DEFAULT_LAYER,
        frame_rate: float = 25.0,
        devices: list | None = None,
    ) -> W2vBertTokenizer:
        """Loads the encoder (only the layers up to ``layer``) from a local HF directory."""
        encoder = load_hf_encoder(checkpoint, num_layers=layer)
        return cls(encoder, codebook, layer=layer, frame_rate=frame_rate, devices=devices)

    @classmethod
    def fit(
        cls,
        audio: Sequence[AudioItem] | str,
        sample_rate: int | Sequence[int] | None = None,
        num_tokens: int = 1024,
        frame_rate: float = 25.0,
        seed: int = 0,
        *,
        checkpoint: str,
        layer: int = DEFAULT_LAYER,
        kmeans: KMeansConfig | dict | None = None,
        max_frames: int | None = None,
        progress: bool = False,
        devices: list | None = None,
    ) -> W2vBertTokenizer:
        """Fits the k-means codebook on encoder features of ``audio`` (arrays or paths)."""
        tok = cls.from_pretrained(checkpoint, layer=layer, frame_rate=frame_rate, devices=devices)
        tok.fit_codebook(
            audio,
            sample_rate,
            kmeans_config(num_tokens, seed, kmeans),
            max_frames=max_frames,
            progress=progress,
        )
        return tok

    # -- properties and hooks -------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        return self._frame_rate

    @property
    def sample_rate(self) -> int:
        return 16000

    @property
    def feature_dim(self) -> int:
        return self.encoder.cfg.hidden_size

    @property
    def min_samples(self) -> int:
        return F.FBANK_FRAME + F.FBANK_HOP  # two fbank frames make one encoder frame

    @property
    def length_multiple(self) -> int:
        return 4 * F.FBANK_HOP

    def token_lengths(self, num_samples: np.ndarray) -> np.ndarray:
        frames = F.num_fbank_frames(np.asarray(num_samples)) // 2  # encoder frames (50 Hz)
        return frames if self._frame_rate == BASE_RATE else -(-frames // 2)

    def _features_fn(self):
        static = (self._graphdef, self.layer, self._frame_rate)
        return lambda x, n: _features(*static, self._state, x, n)

    def _tokens_fn(self):
        static, cb = (self._graphdef, self.layer, self._frame_rate), self.codebook
        return lambda x, n: _tokens(*static, self._state, cb.centroids, cb.mean, cb.std, x, n)

    def decode(self, tokens: np.ndarray, lengths: np.ndarray | None = None) -> list[np.ndarray]:
        raise NotImplementedError(
            "W2vBertTokenizer cannot decode (can_decode is False): w2v-BERT k-means tokens "
            "carry content but not enough acoustics to invert; decoding them needs an acoustic "
            "model (SoundStorm / AudioLM-style, planned as later work). Use MelKMeansTokenizer "
            "when you need audio back."
        )

    # -- persistence ----------------------------------------------------------------------
    def _encoder_digest(self) -> str:
        if self._digest is None:
            h = hashlib.sha256()
            for path, leaf in sorted(
                jax.tree_util.tree_leaves_with_path(nnx.state(self.encoder)),
                key=lambda p: str(p[0]),
            ):
                h.update(str(path).encode())
                h.update(np.asarray(leaf).tobytes())
            self._digest = h.hexdigest()[:16]
        return self._digest

    def get_config(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "frame_rate": self._frame_rate,
            "encoder": self.encoder.cfg.to_hf(),
            "encoder_digest": self._encoder_digest(),
        }

    def get_arrays(self) -> dict[str, np.ndarray]:
        if self.codebook is None:
            raise RuntimeError("cannot save an unfitted tokenizer")
        return self.codebook.arrays()

    def save(self, directory: str) -> str:
        """Codebook as usual, plus the encoder (truncated to ``layer``) under ``encoder/``."""
        save_hf_encoder(self.encoder, os.path.join(directory, ENCODER_DIR))
        return super().save(directory)

    @classmethod
    def from_saved(cls, config, arrays, directory) -> W2vBertTokenizer:
        encoder = load_hf_encoder(os.path.join(directory, ENCODER_DIR))
        saved = W2vBertConfig.from_hf(config["encoder"])
        if saved != encoder.cfg:
            raise ValueError(f"{directory}: encoder/config.json disagrees with tokenizer.json")
        return cls(
            encoder,
            Codebook.from_arrays(arrays),
            layer=config["layer"],
            frame_rate=config["frame_rate"],
        )
