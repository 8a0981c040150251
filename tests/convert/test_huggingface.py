"""Our decoder against transformers' PyTorch models, with the same weights."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from audiopalm_jax.convert.huggingface import (  # noqa: E402
    extend_vocab,
    load_hf_checkpoint,
    params_from_hf_tensors,
)
from audiopalm_jax.model import Transformer  # noqa: E402

COMMON = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=112,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=128,
)


def _hf_model(kind: str, tmp_path):
    torch.manual_seed(0)
    if kind in ("llama", "llama_mha"):
        cfg = transformers.LlamaConfig(
            **COMMON,
            # grouped-query and multi-head attention take different einsums
            num_key_value_heads=2 if kind == "llama" else COMMON["num_attention_heads"],
            rope_theta=5000.0,
            tie_word_embeddings=False,
        )
        model = transformers.LlamaForCausalLM(cfg)
    elif kind == "qwen2":
        cfg = transformers.Qwen2Config(**COMMON, num_key_value_heads=2, tie_word_embeddings=True)
        model = transformers.Qwen2ForCausalLM(cfg)
    else:
        cfg = transformers.GemmaConfig(**COMMON, num_key_value_heads=1, head_dim=16)
        model = transformers.GemmaForCausalLM(cfg)
    with torch.no_grad():  # random norms and biases, so a wrong mapping cannot hide
        for name, p in model.named_parameters():
            if "norm" in name or "bias" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    return model


def _ours(path, **overrides):
    cfg, params = load_hf_checkpoint(str(path), **overrides)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state), cfg


@pytest.mark.parametrize("kind", ["llama", "llama_mha", "qwen2", "gemma"])
@pytest.mark.parametrize("scan_layers", [True, False])
def test_logits_match_transformers(kind, scan_layers, tmp_path):
    hf = _hf_model(kind, tmp_path)
    ours, _ = _ours(tmp_path, scan_layers=scan_layers)
    tokens = np.random.default_rng(0).integers(0, COMMON["vocab_size"], (2, 17))
    with torch.no_grad():
        expected = hf(torch.from_numpy(tokens)).logits.numpy()
    positions = jnp.broadcast_to(jnp.arange(17), (2, 17))
    got, _ = ours(jnp.asarray(tokens), positions)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["llama", "llama_mha", "gemma"])
def test_gradients_match_transformers(kind, tmp_path):
    """Every parameter's cross-entropy gradient matches PyTorch autograd's. The HF
    gradients go through the same conversion as the weights (it only reshapes and
    transposes, so it maps gradients too)."""
    hf = _hf_model(kind, tmp_path)
    ours, cfg = _ours(tmp_path)
    rng = np.random.default_rng(2)
    tokens, targets = rng.integers(0, COMMON["vocab_size"], (2, 2, 17))
    logits = hf(torch.from_numpy(tokens)).logits
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, COMMON["vocab_size"]), torch.from_numpy(targets).reshape(-1)
    )
    loss.backward()
    expected = params_from_hf_tensors(
        {name: p.grad.numpy() for name, p in hf.named_parameters()}, cfg
    )
    positions = jnp.broadcast_to(jnp.arange(17), (2, 17))

    def our_loss(model):
        logits = model(jnp.asarray(tokens), positions)[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    got = nnx.to_pure_dict(nnx.state(nnx.grad(our_loss)(ours), nnx.Param))
    flat_got = dict(jax.tree_util.tree_leaves_with_path(got))
    flat_expected = dict(jax.tree_util.tree_leaves_with_path(expected))
    assert flat_got.keys() == flat_expected.keys()
    for path, g in flat_got.items():
        e = np.asarray(flat_expected[path])
        scale = np.abs(e).max()
        assert scale > 0, path
        np.testing.assert_allclose(np.asarray(g), e, atol=1e-4 * scale, rtol=0, err_msg=str(path))


@pytest.mark.parametrize("kind", ["llama", "llama_mha"])
def test_packed_segments_match_separate_sequences(kind, tmp_path):
    """Two examples packed in one row give the logits each gives alone in transformers."""
    hf = _hf_model(kind, tmp_path)
    ours, _ = _ours(tmp_path)
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 96, 7), rng.integers(0, 96, 5)
    packed = np.concatenate([a, b])[None]
    segments = np.array([[1] * 7 + [2] * 5])
    positions = np.array([list(range(7)) + list(range(5))])
    got, _ = ours(jnp.asarray(packed), jnp.asarray(positions), segment_ids=jnp.asarray(segments))
    with torch.no_grad():
        ea = hf(torch.from_numpy(a[None])).logits.numpy()[0]
        eb = hf(torch.from_numpy(b[None])).logits.numpy()[0]
    np.testing.assert_allclose(np.asarray(got)[0], np.concatenate([ea, eb]), atol=1e-4, rtol=0)


def test_extend_vocab_keeps_text_logits(tmp_path):
    hf = _hf_model("llama", tmp_path)
    cfg, params = load_hf_checkpoint(str(tmp_path))
    cfg2, params2 = extend_vocab(params, cfg, 256, seed=0)
    assert cfg2.vocab_size == 256
    model = Transformer(cfg2, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    nnx.replace_by_pure_dict(state, params2)
    model = nnx.merge(graphdef, state)
    tokens = np.arange(10)[None]
    got, _ = model(jnp.asarray(tokens), jnp.arange(10)[None])
    with torch.no_grad():
        expected = hf(torch.from_numpy(tokens)).logits.numpy()
    np.testing.assert_allclose(np.asarray(got)[..., :96], expected, atol=1e-4, rtol=0)
    new = np.asarray(params2["embedder"]["embedding"][96:])
    assert new.shape == (160, 64) and np.isfinite(new).all() and new.std() > 0


def test_rejects_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="model_type='bert' is not supported"):
        load_hf_checkpoint(str(tmp_path))
