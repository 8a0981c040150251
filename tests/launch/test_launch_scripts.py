"""Cloud launch scripts in dry-run mode print the commands they would run."""

import os
import shlex
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_tpu_pod_dry_run_creates_installs_and_trains_on_all_workers():
    result = subprocess.run(
        [
            "launch/tpu_pod.sh",
            "--name",
            "pod",
            "--zone",
            "us-east5-a",
            "--accelerator",
            "v5p-128",
            "--dry-run",
            "--",
            "--config",
            "configs/audiopalm_8b.py",
            "--workdir",
            "gs://bucket/run",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    create, install, train = [shlex.split(line) for line in result.stdout.strip().splitlines()]
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod"]
    assert "--accelerator-type=v5p-128" in create
    assert "--worker=all" in install and "--worker=all" in train
    remote_install = [a for a in install if a.startswith("--command=")][0]
    assert "pip install" in remote_install
    remote_train = shlex.split([a for a in train if a.startswith("--command=")][0][10:])
    i = remote_train.index("audiopalm")
    assert remote_train[i : i + 6] == [
        "audiopalm",
        "train",
        "--config",
        "configs/audiopalm_8b.py",
        "--workdir",
        "gs://bucket/run",
    ]
    assert remote_train[-1] == "--config.distributed.auto=True"


def test_tpu_pod_requires_its_arguments():
    result = subprocess.run(
        ["launch/tpu_pod.sh", "--dry-run", "--", "x"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2 and "missing --name" in result.stderr


def test_slurm_dry_run():
    result = subprocess.run(
        ["bash", "launch/slurm.sbatch", "--config", "configs/audiopalm_1b.py", "--workdir", "/x"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "DRY_RUN": "1"},
    )
    assert result.stdout.startswith("srun --kill-on-bad-exit=1 audiopalm train --config")
    assert "--config.distributed.auto=True" in result.stdout
