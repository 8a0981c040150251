"""The training loop: vocab, mesh, sharded state, data, steps, checkpoints, metrics."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from audiopalm_jax import sharding
from audiopalm_jax.checkpoint import CHECKPOINT_DIR, Checkpointer
from audiopalm_jax.model import ModelConfig
from audiopalm_jax.train.flops import peak_flops_per_device
from audiopalm_jax.train.metrics_writer import MetricsWriter
from audiopalm_jax.train.optimizer import make_optimizer
from audiopalm_jax.train.step import (
    TrainSetup,
    abstract_model,
    global_batch,
    init_state,
    make_eval_step,
    make_setup,
    make_train_step,
)
from audiopalm_jax.train.synthetic import SyntheticIterator
from audiopalm_jax.vocab import DEFAULT_CHARS, JointVocab, build_char_tokenizer, load_text_tokenizer

log = logging.getLogger(__name__)

VOCAB_DIR = "vocab"


def initialize_distributed(dist: Mapping[str, Any]) -> None:
    """``jax.distributed.initialize`` when the config asks for several processes.

    ``num_processes > 1`` with a ``coordinator_address`` starts it explicitly (local
    multi-process, SLURM scripts); ``auto=True`` lets JAX detect a TPU pod or SLURM.
    """
    num = int(dist.get("num_processes", 1))
    if num <= 1 and not dist.get("auto", False):
        return
    if jax.distributed.is_initialized():
        return
    if jax.config.jax_platforms in (None, "", "cpu") and num > 1:
        # CPU collectives across processes need gloo (tests and local runs).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if dist.get("auto", False) and num <= 1:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(
            coordinator_address=dist["coordinator_address"],
            num_processes=num,
            process_id=int(dist["process_id"]),
        )


def build_vocab(vocab_config: Mapping[str, Any], workdir: str) -> JointVocab:
    """The run's vocabulary: loaded from ``workdir/vocab`` if present, else built and saved.

    ``text_tokenizer``: a HF tokenizer directory, a SentencePiece ``.model`` file, or
    ``"char"`` (characters of ``chars``, default English/French/German/Spanish).
    """
    vocab_dir = os.path.join(workdir, VOCAB_DIR)
    num_audio = int(vocab_config["num_audio_tokens"])
    if os.path.exists(os.path.join(vocab_dir, "joint_vocab.json")):
        vocab = JointVocab.load(vocab_dir)
        if vocab.num_audio_tokens != num_audio:
            raise ValueError(
                f"{vocab_dir} holds a vocabulary with {vocab.num_audio_tokens} audio tokens, "
                f"but config.vocab.num_audio_tokens={num_audio}; use a new workdir"
            )
        return vocab
    spec = vocab_config.get("text_tokenizer", "char")
    if spec == "char":
        text_dir = os.path.join(vocab_dir, "text_tokenizer")
        if jax.process_index() == 0:
            build_char_tokenizer(list(vocab_config.get("chars") or DEFAULT_CHARS), text_dir)
        _sync("vocab")
        text = load_text_tokenizer(text_dir)
    else:
        text = load_text_tokenizer(spec)
    vocab = JointVocab(text, num_audio, int(vocab_config.get("pad_to_multiple", 128)))
    if jax.process_index() == 0:
        vocab.save(vocab_dir)
    _sync("vocab_saved")
    return vocab


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def make_train_iterator(
    config: ml_collections.ConfigDict, vocab: JointVocab, split: str = "train", workdir: str = ""
):
    """This process's iterator of local batches for ``split``."""
    data = config.data
    if data.source == "synthetic":
        seed = config.seed + (0 if split == "train" else 1_000_003)
        return SyntheticIterator(
            seed,
            data.batch_size,
            data.seq_len,
            vocab.size,
            jax.process_index(),
            jax.process_count(),
        )
    from audiopalm_jax.data import pipeline  # deferred: only real data needs grain/tfds

    return pipeline.make_iterator(config, vocab, split=split, workdir=workdir or None)


