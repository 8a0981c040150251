"""The colabs run top to bottom on a CPU with the reduced config, and are committed clean.

Each notebook is executed with nbclient (kernel ``python3``) with ``AUDIOPALM_WORKDIR`` and
``AUDIOPALM_DATA_DIR`` pointing at temporary directories. The workdir is shared by the
session, so the evaluate notebook reuses the quickstart's model when both run in the same
worker; run alone (``-k evaluate``) it trains the reduced config itself.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

COLABS = Path(__file__).resolve().parents[2] / "colabs"
NOTEBOOKS = ("quickstart.ipynb", "evaluate.ipynb")
CELL_TIMEOUT_S = 600
BUDGET_S = 300  # per notebook on 2 CPU cores (reported; asserted with a 2x margin)


def _read(name: str):
    return nbformat.read(COLABS / name, as_version=4)


def _cell(nb, cell_id: str):
    return next(c for c in nb.cells if c.get("id") == cell_id)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{name} cell {i} has outputs: clear them before committing"
        assert cell.execution_count is None, f"{name} cell {i} has an execution count"
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_come_from_the_environment(name):
    params = "".join(_cell(_read(name), "params").source)
    assert 'os.environ.get("AUDIOPALM_WORKDIR"' in params
    assert 'os.environ.get("AUDIOPALM_DATA_DIR"' in params
    assert "REDUCED = True" in params


def test_install_cell_is_guarded():
    for name in NOTEBOOKS:
        src = _cell(_read(name), "install").source
        assert src.startswith("# Colab") and "except ImportError:" in src
        assert "pip install" in src and "git+https://github.com/audiopalm-jax/audiopalm-jax" in src


def test_notebooks_share_the_setup_cell():
    quickstart, evaluate = (_cell(_read(n), "setup").source for n in NOTEBOOKS)
    assert quickstart == evaluate, "keep the setup cells of the colabs identical"


@pytest.fixture(scope="session")
def shared_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("colabs")
    return {"workdir": str(root / "run"), "data_dir": str(root / "tfds")}


def _execute(name: str, workdir: str, data_dir: str):
    nb = _read(name)
    env = dict(os.environ)
    # A user's kernel: one CPU device, not the 8 simulated ones of tests/conftest.py.
    env.pop("XLA_FLAGS", None)
    env.update(
        AUDIOPALM_WORKDIR=workdir,
        AUDIOPALM_DATA_DIR=data_dir,
        JAX_PLATFORMS="cpu",
        MPLBACKEND="module://matplotlib_inline.backend_inline",
    )
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(COLABS)}},
    )
    t0 = time.perf_counter()
    client.execute(env=env)
    seconds = time.perf_counter() - t0
    print(f"{name}: executed in {seconds:.0f} s")
    assert seconds < 2 * BUDGET_S, f"{name} took {seconds:.0f} s (budget {BUDGET_S} s)"
    return nb


def _outputs(nb, cell_id: str) -> list:
    return _cell(nb, cell_id).outputs


def _text(outputs) -> str:
    parts = []
    for out in outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def _mimes(outputs) -> list[str]:
    return [m for out in outputs for m in out.get("data", {})]


@pytest.mark.slow
def test_quickstart_runs(shared_dirs):
    nb = _execute("quickstart.ipynb", shared_dirs["workdir"], shared_dirs["data_dir"])
    assert os.path.exists(os.path.join(shared_dirs["workdir"], "metrics.jsonl"))
    asr = _text(_outputs(nb, "asr"))
    assert "ASR fr:" in asr and "AST fr -> en:" in asr
    assert "text/html" in _mimes(_outputs(nb, "asr"))  # the input audio player
    speech = _outputs(nb, "speech")
    assert _mimes(speech).count("text/html") >= 2  # reference + at least one generated
    assert "image/png" in _mimes(_outputs(nb, "curves"))
    assert "image/png" in _mimes(_outputs(nb, "mel"))


@pytest.mark.slow
def test_evaluate_runs(shared_dirs):
    nb = _execute("evaluate.ipynb", shared_dirs["workdir"], shared_dirs["data_dir"])
    table = _text(_outputs(nb, "metrics"))
    for task in ("ASR", "AST", "S2ST", "TTS", "MT"):
        assert task in table
    assert "cer" in table and "bleu" in table
    worst = _text(_outputs(nb, "worst"))
    assert "reference" in worst and "prediction" in worst
