"""Flax NNX port of the w2v-BERT 2.0 conformer encoder (transformers' ``Wav2Vec2BertModel``).

Only the encoder stack is ported (feature projection + conformer layers), which is what
feature extraction for tokenization needs; the adapter, intermediate FFN and heads of a
checkpoint are ignored. Inputs are the 160-dim stacked fbank features of
:func:`audiopalm_jax.audio.features.seamless_features` at 50 Hz.

Every parameter carries logical axis names (``out_sharding``, formerly ``sharding_names``)
so a mesh rule set can shard it; each is created with ``eager_sharding=False``, so the
model builds without a mesh and without touching the global eager-sharding setting.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

log = logging.getLogger(__name__)

ACTIVATIONS = {
    "swish": jax.nn.silu,
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}
POSITION_TYPES = ("relative_key", "relative", "rotary", None)


@dataclasses.dataclass(frozen=True)
class W2vBertConfig:
    """The encoder fields of a Hugging Face ``Wav2Vec2BertConfig``."""

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    feature_projection_input_dim: int = 160
    hidden_act: str = "swish"
    layer_norm_eps: float = 1e-5
    position_embeddings_type: str | None = "relative_key"
    rotary_embedding_base: int = 10000
    left_max_position_embeddings: int = 64
    right_max_position_embeddings: int = 8
    conv_depthwise_kernel_size: int = 31

    @classmethod
    def from_hf(cls, d: dict[str, Any]) -> W2vBertConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in fields})
        if cfg.position_embeddings_type not in POSITION_TYPES:
            raise ValueError(
                f"unsupported position_embeddings_type {cfg.position_embeddings_type!r}"
            )
        if cfg.hidden_act not in ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {cfg.hidden_act!r}; have {list(ACTIVATIONS)}")
        return cfg

    def to_hf(self) -> dict[str, Any]:
        return {"model_type": "wav2vec2-bert", **dataclasses.asdict(self)}

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def _axes(*names: str) -> dict[str, Any]:
    """Variable metadata: logical axis names, placed lazily (no mesh needed to build)."""
    return {"out_sharding": names, "eager_sharding": False}


def _linear(din, dout, names, rngs, bias=True) -> nnx.Linear:
    return nnx.Linear(
        din, dout, use_bias=bias, rngs=rngs,
        kernel_metadata=_axes(*names), bias_metadata=_axes(*names[1:]),
    )  # fmt: skip


def _norm(dim, eps, rngs, name="embed") -> nnx.LayerNorm:
    # use_fast_variance=False: E[(x - mean)^2] as PyTorch computes it (parity at 1e-4).
    return nnx.LayerNorm(
        dim, epsilon=eps, use_fast_variance=False, rngs=rngs,
        scale_metadata=_axes(name), bias_metadata=_axes(name),
    )  # fmt: skip


class FeedForward(nnx.Module):
    def __init__(self, cfg: W2vBertConfig, rngs: nnx.Rngs):
        self.act = ACTIVATIONS[cfg.hidden_act]
        self.intermediate_dense = _linear(
            cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"), rngs
        )
        self.output_dense = _linear(cfg.intermediate_size, cfg.hidden_size, ("mlp", "embed"), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.output_dense(self.act(self.intermediate_dense(x)))


class ConvModule(nnx.Module):
    """Pointwise conv + GLU, causal depthwise conv, LayerNorm, activation, pointwise conv."""

    def __init__(self, cfg: W2vBertConfig, rngs: nnx.Rngs):
        h, k = cfg.hidden_size, cfg.conv_depthwise_kernel_size
        self.act = ACTIVATIONS[cfg.hidden_act]
        self.layer_norm = _norm(h, cfg.layer_norm_eps, rngs)
        self.pointwise_conv1 = _linear(h, 2 * h, ("embed", "conv"), rngs, bias=False)
        init = jax.nn.initializers.normal(1.0 / math.sqrt(k))
        self.depthwise_kernel = nnx.Param(
            init(rngs.params(), (k, h)), **_axes("conv_width", "conv")
        )  # [K, H]: out[t] = sum_j w[j] * x[t - K + 1 + j]
        self.depthwise_layer_norm = _norm(h, cfg.layer_norm_eps, rngs, name="conv")
        self.pointwise_conv2 = _linear(h, h, ("conv", "embed"), rngs, bias=False)

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        x = self.layer_norm(x)
        if mask is not None:  # padded frames must not leak into the convolution
            x = jnp.where(mask[..., None], x, 0.0)
        a, b = jnp.split(self.pointwise_conv1(x), 2, axis=-1)
        x = a * jax.nn.sigmoid(b)  # GLU over channels
        w = self.depthwise_kernel[...]
        k, t = w.shape[0], x.shape[1]
        xp = jnp.pad(x, ((0, 0), (k - 1, 0), (0, 0)))  # causal: pad on the left only

        # K shifted multiply-adds in a loop: ~10x faster on CPU than a grouped convolution,
        # and, unlike an unrolled sum, XLA cannot fuse (and recompute) it into the LayerNorm.
        def tap(j, acc):
            return acc + jax.lax.dynamic_slice_in_dim(xp, j, t, axis=1) * w[j]

        y = jax.lax.fori_loop(0, k, tap, jnp.zeros_like(x))
        return self.pointwise_conv2(self.act(self.depthwise_layer_norm(y)))


class SelfAttention(nnx.Module):
    def __init__(self, cfg: W2vBertConfig, rngs: nnx.Rngs):
        h, nh, d = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
        self.cfg = cfg
        self.linear_q = _linear(h, h, ("embed", "heads"), rngs)
        self.linear_k = _linear(h, h, ("embed", "heads"), rngs)
        self.linear_v = _linear(h, h, ("embed", "heads"), rngs)
        self.linear_out = _linear(h, h, ("heads", "embed"), rngs)
        if cfg.position_embeddings_type == "relative_key":
            n = cfg.left_max_position_embeddings + cfg.right_max_position_embeddings + 1
            self.distance_embedding = nnx.Embed(
                n, d, rngs=rngs, embedding_metadata=_axes("relpos", "kv")
            )
        elif cfg.position_embeddings_type == "relative":
            self.linear_pos = _linear(h, h, ("embed", "heads"), rngs, bias=False)
            init = jax.nn.initializers.xavier_uniform()
            self.pos_bias_u = nnx.Param(init(rngs.params(), (nh, d)), **_axes("heads", "kv"))
            self.pos_bias_v = nnx.Param(init(rngs.params(), (nh, d)), **_axes("heads", "kv"))

    def _heads(self, x: jax.Array) -> jax.Array:  # [B, T, H] -> [B, T, nh, d]
        return x.reshape(*x.shape[:2], self.cfg.num_attention_heads, self.cfg.head_dim)

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        cfg, (b, t, _) = self.cfg, x.shape
        scale = cfg.head_dim**-0.5
        qk_in = (
            _rotate(self._heads(x), cfg).reshape(x.shape)
            if cfg.position_embeddings_type == "rotary"
            else x
        )
        q, k, v = (
            self._heads(self.linear_q(qk_in)),
            self._heads(self.linear_k(qk_in)),
            self._heads(self.linear_v(x)),
        )
        bias = 0.0
        if cfg.position_embeddings_type == "relative_key":
            # Shaw et al.: q . E[clip(j - i)]. Score q against the few (left + right + 1)
            # distance embeddings, then gather, instead of building a [T, T, d] tensor.
            qe = jnp.einsum("bqhd,pd->bhqp", q, self.distance_embedding.embedding[...])
            dist = jnp.arange(t)[None, :] - jnp.arange(t)[:, None]
            idx = jnp.clip(
                dist, -cfg.left_max_position_embeddings, cfg.right_max_position_embeddings
            )
            idx = jnp.broadcast_to(
                idx + cfg.left_max_position_embeddings, (b, cfg.num_attention_heads, t, t)
            )
            bias = jnp.take_along_axis(qe, idx, axis=-1) * scale
        elif cfg.position_embeddings_type == "relative":
            # Transformer-XL: pe row p holds relative position T-1-p; key j of query i is row
            # T-1-i+j (the "skew" of the PyTorch code, written as a gather).
            pe = self._heads(
                self.linear_pos(jnp.asarray(_sinusoid_table(t, cfg.hidden_size))[None])
            )[0]
            bd = jnp.einsum("bqhd,phd->bhqp", q + self.pos_bias_v[...][None, None], pe)
            idx = (t - 1) - jnp.arange(t)[:, None] + jnp.arange(t)[None, :]
            bias = (
                jnp.take_along_axis(bd, jnp.broadcast_to(idx, bd.shape[:2] + (t, t)), axis=-1)
                * scale
            )
            q = q + self.pos_bias_u[...][None, None]
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale + bias
        if mask is not None:
            scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
        probs = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, -1)
        return self.linear_out(out)


def _rotate(x: jax.Array, cfg: W2vBertConfig) -> jax.Array:
    """Rotary embedding as the PyTorch port applies it (to the layer input, per head)."""
    d, t = cfg.head_dim, x.shape[1]
    inv_freq = 1.0 / (cfg.rotary_embedding_base ** (np.arange(0, d, 2, dtype=np.float32) / d))
    freqs = np.arange(t, dtype=np.float32)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)  # [T, d]
    cos, sin = jnp.asarray(np.cos(emb))[None, :, None], jnp.asarray(np.sin(emb))[None, :, None]
    rotated = jnp.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)
    return x * cos + rotated * sin


def _sinusoid_table(t: int, dim: int) -> np.ndarray:
    """[2T - 1, dim] sinusoids for relative positions T-1 ... -(T-1) (Transformer-XL)."""
    pos = np.arange(t, dtype=np.float32)[:, None]
    div = np.exp(np.arange(0, dim, 2, dtype=np.float32) * -(math.log(10000.0) / dim))
    pos_tab, neg_tab = np.zeros((t, dim), np.float32), np.zeros((t, dim), np.float32)
    pos_tab[:, 0::2], pos_tab[:, 1::2] = np.sin(pos * div), np.cos(pos * div)
    neg_tab[:, 0::2], neg_tab[:, 1::2] = np.sin(-pos * div), np.cos(-pos * div)
    return np.concatenate([pos_tab[::-1], neg_tab[1:]], axis=0)


class ConformerLayer(nnx.Module):
    def __init__(self, cfg: W2vBertConfig, rngs: nnx.Rngs):
        h, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.ffn1_layer_norm, self.ffn1 = _norm(h, eps, rngs), FeedForward(cfg, rngs)
        self.self_attn_layer_norm, self.self_attn = _norm(h, eps, rngs), SelfAttention(cfg, rngs)
        self.conv_module = ConvModule(cfg, rngs)
        self.ffn2_layer_norm, self.ffn2 = _norm(h, eps, rngs), FeedForward(cfg, rngs)
        self.final_layer_norm = _norm(h, eps, rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        x = x + 0.5 * self.ffn1(self.ffn1_layer_norm(x))
        x = x + self.self_attn(self.self_attn_layer_norm(x), mask)
        x = x + self.conv_module(x, mask)
        x = x + 0.5 * self.ffn2(self.ffn2_layer_norm(x))
        return self.final_layer_norm(x)


class W2vBertEncoder(nnx.Module):
    """Feature projection + conformer stack. ``__call__`` returns every hidden state."""

    def __init__(self, cfg: W2vBertConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d = cfg.feature_projection_input_dim
        self.feature_layer_norm = _norm(d, cfg.layer_norm_eps, rngs, name="features")
        self.feature_projection = _linear(d, cfg.hidden_size, ("features", "embed"), rngs)
        self.layers = nnx.List([ConformerLayer(cfg, rngs) for _ in range(cfg.num_hidden_layers)])

    def __call__(
        self, features: jax.Array, mask: jax.Array | None = None, num_layers: int | None = None
    ) -> list[jax.Array]:
        """[B, T, 160] features, [B, T] bool mask -> [h_0, ..., h_L], each [B, T, H].

        ``h_0`` is the projected input and ``h_i`` the output of layer ``i``, as the
        ``hidden_states`` of the PyTorch model; ``num_layers`` stops early.
        """
        x = self.feature_projection(self.feature_layer_norm(features))
        if mask is not None:
            x = jnp.where(mask[..., None], x, 0.0)
        hidden = [x]
        for layer in self.layers[
            : self.cfg.num_hidden_layers if num_layers is None else num_layers
        ]:
            x = layer(x, mask)
            hidden.append(x)
        return hidden


# -- Hugging Face checkpoints -------------------------------------------------------------------


# How a PyTorch tensor maps to ours, both ways: torch Linear stores [out, in], Conv1d
# [out, in / groups, kernel].
_TO_OURS = {
    "same": lambda w: w,
    "linear": lambda w: w.T,
    "conv1x1": lambda w: w[:, :, 0].T,  # [out, in, 1] -> [in, out]
    "depthwise": lambda w: w[:, 0, :].T,  # [H, 1, K] -> [K, H]
}
_TO_HF = {
    "same": lambda w: w,
    "linear": lambda w: w.T,
    "conv1x1": lambda w: w.T[:, :, None],
    "depthwise": lambda w: w.T[:, None, :],
}


def _hf_targets(model: W2vBertEncoder) -> dict[str, tuple[nnx.Variable, str]]:
    """HF parameter name -> (our variable, layout key of ``_TO_OURS`` / ``_TO_HF``)."""
    out: dict[str, tuple[nnx.Variable, str]] = {}

    def add_linear(prefix: str, m: nnx.Linear, layout: str = "linear"):
        out[f"{prefix}.weight"] = (m.kernel, layout)
        if m.bias is not None:
            out[f"{prefix}.bias"] = (m.bias, "same")

    def add_norm(prefix: str, m: nnx.LayerNorm):
        out[f"{prefix}.weight"], out[f"{prefix}.bias"] = (m.scale, "same"), (m.bias, "same")

    add_norm("feature_projection.layer_norm", model.feature_layer_norm)
    add_linear("feature_projection.projection", model.feature_projection)
    for i, layer in enumerate(model.layers):
        p = f"encoder.layers.{i}"
        for name in ("ffn1", "ffn2"):
            add_norm(f"{p}.{name}_layer_norm", getattr(layer, f"{name}_layer_norm"))
            add_linear(f"{p}.{name}.intermediate_dense", getattr(layer, name).intermediate_dense)
            add_linear(f"{p}.{name}.output_dense", getattr(layer, name).output_dense)
        add_norm(f"{p}.self_attn_layer_norm", layer.self_attn_layer_norm)
        add_norm(f"{p}.final_layer_norm", layer.final_layer_norm)
        att = layer.self_attn
        for name in ("linear_q", "linear_k", "linear_v", "linear_out"):
            add_linear(f"{p}.self_attn.{name}", getattr(att, name))
        if hasattr(att, "distance_embedding"):
            emb = att.distance_embedding.embedding
            out[f"{p}.self_attn.distance_embedding.weight"] = (emb, "same")
        if hasattr(att, "linear_pos"):
            add_linear(f"{p}.self_attn.linear_pos", att.linear_pos)
            out[f"{p}.self_attn.pos_bias_u"] = (att.pos_bias_u, "same")
            out[f"{p}.self_attn.pos_bias_v"] = (att.pos_bias_v, "same")
        conv = layer.conv_module
        add_norm(f"{p}.conv_module.layer_norm", conv.layer_norm)
        add_norm(f"{p}.conv_module.depthwise_layer_norm", conv.depthwise_layer_norm)
        add_linear(f"{p}.conv_module.pointwise_conv1", conv.pointwise_conv1, "conv1x1")
        add_linear(f"{p}.conv_module.pointwise_conv2", conv.pointwise_conv2, "conv1x1")
        out[f"{p}.conv_module.depthwise_conv.weight"] = (conv.depthwise_kernel, "depthwise")
    return out


def load_hf_encoder(path: str, num_layers: int | None = None) -> W2vBertEncoder:
    """Loads a local HF ``Wav2Vec2BertModel`` directory (config.json + *.safetensors).

    ``num_layers`` keeps only the first layers (enough for features from that depth).
    """
    from safetensors.numpy import load_file

    cfg_path = os.path.join(path, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{path!r} is not a Hugging Face checkpoint dir (no config.json)")
    with open(cfg_path) as f:
        cfg = W2vBertConfig.from_hf(json.load(f))
    if num_layers is not None:
        if not 0 <= num_layers <= cfg.num_hidden_layers:
            raise ValueError(f"num_layers={num_layers}; the checkpoint has {cfg.num_hidden_layers}")
        cfg = dataclasses.replace(cfg, num_hidden_layers=num_layers)
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {path!r} (PyTorch .bin is not read)")
    weights: dict[str, np.ndarray] = {}
    for name in files:
        for k, v in load_file(os.path.join(path, name)).items():
            # Checkpoints of task models nest the encoder under "wav2vec2_bert.".
            weights[k.removeprefix("wav2vec2_bert.")] = v

    model = nnx.eval_shape(lambda: W2vBertEncoder(cfg, rngs=nnx.Rngs(0)))
    targets = _hf_targets(model)
    missing = sorted(set(targets) - set(weights))
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {len(missing)} weights, e.g. {missing[:3]}")
    for name, (var, layout) in targets.items():
        value = _TO_OURS[layout](np.asarray(weights[name], np.float32))
        if value.shape != var.shape:
            raise ValueError(f"{name}: checkpoint shape {value.shape}, model expects {var.shape}")
        var.set_value(jnp.asarray(value))
    unused = sorted(set(weights) - set(targets))
    if unused:
        log.info("w2v-BERT: ignored %d checkpoint tensors (e.g. %s)", len(unused), unused[:3])
    return model


def save_hf_encoder(model: W2vBertEncoder, path: str) -> str:
    """Writes ``model`` as a HF-style directory (config.json + model.safetensors)."""
    from safetensors.numpy import save_file

    os.makedirs(path, exist_ok=True)
    arrays = {}
    for name, (var, layout) in _hf_targets(model).items():
        arrays[name] = np.ascontiguousarray(_TO_HF[layout](np.asarray(var.get_value())))
    save_file(arrays, os.path.join(path, "model.safetensors"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(model.cfg.to_hf(), f, indent=2)
    return path
