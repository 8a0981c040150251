"""Datasets, task formatting and the grain input pipeline.

``make_iterator(config, vocab, split)`` is what the trainer reads;
``audiopalm_jax.data.prepare.prepare(config, workdir)`` builds what a config needs first
(not re-exported: the name would hide the ``prepare`` module). See docs/contracts.md for
the batch format.
"""

from typing import Any

_LAZY = {
    "MixtureEntry": "audiopalm_jax.data.pipeline",
    "PackedIterator": "audiopalm_jax.data.packing",
    "PackingConfig": "audiopalm_jax.data.packing",
    "TaskSpec": "audiopalm_jax.data.tasks",
    "check_batch": "audiopalm_jax.data.packing",
    "format_speechgpt": "audiopalm_jax.data.speechgpt",
    "format_task": "audiopalm_jax.data.tasks",
    "make_examples": "audiopalm_jax.data.pipeline",
    "make_iterator": "audiopalm_jax.data.pipeline",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    # Deferred, as in the top-level package: importing one dataset module stays cheap.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'audiopalm_jax.data' has no attribute {name!r}")
