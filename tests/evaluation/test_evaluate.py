"""evaluate() and evaluate_workdir(): metric keys, values, predictions, files."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from audiopalm_jax.evaluation import run as run_lib
from audiopalm_jax.evaluation.evaluate import evaluate
from audiopalm_jax.inference.inputs import SpeechTokens

TEXTS = {
    "en": ["the cat sleeps", "a dog runs fast", "we like green tea"],
    "fr": ["le chat dort", "un chien court vite", "nous aimons le thé vert"],
}


def _audio(index: int) -> np.ndarray:
    wave = np.zeros(8000, np.int16)
    wave[0] = index  # the fake model reads the record index back from the first sample
    return wave


def _records(drop_fr_audio_of: int | None = None) -> list[dict]:
    out = []
    for i in range(3):
        utts = {lang: {"text": TEXTS[lang][i], "audio": _audio(i)} for lang in TEXTS}
        if i == drop_fr_audio_of:
            utts["fr"]["audio"] = None
        out.append({"id": f"r{i}", "voice": "v", "utterances": utts})
    return out


class FakeModel:
    """Answers from the records: perfect ASR and MT, AST wrong on record 1, speech outputs
    that its own ASR reads back perfectly (the record index rides in the waveform)."""

    def __init__(self, can_decode: bool = True):
        self.batch_size = 2
        self.directions = None
        self.can_decode = can_decode
        self.audio_tokenizer = type("Tok", (), {"sample_rate": 16000})()
        self.calls: list[tuple] = []

    @staticmethod
    def _index(item) -> int:
        wave = item[0] if isinstance(item, tuple) else item
        return int(round(float(wave[0])))

    def transcribe(self, items, language, **kw):
        self.calls.append(("ASR", language, len(items)))
        return [TEXTS[language][self._index(x)] for x in items]

    def translate(self, items, source, target, **kw):
        out = [TEXTS[target][self._index(x)] for x in items]
        return [
            ("completely wrong" if self._index(x) == 1 else t)
            for x, t in zip(items, out, strict=True)
        ]

    def translate_text(self, texts, source, target, **kw):
        return [TEXTS[target][TEXTS[source].index(t)] for t in texts]

    def _speech(self, indices):
        if not self.can_decode:
            return [SpeechTokens(np.arange(5, dtype=np.int32), "no") for _ in indices]
        waves = [np.zeros(16000, np.float32) for _ in indices]
        for w, i in zip(waves, indices, strict=True):
            w[0] = i
        return waves

    def translate_speech(self, items, source, target, **kw):
        return self._speech([self._index(x) for x in items])

    def synthesize(self, texts, language, **kw):
        return self._speech([TEXTS[language].index(t) for t in texts])


def test_metrics_keys_and_values():
    model = FakeModel()
    out = evaluate(model, _records(drop_fr_audio_of=2), progress=False)
    m = out["metrics"]
    assert m["asr_cer/en"] == 0.0 and m["asr_wer/fr"] == 0.0 and m["asr_exact_match/en"] == 1.0
    assert m["mt_bleu/en-fr"] == pytest.approx(100.0) and m["mt_exact_match/fr-en"] == 1.0
    assert 0 < m["ast_bleu/en-fr"] < 100 and m["ast_exact_match/en-fr"] == pytest.approx(2 / 3)
    assert m["s2st_asr_bleu/en-fr"] == pytest.approx(100.0)
    assert m["tts_cer/fr"] == 0.0
    # Record 2 has no French audio: French-source speech tasks see 2 records.
    assert m["num_examples/asr/fr"] == 2 and m["num_examples/asr/en"] == 3
    assert m["num_examples/asr"] == 5 and m["num_examples/mt"] == 6
    rows = out["predictions"]["s2st"]
    assert {r["id"] for r in rows} == {"r0", "r1", "r2"}
    assert all(r["prediction"] == r["reference"] for r in rows)
    assert out["predictions"]["ast"][1]["prediction"] == "completely wrong"


def test_directions_tasks_and_limit():
    model = FakeModel()
    out = evaluate(
        model, _records(), tasks=["asr", "MT"], directions=["fr-en"], limit=2, progress=False
    )
    m = out["metrics"]
    assert set(m) == {
        "asr_cer/fr",
        "asr_wer/fr",
        "asr_exact_match/fr",
        "mt_bleu/fr-en",
        "mt_exact_match/fr-en",
        "num_examples/asr/fr",
        "num_examples/mt/fr-en",
        "num_examples/asr",
        "num_examples/mt",
    }
    assert m["num_examples/asr"] == 2
    model.directions = {"ASR": {"en"}}  # trained directions pick the defaults
    out = evaluate(model, _records(), tasks=["ASR"], progress=False)
    assert "asr_cer/en" in out["metrics"] and "asr_cer/fr" not in out["metrics"]
    with pytest.raises(ValueError, match="evaluable tasks"):
        evaluate(model, _records(), tasks=["SING"], progress=False)


def test_limit_per_task():
    """A mapping limits the tasks it names; the others read every record."""
    model = FakeModel()
    records = _records()
    out = evaluate(
        model, records, tasks=["ASR", "MT"], directions=["fr-en"], limit={"asr": 2}, progress=False
    )
    everything = evaluate(model, records, tasks=["MT"], directions=["fr-en"], progress=False)
    assert out["metrics"]["num_examples/asr"] == 2
    assert out["metrics"]["num_examples/mt"] == everything["metrics"]["num_examples/mt"] > 2
    with pytest.raises(ValueError, match=r"unknown tasks \['SING'\]"):
        evaluate(model, records, tasks=["ASR"], limit={"SING": 1}, progress=False)
    with pytest.raises(ValueError, match=r"limit\['ASR'\]=-1"):
        evaluate(model, records, tasks=["ASR"], limit={"ASR": -1}, progress=False)


def test_speech_tokens_are_not_scored():
    out = evaluate(FakeModel(can_decode=False), _records(), tasks=["TTS"], progress=False)
    assert not any(k.startswith("tts_cer") for k in out["metrics"])
    assert out["metrics"]["num_examples/tts"] == 6
    assert all(r["num_audio_tokens"] == 5 for r in out["predictions"]["tts"])


def test_evaluate_workdir_writes_metrics_and_predictions(tmp_path, monkeypatch, capsys):
    import ml_collections

    config = ml_collections.ConfigDict(
        {
            "data": {"mixture": ["demo:ASR:en:1"], "datasets": {"demo": "demo_speech"}},
            "evaluation": {
                "splits": ["test", "validation"],
                "tasks": ["ASR", "MT"],
                "limit": {"ASR": 2},  # per task, as configs/demo.py; MT: every record
            },
        }
    )
    monkeypatch.setattr(run_lib, "open_split", lambda cfg, alias, split: _records())
    model = FakeModel()
    model.step = 7
    results = run_lib.evaluate_workdir(config, str(tmp_path), model=model)
    out_dir = tmp_path / "eval" / "7"
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert set(metrics) == {"test", "validation"} and metrics == results
    assert metrics["test"]["num_examples/asr"] == 4  # en and fr, 2 records each
    assert metrics["test"]["num_examples/mt"] == 6  # en-fr and fr-en, all 3 records
    lines = (out_dir / "asr.jsonl").read_text().splitlines()
    assert len(lines) == 8 and json.loads(lines[0])["split"] == "test"
    assert os.path.exists(out_dir / "mt.jsonl")
    assert "asr_cer/en" in capsys.readouterr().out
    bad = ml_collections.ConfigDict({"evaluation": {"splitz": ["test"]}})
    with pytest.raises(ValueError, match="unknown config.evaluation keys"):
        run_lib.evaluation_settings(bad)


def test_evaluations_of_one_step_keep_each_others_splits(tmp_path, monkeypatch):
    """The periodic validation eval at the last step, then the end-of-run test eval: both
    stay in eval/<step>/; evaluating a split again replaces only that split's entries."""
    import ml_collections

    config = ml_collections.ConfigDict(
        {
            "data": {"mixture": ["demo:ASR:en:1"], "datasets": {"demo": "demo_speech"}},
            "evaluation": {"splits": ["test"], "tasks": ["ASR"], "limit": 2},
        }
    )
    monkeypatch.setattr(run_lib, "open_split", lambda cfg, alias, split: _records())
    model = FakeModel()
    model.step = 9
    run_lib.evaluate_workdir(config, str(tmp_path), model=model, splits=["validation"])
    run_lib.evaluate_workdir(config, str(tmp_path), model=model)
    run_lib.evaluate_workdir(config, str(tmp_path), model=model)  # test again
    out_dir = tmp_path / "eval" / "9"
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert set(metrics) == {"test", "validation"}
    splits = [json.loads(x)["split"] for x in (out_dir / "asr.jsonl").read_text().splitlines()]
    assert splits.count("validation") == splits.count("test") == 4


