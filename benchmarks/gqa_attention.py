"""Grouped-query attention as we write it (5-D grouped einsums) beside repeated K/V heads.

    python benchmarks/gqa_attention.py [--heads 32 --kv_heads 4 --seq 1024 --batch 1]

Times forward + backward of the attention core (scores, mask, softmax, weighted values)
for ``layers.Attention``'s grouped form, which reshapes the queries to
``[b, l, kv_heads, group, hd]`` and never copies K/V, and for the common alternative that
repeats K/V to every query head (``jnp.repeat``) and runs the multi-head 4-D einsums.
Prints one JSON line: ``grouped_seconds``, ``repeated_seconds``, ``ratio`` =
repeated / grouped (> 1: our grouped form is faster), and the max abs difference of the
outputs and gradients (the two forms compute the same function). Defaults: the 1B config's
heads (32 query, 4 KV, head_dim 64).
"""

from __future__ import annotations

import argparse
import json
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv_heads", type=int, default=4)
    p.add_argument("--head_dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from audiopalm_jax.model.layers import NEG_INF

    args = parse_args(argv)
    b, s, h, kv, hd = args.batch, args.seq, args.heads, args.kv_heads, args.head_dim
    if h % kv:
        raise ValueError(f"--heads {h} is not a multiple of --kv_heads {kv}")
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((b, s, h, hd)), jnp.float32) * hd**-0.5
    k = jnp.asarray(rng.standard_normal((b, s, kv, hd)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((b, s, kv, hd)), jnp.float32)
    causal = jnp.tril(jnp.ones((s, s), bool))[None]  # [1, l, s]

    def grouped(q, k, v):  # layers.Attention's GQA path
        qg = q.reshape(b, s, kv, h // kv, hd)
        logits = jnp.einsum("blkgd,bskd->bkgls", qg, k)
        logits = jnp.where(causal[:, None, None], logits, NEG_INF)
        probs = jax.nn.softmax(logits, axis=-1)
        return jnp.einsum("bkgls,bskd->blkgd", probs, v).reshape(b, s, h, hd)

    def repeated(q, k, v):  # K/V copied to every query head, then multi-head attention
        k, v = jnp.repeat(k, h // kv, axis=2), jnp.repeat(v, h // kv, axis=2)
        logits = jnp.einsum("blhd,bshd->bhls", q, k)
        logits = jnp.where(causal[:, None], logits, NEG_INF)
        probs = jax.nn.softmax(logits, axis=-1)
        return jnp.einsum("bhls,bshd->blhd", probs, v)

    def fwd_bwd(fn):
        def loss(q, k, v):
            out = fn(q, k, v)
            return jnp.sum(out * out), out

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))

    results = {}
    for name, fn in (("grouped", grouped), ("repeated", repeated)):
        step = fwd_bwd(fn)
        out = jax.block_until_ready(step(q, k, v))  # compile + warm up
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            jax.block_until_ready(step(q, k, v))
        results[name] = ((time.perf_counter() - t0) / args.repeats, out)
    (_, out_g), grads_g = results["grouped"][1]
    (_, out_r), grads_r = results["repeated"][1]
    diff = max(
        float(jnp.max(jnp.abs(a - c)))
        for a, c in zip([out_g, *grads_g], [out_r, *grads_r], strict=True)
    )
    line = {
        "batch": b,
        "seq": s,
        "heads": h,
        "kv_heads": kv,
        "head_dim": hd,
        "backend": jax.default_backend(),
        "grouped_seconds": round(results["grouped"][0], 4),
        "repeated_seconds": round(results["repeated"][0], 4),
        "ratio": round(results["repeated"][0] / results["grouped"][0], 3),
        "max_abs_diff": diff,
    }
    print(json.dumps(line), flush=True)
    return line


if __name__ == "__main__":
    main()
