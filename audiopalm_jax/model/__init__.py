"""The NNX decoder: parameters in, logits out."""

from audiopalm_jax.model.config import ModelConfig
from audiopalm_jax.model.transformer import Transformer, init_cache

__all__ = ["ModelConfig", "Transformer", "init_cache"]