def test_stored_results_only_when_every_split_was_evaluated(tmp_path, monkeypatch):
    """A re-run of a finished `audiopalm train` prints these instead of evaluating again."""
    import ml_collections

    config = ml_collections.ConfigDict(
        {
            "data": {"mixture": ["demo:ASR:en:1"], "datasets": {"demo": "demo_speech"}},
            "evaluation": {"splits": ["test", "other"], "tasks": ["ASR"], "limit": 2},
        }
    )
    monkeypatch.setattr(run_lib, "open_split", lambda cfg, alias, split: _records())
    model = FakeModel()
    model.step = 5
    assert run_lib.stored_results(config, str(tmp_path), 5) is None
    # The periodic validation eval and one end-of-run split: not finished yet.
    run_lib.evaluate_workdir(config, str(tmp_path), model=model, splits=["validation"])
    run_lib.evaluate_workdir(config, str(tmp_path), model=model, splits=["test"])
    assert run_lib.stored_results(config, str(tmp_path), 5) is None
    results = run_lib.evaluate_workdir(config, str(tmp_path), model=model)
    assert run_lib.stored_results(config, str(tmp_path), 5) == results
    assert run_lib.stored_results(config, str(tmp_path), 6) is None  # another step


def test_real_model_end_to_end(tmp_path):
    """The real AudioPaLM (tiny, random) through evaluate: plumbing, not quality."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "inference"))
    from inference_fakes import make_vocab, make_workdir

    from audiopalm_jax.inference import AudioPaLM

    vocab = make_vocab(str(tmp_path / "chars"))
    workdir = make_workdir(str(tmp_path / "wd"), vocab)
    model = AudioPaLM.from_pretrained(workdir, batch_size=2)
    records = [
        {
            "id": "a",
            "voice": "v",
            "utterances": {
                "en": {
                    "text": "a cat",
                    "audio": (np.sin(np.arange(8000) / 5) * 9000).astype(np.int16),
                },
                "fr": {"text": "un chat", "audio": None},
            },
        }
    ]
    out = evaluate(
        model,
        records,
        tasks=["ASR", "TTS", "MT"],
        directions={"ASR": ["en"], "TTS": ["en"], "MT": ["en-fr"]},
        max_new_tokens=6,
        progress=False,
    )
    m = out["metrics"]
    assert {"asr_cer/en", "tts_cer/en", "mt_bleu/en-fr"} <= set(m)
    assert all(np.isfinite(v) for v in m.values())
