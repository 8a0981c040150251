"""Modality constraints: masks, phases, and what a random model is allowed to emit."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from inference_fakes import SPACE, random_model, tiny_config

from audiopalm_jax.inference import decoding
from audiopalm_jax.inference.constraints import (
    TokenSpace,
    advance,
    allowed_mask,
    check_tokens,
    output_modalities,
    structure_arrays,
)

TEXT = set(range(3, 40))  # 0 (pad) and 2 (bos) banned, 1 is eos
AUDIO = set(range(40, 60))


def _allowed(structure, phase) -> set[int]:
    codes, counts = structure_arrays([structure])
    mask = np.asarray(allowed_mask(SPACE, codes, counts, jnp.asarray([phase])))[0]
    return set(np.flatnonzero(mask).tolist())


def test_masks_per_phase():
    sep, eos = SPACE.sep_id, SPACE.eos_id
    assert _allowed(("text",), 0) == TEXT | {eos}
    assert _allowed(("audio",), 0) == AUDIO | {eos}
    structure = ("text", "text", "audio")  # [ASR AST S2ST]
    assert _allowed(structure, 0) == TEXT | {sep}
    assert _allowed(structure, 1) == TEXT | {sep}
    assert _allowed(structure, 2) == AUDIO | {eos}
    assert _allowed((), 0) == TEXT | AUDIO | {sep, eos}  # unconstrained: no padding ids


def test_advance_on_sep_and_finish_on_eos():
    phase = jnp.asarray([0, 1, 2, 0])
    counts = jnp.asarray([3, 3, 3, 1])
    tokens = jnp.asarray([SPACE.sep_id, SPACE.sep_id, SPACE.eos_id, SPACE.sep_id])
    nxt, done = advance(SPACE, tokens, phase, counts)
    assert nxt.tolist() == [1, 2, 2, 0] and done.tolist() == [False, False, True, False]


def test_output_modalities_and_errors():
    assert output_modalities("ASR+AST+S2ST".split("+")) == ("text", "text", "audio")
    assert output_modalities("TTS") == ("audio",)
    with pytest.raises(ValueError, match="known tasks"):
        output_modalities(["XYZ"])


def test_pad_equal_to_eos_keeps_eos_usable(vocab):
    space = TokenSpace.from_vocab(vocab)
    assert space.eos_id not in space.banned_ids
    assert space.sep_id == vocab.sep_id and space.vocab_size == vocab.size


@pytest.mark.parametrize(
    "structures", [[("text",), ("audio",), ("text", "text", "audio"), ("audio",)]]
)
def test_random_model_outputs_follow_the_structure(structures):
    cfg = tiny_config(embed_init_std=0.5)
    _, graphdef, params = random_model(cfg, seed=3)
    # Make sep and eos likely so that phases actually change within a few steps.
    params["lm_head"] = params["lm_head"].at[:, [SPACE.sep_id, SPACE.eos_id]].add(0.3)
    rng = np.random.default_rng(0)
    rows = [rng.integers(3, 60, 6).astype(np.int32) for _ in range(8)]
    tokens, lengths = decoding.left_pad(rows)
    structs = [structures[i % len(structures)] for i in range(8)]
    codes, counts = structure_arrays(structs)
    out = decoding.generate(
        graphdef,
        params,
        SPACE,
        tokens,
        lengths,
        max_new_tokens=24,
        modalities=codes,
        num_phases=counts,
        sampling=dict(method="sample", temperature=3.0, seed=1),
    )
    seps = 0
    for i, row in enumerate(out.rows()):
        assert check_tokens(SPACE, row, structs[i]) == []
        assert (row < SPACE.sep_id + 1).all()
        seps += int((row == SPACE.sep_id).sum())
    assert seps > 0  # the multi-output rows did switch phase
