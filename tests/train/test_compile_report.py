"""Ahead-of-time TPU compiles of the real train step, on CPU (needs the tpu-compile extra)."""

import json
import os
import subprocess
import sys

import jax
import pytest

from audiopalm_jax import sharding
from audiopalm_jax.train import compile_findings as cf
from audiopalm_jax.train import compile_report as cr
from audiopalm_jax.train.loop import setup_from_config
from audiopalm_jax.train.step import make_train_step

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tpu_topologies():
    """Skips unless libtpu can describe a TPU topology on this (CPU) machine."""
    try:
        cr.topology_devices("v5e:2x2")
    except cr.TopologyUnavailable as e:
        pytest.skip(f"no AOT TPU compile here ({e}); pip install 'audiopalm-jax[tpu-compile]'")


def _small(load_config, d_model=256, layers=4, batch=8, seq=256):
    c = load_config("tiny")
    c.model.update(
        d_model=d_model,
        num_layers=layers,
        num_heads=4,
        num_kv_heads=2,
        head_dim=64,
        mlp_dim=4 * d_model,
        dtype="bfloat16",
    )
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    c.data.update(batch_size=batch, seq_len=seq)
    return c


def test_parse_topology():
    chip, name = cr.parse_topology("v5p:4x4x4")
    assert (chip.name, name, chip.hbm_bytes) == ("v5p", "v5p:4x4x4", 95 * cf.GiB)
    assert cr.parse_topology("v5litepod:16x16")[1] == "v5e:16x16"
    with pytest.raises(ValueError, match="expected GEN"):
        cr.parse_topology("v5p-128")


def test_parse_oom_messages():
    a = cf.parse_oom(
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
        "temporaries (49.99G) exceeds available HBM (15.75G)."
    )
    assert a == {"temporaries": int(49.99 * cf.GiB), "available": int(15.75 * cf.GiB)}
    b = cf.parse_oom(
        "Ran out of memory in memory space hbm. Used 20.5G of 15.48G hbm. "
        "Exceeded hbm capacity by 5.02G."
    )
    assert b["used"] == int(20.5 * cf.GiB) and b["available"] == int(15.48 * cf.GiB)
    assert b["exceeded"] == int(5.02 * cf.GiB)


REPORT = """Memory Space: default (color=0)
Total bytes: 7050297344 (6.57GiB)
  cumulative_size;       size;       offset; used_by_n_values; shapes_list
  ------------------------------------------------------------
    1.97GiB( 18%);    1.97GiB;   2780053504;                2; 2×f32[2,256,8192]
    2.96GiB( 45%); 1011.00MiB;   1106853888;                1; bf16[2,256,8192], bf16[3,4]
    2.97GiB( 45%);     2.0KiB;   1106853888;                1; s32[2]
Memory Space: vmem (color=1)
  cumulative_size;       size;       offset; used_by_n_values; shapes_list
      9.00GiB( 18%);    9.00GiB;   0;                1; f32[2,256,8192]
"""


def test_largest_buffers_and_full_copies(tmp_path, load_config):
    (tmp_path / "module_0000.jit_step.memory-usage-report.txt").write_text(REPORT)
    buffers = cf.largest_buffers(str(tmp_path))
    assert [b["bytes"] for b in buffers] == [int(1.97 * cf.GiB), 1011 * cf.MiB, 2048]  # HBM only
    c = _small(load_config, layers=2)
    c.model.mlp_dim = 8192  # gate/up f32[2, 256, 8192]: 2 MiB shards on fsdp=8
    setup = setup_from_config(c, 256, jax.devices()[:8])
    found = cf.full_copies(setup, buffers)
    assert [(f["leaf"], f["dtype"]) for f in found] == [
        ("params/blocks/mlp/gate", "f32"),  # same-shaped leaves: the first one is named
        ("params/blocks/mlp/gate", "bf16"),
    ]
    assert found[0]["note"] == "replicated weight or gradient"


