"""AudioPaLM-style 1B: a TinyLlama-1.1B-shaped decoder over text + 1024 audio tokens.

Dims match TinyLlama-1.1B (d_model 2048, 22 layers, 32 heads x 64, GQA with 4 KV
heads, SwiGLU 5632, untied embeddings, Llama-2 32k text vocabulary), so
``--config.init_from=/path/to/TinyLlama-1.1B`` (with the same tokenizer as
``vocab.text_tokenizer``) starts from it; the 1024 audio rows are added at init.

Meant for ``config.topology = "v5e:4x4"`` (v5e-16: 16 chips x 16 GiB HBM), mesh
fsdp=16 (data=1, tensor=1): f32 params + f32 grads (~9 GB) shard to ~0.6 GiB a chip,
Adafactor's factored statistics are negligible, and 4 sequences x 2048 tokens a chip
with full remat leave most of the 16 GiB for activations and XLA temporaries
(measured: ``audiopalm compile --config configs/audiopalm_1b.py``; see
docs/pod_readiness.md). Bigger v5e slices: keep fsdp=-1 and raise ``data.batch_size``
with the chip count. Data: synthetic until a real ``data`` section is set.
"""

from audiopalm_jax.train.config import base_config, palm_adafactor


def get_config():
    c = base_config()
    c.topology = "v5e:4x4"
    c.num_train_steps = 100_000
    c.log_every_steps = 50
    c.checkpoint_every_steps = 2000
    c.model.update(
        d_model=2048,
        num_layers=22,
        num_heads=32,
        num_kv_heads=4,
        head_dim=64,
        mlp_dim=5632,
        mlp_type="swiglu",
        norm_eps=1e-5,
        rope_theta=10_000.0,
        tie_embeddings=False,
        dtype="bfloat16",  # compute
        param_dtype="float32",
        scan_layers=True,
        # Recompute each block in the backward pass: activations stay at one [b, l, d]
        # input per layer, which the materialised [b, h, l, l] attention needs.
        remat_policy="full",
    )
    # Llama-2 SentencePiece vocabulary: 32000 text + 1024 audio + separator, padded to
    # 128 -> 33152 rows. text_vocab_size lets `audiopalm compile` size the embedding
    # without the tokenizer files; it must match vocab.text_tokenizer when training.
    c.vocab.update(text_tokenizer="hf/TinyLlama-1.1B", num_audio_tokens=1024, pad_to_multiple=128)
    c.vocab.text_vocab_size = 32_000
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    c.optimizer.update(palm_adafactor(learning_rate=5e-4))
    c.data.update(source="synthetic", batch_size=64, seq_len=2048)
    return c
