"""Training the acoustic stage: units + a voice prompt -> the utterance's log-mel (L1).

Each example is one utterance: its semantic tokens (what the language model writes), its
log-mel frames (the target) and a voice prompt from *another* utterance of the same
speaker (on parallel corpora, the same speaker in another language), so the stage learns
to carry a voice across content and languages rather than to copy its prompt.
Features are computed inside the jitted step from padded waveforms.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from audiopalm_jax.acoustic.model import AcousticConfig, AcousticModel
from audiopalm_jax.acoustic.stage import (
    AcousticStage,
    log_mel_frames,
    mel_config,
    prompt_audio,
    standardize,
)

log = logging.getLogger(__name__)
STATE_DIR = "train_state"


class UtteranceSource(Protocol):
    """Random access to training utterances (see :mod:`audiopalm_jax.acoustic.data`)."""

    def __len__(self) -> int: ...

    def example(self, index: int, rng: np.random.Generator) -> tuple | None:
        """(units [T] int, waveform [N] float32 16 kHz, voice-prompt waveform) or None."""


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    steps: int = 600
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    seed: int = 0
    log_every_steps: int = 50
    checkpoint_every_steps: int = 200
    stats_utterances: int = 64  # utterances the log-mel mean / std are taken over

    def __post_init__(self):
        for name in (
            "steps",
            "batch_size",
            "log_every_steps",
            "checkpoint_every_steps",
            "stats_utterances",
        ):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"acoustic.{name}={getattr(self, name)} must be > 0")
        if self.learning_rate <= 0:
            raise ValueError(f"acoustic.learning_rate={self.learning_rate} must be > 0")


def _batches(
    source: UtteranceSource, cfg: AcousticConfig, batch: int, seed: int, start_step: int
) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-shape batches: units padded to ``max_tokens``, waveforms to match."""
    t, n = cfg.max_tokens, cfg.max_tokens * cfg.samples_per_token
    step = start_step
    while True:
        rng = np.random.default_rng([seed, step])
        units = np.full((batch, t), cfg.num_tokens, np.int32)
        waves = np.zeros((batch, n), np.float32)
        lengths = np.zeros((batch,), np.int32)
        prompts = np.zeros((batch, int(round(cfg.prompt_seconds * cfg.sample_rate))), np.float32)
        filled = 0
        while filled < batch:
            ex = source.example(int(rng.integers(len(source))), rng)
            if ex is None:
                continue
            u, w, p = ex
            u = np.asarray(u, np.int32)[:t]
            units[filled, : len(u)] = u
            w = w[: len(u) * cfg.samples_per_token]
            waves[filled, : len(w)] = w
            lengths[filled] = len(w)
            prompts[filled] = prompt_audio(p, cfg)
            filled += 1
        yield {"units": units, "waves": waves, "lengths": lengths, "prompts": prompts}
        step += 1


