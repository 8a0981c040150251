"""Sharded mini-batch k-means and run-length merging."""

import jax
import numpy as np
import pytest

from audiopalm_jax.audio import KMeansConfig, expand_repeats, merge_repeats
from audiopalm_jax.audio.kmeans import Codebook, data_mesh, kmeans_fit

CFG = KMeansConfig(num_clusters=16, batch_size=1024, num_steps=40, init_sample=4096, seed=0)


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((16, 8)) * 6
    labels = rng.integers(0, 16, 20000)
    return (centers[labels] + rng.standard_normal((20000, 8))).astype(np.float32), centers


def test_recovers_well_separated_clusters_on_all_devices(blobs):
    x, centers = blobs
    assert len(jax.devices()) == 8  # tests/conftest.py simulates a slice
    centroids, info = kmeans_fit(x, CFG)
    assert info["devices"] == 8 and info["unused_clusters"] == 0
    # Unit-variance noise in 8 dims: the optimum's mean squared distance is ~8.
    assert info["inertia"] < 8.5, info
    nearest = np.min(np.linalg.norm(centers[:, None] - centroids[None], axis=-1), axis=1)
    assert nearest.max() < 0.5


def test_deterministic_given_a_seed(blobs):
    x, _ = blobs
    a, _ = kmeans_fit(x, CFG)
    b, _ = kmeans_fit(x, CFG)
    c, _ = kmeans_fit(x, KMeansConfig(**{**CFG.__dict__, "seed": 1}))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_device_count_only_changes_rounding(blobs):
    x, _ = blobs
    a, info_a = kmeans_fit(x, CFG, mesh=data_mesh(jax.devices()[:1]))
    b, info_b = kmeans_fit(x, CFG)
    assert (info_a["devices"], info_b["devices"]) == (1, 8)
    # Seeding is identical (sharding-invariant random numbers); the mini-batches differ.
    assert abs(info_a["init_inertia"] - info_b["init_inertia"]) < 1e-3 * info_a["init_inertia"]
    assert abs(info_a["inertia"] - info_b["inertia"]) < 0.05 * info_a["inertia"]


def test_tiny_inputs_with_more_devices_than_frames():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    centroids, info = kmeans_fit(x, KMeansConfig(num_clusters=4, batch_size=8, num_steps=5))
    assert np.isfinite(centroids).all() and centroids.shape == (4, 2)


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 16 frames"):
        kmeans_fit(np.zeros((10, 2), np.float32), CFG)
    with pytest.raises(ValueError, match="NaN"):
        kmeans_fit(np.full((100, 2), np.nan, np.float32), CFG)
    with pytest.raises(ValueError, match=r"\[frames, dims\]"):
        kmeans_fit(np.zeros(100, np.float32), CFG)


def test_codebook_standardises_and_round_trips(blobs):
    x, _ = blobs
    scaled = x * np.array([1, 1, 1, 1, 1, 1, 1, 1000], np.float32)  # one huge dim
    book, _ = Codebook.fit(scaled, CFG)
    np.testing.assert_allclose(book.mean, scaled.mean(0), rtol=1e-4, atol=1e-2)
    ids = np.asarray(book.quantize(scaled[:500]))
    assert ids.min() >= 0 and ids.max() < 16 and len(np.unique(ids)) > 8
    back = Codebook.from_arrays(book.arrays())
    np.testing.assert_array_equal(np.asarray(back.quantize(scaled[:500])), ids)
    recon = np.asarray(book.lookup(ids))
    assert np.abs(recon - scaled[:500]).mean(0)[-1] < 0.5 * scaled[:, -1].std()


def test_decode_table_is_the_mean_decode_frame_of_each_token(blobs):
    x, _ = blobs
    book, _ = Codebook.fit(x, CFG)
    decode = np.random.default_rng(1).standard_normal((len(x), 3)).astype(np.float32)
    table_book = book.with_decode_table(x, decode)
    ids = np.asarray(book.quantize(x))
    expected = np.stack([decode[ids == k].mean(0) for k in range(book.size)])
    np.testing.assert_allclose(table_book.decode_table, expected, rtol=1e-4, atol=1e-5)
    # Quantisation is unchanged; lookup now returns decode-table rows, and both survive
    # a round trip through the saved arrays.
    back = Codebook.from_arrays(table_book.arrays())
    np.testing.assert_array_equal(np.asarray(back.quantize(x[:100])), ids[:100])
    np.testing.assert_allclose(np.asarray(back.lookup(ids[:100])), expected[ids[:100]], atol=1e-5)


def test_merge_and_expand_repeats():
    tokens = np.array([5, 5, 5, 2, 7, 7, 5, 5], np.int32)
    units, durations = merge_repeats(tokens)
    np.testing.assert_array_equal(units, [5, 2, 7, 5])
    np.testing.assert_array_equal(durations, [3, 1, 2, 2])
    np.testing.assert_array_equal(expand_repeats(units, durations), tokens)
    u, d = merge_repeats([])
    assert u.size == 0 and d.size == 0 and expand_repeats(u, d).size == 0
    rng = np.random.default_rng(0)
    t = rng.integers(0, 3, 500)
    np.testing.assert_array_equal(expand_repeats(*merge_repeats(t)), t)
    with pytest.raises(ValueError, match="1-D"):
        merge_repeats(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=">= 1"):
        expand_repeats([1, 2], [1, 0])
