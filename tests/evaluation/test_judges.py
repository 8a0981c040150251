"""Outside judges (pocketsphinx, resemblyzer) on real espeak speech, and in evaluate()."""

from __future__ import annotations

import importlib.util
import logging
import math
from collections import Counter

import jiwer
import numpy as np
import pytest
import sacrebleu

from audiopalm_jax.data import espeak
from audiopalm_jax.evaluation import judges as J
from audiopalm_jax.evaluation import metrics as M
from audiopalm_jax.evaluation import run as run_lib
from audiopalm_jax.evaluation.evaluate import evaluate

pytest.importorskip("pocketsphinx")
pytest.importorskip("resemblyzer")

TEXTS = {
    "en": [
        "the old girl carries the new cats",
        "a small dog runs to the green house",
        "we like to drink hot tea",
        "my brother reads a long book",
    ],
    "fr": [
        "la vieille fille porte les nouveaux chats",
        "un petit chien court vers la maison verte",
        "nous aimons boire du thé chaud",
        "mon frère lit un long livre",
    ],
}
VOICES = [espeak.Voice("m1", 175, 50), espeak.Voice("f2", 175, 70)]  # two speakers
OUT_SR = 24_000  # the fake model's output rate: the judges resample


def _say(text: str, lang: str, voice: espeak.Voice, sr: int = 16_000) -> np.ndarray:
    return espeak.synthesize(text, lang, voice.variant, voice.rate, voice.pitch, sample_rate=sr)[0]


@pytest.fixture(scope="module")
def records() -> list[dict]:
    """4 records, speakers alternating m1 / f2 (each record its own rate and pitch, as in
    demo_speech), English and French text and audio."""
    out = []
    for i in range(4):
        base = VOICES[i % 2]
        voice = espeak.Voice(base.variant, base.rate - 3 * i, base.pitch + i)
        utts = {
            lang: {"text": TEXTS[lang][i], "audio": _say(TEXTS[lang][i], lang, voice)}
            for lang in TEXTS
        }
        out.append(
            {"id": f"r{i}", "voice": voice.name, "speaker": voice.variant, "utterances": utts}
        )
    return out


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("lm") / "lm.arpa")
    J.bigram_arpa(TEXTS["en"], path, J.pronounceable_words())
    return path


def _read_arpa(path: str):
    uni, bo, bi, counts, section = {}, {}, {}, {}, None
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line.startswith("ngram "):
            n, c = line[6:].split("=")
            counts[int(n)] = int(c)
        elif line.startswith("\\"):
            section = line
        elif line and section == "\\1-grams:":
            f = line.split()
            uni[f[1]] = float(f[0])
            bo[f[1]] = float(f[2]) if len(f) > 2 else 0.0
        elif line and section == "\\2-grams:":
            f = line.split()
            bi[f[1], f[2]] = float(f[0])
    return uni, bo, bi, counts


def test_bigram_arpa_sums_to_one_and_counts(tmp_path):
    sents = ["The cat sleeps.", "the cat runs, the dog sleeps!", "A dog zzqx runs", "cat"]
    vocab = J.pronounceable_words()
    stats = J.bigram_arpa(sents, str(tmp_path / "lm.arpa"), vocab)
    uni, bo, bi, counts = _read_arpa(str(tmp_path / "lm.arpa"))
    assert stats == {
        "sentences": 4,
        "words": 6,
        "bigrams": len(bi),
        "dropped_oov_words": 1,
        "dropped_oov_tokens": 1,
    }
    assert counts == {1: 8, 2: len(bi)} and "zzqx" not in uni
    # Bigram counts by hand: no bigram across the dropped word.
    want = Counter()
    for s in [
        "<s> the cat sleeps </s>",
        "<s> the cat runs the dog sleeps </s>",
        "<s> a dog",
        "runs </s>",
        "<s> cat </s>",
    ]:
        w = s.split()
        want.update(zip(w[:-1], w[1:], strict=True))
    assert set(bi) == set(want)
    history = Counter()
    for (a, _), c in want.items():
        history[a] += c
    assert 10 ** bi["the", "cat"] == pytest.approx((2 - 0.5) / history["the"], abs=1e-5)
    assert 10 ** uni["cat"] == pytest.approx(3 / 17, abs=1e-5)  # 17 tokens after <s>
    for h in uni:
        if h == "</s>":
            continue
        total = sum(
            10 ** bi[h, w] if (h, w) in bi else 10 ** (bo[h] + uni[w]) for w in uni if w != "<s>"
        )
        assert total == pytest.approx(1.0, abs=1e-4), h
    assert math.isclose(sum(10**p for w, p in uni.items() if w != "<s>"), 1.0, abs_tol=1e-4)


