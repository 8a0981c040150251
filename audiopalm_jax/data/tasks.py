"""AudioPaLM task formatting: one parallel example -> one token sequence.

The parallel view (docs/contracts.md) is
``{"id", "voice", "utterances": {lang: {"text": str | None, "audio": tokens | None}}}``
with ``audio`` already as audio *tokens* (int array in ``[0, num_audio_tokens)``), never
a waveform. The layout comes only from ``JointVocab.prompt_ids`` / ``target_ids``::

    ids = prompt (task tag, source, <sep>) + target (outputs joined by <sep>, <eos>)

and the formatted example is ``{"ids": int32[L], "prompt_len": int32[], "source_start":
int32[]}``: the first ``prompt_len`` ids are the bidirectional prefix, the rest are the
loss targets; the source begins at ``source_start`` (after the task tag). An example may
also carry ``"positions": int32[L]`` (the aligned position scheme); without them a
segment's positions count from 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from audiopalm_jax.vocab import (
    TASK_OUTPUT,
    TASK_OUTPUT_LANGUAGE,
    TASK_SOURCE,
    TASKS,
    JointVocab,
    language_name,
)

Example = dict[str, np.ndarray]  # {"ids": int32[L], "prompt_len": int32[], ...}


def empty_example() -> Example:
    """The placeholder for a record that lacks what the task needs (skipped, counted)."""
    return {"ids": np.zeros((0,), np.int32), "prompt_len": np.int32(0)}


def make_example(prompt: np.ndarray, target: np.ndarray, source_start: int = 0) -> Example:
    ids = np.concatenate([prompt, target]).astype(np.int32)
    return {
        "ids": ids,
        "prompt_len": np.int32(len(prompt)),
        "source_start": np.int32(source_start),
    }


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task (or combined task) in one language direction.

    ``tasks`` in tag order, e.g. ``("ASR", "AST", "S2ST")``; ``target_language`` is None
    when every output is in the source language (ASR, TTS).
    """

    tasks: tuple[str, ...]
    source_language: str
    target_language: str | None = None

    def __post_init__(self):
        if not self.tasks:
            raise ValueError("a task spec needs at least one task")
        for t in self.tasks:
            if t not in TASKS:
                raise ValueError(f"unknown task {t!r}; known tasks: {', '.join(TASKS)}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"repeated task in {self.tasks}")
        sources = {TASK_SOURCE[t] for t in self.tasks}
        if len(sources) > 1:
            raise ValueError(
                f"tasks {'+'.join(self.tasks)} read different modalities {sorted(sources)}; "
                "combine only tasks with the same source (ASR/AST/S2ST or TTS/MT)"
            )
        language_name(self.source_language)  # raises on an unknown code
        needs_target = any(TASK_OUTPUT_LANGUAGE[t] == "target" for t in self.tasks)
        if needs_target and not self.target_language:
            raise ValueError(f"tasks {'+'.join(self.tasks)} need a target language")
        if self.target_language:
            language_name(self.target_language)
            if not needs_target:
                raise ValueError(
                    f"tasks {'+'.join(self.tasks)} write only the source language; "
                    f"drop the target language {self.target_language!r}"
                )
            if self.target_language == self.source_language:
                raise ValueError(f"source and target language are both {self.source_language!r}")

    @classmethod
    def parse(cls, tasks: str, languages: str) -> TaskSpec:
        """``("ASR+AST+S2ST", "fr-en")`` or ``("ASR", "en")``."""
        src, _, tgt = languages.partition("-")
        return cls(tuple(t.strip().upper() for t in tasks.split("+")), src, tgt or None)

    @property
    def name(self) -> str:
        langs = self.source_language + (f"-{self.target_language}" if self.target_language else "")
        return f"{'+'.join(self.tasks)}:{langs}"

    @property
    def source_modality(self) -> str:
        return TASK_SOURCE[self.tasks[0]]

    def outputs(self) -> list[tuple[str, str]]:
        """(modality, language) of each output, in tag order."""
        out = []
        for t in self.tasks:
            lang = self.source_language
            if TASK_OUTPUT_LANGUAGE[t] == "target":
                lang = self.target_language
            out.append((TASK_OUTPUT[t], lang))
        return out

    def fields(self) -> set[tuple[str, str]]:
        """Every (language, modality) an example must have."""
        need = {(self.source_language, self.source_modality)}
        need.update((lang, modality) for modality, lang in self.outputs())
        return need


def get_field(example: Mapping[str, Any], language: str, modality: str):
    utt = example["utterances"].get(language)
    if utt is None:
        return None
    value = utt.get(modality)
    if value is None:
        return None
    if modality == "audio":
        value = np.asarray(value)
        if value.ndim != 1 or not np.issubdtype(value.dtype, np.integer) or not value.size:
            return None
    return value


def has_fields(example: Mapping[str, Any], spec: TaskSpec) -> bool:
    """Whether ``example`` has every text/audio the task reads or writes."""
    return all(get_field(example, lang, mod) is not None for lang, mod in spec.fields())


def format_task(vocab: JointVocab, spec: TaskSpec, example: Mapping[str, Any]) -> Example:
    """The AudioPaLM sequence for ``spec`` on one parallel example (audio as tokens).

    Returns :func:`empty_example` if the example lacks a needed text or audio.
    """
    if not has_fields(example, spec):
        return empty_example()
    source = get_field(example, spec.source_language, spec.source_modality)
    prompt = vocab.prompt_ids(
        list(spec.tasks), spec.source_language, spec.target_language, source
    )  # [P]: tag, source, <sep>
    outputs = [get_field(example, lang, modality) for modality, lang in spec.outputs()]
    target = vocab.target_ids(outputs)  # [T]: outputs joined by <sep>, <eos>
    tag = vocab.tag_ids(list(spec.tasks), spec.source_language, spec.target_language)
    return make_example(prompt, target, source_start=len(tag))


def parse_target(vocab: JointVocab, ids: Sequence[int] | np.ndarray) -> list[str | np.ndarray]:
    """The outputs of a formatted example's target ids (inverse of the formatter)."""
    return vocab.split_target(np.asarray(ids))