def test_vocab_size_from_config(load_config):
    # text + audio + separator, padded to 128 as JointVocab does.
    assert cr.vocab_size_from_config(load_config("audiopalm_1b").vocab) == 33152
    assert cr.vocab_size_from_config(load_config("audiopalm_8b").vocab) == 129408


@pytest.mark.slow
def test_1b_config_fits_its_topology(tpu_topologies, capsys, load_config):
    config = load_config("audiopalm_1b")
    report = cr.compile_report(config, None, layer_costs=False)
    assert report["topology"] == config.topology
    assert report["fits"], report["verdict"]
    assert 0 < report["per_device_bytes"] < 0.8 * report["hbm_bytes"]  # real headroom
    assert report["sharding_findings"] == []
    assert report["verdict"].startswith("FITS")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["per_device_bytes"] == report["per_device_bytes"]


def test_oversized_batch_does_not_fit(tpu_topologies, load_config):
    config = load_config("audiopalm_1b")
    config.model.update(num_layers=2, remat_policy="none")  # shallow: a quick compile
    config.data.batch_size = 1024  # 64 sequences of 2048 per v5e chip
    report = cr.compile_report(config, "v5e:4x4", layer_costs=False)
    assert not report["fits"]
    assert report["per_device_bytes"] > report["hbm_usable_bytes"]
    assert report["verdict"].startswith("DOES NOT FIT")
    assert "remat_policy" in report["verdict"] and "grad_accum_steps" in report["verdict"]
    assert "loss_chunk_length=512" in report["verdict"]  # seq 2048, whole-sequence logits
    assert "model.attention_chunk_length=512" in report["verdict"]


def test_roofline_counts_every_scanned_layer(tpu_topologies, load_config):
    config = _small(load_config)
    report = cr.compile_report(config, "v5e:2x2")
    assert report["fits"] and report["roofline_step_seconds"] > 0
    raw = report["hlo_cost_analysis_raw"]["flops"] * report["num_devices"]
    # cost_analysis sees the scan body once; the extrapolation restores all 4 layers and
    # lands near the analytic matmul FLOPs (no remat here, so no recompute on top).
    assert report["flops_per_step"] > 1.3 * raw
    assert 0.9 < report["flops_per_step"] / report["model_flops_per_step"] < 1.5
    assert 0 < report["mfu_ceiling"] <= 1.0
    tokens = config.data.batch_size * config.data.seq_len
    assert report["tokens_per_sec_per_chip_roofline"] == pytest.approx(
        tokens / report["roofline_step_seconds"] / 4
    )


def test_reports_leaves_the_rules_meant_to_shard(tpu_topologies, load_config):
    config = _small(load_config, d_model=100, layers=2)  # 100 does not split over fsdp=8
    config.model.update(num_heads=2, num_kv_heads=2, head_dim=50, mlp_dim=4096)
    report = cr.compile_report(config, "v5e:2x4", layer_costs=False)
    found = {f["leaf"]: f for f in report["sharding_findings"]}
    mlp = found["params/blocks/mlp/up"]
    assert mlp["kind"] == "replicated" and "fsdp" in mlp["rules_spec"]
    assert mlp["bytes_per_device"] > 7 * mlp["intended_bytes_per_device"]  # 100/8 rounds up


def test_embedding_table_is_gathered_in_the_compute_dtype(tpu_topologies, load_config):
    # 64-way fsdp leaves embed shards 64 wide, under a TPU tile: XLA then gathers the
    # table through a zero-filled whole buffer, and unless the cast is pinned before the
    # gather that buffer is f32 (the 8B on v5p-128 held 2 GiB of it a chip).
    config = _small(load_config, d_model=4096, layers=1, batch=64, seq=128)
    config.model.update(num_kv_heads=4, mlp_dim=256)
    config.vocab.num_audio_tokens = 8192  # a table big enough to be reported
    report = cr.compile_report(config, "v5p:4x4x4", layer_costs=False)
    assert report["mesh"]["fsdp"] == 64 and report["fits"]
    assert report["sharding_findings"] == [], report["sharding_findings"]
    assert not any("f32[8448,4096]" in b["shapes"] for b in report["largest_buffers"])


