"""``audiopalm eval``: a workdir's checkpoint on the config's evaluation splits.

Config (``config.evaluation``)::

    evaluation = dict(
        dataset="",            # alias in data.datasets; "": the first one in data.mixture
        splits=["test"],       # pipeline split names (mapped by data.datasets[alias].splits)
        tasks=["ASR", "AST", "S2ST", "TTS", "MT"],
        directions=[],         # e.g. ["fr-en", "en"]; []: the trained ones in the records
        limit=100,             # records per split; 0: all; or per task, {"ASR": 100, ...}
        batch_size=16,
        num_beams=1,           # 1: greedy; > 1: beam search
        length_penalty=1.0,
        max_new_tokens=0,      # 0: from each source's length
        judges=False,          # also score S2ST / TTS with outside judges (the [judges] extra)
    )

Writes ``workdir/eval/<step>/metrics.json`` (``{split: {metric: value}}``) and
``workdir/eval/<step>/<task>.jsonl`` (one prediction per line, with its split), and prints
a table. With ``judges``, the judges' English LM (``workdir/eval/judge_lm.arpa``, from the
training split's English sentences) and voice centroids (``workdir/eval/voice_centroids.npz``,
from :data:`CENTROID_UTTERANCES` training utterances per speaker and output language; a
record's ``speaker``, else its ``voice``) are built once and reused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from audiopalm_jax.evaluation import judges as J
from audiopalm_jax.evaluation.evaluate import (
    SAMPLE_RATE,
    TASKS,
    _normalize_directions,
    _split,
    default_directions,
    evaluate,
    speaker_of,
)

DEFAULTS: dict[str, Any] = dict(
    dataset="",
    splits=["test"],
    tasks=list(TASKS),
    directions=[],
    limit=100,
    batch_size=16,
    num_beams=1,
    length_penalty=1.0,
    max_new_tokens=0,
    judges=False,
    # Periodic evaluation inside the train loop (0: only at the end of training).
    every_steps=0,
    periodic_splits=["validation"],
    periodic_limit=8,
)


def _limit(value) -> int | dict[str, int]:
    """``evaluation.limit``: an int, or a ConfigDict / dict of task -> records."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    return dict(value) if isinstance(value, Mapping) else int(value)


def evaluation_settings(config) -> dict[str, Any]:
    """``config.evaluation`` over :data:`DEFAULTS` (a missing section means defaults)."""
    ev = config.get("evaluation") if hasattr(config, "get") else None
    given = ev.to_dict() if hasattr(ev, "to_dict") else dict(ev or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown config.evaluation keys {unknown}; known: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **given}


class _ParallelRecords(Sequence):
    """A TFDS data source read as parallel views (docs/contracts.md)."""

    def __init__(self, source, tfds_name: str):
        self._source, self._name = source, tfds_name

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> dict:
        from audiopalm_jax.data.pipeline import to_parallel

        return to_parallel(self._name, self._source[i])


def open_split(config, alias: str, split: str) -> Sequence[dict]:
    """Records of a pipeline split of dataset ``alias`` as parallel views."""
    import tensorflow_datasets as tfds

    from audiopalm_jax.data import pipeline

    name, _ = pipeline.dataset_info(config, alias)
    dataset_split = pipeline.dataset_split(config, alias, split)
    root = pipeline.data_dir(config)
    try:
        # download=False: evaluation reads prepared data; it never builds it silently.
        source = tfds.data_source(name, split=dataset_split, data_dir=root, download=False)
    except Exception as e:  # TFDS raises several types for "not built"
        raise FileNotFoundError(
            f"dataset {name!r} split {dataset_split!r} not found in {root} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "run `audiopalm prepare` or set config.data.data_dir"
        ) from e
    return _ParallelRecords(source, name)


CENTROID_UTTERANCES = 6  # training utterances per speaker and language in a centroid


