"""The grain pipeline on a tiny on-disk demo_speech: contract, shards, mixture, resume."""

import ml_collections
import numpy as np
import pytest

from audiopalm_jax.audio.base import AudioTokenizer
from audiopalm_jax.audio.commands import tokenize_dataset
from audiopalm_jax.data import demo_speech, packing, pipeline
from audiopalm_jax.train.config import base_config
from audiopalm_jax.train.loop import DEFAULT_CHARS
from audiopalm_jax.vocab import JointVocab, build_char_tokenizer, load_text_tokenizer

NUM_AUDIO = 16
LANGS = ("en", "fr", "de", "es")


class LoudnessTokenizer(AudioTokenizer):
    """A stand-in audio tokenizer: one token per 40 ms from its mean loudness."""

    kind = ""  # not registered: tests only
    num_tokens = property(lambda self: NUM_AUDIO)
    frame_rate = property(lambda self: 25.0)
    sample_rate = property(lambda self: 16_000)

    def encode(self, waveforms, sample_rate):
        rows = []
        for w in waveforms:
            frames = np.abs(np.asarray(w, np.float32)[: len(w) // 640 * 640].reshape(-1, 640))
            rows.append((frames.mean(axis=1) // 64).astype(np.int32) % NUM_AUDIO)
        lengths = np.asarray([len(r) for r in rows], np.int32)
        out = np.full((len(rows), lengths.max()), -1, np.int32)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out, lengths

    def get_config(self):
        return {}

    def get_arrays(self):
        return {"unused": np.zeros(1, np.float32)}

    @classmethod
    def from_saved(cls, config, arrays, directory):
        return cls()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    data_dir, tokens = str(root / "tfds"), str(root / "tokens")
    demo_speech.prepare_demo_speech(data_dir, size="tiny", num_workers=2)
    tok = LoudnessTokenizer()
    for split in ("train", "validation"):
        source = demo_speech.load_demo_speech(data_dir, split, size="tiny")
        for lang in LANGS:
            path = pipeline.tokens_path(tokens, "demo_speech", split, lang)
            tokenize_dataset(tok, source, path, audio_key=f"audio/{lang}", progress=False)
    text = build_char_tokenizer(list(DEFAULT_CHARS), str(root / "char"))
    return data_dir, tokens, JointVocab(load_text_tokenizer(text), NUM_AUDIO)


MIXTURE = [
    "demo_speech:ASR:en:1",
    "demo_speech:ASR+AST+S2ST:fr-de:1",
    "demo_speech:TTS:es:1",
    "demo_speech:MT:de-en:1",
]


def _config(env, mixture=MIXTURE, **data) -> ml_collections.ConfigDict:
    data_dir, tokens, _ = env
    c = base_config()
    c.data = ml_collections.ConfigDict(
        dict(
            source="tfds",
            batch_size=4,
            seq_len=256,
            data_dir=data_dir,
            datasets={"demo_speech": {"name": "demo_speech/tiny", "splits": {}}},
            mixture=list(mixture),
            tokens_dir=tokens,
            audio_tokenizer_dir="",
            packing_bins=8,
            read_threads=0,
        )
    )
    c.data.update(data)
    return c


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(a, b) -> bool:
    return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)


def test_batches_follow_the_contract(env):
    vocab = env[2]
    it = pipeline.make_iterator(_config(env), vocab, "train", process_index=0, process_count=1)
    tags = set()
    for batch in _take(it, 3):
        assert set(batch) == set(packing.BATCH_KEYS)
        assert batch["inputs"].shape == (4, 256) and batch["inputs"].dtype == np.int32
        assert batch["loss_weights"].dtype == np.float32
        for ids, p in packing.check_batch(batch):
            # Loss only on target tokens: nothing before the last prompt position.
            assert p > 0 and ids[p - 1] == vocab.sep_id and ids[-1] == vocab.eos_id
            tags.add(vocab.decode(ids[:p])[0].split("]")[0] + "]")
        w = batch["loss_weights"] * batch["prefix_mask"]
        assert np.all(w[:, :-1][batch["prefix_mask"][:, 1:] == 1] == 0)
    assert tags == {
        "[ASR English]",
        "[ASR AST S2ST French German]",
        "[TTS Spanish]",
        "[MT German English]",
    }
    assert it.stats()["skipped_missing"] == 0 and it.stats()["packing_efficiency"] > 0.8


def test_aligned_positions_follow_the_source_or_the_translation(env):
    """With ``model.position_scheme="aligned"`` every segment's positions are a clock: text
    ids +5, audio ids +2. After each separator an output in the source's language (ASR,
    TTS) goes back to where the source began (just past the task tag); a translation
    (AST, S2ST, MT) starts where the source's separator ended, for audio and text sources
    and combined tasks alike."""
    vocab = env[2]
    cfg = _config(env)
    cfg.model.update(position_scheme="aligned", text_position_step=5, audio_position_step=2)

    def expected(ids):
        tag = vocab.decode_text(ids).split("]")[0]
        translated = [t in ("AST", "S2ST", "MT") for t in tag[1:].split() if t.isupper()]
        tag_end = len(tag) + 2  # "[...] ": one id per character
        out, t, source_start, source_end, k = [], 0, None, None, 0
        for i, tok in enumerate(ids):
            if i == tag_end:
                source_start = t
            if i > tag_end and ids[i - 1] == vocab.sep_id:
                source_end = t if source_end is None else source_end
                t = source_end if translated[k] else source_start
                k += 1
            out.append(t)
            t += 2 if vocab.is_audio(np.array([tok]))[0] else 5
        return np.array(out)

    it = pipeline.make_iterator(cfg, vocab, "train", process_index=0, process_count=1)
    segments = [seg for batch in _take(it, 3) for seg in packing.check_batch(batch, expected)]
    tags = {vocab.decode_text(ids).split("]")[0] for ids, _ in segments}
    assert len(tags) == 4  # ASR (audio source), TTS and MT (text), the combined task


def test_deterministic_and_resumable(env):
    vocab, cfg = env[2], _config(env)
    make = lambda c=cfg: pipeline.make_iterator(c, vocab, process_index=0, process_count=1)
    first = _take(make(), 5)
    assert _same(first, _take(make(), 5))
    it = make()
    _take(it, 2)
    state = it.get_state()
    resumed = make()
    resumed.set_state(state)
    assert _same(_take(resumed, 3), first[2:])
    other = _config(env)
    other.seed = 1
    assert not _same(_take(make(other), 5), first)


def _stream(env, process_index, process_count, mixture=("demo_speech:ASR:en",)):
    ds = pipeline.make_examples(
        _config(env, mixture),
        env[2],
        process_index=process_index,
        process_count=process_count,
        num_epochs=1,
        shuffle=False,
    )
    return [ex["ids"].tobytes() for ex in ds]


def test_process_shards_are_disjoint_and_complete(env):
    whole = _stream(env, 0, 1)
    parts = [_stream(env, i, 3) for i in range(3)]
    assert len(whole) == 16 and len(set(whole)) == 16
    assert sum(len(p) for p in parts) == 16
    assert not (set(parts[0]) & set(parts[1]) or set(parts[1]) & set(parts[2]))
    assert set().union(*parts) == set(whole)
    # Each process yields its rows of the global batch.
    it = pipeline.make_iterator(_config(env), env[2], process_index=1, process_count=2)
    assert next(it)["inputs"].shape == (2, 256)
    with pytest.raises(ValueError, match="divisible"):
        pipeline.make_iterator(_config(env), env[2], process_index=0, process_count=3)


def test_epochs_reshuffle_every_record_once():
    order = pipeline.EpochOrder(pipeline.shard_records(10, 1, 2), seed=3, shuffle=True)
    epochs = [[order(e * 5 + k) for k in range(5)] for e in range(3)]
    for ep in epochs:
        assert sorted(ep) == [1, 3, 5, 7, 9]
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]


def test_mixture_proportions_follow_weights(env):
    mixture = ["demo_speech:ASR:en:1", "demo_speech:MT:fr-en:3", "demo_speech:TTS:de:4"]
    ds = pipeline.make_examples(_config(env, mixture), env[2])
    counts = {"ASR": 0, "MT": 0, "TTS": 0}
    n = 400
    for i in range(n):
        counts[_task(env[2], ds[i])] += 1
    assert abs(counts["ASR"] / n - 1 / 8) < 0.03
    assert abs(counts["MT"] / n - 3 / 8) < 0.03
    assert abs(counts["TTS"] / n - 4 / 8) < 0.03


def _task(vocab, ex) -> str:
    tag = vocab.decode(ex["ids"][: int(ex["prompt_len"])])[0]
    return tag[1 : tag.index(" ")]


def test_warmup_stage_comes_first_then_the_mixture_resumably(env):
    vocab = env[2]
    mixture = ["demo_speech:MT:fr-en:1", "demo_speech:TTS:de:1"]
    cfg = _config(env, mixture, warmup_mixture=["demo_speech:ASR:en:1"], warmup_examples=30)
    ds = pipeline.make_examples(cfg, vocab)
    tasks = [_task(vocab, ds[i]) for i in range(80)]
    assert tasks[:30] == ["ASR"] * 30 and set(tasks[30:]) == {"MT", "TTS"}
    # After the warm-up the stream is the plain mixture from its start.
    plain = pipeline.make_examples(_config(env, mixture), vocab)
    for i in range(30, 80):
        np.testing.assert_array_equal(ds[i]["ids"], plain[i - 30]["ids"])
    # Validation reads the mixture only; a checkpointed train iterator resumes mid-stage.
    val = pipeline.make_examples(cfg, vocab, "validation")
    assert {_task(vocab, val[i]) for i in range(10)} == {"MT", "TTS"}
    make = lambda: pipeline.make_iterator(cfg, vocab, process_index=0, process_count=1)
    first = _take(make(), 6)
    it = make()
    _take(it, 2)
    resumed = make()
    resumed.set_state(it.get_state())
    assert _same(_take(resumed, 4), first[2:])
    with pytest.raises(ValueError, match="warmup_examples=5 .*non-empty data.warmup_mixture"):
        pipeline.make_examples(_config(env, mixture, warmup_examples=5), vocab)


def test_validation_iterator_is_repeated_and_deterministic(env):
    cfg = _config(env, ["demo_speech:ASR:en", "demo_speech:TTS:fr"], batch_size=8)
    make = lambda: pipeline.make_iterator(
        cfg, env[2], "validation", process_index=0, process_count=1
    )
    a = _take(make(), 4)  # 8 records per entry: several epochs
    assert _same(a, _take(make(), 4))
    assert sum(len(packing.check_batch(b)) for b in a) > 16


def test_speechgpt_format(env, tmp_path):
    cfg = _config(env, ["demo_speech:ASR+AST+S2ST:en-fr"], format="speechgpt")
    with pytest.raises(ValueError, match="vocab.chars"):  # the default chars lack "<>"
        pipeline.make_iterator(cfg, env[2], process_index=0, process_count=1)
    text = build_char_tokenizer(list(DEFAULT_CHARS + "<>"), str(tmp_path))
    vocab = JointVocab(load_text_tokenizer(text), NUM_AUDIO)
    batch = next(pipeline.make_iterator(cfg, vocab, process_index=0, process_count=1))
    ids, p = packing.check_batch(batch)[0]
    prompt = vocab.decode(ids[:p])
    assert prompt[0].startswith("[Human]: ") and prompt[-1].endswith("<eoh>. [SpeechGPT]: ")
    answer = vocab.decode(ids[p:-1])
    assert answer[0].startswith("[tq] ") and "; [ta] " in answer[0]
    assert answer[0].endswith("; [ua] <sosp>") and answer[-1] == "<eosp><eoa>"


def test_missing_tokens_need_a_tokenizer(env):
    cfg = _config(env, tokens_dir="")
    it = pipeline.make_iterator(cfg, env[2], process_index=0, process_count=1)
    with pytest.raises(FileNotFoundError, match="audiopalm prepare"):
        next(it)