class PreemptionWatcher:
    """Turns SIGTERM into "save now, then exit cleanly" at the next step boundary."""

    def __init__(self):
        self._flag = threading.Event()
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        log.warning("SIGTERM received: saving a checkpoint at the end of this step")
        self._flag.set()

    def should_stop(self) -> bool:
        local = self._flag.is_set()
        if jax.process_count() == 1:
            return local
        from jax.experimental import multihost_utils

        # Every process must agree, or one would wait forever in the save's collectives.
        return bool(np.any(multihost_utils.process_allgather(np.array([local]))))

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(config.to_json_best_effort())


def setup_from_config(
    config: ml_collections.ConfigDict, vocab_size: int, devices: Sequence[Any] | None = None
) -> TrainSetup:
    """Mesh + optimizer + abstract sharded state for ``config`` (no arrays allocated),
    over ``devices`` (default: all; ``audiopalm compile`` passes compile-only TPU ones)."""
    model_cfg = ModelConfig.from_dict({**config.model.to_dict(), "vocab_size": vocab_size})
    mesh = sharding.make_mesh(config.mesh.to_dict(), devices=devices)
    logical_specs = abstract_model(model_cfg)[2]
    tx, schedule = make_optimizer(config.optimizer.to_dict(), config.num_train_steps, logical_specs)
    return make_setup(model_cfg, tx, schedule, mesh, config.sharding_rules)


def _evaluate_loss(setup, eval_step, params, batches: Iterator, num_batches: int) -> dict:
    totals: dict[str, float] = {}
    for _ in range(num_batches):
        sums = eval_step(params, global_batch(setup, next(batches)))
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    denom = max(totals.get("weight_sum", 0.0), 1.0)
    return {"eval/loss": totals["loss_sum"] / denom, "eval/accuracy": totals["correct_sum"] / denom}


