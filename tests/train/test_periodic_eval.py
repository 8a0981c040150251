"""The train loop runs task evaluation (WER, BLEU ...) every N steps and can keep the
best checkpoint by one of its metrics."""

import json
import os

import ml_collections

from audiopalm_jax.checkpoint import Checkpointer
from audiopalm_jax.data import prepare
from audiopalm_jax.train.config import base_config
from audiopalm_jax.train.loop import train


def _config(data_dir: str) -> ml_collections.ConfigDict:
    c = base_config()
    c.num_train_steps = 4
    c.log_every_steps = 1
    c.checkpoint_every_steps = 2
    c.async_checkpointing = False
    c.keep_checkpoints = 1
    c.best_metric = "eval/validation/asr_cer/en"
    c.best_mode = "min"
    c.model.update(d_model=32, num_layers=1, num_heads=2, num_kv_heads=2, head_dim=16, mlp_dim=64)
    c.vocab.num_audio_tokens = 32
    c.optimizer.update(learning_rate=1e-3, warmup_steps=1)
    c.data = ml_collections.ConfigDict(
        dict(
            source="tfds",
            batch_size=8,
            seq_len=256,
            data_dir=data_dir,
            datasets={"demo_speech": {"name": "demo_speech/tiny", "splits": {}}},
            mixture=("demo_speech:ASR:en",),
            tokens_dir="",
            audio_tokenizer_dir="",
            audio_tokenizer=dict(
                num_tokens=32,
                fit_records=4,
                kmeans=dict(num_steps=5, batch_size=256, init_sample=512),
                progress=False,
            ),
        )
    )
    c.evaluation = ml_collections.ConfigDict(
        dict(
            dataset="demo_speech",
            tasks=("ASR",),
            directions=("en",),
            batch_size=4,
            max_new_tokens=8,
            limit=dict(ASR=3),  # per task (the end-of-run eval); the periodic one takes 2
            every_steps=2,
            periodic_splits=("validation",),
            periodic_limit=2,
        )
    )
    return c


def test_periodic_task_evaluation_logged_and_used_for_best(tmp_path):
    config = _config(str(tmp_path / "tfds"))
    workdir = str(tmp_path / "run")
    prepare.prepare(config, workdir)
    train(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = {r["step"]: r for r in map(json.loads, f)}
    key = "eval/validation/asr_cer/en"
    assert key in rows[2] and key in rows[4] and key not in rows[1]
    assert rows[2]["eval/validation/num_examples/asr"] == 2
    with open(os.path.join(workdir, "eval", "4", "metrics.json")) as f:
        assert json.load(f)["validation"]["asr_cer/en"] == rows[4][key]
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True, best_metric=key)
    best = min((2, 4), key=lambda s: rows[s][key])
    assert best in ckpt.all_steps() and 4 in ckpt.all_steps()


def test_prepared_data_outside_the_workdir(tmp_path):
    """Tokens and tokenizer prepared once elsewhere (data.tokens_dir / audio_tokenizer_dir):
    the periodic evaluation and from_pretrained find the configured tokenizer."""
    import pytest

    from audiopalm_jax.inference.api import AudioPaLM

    config = _config(str(tmp_path / "tfds"))
    config.num_train_steps = 2
    config.data.tokens_dir = str(tmp_path / "shared" / "tokens")
    config.data.audio_tokenizer_dir = str(tmp_path / "shared" / "audio_tokenizer")
    workdir = str(tmp_path / "run")
    prepare.prepare(config, workdir)
    assert not os.path.exists(os.path.join(workdir, "audio_tokenizer"))
    train(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = {r["step"]: r for r in map(json.loads, f)}
    assert rows[2]["eval/validation/num_examples/asr"] == 2
    model = AudioPaLM.from_pretrained(workdir)
    assert model.audio_tokenizer is not None
    assert model.audio_tokenizer.num_tokens == 32
    with pytest.raises(FileNotFoundError, match="nowhere"):
        AudioPaLM.from_pretrained(workdir, audio_tokenizer=str(tmp_path / "nowhere"))
