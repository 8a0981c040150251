"""The acoustic stage (units + a voice prompt -> log-mel -> Griffin-Lim) at tiny sizes:
masking, save / load, training and resuming on espeak speech of two voices, voice
conditioning judged by resemblyzer, the API's ``voice=`` checks, and w2v-BERT tokens."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from audiopalm_jax.acoustic import train as train_lib
from audiopalm_jax.acoustic.model import AcousticConfig, AcousticModel
from audiopalm_jax.acoustic.stage import AcousticStage
from audiopalm_jax.acoustic.train import TrainSettings, train_acoustic
from audiopalm_jax.audio import frontend
from audiopalm_jax.data import espeak
from audiopalm_jax.inference import AudioPaLM, SpeechTokens

sys.path.insert(0, str(Path(__file__).parents[1] / "inference"))
from inference_fakes import NUM_AUDIO, make_vocab, make_workdir  # noqa: E402

TINY = dict(d_model=32, num_layers=2, num_heads=2, head_dim=16, mlp_dim=64, max_tokens=32)
CFG = AcousticConfig(num_tokens=16, prompt_seconds=1.0, **TINY)
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
    "Peter Piper picked a peck of pickled peppers.",
    "A journey of a thousand miles begins with a single step.",
    "Music is the universal language of mankind.",  # held out: the test units
    "The rain in Spain stays mainly in the plain.",  # held out: the test prompts
)
TRAIN_UTTS = 5
VOICES = {"A": espeak.Voice("m3", 175, 30), "B": espeak.Voice("f4", 175, 80)}  # low / high
SETTINGS = TrainSettings(
    steps=100,
    batch_size=8,
    learning_rate=3e-3,
    warmup_steps=10,
    log_every_steps=10,
    checkpoint_every_steps=30,
    stats_utterances=16,
)


def energy_units(wave: np.ndarray, num_tokens: int = CFG.num_tokens) -> np.ndarray:
    """A fake deterministic tokenizer: each 640-sample (25 Hz) frame's RMS level in
    quarter-decades (speaker-neutral after loudness normalisation)."""
    frames = len(wave) // 640
    rms = np.sqrt((wave[: frames * 640].reshape(frames, 640) ** 2).mean(1))
    return np.clip(np.round(np.log10(rms + 1e-4) * 4 + 16), 0, num_tokens - 1).astype(np.int32)


def random_stage(cfg: AcousticConfig, seed: int = 0) -> AcousticStage:
    """An untrained stage with every weight random (``mel_out`` is zero-initialised)."""
    _, state = nnx.split(AcousticModel(cfg, rngs=nnx.Rngs(seed)), nnx.Param)
    rng = np.random.default_rng(seed)  # numpy noise: no jax.random compile per shape
    nnx.replace_by_pure_dict(
        state,
        jax.tree.map(
            lambda x: jnp.asarray(x + 0.1 * rng.standard_normal(x.shape, np.float32)),
            nnx.to_pure_dict(state),
        ),
    )
    mean = rng.normal(-4.0, 1.0, cfg.n_mels).astype(np.float32)
    std = rng.uniform(0.5, 1.5, cfg.n_mels).astype(np.float32)
    prompt = rng.normal(-5.0, 1.0, (cfg.prompt_tokens, cfg.frame_dim)).astype(np.float32)
    return AcousticStage(cfg, state, mean, std, prompt, {"default_voice": "random"})


def _noise(seconds: float, seed: int = 0, rate: int = 16000) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.3, 0.3, int(seconds * rate)).astype(np.float32)


# -- 1. the model: shapes and masking -------------------------------------------------------
def test_model_shapes_masking_row_independence_and_prompt_conditioning():
    cfg = CFG
    model = AcousticModel(cfg, rngs=nnx.Rngs(0))
    assert not np.any(np.asarray(model.mel_out[...]))  # zero init: set it to random values
    model.mel_out[...] = jnp.asarray(np.random.default_rng(1).standard_normal(model.mel_out.shape))
    graphdef, params = nnx.split(model)
    run = jax.jit(lambda p, *a: nnx.merge(graphdef, p)(*a))

    b, t, p = 2, 10, cfg.prompt_tokens
    rng = np.random.default_rng(0)
    units = rng.integers(0, cfg.num_tokens, (b, t)).astype(np.int32)
    mask = np.ones((b, t), bool)
    mask[0, 7:] = False
    units[0, 7:] = cfg.num_tokens  # padding id
    prompt = rng.standard_normal((b, p, cfg.frame_dim)).astype(np.float32)
    pmask = np.ones((b, p), bool)
    pmask[0, p - 5 :] = False
    out = np.asarray(run(params, units, mask, prompt, pmask))
    assert out.shape == (b, t, cfg.stack * cfg.n_mels) == (2, 10, 160)
    assert np.all(out[0, 7:] == 0) and np.all(np.isfinite(out))
    assert np.abs(out[0, :7]).min() > 0 and np.abs(out[1]).min() > 0

    def again(units=units, mask=mask, prompt=prompt, pmask=pmask):
        return np.asarray(run(params, units, mask, prompt, pmask))

    # Padded unit ids, masked prompt frames and the other row do not reach valid outputs.
    u2 = units.copy()
    u2[0, 7:] = rng.integers(0, cfg.num_tokens, 3)
    np.testing.assert_allclose(again(units=u2)[0, :7], out[0, :7], atol=1e-6)
    p2 = prompt.copy()
    p2[0, p - 5 :] += 3.0
    np.testing.assert_allclose(again(prompt=p2)[0], out[0], atol=1e-6)
    u3, p3 = units.copy(), prompt.copy()
    u3[1] = rng.integers(0, cfg.num_tokens, t)
    p3[1] = rng.standard_normal((p, cfg.frame_dim))
    m3 = mask.copy()
    m3[1, 4:] = False
    moved = again(units=u3, prompt=p3, mask=m3)
    np.testing.assert_allclose(moved[0], out[0], atol=1e-6)
    assert np.abs(moved[1, :4] - out[1, :4]).max() > 1e-3
    # The (valid) prompt conditions every valid output.
    p4 = prompt.copy()
    p4[0, : p - 5] = rng.standard_normal((p - 5, cfg.frame_dim))
    changed = again(prompt=p4)
    assert np.abs(changed[0, :7] - out[0, :7]).max(-1).min() > 1e-3
    np.testing.assert_allclose(changed[1], out[1], atol=1e-6)


def test_config_checks():
    assert (CFG.stack, CFG.prompt_tokens, CFG.samples_per_token, CFG.frame_dim) == (
        2,
        25,
        640,
        160,
    )
    assert AcousticConfig(num_tokens=4, token_rate=50.0).stack == 1
    with pytest.raises(ValueError, match=r"token_rate=30\.0 Hz must divide"):
        AcousticConfig(num_tokens=4, token_rate=30.0)
    with pytest.raises(ValueError, match="num_tokens=0"):
        AcousticConfig(num_tokens=0)
    with pytest.raises(ValueError, match="unknown acoustic config keys"):
        AcousticConfig.from_dict({"num_tokens": 4, "dmodel": 3})


# -- 2. the stage: save / load, lengths, bad units -----------------------------------------
def test_stage_save_load_round_trip_lengths_and_unit_checks(tmp_path):
    stage = random_stage(CFG)
    stage.save(str(tmp_path / "stage"))
    again = AcousticStage.load(str(tmp_path / "stage"))
    assert again.cfg == stage.cfg and again.info == stage.info
    np.testing.assert_array_equal(again.default_prompt, stage.default_prompt)

    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 16, 40), rng.integers(0, 16, 5), np.zeros(0, np.int32)]
    voices = [None, (_noise(1.5, 1, 22050), 22050), None]  # 40 units: two chunks of <= 32
    a, b = stage.synthesize(rows, voices), again.synthesize(rows, voices)
    for row, x, y in zip(rows, a, b, strict=True):
        assert x.dtype == np.float32 and len(x) == len(row) * CFG.samples_per_token
        assert np.all(np.isfinite(x))
        np.testing.assert_array_equal(x, y)
    assert len(a[2]) == 0 and np.abs(a[0]).max() > 0
    # A voice changes the output; the default voice is the saved prompt.
    other = stage.synthesize([rows[1]], [(_noise(1.5, 1, 22050), 22050)])[0]
    np.testing.assert_array_equal(other, a[1])
    assert not np.array_equal(stage.synthesize([rows[1]])[0], a[1])

    with pytest.raises(ValueError, match=r"unit row 1: ids must be in \[0, 16\), got 0\.\.16"):
        stage.synthesize([rows[1], np.arange(17)])
    with pytest.raises(ValueError, match=r"\[0, 16\), got -1\.\.2"):
        stage.synthesize([np.asarray([2, -1])])
    with pytest.raises(ValueError, match="2 voices for 1 unit rows"):
        stage.synthesize([rows[1]], [None, None])
    with pytest.raises(FileNotFoundError, match="no acoustic stage"):
        AcousticStage.load(str(tmp_path / "missing"))


# -- 3. training on two espeak voices, and resuming -----------------------------------------
@pytest.fixture(scope="module")
def utterances() -> dict[str, list[np.ndarray]]:
    """Every sentence in each voice: 16 kHz float32, loudness-normalised."""
    out = {}
    for name, v in VOICES.items():
        out[name] = []
        for s in SENTENCES:
            audio, sr = espeak.synthesize(s, "en", v.variant, v.rate, v.pitch)
            out[name].append(frontend.prepare_waveform(audio, sr, 16000, normalize=True))
    return out


class TwoVoices:
    """The first ``TRAIN_UTTS`` sentences of each voice: a random 32-unit crop of one as the
    target, another utterance of the same voice as the prompt."""

    def __init__(self, utterances):
        self.utts = utterances
        self.items = [(v, i) for v in sorted(utterances) for i in range(TRAIN_UTTS)]

    def __len__(self) -> int:
        return len(self.items)

    def example(self, index, rng):
        voice, i = self.items[index]
        wave = self.utts[voice][i]
        n = CFG.max_tokens * CFG.samples_per_token
        start = int(rng.integers(0, max(1, (len(wave) - n) // 640))) * 640
        wave = wave[start : start + n]
        k = int(rng.integers(TRAIN_UTTS - 1))
        return energy_units(wave), wave, self.utts[voice][k + (k >= i)]


@pytest.fixture(scope="module")
def same_step_fn():
    """Reuses the jitted train step across ``train_acoustic`` calls of the same config and
    feature statistics (each call would recompile an identical step: ~10 s on CPU)."""
    made, real = {}, train_lib.make_step

    def make_step(cfg, optimizer, mean, std):
        key = (cfg, mean.tobytes(), std.tobytes())
        if key not in made:
            made[key] = real(cfg, optimizer, mean, std)
        return made[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_lib, "make_step", make_step)
        yield made


def _train(source, directory, stop_at=None):
    """train_acoustic with SETTINGS; ``stop_at``: interrupt at that logged step."""
    logs = []

    def progress(msg):
        logs.append(msg)
        if stop_at is not None and f"step {stop_at}/" in msg:
            raise KeyboardInterrupt(msg)

    try:
        stage = train_acoustic(source, CFG, SETTINGS, str(directory), progress=progress)
    except KeyboardInterrupt:
        stage = None
    return stage, logs


@pytest.fixture(scope="module")
def trained(utterances, same_step_fn, tmp_path_factory):
    stage, logs = _train(TwoVoices(utterances), tmp_path_factory.mktemp("uninterrupted"))
    return stage, logs


def _l1(logs):
    return [float(m) for m in re.findall(r"\| L1 ([0-9.]+) \|", "\n".join(logs))]


def test_training_lowers_the_loss_and_saves_a_usable_stage(trained, utterances):
    stage, logs = trained
    losses = _l1(logs)
    assert len(losses) == SETTINGS.steps // SETTINGS.log_every_steps
    assert losses[-1] < 0.9 * losses[0], losses
    assert stage.info["steps"] == SETTINGS.steps
    units = energy_units(utterances["A"][5])
    wave = stage.synthesize([units])[0]
    assert len(wave) == len(units) * 640 and np.all(np.isfinite(wave))


def test_resume_after_interruption_matches_an_uninterrupted_run(
    trained, utterances, same_step_fn, tmp_path
):
    source = TwoVoices(utterances)
    stage, logs = _train(source, tmp_path, stop_at=70)  # last checkpoint: step 60
    assert stage is None and not (tmp_path / "config.json").exists()
    stage, logs = _train(source, tmp_path)
    assert any("resumed at step 60 of 100" in m for m in logs), logs
    assert "step 70/100" in logs[1]  # steps 61..70 are run again
    ref = trained[0]
    np.testing.assert_array_equal(stage.mean, ref.mean)
    np.testing.assert_array_equal(stage.default_prompt, ref.default_prompt)
    ours, theirs = jax.tree.leaves(stage.params), jax.tree.leaves(ref.params)
    assert len(ours) == len(theirs) > 0
    for x, y in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-6)
    assert len(same_step_fn) == 1  # every run used the same compiled step
    # A finished directory is loaded, not retrained.
    loaded, logs = _train(source, tmp_path)
    assert "is trained; loading it" in logs[0] and len(logs) == 1
    np.testing.assert_array_equal(
        np.asarray(jax.tree.leaves(loaded.params)[0]), np.asarray(ours[0])
    )


# -- 4. the prompt carries the voice --------------------------------------------------------
@pytest.mark.slow
def test_prompt_voice_reaches_the_output(trained, utterances):
    pytest.importorskip("resemblyzer")
    from audiopalm_jax.evaluation.judges import SpeakerJudge

    stage = trained[0]
    judge = SpeakerJudge()
    names, centroids = judge.centroids(
        {v: utterances[v][:TRAIN_UTTS] for v in VOICES}, 16000
    )  # names: ["A", "B"]
    prompts = [(utterances[v][6], 16000) for v in names]  # a held-out sentence
    margins = {}
    for speaker in names:  # the same units (held-out sentence 5 of each voice) in A and B
        units = energy_units(utterances[speaker][5])
        sims = judge.embed(stage.synthesize([units, units], prompts), 16000) @ centroids.T
        margins[speaker] = (sims[0, 0] - sims[0, 1], sims[1, 1] - sims[1, 0])
    print("voice margins (A prompt, B prompt) per unit source:", margins)
    # Observed margins (100 steps): about 0.19-0.23 each; real speech: about 0.35.
    assert all(m > 0.05 for pair in margins.values() for m in pair), margins


# -- 5. the API's voice= --------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(tmp_path_factory):
    vocab = make_vocab(str(tmp_path_factory.mktemp("chars")))
    workdir = make_workdir(str(tmp_path_factory.mktemp("workdir")), vocab)
    stage = random_stage(AcousticConfig(num_tokens=NUM_AUDIO, prompt_seconds=1.0, **TINY))
    return AudioPaLM.from_pretrained(workdir, batch_size=2, acoustic=stage), workdir


@pytest.mark.parametrize(
    "voice, problem",
    [
        (np.zeros(0, np.float32), r"voice 0: audio is empty"),
        (np.full(16000, np.nan, np.float32), r"voice 0: audio has 16000 NaN/inf samples"),
        (_noise(0.2), r"voice 0: 0\.20 s of audio is too short.*at least 0\.5 s"),
        ((_noise(0.2, rate=8000), 8000), r"voice 0: 0\.20 s of audio is too short"),
        (5, r"voice 0: expected a path.*got int"),
        ({"wave": _noise(1.0)}, r"voice 0: expected a path.*got dict"),
        ([_noise(1.0), _noise(1.0)], r"voice= has 2 entries for 1 inputs"),
        (np.zeros(16000, np.float32), r"voice 0: audio is all zeros"),
        ("/nonexistent/prompt.wav", r"voice 0: cannot read audio file"),
    ],
)
def test_bad_voice_is_a_one_line_error_before_decoding(api, monkeypatch, voice, problem):
    model, _ = api

    def no_decoding(*a, **k):
        raise AssertionError("decoding ran before the voice was checked")

    monkeypatch.setattr(model, "_run", no_decoding)
    monkeypatch.setattr(model, "generate", no_decoding)
    with pytest.raises(ValueError, match=problem) as e:
        model.synthesize("abc", "en", voice=voice)
    assert "\n" not in str(e.value) and "voice" in str(e.value)
    with pytest.raises(ValueError, match="voice"):
        model.translate_speech((_noise(1.0), 16000), "fr", "en", voice=voice)


def test_bad_voice_in_a_list_and_wrong_list_length(api, monkeypatch):
    model, _ = api
    monkeypatch.setattr(model, "_run", lambda *a, **k: pytest.fail("decoding ran"))
    with pytest.raises(ValueError, match=r"voice 1: 0\.20 s"):
        model.synthesize(["abc", "ab"], "en", voice=[_noise(1.0), _noise(0.2)], sample_rate=16000)
    with pytest.raises(ValueError, match="voice= has 3 entries for 2 inputs; give one or 2"):
        model.synthesize(["abc", "ab"], "en", voice=[None, None, None])


def test_valid_voices_as_array_tuple_and_path(api, tmp_path):
    import soundfile as sf

    model, _ = api
    voice = _noise(1.2, 3, 22050)
    path = tmp_path / "voice.wav"
    sf.write(str(path), voice, 22050, subtype="FLOAT")
    by_tuple = model.synthesize("abc", "en", voice=(voice, 22050), max_new_tokens=8)
    by_path = model.synthesize("abc", "en", voice=str(path), max_new_tokens=8)
    by_array = model.synthesize("abc", "en", voice=voice, sample_rate=22050, max_new_tokens=8)
    default = model.synthesize("abc", "en", max_new_tokens=8)
    for w in (by_tuple, by_path, by_array, default):
        assert isinstance(w, np.ndarray) and w.dtype == np.float32 and np.all(np.isfinite(w))
        assert len(w) % 640 == 0 and len(w) == len(default)
    np.testing.assert_array_equal(by_tuple, by_path)
    np.testing.assert_array_equal(by_tuple, by_array)
    if len(default):
        assert not np.array_equal(by_tuple, default)
    many = model.synthesize(["abc", "ab"], "en", voice=[(voice, 22050), None], max_new_tokens=8)
    assert isinstance(many, list) and len(many) == 2
    np.testing.assert_array_equal(many[0], by_tuple)


def test_translate_speech_speaks_in_the_source_voice(api, monkeypatch):
    model, _ = api
    seen = []

    def capture(self, units, voices=None):
        seen.append(list(voices))
        return [np.zeros(len(u) * self.cfg.samples_per_token, np.float32) for u in units]

    monkeypatch.setattr(AcousticStage, "synthesize", capture)
    # Sources short enough for the prompt bucket the synthesize tests compiled (64).
    src = [(_noise(1.0, 1), 16000), (_noise(1.2, 2, 22050), 22050), (_noise(0.3, 3), 16000)]
    tokens = SpeechTokens(np.arange(6, dtype=np.int32))
    waves = model.translate_speech([*src, tokens], "fr", "en", max_new_tokens=8)
    assert len(waves) == 4 and all(w.dtype == np.float32 for w in waves)
    (voices,) = seen
    for (wave, rate), got in zip(src[:2], voices[:2], strict=True):
        expect = frontend.prepare_waveform(wave, rate, 16000, normalize=True)
        assert got[1] == 16000
        np.testing.assert_array_equal(got[0], expect)
    assert voices[2] is None  # 0.3 s: too short for a prompt -> the default voice
    assert voices[3] is None  # SpeechTokens have no voice
    # An explicit voice replaces every source's.
    voice = _noise(1.0, 9)
    model.translate_speech(src[:2], "fr", "en", voice=(voice, 16000), max_new_tokens=8)
    expect = frontend.prepare_waveform(voice, 16000, 16000, normalize=True)
    for got in seen[1]:
        np.testing.assert_array_equal(got[0], expect)


# -- 6. w2v-BERT tokens -> speech; stage / tokenizer mismatch ----------------------------------
def _tiny_w2v_checkpoint(path) -> str:
    """A random tiny Wav2Vec2BertModel (as tests/audio/test_w2v_bert.py)."""
    import torch
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

    torch.manual_seed(0)
    config = Wav2Vec2BertConfig(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        conv_depthwise_kernel_size=5,
        left_max_position_embeddings=6,
        right_max_position_embeddings=3,
        max_source_positions=256,
    )
    model = Wav2Vec2BertModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(path), safe_serialization=True)
    return str(path)


def test_w2v_bert_tokens_to_speech(utterances, tmp_path):
    pytest.importorskip("transformers")
    from audiopalm_jax.audio import W2vBertTokenizer

    speech = utterances["A"][:2] + utterances["B"][:2]
    tok = W2vBertTokenizer.fit(
        speech,
        16000,
        num_tokens=32,
        checkpoint=_tiny_w2v_checkpoint(tmp_path / "w2v"),
        layer=2,
        kmeans={"num_steps": 10, "batch_size": 256, "init_sample": 512},
    )
    cfg = AcousticConfig(
        num_tokens=tok.num_tokens,
        token_rate=tok.frame_rate,
        sample_rate=tok.sample_rate,
        prompt_seconds=1.0,
        **TINY,
    )
    assert (cfg.num_tokens, cfg.stack) == (32, 2)  # w2v-BERT tokens at 25 Hz
    tokens = tok.encode_one(utterances["B"][5], 16000)
    assert abs(len(tokens) - len(utterances["B"][5]) / 640) <= 2
    wave = random_stage(cfg).synthesize([tokens], [(utterances["B"][6], 16000)])[0]
    assert wave.dtype == np.float32 and len(wave) == len(tokens) * cfg.samples_per_token
    assert np.all(np.isfinite(wave)) and np.abs(wave).max() > 0


def test_from_pretrained_acoustic_stage_loading_and_mismatch(api, tmp_path):
    _, workdir = api
    wrong = random_stage(AcousticConfig(num_tokens=32, prompt_seconds=1.0, **TINY))
    with pytest.raises(ValueError, match="reads 32 audio tokens but the audio tokenizer has 16"):
        AudioPaLM.from_pretrained(workdir, acoustic=wrong)
    wrong.save(str(tmp_path / "wrong"))
    with pytest.raises(ValueError, match="reads 32 audio tokens"):
        AudioPaLM.from_pretrained(workdir, acoustic=str(tmp_path / "wrong"))
    # <workdir>/acoustic is found by itself; without one, no stage.
    assert AudioPaLM.from_pretrained(workdir).acoustic is None
    copy = tmp_path / "workdir"
    shutil.copytree(workdir, copy)
    stage = random_stage(AcousticConfig(num_tokens=NUM_AUDIO, prompt_seconds=1.0, **TINY))
    stage.save(str(copy / "acoustic"))
    found = AudioPaLM.from_pretrained(str(copy)).acoustic
    assert isinstance(found, AcousticStage) and found.cfg == stage.cfg
    units = np.arange(NUM_AUDIO)
    np.testing.assert_array_equal(found.synthesize([units])[0], stage.synthesize([units])[0])
    wrong.save(str(copy / "acoustic"))
    with pytest.raises(ValueError, match="reads 32 audio tokens"):
        AudioPaLM.from_pretrained(str(copy))
