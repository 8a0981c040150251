"""Outside judges of generated speech: pocketsphinx (English ASR) and resemblyzer (voice).

Both ship their weights in their wheels (``pip install "audiopalm-jax[judges]"``), so
nothing is downloaded. They are relative judges: compare generated speech with real speech
of the same sentences through the same judge (shared/reference/judges.md has figures).

* :class:`EnglishASRJudge`: pocketsphinx's en-us acoustic model and CMU dictionary with a
  bigram LM of the training split's English sentences (:func:`bigram_arpa`).
* :class:`SpeakerJudge`: GE2E speaker embeddings, unit-norm, 256-d.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import io
import logging
import math
import os
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # what both judges read
EXTRA = 'pip install "audiopalm-jax[judges]"'
# judge name -> (modules it imports, what it gives)
_NEEDS = {
    "asr": (("pocketsphinx",), "English ASR of speech output (tts_cer_ext, s2st_asr_bleu_ext)"),
    "speaker": (
        ("resemblyzer", "torch", "webrtcvad", "pkg_resources"),
        "speaker similarity (s2st/tts_speaker_sim, _speaker_id_acc, _speaker_margin)",
    ),
}
_PIP = {"pkg_resources": "setuptools<81"}  # module -> what to install, where they differ
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def missing_judges() -> dict[str, str]:
    """``{judge: one-line reason and the extra that provides it}`` for judges whose packages
    are not installed (found with ``importlib.util.find_spec``; nothing heavy imported)."""
    out = {}
    for name, (modules, what) in _NEEDS.items():
        absent = [m for m in modules if importlib.util.find_spec(m) is None]
        if absent:
            names = ", ".join(_PIP.get(m, m) for m in absent)
            out[name] = f"{what}: needs {names} ({EXTRA})"
    return out


def words(text: str) -> list[str]:
    """Lower-cased words of ``text``, punctuation stripped (inner apostrophes kept)."""
    return _WORD.findall(text.lower())


def bigram_arpa(
    sentences: Iterable[str], path: str, vocabulary: set[str] | None = None
) -> dict[str, int]:
    """Writes a bigram ARPA LM of ``sentences`` to ``path`` -> stats.

    Absolute discounting (D = 0.5) of seen bigrams, backing off to the maximum-likelihood
    unigram distribution with weights that make every history's distribution sum to 1.
    Words outside ``vocabulary`` are dropped: no unigram, and no bigram across them.
    """
    d = 0.5
    uni: Counter[str] = Counter()
    bi: Counter[tuple[str, str]] = Counter()
    oov: Counter[str] = Counter()
    n_sent = 0
    for sentence in sentences:
        toks = ["<s>", *words(sentence), "</s>"]
        n_sent += len(toks) > 2
        oov.update(w for w in toks[1:-1] if vocabulary is not None and w not in vocabulary)
        if len(toks) == 2:
            continue
        keep = [w if vocabulary is None or w in vocabulary or w[0] == "<" else None for w in toks]
        uni.update(w for w in keep[1:] if w is not None)
        bi.update(p for p in zip(keep[:-1], keep[1:], strict=True) if None not in p)
    total = sum(uni.values())  # tokens that can be predicted (no <s>)
    if not bi:
        raise ValueError("bigram_arpa: no sentence with an in-vocabulary word")
    p_uni = {w: c / total for w, c in uni.items()}
    history: Counter[str] = Counter()  # c(a): bigram tokens starting with a
    types: Counter[str] = Counter()  # distinct words seen after a
    seen_uni: Counter[str] = Counter()  # unigram mass of the words seen after a
    for (a, b), c in bi.items():
        history[a] += c
        types[a] += 1
        seen_uni[a] += p_uni[b]
    p_bi = {(a, b): (c - d) / history[a] for (a, b), c in bi.items()}
    backoff = {}  # alpha(a) = discounted mass / unigram mass of the unseen words
    for a, n in history.items():
        rest = 1.0 - seen_uni[a]
        backoff[a] = d * types[a] / n / rest if rest > 1e-9 else 0.0
        if rest <= 1e-9:  # every word follows a: nothing to back off to, so no discount
            p_bi.update({(h, b): c / n for (h, b), c in bi.items() if h == a})

    def lg(p: float) -> str:
        return f"{math.log10(p):.6f}" if p > 0 else "-99.000000"

    vocab = ["<s>", *sorted(w for w in uni if w != "<s>")]
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"\\data\\\nngram 1={len(vocab)}\nngram 2={len(bi)}\n\n\\1-grams:\n")
        for w in vocab:
            p = p_uni.get(w, 0.0) if w != "<s>" else 0.0
            bo = f"\t{lg(backoff[w])}" if w in backoff else ""
            f.write(f"{lg(p)}\t{w}{bo}\n")
        f.write("\n\\2-grams:\n")
        for a, b in sorted(bi):
            f.write(f"{lg(p_bi[a, b])}\t{a} {b}\n")
        f.write("\n\\end\\\n")
    return {
        "sentences": n_sent,
        "words": len(vocab) - 2,  # without <s> and </s>
        "bigrams": len(bi),
        "dropped_oov_words": len(oov),
        "dropped_oov_tokens": sum(oov.values()),
    }


def _int16_16k(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float or int16 audio -> int16 at 16 kHz ([samples])."""
    wave = np.asarray(wave)
    x = wave.astype(np.float32) / 32768.0 if wave.dtype == np.int16 else wave.astype(np.float32)
    if sample_rate != SAMPLE_RATE and x.size:
        import soxr

        x = soxr.resample(x, sample_rate, SAMPLE_RATE)
    return (np.clip(np.nan_to_num(x), -1.0, 1.0) * 32767.0).astype(np.int16)


