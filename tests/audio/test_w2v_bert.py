"""w2v-BERT 2.0 port: layer-by-layer parity with transformers, and the k-means tokenizer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

from audiopalm_jax.audio import W2vBertTokenizer, frontend, load_tokenizer
from audiopalm_jax.audio.w2v_bert import load_hf_encoder, save_hf_encoder


def tiny_checkpoint(path, position_embeddings_type="relative_key", layers=3, seed=0):
    """A random tiny Wav2Vec2BertModel saved as safetensors; returns (path, torch model)."""
    torch.manual_seed(seed)
    config = Wav2Vec2BertConfig(
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        conv_depthwise_kernel_size=5,
        position_embeddings_type=position_embeddings_type,
        left_max_position_embeddings=6,
        right_max_position_embeddings=3,
        max_source_positions=256,
    )
    model = Wav2Vec2BertModel(config).eval()
    with torch.no_grad():  # move LayerNorms / biases off their trivial init
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(path), safe_serialization=True)
    return str(path), model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("w2v"))


@pytest.mark.parametrize("position_embeddings_type", ["relative_key", "relative", "rotary", None])
def test_every_hidden_state_matches_pytorch(tmp_path, position_embeddings_type):
    path, torch_model = tiny_checkpoint(tmp_path, position_embeddings_type)
    ours = load_hf_encoder(path)
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((2, 23, 160)).astype(np.float32)
    mask = np.ones((2, 23), bool)
    mask[1, 15:] = False  # the second item is padded
    with torch.no_grad():
        ref = torch_model(
            torch.from_numpy(feats),
            attention_mask=torch.from_numpy(mask.astype(np.int64)),
            output_hidden_states=True,
        ).hidden_states
    hidden = jax.jit(lambda f, m: ours(f, m))(jnp.asarray(feats), jnp.asarray(mask))
    assert len(hidden) == len(ref) == 4
    for layer, (a, b) in enumerate(zip(hidden, ref, strict=True)):
        a, b = np.asarray(a), b.numpy()
        np.testing.assert_allclose(a[0], b[0], atol=1e-4, err_msg=f"layer {layer}")
        np.testing.assert_allclose(a[1, :15], b[1, :15], atol=1e-4, err_msg=f"layer {layer}")


def test_every_param_has_logical_axis_names(checkpoint):
    encoder = load_hf_encoder(checkpoint[0])
    names = set()
    for path, var in nnx.to_flat_state(nnx.state(encoder, nnx.Param)):
        axes = var.get_metadata().get("out_sharding")
        assert axes is not None and len(axes) == var.get_value().ndim, (path, axes)
        names.update(axes)
    assert {"embed", "mlp", "heads", "conv", "features"} <= names


def test_checkpoint_round_trip_and_truncation(checkpoint, tmp_path):
    path, _ = checkpoint
    encoder = load_hf_encoder(path, num_layers=2)
    assert len(encoder.layers) == 2 and encoder.cfg.num_hidden_layers == 2
    save_hf_encoder(encoder, str(tmp_path))
    again = load_hf_encoder(str(tmp_path))
    for a, b in zip(
        jax.tree.leaves(nnx.state(encoder)), jax.tree.leaves(nnx.state(again)), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="num_layers=9"):
        load_hf_encoder(path, num_layers=9)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_encoder(str(tmp_path / "missing"))


@pytest.fixture(scope="module")
def w2v_tokenizer(checkpoint, speech, speech_rate):
    return W2vBertTokenizer.fit(
        speech,
        speech_rate,
        num_tokens=32,
        checkpoint=checkpoint[0],
        layer=2,
        kmeans={"num_steps": 30, "batch_size": 512, "init_sample": 1024},
    )


def test_tokenizer_features_match_pytorch_pipeline(w2v_tokenizer, checkpoint, speech, speech_rate):
    from transformers.models.seamless_m4t import SeamlessM4TFeatureExtractor

    _, torch_model = checkpoint
    wave = frontend.prepare_waveform(speech[0], speech_rate, 16000)
    inputs = SeamlessM4TFeatureExtractor()(wave, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        h = torch_model(**inputs, output_hidden_states=True).hidden_states[2][0].numpy()
    valid = int(inputs["attention_mask"].sum())
    pairs = h[: valid // 2 * 2].reshape(-1, 2, h.shape[-1]).mean(1)  # 50 Hz -> 25 Hz
    ours = w2v_tokenizer.features([wave], 16000)[0]
    assert len(ours) == -(-valid // 2)
    np.testing.assert_allclose(ours[: len(pairs)], pairs, atol=1e-3)


def test_tokenizer_encode_save_load(w2v_tokenizer, speech, speech_rate, tmp_path):
    tok = w2v_tokenizer
    assert (tok.num_tokens, tok.frame_rate, tok.sample_rate, tok.can_decode) == (
        32,
        25.0,
        16000,
        False,
    )
    tokens, lengths = tok.encode(speech[:3], speech_rate)
    for i in range(3):
        assert abs(lengths[i] - len(speech[i]) / speech_rate * 25) <= 2
        np.testing.assert_array_equal(
            tok.encode_one(speech[i], speech_rate), tokens[i, : lengths[i]]
        )
    # The encoder runs sharded over the batch: its parameters live on all 8 devices.
    leaf = jax.tree.leaves(tok._state)[0]
    assert len(leaf.sharding.device_set) == 8
    tok.save(str(tmp_path))
    again = load_tokenizer(str(tmp_path))
    assert isinstance(again, W2vBertTokenizer) and again.fingerprint() == tok.fingerprint()
    np.testing.assert_array_equal(again.encode(speech[:3], speech_rate)[0], tokens)


def test_tokenizer_refuses_to_decode_and_bad_input(w2v_tokenizer):
    with pytest.raises(NotImplementedError, match="acoustic model.*|can_decode is False"):
        w2v_tokenizer.decode(np.zeros((1, 5), np.int32))
    with pytest.raises(frontend.AudioInputError, match="at least 560 samples"):
        w2v_tokenizer.encode([np.ones(300, np.float32)], 16000)


def test_tokenizer_layer_validation(checkpoint):
    with pytest.raises(ValueError, match="layer=5"):
        W2vBertTokenizer(load_hf_encoder(checkpoint[0]), layer=5)
