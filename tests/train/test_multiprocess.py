"""Two local processes (4 CPU devices each, gloo collectives) train like one process."""

import os
import subprocess

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_two_processes_match_single_process(tiny_config, tmp_path, read_metrics):
    from audiopalm_jax.train.loop import train

    steps = 4
    overrides = [
        f"--config.num_train_steps={steps}",
        "--config.log_every_steps=1",
        "--config.mesh.fsdp=2",
        "--config.async_checkpointing=False",
        "--config.optimizer.decay_steps=50",
    ]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["LOG_DIR"] = str(tmp_path / "logs")
    result = subprocess.run(
        [
            "launch/local.sh",
            "-n",
            "2",
            "-d",
            "4",
            "--",
            "audiopalm",
            "train",
            "--config",
            "configs/tiny.py",
            "--workdir",
            str(tmp_path / "two"),
            *overrides,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    c = tiny_config
    c.num_train_steps = steps
    c.mesh.fsdp = 2
    train(c, str(tmp_path / "one"))  # this process: 8 devices, one process
    one, two = read_metrics(str(tmp_path / "one")), read_metrics(str(tmp_path / "two"))
    losses_one = np.array([one[s]["loss"] for s in range(1, steps + 1)])
    losses_two = np.array([two[s]["loss"] for s in range(1, steps + 1)])
    np.testing.assert_allclose(losses_two, losses_one, rtol=1e-5)
    assert os.path.isdir(tmp_path / "two" / "checkpoints" / str(steps))
