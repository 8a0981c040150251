"""Tiny model on synthetic data: tests and smoke runs, seconds on a CPU."""

from audiopalm_jax.train.config import base_config


def get_config():
    c = base_config()
    c.num_train_steps = 20
    c.log_every_steps = 5
    c.checkpoint_every_steps = 10
    c.model.update(d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=128)
    c.vocab.num_audio_tokens = 64
    c.optimizer.update(learning_rate=3e-3, warmup_steps=5)
    c.data.update(batch_size=8, seq_len=64)
    return c
