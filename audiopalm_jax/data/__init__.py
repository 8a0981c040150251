"""Datasets, task formatting and the grain input pipeline.

``make_iterator(config, vocab, split)`` is what the trainer reads; ``prepare(config,
workdir)`` builds what a config needs first. See docs/contracts.md for the batch format.
"""

from audiopalm_jax.data.packing import PackedIterator, PackingConfig, check_batch
from audiopalm_jax.data.pipeline import MixtureEntry, make_examples, make_iterator
from audiopalm_jax.data.prepare import prepare, tokenize_splits
from audiopalm_jax.data.speechgpt import format_speechgpt
from audiopalm_jax.data.tasks import TaskSpec, format_task

__all__ = [
    "MixtureEntry",
    "PackedIterator",
    "PackingConfig",
    "TaskSpec",
    "check_batch",
    "format_speechgpt",
    "format_task",
    "make_examples",
    "make_iterator",
    "prepare",
    "tokenize_splits",
]
