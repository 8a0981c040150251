"""Task metrics of a model on parallel-view records.

Records follow docs/contracts.md: ``{"id", "voice", "utterances": {lang: {"text",
"audio"}}}`` with int16 audio at 16 kHz. Per task and direction (ISO 639-1 codes):

| task | metrics (keys ``<metric>/<direction>``) |
|---|---|
| ASR | ``asr_cer``, ``asr_wer``, ``asr_exact_match`` (``/en``) |
| AST | ``ast_bleu``, ``ast_exact_match`` (``/fr-en``) |
| MT | ``mt_bleu``, ``mt_exact_match`` (``/en-fr``) |
| S2ST | ``s2st_asr_bleu`` (generated speech -> the model's own ASR -> BLEU) |
| TTS | ``tts_cer`` (synthesized speech -> the model's own ASR -> CER vs the input) |

plus ``num_examples/<task>`` and ``num_examples/<task>/<direction>``. WER / CER / exact
match are fractions, BLEU is 0-100 (see :mod:`audiopalm_jax.evaluation.metrics`). S2ST
and TTS are scored only when the audio tokenizer can synthesize; otherwise their
predictions hold token counts and a warning says why.

With ``judges`` (:class:`~audiopalm_jax.evaluation.judges.Judges`), speech outputs are
also scored by outside judges (``<task>`` is ``s2st`` or ``tts``):

| metric | judge |
|---|---|
| ``tts_cer_ext/en``, ``s2st_asr_bleu_ext/<src>-en`` | pocketsphinx (English outputs only) |
| ``<task>_speaker_sim`` | resemblyzer: mean cosine(output, reference voice) |
| ``<task>_speaker_margin`` | the same minus mean cosine(output, other voices' references) |
| ``<task>_speaker_id_acc`` | share of outputs nearest to their record's speaker centroid |

The reference voice is the source audio for S2ST (its output keeps the source's voice) and
the voice prompt for TTS (the record's own audio in the source language, passed as
``synthesize(..., voice=...)`` when the model takes it). Speakers are the records'
``speaker`` (else ``voice``, docs/contracts.md). Prediction rows then carry
``prediction_ext`` (the judge's transcript) and ``speaker_cos``.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from audiopalm_jax.acoustic.stage import MIN_VOICE_SECONDS  # shorter: no TTS voice prompt
from audiopalm_jax.evaluation import judges as J
from audiopalm_jax.evaluation import metrics as M
from audiopalm_jax.inference.inputs import SpeechTokens, language_code, needs_target

log = logging.getLogger(__name__)

TASKS = ("ASR", "AST", "S2ST", "TTS", "MT")
SAMPLE_RATE = 16_000  # record audio (docs/contracts.md)
# What each task reads from a record: (source modality, reference modality) per side.
_READS = {
    "ASR": (("src", "audio"), ("src", "text")),
    "AST": (("src", "audio"), ("tgt", "text")),
    "S2ST": (("src", "audio"), ("tgt", "text")),
    "TTS": (("src", "text"), ("src", "text")),
    "MT": (("src", "text"), ("tgt", "text")),
}


def _field(record: Mapping[str, Any], lang: str, modality: str):
    utt = (record.get("utterances") or {}).get(lang) or {}
    value = utt.get(modality)
    if value is None:
        return None
    if modality == "text":
        value = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        return value if value.strip() else None
    value = np.asarray(value)
    return value if value.ndim == 1 and value.size else None


def _split(direction: str) -> tuple[str, str | None]:
    src, _, tgt = direction.partition("-")
    return src, tgt or None


def default_directions(
    model: Any, records: Sequence[Mapping[str, Any]], tasks: Sequence[str], probe: int = 16
) -> dict[str, list[str]]:
    """Directions per task: those the model was trained on (if it says) that the records
    have, else every language (ASR, TTS) / ordered pair (others) in the first records."""
    langs: set[str] = set()
    for i in range(min(probe, len(records))):
        langs.update((records[i].get("utterances") or {}).keys())
    trained = getattr(model, "directions", None) or {}
    out = {}
    for task in tasks:
        if needs_target([task]):
            dirs = [f"{s}-{t}" for s in sorted(langs) for t in sorted(langs) if s != t]
        else:
            dirs = sorted(langs)
        if task in trained:
            dirs = [d for d in dirs if d in trained[task]]
        out[task] = dirs
    return out


def _normalize_directions(directions, tasks) -> dict[str, list[str]] | None:
    if directions is None:
        return None
    if isinstance(directions, Mapping):
        return {t: list(directions.get(t, [])) for t in tasks}
    # One list for every task: pairs go to AST/S2ST/MT, single languages to ASR/TTS (and
    # a pair "fr-en" also implies ASR/TTS in its source language).
    out: dict[str, list[str]] = {t: [] for t in tasks}
    for d in directions:
        src, tgt = _split(d)
        for t in tasks:
            want = (
                f"{src}-{tgt}"
                if needs_target([t]) and tgt
                else (None if needs_target([t]) else src)
            )
            if want and want not in out[t]:
                out[t].append(want)
    return out


def speaker_of(record: Mapping[str, Any]) -> str | None:
    """Who speaks a record: its ``speaker`` where the corpus knows it, else its ``voice``."""
    who = record.get("speaker") or record.get("voice")
    return None if who is None else str(who)


def task_examples(records, task: str, direction: str) -> list[dict[str, Any]]:
    """``{"id", "speaker", "source", "reference"}`` of the records that have what ``task``
    needs in ``direction`` (source audio or text, reference text; audio as stored, int16;
    ``speaker``: :func:`speaker_of`). TTS examples also carry ``"voice_audio"``: the
    record's audio in the source language (the voice prompt), or None."""
    src, tgt = _split(direction)
    side = {"src": src, "tgt": tgt}
    (s_side, s_mod), (r_side, r_mod) = _READS[task]
    out = []
    for i in range(len(records)):
        rec = records[i]
        source = _field(rec, side[s_side], s_mod)
        reference = _field(rec, side[r_side], r_mod)
        if source is not None and reference is not None:
            example = {
                "id": str(rec.get("id", i)),
                "speaker": speaker_of(rec),
                "source": source,
                "reference": reference,
            }
            if task == "TTS":
                example["voice_audio"] = _field(rec, src, "audio")
            out.append(example)
    return out


