"""A trained acoustic stage: voice prompts in, waveforms out; saved in a workdir.

    stage = AcousticStage.load("runs/demo/acoustic")
    waves = stage.synthesize([units], voices=[(wave, 16000)])  # float32 at 16 kHz

A voice prompt is the first ``prompt_seconds`` (3 s) of a recording, repeated when
shorter (AudioPaLM's rule). Without one, the stage speaks in its default voice: the
prompt it saved at training time (a training utterance, named in ``config.json``).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from audiopalm_jax.acoustic.model import AcousticConfig, AcousticModel
from audiopalm_jax.audio import frontend
from audiopalm_jax.audio.mel_tokenizer import MelConfig, stacked_log_mel, synthesize_log_mel

CONFIG_FILE, STATS_FILE, PARAMS_DIR = "config.json", "stats.safetensors", "params"
MIN_VOICE_SECONDS = 0.5
Voice = np.ndarray | str | os.PathLike | tuple[np.ndarray, int]


def mel_config(cfg: AcousticConfig, griffin_lim_iters: int = 32) -> MelConfig:
    """The log-mel analysis / Griffin-Lim synthesis settings the stage reads and writes."""
    return MelConfig(
        sample_rate=cfg.sample_rate,
        hop_length=cfg.hop_length,
        n_mels=cfg.n_mels,
        frame_rate=cfg.token_rate,
        griffin_lim_iters=griffin_lim_iters,
    ).validate()


@functools.partial(jax.jit, static_argnums=(0, 1))
def log_mel_frames(mel: MelConfig, num: int, waves: jax.Array, lengths: jax.Array) -> jax.Array:
    """[B, N] audio -> [B, num, stack * n_mels] token-rate log-mel (silence past the end)."""
    feats = stacked_log_mel(mel, waves, lengths)
    pad = max(0, num - feats.shape[1])
    floor = float(np.log(mel.log_floor))
    return jnp.pad(feats, ((0, 0), (0, pad), (0, 0)), constant_values=floor)[:, :num]


def prompt_audio(wave: np.ndarray, cfg: AcousticConfig) -> np.ndarray:
    """The first ``prompt_seconds`` of ``wave`` (16 kHz float), tiled when shorter."""
    n = int(round(cfg.prompt_seconds * cfg.sample_rate))
    reps = -(-n // max(1, len(wave)))
    return np.tile(wave, reps)[:n].astype(np.float32)


def check_voice(voice: Voice, sample_rate: int, what: str = "voice") -> np.ndarray:
    """A usable voice prompt -> float32 mono at ``sample_rate``; a one-line error otherwise."""
    try:
        if isinstance(voice, (str, os.PathLike)):
            wave, sr = frontend.load_audio(os.fspath(voice))
        elif isinstance(voice, tuple) and len(voice) == 2:
            wave, sr = voice
        elif isinstance(voice, np.ndarray):
            wave, sr = voice, sample_rate
        else:
            raise ValueError(
                f"expected a path, a 1-D array at {sample_rate} Hz or (array, rate); "
                f"got {type(voice).__name__}"
            )
        wave = frontend.prepare_waveform(wave, sr, sample_rate, normalize=True)
    except (ValueError, OSError, frontend.AudioInputError) as e:
        raise ValueError(f"{what}: {' '.join(str(e).split())}") from None
    if len(wave) < MIN_VOICE_SECONDS * sample_rate:
        raise ValueError(
            f"{what}: {len(wave) / sample_rate:.2f} s of audio is too short for a voice "
            f"prompt; give at least {MIN_VOICE_SECONDS} s"
        )
    return wave


class AcousticStage:
    """Config + parameters + feature statistics + the default voice prompt."""

    def __init__(
        self,
        cfg: AcousticConfig,
        params: Any,
        mean: np.ndarray,  # [n_mels] log-mel mean over training frames
        std: np.ndarray,  # [n_mels]
        default_prompt: np.ndarray,  # [prompt_tokens, frame_dim] log-mel
        info: dict | None = None,
    ):
        self.cfg = cfg
        self.mel = mel_config(cfg)
        self.graphdef = nnx.graphdef(nnx.eval_shape(lambda: AcousticModel(cfg, rngs=nnx.Rngs(0))))
        self.params = params
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.default_prompt = np.asarray(default_prompt, np.float32)
        self.info = dict(info or {})

    # -- features ---------------------------------------------------------------------------
    def prompt_features(self, voices: Sequence[Voice | None]) -> np.ndarray:
        """Voice prompts -> [B, prompt_tokens, frame_dim] log-mel (None: the default voice)."""
        p = self.cfg.prompt_tokens
        out = np.repeat(self.default_prompt[None], len(voices), axis=0)
        given = [i for i, v in enumerate(voices) if v is not None]
        if given:
            waves = np.stack(
                [
                    prompt_audio(
                        check_voice(voices[i], self.cfg.sample_rate, f"voice {i}"), self.cfg
                    )
                    for i in given
                ]
            )
            lengths = np.full((len(given),), waves.shape[1], np.int32)
            out[given] = np.asarray(log_mel_frames(self.mel, p, waves, lengths))
        return out

    # -- synthesis --------------------------------------------------------------------------
    def synthesize(
        self, units: Sequence[np.ndarray], voices: Sequence[Voice | None] | None = None
    ) -> list[np.ndarray]:
        """Unit rows (token ids of the semantic tokenizer) -> float32 waveforms at
        ``cfg.sample_rate``, ``len(row) * samples_per_token`` samples each."""
        cfg = self.cfg
        voices = list(voices) if voices is not None else [None] * len(units)
        if len(voices) != len(units):
            raise ValueError(f"{len(voices)} voices for {len(units)} unit rows")
        prompts = self.prompt_features(voices)
        out: list[np.ndarray] = []
        for i, row in enumerate(units):
            row = np.asarray(row, np.int32).reshape(-1)
            if row.size and (row.min() < 0 or row.max() >= cfg.num_tokens):
                raise ValueError(
                    f"unit row {i}: ids must be in [0, {cfg.num_tokens}), got "
                    f"{int(row.min())}..{int(row.max())}"
                )
            mels = [
                self._log_mel(row[s : s + cfg.max_tokens], prompts[i])
                for s in range(0, len(row), cfg.max_tokens)
            ]
            if not mels:
                out.append(np.zeros((0,), np.float32))
                continue
            logmel = np.concatenate(mels, axis=0)  # [T, frame_dim]
            width = -(-len(logmel) // 32) * 32  # few distinct shapes -> few compilations
            floor = np.log(self.mel.log_floor)
            logmel = np.pad(logmel, ((0, width - len(logmel)), (0, 0)), constant_values=floor)
            wave = np.asarray(synthesize_log_mel(self.mel, jnp.asarray(logmel[None])))[0]
            out.append(wave[: len(row) * cfg.samples_per_token].astype(np.float32))
        return out

    def _log_mel(self, row: np.ndarray, prompt: np.ndarray) -> np.ndarray:
        """One chunk of units -> [len, frame_dim] log-mel (units padded to a bucket of 32)."""
        t = len(row)
        width = min(self.cfg.max_tokens, -(-t // 32) * 32)
        units = np.full((1, width), self.cfg.num_tokens, np.int32)
        units[0, :t] = row
        mask = np.arange(width)[None] < t
        pred = _predict(
            self.graphdef,
            self.params,
            jnp.asarray(units),
            jnp.asarray(mask),
            standardize(jnp.asarray(prompt[None]), self.mean, self.std),
            self.mean,
            self.std,
        )
        return np.asarray(pred)[0, :t]

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        """Writes ``config.json``, ``stats.safetensors`` and the Orbax ``params/``."""
        import orbax.checkpoint as ocp
        from safetensors.numpy import save_file

        os.makedirs(directory, exist_ok=True)
        stats = {"mean": self.mean, "std": self.std, "default_prompt": self.default_prompt}
        save_file(
            {k: np.ascontiguousarray(v) for k, v in stats.items()},
            os.path.join(directory, STATS_FILE),
        )
        path = os.path.abspath(os.path.join(directory, PARAMS_DIR))
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(path, self.params, force=True)
        tmp = os.path.join(directory, CONFIG_FILE + ".tmp")
        with open(tmp, "w") as f:  # written last: its presence marks a complete stage
            json.dump({"config": self.cfg.to_dict(), "info": self.info}, f, indent=1)
        os.replace(tmp, os.path.join(directory, CONFIG_FILE))

    @classmethod
    def load(cls, directory: str) -> AcousticStage:
        import orbax.checkpoint as ocp
        from safetensors.numpy import load_file

        path = os.path.join(directory, CONFIG_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no acoustic stage in {directory!r} (no {CONFIG_FILE})")
        with open(path) as f:
            saved = json.load(f)
        cfg = AcousticConfig.from_dict(saved["config"])
        stats = load_file(os.path.join(directory, STATS_FILE))
        abstract = nnx.state(nnx.eval_shape(lambda: AcousticModel(cfg, rngs=nnx.Rngs(0))))
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=_replicated()), abstract
        )
        with ocp.StandardCheckpointer() as ckpt:
            params = ckpt.restore(os.path.abspath(os.path.join(directory, PARAMS_DIR)), abstract)
        return cls(
            cfg, params, stats["mean"], stats["std"], stats["default_prompt"], saved.get("info")
        )

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"AcousticStage(units={c.num_tokens}, {c.token_rate:g} Hz, d_model={c.d_model}, "
            f"layers={c.num_layers}, prompt {c.prompt_seconds:g} s)"
        )


def is_saved_stage(directory: str) -> bool:
    return bool(directory) and os.path.exists(os.path.join(directory, CONFIG_FILE))


def _replicated():
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


@jax.jit
def _predict(graphdef, params, units, mask, prompt, mean, std):
    model = nnx.merge(graphdef, params)
    ones = jnp.ones(prompt.shape[:2], bool)
    pred = model(units, mask, prompt, ones)  # [B, T, frame_dim] standardised
    reps = pred.shape[-1] // mean.shape[0]
    return pred * jnp.tile(std, reps) + jnp.tile(mean, reps)


def standardize(logmel: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """[..., stack * n_mels] log-mel -> per-bin standardised (``mean``, ``std``: [n_mels])."""
    reps = logmel.shape[-1] // mean.shape[0]
    return (logmel - jnp.tile(mean, reps)) / jnp.tile(std, reps)
