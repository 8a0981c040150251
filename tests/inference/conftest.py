"""Fixtures over ``inference_fakes`` (made importable here: the suite runs with
``--import-mode=importlib``, which does not put test directories on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from inference_fakes import make_vocab, make_workdir, random_model, tiny_config  # noqa: E402


@pytest.fixture(scope="session")
def tiny():
    cfg = tiny_config()
    model, graphdef, params = random_model(cfg)
    return cfg, model, graphdef, params


@pytest.fixture(scope="session")
def vocab(tmp_path_factory):
    return make_vocab(str(tmp_path_factory.mktemp("chars")))


@pytest.fixture(scope="session")
def workdir(tmp_path_factory, vocab) -> str:
    return make_workdir(str(tmp_path_factory.mktemp("workdir")), vocab)
