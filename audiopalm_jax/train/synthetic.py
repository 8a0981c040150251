"""A deterministic synthetic batch source in the training-batch format.

Each row packs two examples of a reversal task: a prefix of random tokens followed by
the same tokens reversed (the targets, the only positions with loss). The model can
learn it, so a falling loss is meaningful in tests. Batch ``i`` depends only on
(seed, i): every process builds the same global batch and keeps its own rows, so runs
on different process counts see the same data.
"""

from __future__ import annotations

import json

import numpy as np


def synthetic_batch(
    seed: int, index: int, batch_size: int, seq_len: int, vocab_size: int
) -> dict[str, np.ndarray]:
    """The global batch number ``index`` (see docs/contracts.md for the keys)."""
    rng = np.random.default_rng([seed, index])
    inputs = np.zeros((batch_size, seq_len), np.int32)
    targets = np.zeros_like(inputs)
    weights = np.zeros((batch_size, seq_len), np.float32)
    segments = np.zeros_like(inputs)
    positions = np.zeros_like(inputs)
    prefix = np.zeros_like(inputs)
    high = max(vocab_size - 1, 2)
    for row in range(batch_size):
        start = 0
        for segment in (1, 2):
            room = seq_len - start
            half = int(rng.integers(2, max(3, room // 4)))
            length = 2 * half + 1
            if length > room:
                break
            source = rng.integers(1, high, half)
            tokens = np.concatenate([source, [0], source[::-1]]).astype(np.int32)
            sl = slice(start, start + length)
            inputs[row, sl] = tokens
            targets[row, start : start + length - 1] = tokens[1:]
            weights[row, start + half : start + length - 1] = 1.0
            segments[row, sl] = segment
            positions[row, sl] = np.arange(length)
            prefix[row, start : start + half + 1] = 1
            start += length
    return {
        "inputs": inputs,
        "targets": targets,
        "loss_weights": weights,
        "segment_ids": segments,
        "positions": positions,
        "prefix_mask": prefix,
    }


class SyntheticIterator:
    """Yields this process's rows of the synthetic global batches; checkpointable."""

    def __init__(
        self,
        seed: int,
        global_batch_size: int,
        seq_len: int,
        vocab_size: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if global_batch_size % process_count:
            raise ValueError(
                f"global batch_size={global_batch_size} is not divisible by the "
                f"{process_count} processes"
            )
        self.seed, self.batch, self.seq_len, self.vocab = (
            seed,
            global_batch_size,
            seq_len,
            vocab_size,
        )
        per = global_batch_size // process_count
        self.rows = slice(process_index * per, (process_index + 1) * per)
        self.index = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = synthetic_batch(self.seed, self.index, self.batch, self.seq_len, self.vocab)
        self.index += 1
        return {k: v[self.rows] for k, v in batch.items()}

    # grain.checkpoint.CheckpointHandler protocol (bytes state for non-grain iterators).
    def get_state(self) -> bytes:
        return json.dumps({"index": self.index}).encode()

    def set_state(self, state: bytes) -> None:
        self.index = int(json.loads(state)["index"])

    def start_prefetch(self) -> None:
        pass
