"""Test helpers: tiny random models, a char vocabulary, a fake audio tokenizer, a workdir."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from audiopalm_jax.audio.base import AudioTokenizer
from audiopalm_jax.inference.constraints import TokenSpace, allowed_mask, structure_arrays
from audiopalm_jax.model import ModelConfig, Transformer
from audiopalm_jax.vocab import JointVocab, build_char_tokenizer, load_text_tokenizer

NUM_AUDIO = 16
TEXTS = [
    "[ASR AST S2ST TTS MT English French German Spanish]",
    "abcdefghijklmnopqrstuvwxyz .,'",
]
# A 128-id joint space: text 0..39, audio 40..59, sep 60, padding 61..127.
SPACE = TokenSpace(
    vocab_size=128, text_vocab_size=40, audio_offset=40, sep_id=60, eos_id=1, banned_ids=(0, 2)
)


def tiny_config(**overrides) -> ModelConfig:
    base = dict(
        vocab_size=128,
        d_model=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        mlp_dim=64,
        embed_init_std=1.0,  # peaked logits: argmax is stable across numerics
        tie_embeddings=False,
    )
    return ModelConfig(**{**base, **overrides})


def constrained_log_prob(
    space: TokenSpace, logits, seq: np.ndarray, prompt_len: int, structure=()
) -> float:
    """Log-probability of ``seq[prompt_len:]`` under full-forward ``logits`` [L, vocab],
    each token renormalised over the ids its output phase allows (as decoding scores it)."""
    codes, counts = structure_arrays([structure])
    total, phase = 0.0, 0
    for t in range(prompt_len, len(seq)):
        allowed = allowed_mask(space, codes, counts, jnp.asarray([phase]))[0]
        logp = jax.nn.log_softmax(jnp.where(allowed, logits[t - 1], -jnp.inf))
        total += float(logp[seq[t]])
        phase = min(phase + int(seq[t] == space.sep_id), int(counts[0]) - 1)
    return total


def random_model(cfg: ModelConfig, seed: int = 0, noise: float = 0.1):
    """(model, graphdef, pure params); every weight perturbed so none is trivially 0/1."""
    model = Transformer(cfg, rngs=nnx.Rngs(seed))
    graphdef, state = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(state)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [
        x + noise * jax.random.normal(k, x.shape, x.dtype)
        for x, k in zip(leaves, list(keys), strict=True)
    ]
    params = jax.tree.unflatten(treedef, leaves)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(model, state)
    return model, graphdef, params


class FakeTokenizer(AudioTokenizer):
    """One token per 640 samples (25 Hz at 16 kHz): the frame's mean |amplitude|,
    quantised; decoding writes square waves of that amplitude, so it round-trips."""

    kind = "fake_test"
    can_decode = True

    def __init__(self, num_tokens: int = NUM_AUDIO, can_decode: bool = True):
        self._n = num_tokens
        self.can_decode = can_decode  # instance override, for the "cannot decode" tests

    @property
    def num_tokens(self) -> int:
        return self._n

    @property
    def frame_rate(self) -> float:
        return 25.0

    @property
    def sample_rate(self) -> int:
        return 16_000

    def encode(self, waveforms, sample_rate):
        rows = []
        for w in waveforms:
            w = np.asarray(w)
            w = w.astype(np.float32) / 32768.0 if w.dtype.kind == "i" else w.astype(np.float32)
            frames = max(1, len(w) // 640)
            amp = np.abs(w[: frames * 640]).reshape(frames, -1).mean(1) if len(w) >= 640 else [0]
            rows.append(np.clip(np.round(np.asarray(amp) / 0.9 * self._n), 0, self._n - 1))
        lengths = np.asarray([len(r) for r in rows], np.int32)
        out = np.full((len(rows), lengths.max()), -1, np.int32)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out, lengths

    def decode(self, tokens, lengths=None):
        tokens = np.asarray(tokens)
        lengths = [tokens.shape[1]] * len(tokens) if lengths is None else lengths
        sign = np.where(np.arange(640) % 2, 1.0, -1.0).astype(np.float32)
        return [
            np.concatenate([sign * (t / self._n * 0.9) for t in row[: int(n)]] or [sign[:0]])
            for row, n in zip(tokens, lengths, strict=True)
        ]

    def get_config(self):
        return {"num_tokens": self._n}

    def get_arrays(self):
        return {"dummy": np.zeros((1,), np.float32)}

    @classmethod
    def from_saved(cls, config, arrays, directory):
        return cls(config["num_tokens"])


def make_vocab(directory: str) -> JointVocab:
    d = build_char_tokenizer(TEXTS, directory)
    return JointVocab(load_text_tokenizer(d), NUM_AUDIO)


MIXTURE = [
    "demo:ASR:en:1",
    "demo:ASR:fr:1",
    "demo:AST:fr-en:1",
    "demo:S2ST:fr-en:1",
    "demo:TTS:en:1",
    "demo:MT:en-fr:1",
    "demo:ASR+AST+S2ST:en-fr:1",
]


def make_workdir(path: str, vocab: JointVocab, mixture=MIXTURE, **model) -> str:
    """A workdir with one checkpoint (step 3) of a random tiny model (``model``: config
    overrides), vocab, tokenizer."""
    from audiopalm_jax.checkpoint import CHECKPOINT_DIR, Checkpointer
    from audiopalm_jax.train.config import base_config
    from audiopalm_jax.train.loop import _config_json, setup_from_config
    from audiopalm_jax.train.step import init_state

    c = base_config()
    c.model.update(d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64)
    c.model.embed_init_std = 1.0
    c.model.update(model)
    c.data.mixture = list(mixture)
    c.data.source = "tfds"  # as a real run; the mixture says what it was trained on
    setup = setup_from_config(c, vocab.size)
    with jax.set_mesh(setup.mesh):
        state = init_state(setup, seed=0)
    ckpt = Checkpointer(os.path.join(path, CHECKPOINT_DIR), async_save=False)
    ckpt.save(3, state, vocab=vocab, config=_config_json(c))
    ckpt.close()
    FakeTokenizer().save(os.path.join(path, "audio_tokenizer"))
    return path
