"""Hyper-parameters of the decoder-only Transformer."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from audiopalm_jax.positions import PositionScheme

MLP_TYPES = ("swiglu", "geglu")
WEIGHT_GRADS = ("auto", "explicit_transpose", "xla")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "save_attention_out")


def from_known_keys(cls, d: Mapping[str, Any], what: str):
    """``cls(**d)`` for a dataclass, with a one-line error naming keys it does not have."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {what} config keys {unknown}; known: {sorted(known)}")
    return cls(**dict(d))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Knobs that express PaLM-, Llama-, Qwen2- and Gemma-style decoders.

    ``mlp_type``: ``swiglu`` (Llama, Qwen2, PaLM) or ``geglu`` (Gemma, tanh GELU).
    ``norm_plus_one``: Gemma's RMSNorm that scales by ``1 + w``.
    ``scale_embeddings``: Gemma's ``sqrt(d_model)`` factor on input embeddings.
    ``parallel_block``: PaLM's ``x + attn(norm(x)) + mlp(norm(x))``.
    ``qkv_bias``: Qwen2's biases on the q/k/v projections (no other biases anywhere).
    ``embed_init_std``: 0.02 is HF Llama's, whose block weights are also std 0.02; ours are
    fan-in scaled (block outputs ~unit scale), so a model trained from scratch wants
    unit-scale inputs: ``scale_embeddings=True`` with ``embed_init_std=d_model**-0.5``
    (unit inputs and unit logits when tied), as ``configs/demo.py`` does. At 0.02 the
    token signal starts ~50x below the blocks' and learning to read the input is slow.
    ``attention_chunk_length``: > 0 computes attention that many queries at a time,
    each chunk recomputed in the backward pass, so the f32 [batch, heads, length, length]
    scores never exist whole (docs/pod_readiness.md); decoding's prompt prefill too.
    0: all queries at once.
    ``position_scheme``: ``sequential`` (token k at RoPE position k; HF checkpoints) or
    ``aligned`` (positions measure time across text and audio, ``text_position_step`` and
    ``audio_position_step`` per token; an output in the source's language restarts at
    the source's start, a translation starts past it: :mod:`audiopalm_jax.positions`).
    The data pipeline and the decoder compute them; the Transformer only reads them.
    ``weight_grad``: how the dense projections' weight gradients ``x^T @ dy`` are laid
    out. ``explicit_transpose`` transposes the smaller of ``x`` and ``dy`` as a copy
    first; ``xla`` leaves it to XLA, whose CPU layout pass may transpose the larger one
    inside a slow fusion instead (the MLP's gate and up projections); ``auto``:
    ``explicit_transpose`` on CPU, ``xla`` on accelerators, whose matmuls read transposed
    operands directly.
    """

    vocab_size: int
    d_model: int = 512
    num_layers: int = 8
    num_heads: int = 8
    num_kv_heads: int = 8
    head_dim: int = 64
    mlp_dim: int = 2048
    mlp_type: str = "swiglu"
    norm_eps: float = 1e-6
    norm_plus_one: bool = False
    rope_theta: float = 10_000.0
    parallel_block: bool = False
    tie_embeddings: bool = True
    scale_embeddings: bool = False
    qkv_bias: bool = False
    query_scale: float | None = None  # default head_dim ** -0.5
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    dropout_rate: float = 0.0
    embed_init_std: float = 0.02
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    scan_layers: bool = True
    remat_policy: str = "none"
    attention_chunk_length: int = 0  # > 0: attention this many queries at a time
    position_scheme: str = "sequential"
    weight_grad: str = "auto"
    text_position_step: int = 4  # aligned scheme only
    audio_position_step: int = 3

    def __post_init__(self):
        if self.mlp_type not in MLP_TYPES:
            raise ValueError(f"mlp_type={self.mlp_type!r}; allowed: {', '.join(MLP_TYPES)}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(
                f"remat_policy={self.remat_policy!r}; allowed: {', '.join(REMAT_POLICIES)}"
            )
        if self.weight_grad not in WEIGHT_GRADS:
            raise ValueError(
                f"weight_grad={self.weight_grad!r}; allowed: {', '.join(WEIGHT_GRADS)}"
            )
        PositionScheme.of(self)  # validates the scheme and its steps
        if self.attention_chunk_length < 0:
            raise ValueError(
                f"attention_chunk_length={self.attention_chunk_length} must be >= 0 (0: off)"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        return from_known_keys(cls, d, "model")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameter count, computed from the dimensions (no model is built)."""
        d, h, kv, hd, f = (
            self.d_model,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
            self.mlp_dim,
        )
        attn = d * hd * (2 * h + 2 * kv) + (hd * (h + 2 * kv) if self.qkv_bias else 0)
        mlp = 3 * d * f
        norms = d if self.parallel_block else 2 * d
        per_layer = attn + mlp + norms
        total = self.num_layers * per_layer + d
        if include_embeddings:
            total += self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return total

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward = 3x forward), MaxText-style.

        Counts matmuls only: 6 * (non-embedding matmul params + output projection)
        plus the attention scores and values, 12 * layers * heads * head_dim * seq_len
        (halved for the causal mask, as MaxText and PaLM's MFU do not).
        """
        d, h, kv, hd, f = (
            self.d_model,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
            self.mlp_dim,
        )
        matmul_params = self.num_layers * (d * hd * (2 * h + 2 * kv) + 3 * d * f)
        matmul_params += d * self.vocab_size  # logits
        attention = 12 * self.num_layers * h * hd * seq_len
        return 6.0 * matmul_params + attention
