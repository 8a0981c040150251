"""Shared fixtures for trainer tests: the tiny config and a way to read a run's losses."""

import json
import os

import pytest

from audiopalm_jax.train.config import load_config_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(name: str = "tiny"):
    return load_config_file(os.path.join(REPO, "configs", f"{name}.py"))


def read_metrics(workdir: str) -> dict[int, dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {r["step"]: r for r in rows}


@pytest.fixture(name="load_config")
def load_config_fixture():
    """``load_config(name)``: ``configs/<name>.py``'s ``get_config()``."""
    return load_config


@pytest.fixture(name="read_metrics")
def read_metrics_fixture():
    return read_metrics


@pytest.fixture
def tiny_config():
    c = load_config("tiny")
    c.log_every_steps = 1
    c.async_checkpointing = False
    c.optimizer.decay_steps = 50  # schedule independent of num_train_steps, for resumes
    return c
