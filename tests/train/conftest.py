"""Shared fixtures for trainer tests: the tiny config and a way to read a run's losses."""

import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(name: str = "tiny"):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


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
