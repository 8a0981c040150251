"""RoPE position schemes: the training layout, and decoding's clock that must reproduce it."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from audiopalm_jax.model import ModelConfig
from audiopalm_jax.positions import PositionScheme, translated_outputs

AUDIO = (40, 60)  # audio ids [40, 60); the separator is 60
SEP = 60


def _is_audio(ids):
    return (ids >= AUDIO[0]) & (ids < AUDIO[1])


def test_aligned_positions_by_hand():
    # tag (3 text ids) | source: 4 audio ids | sep | text output: 2 ids | sep | audio: 3 | eos
    ids = np.array([5, 6, 7, 41, 42, 43, 44, SEP, 8, 9, SEP, 45, 46, 47, 1])
    got = PositionScheme("aligned", text_step=4, audio_step=3).segment(
        ids, _is_audio(ids), SEP, source_start=3
    )
    # The tag counts 0, 4, 8; the source starts at 12; after each sep the clock goes back
    # to 12, so both outputs start where the source started.
    want = [0, 4, 8, 12, 15, 18, 21, 24, 12, 16, 20, 12, 15, 18, 21]
    assert got.tolist() == want


def test_aligned_translations_start_past_the_source_by_hand():
    # [ASR AST S2ST ...]: tag (3 text ids) | source: 2 audio ids | sep | ASR text: 2 | sep |
    # AST text: 2 | sep | S2ST audio: 2 | eos
    ids = np.array([5, 6, 7, 41, 42, SEP, 8, 9, SEP, 10, 11, SEP, 43, 44, 1])
    got = PositionScheme("aligned", text_step=4, audio_step=3).segment(
        ids, _is_audio(ids), SEP, source_start=3, translated=(False, True, True)
    )
    # The source spans 12..18 and its sep ends at 22. The transcript starts again at 12;
    # the translation starts at 22 as if positions ran on, and its speech starts at 22 too.
    want = [0, 4, 8, 12, 15, 18, 12, 16, 20, 22, 26, 30, 22, 25, 28]
    assert got.tolist() == want
    assert translated_outputs(["ASR", "AST", "S2ST"]) == (False, True, True)
    assert translated_outputs("TTS") == (False,)


def test_sequential_positions_count_tokens():
    ids = np.array([5, 41, SEP, 8, 1])
    scheme = PositionScheme()
    assert scheme.segment(ids, _is_audio(ids), SEP, 1).tolist() == [0, 1, 2, 3, 4]
    assert scheme.output_starts(ids, _is_audio(ids), SEP, 1, (True,), 2).tolist() == [0, 0]


@pytest.mark.parametrize("kind", ["sequential", "aligned"])
def test_decoding_clock_reproduces_the_training_positions(kind):
    """Decoding builds positions one token at a time (``next``); the data pipeline builds
    them for the whole segment (``segment``). They must agree, separators included."""
    scheme = PositionScheme(kind, text_step=5, audio_step=2)
    rng = np.random.default_rng(0)
    for _ in range(20):
        n, start = int(rng.integers(8, 30)), int(rng.integers(0, 4))
        ids = rng.integers(3, 61, n)  # text, audio and separators
        prompt = int(rng.integers(start + 1, n))
        ids[:prompt] = rng.integers(3, 60, prompt)  # tag and source: no separator
        ids[:start] = rng.integers(3, 40, start)  # the tag is text
        ids[prompt - 1] = SEP  # the prompt ends with a separator
        translated = tuple(rng.random(4) < 0.5)
        want = scheme.segment(ids, _is_audio(ids), SEP, start, translated)
        starts = scheme.output_starts(
            ids[:prompt], _is_audio(ids[:prompt]), SEP, start, translated, 4
        )
        pos, phase = jnp.asarray([want[prompt - 1]]), 0  # the prompt's sep opens output 0
        got = []
        for i, tok in enumerate(ids[prompt - 1 : -1]):
            phase = min(phase + int(i > 0 and tok == SEP), 3)
            tok = jnp.asarray([tok])
            pos = scheme.next(pos, tok, _is_audio(tok), SEP, jnp.asarray([starts]), phase)
            got.append(int(pos[0]))
        assert got == want[prompt:].tolist()


def test_bad_schemes_are_named():
    with pytest.raises(ValueError, match="position_scheme='time'.*sequential, aligned"):
        PositionScheme("time")
    with pytest.raises(ValueError, match="audio_position_step=0"):
        ModelConfig(vocab_size=128, position_scheme="aligned", audio_position_step=0)
    cfg = ModelConfig(vocab_size=128, position_scheme="aligned", text_position_step=2)
    assert PositionScheme.of(cfg) == PositionScheme("aligned", 2, 3)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