def test_english_asr_judge_reads_espeak_not_noise(records, lm_path):
    judge = J.EnglishASRJudge(lm_path)
    waves = [r["utterances"]["en"]["audio"] for r in records]
    refs = TEXTS["en"]
    hyps = judge.transcribe(waves, 16_000)
    cer = jiwer.cer(refs, hyps)
    assert cer < 0.5, hyps
    assert M.cer(hyps, refs, language="en")["score"] == pytest.approx(cer)
    # Float input at another rate reads the same way.
    floats = [_say(t, "en", VOICES[0], OUT_SR).astype(np.float32) / 32768 for t in refs[:2]]
    assert jiwer.cer(refs[:2], judge.transcribe(floats, OUT_SR)) < 0.5
    rng = np.random.default_rng(0)
    noise = [(rng.normal(size=w.size) * 3000).astype(np.int16) for w in waves]
    assert M.cer(judge.transcribe(noise, 16_000), refs, language="en")["score"] > cer + 0.4
    assert judge.transcribe([np.zeros(100, np.int16), np.zeros(0, np.float32)], 16_000) == ["", ""]


def test_speaker_judge_tells_voices_apart(records, capfd):
    judge = J.SpeakerJudge()
    waves = [r["utterances"]["en"]["audio"] for r in records]  # voices m1, f2, m1, f2
    voices = [r["speaker"] for r in records]
    J._voice_encoder.cache_clear()
    emb = judge.embed(waves, 16_000)
    assert capfd.readouterr().out == ""  # resemblyzer's "Loaded the voice encoder ..." is muted
    assert emb.shape == (4, 256) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    assert min(sims[0, 2], sims[1, 3]) > max(sims[0, 1], sims[0, 3], sims[2, 1], sims[2, 3])
    # Centroids from the French utterances; speaker ID of the English ones.
    by_voice = {}
    for r in records:
        by_voice.setdefault(r["speaker"], []).append(r["utterances"]["fr"]["audio"])
    names, cents = judge.centroids(by_voice, 16_000)
    assert names == sorted(by_voice) and cents.shape == (2, 256)
    for n, c in zip(names, cents, strict=True):
        mean = judge.embed(by_voice[n], 16_000).mean(0)
        np.testing.assert_allclose(c, mean / np.linalg.norm(mean), atol=1e-5)
    acc = J.speaker_id_accuracy(emb, voices, names, cents)
    by_hand = np.mean(
        [names[j] == v for j, v in zip((emb @ cents.T).argmax(1), voices, strict=True)]
    )
    assert acc == pytest.approx(by_hand)
    assert J.cosine(emb, emb[::-1]) == pytest.approx(np.mean(np.sum(emb * emb[::-1], 1)))
    short = judge.embed([np.zeros(800, np.int16), waves[0][:4000]], 16_000)
    assert not short[0].any() and np.linalg.norm(short[1]) == pytest.approx(1.0, abs=1e-5)


