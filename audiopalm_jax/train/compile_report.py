"""Compile the real train step ahead of time for a TPU topology, on a machine with no TPU.

``audiopalm compile --config configs/audiopalm_8b.py --topology v5p:4x4x4`` builds the
same TrainSetup and jitted step as training (model, optimizer, shardings, remat, scan)
over compile-only TPU devices from ``libtpu``, lowers it with abstract state and batch
(nothing allocated) and reports per-chip memory vs HBM, a roofline step time and MFU
ceiling, and state the compiled program holds less sharded than the rules asked for.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from audiopalm_jax import sharding
from audiopalm_jax.train.compile_findings import (
    GiB,
    full_copies,
    largest_buffers,
    memory,
    parse_oom,
    sharding_findings,
    state_bytes,
)
from audiopalm_jax.train.loop import setup_from_config
from audiopalm_jax.train.step import (
    BATCH_KEYS,
    TrainSetup,
    make_train_step,
)
from audiopalm_jax.vocab import JointVocab

REPORT_FILE = "compile_report.json"


@dataclasses.dataclass(frozen=True)
class Chip:
    """Published per-chip numbers (one JAX device per chip: v4 and v5p run megacore)."""

    name: str
    hbm_bytes: int
    peak_flops: float  # dense bf16 FLOP/s
    hbm_bandwidth: float  # B/s
    cores_per_chip: int  # TensorCores; "v5p-128"-style slice names count these


CHIPS = {
    "v4": Chip("v4", 32 * GiB, 275e12, 1.2e12, 2),
    "v5e": Chip("v5e", 16 * GiB, 197e12, 0.82e12, 1),
    "v5p": Chip("v5p", 95 * GiB, 459e12, 2.76e12, 2),
    "v6e": Chip("v6e", 32 * GiB, 918e12, 1.64e12, 1),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6lite": "v6e"}

# XLA's cost analysis counts a while-loop body once: it does not know the trip count.
# Besides the layer scan, the TPU compiler turns FSDP's all-gather / reduce-scatter
# matmuls into loops ("windowed einsums"); without them the same math is loop-free.
LOOP_FREE_OPTIONS = {
    "xla_tpu_enable_windowed_einsum_for_all_gather": False,
    "xla_tpu_enable_windowed_einsum_for_reduce_scatter": False,
}
ROOFLINE_KEYS = (
    "flops_per_step",
    "bytes_per_step",
    "roofline_step_seconds",
    "tokens_per_sec_per_chip_roofline",
    "mfu_ceiling",
)


class TopologyUnavailable(RuntimeError):
    """libtpu is missing or cannot describe the topology (tests skip on this)."""


def parse_topology(topology: str) -> tuple[Chip, str]:
    """(chip, libtpu topology name) for ``"v5p:4x4x4"``-style names."""
    gen, sep, shape = topology.partition(":")
    gen = _ALIASES.get(gen.lower(), gen.lower())
    if not sep or gen not in CHIPS or not re.fullmatch(r"\d+(x\d+){1,2}", shape):
        raise ValueError(
            f"topology {topology!r}: expected GEN:AxB[xC] with GEN in {', '.join(CHIPS)}, "
            "e.g. v5e:16x16 or v5p:4x4x4"
        )
    return CHIPS[gen], f"{gen}:{shape}"


def topology_devices(topology: str, num_slices: int = 1) -> tuple[Chip, list]:
    """Compile-only TPU devices for ``topology`` (one per chip), from libtpu."""
    chip, name = parse_topology(topology)
    # libtpu takes /tmp/libtpu_lockfile; another JAX process on a shared machine may hold
    # it, and compiling needs no exclusive access to a chip.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        import libtpu  # noqa: F401
    except ImportError as e:
        raise TopologyUnavailable(
            "libtpu is not installed: pip install 'audiopalm-jax[tpu-compile]'"
        ) from e
    from jax.experimental import topologies

    kwargs: dict[str, Any] = {}
    if chip.cores_per_chip > 1:
        kwargs["chip_config_name"] = "megacore"  # as JAX runs v4/v5p: a device per chip
    if num_slices > 1:
        kwargs["num_slices"] = num_slices
    try:
        desc = topologies.get_topology_desc(topology_name=name, platform="tpu", **kwargs)
    except Exception as e:  # libtpu raises the same error type for bad names and load failures
        raise TopologyUnavailable(f"libtpu cannot describe topology {name!r}: {e}") from e
    return chip, list(desc.devices)


def vocab_size_from_config(vocab: ml_collections.ConfigDict) -> int:
    """The joint vocabulary size without data: ``vocab.text_vocab_size`` if set, the
    character tokenizer's size for ``"char"``, else the size of the tokenizer at that path."""
    text_size = int(vocab.get("text_vocab_size", 0) or 0)
    spec = vocab.get("text_tokenizer", "char")
    if not text_size and spec == "char":
        from audiopalm_jax.train.loop import DEFAULT_CHARS

        text_size = 4 + len(set(vocab.get("chars") or DEFAULT_CHARS))  # + 4 specials
    elif not text_size:
        from audiopalm_jax.vocab import load_text_tokenizer

        text_size = load_text_tokenizer(spec).vocab_size

    class _Sized:  # JointVocab only reads the size: reuse its padding rule
        vocab_size = text_size

    return JointVocab(_Sized(), int(vocab.num_audio_tokens), int(vocab.pad_to_multiple)).size


def abstract_batch(setup: TrainSetup, batch_size: int, seq_len: int) -> dict:
    """ShapeDtypeStructs of a global batch, sharded as training feeds it."""
    shape, s = (batch_size, seq_len), setup.batch_sharding
    return {
        k: jax.ShapeDtypeStruct(
            shape, jnp.float32 if k == "loss_weights" else jnp.int32, sharding=s
        )
        for k in BATCH_KEYS
    }


def lower_and_compile(
    config: ml_collections.ConfigDict, setup: TrainSetup, options: dict | None = None
) -> jax.stages.Compiled:
    """The train step compiled exactly as ``train`` builds and calls it."""
    step = make_train_step(
        setup,
        seed=config.seed,
        z_loss=config.get("z_loss", 0.0),
        grad_accum_steps=config.optimizer.get("grad_accum_steps", 1),
        loss_chunk_length=config.get("loss_chunk_length", 0),
    )
    batch = abstract_batch(setup, config.data.batch_size, config.data.seq_len)
    with jax.set_mesh(setup.mesh), sharding.axis_rules(setup.rules):
        return step.lower(setup.abstract_state, batch).compile(compiler_options=options)


def _costs(compiled: jax.stages.Compiled) -> dict[str, float]:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0))}


def _loop_free_compile(
    config: ml_collections.ConfigDict,
    devices: Sequence[Any],
    vocab_size: int,
    depth: int,
    rows: int,
) -> jax.stages.Compiled:
    """The step at ``depth`` unrolled layers and ``rows`` global rows, without loops."""
    cfg = copy.deepcopy(config)
    cfg.model.num_layers, cfg.model.scan_layers = depth, False
    # The chunked loss and attention are loops too: count the whole-sequence forms instead,
    # the same FLOPs less the chunks' recompute (one more forward of the output projection,
    # ~2% of the 8B step; of the attention scores, with remat "full" already recomputed).
    cfg.loss_chunk_length = 0
    cfg.model.attention_chunk_length = 0
    cfg.optimizer.grad_accum_steps = 1
    cfg.data.batch_size = rows
    return lower_and_compile(cfg, setup_from_config(cfg, vocab_size, devices), LOOP_FREE_OPTIONS)


def layer_extrapolated_costs(
    config: ml_collections.ConfigDict, devices: Sequence[Any], vocab_size: int
) -> dict[str, float]:
    """Per-device FLOPs and bytes of one step, from loop-free compiles of 1 and 2 layers.

    Cost analysis of the scanned program misses ``num_layers - 1`` layers and the
    collective-matmul loop trips, so the same step is compiled unrolled and without
    windowed einsums at depth 1 and 2; it is linear in depth: c(L) = c1 + (L-1)(c2-c1).
    With ``grad_accum_steps=k`` one microbatch is measured and multiplied by k, which
    also counts the (cheap, once-per-step) optimizer update k times. A microbatch that
    runs out of memory unchunked (a step that fits only with the chunk knobs) is halved
    until it compiles, the same way.
    """
    k = int(config.optimizer.get("grad_accum_steps", 1))
    batch = int(config.data.batch_size)
    while True:
        try:
            compiled = [
                _loop_free_compile(config, devices, vocab_size, depth, batch // k)
                for depth in (1, 2)
            ]
            break
        except jax.errors.JaxRuntimeError as e:
            if "RESOURCE_EXHAUSTED" not in str(e) or batch % (2 * k):
                raise
            k *= 2
    loops = sum(c.as_text().count(" while(") for c in compiled)
    (c1, c2), layers = [_costs(c) for c in compiled], int(config.model.num_layers)
    out = {key: k * (c1[key] + (layers - 1) * (c2[key] - c1[key])) for key in c1}
    out["loops_left"] = loops  # > 0: some work still counted once (an undercount)
    return out


def _roofline(per_device: dict, chip: Chip, n: int, tokens: int, model_flops: float) -> dict:
    """The step time if only peak FLOP/s or HBM bandwidth limited the chip (no
    communication cost, perfect overlap): a ceiling, not a forecast."""
    compute_s = per_device["flops"] / chip.peak_flops
    memory_s = per_device["bytes"] / chip.hbm_bandwidth
    step_s = max(compute_s, memory_s)
    return dict(
        flops_per_step=per_device["flops"] * n,
        bytes_per_step=per_device["bytes"] * n,
        flops_per_device=per_device["flops"],
        bytes_per_device=per_device["bytes"],
        cost_loops_left=int(per_device["loops_left"]),
        roofline_compute_seconds=compute_s,
        roofline_memory_seconds=memory_s,
        roofline_bound="compute" if compute_s >= memory_s else "memory",
        roofline_step_seconds=step_s,
        tokens_per_sec_per_chip_roofline=tokens / step_s / n,
        mfu_ceiling=model_flops / (step_s * chip.peak_flops * n),
    )


def compile_report(
    config: ml_collections.ConfigDict,
    topology: str | None = None,
    *,
    workdir: str | None = None,
    layer_costs: bool = True,
) -> dict[str, Any]:
    """Compiles ``config``'s train step for ``topology`` (default ``config.topology``),
    prints a report whose last stdout line is its JSON, writes that to
    ``workdir/compile_report.json`` when there is a workdir (default: the CLI's
    ``--workdir``), and returns it. ``layer_costs=False`` skips the two extra shallow
    compiles behind the roofline numbers (which are then None).
    """
    topology = topology or config.get("topology", "")
    if not topology:
        raise ValueError("no topology: pass --topology (e.g. v5p:4x4x4) or set config.topology")
    workdir = workdir if workdir is not None else _workdir_flag()
    num_slices = int(config.mesh.get("dcn_data", 1)) * int(config.mesh.get("dcn_fsdp", 1))
    chip, devices = topology_devices(topology, num_slices)
    vocab_size = vocab_size_from_config(config.vocab)
    setup = setup_from_config(config, vocab_size, devices)
    n, model_cfg = len(devices), setup.model_config
    batch, seq = int(config.data.batch_size), int(config.data.seq_len)
    state = state_bytes(setup)
    report: dict[str, Any] = {
        "topology": topology,
        "slice_name": f"{chip.name}-{n * chip.cores_per_chip // num_slices}",
        "num_slices": num_slices,
        "num_devices": n,
        "mesh": dict(setup.mesh.shape),
        "num_params": model_cfg.num_params(),
        "vocab_size": vocab_size,
        "batch_size": batch,
        "seq_len": seq,
        "remat_policy": model_cfg.remat_policy,
        "grad_accum_steps": int(config.optimizer.get("grad_accum_steps", 1)),
        "hbm_bytes": chip.hbm_bytes,
        "param_bytes_per_device": state["params"],
        "optimizer_bytes_per_device": state["opt_state"],
    }
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as dump:  # a few MB: XLA's buffer report
        try:
            compiled = lower_and_compile(config, setup, {"xla_dump_to": dump})
        except jax.errors.JaxRuntimeError as e:
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            compiled, report["oom"] = None, parse_oom(str(e))
        report["largest_buffers"] = largest_buffers(dump)
    report["compile_seconds"] = round(time.perf_counter() - t0, 1)

    if compiled is not None:
        mem, capacity = memory(compiled), chip.hbm_bytes
        report["hlo_cost_analysis_raw"] = _costs(compiled)  # loop bodies counted once
        report["sharding_findings"] = sharding_findings(setup, compiled.input_shardings[0][0])
        copies = full_copies(setup, report["largest_buffers"])
        # FSDP gathers each weight in the compute dtype to use it: by design, listed apart.
        report["fsdp_gathers"] = [c for c in copies if c["note"].startswith("compute-dtype")]
        report["sharding_findings"] += [c for c in copies if c not in report["fsdp_gathers"]]
    else:
        # libtpu names either everything used or the temporaries alone (the state then
        # comes on top); with no program there is no sharding to inspect.
        oom, held = report["oom"], state["params"] + state["opt_state"]
        temporaries = max(oom["used"] - held, 0) if "used" in oom else oom.get("temporaries", 0)
        mem = {"arguments": held, "temporaries": temporaries, "total": held + temporaries}
        capacity = oom.get("available", chip.hbm_bytes)
        report["sharding_findings"], report["fsdp_gathers"] = [], []
    report["memory"], report["per_device_bytes"] = mem, mem["total"]
    # The TPU compiler refuses a program over its usable HBM: compiling means fitting.
    report["fits"] = compiled is not None and mem["total"] <= chip.hbm_bytes
    report["hbm_usable_bytes"] = capacity
    report["model_flops_per_step"] = model_cfg.flops_per_token(seq) * batch * seq
    report.update(dict.fromkeys(ROOFLINE_KEYS))
    if compiled is not None and layer_costs:
        costs = layer_extrapolated_costs(config, devices, vocab_size)
        report.update(_roofline(costs, chip, n, batch * seq, report["model_flops_per_step"]))
    report["verdict"] = _verdict(config, report)
    _print(report)
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, REPORT_FILE), "w") as f:
            json.dump(report, f, indent=2)
    return report


def _knobs(config: ml_collections.ConfigDict, report: dict, capacity: int) -> list[str]:
    """What would move the step under HBM, biggest lever first (rough, linear estimates)."""
    model, opt, data, mem = config.model, config.optimizer, config.data, report["memory"]
    grads = report["param_bytes_per_device"]  # f32 gradients: in the temporaries, any batch
    held = grads + report["optimizer_bytes_per_device"]
    transient = max(mem["temporaries"] - grads, 0)  # activations: scale with the microbatch
    rows = data.batch_size // (report["mesh"]["data"] * report["mesh"]["fsdp"])
    knobs = []
    if transient > held:
        if model.remat_policy != "full":
            knobs.append(f"model.remat_policy={model.remat_policy!r} -> 'full'")
        room = capacity - held - grads - mem.get("generated_code", 0)
        if room > 0:
            need = int(opt.get("grad_accum_steps", 1)) * max(2, math.ceil(transient / room))
            ks = [k for k in range(need, rows + 1) if rows % k == 0]  # k must split the rows
            if ks:
                knobs.append(f"optimizer.grad_accum_steps={ks[0]} (activations ~1/k)")
        seq = int(data.seq_len)
        if not config.get("loss_chunk_length", 0) and seq > 512 and seq % 512 == 0:
            knobs.append("loss_chunk_length=512 (logits a chunk of positions at a time)")
        if not model.get("attention_chunk_length", 0) and seq > 512:
            knobs.append("model.attention_chunk_length=512 (attention scores a chunk at a time)")
        knobs.append(f"data.batch_size < {data.batch_size} (now {rows} rows per chip)")
    knobs.append("a bigger slice: fsdp over more chips shrinks state and activations per chip")
    if opt.name == "adamw":
        knobs.append("optimizer.name='adafactor' (factored second moments, no first moment)")
    return knobs


def _gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def _verdict(config: ml_collections.ConfigDict, report: dict) -> str:
    used, hbm, usable = report["per_device_bytes"], report["hbm_bytes"], report["hbm_usable_bytes"]
    where = f"{report['topology']} ({report['num_devices']} chips, {report['slice_name']})"
    if report["fits"]:
        verdict = (
            f"FITS on {where}: {_gib(used)} of {_gib(hbm)} HBM per chip, "
            f"{_gib(hbm - used)} ({(hbm - used) / hbm:.0%}) headroom"
        )
        if hbm - used < 0.1 * hbm:
            verdict += "; tight. Knobs: " + "; ".join(_knobs(config, report, hbm))
        return verdict
    return (
        f"DOES NOT FIT on {where}: needs {_gib(used)} of {_gib(usable)} usable HBM per chip "
        f"(over by {_gib(used - usable)}). Knobs: " + "; ".join(_knobs(config, report, usable))
    )


def _print(r: dict) -> None:
    print(f"compile report: {r['topology']} = {r['slice_name']}, mesh {r['mesh']}")
    print(
        f"  model {r['num_params'] / 1e9:.2f}B params, vocab {r['vocab_size']}, batch "
        f"{r['batch_size']} x {r['seq_len']}, remat {r['remat_policy']}, grad_accum "
        f"{r['grad_accum_steps']}; compiled in {r['compile_seconds']} s"
    )
    parts = ", ".join(f"{k} {_gib(v)}" for k, v in r["memory"].items() if k != "total")
    print(f"  per chip: {_gib(r['per_device_bytes'])} ({parts})")
    print(
        f"  state per chip: params {_gib(r['param_bytes_per_device'])}, "
        f"optimizer {_gib(r['optimizer_bytes_per_device'])}"
    )
    if r["roofline_step_seconds"]:
        print(
            f"  roofline: {r['flops_per_device']:.3g} FLOP, {r['bytes_per_device']:.3g} B per "
            f"chip -> {r['roofline_step_seconds'] * 1e3:.1f} ms/step ({r['roofline_bound']}-"
            f"bound), {r['tokens_per_sec_per_chip_roofline']:,.0f} tokens/s/chip, "
            f"MFU ceiling {r['mfu_ceiling']:.1%}"
        )
        if r["cost_loops_left"]:
            print(
                f"  warning: {r['cost_loops_left']} loops left in the cost compiles count "
                "once: FLOPs and bytes are undercounted"
            )
    for b in r["largest_buffers"][:5]:
        print(f"  buffer {_gib(b['bytes'])}: {b['shapes'][:120]}")
    for f in r["fsdp_gathers"]:
        print(
            f"  gathered to use (FSDP, expected): {f['leaf']} {f['shape']} {f['dtype']} in a "
            f"{_gib(f['buffer_bytes'])} buffer"
        )
    for f in r["sharding_findings"]:
        if f["kind"] == "full copy in program":
            print(
                f"  sharding: {f['leaf']} {f['shape']}: a whole {f['dtype']} copy in a "
                f"{_gib(f['buffer_bytes'])} buffer, shard {_gib(f['shard_bytes'])} ({f['note']})"
            )
            continue
        print(
            f"  sharding: {f['leaf']} {f['shape']} {f['kind']} ({f['compiled_spec']}; rules "
            f"meant {f['rules_spec']}): {_gib(f['bytes_per_device'])} per chip instead of "
            f"{_gib(f['intended_bytes_per_device'])}"
        )
    print(r["verdict"])
    print(json.dumps(r))


def _workdir_flag() -> str | None:
    """``--workdir`` when run by the CLI (whose ``compile`` passes config and topology)."""
    from absl import flags

    if flags.FLAGS.is_parsed() and "workdir" in flags.FLAGS:
        return flags.FLAGS.workdir
    return None
