"""Packing invariants, overlong handling, determinism and exact resume of PackedIterator."""

import grain
import numpy as np
import pytest

from audiopalm_jax.data import packing
from audiopalm_jax.data.packing import (
    FirstFitPacker,
    PackedIterator,
    PackingConfig,
    admit,
    pack_rows,
)


def _examples(n: int, seed: int = 0, max_len: int = 40) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(3, max_len))
        ids = rng.integers(5, 100, length).astype(np.int32)
        out.append({"ids": ids, "prompt_len": np.int32(rng.integers(1, length))})
    return out


def check_batch(batch: dict, prompt_weight: float = 0.0) -> list[tuple[np.ndarray, int]]:
    """The contract's invariants, plus: loss only on target tokens (or the prompt weight)."""
    found = packing.check_batch(batch)
    for r in range(batch["inputs"].shape[0]):
        for k in range(1, batch["segment_ids"][r].max() + 1):
            idx = np.flatnonzero(batch["segment_ids"][r] == k)
            n, p = len(idx), int(batch["prefix_mask"][r, idx].sum())
            want = np.zeros(n, np.float32)
            want[max(p, 1) - 1 : n - 1] = 1.0
            want[: max(p, 1) - 1] = prompt_weight
            np.testing.assert_array_equal(batch["loss_weights"][r, idx], want)
    return found


def test_pack_rows_invariants():
    cfg = PackingConfig(seq_len=64, batch_size=4, num_bins=4)
    examples = _examples(10)
    packer = FirstFitPacker(cfg.seq_len, cfg.num_bins)
    for i, ex in enumerate(examples):
        packer.add(i, ex)
    packer.flush()
    rows = packer.pop_rows(100)
    assert sum(len(r) for r in rows) == 10
    for start in range(0, len(rows), cfg.batch_size):
        batch = pack_rows(rows[start : start + cfg.batch_size], cfg)
        assert batch["inputs"].shape == (4, 64) and batch["loss_weights"].dtype == np.float32
        check_batch(batch)
    # The checker catches a target that crosses into the next segment.
    bad = pack_rows([examples[:2]], PackingConfig(seq_len=128, batch_size=1))
    last = len(examples[0]["ids"]) - 1
    bad["targets"][0, last] = bad["inputs"][0, last + 1]
    with pytest.raises(ValueError, match="next token"):
        packing.check_batch(bad)


def test_prompt_weight_needs_causal_and_is_applied():
    with pytest.raises(ValueError, match="prefix_lm"):
        PackingConfig(seq_len=32, batch_size=1, prompt_loss_weight=0.5)
    cfg = PackingConfig(seq_len=32, batch_size=1, prompt_loss_weight=0.5, prefix_lm=False)
    ex = {"ids": np.arange(10, 20, dtype=np.int32), "prompt_len": np.int32(4)}
    batch = pack_rows([[ex]], cfg)
    assert not batch["prefix_mask"].any()
    np.testing.assert_array_equal(batch["loss_weights"][0, :10], [0.5] * 3 + [1.0] * 6 + [0.0])


def _iterator(examples, seq_len=64, batch=4, infinite=True, **kw) -> PackedIterator:
    ds = grain.MapDataset.source(examples)
    if infinite:
        ds = ds.repeat(None)
    cfg = PackingConfig(seq_len=seq_len, batch_size=batch, num_bins=kw.pop("num_bins", 4), **kw)
    return PackedIterator(ds, cfg, name="test", read_threads=0)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_finite_stream_packs_every_example_once_in_order():
    examples = _examples(37, seed=1)
    it = _iterator(examples, infinite=False)
    batches = list(it)
    found = [seg for b in batches for seg in check_batch(b)]
    assert len(found) == 37
    # Every example exactly once (rows may reorder them).
    key = lambda ids: ids.tobytes()
    assert sorted(key(ids) for ids, _ in found) == sorted(key(e["ids"]) for e in examples)
    assert {key(e["ids"]): int(e["prompt_len"]) for e in examples} == {
        key(ids): p for ids, p in found
    }
    assert batches[-1]["inputs"].shape == (4, 64)  # the last batch is padded to shape
    stats = it.stats()
    assert stats["packed"] == 37 and 0.5 < stats["packing_efficiency"] <= 1.0


@pytest.mark.parametrize("mode", ["drop", "truncate"])
def test_overlong_examples_are_counted(mode):
    short = {"ids": np.arange(1, 11, dtype=np.int32), "prompt_len": np.int32(3)}
    long_ok = {"ids": np.arange(1, 25, dtype=np.int32), "prompt_len": np.int32(5)}
    long_prompt = {"ids": np.arange(1, 25, dtype=np.int32), "prompt_len": np.int32(16)}
    empty = {"ids": np.zeros(0, np.int32), "prompt_len": np.int32(0)}
    it = _iterator([short, long_ok, long_prompt, empty], seq_len=16, infinite=False, overlong=mode)
    found = [seg for b in it for seg in check_batch(b)]
    stats = it.stats()
    assert stats["skipped_missing"] == 1
    if mode == "drop":
        assert stats["dropped_overlong"] == 2 and stats["truncated"] == 0
        assert [len(ids) for ids, _ in found] == [10]
    else:  # the whole prompt fits: truncated; the prompt alone fills the row: dropped
        assert stats["dropped_overlong"] == 1 and stats["truncated"] == 1
        assert sorted(len(ids) for ids, _ in found) == [10, 16]
        ids, p = max(found, key=lambda f: len(f[0]))
        np.testing.assert_array_equal(ids, np.arange(1, 17))
        assert p == 5
    assert admit(long_ok, 16, "truncate")[1] == "truncated"


def test_deterministic_and_exact_resume(tmp_path):
    examples = _examples(50, seed=2)
    first = _take(_iterator(examples), 9)
    _assert_same(first, _take(_iterator(examples), 9))
    it = _iterator(examples)
    head = _take(it, 4)
    state = it.get_state()
    tail = _take(it, 5)
    _assert_same(head + tail, first)
    resumed = _iterator(examples)
    resumed.set_state(state)
    _assert_same(_take(resumed, 5), tail)
    assert resumed.stats()["batches"] == 9
    # Through grain's Orbax handler, as the trainer's checkpoints do.
    from etils import epath

    handler = grain.checkpoint.CheckpointHandler()
    handler.save(epath.Path(tmp_path), args=grain.checkpoint.CheckpointSave(it))
    more = _take(it, 3)
    restored = handler.restore(
        epath.Path(tmp_path), args=grain.checkpoint.CheckpointRestore(_iterator(examples))
    )
    _assert_same(_take(restored, 3), more)


def test_worker_processes_give_the_same_batches():
    examples = _examples(40, seed=3)
    want = _take(_iterator(examples), 6)
    ds = grain.MapDataset.source(examples).repeat(None)
    cfg = PackingConfig(seq_len=64, batch_size=4, num_bins=4)
    it = PackedIterator(ds, cfg, num_workers=2, read_threads=0)
    try:
        got = _take(it, 3)
        state = it.get_state()
        got += _take(it, 3)
    finally:
        it.close()
    _assert_same(got, want)
    # The state does not depend on the worker count: resume with another one.
    resumed = PackedIterator(ds, cfg, num_workers=1, read_threads=0)
    try:
        resumed.set_state(state)
        resumed.start_prefetch()
        _assert_same(_take(resumed, 3), want[3:])
    finally:
        resumed.close()
