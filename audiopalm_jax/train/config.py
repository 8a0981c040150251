"""The schema every training config starts from; config files override what they need.

Config files (``configs/*.py``) call :func:`base_config` and change values, so every
config has every key and ``--config.key=value`` overrides are type-checked against it.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from audiopalm_jax.acoustic.train import config_defaults as acoustic_defaults
from audiopalm_jax.sharding import DEFAULT_RULES


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """A config file's ``get_config()``, as ``--config`` reads it (for scripts and tests)."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"config_{name}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no config file at {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_train_steps = 1000
    c.log_every_steps = 10
    c.checkpoint_every_steps = 200
    c.keep_checkpoints = 3
    c.async_checkpointing = True
    c.eval_every_steps = 0  # 0: no periodic eval
    c.eval_batches = 4
    c.best_metric = ""  # e.g. "eval/loss": also keep the best checkpoint by it
    c.best_mode = "min"
    c.z_loss = 1e-4
    # > 0: logits and loss over this many positions at a time (must divide data.seq_len),
    # recomputed in the backward pass, so [batch, seq, vocab] f32 logits never exist whole.
    c.loss_chunk_length = 0
    c.init_from = ""  # a HF model directory (Llama/Qwen2/Gemma) to start from
    c.peak_flops_per_device = 0.0  # 0: from a table by device kind, or measured on CPU
    c.topology = ""  # TPU topology the config is meant for, e.g. "v5p:4x4x4"

    c.model = ml_collections.ConfigDict(
        dict(
            d_model=512,
            num_layers=8,
            num_heads=8,
            num_kv_heads=8,
            head_dim=64,
            mlp_dim=2048,
            mlp_type="swiglu",
            norm_eps=1e-6,
            norm_plus_one=False,
            rope_theta=10_000.0,
            parallel_block=False,
            tie_embeddings=True,
            scale_embeddings=False,
            qkv_bias=False,
            dropout_rate=0.0,
            embed_init_std=0.02,
            dtype="float32",
            param_dtype="float32",
            scan_layers=True,
            remat_policy="none",
            # > 0: attention this many queries at a time, recomputed in the backward
            # pass, so [batch, heads, seq, seq] f32 scores never exist whole.
            attention_chunk_length=0,
            # "aligned": RoPE positions measure time across text and audio; an output in
            # the source's language restarts at the source's start, a translation starts
            # past it (audiopalm_jax/positions.py).
            position_scheme="sequential",
            text_position_step=4,
            audio_position_step=3,
        )
    )
    # Optional fields of ModelConfig that are None by default.
    c.model.query_scale = ml_collections.FieldReference(None, field_type=float)
    c.model.attn_logit_softcap = ml_collections.FieldReference(None, field_type=float)
    c.model.final_logit_softcap = ml_collections.FieldReference(None, field_type=float)

    c.vocab = ml_collections.ConfigDict(
        dict(text_tokenizer="char", chars="", num_audio_tokens=1024, pad_to_multiple=128)
    )
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, dcn_data=1, dcn_fsdp=1))
    c.sharding_rules = tuple(tuple(r) for r in DEFAULT_RULES)  # tuples: overridable
    c.optimizer = ml_collections.ConfigDict(
        dict(
            name="adamw",  # or "adafactor", "muon" (Muon on matrices, AdamW on the rest)
            learning_rate=1e-3,
            schedule="cosine",
            warmup_steps=100,
            decay_steps=0,  # 0: until num_train_steps
            end_learning_rate=1e-5,
            b1=0.9,
            b2=0.95,
            eps=1e-8,
            weight_decay=0.1,
            decay_norms_and_embeddings=False,
            clip_norm=1.0,
            grad_accum_steps=1,
            decay_rate=0.8,  # Adafactor
            momentum=0.0,  # Adafactor; 0: none
            multiply_by_parameter_scale=False,
            min_dim_size_to_factor=128,
            muon_momentum=0.95,  # Muon (matrices; the rest is AdamW with b1, b2)
            muon_ns_steps=5,  # Newton-Schulz iterations per update
        )
    )
    c.data = ml_collections.ConfigDict(dict(source="synthetic", batch_size=8, seq_len=128))
    # The acoustic stage (units + a 3 s voice prompt -> speech), trained by `audiopalm
    # train` after `prepare` when enabled: sizes and training keys of audiopalm_jax/acoustic.
    c.acoustic = ml_collections.ConfigDict(acoustic_defaults())
    c.distributed = ml_collections.ConfigDict(
        dict(auto=False, coordinator_address="", num_processes=1, process_id=0)
    )
    return c


def palm_adafactor(learning_rate: float, warmup_steps: int = 2_000) -> dict:
    """AudioPaLM's optimizer (PaLM's): Adafactor with factored second moments and no
    momentum, an inverse-square-root schedule, update clipping, no weight decay."""
    return dict(
        name="adafactor",
        learning_rate=learning_rate,
        schedule="rsqrt",
        warmup_steps=warmup_steps,
        weight_decay=0.0,
        clip_norm=1.0,
        decay_rate=0.8,
        momentum=0.0,
        grad_accum_steps=1,
    )
