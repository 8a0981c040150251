"""What a compiled train step holds per chip: memory, state shards, the biggest buffers.

Helpers of :mod:`audiopalm_jax.train.compile_report`, kept apart so each stays short.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from audiopalm_jax import sharding
from audiopalm_jax.train.step import (  # private helpers: the same spec logic as training
    TrainSetup,
    _flatten_by_path,
    _opt_state_spec,
)

GiB = 1024**3
MiB = 1024**2
_XLA_DTYPES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


_SIZE = r"([0-9.]+)\s*([KMGT]?)i?B?"
_OOM_PATTERNS = {
    "temporaries": [r"required for HLO temporaries \(" + _SIZE],
    "used": [r"Used " + _SIZE],
    "available": [r"exceeds available HBM \(" + _SIZE, r"Used [0-9.]+\s*[KMGT]?i?B? of " + _SIZE],
    "exceeded": [r"Exceeded \w+ capacity by " + _SIZE],
}


def parse_oom(message: str) -> dict[str, int]:
    """Bytes named by libtpu's out-of-memory compile error (its wording varies)."""
    out: dict[str, int] = {}
    for key, patterns in _OOM_PATTERNS.items():
        for pattern in patterns:
            if m := re.search(pattern, message):
                number, unit = m.groups()
                out[key] = int(float(number) * 1024 ** " KMGT".index(unit or " "))
                break
    return out