class EspeakModel:
    """S2ST / TTS answer with real espeak speech at 24 kHz: S2ST in the source's voice, TTS
    in the voice prompt's (m3 without one); its own ASR reads back what it said."""

    def __init__(self, records):
        self.batch_size = 4
        self.directions = None
        self.audio_tokenizer = type("Tok", (), {"sample_rate": OUT_SR})()
        self._records = {r["utterances"][x]["audio"].tobytes(): r for r in records for x in TEXTS}
        self._said: dict[bytes, str] = {}
        self.voice_prompts: list = []
        self.outputs: dict[tuple, list[np.ndarray]] = {}

    def _speak(self, key, text, lang, voice):
        wave = _say(text, lang, voice, OUT_SR).astype(np.float32) / 32768
        self._said[wave.tobytes()] = text
        self.outputs.setdefault(key, []).append(wave)
        return wave

    def transcribe(self, items, language, **kw):
        return [self._said.get(w.tobytes(), "") for w, _ in items]

    def translate_speech(self, items, source, target, **kw):
        recs = [self._records[w.tobytes()] for w, _ in items]
        i = [int(r["id"][1:]) for r in recs]
        return [
            self._speak(
                ("S2ST", target), TEXTS[target][k], target, espeak.Voice.from_name(r["voice"])
            )
            for k, r in zip(i, recs, strict=True)
        ]

    def synthesize(self, texts, language, *, voice=None, sampling=None, max_new_tokens=None):
        self.voice_prompts.append(voice)
        prompts = [self._records[w.tobytes()]["voice"] for w, _ in voice] if voice else None
        return [
            self._speak(
                ("TTS", language),
                t,
                language,
                espeak.Voice.from_name(prompts[k]) if prompts else espeak.Voice("m3"),
            )
            for k, t in enumerate(texts)
        ]


def test_evaluate_with_judges(records, lm_path):
    speaker = J.SpeakerJudge()
    cent_waves = {}
    for r in records:
        cent_waves.setdefault(r["speaker"], []).append(r["utterances"]["en"]["audio"])
    names, cents = speaker.centroids(cent_waves, 16_000)
    judges = J.Judges(J.EnglishASRJudge(lm_path), speaker, {"en": (names, cents)})
    model = EspeakModel(records)
    dirs = {"S2ST": ["fr-en", "en-fr"], "TTS": ["en"]}
    out = evaluate(model, records, ["S2ST", "TTS"], directions=dirs, judges=judges, progress=False)
    m = out["metrics"]
    assert m["tts_cer/en"] == 0.0 and m["s2st_asr_bleu/fr-en"] == pytest.approx(100)  # own ASR
    tts = out["predictions"]["tts"]
    s2st = [r for r in out["predictions"]["s2st"] if r["target_language"] == "en"]
    hyps = [r["prediction_ext"] for r in tts]
    assert m["tts_cer_ext/en"] == pytest.approx(jiwer.cer(TEXTS["en"], hyps)) and hyps != [""] * 4
    bleu = sacrebleu.corpus_bleu([r["prediction_ext"] for r in s2st], [TEXTS["en"]])
    assert m["s2st_asr_bleu_ext/fr-en"] == pytest.approx(bleu.score)
    assert "s2st_asr_bleu_ext/en-fr" not in m and "s2st_speaker_id_acc/en-fr" not in m
    assert "s2st_speaker_sim/en-fr" in m and "s2st_speaker_margin/fr-en" in m
    # The voice prompt of each TTS example is its record's own English audio.
    (prompt,) = model.voice_prompts
    assert all(
        w is r["utterances"]["en"]["audio"] or np.array_equal(w, r["utterances"]["en"]["audio"])
        for (w, _), r in zip(prompt, records, strict=True)
    )
    # Speaker metrics of TTS by hand from the judge's embeddings.
    emb = speaker.embed(model.outputs["TTS", "en"], OUT_SR)
    ref = speaker.embed([r["utterances"]["en"]["audio"] for r in records], 16_000)
    cos = np.sum(emb * ref, 1)
    np.testing.assert_allclose([r["speaker_cos"] for r in tts], cos, atol=1e-5)
    assert m["tts_speaker_sim/en"] == pytest.approx(cos.mean(), abs=1e-5)
    sims, v = emb @ ref.T, [r["speaker"] for r in records]
    other = [np.mean([sims[i, j] for j in range(4) if v[j] != v[i]]) for i in range(4)]
    assert m["tts_speaker_margin/en"] == pytest.approx(np.mean(cos - other), abs=1e-5)
    assert m["tts_speaker_margin/en"] > 0.1
    by_hand = np.mean([names[j] == x for j, x in zip((emb @ cents.T).argmax(1), v, strict=True)])
    assert m["tts_speaker_id_acc/en"] == pytest.approx(by_hand)


