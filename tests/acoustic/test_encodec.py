"""EnCodec decoder port: parity with transformers' EncodecModel.decode on tiny random models."""

import json
import os

import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file, save_file
from transformers import EncodecConfig, EncodecModel

from audiopalm_jax.acoustic.encodec import EncodecDecoderConfig, load_encodec_decoder

RATIOS = [4, 2]
call = nnx.jit(lambda model, codes: model(codes))  # compiling beats eager op-by-op here


def tiny_checkpoint(path, causal: bool, seed: int = 0):
    """A random tiny EncodecModel saved with save_pretrained; returns (path, torch model)."""
    torch.manual_seed(seed)
    config = EncodecConfig(
        hidden_size=16,
        num_filters=4,
        upsampling_ratios=RATIOS,
        codebook_size=32,
        num_lstm_layers=2,
        num_residual_layers=2,  # dilations 1 and 2
        kernel_size=5,
        last_kernel_size=3,
        sampling_rate=8000,  # frame rate 1000 Hz, 5 kbps per codebook
        target_bandwidths=[5.0, 10.0],  # 2 quantizers
        use_causal_conv=causal,
    )
    model = EncodecModel(config).eval()
    with torch.no_grad():  # codebooks start at zero and LSTM biases too: make them random
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.add_(0.3 * torch.randn_like(t))
    model.save_pretrained(str(path))
    return str(path), model


@pytest.fixture(scope="module", params=[True, False], ids=["causal", "noncausal"])
def checkpoint(request, tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("encodec"), causal=request.param)


def reference(model, codes: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model.decode(torch.from_numpy(codes).long()[None], audio_scales=[None])
    return out.audio_values.numpy()


def test_decode_matches_pytorch(checkpoint):
    path, torch_model = checkpoint
    ours = load_encodec_decoder(path)
    assert ours.cfg.quantizers == 2 and ours.cfg.frame_rate == 1000
    codes = np.random.default_rng(0).integers(0, 32, (2, 2, 9))
    ref = reference(torch_model, codes)
    got = np.asarray(call(ours, codes))
    assert got.shape == ref.shape == (2, 1, 9 * 8) and got.dtype == np.float32
    diff = float(np.abs(got - ref).max())
    print(f"max abs diff ({'causal' if ours.cfg.use_causal_conv else 'non-causal'}): {diff:.2e}")
    assert diff <= 1e-4, diff
    # the quantizer alone, and one codebook of two (bandwidth 5 kbps)
    with torch.no_grad():
        emb = torch_model.quantizer.decode(torch.from_numpy(codes).long().transpose(0, 1))
    np.testing.assert_allclose(np.asarray(ours.embed_codes(codes)), emb.numpy(), atol=1e-5)
    one = load_encodec_decoder(path, bandwidth=5.0)
    assert one.cfg.quantizers == 1
    waves = one.decode_tokens(codes[:, 0])  # [batch, frames] tokens: one codebook
    np.testing.assert_allclose(
        np.stack(waves), reference(torch_model, codes[:, :1])[:, 0], atol=1e-4
    )


def test_decode_tokens_cuts_to_length(checkpoint):
    path, _ = checkpoint
    ours = load_encodec_decoder(path)
    codes = np.random.default_rng(1).integers(0, 32, (3, 2, 7))
    if ours.cfg.use_causal_conv:  # 5 frames cover the first conv's (kernel 5) reflect padding
        assert ours._min_exact_frames() == 5
    waves = ours.decode_tokens(codes, lengths=[7, 5, 3])
    assert [w.shape for w in waves] == [(7 * 8,), (5 * 8,), (3 * 8,)]
    for i, n in [(1, 5), (2, 3)]:  # as decoded alone
        alone = ours.decode_tokens(codes[i : i + 1, :, :n])[0]
        np.testing.assert_allclose(waves[i], alone, atol=1e-5, err_msg=str(n))
    with pytest.raises(ValueError, match="outside"):
        ours.decode_tokens(np.full((1, 2, 3), 32))


def test_shapes_and_logical_axes(checkpoint):
    path, _ = checkpoint
    ours = load_encodec_decoder(path)
    out = call(ours, np.zeros((1, 2, 1), np.int32))  # 1 frame: reflect pads longer than input
    assert out.shape == (1, 1, 1 * int(np.prod(RATIOS)))
    for p, var in nnx.to_flat_state(nnx.state(ours, nnx.Param)):
        axes = var.get_metadata().get("out_sharding")
        assert axes is not None and len(axes) == var.get_value().ndim, (p, axes)


def test_missing_and_unexpected_keys(checkpoint, tmp_path):
    path, _ = checkpoint
    weights = load_file(os.path.join(path, "model.safetensors"))
    config = json.load(open(os.path.join(path, "config.json")))
    key = "decoder.layers.1.lstm.weight_hh_l1"
    for name, tensors, message in [
        ("missing", {k: v for k, v in weights.items() if k != key}, key),
        ("extra", {**weights, "decoder.layers.99.conv.bias": np.zeros(1, np.float32)}, "layers.99"),
    ]:
        d = tmp_path / name
        d.mkdir()
        save_file(tensors, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps(config))
        with pytest.raises(ValueError, match=message.replace(".", r"\.")) as err:
            load_encodec_decoder(str(d))
        assert "\n" not in str(err.value)


def test_config_rejects_unsupported():
    with pytest.raises(NotImplementedError, match="time_group_norm"):
        EncodecDecoderConfig.from_hf_config(
            {"model_type": "encodec", "norm_type": "time_group_norm"}
        )
    cfg = EncodecDecoderConfig.from_hf_config({"model_type": "encodec"})  # the 24 kHz defaults
    assert (cfg.frame_rate, cfg.max_quantizers, cfg.num_quantizers_for_bandwidth(6.0)) == (
        75,
        32,
        8,
    )