def _speech_input(audio: np.ndarray) -> tuple[np.ndarray, int]:
    return (np.asarray(audio), SAMPLE_RATE)


def _transcribe(model, waves: list, language: str, sr: int, batch_size: int) -> list[str]:
    """The model's own ASR of generated speech; empty or too-short audio -> ""."""
    out = [""] * len(waves)
    keep = [i for i, w in enumerate(waves) if isinstance(w, np.ndarray) and w.size >= sr // 20]
    for start in range(0, len(keep), batch_size):
        idx = keep[start : start + batch_size]
        texts = model.transcribe([(waves[i], sr) for i in idx], language=language)
        for i, t in zip(idx, texts, strict=True):
            out[i] = t
    return out


def _accepts(fn, name: str) -> bool:
    """Whether ``fn`` takes keyword ``name`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def _synthesize(model, examples: list[dict], language: str, kw: dict) -> list[Any]:
    """TTS of ``examples``, each in its record's own voice where the model takes a voice
    prompt and the record has audio in ``language`` (the others: the model's default)."""
    voiced = _accepts(model.synthesize, "voice")
    groups: dict[bool, list[int]] = {True: [], False: []}
    for i, e in enumerate(examples):
        prompt = e.get("voice_audio")
        usable = prompt is not None and len(prompt) >= MIN_VOICE_SECONDS * SAMPLE_RATE
        groups[voiced and usable].append(i)
    out: list[Any] = [None] * len(examples)
    for with_voice, idx in groups.items():
        if not idx:
            continue
        extra = {"voice": [_speech_input(examples[i]["voice_audio"]) for i in idx]}
        texts = [examples[i]["source"] for i in idx]
        waves = model.synthesize(texts, language=language, **kw, **(extra if with_voice else {}))
        for i, w in zip(idx, waves, strict=True):
            out[i] = w
    return out


def _run_task(model, task, src, tgt, examples, batch_size, sampling, max_new_tokens, bar):
    """Model outputs for every example: text (str) or waveform / SpeechTokens."""
    outputs: list[Any] = []
    kw = {"sampling": sampling, "max_new_tokens": max_new_tokens}
    for start in range(0, len(examples), batch_size):
        chunk = [e["source"] for e in examples[start : start + batch_size]]
        if task == "ASR":
            out = model.transcribe([_speech_input(a) for a in chunk], language=src, **kw)
        elif task == "AST":
            out = model.translate([_speech_input(a) for a in chunk], source=src, target=tgt, **kw)
        elif task == "S2ST":
            audio = [_speech_input(a) for a in chunk]
            out = model.translate_speech(audio, source=src, target=tgt, **kw)
        elif task == "TTS":
            out = _synthesize(model, examples[start : start + batch_size], src, kw)
        else:
            out = model.translate_text(chunk, source=src, target=tgt, **kw)
        outputs.extend(out)
        if bar is not None:
            bar.update(len(chunk))
    return outputs


def _judge(judges: J.Judges, task, src, tgt, examples, outputs, rows, sr) -> dict[str, float]:
    """Outside-judge metrics of speech ``outputs`` (waveforms at ``sr``); fills ``rows``."""
    direction, lang, key = (f"{src}-{tgt}" if tgt else src), tgt or src, task.lower()
    refs = [e["reference"] for e in examples]
    result: dict[str, float] = {}
    if judges.asr is not None and language_code(lang) == "en":
        texts = judges.asr.transcribe(outputs, sr)
        for row, text in zip(rows, texts, strict=True):
            row["prediction_ext"] = text
        if task == "TTS":
            result[f"tts_cer_ext/{direction}"] = M.cer(texts, refs, language=lang)["score"]
        else:
            score = M.asr_bleu(outputs, refs, lambda _: texts, language=lang)["score"]
            result[f"s2st_asr_bleu_ext/{direction}"] = score
    if judges.speaker is None:
        return result
    # Reference voice: the source speech (S2ST keeps it), the voice prompt (TTS).
    voice_refs = [e["source"] if task == "S2ST" else e.get("voice_audio") for e in examples]
    idx = [i for i, a in enumerate(voice_refs) if a is not None]
    if not idx:
        return result
    emb = judges.speaker.embed([outputs[i] for i in idx], sr)  # [n, 256]
    ref = judges.speaker.embed([voice_refs[i] for i in idx], SAMPLE_RATE)  # [n, 256]
    for i, c in zip(idx, np.sum(emb * ref, axis=1), strict=True):  # unit (or zero) rows
        rows[i]["speaker_cos"] = float(c)
    result[f"{key}_speaker_sim/{direction}"] = J.cosine(emb, ref)
    voices = [examples[i]["speaker"] for i in idx]
    named = [k for k, v in enumerate(voices) if v is not None]
    margin = J.speaker_margin(emb[named], ref[named], [voices[k] for k in named])
    if margin is not None:
        result[f"{key}_speaker_margin/{direction}"] = margin
    names, centroids = judges.centroids.get(lang, ((), None))
    known = [k for k, v in enumerate(voices) if v in set(names)]
    if centroids is not None and known:
        acc = J.speaker_id_accuracy(emb[known], [voices[k] for k in known], names, centroids)
        result[f"{key}_speaker_id_acc/{direction}"] = acc
    return result


def _score(
    model, task, src, tgt, examples, outputs, batch_size, judges=None
) -> tuple[dict, list[dict]]:
    """(metrics, per-example predictions) for one task direction."""
    direction = f"{src}-{tgt}" if tgt else src
    refs = [e["reference"] for e in examples]
    rows = [
        {
            "id": e["id"],
            "task": task,
            "source_language": src,
            "target_language": tgt,
            "reference": e["reference"],
        }
        for e in examples
    ]
    key = task.lower()
    result: dict[str, float] = {}
    if task in ("ASR", "AST", "MT"):
        lang = tgt or src
        if task == "ASR":
            result[f"asr_cer/{direction}"] = M.cer(outputs, refs, language=lang)["score"]
            result[f"asr_wer/{direction}"] = M.wer(outputs, refs, language=lang)["score"]
        else:
            result[f"{key}_bleu/{direction}"] = M.bleu(outputs, refs, language=lang)["score"]
        result[f"{key}_exact_match/{direction}"] = M.exact_match(outputs, refs, language=lang)[
            "score"
        ]
        for row, out in zip(rows, outputs, strict=True):
            row["prediction"] = out
        return result, rows
    # Speech outputs: scored through the model's own ASR when they are waveforms.
    lang = tgt or src
    for row, out in zip(rows, outputs, strict=True):
        row["num_audio_tokens"] = len(out) if isinstance(out, SpeechTokens) else None
    if any(isinstance(o, SpeechTokens) for o in outputs):
        log.warning("%s %s: the audio tokenizer cannot synthesize; not scored", task, direction)
        return result, rows
    sr = int(model.audio_tokenizer.sample_rate)
    transcripts = _transcribe(model, outputs, lang, sr, batch_size)
    for row, text, wave in zip(rows, transcripts, outputs, strict=True):
        row["prediction"] = text  # the model's ASR of its own speech
        row["audio_seconds"] = round(len(wave) / sr, 3)
    if task == "S2ST":
        score = M.asr_bleu(outputs, refs, lambda _: transcripts, language=lang)["score"]
        result[f"s2st_asr_bleu/{direction}"] = score
    else:
        result[f"tts_cer/{direction}"] = M.cer(transcripts, refs, language=lang)["score"]
    if judges is not None:
        result.update(_judge(judges, task, src, tgt, examples, outputs, rows, sr))
    return result, rows


def _task_limits(limit: int | Mapping[str, int] | None, tasks: list[str]) -> dict[str, int]:
    """Records per task (0: all) from ``evaluate``'s ``limit``."""
    if not isinstance(limit, Mapping):
        return {t: int(limit or 0) for t in tasks}
    given = {str(t).upper(): n for t, n in limit.items()}
    unknown = sorted(set(given) - set(TASKS))
    if unknown:
        raise ValueError(f"limit names unknown tasks {unknown}; evaluable tasks: {list(TASKS)}")
    for t, n in given.items():
        if int(n) < 0:
            raise ValueError(f"limit[{t!r}]={n} must be >= 0 (0: all records)")
    return {t: int(given.get(t) or 0) for t in tasks}


class _Limited(Sequence):
    """The first ``limit`` records of a sequence, read lazily."""

    def __init__(self, records: Sequence, limit: int | None):
        self._records = records
        self._n = len(records) if not limit else min(int(limit), len(records))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._records[i]


def evaluate(
    model: Any,
    records: Sequence[Mapping[str, Any]],
    tasks: Sequence[str] = TASKS,
    *,
    directions: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    limit: int | Mapping[str, int] | None = None,
    batch_size: int | None = None,
    sampling: Any = None,
    max_new_tokens: int | None = None,
    progress: bool = True,
    judges: J.Judges | None = None,
) -> dict[str, Any]:
    """Runs ``tasks`` over ``records`` -> ``{"metrics": {...}, "predictions": {task: [...]}}``.

    ``model``: an :class:`~audiopalm_jax.inference.api.AudioPaLM` (or anything with its
    task methods). ``directions``: ``["fr-en", "en"]`` for all tasks, or ``{"ASR": ["en"],
    ...}``; default: what the model was trained on, as present in the records.
    ``limit``: only the first records (0 or None: all); a mapping gives it per task
    (``{"ASR": 100, "TTS": 20}``; tasks it leaves out: all). ``sampling`` /
    ``max_new_tokens``: as in ``AudioPaLM.generate``. ``judges``: outside judges of the
    S2ST / TTS outputs (module docstring); those missing are named in one warning.
    """
    tasks = [str(t).upper() for t in tasks]
    for t in tasks:
        if t not in TASKS:
            raise ValueError(f"unknown task {t!r}; evaluable tasks: {', '.join(TASKS)}")
    limits = _task_limits(limit, tasks)
    dirs = _normalize_directions(directions, tasks) or default_directions(model, records, tasks)
    for t in tasks:  # fail on a bad language before any decoding
        for d in dirs[t]:
            for lang in filter(None, _split(d)):
                language_code(lang)
    batch_size = int(batch_size or getattr(model, "batch_size", 16))
    if judges is not None and {"S2ST", "TTS"} & set(tasks):
        judges.warn_missing()
    jobs = [
        (t, d, task_examples(_Limited(records, limits[t]), t, d)) for t in tasks for d in dirs[t]
    ]
    total = sum(len(ex) for _, _, ex in jobs)
    bar = None
    if progress:
        import tqdm

        bar = tqdm.tqdm(total=total, desc="evaluate", unit="ex", dynamic_ncols=True)
    metrics: dict[str, float] = {}
    predictions: dict[str, list[dict]] = {t.lower(): [] for t in tasks}
    try:
        for task, direction, examples in jobs:
            metrics[f"num_examples/{task.lower()}/{direction}"] = len(examples)
            if not examples:
                continue
            if bar is not None:
                bar.set_postfix_str(f"{task} {direction}")
            src, tgt = _split(direction)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # once per direction, below
                outputs = _run_task(
                    model, task, src, tgt, examples, batch_size, sampling, max_new_tokens, bar
                )
            result, rows = _score(model, task, src, tgt, examples, outputs, batch_size, judges)
            metrics.update(result)
            predictions[task.lower()].extend(rows)
    finally:
        if bar is not None:
            bar.close()
    for task in tasks:
        metrics[f"num_examples/{task.lower()}"] = len(predictions[task.lower()])
    return {"metrics": metrics, "predictions": predictions}
