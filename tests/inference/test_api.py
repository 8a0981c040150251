"""The AudioPaLM API on a saved tiny workdir with a fake audio tokenizer."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from inference_fakes import FakeTokenizer, constrained_log_prob, make_workdir

from audiopalm_jax.inference import AudioPaLM, Generation, SpeechTokens
from audiopalm_jax.inference import inputs as inputs_lib
from audiopalm_jax.inference.constraints import check_tokens
from audiopalm_jax.positions import PositionScheme


@pytest.fixture(scope="module")
def model(workdir) -> AudioPaLM:
    return AudioPaLM.from_pretrained(workdir, batch_size=4)


def _speech(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-0.5, 0.5, int(16000 * seconds)) * 32767).astype(np.int16)


def test_loads_params_vocab_config_and_tokenizer(model, workdir, vocab):
    assert model.step == 3
    assert model.vocab.size == vocab.size == model.model_config.vocab_size
    assert isinstance(model.audio_tokenizer, FakeTokenizer)
    assert model.directions["ASR"] == {"en", "fr"} and "fr-en" in model.directions["S2ST"]
    assert not model.model_config.scan_layers  # layers sliced once for decoding
    # A checkpoint directory works as well as the workdir.
    again = AudioPaLM.from_pretrained(os.path.join(workdir, "checkpoints"), step=3)
    np.testing.assert_array_equal(
        np.asarray(again.params["embedder"]["embedding"]),
        np.asarray(model.params["embedder"]["embedding"]),
    )


def test_every_task_returns_its_type(model):
    audio = (_speech(0.5, 0), 16000)
    assert isinstance(model.transcribe(audio, language="English"), str)
    assert isinstance(model.translate(audio, source="French", target="en"), str)
    assert isinstance(model.translate_text("hello", source="en", target="fr"), str)
    wave = model.translate_speech(audio, source="fr", target="English", max_new_tokens=8)
    assert isinstance(wave, np.ndarray) and wave.dtype == np.float32
    assert len(wave) % 640 == 0 and len(wave) <= 8 * 640
    tts = model.synthesize("hello", language="en", max_new_tokens=8)
    assert isinstance(tts, np.ndarray)


def test_batches_match_single_calls(model):
    clips = [(_speech(s, i), 16000) for i, s in enumerate((0.3, 0.9, 0.5, 1.2, 0.4))]
    batch = model.transcribe(clips, language="fr")
    assert isinstance(batch, list) and len(batch) == 5
    for clip, text in zip(clips[:2], batch[:2], strict=True):
        assert model.transcribe(clip, language="fr") == text
    arrays = model.transcribe([c[0] for c in clips[:2]], language="fr", sample_rate=16000)
    assert arrays == batch[:2]


def test_audio_paths(model, tmp_path):
    import soundfile as sf

    path = str(tmp_path / "a.wav")
    sf.write(path, _speech(0.5, 7), 16000)
    assert model.transcribe(path, language="en") == model.transcribe(
        (_speech(0.5, 7), 16000), language="en"
    )


def test_generate_low_level(model):
    prompt = model.vocab.prompt_ids(["ASR", "AST", "S2ST"], "en", "fr", np.arange(6))
    free = model.generate(prompt, max_new_tokens=5)
    assert isinstance(free, Generation) and len(free.ids) <= 5
    combined = model.generate(
        SpeechTokens(np.arange(6)),
        task="ASR+AST+S2ST",
        source_language="en",
        target_language="fr",
        max_new_tokens=12,
    )
    # Text, sep, text, sep, audio, eos: the structure is enforced.
    assert check_tokens(model.space, combined.ids, ("text", "text", "audio")) == []
    assert len(combined.outputs) == 1 + int((combined.ids == model.vocab.sep_id).sum())
    beams = model.generate(
        ["hello", "bonjour"],
        task="MT",
        source_language="en",
        target_language="fr",
        sampling=dict(method="beam", num_beams=2),
        max_new_tokens=6,
    )
    assert len(beams) == 2 and all(isinstance(b.outputs[0], str) for b in beams)


def test_aligned_positions_decode_as_training_lays_them_out(tmp_path, vocab):
    """A model trained with aligned positions: what the API decodes for [ASR AST S2ST]
    scores as the full forward on the data pipeline's positions of that sequence (the
    source after the tag, the transcript back at it, the translation and its speech past
    the source's separator)."""
    path = make_workdir(str(tmp_path), vocab, position_scheme="aligned", tie_embeddings=False)
    m = AudioPaLM.from_pretrained(path, batch_size=2)
    sep = m.vocab.sep_id
    head = m.params["lm_head"]  # [embed, vocab]: shrink all but <sep> so outputs cross it
    m.params = {
        **m.params,
        "lm_head": jnp.where(jnp.arange(head.shape[1]) == sep, head, 0.2 * head),
    }
    source = np.arange(3, 9)
    gen = m.generate(
        SpeechTokens(source),
        task="ASR+AST+S2ST",
        source_language="en",
        target_language="fr",
        max_new_tokens=16,
    )
    assert int((gen.ids == sep).sum()) >= 1  # the translation was reached
    prompt = m.vocab.prompt_ids(["ASR", "AST", "S2ST"], "en", "fr", source)
    seq = np.concatenate([prompt, gen.ids]).astype(np.int32)
    tag = len(m.vocab.tag_ids(["ASR", "AST", "S2ST"], "en", "fr"))
    positions = PositionScheme("aligned").segment(
        seq, m.vocab.is_audio(seq), sep, tag, (False, True, True)
    )
    prefix = (np.arange(len(seq)) < len(prompt)).astype(np.int32)[None]
    logits, _ = nnx.merge(m.graphdef, nnx.State(m.params))(
        seq[None], positions[None], segment_ids=np.ones_like(prefix), prefix_mask=prefix
    )
    want = constrained_log_prob(m.space, logits[0], seq, len(prompt), ("text", "text", "audio"))
    np.testing.assert_allclose(gen.score, want, rtol=1e-4, atol=1e-4)


