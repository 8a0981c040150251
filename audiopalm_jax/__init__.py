"""audiopalm-jax: AudioPaLM-style speech-text language models in JAX / Flax NNX.

from audiopalm_jax import AudioPaLM
model = AudioPaLM.from_pretrained("runs/demo")
model.transcribe("clip.wav", language="English")
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "AudioPaLM": "audiopalm_jax.inference.api",
    "evaluate": "audiopalm_jax.evaluation.evaluate",
    "JointVocab": "audiopalm_jax.vocab",
    "ModelConfig": "audiopalm_jax.model.config",
    "Transformer": "audiopalm_jax.model.transformer",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    # Deferred imports: `import audiopalm_jax` must not pull in jax, grain or transformers.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'audiopalm_jax' has no attribute {name!r}")
