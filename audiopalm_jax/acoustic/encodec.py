"""Flax NNX port of the EnCodec *decoder* (transformers' ``EncodecModel``): codes -> waveform.

AudioPaLM-style systems (and SoundStorm) generate codec tokens and need the codec's decoder
to hear them. This ports the two decoding halves of ``EncodecModel``:

* the residual vector quantizer's decode: ``codes [batch, num_q, frames]`` -> the sum of
  the ``num_q`` codebooks' embeddings, ``[batch, dim, frames]``;
* the SEANet decoder: conv, LSTM (+ skip), then per upsampling ratio ELU + transposed conv
  and residual blocks, then ELU + conv, with HF's padding (causal or centred, reflect by
  default) and transposed-conv trimming rules, both ``use_causal_conv`` paths.

Weight norm (``norm_type="weight_norm"``, the 24 kHz model) is folded into plain kernels
at load time; ``"time_group_norm"`` (the 48 kHz model) and chunked decoding raise
NotImplementedError. Activations are channels-last ``[batch, time, channels]`` inside;
kernels are ``[width, in, out]`` with logical axis names (``out_sharding``), created with
``eager_sharding=False`` so the model builds without a mesh. Everything is f32, and the
convolutions / matmuls ask for ``Precision.HIGHEST`` (no TF32 / bf16 passes on GPU / TPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

HIGHEST = jax.lax.Precision.HIGHEST
PAD_MODES = {"reflect": "reflect", "constant": "constant", "replicate": "edge", "circular": "wrap"}


@dataclasses.dataclass(frozen=True)
class EncodecDecoderConfig:
    """The decoder fields of a Hugging Face ``EncodecConfig`` (defaults: facebook/encodec_24khz).

    ``num_quantizers`` is how many codebooks the decoder holds (set from a bandwidth by
    :meth:`from_hf_config`; ``None`` means all the checkpoint has, ``max_quantizers``).
    """

    target_bandwidths: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0, 24.0)
    sampling_rate: int = 24_000
    audio_channels: int = 1
    hidden_size: int = 128
    num_filters: int = 32
    num_residual_layers: int = 1
    upsampling_ratios: tuple[int, ...] = (8, 5, 4, 2)
    norm_type: str = "weight_norm"
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    use_causal_conv: bool = True
    pad_mode: str = "reflect"
    compress: int = 2
    num_lstm_layers: int = 2
    trim_right_ratio: float = 1.0
    codebook_size: int = 1024
    codebook_dim: int | None = None
    use_conv_shortcut: bool = True
    chunk_length_s: float | None = None
    num_quantizers: int | None = None

    def __post_init__(self):
        if self.norm_type == "time_group_norm":
            raise NotImplementedError(
                "EnCodec norm_type='time_group_norm' (the 48 kHz model) is not supported; "
                "only 'weight_norm' (the 24 kHz model)"
            )
        if self.norm_type != "weight_norm":
            raise ValueError(f"unknown EnCodec norm_type {self.norm_type!r}")
        if self.chunk_length_s is not None:
            raise NotImplementedError(
                f"chunked EnCodec decoding (chunk_length_s={self.chunk_length_s}) is not supported"
            )
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"unsupported pad_mode {self.pad_mode!r}; have {list(PAD_MODES)}")
        if self.codebook_dim not in (None, self.hidden_size):
            raise ValueError(f"codebook_dim={self.codebook_dim} != hidden_size={self.hidden_size}")
        if 2 ** int(math.log2(self.codebook_size)) != self.codebook_size:
            raise ValueError(f"codebook_size={self.codebook_size} is not a power of 2")
        if not self.use_causal_conv and self.trim_right_ratio != 1.0:
            raise ValueError("trim_right_ratio != 1.0 only makes sense for causal convolutions")
        n = self.num_quantizers
        if n is not None and not 1 <= n <= self.max_quantizers:
            raise ValueError(f"num_quantizers={n}; the model has {self.max_quantizers} codebooks")

    @classmethod
    def from_hf_config(
        cls, d: dict[str, Any], bandwidth: float | None = None
    ) -> EncodecDecoderConfig:
        """From a HF ``config.json`` dict; ``bandwidth`` (kbps) keeps only the codebooks it uses."""
        if d.get("model_type", "encodec") != "encodec":
            raise ValueError(f"model_type={d.get('model_type')!r} is not an EnCodec config")
        fields = {f.name for f in dataclasses.fields(cls)} - {"num_quantizers"}
        kw = {k: v for k, v in d.items() if k in fields}
        for k in ("target_bandwidths", "upsampling_ratios"):
            if k in kw:
                kw[k] = tuple(kw[k])
        cfg = cls(**kw)
        if bandwidth is not None:
            cfg = dataclasses.replace(
                cfg, num_quantizers=cfg.num_quantizers_for_bandwidth(bandwidth)
            )
        return cfg

    @property
    def hop_length(self) -> int:
        """Waveform samples per code frame (the product of the upsampling ratios)."""
        return int(np.prod(self.upsampling_ratios))

    @property
    def frame_rate(self) -> int:
        """Code frames per second, as HF computes it (rounded up)."""
        return math.ceil(self.sampling_rate / self.hop_length)

    @property
    def max_quantizers(self) -> int:
        """Codebooks in the checkpoint (HF ``EncodecConfig.num_quantizers``)."""
        bits = math.ceil(math.log2(self.codebook_size))
        return int(1000 * self.target_bandwidths[-1] // (self.frame_rate * bits))

    @property
    def quantizers(self) -> int:
        """Codebooks this decoder holds."""
        return self.max_quantizers if self.num_quantizers is None else self.num_quantizers

    def num_quantizers_for_bandwidth(self, bandwidth: float | None) -> int:
        """Codebooks used at ``bandwidth`` kbps (HF's ``get_num_quantizers_for_bandwidth``)."""
        if bandwidth is None or bandwidth <= 0.0:
            return self.max_quantizers
        n = int(
            max(1, math.floor(bandwidth * 1000 / (math.log2(self.codebook_size) * self.frame_rate)))
        )
        if n > self.max_quantizers:
            raise ValueError(
                f"bandwidth {bandwidth} kbps needs {n} codebooks; the model has "
                f"{self.max_quantizers} (target_bandwidths {list(self.target_bandwidths)})"
            )
        return n


def _param(rngs: nnx.Rngs, shape: tuple[int, ...], names: tuple[str, ...], scale: float):
    value = scale * jax.random.normal(rngs.params(), shape, jnp.float32)
    return nnx.Param(value, out_sharding=names, eager_sharding=False)


def _pad1d(x: jax.Array, left: int, right: int, mode: str) -> jax.Array:
    """Pads axis 1 of ``[B, T, C]`` like HF ``EncodecConv1d._pad1d``: reflect padding of an
    input no longer than the pad first appends zeros (then drops them again)."""
    length = x.shape[1]
    if mode != "reflect":
        return jnp.pad(x, ((0, 0), (left, right), (0, 0)), mode=PAD_MODES[mode])
    extra = max(left, right) - length + 1 if length <= max(left, right) else 0
    if extra:
        x = jnp.pad(x, ((0, 0), (0, extra), (0, 0)))
    x = jnp.pad(x, ((0, 0), (left, right), (0, 0)), mode="reflect")
    return x[:, : x.shape[1] - extra]


class ELU(nnx.Module):
    """Parameter-free; a module so that ``EncodecDecoder.layers[i]`` is HF ``decoder.layers.i``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.elu(x)


class Conv1d(nnx.Module):
    """HF ``EncodecConv1d`` (weight norm folded): causal or centred padding, then a conv."""

    def __init__(self, cfg: EncodecDecoderConfig, cin, cout, kernel, *, stride=1, dilation=1, rngs):
        self.kernel = _param(
            rngs, (kernel, cin, cout), ("conv_width", "conv_in", "conv_out"), (cin * kernel) ** -0.5
        )
        self.bias = _param(rngs, (cout,), ("conv_out",), 0.0)
        self.stride, self.dilation = stride, dilation
        self.causal, self.pad_mode = cfg.use_causal_conv, cfg.pad_mode

    def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, Cin] -> [B, T', Cout]
        k = (self.kernel.shape[0] - 1) * self.dilation + 1  # effective kernel size
        s, length = self.stride, x.shape[1]
        total = k - s
        n_frames = math.ceil((length - k + total) / s + 1) - 1
        extra = n_frames * s + k - total - length
        if self.causal:
            left, right = total, extra
        else:
            left, right = total - total // 2, total // 2 + extra
        x = _pad1d(x, left, right, self.pad_mode)
        y = jax.lax.conv_general_dilated(
            x, self.kernel[...], window_strides=(s,), padding="VALID",
            rhs_dilation=(self.dilation,), dimension_numbers=("NWC", "WIO", "NWC"),
            precision=HIGHEST,
        )  # fmt: skip
        return y + self.bias[...]


class ConvTranspose1d(nnx.Module):
    """HF ``EncodecConvTranspose1d``: ``y[t * stride + j] += x[t] @ kernel[j]``, then trimmed."""

    def __init__(self, cfg: EncodecDecoderConfig, cin, cout, kernel, *, stride, rngs):
        self.kernel = _param(
            rngs, (kernel, cin, cout), ("conv_width", "conv_in", "conv_out"), (cin * kernel) ** -0.5
        )
        self.bias = _param(rngs, (cout,), ("conv_out",), 0.0)
        self.stride = stride
        self.causal, self.trim_right_ratio = cfg.use_causal_conv, cfg.trim_right_ratio

    def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, Cin] -> [B, T * stride, Cout]
        k, s = self.kernel.shape[0], self.stride
        # A stride-1 conv of the input dilated by `stride` with the flipped kernel:
        # output length (T - 1) * s + k, as torch's ConvTranspose1d.
        y = jax.lax.conv_general_dilated(
            x, self.kernel[...][::-1], window_strides=(1,), padding=[(k - 1, k - 1)],
            lhs_dilation=(s,), dimension_numbers=("NWC", "WIO", "NWC"), precision=HIGHEST,
        )  # fmt: skip
        y = y + self.bias[...]
        total = k - s
        right = math.ceil(total * self.trim_right_ratio) if self.causal else total // 2
        left = total - right
        return y[:, left : y.shape[1] - right]


class LSTM(nnx.Module):
    """HF ``EncodecLSTM``: a stacked unidirectional LSTM (torch gate order i, f, g, o) plus skip."""

    def __init__(self, cfg: EncodecDecoderConfig, dim: int, *, rngs: nnx.Rngs):
        scale = dim**-0.5
        self.input_kernels = nnx.List(
            [
                _param(rngs, (dim, 4 * dim), ("lstm_in", "lstm_gates"), scale)
                for _ in range(cfg.num_lstm_layers)
            ]
        )
        self.recurrent_kernels = nnx.List(
            [
                _param(rngs, (dim, 4 * dim), ("lstm_in", "lstm_gates"), scale)
                for _ in range(cfg.num_lstm_layers)
            ]
        )
        # torch's bias_ih + bias_hh, summed at load time
        self.biases = nnx.List(
            [_param(rngs, (4 * dim,), ("lstm_gates",), 0.0) for _ in range(cfg.num_lstm_layers)]
        )

    def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, D]
        h = x
        for wi, wh, b in zip(self.input_kernels, self.recurrent_kernels, self.biases, strict=True):
            wh = wh[...]
            gates_in = jnp.einsum("btd,dg->tbg", h, wi[...], precision=HIGHEST) + b[...]

            def step(carry, z, wh=wh):
                hp, cp = carry
                z = z + jnp.dot(hp, wh, precision=HIGHEST)
                i, f, g, o = jnp.split(z, 4, axis=-1)
                c = jax.nn.sigmoid(f) * cp + jax.nn.sigmoid(i) * jnp.tanh(g)
                hn = jax.nn.sigmoid(o) * jnp.tanh(c)
                return (hn, c), hn

            zeros = jnp.zeros((x.shape[0], wh.shape[0]), x.dtype)
            _, out = jax.lax.scan(step, (zeros, zeros), gates_in)
            h = out.transpose(1, 0, 2)
        return h + x


class ResnetBlock(nnx.Module):
    """HF ``EncodecResnetBlock``: ELU, conv(k, dilation), ELU, conv(1), plus a 1x1-conv shortcut."""

    def __init__(self, cfg: EncodecDecoderConfig, dim: int, dilation: int, *, rngs: nnx.Rngs):
        hidden = dim // cfg.compress
        self.conv1 = Conv1d(
            cfg, dim, hidden, cfg.residual_kernel_size, dilation=dilation, rngs=rngs
        )
        self.conv2 = Conv1d(cfg, hidden, dim, 1, rngs=rngs)
        self.shortcut = Conv1d(cfg, dim, dim, 1, rngs=rngs) if cfg.use_conv_shortcut else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv2(jax.nn.elu(self.conv1(jax.nn.elu(x))))
        return (x if self.shortcut is None else self.shortcut(x)) + y


class EncodecDecoder(nnx.Module):
    """RVQ decode + SEANet decoder: codes ``[B, num_q, frames]`` -> waveform ``[B, C, samples]``.

    ``layers[i]`` is HF's ``decoder.layers.i`` (ELUs included), ``codebooks[q]`` HF's
    ``quantizer.layers.q.codebook.embed``; ``samples = frames * cfg.hop_length``.
    """

    def __init__(self, cfg: EncodecDecoderConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, nf = cfg.hidden_size, cfg.num_filters
        self.codebooks = _param(
            rngs,
            (cfg.quantizers, cfg.codebook_size, d),
            ("quantizer", "codebook", "codebook_dim"),
            1.0,
        )
        scale = 2 ** len(cfg.upsampling_ratios)
        layers: list[nnx.Module] = [
            Conv1d(cfg, d, scale * nf, cfg.kernel_size, rngs=rngs),
            LSTM(cfg, scale * nf, rngs=rngs),
        ]
        for ratio in cfg.upsampling_ratios:
            dim = scale * nf
            layers += [
                ELU(),
                ConvTranspose1d(cfg, dim, dim // 2, 2 * ratio, stride=ratio, rngs=rngs),
            ]
            layers += [
                ResnetBlock(cfg, dim // 2, cfg.dilation_growth_rate**j, rngs=rngs)
                for j in range(cfg.num_residual_layers)
            ]
            scale //= 2
        layers += [ELU(), Conv1d(cfg, nf, cfg.audio_channels, cfg.last_kernel_size, rngs=rngs)]
        self.layers = nnx.List(layers)

    def _embed(self, codes: jax.Array) -> jax.Array:  # [B, Q, T] -> [B, T, D]
        q = codes.shape[1]
        if not 1 <= q <= self.cfg.quantizers:
            raise ValueError(f"codes have {q} quantizers; this decoder holds {self.cfg.quantizers}")
        books = self.codebooks[...][:q]  # [Q, V, D]
        emb = jax.vmap(lambda book, c: jnp.take(book, c, axis=0), in_axes=(0, 1))(books, codes)
        return emb.sum(axis=0)  # summed over quantizers, in quantizer order as HF

    def embed_codes(self, codes: jax.Array) -> jax.Array:
        """The residual quantizer's decode: ``[B, num_q, frames]`` -> ``[B, dim, frames]``."""
        return self._embed(jnp.asarray(codes)).transpose(0, 2, 1)

    def __call__(self, codes: jax.Array) -> jax.Array:
        x = self._embed(jnp.asarray(codes))
        for layer in self.layers:
            x = layer(x)
        return x.transpose(0, 2, 1)  # [B, channels, samples]

    def _min_exact_frames(self) -> int:
        """Frames from which a causal decode of a padded batch, cut to length, is exact.

        Causal convs pad on the left only, but reflect padding copies samples up to
        ``padding_total`` into the sequence: those must lie within the item's own frames."""
        need, up = 1, 1
        for layer in self.layers:
            if isinstance(layer, ConvTranspose1d):
                up *= layer.stride
            convs = [layer] if isinstance(layer, Conv1d) else []
            if isinstance(layer, ResnetBlock):
                convs = [layer.conv1, layer.conv2]
            for c in convs:
                total = (c.kernel.shape[0] - 1) * c.dilation + 1 - c.stride
                need = max(need, total // up + 1)
        return need

    def decode_tokens(
        self, tokens: np.ndarray, lengths: np.ndarray | list[int] | None = None
    ) -> list[np.ndarray]:
        """Waveforms of ``tokens [B, frames]`` (one codebook) or ``[B, num_q, frames]``.

        ``lengths`` (frames per item, default all) cuts item ``i`` to ``lengths[i] *
        hop_length`` samples. Returns f32 arrays, ``[samples]`` for mono models, else
        ``[channels, samples]``, each equal to decoding that item alone. A causal model
        decodes its items of at least ``_min_exact_frames()`` frames as one padded batch
        (their first ``n * hop_length`` samples depend only on the first ``n`` frames);
        other items are decoded in groups of one length, so padding never leaks in.
        """
        tokens = np.asarray(tokens)
        if tokens.ndim == 2:
            tokens = tokens[:, None, :]
        if tokens.ndim != 3:
            raise ValueError(
                f"tokens must be [batch, frames] or [batch, num_q, frames], got {tokens.shape}"
            )
        if not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"tokens must be integers, got {tokens.dtype}")
        b, _, t = tokens.shape
        lens = np.full(b, t) if lengths is None else np.asarray(lengths, np.int64).reshape(-1)
        if lens.shape != (b,) or (lens < 1).any() or (lens > t).any():
            raise ValueError(f"lengths {lens.tolist()} must be {b} values in [1, {t}]")
        valid = np.arange(t)[None, None, :] < lens[:, None, None]
        bad = valid & ((tokens < 0) | (tokens >= self.cfg.codebook_size))
        if bad.any():
            raise ValueError(f"tokens outside [0, {self.cfg.codebook_size}) within lengths")
        tokens = np.where(valid, tokens, 0).astype(np.int32)
        hop = self.cfg.hop_length
        out: list[np.ndarray | None] = [None] * b
        # A causal model batches the items of at least _min_exact_frames() frames.
        batched = lens >= (self._min_exact_frames() if self.cfg.use_causal_conv else t + 1)
        groups = [np.flatnonzero(batched)] if batched.any() else []
        groups += [np.flatnonzero(~batched & (lens == n)) for n in np.unique(lens[~batched])]
        for idx in groups:
            n = int(lens[idx].max())
            wave = np.asarray(_decode_jit(self, jnp.asarray(tokens[idx, :, :n])), np.float32)
            for row, i in enumerate(idx):
                w = wave[row, :, : lens[i] * hop]
                out[i] = w[0] if self.cfg.audio_channels == 1 else w
        return out  # type: ignore[return-value]


@nnx.jit
def _decode_jit(model: EncodecDecoder, codes: jax.Array) -> jax.Array:
    return model(codes)


# -- Hugging Face checkpoints -------------------------------------------------------------------

# Saved tensors a decoder does not use: the encoder, and the codebooks' k-means state.
_IGNORED = re.compile(
    r"^encoder\.|^quantizer\.layers\.\d+\.codebook\.(inited|cluster_size|embed_avg)$"
)


def _conv_weight(weights: dict[str, np.ndarray], prefix: str, used: set[str]) -> np.ndarray | str:
    """The (weight-norm folded) torch weight at ``prefix``; a missing key's name if absent."""
    for g_name, v_name in (
        (
            f"{prefix}.parametrizations.weight.original0",
            f"{prefix}.parametrizations.weight.original1",
        ),
        (f"{prefix}.weight_g", f"{prefix}.weight_v"),
    ):
        if g_name in weights and v_name in weights:
            used.update((g_name, v_name))
            g, v = weights[g_name], weights[v_name]
            # torch weight_norm(dim=0): w = g * v / ||v||, the norm over all but dim 0
            norm = np.sqrt(np.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))
            return (g * (v / norm)).astype(np.float32)
    if f"{prefix}.weight" in weights:
        used.add(f"{prefix}.weight")
        return weights[f"{prefix}.weight"]
    return f"{prefix}.parametrizations.weight.original0"


