"""Device mesh and logical-axis sharding rules (MaxText / T5X style).

Parameters and activations are annotated with *logical* axis names (``embed``, ``mlp``,
``heads``, ``activation_batch`` ...). A config's rules map each logical name to mesh axes;
the first rule whose mesh axes are free and divide the dimension wins, otherwise the
dimension is replicated.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axes. Several entries for one name are tried in order.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("cache_batch", ("data", "fsdp")),
    ("cache_length", None),
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
)

_RULES: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("rules", default=None)


def mesh_shape(
    mesh_config: Mapping[str, int], num_devices: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(ici sizes, dcn sizes) for (data, fsdp, tensor), with one ``-1`` filled in.

    ``mesh_config`` has ``data``, ``fsdp``, ``tensor`` (within a slice) and optional
    ``dcn_data``, ``dcn_fsdp`` (across slices).
    """
    dcn = (int(mesh_config.get("dcn_data", 1)), int(mesh_config.get("dcn_fsdp", 1)), 1)
    num_slices = math.prod(dcn)
    if num_slices < 1 or num_devices % num_slices:
        raise ValueError(
            f"mesh: dcn_data*dcn_fsdp={num_slices} does not divide the {num_devices} devices"
        )
    per_slice = num_devices // num_slices
    ici = [int(mesh_config[a]) for a in MESH_AXES]
    if sum(s == -1 for s in ici) > 1:
        raise ValueError(f"mesh: at most one of data/fsdp/tensor may be -1, got {ici}")
    if any(s == 0 or s < -1 for s in ici):
        raise ValueError(f"mesh: sizes must be positive or -1, got data/fsdp/tensor={ici}")
    known = math.prod(s for s in ici if s != -1)
    if -1 in ici:
        if per_slice % known:
            raise ValueError(
                f"mesh: data/fsdp/tensor={ici} cannot fill {per_slice} devices per slice "
                f"({per_slice} is not a multiple of {known})"
            )
        ici[ici.index(-1)] = per_slice // known
    if math.prod(ici) != per_slice:
        raise ValueError(
            f"mesh: data*fsdp*tensor={ici[0]}*{ici[1]}*{ici[2]}={math.prod(ici)} does not "
            f"match the {per_slice} devices per slice ({num_devices} devices, "
            f"{num_slices} slices); use -1 for one axis to fill it in"
        )
    return tuple(ici), dcn


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[Any] | None = None) -> Mesh:
    """The (data, fsdp, tensor) mesh over ``devices`` (default: all devices)."""
    devices = list(jax.devices() if devices is None else devices)
    ici, dcn = mesh_shape(mesh_config, len(devices))
    if math.prod(dcn) > 1:
        from jax.experimental import mesh_utils

        array = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices=devices)
    else:
        try:
            from jax.experimental import mesh_utils

            array = mesh_utils.create_device_mesh(ici, devices=devices)
        except (ValueError, NotImplementedError, AssertionError):
            # Topology-aware placement only knows some device kinds; fall back to order.
            array = np.asarray(devices).reshape(ici)
    return Mesh(array, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def normalize_rules(rules: Sequence[Sequence[Any]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out = []
    for rule in rules:
        if len(rule) != 2:
            raise ValueError(f"sharding rule {rule!r} must be (logical_name, mesh_axes)")
        name, axes = rule
        if axes is None:
            axes = ()
        elif isinstance(axes, str):
            axes = (axes,)
        axes = tuple(axes)
        for a in axes:
            if a not in MESH_AXES:
                raise ValueError(
                    f"sharding rule {name!r} -> {a!r}: unknown mesh axis; "
                    f"allowed: {', '.join(MESH_AXES)}"
                )
        out.append((str(name), axes))
    return tuple(out)


def logical_to_spec(
    logical_axes: Sequence[str | None] | None,
    rules: Sequence[Sequence[Any]],
    mesh: Mesh | None = None,
    shape: Sequence[int] | None = None,
) -> PartitionSpec:
    """Maps logical axis names to a PartitionSpec.

    With ``mesh`` and ``shape``, a rule whose mesh size does not divide the dimension is
    skipped (that dimension is then replicated) rather than failing to compile.
    """
    if logical_axes is None:
        return PartitionSpec()
    rules = normalize_rules(rules)
    used: set[str] = set()
    out: list[Any] = []
    for i, name in enumerate(logical_axes):
        chosen: tuple[str, ...] = ()
        for rule_name, axes in rules:
            if rule_name != name or not axes or used.intersection(axes):
                continue
            if mesh is not None:
                axes = tuple(a for a in axes if mesh.shape[a] > 1)
                size = math.prod(mesh.shape[a] for a in axes)
                if not axes or (shape is not None and shape[i] % size):
                    continue
            chosen = axes
            break
        used.update(chosen)
        out.append(None if not chosen else chosen[0] if len(chosen) == 1 else chosen)
    while out and out[-1] is None:
        out.pop()
    return PartitionSpec(*out)


@contextlib.contextmanager
def axis_rules(rules: Sequence[Sequence[Any]]) -> Iterator[None]:
    """Activates ``rules`` for :func:`constrain` inside the block."""
    token = _RULES.set(normalize_rules(rules))
    try:
        yield
    finally:
        _RULES.reset(token)


def current_spec(logical_axes: Sequence[str | None], shape: Sequence[int]) -> PartitionSpec | None:
    """The PartitionSpec the active rules give these logical axes on the current mesh;
    None outside a mesh of more than one device or without rules."""
    rules = _RULES.get()
    mesh = jax.sharding.get_abstract_mesh()
    if rules is None or mesh.empty or mesh.size == 1:
        return None
    return logical_to_spec(logical_axes, rules, mesh, shape)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """Sharding constraint by logical names; a no-op outside a mesh or without rules."""
    spec = current_spec(logical_axes, x.shape)
    return x if spec is None else jax.lax.with_sharding_constraint(x, spec)


def named_shardings(logical_specs: Any, shapes: Any, mesh: Mesh, rules) -> Any:
    """NamedSharding tree for a tree of logical PartitionSpecs and matching shapes."""

    def one(spec, shaped):
        return NamedSharding(mesh, logical_to_spec(tuple(spec), rules, mesh, shaped.shape))

    return jax.tree.map(one, logical_specs, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
    """Sharding of ``[batch, length]`` input arrays."""
    return NamedSharding(mesh, logical_to_spec(("activation_batch", None), rules, mesh))
