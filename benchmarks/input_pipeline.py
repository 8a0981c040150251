"""Input pipeline throughput vs. what the demo train step consumes; prints one JSON line.

    python benchmarks/input_pipeline.py --workdir runs/demo [--size tiny] [--num_workers 0]

Prepares the demo data into ``--workdir`` if needed (as ``audiopalm train`` does), times
``--batches`` batches of the train iterator, then the demo model's train step (random
weights) on those batches. ``feed_ratio`` = pipeline tokens/s / train-step tokens/s, both
counting the ``batch_size x seq_len`` token positions of a batch (padding included);
``packing_efficiency`` is the non-padding fraction of them.
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


def _demo_config():
    from audiopalm_jax.train.config import load_config_file

    return load_config_file(f"{ROOT}/configs/demo.py")


def pipeline_throughput(config, vocab, num_batches: int) -> tuple[dict, list]:
    from audiopalm_jax.data import pipeline

    it = pipeline.make_iterator(config, vocab, "train")
    batches = [next(it) for _ in range(2)]  # warm up: open files, start workers
    start_stats = it.stats()
    t0 = time.perf_counter()
    for _ in range(num_batches):
        batches.append(next(it))
    seconds = time.perf_counter() - t0
    stats = it.stats()
    it.close()
    examples = sum(stats[k] - start_stats[k] for k in ("packed", "truncated"))
    timed = batches[2:]
    positions = sum(b["inputs"].size for b in timed)
    real = sum(int(np.count_nonzero(b["segment_ids"])) for b in timed)
    return {
        "examples_per_sec": examples / seconds,
        "tokens_per_sec": positions / seconds,
        "real_tokens_per_sec": real / seconds,
        "packing_efficiency": real / positions,
        "dropped_overlong": stats["dropped_overlong"],
    }, batches


def train_throughput(config, vocab, batches: list, num_steps: int) -> float:
    import jax

    from audiopalm_jax import sharding
    from audiopalm_jax.train.loop import setup_from_config
    from audiopalm_jax.train.step import global_batch, init_state, make_train_step

    setup = setup_from_config(config, vocab.size)
    with jax.set_mesh(setup.mesh), sharding.axis_rules(setup.rules):
        state = init_state(setup, config.seed)
        step = make_train_step(setup, seed=config.seed, z_loss=config.get("z_loss", 0.0))
        placed = [global_batch(setup, b) for b in batches]
        state, metrics = step(state, placed[0])  # compile
        jax.block_until_ready(metrics)
        t0 = time.perf_counter()
        for i in range(num_steps):
            state, metrics = step(state, placed[1 + i % (len(placed) - 1)])
        jax.block_until_ready(metrics)
        seconds = time.perf_counter() - t0
    return num_steps * config.data.batch_size * config.data.seq_len / seconds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "demo"))
    parser.add_argument("--size", default=None, help="demo_speech size (default: the config's)")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--train_steps", type=int, default=5)
    parser.add_argument("--num_workers", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from audiopalm_jax.data.prepare import prepare
    from audiopalm_jax.train.loop import build_vocab

    config = _demo_config()
    if args.size:
        config.data.datasets.demo_speech.name = f"demo_speech/{args.size}"
    if args.num_workers is not None:
        config.data.num_workers = args.num_workers
    prepare(config, args.workdir)
    vocab = build_vocab(config.vocab, args.workdir)
    result, batches = pipeline_throughput(config, vocab, args.batches)
    train = train_throughput(config, vocab, batches, args.train_steps)
    result = {
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()},
        "train_tokens_per_sec": round(train, 1),
        "feed_ratio": round(result["tokens_per_sec"] / train, 2),
        "num_workers": int(config.data.num_workers),
        "batch_size": int(config.data.batch_size),
        "seq_len": int(config.data.seq_len),
        "cpu_count": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result), file=sys.stdout, flush=True)
    return result


if __name__ == "__main__":  # the guard grain's worker processes (spawn) need
    main()
