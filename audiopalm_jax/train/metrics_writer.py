"""Where training metrics go: metrics.jsonl, TensorBoard, and a console progress line."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping

import jax


class MetricsWriter:
    """Writes on process 0 only; other processes keep quiet."""

    def __init__(self, workdir: str, total_steps: int, start_step: int = 0):
        self.enabled = jax.process_index() == 0
        self.total_steps = total_steps
        self.start_step = start_step
        self.start_time = time.time()
        self._tb = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            except ImportError:
                self._tb = None

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, float(v), step)
            self._tb.flush()

    def progress(self, step: int, metrics: Mapping[str, float]) -> None:
        """One console line: step, loss, steps/s, tokens/s, MFU and ETA."""
        if not self.enabled:
            return
        done = step - self.start_step
        elapsed = time.time() - self.start_time
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total_steps - step) / rate if rate > 0 else float("nan")
        parts = [f"step {step}/{self.total_steps}"]
        for key, fmt in (("loss", "{:.4f}"), ("accuracy", "{:.3f}"), ("eval/loss", "{:.4f}")):
            if key in metrics:
                parts.append(f"{key} " + fmt.format(metrics[key]))
        parts.append(f"{rate:.2f} steps/s")
        if "tokens_per_sec" in metrics:
            parts.append(f"{metrics['tokens_per_sec']:.0f} tok/s")
        if "mfu" in metrics:
            parts.append(f"MFU {100 * metrics['mfu']:.1f}%")
        parts.append(f"ETA {_duration(eta)}")
        print(" | ".join(parts), file=sys.stdout, flush=True)

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            if self._tb is not None:
                self._tb.close()


def _duration(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
