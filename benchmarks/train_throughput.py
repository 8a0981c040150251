"""Training throughput and MFU of our train step, beside PyTorch's LlamaForCausalLM.

Prints one JSON line: tokens_per_sec, flops_per_sec, peak_flops_per_sec (a matmul peak
measured here, now), mfu, torch_tokens_per_sec (same dims, batch, AdamW, in transformers'
PyTorch Llama), ratio_vs_torch. Defaults are the issue's target: d_model=1024, 8 layers,
seq 1024.

    python benchmarks/train_throughput.py [--d_model 1024 --layers 8 --seq 1024 --batch 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d_model", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv_heads", type=int, default=16)
    p.add_argument("--mlp_dim", type=int, default=2816)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    p.add_argument("--dtype", default="float32", help="compute dtype (bfloat16 on GPU/TPU)")
    p.add_argument("--remat", default="none")
    p.add_argument(
        "--attention_chunk_length", type=int, default=0, help="queries per attention chunk"
    )
    p.add_argument(
        "--weight_grad",
        default="auto",
        help="ModelConfig.weight_grad: auto, explicit_transpose or xla (the layout XLA picks)",
    )
    p.add_argument("--skip_torch", action="store_true")
    return p.parse_args(argv)


def bench_jax(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from audiopalm_jax import sharding
    from audiopalm_jax.model import ModelConfig
    from audiopalm_jax.train.flops import measure_matmul_peak
    from audiopalm_jax.train.optimizer import make_optimizer
    from audiopalm_jax.train.step import global_batch, init_state, make_setup, make_train_step

    cfg = ModelConfig(
        vocab_size=args.vocab,
        d_model=args.d_model,
        num_layers=args.layers,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        head_dim=args.d_model // args.heads,
        mlp_dim=args.mlp_dim,
        tie_embeddings=False,
        dtype=args.dtype,
        remat_policy=args.remat,
        attention_chunk_length=args.attention_chunk_length,
        weight_grad=args.weight_grad,
    )
    mesh = sharding.make_mesh(dict(data=-1, fsdp=1, tensor=1))
    tx, schedule = make_optimizer(
        dict(name="adamw", learning_rate=1e-4, schedule="constant", weight_decay=0.0), 100
    )
    rng = np.random.default_rng(0)
    b, s = args.batch, args.seq
    tokens = rng.integers(0, args.vocab, (b, s + 1)).astype(np.int32)
    batch = {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "loss_weights": np.ones((b, s), np.float32),
        "segment_ids": np.ones((b, s), np.int32),
        "positions": np.broadcast_to(np.arange(s, dtype=np.int32), (b, s)).copy(),
        "prefix_mask": np.zeros((b, s), np.int32),
    }
    with jax.set_mesh(mesh), sharding.axis_rules(sharding.DEFAULT_RULES):
        setup = make_setup(cfg, tx, schedule, mesh, sharding.DEFAULT_RULES)
        state = init_state(setup, seed=0)
        step = make_train_step(setup, seed=0)
        gbatch = global_batch(setup, batch)
        state, m = step(state, gbatch)  # compile + warm up
        jax.block_until_ready(m)
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            state, m = step(state, gbatch)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t)
    seconds = min(times)
    flops = cfg.flops_per_token(s) * b * s
    extra = {}
    if jax.devices()[0].platform == "cpu":
        peak = measure_matmul_peak()  # f32: bf16 is no faster on CPU
    else:
        from audiopalm_jax.train.flops import peak_flops_per_device

        # An accelerator's own bf16 matmul peak, measured now; the datasheet's beside it.
        peak = measure_matmul_peak(size=8192, dtype=jnp.bfloat16) * jax.device_count()
        published = peak_flops_per_device()[0] * jax.device_count()
        extra = {
            "published_peak_flops_per_sec": published,
            "mfu_vs_published": flops / seconds / published,
        }
    return {
        "tokens_per_sec": b * s / seconds,
        "flops_per_sec": flops / seconds,
        "peak_flops_per_sec": peak,
        "mfu": flops / seconds / peak,
        "step_seconds": seconds,
        "loss": float(m["loss"]),
        "params": cfg.num_params(),
        "device": jax.devices()[0].device_kind,
        **extra,
    }


def bench_torch(args) -> dict:
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # bf16 autocast on an accelerator, as our --dtype bfloat16 (f32 params both sides).
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    cfg = transformers.LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.d_model,
        intermediate_size=args.mlp_dim,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.seq,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    model = transformers.LlamaForCausalLM(cfg).to(device)
    model.train()
    if args.remat != "none":
        model.gradient_checkpointing_enable()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq + 1), device=device)
    inputs, labels = tokens[:, :-1], tokens[:, 1:]

    def step():
        with autocast:
            logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, args.vocab).float(), labels.reshape(-1)
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    step()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    out = {"torch_tokens_per_sec": args.batch * args.seq / min(times)}
    if device == "cpu":
        # PyTorch's own f32 matmul peak (MKL/oneDNN), the same square matmul as ours: how
        # much of the ratio is the matmul library rather than the step around it.
        a = torch.ones(2048, 2048)
        a @ a
        best = float("inf")
        for _ in range(10):
            t = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - t)
        out["torch_peak_flops_per_sec"] = 2 * 2048**3 / best
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    result = {"config": vars(args)}
    result.update(bench_jax(args))
    if not args.skip_torch:
        result.update(bench_torch(args))
        result["ratio_vs_torch"] = result["tokens_per_sec"] / result["torch_tokens_per_sec"]
        if "torch_peak_flops_per_sec" in result:
            flops_per_token = result["flops_per_sec"] / result["tokens_per_sec"]
            result["torch_mfu"] = (
                result["torch_tokens_per_sec"]
                * flops_per_token
                / result["torch_peak_flops_per_sec"]
            )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