def _cmudict() -> list[tuple[str, str]]:
    """(word, line) of pocketsphinx's CMU dictionary; alternates (``read(2)``) folded."""
    from pocketsphinx import get_model_path

    with open(get_model_path("en-us/cmudict-en-us.dict"), encoding="utf-8") as f:
        return [(line.split(" ", 1)[0].split("(", 1)[0], line) for line in f if line.strip()]


def pronounceable_words() -> set[str]:
    """Words of pocketsphinx's CMU dictionary (what :func:`bigram_arpa` may keep)."""
    return {word for word, _ in _cmudict()}


def _arpa_words(path: str) -> set[str]:
    """The unigrams of an ARPA file."""
    out, inside = set(), False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("\\"):
                inside = line.strip() == "\\1-grams:"
            elif inside and line.strip():
                out.add(line.split()[1])
    return out


class EnglishASRJudge:
    """pocketsphinx en-us (the wheel's acoustic model) with the ARPA LM at ``lm_path`` and
    the CMU dictionary cut to the LM's words (the full one costs ~10 s per decoder). Words
    missing from the LM or the dictionary are never recognised."""

    min_seconds = 0.1  # shorter audio -> ""

    def __init__(self, lm_path: str):
        from pocketsphinx import Decoder

        self.lm_path = lm_path
        keep = _arpa_words(lm_path)
        with tempfile.TemporaryDirectory() as tmp:
            dict_path = os.path.join(tmp, "lm.dict")
            with open(dict_path, "w", encoding="utf-8") as f:
                f.writelines(line for word, line in _cmudict() if word in keep)
            self._decoder = Decoder(
                samprate=SAMPLE_RATE, lm=lm_path, dict=dict_path, loglevel="FATAL"
            )

    def transcribe(self, waves: Sequence[np.ndarray], sample_rate: int) -> list[str]:
        """One lower-case transcript per waveform (float in [-1, 1] or int16, mono)."""
        out = []
        for wave in waves:
            pcm = _int16_16k(wave, sample_rate)  # [samples]
            if pcm.size < self.min_seconds * SAMPLE_RATE:
                out.append("")
                continue
            self._decoder.start_utt()
            self._decoder.process_raw(pcm.tobytes(), full_utt=True)
            self._decoder.end_utt()
            hyp = self._decoder.hyp()
            out.append(hyp.hypstr.strip() if hyp is not None else "")
        return out