def test_chunked_attention_lowers_the_step_memory(tpu_topologies, load_config):
    # seq 2048: one layer's f32 scores [2 rows a chip, 4 heads, 2048, 2048] (128 MiB) are
    # the step's biggest activation; 512-query chunks keep a quarter of them at a time.
    # (Measured: 110 -> 44 MB a chip; the whole program never holds all of them at once.)
    config = _small(load_config, layers=1, batch=8, seq=2048)
    whole = cr.compile_report(config, "v5e:2x2", layer_costs=False)
    config.model.attention_chunk_length = 512
    chunked = cr.compile_report(config, "v5e:2x2", layer_costs=False)
    scores = 2 * 4 * 2048 * 2048 * 4
    saved = whole["per_device_bytes"] - chunked["per_device_bytes"]
    assert saved > 0.4 * scores, (whole["per_device_bytes"], chunked["per_device_bytes"])


def test_weight_grad_auto_follows_the_compile_target(tpu_topologies, load_config):
    # "auto" materialises transposes for the weight gradients (behind optimization
    # barriers) only when the step is compiled for CPU, not for TPU devices from a CPU host.
    _, tpu = cr.topology_devices("v5e:2x2")
    barriers = {}
    for target, devices in (("tpu", tpu), ("cpu", jax.devices("cpu")[:1])):
        for mode in ("auto", "xla"):
            config = _small(load_config, layers=1, batch=8, seq=128)
            config.model.weight_grad = mode
            setup = setup_from_config(config, cr.vocab_size_from_config(config.vocab), devices)
            step = make_train_step(setup, seed=0)
            batch = cr.abstract_batch(setup, 8, 128)
            with jax.set_mesh(setup.mesh), sharding.axis_rules(setup.rules):
                text = step.lower(setup.abstract_state, batch).as_text()
            barriers[target, mode] = text.count("optimization_barrier")
    assert barriers["tpu", "auto"] == barriers["tpu", "xla"], barriers
    assert barriers["cpu", "auto"] > barriers["cpu", "xla"], barriers


def test_roofline_of_a_step_that_fits_only_chunked(tpu_topologies, load_config):
    # Whole attention scores would be [2 rows a chip, 32 heads, 8192, 8192] f32 (16 GiB,
    # a v5e chip's HBM); chunked the step fits, and the loop-free cost compiles (whole
    # attention, so the chunk loop is not counted once) must still find a batch that fits.
    config = _small(load_config, layers=1, batch=8, seq=8192)
    config.model.update(num_heads=32, num_kv_heads=32, head_dim=8, attention_chunk_length=512)
    report = cr.compile_report(config, "v5e:2x2")
    assert report["fits"], report["verdict"]
    assert 0.9 < report["flops_per_step"] / report["model_flops_per_step"] < 1.5


def test_cli_writes_the_report(tpu_topologies, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "audiopalm_jax.cli",
            "compile",
            "--config",
            os.path.join(REPO, "configs", "tiny.py"),
            "--topology",
            "v5e:2x2",
            "--config.mesh.data=1",
            "--config.mesh.fsdp=-1",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    printed = json.loads(out.stdout.strip().splitlines()[-1])
    with open(tmp_path / "compile_report.json") as f:
        written = json.load(f)
    assert printed == written
    for key in (
        "topology",
        "num_devices",
        "per_device_bytes",
        "hbm_bytes",
        "fits",
        "flops_per_step",
        "roofline_step_seconds",
        "tokens_per_sec_per_chip_roofline",
        "mfu_ceiling",
    ):
        assert key in written
    assert written["num_devices"] == 4 and written["fits"]
