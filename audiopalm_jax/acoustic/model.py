"""The acoustic stage: semantic audio tokens + a voice prompt -> log-mel frames.

AudioPaLM turns its language model's audio tokens into speech with a separate stage
conditioned on 3 s of the source speaker (AudioLM's stages 2-3, SoundStorm). Here it is
a small non-autoregressive Transformer over one sequence

    [ prompt: the voice prompt's log-mel, one position per token frame | the units ]

with bidirectional attention (the decoder's own blocks, every position in the prefix),
regressing each unit's ``stack`` log-mel frames. The units carry what is said (they are
speaker-normalised, so they carry little voice); the prompt carries who says it. The
predicted log-mel goes through the tokenizer's weight-free Griffin-Lim synthesis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from audiopalm_jax.model import ModelConfig, Transformer
from audiopalm_jax.model.config import from_known_keys
from audiopalm_jax.model.layers import dense
from audiopalm_jax.sharding import constrain

_ACT = ("activation_batch", "activation_length", "activation_embed")


@dataclasses.dataclass(frozen=True)
class AcousticConfig:
    """Sizes of the acoustic stage and the features it reads and writes (saved as JSON).

    ``num_tokens`` / ``token_rate``: the semantic tokenizer's vocabulary and frame rate
    (any tokenizer: mel k-means, w2v-BERT). The output is ``n_mels`` log-mel bins every
    ``hop_length`` samples at ``sample_rate``, ``stack`` such frames per token.
    """

    num_tokens: int
    token_rate: float = 25.0
    sample_rate: int = 16000
    hop_length: int = 320
    n_mels: int = 80
    prompt_seconds: float = 3.0  # AudioPaLM: the first 3 s of the source, repeated if shorter
    max_tokens: int = 256  # longest unit sequence one call takes (longer: split)
    d_model: int = 192
    num_layers: int = 3
    num_heads: int = 4
    head_dim: int = 48
    mlp_dim: int = 768

    def __post_init__(self):
        for name in ("num_tokens", "max_tokens", "d_model", "num_layers", "n_mels"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"acoustic.{name}={getattr(self, name)} must be > 0")
        if self.prompt_seconds <= 0:
            raise ValueError(f"acoustic.prompt_seconds={self.prompt_seconds} must be > 0")
        base = self.sample_rate / self.hop_length
        if self.token_rate <= 0 or abs(base / self.token_rate - round(base / self.token_rate)):
            raise ValueError(
                f"token_rate={self.token_rate} Hz must divide the mel frame rate {base:g} Hz "
                "(sample_rate / hop_length) by a whole number"
            )

    @property
    def stack(self) -> int:
        """Mel frames per token."""
        return int(round(self.sample_rate / self.hop_length / self.token_rate))

    @property
    def prompt_tokens(self) -> int:
        """Prompt positions: the prompt's length in token frames."""
        return int(round(self.prompt_seconds * self.token_rate))

    @property
    def samples_per_token(self) -> int:
        return self.stack * self.hop_length

    @property
    def frame_dim(self) -> int:
        """Features per position: ``stack`` log-mel frames."""
        return self.stack * self.n_mels

    def backbone(self) -> ModelConfig:
        """The decoder configuration whose blocks the stage runs (vocab: the units + pad)."""
        return ModelConfig(
            vocab_size=self.num_tokens + 1,
            d_model=self.d_model,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            num_kv_heads=self.num_heads,
            head_dim=self.head_dim,
            mlp_dim=self.mlp_dim,
            scale_embeddings=True,
            embed_init_std=self.d_model**-0.5,
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AcousticConfig:
        return from_known_keys(cls, d, "acoustic")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _param(init, rngs: nnx.Rngs, shape: tuple[int, ...], names: tuple[str | None, ...]):
    return nnx.Param(init(rngs.params(), shape, jnp.float32), out_sharding=names)


class AcousticModel(nnx.Module):
    """(units, unit mask, prompt log-mel) -> normalised log-mel per unit."""

    def __init__(self, cfg: AcousticConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.backbone = Transformer(cfg.backbone(), rngs=rngs)
        fan_in = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
        self.prompt_in = _param(fan_in, rngs, (cfg.frame_dim, cfg.d_model), ("mel", "embed"))
        # Which part of the sequence a position is in: 0 prompt, 1 units.
        self.part = _param(nnx.initializers.normal(0.02), rngs, (2, cfg.d_model), (None, "embed"))
        self.mel_out = _param(
            nnx.initializers.zeros_init(), rngs, (cfg.d_model, cfg.frame_dim), ("embed", "mel")
        )
        self.mel_bias = _param(nnx.initializers.zeros_init(), rngs, (cfg.frame_dim,), ("mel",))

    def __call__(
        self,
        units: jax.Array,  # [batch, T] int, padding = num_tokens
        unit_mask: jax.Array,  # [batch, T] bool
        prompt: jax.Array,  # [batch, P, frame_dim] normalised log-mel
        prompt_mask: jax.Array,  # [batch, P] bool
    ) -> jax.Array:
        """Returns [batch, T, frame_dim] normalised log-mel (zeros where ``unit_mask`` is 0)."""
        b, t = units.shape
        p = prompt.shape[1]
        x_prompt = dense(prompt, self.prompt_in[...], 1, "xla") + self.part[0]
        x_units = self.backbone.embedder.encode(units) + self.part[1]
        x = constrain(jnp.concatenate([x_prompt, x_units], axis=1), _ACT)  # [b, P + T, d]
        valid = jnp.concatenate([prompt_mask, unit_mask], axis=1)
        positions = jnp.broadcast_to(jnp.arange(p + t, dtype=jnp.int32), (b, p + t))
        h, _ = self.backbone.hidden_states(
            None,
            positions,
            segment_ids=valid.astype(jnp.int32),
            prefix_mask=valid.astype(jnp.int32),  # bidirectional over the whole sequence
            inputs_embeds=x,
        )
        out = dense(h[:, p:], self.mel_out[...], 1, "xla") + self.mel_bias[...]
        return jnp.where(unit_mask[..., None], out, 0.0)