def test_unknown_language_or_untrained_direction(model):
    with pytest.raises(ValueError, match="trained on: en \\(English\\), fr \\(French\\)"):
        model.transcribe((_speech(0.2, 1), 16000), language="Klingon")
    with pytest.raises(ValueError, match="not trained on MT fr-en"):
        model.translate_text("bonjour", source="fr", target="en")
    with pytest.raises(ValueError, match="known tasks"):
        model.generate("x", task="SING", source_language="en")


def test_cannot_decode_returns_tokens_with_a_warning(model):
    model.audio_tokenizer.can_decode = False
    try:
        with pytest.warns(UserWarning, match="cannot synthesize"):
            out = model.synthesize("hello", language="en", max_new_tokens=4)
    finally:
        model.audio_tokenizer.can_decode = True
    assert isinstance(out, SpeechTokens) and out.tokens.dtype == np.int32


def test_inputs_helpers():
    assert inputs_lib.language_code("french") == "fr"
    assert inputs_lib.bucket(65, 64) == 128 and inputs_lib.batch_bucket(5, 16) == 8
    with pytest.raises(ValueError, match="sample_rate"):
        inputs_lib.audio_batch(np.zeros(10))


def test_sharded_decoding_matches(workdir, model):
    """Params sharded over a (data, fsdp, tensor) = (2, 2, 2) mesh decode the same."""
    if jax.device_count() < 8:
        pytest.skip("needs 8 (simulated) devices")
    sharded = AudioPaLM.from_pretrained(
        workdir, mesh_config={"data": 2, "fsdp": 2, "tensor": 2}, batch_size=4
    )
    q = sharded.params["blocks"][0]["attn"]["q"]
    assert len(q.sharding.device_set) == 8
    texts = ["hello", "a b c", "the cat", "xyz"]
    assert sharded.synthesize(texts, language="en", max_new_tokens=6) is not None
    a = sharded.generate(texts, task="TTS", source_language="en", max_new_tokens=6)
    b = model.generate(texts, task="TTS", source_language="en", max_new_tokens=6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.ids, y.ids)