def _speech_languages(model, records, settings: Mapping[str, Any]) -> list[str]:
    """Output languages of the S2ST / TTS directions ``evaluate`` will run."""
    tasks = [str(t).upper() for t in settings["tasks"] if str(t).upper() in ("S2ST", "TTS")]
    if not tasks:
        return []
    given = _normalize_directions(list(settings["directions"]) or None, tasks)
    dirs = given or default_directions(model, records, tasks)
    return sorted({_split(d)[1] or _split(d)[0] for t in tasks for d in dirs[t]})


def build_judges(config, workdir: str, alias: str, languages: Sequence[str]) -> J.Judges:
    """The installed outside judges, their LM and the voice centroids of ``languages``,
    from the training split (read once; cached under ``workdir/eval/``)."""
    eval_dir = os.path.join(workdir, "eval")
    os.makedirs(eval_dir, exist_ok=True)
    lm_path = os.path.join(eval_dir, "judge_lm.arpa")
    cache_path = os.path.join(eval_dir, "voice_centroids.npz")
    missing = J.missing_judges()
    cached: dict[str, np.ndarray] = {}
    if os.path.exists(cache_path):
        with np.load(cache_path, allow_pickle=False) as z:
            cached = {k: z[k] for k in z.files}
    use_lm = "asr" not in missing and "en" in languages  # the ASR judge reads English
    need_lm = use_lm and not os.path.exists(lm_path)
    need = [] if "speaker" in missing else [x for x in languages if f"names_{x}" not in cached]
    texts: list[str] = []
    by_voice: dict[str, dict[str, list[np.ndarray]]] = {x: {} for x in need}
    if need_lm or need:
        records = open_split(config, alias, "train")
        for i in range(len(records)):
            rec = records[i]
            utts = rec.get("utterances") or {}
            if need_lm and (utts.get("en") or {}).get("text"):
                texts.append(str(utts["en"]["text"]))
            for lang in need:
                audio = (utts.get(lang) or {}).get("audio")
                waves = by_voice[lang].setdefault(str(speaker_of(rec)), [])
                if audio is not None and len(audio) and len(waves) < CENTROID_UTTERANCES:
                    waves.append(np.asarray(audio))
    if need_lm:
        tmp = f"{lm_path}.tmp{os.getpid()}"
        stats = J.bigram_arpa(texts, tmp, J.pronounceable_words())
        os.replace(tmp, lm_path)
        print(
            f"judge LM: {stats['words']} words, {stats['bigrams']} bigrams from "
            f"{stats['sentences']} training sentences; {stats['dropped_oov_words']} words "
            f"({stats['dropped_oov_tokens']} tokens) not in the CMU dictionary dropped"
        )
    judges = J.Judges.available(lm_path if use_lm else None)
    if judges.speaker is not None and need:
        for lang in need:
            voices = {v: w for v, w in by_voice[lang].items() if w}
            if voices:
                names, centroids = judges.speaker.centroids(voices, SAMPLE_RATE)
                cached[f"names_{lang}"] = np.asarray(names, dtype=str)
                cached[f"centroids_{lang}"] = centroids
        tmp = f"{cache_path[: -len('.npz')]}.tmp{os.getpid()}.npz"
        np.savez(tmp, **cached)  # float / str arrays: no pickle
        os.replace(tmp, cache_path)
    judges.centroids = {
        x: ([str(n) for n in cached[f"names_{x}"]], cached[f"centroids_{x}"])
        for x in languages
        if f"names_{x}" in cached
    }
    return judges


def _dataset_alias(config, settings: Mapping[str, Any]) -> str:
    if settings["dataset"]:
        return str(settings["dataset"])
    mixture = list(config.data.get("mixture", []) or [])
    if mixture:
        return str(mixture[0]).split(":")[0].strip()
    datasets = list((config.data.get("datasets", {}) or {}).keys())
    if datasets:
        return datasets[0]
    raise ValueError("set config.evaluation.dataset (no data.mixture / data.datasets to use)")


