"""Packing formatted examples into ``seq_len`` rows, and the checkpointable batch iterator.

An example ``{"ids": int32[L], "prompt_len": P}`` becomes one segment of a row::

    inputs[s:s+L]   = ids                 positions = 0..L-1 (or the example's own
                                          "positions"), segment id = k
    targets[s:s+L-1] = ids[1:]            (the segment's last position has no target)
    loss_weights    = 1 where the target is a target token (index >= P), the prompt
                      weight where it is a prompt token, 0 on the last position/padding
    prefix_mask     = 1 on the P prompt positions (prefix-LM), else 0

Rows are filled by streaming first-fit over ``num_bins`` open rows: an example goes into
the first open row with room; if none has room, the fullest row is closed. Rows close in
a deterministic order, so batches depend only on the example stream.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from audiopalm_jax.data.tasks import Example

log = logging.getLogger(__name__)

OVERLONG_MODES = ("drop", "truncate")
BATCH_KEYS = ("inputs", "targets", "loss_weights", "segment_ids", "positions", "prefix_mask")
# What happened to each example of the stream.
OUTCOMES = ("packed", "truncated", "dropped_overlong", "skipped_missing")


@dataclasses.dataclass(frozen=True)
class PackingConfig:
    """How examples become rows; ``batch_size`` is rows per (process-local) batch."""

    seq_len: int
    batch_size: int
    num_bins: int = 16
    overlong: str = "drop"
    prompt_loss_weight: float = 0.0
    prefix_lm: bool = True

    def __post_init__(self):
        if self.overlong not in OVERLONG_MODES:
            raise ValueError(f"data.overlong={self.overlong!r}; allowed: {OVERLONG_MODES}")
        if self.seq_len < 2 or self.batch_size < 1 or self.num_bins < 1:
            raise ValueError(f"need seq_len >= 2, batch_size >= 1, num_bins >= 1: {self}")
        if self.prompt_loss_weight and self.prefix_lm:
            # Under prefix-LM attention a prompt position sees the token it would predict.
            raise ValueError(
                "data.prompt_loss_weight > 0 needs data.prefix_lm=False: with a "
                "bidirectional prefix the prompt targets are visible to the model"
            )


def admit(example: Example, seq_len: int, overlong: str) -> tuple[Example | None, str]:
    """(example to pack or None, outcome); truncation keeps the start of the target."""
    ids = example["ids"]
    n, p = len(ids), int(example["prompt_len"])
    if n == 0:
        return None, "skipped_missing"
    if n <= seq_len:
        return example, "packed"
    # A truncated example must keep its whole prompt and at least one target token.
    if overlong == "truncate" and p < seq_len:
        cut = {k: v[:seq_len] if k in ("ids", "positions") else v for k, v in example.items()}
        return cut, "truncated"
    return None, "dropped_overlong"


def pack_rows(rows: Sequence[Sequence[Example]], cfg: PackingConfig) -> dict[str, np.ndarray]:
    """Rows of examples -> a batch dict of ``[cfg.batch_size, cfg.seq_len]`` arrays.

    Missing rows (a final partial batch) are all padding with zero weight.
    """
    shape = (cfg.batch_size, cfg.seq_len)
    out = {k: np.zeros(shape, np.int32) for k in BATCH_KEYS}
    out["loss_weights"] = np.zeros(shape, np.float32)
    for r, row in enumerate(rows):
        start = 0
        for k, ex in enumerate(row, start=1):
            ids, p = ex["ids"], int(ex["prompt_len"])
            n = len(ids)
            end = start + n
            if end > cfg.seq_len:
                raise ValueError(f"row {r} overflows: {end} > seq_len {cfg.seq_len}")
            out["inputs"][r, start:end] = ids
            out["targets"][r, start : end - 1] = ids[1:]
            # Position i predicts ids[i + 1]: a target token from i = p - 1 on.
            first_target = start + max(p, 1) - 1
            out["loss_weights"][r, first_target : end - 1] = 1.0
            if cfg.prompt_loss_weight:
                out["loss_weights"][r, start:first_target] = cfg.prompt_loss_weight
            out["segment_ids"][r, start:end] = k
            out["positions"][r, start:end] = ex.get("positions", np.arange(n))
            if cfg.prefix_lm:
                out["prefix_mask"][r, start : start + p] = 1
            start = end
    return out


def check_batch(
    batch: dict[str, np.ndarray], positions: Callable[[np.ndarray], np.ndarray] | None = None
) -> list[tuple[np.ndarray, int]]:
    """Validates a batch against docs/contracts.md; returns each segment's (ids, prompt_len).

    ``positions``: a segment's ids -> its expected positions (default ``0..n-1``).
    Raises ValueError on: non-contiguous segments, padding inside a row, positions not
    as expected, targets that are not the next token of the same segment, loss on a
    segment's last position or on padding, target tokens without weight 1, or a prefix
    that is not at a segment's start.
    """

    def fail(row: int, msg: str):
        raise ValueError(f"row {row}: {msg}")

    found = []
    for r in range(batch["inputs"].shape[0]):
        seg, start = batch["segment_ids"][r], 0
        for k in range(1, int(seg.max()) + 1):
            idx = np.flatnonzero(seg == k)
            if not len(idx) or idx[0] != start or np.any(np.diff(idx) != 1):
                fail(r, f"segment {k} is not contiguous after position {start}")
            s, start = slice(int(idx[0]), int(idx[-1]) + 1), int(idx[-1]) + 1
            ids, n = batch["inputs"][r, s], len(idx)
            prefix = batch["prefix_mask"][r, s]
            p = int(prefix.sum())
            if np.any(prefix[:p] != 1):
                fail(r, f"segment {k}: the prefix is not at the segment start")
            expected = np.arange(n) if positions is None else positions(ids)
            if np.any(batch["positions"][r, s] != expected):
                fail(r, f"segment {k}: positions are not the expected ones")
            if np.any(batch["targets"][r, s][:-1] != ids[1:]) or batch["targets"][r, s.stop - 1]:
                fail(r, f"segment {k}: targets are not the next token within the segment")
            w = batch["loss_weights"][r, s]
            if w[-1]:
                fail(r, f"segment {k}: loss on the last position (it has no target)")
            if np.any(w[max(p, 1) - 1 : n - 1] != 1):
                fail(r, f"segment {k}: a target token without loss weight 1")
            found.append((ids.copy(), p))
        if any(np.any(batch[key][r, start:]) for key in batch):
            fail(r, f"nonzero values on padding after position {start}")
    return found


class FirstFitPacker:
    """Streaming first-fit over ``num_bins`` open rows; rows are lists of stream indices."""

    def __init__(self, seq_len: int, num_bins: int):
        self.seq_len, self.num_bins = seq_len, num_bins
        self.bins: list[list[int]] = []  # open rows, oldest first
        self.fill: list[int] = []  # tokens in each open row
        self.ready: collections.deque[list[int]] = collections.deque()  # closed rows
        self.examples: dict[int, Example] = {}  # pending examples by stream index

    def add(self, index: int, example: Example) -> None:
        n = len(example["ids"])
        if not 0 < n <= self.seq_len:
            raise ValueError(f"example {index} has {n} tokens; admit() it first")
        self.examples[index] = example
        for b, fill in enumerate(self.fill):
            if fill + n <= self.seq_len:
                self.bins[b].append(index)
                self.fill[b] += n
                if self.fill[b] == self.seq_len:
                    self._close(b)
                return
        if len(self.bins) >= self.num_bins:
            self._close(int(np.argmax(self.fill)))  # the fullest; the oldest on ties
        self.bins.append([index])
        self.fill.append(n)
        if n == self.seq_len:
            self._close(len(self.bins) - 1)

    def _close(self, b: int) -> None:
        self.ready.append(self.bins.pop(b))
        self.fill.pop(b)

    def flush(self) -> None:
        """Closes every open row (end of a finite stream)."""
        while self.bins:
            self._close(0)

    def pop_rows(self, n: int) -> list[list[Example]]:
        rows = [self.ready.popleft() for _ in range(min(n, len(self.ready)))]
        return [[self.examples.pop(i) for i in row] for row in rows]

    def state(self) -> dict[str, Any]:
        return {"bins": [list(b) for b in self.bins], "ready": [list(r) for r in self.ready]}

    def restore(self, state: dict[str, Any], fetch: Callable[[int], Example]) -> None:
        """Rebuilds the rows from their stream indices, re-reading each example."""
        self.bins, self.fill, self.ready, self.examples = [], [], collections.deque(), {}
        for row in state["bins"]:
            self.bins.append([int(i) for i in row])
        for row in state["ready"]:
            self.ready.append([int(i) for i in row])
        for i in [i for row in self.bins for i in row] + [i for row in self.ready for i in row]:
            self.examples[i] = fetch(i)
        self.fill = [sum(len(self.examples[i]["ids"]) for i in row) for row in self.bins]


class PackedIterator:
    """Packed batches from an indexed example stream; exactly resumable.

    ``examples`` is a grain ``MapDataset`` of formatted examples (finite or infinite);
    element ``i`` is read once in order, in ``num_workers`` processes (0: in this one).
    The state is the next stream index plus the stream indices of the rows not yet
    emitted, so :meth:`set_state` re-reads a few examples and continues exactly where an
    uninterrupted run would be. Implements grain's bytes-state iterator protocol
    (``get_state`` / ``set_state`` / ``start_prefetch``) for the Orbax checkpoint handler.
    """

    def __init__(
        self,
        examples,
        cfg: PackingConfig,
        *,
        num_workers: int = 0,
        read_threads: int = 2,
        prefetch: int = 256,
        name: str = "data",
        fingerprint: str = "",
        log_every: int = 1000,
    ):
        self.examples, self.cfg = examples, cfg
        self.num_workers, self.read_threads, self.prefetch = num_workers, read_threads, prefetch
        self.name, self.fingerprint, self.log_every = name, fingerprint, log_every
        self.packer = FirstFitPacker(cfg.seq_len, cfg.num_bins)
        self.next_index = 0  # stream index of the next example to read
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.batches, self.real_tokens, self.row_tokens = 0, 0, 0
        self._upstream = None
        self._warned = False

    # -- reading ------------------------------------------------------------------------
    def _open(self):
        import grain

        ds = self.examples
        if self.next_index:
            ds = ds.slice(slice(self.next_index, None))
        it = ds.to_iter_dataset(
            grain.ReadOptions(num_threads=self.read_threads, prefetch_buffer_size=self.prefetch)
        )
        if self.num_workers > 0:
            from absl import flags

            if not flags.FLAGS.is_parsed():
                # grain reads its absl flags when starting workers; outside an absl app
                # (scripts, tests) nothing has parsed them, so take the defaults.
                flags.FLAGS.mark_as_parsed()
            it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers))
        return iter(it)

    def _exhausted(self) -> bool:
        return self.next_index >= len(self.examples)

    def _read_one(self) -> bool:
        """Reads and packs the next example; False at the end of a finite stream."""
        if self._exhausted():
            return False
        if self._upstream is None:
            self._upstream = self._open()
        example = next(self._upstream)
        index = self.next_index
        self.next_index += 1
        admitted, outcome = admit(example, self.cfg.seq_len, self.cfg.overlong)
        self.counts[outcome] += 1
        if outcome in ("truncated", "dropped_overlong") and not self._warned:
            self._warned = True
            log.warning(
                "%s: example of %d tokens > seq_len %d was %s (data.overlong=%r); "
                "counts are logged every %d batches",
                self.name,
                len(example["ids"]),
                self.cfg.seq_len,
                "truncated" if outcome == "truncated" else "dropped",
                self.cfg.overlong,
                self.log_every,
            )
        if admitted is not None:
            self.packer.add(index, admitted)
        return True

    def __iter__(self) -> PackedIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        b = self.cfg.batch_size
        while len(self.packer.ready) < b:
            if not self._read_one():
                self.packer.flush()
                break
        rows = self.packer.pop_rows(b)
        if not rows:
            raise StopIteration
        batch = pack_rows(rows, self.cfg)
        self.batches += 1
        self.real_tokens += int(np.count_nonzero(batch["segment_ids"]))
        self.row_tokens += len(rows) * self.cfg.seq_len
        if self.log_every and self.batches % self.log_every == 0:
            log.info("%s input stats: %s", self.name, self.stats())
        return batch

    def stats(self) -> dict[str, float]:
        """Example outcomes so far and the packing efficiency (non-pad fraction)."""
        eff = self.real_tokens / self.row_tokens if self.row_tokens else 0.0
        return {**self.counts, "batches": self.batches, "packing_efficiency": eff}

    # -- checkpointing ------------------------------------------------------------------
    def get_state(self) -> bytes:
        state = {
            "next_index": self.next_index,
            "packer": self.packer.state(),
            "counts": self.counts,
            "batches": self.batches,
            "real_tokens": self.real_tokens,
            "row_tokens": self.row_tokens,
            "fingerprint": self.fingerprint,
        }
        return json.dumps(state).encode()

    def set_state(self, state: bytes) -> None:
        s = json.loads(state)
        if s.get("fingerprint") != self.fingerprint:
            log.warning(
                "%s: restoring an input state saved with another data config "
                "(%s != %s); the resumed stream will differ from the original run",
                self.name,
                s.get("fingerprint"),
                self.fingerprint,
            )
        self.close()
        cfg = self.cfg

        def fetch(i: int) -> Example:
            ex, _ = admit(self.examples[i], cfg.seq_len, cfg.overlong)
            assert ex is not None, f"stream index {i} was packed but is not admissible now"
            return ex

        self.packer.restore(s["packer"], fetch)
        self.next_index = int(s["next_index"])
        self.counts = {k: int(s["counts"].get(k, 0)) for k in OUTCOMES}
        self.batches = int(s["batches"])
        self.real_tokens, self.row_tokens = int(s["real_tokens"]), int(s["row_tokens"])

    def start_prefetch(self) -> None:
        if self._upstream is None and not self._exhausted():
            self._upstream = self._open()

    def close(self) -> None:
        """Stops the reader (and its worker processes, if any)."""
        if self._upstream is not None:
            close = getattr(self._upstream, "close", None)
            if close is not None:
                close()
            self._upstream = None
