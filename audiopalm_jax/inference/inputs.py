"""Inputs and results of the :class:`~audiopalm_jax.inference.api.AudioPaLM` API.

Audio comes as a path, an ``(array, sample_rate)`` tuple, an array with ``sample_rate=``,
pre-computed :class:`SpeechTokens`, or a list of those; languages as ISO 639-1 codes or
English names; the training mixture (``dataset:TASKS:src[-tgt][:weight]``) says which
task directions a checkpoint knows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from audiopalm_jax.vocab import LANGUAGE_NAMES, TASK_OUTPUT_LANGUAGE, TASKS

_NAME_TO_CODE = {name.lower(): code for code, name in LANGUAGE_NAMES.items()}


@dataclasses.dataclass
class SpeechTokens:
    """Audio tokens (ids in ``[0, num_audio_tokens)``) instead of a waveform.

    Returned by ``translate_speech`` / ``synthesize`` when the audio tokenizer cannot
    synthesize (``can_decode`` False; a warning says so); also accepted as audio input.
    """

    tokens: np.ndarray  # [length] int32
    note: str = ""

    def __len__(self) -> int:
        return len(self.tokens)


@dataclasses.dataclass
class Generation:
    """One decoded row: ``ids`` (generated ids, eos included if reached), ``outputs``
    (``vocab.split_target``: str for text, audio-token arrays for audio), ``score``
    (sum of log-probs; beam search: length-penalised) and ``finished`` (eos reached)."""

    ids: np.ndarray
    outputs: list[str | np.ndarray]
    score: float
    finished: bool


def language_code(language: str, trained: Sequence[str] | None = None) -> str:
    """``"French"`` / ``"fr"`` / ``"french"`` -> ``"fr"``; ValueError lists what is known."""
    code = language if language in LANGUAGE_NAMES else _NAME_TO_CODE.get(str(language).lower())
    if code is None or (trained and code not in trained):
        if trained:
            known = ", ".join(f"{c} ({LANGUAGE_NAMES.get(c, c)})" for c in sorted(trained))
            raise ValueError(f"unknown language {language!r}; the model was trained on: {known}")
        known = ", ".join(f"{c} ({n})" for c, n in sorted(LANGUAGE_NAMES.items()))
        raise ValueError(f"unknown language {language!r}; known languages: {known}")
    return code


def parse_tasks(task: str | Sequence[str]) -> tuple[str, ...]:
    """``"ast"`` / ``"ASR+AST+S2ST"`` / ``["ASR", "AST"]`` -> ``("ASR", ...)``."""
    parts = task.split("+") if isinstance(task, str) else list(task)
    tasks = tuple(str(t).strip().upper() for t in parts)
    for t in tasks:
        if t not in TASKS:
            raise ValueError(f"unknown task {t!r}; known tasks: {', '.join(TASKS)}")
    return tasks


def needs_target(tasks: Sequence[str]) -> bool:
    """Whether the task tag names a target language (AST, S2ST, MT)."""
    return any(TASK_OUTPUT_LANGUAGE[t] == "target" for t in tasks)


def trained_directions(config: Mapping[str, Any] | None) -> dict[str, set[str]] | None:
    """{task: {"fr", "fr-en", ...}} from a training config's ``data.mixture``, else None.

    Combined entries (``ASR+AST+S2ST:fr-en``) count for each of their tasks.
    """
    data = (config or {}).get("data") or {}
    entries = data.get("mixture") or []
    if not entries or data.get("source") == "synthetic":
        return None
    out: dict[str, set[str]] = {}
    for entry in entries:
        parts = [p.strip() for p in str(entry).split(":")]
        if len(parts) < 3:
            continue
        src, _, tgt = parts[2].partition("-")
        for t in parse_tasks(parts[1]):
            out.setdefault(t, set()).add(f"{src}-{tgt}" if needs_target([t]) and tgt else src)
    return out or None


def languages_of(directions: Mapping[str, set[str]]) -> list[str]:
    return sorted({lang for dirs in directions.values() for d in dirs for lang in d.split("-")})


def is_audio_item(x: Any) -> bool:
    """One audio input (not a batch of them)."""
    if isinstance(x, str | SpeechTokens):
        return True
    if isinstance(x, np.ndarray):
        return x.ndim == 1 or (x.ndim == 2 and min(x.shape) <= 8)  # mono or channels
    if isinstance(x, tuple) and len(x) == 2 and np.isscalar(x[1]):
        return True
    return False


def audio_batch(audio: Any, sample_rate: int | None = None) -> tuple[list[Any], bool]:
    """Normalises audio input -> (items, single). Items are paths, (array, sr) tuples or
    SpeechTokens; bare arrays need ``sample_rate``."""
    single = is_audio_item(audio)
    items = [audio] if single else list(audio)
    out = []
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray):
            if sample_rate is None:
                raise ValueError(
                    f"audio item {i} is a bare array: pass (array, sample_rate) or sample_rate="
                )
            item = (item, sample_rate)
        elif not (isinstance(item, str | SpeechTokens) or is_audio_item(item)):
            raise TypeError(
                f"audio item {i}: expected a path, an (array, sample_rate) tuple, an array "
                f"with sample_rate=, or SpeechTokens; got {type(item).__name__}"
            )
        out.append(item)
    if not out:
        raise ValueError("no audio given")
    return out, single


def text_batch(text: str | Sequence[str]) -> tuple[list[str], bool]:
    if isinstance(text, str):
        return [text], True
    items = list(text)
    if not items or not all(isinstance(t, str) for t in items):
        raise TypeError("text must be a str or a non-empty list of str")
    return items, False


def bucket(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple (static shapes: fewer recompiles)."""
    return max(multiple, -(-n // multiple) * multiple)


def batch_bucket(n: int, max_batch: int) -> int:
    """The next power of two >= n (at most ``max_batch``)."""
    return min(max_batch, 1 << max(0, (n - 1).bit_length()))