def _json_default(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """``split  metric  value`` lines, counts last."""
    lines = [f"{'split':<18} {'metric':<28} {'value':>10}"]
    for split, metrics in results.items():
        keys = sorted(metrics, key=lambda k: (k.startswith("num_examples"), k))
        for k in keys:
            v = metrics[k]
            text = f"{int(v)}" if k.startswith("num_examples") else f"{v:.4f}"
            lines.append(f"{split:<18} {k:<28} {text:>10}")
    return "\n".join(lines)


def stored_results(config, workdir: str, step: int) -> dict[str, dict[str, float]] | None:
    """``{split: metrics}`` saved in ``workdir/eval/<step>/metrics.json`` when it holds every
    split of ``config.evaluation`` (a finished end-of-run evaluation), else None."""
    path = os.path.join(workdir, "eval", str(step), "metrics.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    splits = list(evaluation_settings(config)["splits"])
    if not all(split in saved for split in splits):
        return None
    return {split: saved[split] for split in splits}


def evaluate_workdir(
    config,
    workdir: str,
    splits: Sequence[str] | None = None,
    step: int | None = None,
    *,
    model: Any | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluates ``workdir``'s checkpoint (``step``, default latest) on ``splits``
    (default ``config.evaluation.splits``); writes metrics and predictions under
    ``workdir/eval/<step>/`` and returns ``{split: metrics}``."""
    import jax

    from audiopalm_jax.inference.api import AudioPaLM
    from audiopalm_jax.inference.decoding import SamplingConfig

    s = evaluation_settings(config)
    splits = list(splits or s["splits"])
    if model is None:
        model = AudioPaLM.from_pretrained(workdir, step=step, batch_size=int(s["batch_size"]))
    sampling = SamplingConfig()
    if int(s["num_beams"]) > 1:
        sampling = SamplingConfig(
            method="beam", num_beams=int(s["num_beams"]), length_penalty=s["length_penalty"]
        )
    alias = _dataset_alias(config, s)
    out_dir = os.path.join(workdir, "eval", str(getattr(model, "step", step) or 0))
    results: dict[str, dict[str, float]] = {}
    predictions: dict[str, list[dict]] = {}
    judges = None
    for split in splits:
        print(f"evaluating {alias}/{split} (step {getattr(model, 'step', step)})")
        records = open_split(config, alias, split)
        if s.get("judges", False) and judges is None:
            languages = _speech_languages(model, records, s)
            judges = build_judges(config, workdir, alias, languages) if languages else None
        out = evaluate(
            model,
            records,
            tasks=s["tasks"],
            directions=list(s["directions"]) or None,
            limit=_limit(s["limit"]),
            batch_size=int(s["batch_size"]),
            sampling=sampling,
            max_new_tokens=int(s["max_new_tokens"]) or None,
            judges=judges,
        )
        results[split] = out["metrics"]
        for task, rows in out["predictions"].items():
            predictions.setdefault(task, []).extend({"split": split, **r} for r in rows)
    if jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
        # Other splits already evaluated at this step (the periodic validation eval at the
        # last step, then the end-of-run eval) are kept, not overwritten.
        metrics_path = os.path.join(out_dir, "metrics.json")
        merged = {}
        if os.path.exists(metrics_path):
            with open(metrics_path) as f:
                merged = json.load(f)
        merged.update(results)
        with open(metrics_path, "w") as f:
            json.dump(merged, f, indent=2, sort_keys=True, default=_json_default)
        for task, rows in predictions.items():
            path = os.path.join(out_dir, f"{task}.jsonl")
            kept = []
            if os.path.exists(path):
                with open(path) as f:
                    kept = [line for line in f if json.loads(line).get("split") not in results]
            with open(path, "w") as f:
                f.writelines(kept)
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n")
        print(format_table(results))
        print(f"wrote {out_dir}/metrics.json and per-task predictions")
    return results
