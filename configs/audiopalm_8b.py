"""AudioPaLM-style 8B: a Llama-3-8B-shaped decoder over text + 1024 audio tokens.

Dims match Llama-3-8B (d_model 4096, 32 layers, 32 heads x 128, GQA with 8 KV heads,
SwiGLU 14336, RoPE theta 500k, untied embeddings, 128256 text tokens), so
``--config.init_from=/path/to/Meta-Llama-3-8B`` starts from it; AudioPaLM started from
PaLM-2 8B the same way. 8.0B params + 2 x 1025 x 4096 audio/separator embedding rows.

Meant for ``config.topology = "v5p:4x4x4"`` (v5p-128: 64 chips x 95 GiB HBM), mesh
fsdp=64 (data=1, tensor=1): f32 params + f32 grads (~64 GB) shard to ~1 GiB a chip,
Adafactor's factored statistics are negligible; 4 sequences x 2048 tokens a chip
(global batch 256 = 524k tokens) with full remat. The measured per-chip memory,
roofline and the smallest slices it fits are in docs/pod_readiness.md
(``audiopalm compile --config configs/audiopalm_8b.py``). Multi-slice: set
mesh.dcn_data to the slice count and scale data.batch_size with it.
Data: synthetic until a real ``data`` section is set.
"""

from audiopalm_jax.train.config import base_config, palm_adafactor


def get_config():
    c = base_config()
    c.topology = "v5p:4x4x4"
    c.num_train_steps = 100_000
    c.log_every_steps = 50
    c.checkpoint_every_steps = 1000
    c.model.update(
        d_model=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        mlp_dim=14336,
        mlp_type="swiglu",
        norm_eps=1e-5,
        rope_theta=500_000.0,
        tie_embeddings=False,
        dtype="bfloat16",  # compute
        param_dtype="float32",
        scan_layers=True,
        # Recompute each block in the backward pass: the materialised [b, h, l, l]
        # attention is too big to keep for 32 layers.
        remat_policy="full",
    )
    # Llama-3 tiktoken-style vocabulary: 128256 text + 1024 audio + separator, padded
    # to 128 -> 129408 rows. text_vocab_size lets `audiopalm compile` size the
    # embedding without the tokenizer; it must match vocab.text_tokenizer (a HF model
    # directory, e.g. the one given to init_from) when training.
    c.vocab.update(text_tokenizer="hf/Meta-Llama-3-8B", num_audio_tokens=1024, pad_to_multiple=128)
    c.vocab.text_vocab_size = 128_256
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    c.optimizer.update(palm_adafactor(learning_rate=1e-4))
    c.data.update(source="synthetic", batch_size=256, seq_len=2048)
    return c