def test_missing_judge_is_absent_and_warned_once(records, lm_path, monkeypatch, caplog):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        J.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pocketsphinx" else real(name, *a),
    )
    judges = J.Judges.available(lm_path)
    assert judges.asr is None and list(J.missing_judges()) == ["asr"]
    model = EspeakModel(records[:2])
    with caplog.at_level(logging.WARNING, logger="audiopalm_jax.evaluation"):
        for _ in range(2):
            out = evaluate(
                model, records[:2], ["TTS"], directions=["en"], judges=judges, progress=False
            )
    m = out["metrics"]
    assert "tts_cer_ext/en" not in m and "tts_speaker_sim/en" in m and "tts_cer/en" in m
    lines = [r.getMessage() for r in caplog.records if "judges" in r.getMessage()]
    assert len(lines) == 1 and 'pip install "audiopalm-jax[judges]"' in lines[0], lines
    assert "pocketsphinx" in lines[0]


def test_evaluate_workdir_builds_and_caches_judges(records, tmp_path, monkeypatch, capsys):
    import ml_collections

    config = ml_collections.ConfigDict(
        {
            "data": {"mixture": ["demo:TTS:en:1"], "datasets": {"demo": "demo_speech"}},
            "evaluation": {
                "splits": ["test"],
                "tasks": ["TTS"],
                "directions": ["en"],
                "judges": True,
            },
        }
    )
    opened = []
    monkeypatch.setattr(run_lib, "open_split", lambda c, a, split: opened.append(split) or records)
    monkeypatch.setattr(run_lib, "CENTROID_UTTERANCES", 1)
    model = EspeakModel(records)
    model.step = 3
    first = run_lib.evaluate_workdir(config, str(tmp_path), model=model)["test"]
    assert {"tts_cer_ext/en", "tts_speaker_sim/en", "tts_speaker_id_acc/en"} <= set(first)
    assert "judge LM: 23 words" in capsys.readouterr().out
    with np.load(tmp_path / "eval" / "voice_centroids.npz", allow_pickle=False) as z:
        assert list(z["names_en"]) == ["f2", "m1"]  # speakers, not the records' voice names
        assert z["centroids_en"].shape == (2, 256)
    assert opened == ["test", "train"]
    again = run_lib.evaluate_workdir(config, str(tmp_path), model=EspeakModel(records))["test"]
    assert opened == ["test", "train", "test"]  # LM and centroids from the cache
    assert again["tts_speaker_id_acc/en"] == first["tts_speaker_id_acc/en"]


def test_tts_voice_prompt_only_where_usable_and_accepted():
    from audiopalm_jax.evaluation.evaluate import _synthesize

    long, short = np.ones(16_000, np.int16), np.ones(4_000, np.int16)
    examples = [
        {"source": t, "voice_audio": a} for t, a in zip("abc", [long, None, short], strict=True)
    ]
    calls = []

    class Voiced:
        def synthesize(self, texts, language, *, voice=None, sampling=None):
            calls.append((texts, voice))
            return list(texts)

    class Plain:
        def synthesize(self, texts, language, sampling=None):
            calls.append((texts, "none"))
            return list(texts)

    assert _synthesize(Voiced(), examples, "en", {"sampling": None}) == ["a", "b", "c"]
    assert calls[0][0] == ["a"] and calls[0][1][0][0] is long and calls[1] == (["b", "c"], None)
    calls.clear()
    assert _synthesize(Plain(), examples, "en", {"sampling": None}) == ["a", "b", "c"]
    assert calls == [(["a", "b", "c"], "none")]