def feature_stats(source: UtteranceSource, cfg: AcousticConfig, count: int, seed: int):
    """Per-bin log-mel (mean, std) over the valid frames of ~``count`` utterances."""
    mel, frames = mel_config(cfg), []
    batches = _batches(source, cfg, 16, seed + 1, 0)
    for _ in range(max(1, -(-count // 16))):
        b = next(batches)
        feats = np.asarray(log_mel_frames(mel, cfg.max_tokens, b["waves"], b["lengths"]))
        valid = b["units"] < cfg.num_tokens  # [B, T]
        frames.append(feats[valid].reshape(-1, cfg.n_mels))
    x = np.concatenate(frames)
    return x.mean(0).astype(np.float32), np.maximum(x.std(0), 1e-3).astype(np.float32)


def make_step(cfg: AcousticConfig, optimizer, mean: np.ndarray, std: np.ndarray) -> Callable:
    """The jitted ``(graphdef, state, opt_state, batch) -> (state, opt_state, loss)``."""
    mel, p = mel_config(cfg), cfg.prompt_tokens

    def loss_fn(params, graphdef, batch):
        model = nnx.merge(graphdef, params)
        units = batch["units"]
        mask = units < cfg.num_tokens  # [B, T]
        target = log_mel_frames(mel, units.shape[1], batch["waves"], batch["lengths"])
        plen = jnp.full((units.shape[0],), batch["prompts"].shape[1], jnp.int32)
        prompt = log_mel_frames(mel, p, batch["prompts"], plen)
        target, prompt = standardize(target, mean, std), standardize(prompt, mean, std)
        pred = model(units, mask, prompt, jnp.ones(prompt.shape[:2], bool))
        err = jnp.abs(pred - target).mean(-1)  # [B, T]
        return jnp.sum(err * mask) / jnp.maximum(mask.sum(), 1)

    @jax.jit
    def step(graphdef, params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, graphdef, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def _optimizer(s: TrainSettings):
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, s.learning_rate, min(s.warmup_steps, s.steps - 1), s.steps, s.learning_rate * 0.05
    )
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.01))


def train_acoustic(
    source: UtteranceSource,
    cfg: AcousticConfig,
    settings: TrainSettings,
    directory: str,
    *,
    default_voice: tuple[np.ndarray, str] | None = None,
    progress: Callable[[str], None] = print,
) -> AcousticStage:
    """Trains (or resumes, or loads when finished) the stage saved in ``directory``.

    ``default_voice``: (waveform, description) of the prompt used when a caller gives no
    voice; default: the first training utterance's.
    """
    import orbax.checkpoint as ocp

    from audiopalm_jax.acoustic.stage import is_saved_stage

    if is_saved_stage(directory):
        progress(f"acoustic stage: {directory} is trained; loading it")
        return AcousticStage.load(directory)
    os.makedirs(directory, exist_ok=True)
    mean, std = feature_stats(source, cfg, settings.stats_utterances, settings.seed)
    model = AcousticModel(cfg, rngs=nnx.Rngs(settings.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    optimizer = _optimizer(settings)
    opt_state = optimizer.init(params)
    manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(directory, STATE_DIR)),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False),
    )
    start = 0
    if manager.latest_step() is not None:
        start = int(manager.latest_step())
        target = {"params": params, "opt_state": opt_state}
        restored = manager.restore(start, args=ocp.args.StandardRestore(target))
        params, opt_state = restored["params"], restored["opt_state"]
        progress(f"acoustic stage: resumed at step {start} of {settings.steps}")
    step_fn = make_step(cfg, optimizer, mean, std)
    batches = _batches(source, cfg, settings.batch_size, settings.seed, start)
    t0, losses = time.perf_counter(), []
    for step in range(start + 1, settings.steps + 1):
        params, opt_state, loss = step_fn(graphdef, params, opt_state, next(batches))
        losses.append(loss)
        if step % settings.log_every_steps == 0 or step == settings.steps:
            mean_loss = float(np.mean(jax.device_get(losses)))
            losses = []
            rate = (step - start) / (time.perf_counter() - t0)
            progress(
                f"acoustic stage: step {step}/{settings.steps} | L1 {mean_loss:.4f} | "
                f"{rate:.2f} steps/s"
            )
        if step % settings.checkpoint_every_steps == 0 and step < settings.steps:
            manager.save(
                step, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state})
            )
    manager.wait_until_finished()
    if default_voice is None:  # the first training utterance that has one
        rng = np.random.default_rng(settings.seed)
        index, ex = next(
            (i, ex) for i in range(len(source)) if (ex := source.example(i, rng)) is not None
        )
        default_voice = (ex[2], f"the voice prompt of training utterance {index}")
    mel = mel_config(cfg)
    wave = prompt_audio(default_voice[0], cfg)[None]
    prompt = np.asarray(
        log_mel_frames(mel, cfg.prompt_tokens, wave, np.asarray([wave.shape[1]], np.int32))
    )[0]
    info = {"steps": settings.steps, "default_voice": default_voice[1]}
    stage = AcousticStage(cfg, params, mean, std, prompt, info)
    stage.save(directory)
    return stage


def config_defaults() -> dict[str, Any]:
    """Every key of a config's ``acoustic`` section with its default (``base_config``)."""
    fixed = {"num_tokens", "token_rate", "sample_rate"}  # from the audio tokenizer
    model = {
        f.name: f.default
        for f in dataclasses.fields(AcousticConfig)
        if f.name not in fixed and f.default is not dataclasses.MISSING
    }
    train = {f.name: f.default for f in dataclasses.fields(TrainSettings)}
    return {"enabled": False, **model, **train}


def settings_from_config(section: Mapping[str, Any]) -> tuple[dict, TrainSettings]:
    """(AcousticConfig overrides, TrainSettings) from a config's ``acoustic`` section."""
    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    model_keys = {f.name for f in dataclasses.fields(AcousticConfig)} - {
        "num_tokens",
        "token_rate",
        "sample_rate",
    }
    section = dict(section)
    unknown = sorted(set(section) - fields - model_keys - {"enabled"})
    if unknown:
        raise ValueError(f"unknown acoustic config keys {unknown}")
    train = TrainSettings(**{k: section[k] for k in fields if k in section})
    return {k: section[k] for k in model_keys if k in section}, train
