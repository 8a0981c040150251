"""Checkpoints: resume equals an uninterrupted run, restore across meshes, atomicity,
vocabulary safety, retention of the best step."""

import os

import jax
import numpy as np
import pytest

from audiopalm_jax.checkpoint import Checkpointer
from audiopalm_jax.train.loop import build_vocab, setup_from_config, train
from audiopalm_jax.vocab import JointVocab


def test_resume_matches_uninterrupted_run_bitwise(tiny_config, tmp_path, read_metrics):
    c = tiny_config
    c.num_train_steps = 8
    c.checkpoint_every_steps = 4
    c.mesh.update(data=2, fsdp=2, tensor=2)
    train(c, str(tmp_path / "straight"))

    c.num_train_steps = 4  # "crashes" after its step-4 checkpoint
    train(c, str(tmp_path / "resumed"))
    c.num_train_steps = 8
    train(c, str(tmp_path / "resumed"))  # same command again: resumes at step 4

    straight = read_metrics(str(tmp_path / "straight"))
    resumed = read_metrics(str(tmp_path / "resumed"))
    for step in range(5, 9):
        assert resumed[step]["loss"] == straight[step]["loss"], step
        assert resumed[step]["grad_norm"] == straight[step]["grad_norm"], step
    ckpt = Checkpointer(str(tmp_path / "resumed" / "checkpoints"), read_only=True)
    assert ckpt.latest_step() == 8


def test_rerun_of_finished_training_says_so(tiny_config, tmp_path, capsys):
    c = tiny_config
    c.num_train_steps = 2
    train(c, str(tmp_path))
    capsys.readouterr()
    train(c, str(tmp_path))
    assert "training already finished" in capsys.readouterr().out


def _restore_params(config, workdir, mesh_config, devices):
    vocab = JointVocab.load(os.path.join(workdir, "vocab"))
    config.mesh.update(mesh_config)
    setup = setup_from_config(config, vocab.size, devices)  # exactly these devices
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
    with jax.set_mesh(setup.mesh):
        state, _ = ckpt.restore(None, setup.abstract_state, vocab=vocab)
    return state


def test_restore_onto_smaller_meshes_gives_identical_params(tiny_config, tmp_path):
    c = tiny_config
    c.num_train_steps = 3
    c.mesh.update(data=2, fsdp=2, tensor=2)
    train(c, str(tmp_path))
    eight = _restore_params(c, str(tmp_path), dict(data=2, fsdp=2, tensor=2), jax.devices())
    four = _restore_params(c, str(tmp_path), dict(data=1, fsdp=4, tensor=1), jax.devices()[:4])
    one = _restore_params(c, str(tmp_path), dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    gate4 = four["params"]["blocks"]["mlp"]["gate"]
    assert len(gate4.sharding.device_set) == 4
    for other in (four, one):
        jax.tree.map(
            lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
            eight["params"],
            other["params"],
        )
    assert int(one["step"]) == 3


def test_half_written_step_is_never_restored(tiny_config, tmp_path, read_metrics):
    c = tiny_config
    c.num_train_steps = 2
    c.checkpoint_every_steps = 2
    train(c, str(tmp_path))
    # What a crash in the middle of saving step 4 leaves behind: Orbax's temp directory.
    partial = tmp_path / "checkpoints" / "4.orbax-checkpoint-tmp-1234567890"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_text("half written")
    ckpt = Checkpointer(str(tmp_path / "checkpoints"))
    assert ckpt.latest_step() == 2
    ckpt.close()
    c.num_train_steps = 4
    train(c, str(tmp_path))  # resumes from 2, not from the partial 4
    metrics = read_metrics(str(tmp_path))
    assert sorted(metrics) == [1, 2, 3, 4]


def test_vocabulary_mismatch_is_a_clear_error(tiny_config, tmp_path):
    c = tiny_config
    c.num_train_steps = 1
    train(c, str(tmp_path))
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), read_only=True)
    saved = ckpt.restore_vocab()
    other = JointVocab(saved.text, saved.num_audio_tokens + 7)
    vocab = build_vocab(c.vocab, str(tmp_path))
    setup = setup_from_config(c, vocab.size)
    with jax.set_mesh(setup.mesh), pytest.raises(ValueError, match="vocabulary mismatch"):
        ckpt.restore(None, setup.abstract_state, vocab=other)


def test_keeps_latest_and_best(tiny_config, tmp_path, read_metrics):
    c = tiny_config
    c.num_train_steps = 10
    c.checkpoint_every_steps = 1
    c.keep_checkpoints = 2
    c.best_metric = "loss"
    c.best_mode = "max"  # keep the worst loss: step 1, so it differs from the latest two
    train(c, str(tmp_path))
    ckpt = Checkpointer(
        str(tmp_path / "checkpoints"), read_only=True, best_metric="loss", best_mode="max"
    )
    losses = {s: r["loss"] for s, r in read_metrics(str(tmp_path)).items()}
    worst = max(losses, key=losses.get)
    assert set(ckpt.all_steps()) == {9, 10, worst}
