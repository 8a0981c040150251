"""Reading a trained model's parameters (only) from an Orbax checkpoint, sharded."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from audiopalm_jax import sharding
from audiopalm_jax.checkpoint import CHECKPOINT_DIR, Checkpointer
from audiopalm_jax.model import ModelConfig
from audiopalm_jax.vocab import JointVocab

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Loaded:
    workdir: str
    step: int
    config: dict[str, Any]  # the training config (JSON)
    vocab: JointVocab
    model_config: ModelConfig
    params: dict  # in their shardings on ``mesh``
    mesh: jax.sharding.Mesh
    rules: tuple


def checkpoint_dirs(path: str) -> tuple[str, str]:
    """(workdir, checkpoint dir) for a workdir or a checkpoint directory."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(os.path.join(path, CHECKPOINT_DIR)):
        return path, os.path.join(path, CHECKPOINT_DIR)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path!r} is neither a workdir nor a checkpoint directory")
    return os.path.dirname(path), path


def inference_mesh(mesh_config: dict | None) -> jax.sharding.Mesh:
    """The configured mesh, or plain data parallelism when it does not fit these devices."""
    try:
        return sharding.make_mesh(mesh_config or {"data": -1, "fsdp": 1, "tensor": 1})
    except ValueError as e:
        log.warning(
            "training mesh does not fit %d devices (%s): using data parallelism",
            jax.device_count(),
            e,
        )
        return sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})


def load_checkpoint(
    path: str, *, step: int | None = None, mesh_config: dict | None = None
) -> Loaded:
    """Config, vocab and params of ``step`` (default: latest) of a workdir / checkpoint dir.

    Only ``state/params`` is read (Orbax partial restore): the optimizer state never
    leaves the disk, and every array lands directly in its sharding.
    """
    from audiopalm_jax.train.step import abstract_model  # deferred: optax import

    workdir, ckpt_dir = checkpoint_dirs(path)
    ckpt = Checkpointer(ckpt_dir, read_only=True, async_save=False)
    step = ckpt.latest_step() if step is None else int(step)
    if step is None:
        raise FileNotFoundError(f"no complete checkpoint in {ckpt_dir}")
    if step not in ckpt.all_steps():
        raise FileNotFoundError(f"no step {step} in {ckpt_dir}; steps: {ckpt.all_steps()}")
    config = ckpt.restore_config(step)
    vocab = ckpt.restore_vocab(step)
    ckpt.close()
    model_config = ModelConfig.from_dict({**config["model"], "vocab_size": vocab.size})
    mesh = inference_mesh(mesh_config or config.get("mesh"))
    rules = sharding.normalize_rules(config.get("sharding_rules") or sharding.DEFAULT_RULES)
    _, abstract, logical = abstract_model(model_config)
    shardings = sharding.named_shardings(logical, abstract, mesh, rules)
    target = {
        "params": jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
        )
    }
    manager = ocp.CheckpointManager(
        epath.Path(ckpt_dir),
        options=ocp.CheckpointManagerOptions(read_only=True, create=False),
        item_handlers={"state": ocp.PyTreeCheckpointHandler()},
    )
    restore = ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
    )
    params = manager.restore(step, args=ocp.args.Composite(state=restore))["state"]["params"]
    manager.close()
    return Loaded(workdir, step, config, vocab, model_config, params, mesh, rules)