def _shard_bytes(shape: Sequence[int], dtype, s: NamedSharding) -> int:
    """Bytes of one shard (rounded up where a dimension does not divide, as XLA pads)."""
    spec = tuple(s.spec) + (None,) * (len(shape) - len(s.spec))
    axes = [(e,) if isinstance(e, str) else tuple(e or ()) for e in spec]
    parts = [math.prod(s.mesh.shape[a] for a in ax) for ax in axes]
    size = math.prod(-(-d // p) for d, p in zip(shape, parts, strict=True))
    return size * jnp.dtype(dtype).itemsize


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def state_bytes(setup: TrainSetup) -> dict[str, int]:
    """Per-device bytes of parameters and optimizer state under the requested shardings."""
    return {
        part: sum(
            _shard_bytes(a.shape, a.dtype, a.sharding)
            for a in jax.tree.leaves(setup.abstract_state[part])
        )
        for part in ("params", "opt_state")
    }


def sharding_findings(setup: TrainSetup, compiled_state_shardings: Any) -> list[dict]:
    """State leaves over 1 MiB per device that the compiled program takes replicated or
    sharded otherwise than the logical rules meant.

    "Meant" is the rules' spec before ``make_setup`` drops mesh axes that do not divide a
    dimension (it replicates those), so both that fallback and anything the compiler
    changed show up.
    """
    param_specs = _flatten_by_path(setup.param_logical_specs)
    params = _flatten_by_path(setup.abstract_state["params"])
    param_shapes = {k: v.shape for k, v in params.items()}
    flat = jax.tree_util.tree_flatten_with_path(setup.abstract_state)[0]
    # None: an argument the program never reads (jit prunes it), so nothing on the chip.
    compiled = jax.tree.leaves(compiled_state_shardings, is_leaf=lambda x: x is None)
    findings = []
    for (path, leaf), got in zip(flat, compiled, strict=True):
        part = str(getattr(path[0], "key", ""))
        if got is None or part not in ("params", "opt_state"):
            continue
        if part == "params":
            logical = param_specs[tuple(_path_str(path[1:]).split("/"))]
        else:
            logical = _opt_state_spec(path[1:], leaf, param_specs, param_shapes)
        meant = NamedSharding(
            setup.mesh, sharding.logical_to_spec(tuple(logical), setup.rules, setup.mesh)
        )
        ndim, got_bytes = len(leaf.shape), _shard_bytes(leaf.shape, leaf.dtype, got)
        if got_bytes <= MiB or (
            got.is_equivalent_to(meant, ndim) and got.is_equivalent_to(leaf.sharding, ndim)
        ):
            continue
        findings.append(
            {
                "leaf": _path_str(path),
                "shape": list(leaf.shape),
                "dtype": str(jnp.dtype(leaf.dtype)),
                "rules_spec": str(meant.spec),
                "requested_spec": str(leaf.sharding.spec),
                "compiled_spec": str(got.spec),
                "bytes_per_device": got_bytes,
                "intended_bytes_per_device": _shard_bytes(leaf.shape, leaf.dtype, meant),
                "kind": "replicated" if got.is_fully_replicated else "differently sharded",
            }
        )
    return findings


def largest_buffers(dump_dir: str, top: int = 8) -> list[dict]:
    """The biggest HBM allocations of the compiled step, from XLA's memory-usage report
    (``xla_dump_to``): bytes and the shapes sharing each buffer."""
    reports = [f for f in os.listdir(dump_dir) if f.endswith("memory-usage-report.txt")]
    if not reports:
        return []
    with open(os.path.join(dump_dir, sorted(reports)[0])) as f:
        hbm = f.read().split("Memory Space:")[1]  # the first space is HBM ("default")
    rows = []
    for line in hbm.splitlines():
        fields = [x.strip() for x in line.split(";")]
        if len(fields) == 5 and (m := re.fullmatch(r"([0-9.]+)([KMGT]i)?B", fields[1])):
            size = float(m[1]) * 1024 ** " KMGT".index((m[2] or " ")[0])
            rows.append({"bytes": int(size), "shapes": fields[4]})
    return sorted(rows, key=lambda r: -r["bytes"])[:top]


def full_copies(setup: TrainSetup, buffers: list[dict]) -> list[dict]:
    """Sharded state leaves (> 1 MiB a shard) of which a big buffer holds the whole array:
    a replicated copy inside the program, which the input shardings cannot show."""
    leaves = jax.tree_util.tree_flatten_with_path(setup.abstract_state)[0]
    leaves.sort(key=lambda pl: str(getattr(pl[0][0], "key", "")) != "params")  # params first
    found, seen = [], set()
    for path, leaf in leaves:
        shard = _shard_bytes(leaf.shape, leaf.dtype, leaf.sharding)
        if shard <= MiB or leaf.sharding.is_fully_replicated:
            continue
        dims = re.escape("[" + ",".join(map(str, leaf.shape)) + "]")
        for i, buf in enumerate(buffers):
            for dtype in re.findall(r"(\w+)" + dims, buf["shapes"]):
                if (i, dtype, leaf.shape) in seen:  # same-shaped leaves: name the first
                    continue
                seen.add((i, dtype, leaf.shape))
                found.append(
                    {
                        "leaf": _path_str(path),
                        "shape": list(leaf.shape),
                        "dtype": dtype,
                        "buffer_bytes": buf["bytes"],
                        "shard_bytes": shard,
                        "kind": "full copy in program",
                        "note": "replicated weight or gradient"
                        if dtype == _XLA_DTYPES.get(jnp.dtype(leaf.dtype).name)
                        else "compute-dtype gather (FSDP gathers weights to use them)",
                    }
                )
    return found


def memory(compiled: jax.stages.Compiled) -> dict[str, int]:
    """Per-chip bytes from XLA's memory analysis, with the peak-ish total."""
    m = compiled.memory_analysis()
    mem = {
        "arguments": int(m.argument_size_in_bytes),
        "outputs": int(m.output_size_in_bytes),
        "aliased": int(m.alias_size_in_bytes),
        "temporaries": int(m.temp_size_in_bytes),
        "generated_code": int(m.generated_code_size_in_bytes),
    }
    # The donated state's outputs are aliased to (reuse) its argument buffers.
    mem["total"] = sum(mem.values()) - 2 * mem["aliased"]
    return mem