def _assign(
    model: EncodecDecoder, weights: dict[str, np.ndarray]
) -> tuple[list[str], set[str], list[str]]:
    """Sets ``model``'s params from HF tensors; returns (missing keys, used keys, shape errors)."""
    missing: list[str] = []
    used: set[str] = set()
    errors: list[str] = []

    def put(var: nnx.Variable, value: np.ndarray, name: str):
        if value.shape != var.shape:
            errors.append(f"{name}: checkpoint {value.shape}, model {var.shape}")
        else:
            var.set_value(jnp.asarray(value, jnp.float32))

    def take(name: str) -> np.ndarray | None:
        if name not in weights:
            missing.append(name)
            return None
        used.add(name)
        return weights[name]

    def conv(prefix: str, m: Conv1d | ConvTranspose1d):
        w = _conv_weight(weights, f"{prefix}.conv", used)
        if isinstance(w, str):
            missing.append(w)
        else:  # Conv1d [out, in, k] / ConvTranspose1d [in, out, k] -> [k, in, out]
            put(
                m.kernel,
                w.transpose(2, 1, 0) if isinstance(m, Conv1d) else w.transpose(2, 0, 1),
                prefix,
            )
        if (b := take(f"{prefix}.conv.bias")) is not None:
            put(m.bias, b, f"{prefix}.conv.bias")

    books = []
    for q in range(model.cfg.quantizers):
        if (e := take(f"quantizer.layers.{q}.codebook.embed")) is not None:
            books.append(e)
    if len(books) == model.cfg.quantizers:
        put(model.codebooks, np.stack(books), "quantizer.layers.*.codebook.embed")
    for i, layer in enumerate(model.layers):
        p = f"decoder.layers.{i}"
        if isinstance(layer, Conv1d | ConvTranspose1d):
            conv(p, layer)
        elif isinstance(layer, LSTM):
            for k in range(len(layer.biases)):
                wi, wh = take(f"{p}.lstm.weight_ih_l{k}"), take(f"{p}.lstm.weight_hh_l{k}")
                bi, bh = take(f"{p}.lstm.bias_ih_l{k}"), take(f"{p}.lstm.bias_hh_l{k}")
                if wi is not None:
                    put(layer.input_kernels[k], wi.T, f"{p}.lstm.weight_ih_l{k}")
                if wh is not None:
                    put(layer.recurrent_kernels[k], wh.T, f"{p}.lstm.weight_hh_l{k}")
                if bi is not None and bh is not None:
                    put(layer.biases[k], bi + bh, f"{p}.lstm.bias_ih_l{k}")
        elif isinstance(layer, ResnetBlock):
            conv(f"{p}.block.1", layer.conv1)
            conv(f"{p}.block.3", layer.conv2)
            if layer.shortcut is not None:
                conv(f"{p}.shortcut", layer.shortcut)
    return missing, used, errors


