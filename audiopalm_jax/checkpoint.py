"""Orbax checkpoints shared by training and inference.

A checkpoint step holds four items: ``state`` (params + optimizer state, sharded arrays),
``data_iter`` (each process's input-iterator state, grain's handler), ``vocab`` (the joint
vocabulary, so a model is never paired with the wrong one) and ``config`` (the run's
config as JSON). Orbax writes a step to a temporary directory and renames it when every
item is complete, so a half-written step is never restored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from audiopalm_jax.vocab import JointVocab

CHECKPOINT_DIR = "checkpoints"


def _handlers() -> dict[str, ocp.CheckpointHandler]:
    import grain

    return {
        "state": ocp.StandardCheckpointHandler(),
        "data_iter": grain.checkpoint.CheckpointHandler(),
        "vocab": ocp.JsonCheckpointHandler(),
        "config": ocp.JsonCheckpointHandler(),
    }


class Checkpointer:
    """Keeps the latest ``keep`` steps, plus the best by ``best_metric`` when set."""

    def __init__(
        self,
        directory: str,
        *,
        keep: int = 3,
        best_metric: str | None = None,
        best_mode: str = "min",
        async_save: bool = True,
        read_only: bool = False,
    ):
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode={best_mode!r}; allowed: min, max")
        self.directory = os.path.abspath(directory)
        self.best_metric = best_metric or None
        policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=keep)]
        if self.best_metric:
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda m: m[self.best_metric],
                    reverse=best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            create=not read_only,
            read_only=read_only,
        )
        self.manager = ocp.CheckpointManager(
            epath.Path(self.directory), options=options, item_handlers=_handlers()
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step() if self.best_metric else self.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(
        self,
        step: int,
        state: Any,
        *,
        vocab: JointVocab,
        config: Mapping[str, Any],
        data_iter: Any | None = None,
        metrics: Mapping[str, float] | None = None,
        force: bool = True,
    ) -> bool:
        items: dict[str, Any] = {
            "state": ocp.args.StandardSave(state),
            "vocab": ocp.args.JsonSave(vocab.to_json()),
            "config": ocp.args.JsonSave(dict(config)),
        }
        if data_iter is not None:
            import grain

            items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
        kept_metrics = None
        if metrics and self.best_metric and self.best_metric in metrics:
            kept_metrics = {self.best_metric: float(metrics[self.best_metric])}
        return self.manager.save(
            step, args=ocp.args.Composite(**items), metrics=kept_metrics, force=force
        )

    def restore(
        self,
        step: int | None,
        abstract_state: Any,
        *,
        data_iter: Any | None = None,
        vocab: JointVocab | None = None,
    ) -> tuple[Any, Any]:
        """(state in the shardings of ``abstract_state``, data_iter with its state set).

        With ``vocab``, raises if the checkpoint was trained with another vocabulary.
        The target mesh may differ from the one that saved (8 devices -> 4 -> 1).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        if vocab is not None:
            vocab.check_matches(self.restore_vocab(step), where=f"checkpoint step {step}")
        items: dict[str, Any] = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iter is not None:
            import grain

            items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], restored.get("data_iter") if data_iter is not None else None

    def restore_vocab(self, step: int | None = None) -> JointVocab:
        step = self.latest_step() if step is None else step
        d = self.manager.restore(step, args=ocp.args.Composite(vocab=ocp.args.JsonRestore()))
        return JointVocab.from_json(d["vocab"])

    def restore_config(self, step: int | None = None) -> dict[str, Any]:
        step = self.latest_step() if step is None else step
        d = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return d["config"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) for restoring a tree like ``tree``."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )
