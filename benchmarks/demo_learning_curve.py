"""Sample efficiency of demo-model variants on the same batches; prints one JSON line.

    python benchmarks/demo_learning_curve.py --workdir runs/demo --steps 150 \\
        --variant '{"model.scale_embeddings": false, "model.embed_init_std": 0.02}'

Trains the demo config's model (``configs/demo.py``) from scratch for ``--steps`` steps,
once as configured (the peer) and once per ``--variant`` (JSON of dotted config overrides),
on identical batches of the workdir's prepared data, and reports teacher-forced loss and
token accuracy per task on validation slices (ASR en, AST en-fr, MT en-fr, S2ST en-fr,
TTS en) every ``--eval_every`` steps. ``ratio_asr_loss`` = variant / peer ASR loss at the
last step (< 1: the variant learns faster). Teacher-forced accuracy is a proxy: the
issue's bar is on greedy decoding (``audiopalm eval``), on unseen word combinations that
validation slices do not hold (docs/demo_run.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBES = ("ASR:en", "AST:en-fr", "MT:en-fr", "S2ST:en-fr", "TTS:en")


def _demo_config():
    from audiopalm_jax.train.config import load_config_file

    return load_config_file(f"{ROOT}/configs/demo.py")


def _override(config, key: str, value) -> None:
    """``config["a"]["b"] = value`` for ``key="a.b"``; a ConfigDict rejects an unknown
    section or a value of the wrong type."""
    section, name = key.rsplit(".", 1)
    config[section][name] = value


def _rows(config, vocab, split: str, count: int | None, workdir: str) -> list[dict]:
    """``count`` batches of ``split`` (None: one pass over it)."""
    from audiopalm_jax.data import pipeline

    it = pipeline.make_iterator(config, vocab, split, workdir=workdir, num_epochs=1)
    out = []
    for batch in it:
        out.append({k: np.asarray(v) for k, v in batch.items()})
        if count is not None and len(out) == count:
            break
    it.close()
    return out


def probe_batches(config, vocab, workdir: str) -> dict[str, list[dict]]:
    """Validation batches of one task and direction each."""
    probes = {}
    for probe in PROBES:
        task, direction = probe.split(":")
        c = config.copy_and_resolve_references()
        c.data.mixture = (f"demo_speech:{task}:{direction}:1",)
        c.data.shuffle = False
        probes[probe] = _rows(c, vocab, "validation", None, workdir)
    return probes


def learning_curve(config, vocab, train: list, probes: dict, eval_every: int) -> list[dict]:
    import jax

    from audiopalm_jax import sharding
    from audiopalm_jax.train.loop import setup_from_config
    from audiopalm_jax.train.step import global_batch, init_state, make_eval_step, make_train_step

    setup = setup_from_config(config, vocab.size)
    curve = []
    with jax.set_mesh(setup.mesh), sharding.axis_rules(setup.rules):
        state = init_state(setup, config.seed)
        step = make_train_step(setup, seed=config.seed)
        evaluate = make_eval_step(setup)
        for i, batch in enumerate(train, start=1):
            state, metrics = step(state, global_batch(setup, batch))
            if i % eval_every and i != len(train):
                continue
            point = {"step": i, "train_loss": round(float(metrics["loss"]), 4)}
            for name, batches in probes.items():
                sums = [evaluate(state["params"], global_batch(setup, b)) for b in batches]
                weight = sum(float(s["weight_sum"]) for s in sums)
                point[f"{name}/loss"] = round(sum(float(s["loss_sum"]) for s in sums) / weight, 4)
                point[f"{name}/accuracy"] = round(
                    sum(float(s["correct_sum"]) for s in sums) / weight, 4
                )
            curve.append(point)
    return curve


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "demo"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval_every", type=int, default=50)
    parser.add_argument(
        "--set", action="append", default=[], help="KEY=JSON for the peer and all variants"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help='JSON, e.g. {"optimizer.learning_rate": 5e-3}',
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from audiopalm_jax.data.prepare import prepare
    from audiopalm_jax.train.loop import build_vocab

    config = _demo_config()
    for item in args.set:
        key, value = item.split("=", 1)
        _override(config, key, json.loads(value))
    config.num_train_steps = args.steps  # the LR schedule spans the run, as in training
    prepare(config, args.workdir)
    vocab = build_vocab(config.vocab, args.workdir)
    train = _rows(config, vocab, "train", args.steps, args.workdir)
    probes = probe_batches(config, vocab, args.workdir)
    runs = []
    for overrides in [{}] + [json.loads(v) for v in args.variant]:
        c = config.copy_and_resolve_references()
        for key, value in overrides.items():
            _override(c, key, value)
        t0 = time.perf_counter()
        curve = learning_curve(c, vocab, train, probes, args.eval_every)
        runs.append(
            {"overrides": overrides, "seconds": round(time.perf_counter() - t0, 1), "curve": curve}
        )
    peer = runs[0]["curve"][-1]["ASR:en/loss"]
    result = {
        "steps": args.steps,
        "batch_size": int(config.data.batch_size),
        "seq_len": int(config.data.seq_len),
        "peer": "configs/demo.py as is",
        "runs": runs,
        "ratio_asr_loss": [round(r["curve"][-1]["ASR:en/loss"] / peer, 3) for r in runs[1:]],
    }
    print(json.dumps(result), file=sys.stdout, flush=True)
    return result


if __name__ == "__main__":  # the guard grain's worker processes (spawn) need
    main()