def load_encodec_decoder(directory: str, bandwidth: float | None = None) -> EncodecDecoder:
    """The decoder of a local HF ``EncodecModel`` directory (``config.json`` + ``*.safetensors``,
    as ``save_pretrained`` writes it); never downloads, never unpickles.

    ``bandwidth`` (kbps, e.g. 6.0) keeps only the codebooks that bandwidth uses (default:
    all). Raises ValueError naming any missing, unexpected or misshapen tensor.
    """
    from safetensors.numpy import load_file

    cfg_path = os.path.join(directory, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(
            f"{directory!r} is not a Hugging Face model directory (no config.json)"
        )
    with open(cfg_path) as f:
        cfg = EncodecDecoderConfig.from_hf_config(json.load(f), bandwidth=bandwidth)
    files = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(
            f"no *.safetensors in {directory!r} (this project never loads pickled .bin weights)"
        )
    weights: dict[str, np.ndarray] = {}
    for name in files:
        for k, v in load_file(os.path.join(directory, name)).items():
            weights[k.removeprefix("encodec.")] = np.asarray(v, np.float32)

    model = nnx.eval_shape(lambda: EncodecDecoder(cfg, rngs=nnx.Rngs(0)))
    missing, used, errors = _assign(model, weights)
    if missing:
        raise ValueError(
            f"{directory}: EnCodec checkpoint lacks {len(missing)} tensors: {missing[:6]}"
        )
    if errors:
        raise ValueError(f"{directory}: EnCodec tensor shapes differ: {errors[:4]}")
    unused_books = re.compile(r"^quantizer\.layers\.(\d+)\.codebook\.embed$")
    unexpected = sorted(
        k
        for k in set(weights) - used
        if not _IGNORED.match(k)
        and not ((m := unused_books.match(k)) and int(m.group(1)) >= cfg.quantizers)
    )
    if unexpected:
        raise ValueError(
            f"{directory}: unexpected EnCodec tensors {unexpected[:6]} ({len(unexpected)} in all)"
        )
    return model