@functools.cache
def _voice_encoder(device: str):
    """resemblyzer's VoiceEncoder, loaded once per process and device, quietly."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # webrtcvad imports the deprecated pkg_resources
        from resemblyzer import VoiceEncoder

        return VoiceEncoder(device, verbose=False)


class SpeakerJudge:
    """resemblyzer (GE2E) speaker embeddings.

    Audio under ``min_seconds`` gets a zero row (cosine 0 with everything, never the nearest
    centroid). Audio whose voiced part (resemblyzer's webrtcvad trimming) is shorter than
    ``min_voiced_seconds`` is embedded untrimmed, so short utterances still get a voice.

    ``threads``: torch CPU threads while embedding (restored after); next to JAX's thread
    pool more than one mostly contend (one was 5-40x faster on 2 cores).
    """

    min_seconds = 0.1
    min_voiced_seconds = 0.3

    def __init__(self, device: str = "cpu", threads: int = 1):
        self.device, self.threads = device, threads

    def embed(self, waves: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        """Unit-norm embeddings, float32 [n, 256] (zero rows for too-short audio)."""
        encoder = _voice_encoder(self.device)
        import torch
        from resemblyzer import audio as ra  # imported quietly by _voice_encoder
        from resemblyzer import preprocess_wav

        out = np.zeros((len(waves), 256), np.float32)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            for i, wave in enumerate(waves):
                x = _int16_16k(wave, sample_rate).astype(np.float32) / 32767.0  # [samples]
                if x.size < self.min_seconds * SAMPLE_RATE or not np.any(x):
                    continue
                trimmed = preprocess_wav(x)  # volume-normalised, long silences cut
                if trimmed.size < self.min_voiced_seconds * SAMPLE_RATE:
                    trimmed = ra.normalize_volume(x, ra.audio_norm_target_dBFS, increase_only=True)
                e = encoder.embed_utterance(trimmed.astype(np.float32))
                if np.all(np.isfinite(e)):
                    out[i] = e / max(float(np.linalg.norm(e)), 1e-12)
        finally:
            torch.set_num_threads(threads)
        return out

    def centroids(
        self, waves_by_voice: Mapping[str, Sequence[np.ndarray]], sample_rate: int
    ) -> tuple[list[str], np.ndarray]:
        """(sorted voice names, unit-norm mean embedding per voice [V, 256])."""
        names = sorted(waves_by_voice)
        rows = [self.embed(waves_by_voice[n], sample_rate).mean(axis=0) for n in names]
        return names, _unit(np.stack(rows).astype(np.float32))


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm; zero rows stay zero ([n, d])."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine between matching rows of ``a`` and ``b`` ([n, d] each)."""
    return float(np.mean(np.sum(_unit(a) * _unit(b), axis=-1)))


def speaker_id_accuracy(
    embeddings: np.ndarray, true_voices: Sequence[str], names: Sequence[str], centroids: np.ndarray
) -> float:
    """Share of rows ([n, d]) whose nearest centroid ([V, d], cosine) is their voice; every
    voice must be among ``names``. Zero rows count as wrong."""
    names = list(names)
    missing = sorted(set(true_voices) - set(names))
    if missing:
        raise ValueError(f"voices {missing} have no centroid (have {names})")
    nearest = np.argmax(_unit(embeddings) @ _unit(centroids).T, axis=1)  # [n]
    right = np.asarray([names[j] for j in nearest]) == np.asarray(list(true_voices))
    return float(np.mean(right & np.any(embeddings != 0, axis=1)))


def speaker_margin(
    outputs: np.ndarray, references: np.ndarray, voices: Sequence[str]
) -> float | None:
    """Mean over outputs of cos(output, own reference) - mean cos(output, the references of
    other voices) ([n, d] each); None when no output has another voice to compare with."""
    sims = _unit(outputs) @ _unit(references).T  # [n, n]
    v = np.asarray(list(voices), dtype=object)
    other = v[:, None] != v[None, :]  # [n, n]
    rows = np.flatnonzero(other.any(axis=1))
    if rows.size == 0:
        return None
    margins = [sims[i, i] - sims[i, other[i]].mean() for i in rows]
    return float(np.mean(margins))


@dataclasses.dataclass
class Judges:
    """What :func:`~audiopalm_jax.evaluation.evaluate.evaluate` scores speech with.

    ``centroids``: ``{language: (speaker names, [V, 256] unit-norm)}`` for speaker-ID
    accuracy of outputs in that language (speakers as ``evaluate.speaker_of``).
    ``missing``: judges left out (:func:`missing_judges`), warned about once.
    """

    asr: EnglishASRJudge | None = None
    speaker: SpeakerJudge | None = None
    centroids: Mapping[str, tuple[Sequence[str], np.ndarray]] = dataclasses.field(
        default_factory=dict
    )
    missing: Mapping[str, str] = dataclasses.field(default_factory=dict)
    warned: bool = dataclasses.field(default=False, repr=False)

    @classmethod
    def available(cls, lm_path: str | None = None, device: str = "cpu", **kw: Any) -> Judges:
        """The judges whose packages are installed (the ASR judge only with ``lm_path``)."""
        missing = missing_judges()
        asr = EnglishASRJudge(lm_path) if lm_path and "asr" not in missing else None
        speaker = SpeakerJudge(device) if "speaker" not in missing else None
        return cls(asr=asr, speaker=speaker, missing=missing, **kw)

    def warn_missing(self) -> None:
        """One warning line naming the missing judges and the extra (first call only)."""
        if self.missing and not self.warned:
            self.warned = True
            log.warning(
                "outside judges missing: %s",
                "; ".join(f"{k}: {v}" for k, v in self.missing.items()),
            )
