"""SpeechGPT-style formatting, an alternative to the AudioPaLM task tags.

SpeechGPT (Zhang et al. 2023) writes speech as unit spans ``<sosp> … <eosp>`` inside an
instruction dialogue and trains on the answer only::

    [Human]: {instruction} <eoh>. [SpeechGPT]: {answer}<eoa>

Here ``<sosp>``, ``<eosp>``, ``<eoh>``, ``<eoa>`` are plain text (tokenized by the text
tokenizer) and the units between ``<sosp>``/``<eosp>`` are joint-vocab audio ids. The
vocab's ``<eos>`` follows ``<eoa>`` so decoding stops the same way as for AudioPaLM.
Combined tasks use the chain-of-modality answer::

    [SpeechGPT]: [tq] {transcript}; [ta] {text answer}; [ua] <sosp>…<eosp><eoa>
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from audiopalm_jax.data.tasks import Example, TaskSpec, empty_example, get_field, has_fields
from audiopalm_jax.vocab import JointVocab, language_name

SOSP, EOSP, EOH, EOA = "<sosp>", "<eosp>", "<eoh>", "<eoa>"
HUMAN, ASSISTANT = "[Human]: ", "[SpeechGPT]: "
INPUT = " This is input: "
Span = str | np.ndarray  # text, or audio tokens in [0, num_audio_tokens)

# Instruction templates per task; {target} is the target language's English name.
INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "ASR": (
        "Can you transcribe the speech into a written format?",
        "Listen to the speech and write down its content.",
        "Please transcribe this audio.",
    ),
    "AST": (
        "Translate this speech into {target} text.",
        "Listen to the speech and write its {target} translation.",
    ),
    "S2ST": (
        "Say this in {target}.",
        "Translate this speech into spoken {target}.",
    ),
    "TTS": (
        "Try to speak out this sentence, please.",
        "Read this sentence aloud.",
    ),
    "MT": (
        "Translate this sentence into {target}.",
        "Give the {target} translation of this sentence.",
    ),
    # Chain of modality: the source speech is the instruction; the answer walks through
    # transcript ([tq]), text answer ([ta]) and speech answer ([ua]).
    "COM": (
        "Translate this speech into {target}, step by step.",
        "Transcribe this speech, translate it into {target}, and say the translation.",
    ),
}
# Chain-of-modality marker of each task's part of the answer.
CHAIN_MARKERS = {"ASR": "[tq] ", "AST": "[ta] ", "S2ST": "[ua] "}


def speech_span(tokens: np.ndarray) -> list[Span]:
    """``<sosp>`` units ``<eosp>``."""
    return [SOSP, np.asarray(tokens), EOSP]


def _choose(options: Sequence[str], key: str, seed: int) -> str:
    # crc32, not hash(): Python's str hash differs between processes (grain workers).
    return options[zlib.crc32(f"{seed}:{key}".encode()) % len(options)]


def _input(spec: TaskSpec, example: Mapping[str, Any]) -> list[Span]:
    value = get_field(example, spec.source_language, spec.source_modality)
    return speech_span(value) if spec.source_modality == "audio" else [value]


def _output(spec: TaskSpec, example: Mapping[str, Any], index: int) -> list[Span]:
    modality, lang = spec.outputs()[index]
    value = get_field(example, lang, modality)
    return speech_span(value) if modality == "audio" else [value]


def render(
    spec: TaskSpec, example: Mapping[str, Any], seed: int = 0
) -> tuple[list[Span], list[Span]] | None:
    """(prompt spans, answer spans) for ``spec``, or None if a field is missing.

    Single tasks render one answer; ASR+AST(+S2ST) renders the chain-of-modality answer.
    The instruction template is picked by a stable hash of (seed, id, task).
    """
    if not has_fields(example, spec):
        return None
    target = language_name(spec.target_language) if spec.target_language else ""
    if len(spec.tasks) == 1:
        key = spec.tasks[0]
        answer = _output(spec, example, 0)
    else:
        if spec.tasks[0] != "ASR" or any(t not in CHAIN_MARKERS for t in spec.tasks):
            raise ValueError(
                f"SpeechGPT chain-of-modality needs ASR first, then AST and/or S2ST; "
                f"got {'+'.join(spec.tasks)}"
            )
        key = "COM"
        answer = []
        for i, task in enumerate(spec.tasks):
            answer += (["; "] if i else []) + [CHAIN_MARKERS[task]] + _output(spec, example, i)
    template = _choose(INSTRUCTIONS[key], f"{example.get('id', '')}:{spec.name}", seed)
    instruction = template.format(target=target)
    prompt = [HUMAN + instruction + INPUT, *_input(spec, example), f" {EOH}. {ASSISTANT}"]
    return prompt, answer + [EOA]


def spans_to_text(spans: Sequence[Span]) -> str:
    """Readable rendering with audio units as ``<12>`` (SpeechGPT's unit notation)."""
    return "".join(s if isinstance(s, str) else "".join(f"<{int(u)}>" for u in s) for s in spans)


def _encode(vocab: JointVocab, spans: Sequence[Span]) -> np.ndarray:
    # Merge adjacent text spans first: tokenizers may split differently at boundaries.
    merged: list[Span] = []
    for s in spans:
        if isinstance(s, str) and merged and isinstance(merged[-1], str):
            merged[-1] = merged[-1] + s
        else:
            merged.append(s)
    return vocab.encode(merged)


def format_speechgpt(
    vocab: JointVocab, spec: TaskSpec, example: Mapping[str, Any], seed: int = 0
) -> Example:
    """The SpeechGPT sequence (answer + ``<eoa>`` + eos are the targets)."""
    rendered = render(spec, example, seed)
    if rendered is None:
        return empty_example()
    prompt, answer = rendered
    prompt_ids = _encode(vocab, prompt)  # [P]
    answer_ids = np.concatenate([_encode(vocab, answer), [vocab.eos_id]])  # [A]
    ids = np.concatenate([prompt_ids, answer_ids]).astype(np.int32)
    return {"ids": ids, "prompt_len": np.int32(len(prompt_ids))}


def parse_answer(vocab: JointVocab, answer_ids: Sequence[int] | np.ndarray) -> list[Span]:
    """Answer ids (up to eos) -> spans: text, and audio token arrays between sosp/eosp."""
    ids = np.asarray(answer_ids)
    end = np.flatnonzero(ids == vocab.eos_id)
    ids = ids[: end[0]] if len(end) else ids
    return vocab.decode(ids)
