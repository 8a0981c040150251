"""SIGTERM saves at the current step and exits cleanly; the resumed run continues with
exactly the losses of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_sigterm_saves_and_resume_is_bitwise_identical(tiny_config, tmp_path, read_metrics):
    from audiopalm_jax.checkpoint import Checkpointer
    from audiopalm_jax.train.loop import train

    workdir = tmp_path / "preempted"
    overrides = [
        "--config.num_train_steps=100000",
        "--config.log_every_steps=1",
        "--config.checkpoint_every_steps=100000",
        "--config.async_checkpointing=False",
        "--config.optimizer.decay_steps=50",
    ]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "audiopalm_jax.train",
            "--config",
            "configs/tiny.py",
            "--workdir",
            str(workdir),
            *overrides,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "preempted: saved step" in out
    stopped = max(read_metrics(str(workdir)))
    assert Checkpointer(str(workdir / "checkpoints"), read_only=True).latest_step() == stopped

    c = tiny_config
    c.num_train_steps = stopped + 3
    train(c, str(workdir))  # resume
    train(c, str(tmp_path / "straight"))
    straight, resumed = read_metrics(str(tmp_path / "straight")), read_metrics(str(workdir))
    for step in range(stopped + 1, stopped + 4):
        assert resumed[step]["loss"] == straight[step]["loss"], step