def _evaluate_tasks(config, workdir: str, setup: TrainSetup, vocab: JointVocab, params, step: int):
    """Task metrics (WER, BLEU, ASR-BLEU ...) of the live params on a small slice of the
    periodic splits, through evaluation/; also written to ``workdir/eval/<step>/``."""
    from audiopalm_jax.audio import is_saved_tokenizer, load_tokenizer
    from audiopalm_jax.data import pipeline
    from audiopalm_jax.evaluation.run import evaluate_workdir, evaluation_settings
    from audiopalm_jax.inference.api import AudioPaLM

    settings = evaluation_settings(config)
    tokenizer = None
    _, tokenizer_dir = pipeline.prepared_dirs(config.data, workdir)
    if is_saved_tokenizer(tokenizer_dir):
        tokenizer = load_tokenizer(tokenizer_dir)
    model = AudioPaLM(
        setup.model_config,
        params,
        vocab,
        tokenizer,
        mesh=setup.mesh,
        rules=setup.rules,
        train_config=_config_json(config),
        batch_size=int(settings["batch_size"]),
        step=step,
    )
    periodic = config.copy_and_resolve_references()
    # A fresh section: ``limit`` may be a per-task ConfigDict, which an int cannot replace.
    periodic.evaluation = ml_collections.ConfigDict(
        {**settings, "limit": int(settings["periodic_limit"])}
    )
    results = evaluate_workdir(
        periodic, workdir, splits=list(settings["periodic_splits"]), step=step, model=model
    )
    return {
        f"eval/{split}/{k}": float(v)
        for split, metrics in results.items()
        for k, v in metrics.items()
        if isinstance(v, (int, float))
    }


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains (or resumes) ``config`` in ``workdir``; returns the last logged metrics."""
    initialize_distributed(config.get("distributed", {}))
    os.makedirs(workdir, exist_ok=True)
    vocab = build_vocab(config.vocab, workdir)
    setup = setup_from_config(config, vocab.size)
    batch_shards = setup.mesh.shape["data"] * setup.mesh.shape["fsdp"]
    if config.data.batch_size % batch_shards:
        raise ValueError(
            f"data.batch_size={config.data.batch_size} must be divisible by "
            f"mesh data*fsdp={batch_shards}"
        )
    ckpt = Checkpointer(
        os.path.join(workdir, CHECKPOINT_DIR),
        keep=config.get("keep_checkpoints", 3),
        best_metric=config.get("best_metric") or None,
        best_mode=config.get("best_mode", "min"),
        async_save=config.get("async_checkpointing", True),
    )
    num_steps = int(config.num_train_steps)
    with jax.set_mesh(setup.mesh), sharding.axis_rules(setup.rules):
        data_iter = make_train_iterator(config, vocab, "train", workdir)
        start = ckpt.latest_step()
        if start is not None:
            log.info("resuming from %s step %d", ckpt.directory, start)
            state, data_iter = ckpt.restore(
                start, setup.abstract_state, data_iter=data_iter, vocab=vocab
            )
        else:
            start = 0
            params = None
            if config.get("init_from"):
                from audiopalm_jax.convert.huggingface import extend_vocab, load_hf_checkpoint

                hf_cfg, params = load_hf_checkpoint(config.init_from)
                _, params = extend_vocab(params, hf_cfg, vocab.size, seed=config.seed)
            state = init_state(setup, config.seed, params)
        if start >= num_steps:
            print(f"training already finished: {workdir} has step {start} of {num_steps}")
            ckpt.close()
            return {"step": float(start)}

        loss_chunk_length = config.get("loss_chunk_length", 0)
        train_step = make_train_step(
            setup,
            seed=config.seed,
            z_loss=config.get("z_loss", 0.0),
            grad_accum_steps=config.optimizer.get("grad_accum_steps", 1),
            loss_chunk_length=loss_chunk_length,
        )
        eval_every = int(config.get("eval_every_steps", 0))
        task_eval_every = int(config.get("evaluation", {}).get("every_steps", 0))
        eval_step = make_eval_step(setup, loss_chunk_length) if eval_every else None
        writer = MetricsWriter(workdir, num_steps, start)
        peak, peak_source = peak_flops_per_device(config.get("peak_flops_per_device", 0.0))
        on_cpu = jax.devices()[0].platform == "cpu"
        # Simulated CPU devices share the host's cores: the measured peak is per host.
        peak_total = peak * (jax.process_count() if on_cpu else jax.device_count())
        tokens_per_step = config.data.batch_size * config.data.seq_len
        flops_per_step = setup.model_config.flops_per_token(config.data.seq_len) * tokens_per_step
        log.info("peak %.3g FLOP/s per device (%s)", peak, peak_source)

        watcher = PreemptionWatcher()
        last: dict[str, float] = {}
        window_start, window_steps = None, 0
        step = start
        try:
            while step < num_steps:
                batch = global_batch(setup, next(data_iter))
                state, metrics = train_step(state, batch)
                step += 1
                window_steps += 1
                if window_start is None:  # the first step compiles; time from after it
                    jax.block_until_ready(metrics)
                    window_start, window_steps = time.perf_counter(), 0
                stop = watcher.should_stop()
                task_eval_now = bool(task_eval_every) and step % task_eval_every == 0
                if step % config.log_every_steps == 0 or step == num_steps or stop or task_eval_now:
                    last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    elapsed = time.perf_counter() - window_start
                    if window_steps and elapsed > 0:
                        seconds_per_step = elapsed / window_steps
                        last["tokens_per_sec"] = tokens_per_step / seconds_per_step
                        last["mfu"] = flops_per_step / seconds_per_step / peak_total
                        last["seconds_per_step"] = seconds_per_step
                    if eval_step is not None and (step % eval_every == 0 or step == num_steps):
                        eval_iter = make_train_iterator(config, vocab, "validation", workdir)
                        last.update(
                            _evaluate_loss(
                                setup,
                                eval_step,
                                state["params"],
                                eval_iter,
                                int(config.get("eval_batches", 4)),
                            )
                        )
                    if task_eval_now:
                        last.update(
                            _evaluate_tasks(config, workdir, setup, vocab, state["params"], step)
                        )
                    writer.write(step, last)
                    writer.progress(step, last)
                    window_start, window_steps = time.perf_counter(), 0
                if step % config.checkpoint_every_steps == 0 or step == num_steps or stop:
                    ckpt.save(
                        step,
                        state,
                        vocab=vocab,
                        config=_config_json(config),
                        data_iter=data_iter,
                        metrics=last,
                    )
                if stop:
                    print(f"preempted: saved step {step}; rerun the same command to resume")
                    break
        finally:
            ckpt.close()
            writer.close()
            watcher.restore()
    return {"step": float(step), **last}
