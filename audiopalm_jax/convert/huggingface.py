"""Import Hugging Face Llama / Qwen2 / Gemma checkpoints (safetensors) into our params.

AudioPaLM starts from a text LLM and appends fresh audio rows to its embedding matrix;
:func:`extend_vocab` does that step.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import jax
import numpy as np

from audiopalm_jax.model.config import ModelConfig

SUPPORTED = ("llama", "qwen2", "gemma", "mistral")


def model_config_from_hf(hf: dict[str, Any], **overrides: Any) -> ModelConfig:
    """Our ModelConfig from a HF ``config.json`` dict."""
    kind = hf.get("model_type")
    if kind not in SUPPORTED:
        raise ValueError(f"model_type={kind!r} is not supported; supported: {', '.join(SUPPORTED)}")
    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", scaling.get("rope_type", "default"))
    if rope_type not in ("default", None):
        raise ValueError(f"rope_type={rope_type!r} is not supported; only 'default' RoPE")
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    act = hf.get("hidden_activation") or hf.get("hidden_act", "silu")
    gemma = kind == "gemma"
    cfg = dict(
        vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=head_dim,
        mlp_dim=hf["intermediate_size"],
        mlp_type="geglu" if "gelu" in act else "swiglu",
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        norm_plus_one=gemma,
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0))),
        tie_embeddings=bool(hf.get("tie_word_embeddings", gemma)),
        scale_embeddings=gemma,
        qkv_bias=kind == "qwen2" or bool(hf.get("attention_bias", False)),
    )
    cfg.update(overrides)
    return ModelConfig.from_dict(cfg)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    # safetensors.flax reads bf16 (safetensors.numpy cannot); we keep host numpy in f32.
    from safetensors.flax import load_file

    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise FileNotFoundError(
            f"no *.safetensors in {path!r}; convert .bin checkpoints to safetensors first "
            "(this project never loads pickled weights)"
        )
    out: dict[str, np.ndarray] = {}
    for f in files:
        for k, v in load_file(f).items():
            out[k] = np.asarray(v.astype(np.float32) if v.dtype != np.float32 else v)
    return out


def params_from_hf_tensors(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, Any]:
    """Maps HF tensor names to our (scanned or unrolled) parameter tree."""
    d, h, kv, hd = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        if name not in tensors:
            raise KeyError(f"checkpoint has no tensor {name!r}")
        used.add(name)
        return tensors[name]

    def layer(i: int) -> dict[str, Any]:
        p = f"model.layers.{i}."
        attn = {
            "q": get(p + "self_attn.q_proj.weight").T.reshape(d, h, hd),
            "k": get(p + "self_attn.k_proj.weight").T.reshape(d, kv, hd),
            "v": get(p + "self_attn.v_proj.weight").T.reshape(d, kv, hd),
            "o": get(p + "self_attn.o_proj.weight").T.reshape(h, hd, d),
        }
        if cfg.qkv_bias:
            attn["q_bias"] = get(p + "self_attn.q_proj.bias").reshape(h, hd)
            attn["k_bias"] = get(p + "self_attn.k_proj.bias").reshape(kv, hd)
            attn["v_bias"] = get(p + "self_attn.v_proj.bias").reshape(kv, hd)
        block = {
            "attn": attn,
            "attn_norm": {"scale": get(p + "input_layernorm.weight")},
            "mlp": {
                "gate": get(p + "mlp.gate_proj.weight").T,
                "up": get(p + "mlp.up_proj.weight").T,
                "down": get(p + "mlp.down_proj.weight").T,
            },
        }
        if not cfg.parallel_block:
            block["mlp_norm"] = {"scale": get(p + "post_attention_layernorm.weight")}
        return block

    layers = [layer(i) for i in range(cfg.num_layers)]
    if cfg.scan_layers:
        blocks: Any = jax.tree.map(lambda *xs: np.stack(xs), *layers)
    else:
        blocks = {i: lay for i, lay in enumerate(layers)}
    params: dict[str, Any] = {
        "embedder": {"embedding": get("model.embed_tokens.weight")},
        "blocks": blocks,
        "final_norm": {"scale": get("model.norm.weight")},
    }
    if not cfg.tie_embeddings:
        params["lm_head"] = get("lm_head.weight").T
    leftover = sorted(k for k in set(tensors) - used if not k.endswith("rotary_emb.inv_freq"))
    if leftover:
        raise ValueError(f"checkpoint tensors not mapped to any parameter: {leftover[:8]}")
    dtype = np.dtype(cfg.param_dtype) if cfg.param_dtype != "bfloat16" else None
    if dtype is not None:
        params = jax.tree.map(lambda x: np.asarray(x, dtype), params)
    return params


def load_hf_checkpoint(path: str, **overrides: Any) -> tuple[ModelConfig, dict[str, Any]]:
    """(ModelConfig, host params) from a local HF model directory (config.json + safetensors).

    ``overrides`` change ModelConfig fields that do not alter the weights (dtype,
    scan_layers, remat_policy, dropout_rate ...).
    """
    config_path = os.path.join(path, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"no config.json in {path!r}; expected a HF model directory")
    with open(config_path) as f:
        hf = json.load(f)
    cfg = model_config_from_hf(hf, **overrides)
    return cfg, params_from_hf_tensors(_read_safetensors(path), cfg)


def extend_vocab(
    params: dict[str, Any], cfg: ModelConfig, vocab_size: int, seed: int = 0
) -> tuple[ModelConfig, dict[str, Any]]:
    """Appends fresh rows (audio tokens + padding) to the embedding (and lm_head).

    New rows are drawn from a normal with the existing rows' mean and std per dimension,
    so their norms match the text embeddings' (AudioPaLM trains them from there).
    """
    old = cfg.vocab_size
    if vocab_size < old:
        raise ValueError(f"vocab_size={vocab_size} is smaller than the checkpoint's {old}")
    rng = np.random.default_rng(seed)
    emb = np.asarray(params["embedder"]["embedding"])
    new_rows = rng.normal(emb.mean(0), emb.std(0), (vocab_size - old, emb.shape[1]))
    params = dict(params)
    params["embedder"] = {"embedding": np.concatenate([emb, new_rows.astype(emb.dtype)])}
    if "lm_head" in params:
        head = np.asarray(params["lm_head"])
        cols = rng.normal(
            head.mean(1, keepdims=True),
            head.std(1, keepdims=True),
            (head.shape[0], vocab_size - old),
        )
        params["lm_head"] = np.concatenate([head, cols.astype(head.dtype)], axis=1)
    import dataclasses

    return dataclasses.replace(cfg, vocab_size=vocab_size), params
