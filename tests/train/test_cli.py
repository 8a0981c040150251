"""The CLI ends bad input with one line naming the problem."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _train(tmp_path, *overrides):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "audiopalm_jax.train",
            "--config",
            "configs/tiny.py",
            "--workdir",
            str(tmp_path),
            *overrides,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "override, expected",
    [
        ("--config.model.d_modl=3", "d_modl"),
        ("--config.model.d_model=abc", "--config.model.d_model=abc"),
        ("--config.mesh.data=3", "data*fsdp*tensor=3*1*1=3 does not match the 8 devices"),
        ("--config.optimizer.name=sgd", "optimizer.name='sgd'; allowed: adamw, adafactor"),
    ],
)
def test_bad_input_is_one_line(tmp_path, override, expected):
    result = _train(tmp_path, override)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert expected in errors[0]
    assert "Traceback" not in result.stderr


def test_usage_lists_verbs():
    result = subprocess.run(
        [sys.executable, "-m", "audiopalm_jax.cli"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 2
    for verb in ("train", "eval", "prepare", "compile", "tokenizer", "tokenize"):
        assert verb in result.stderr
