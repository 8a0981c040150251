"""KV-cache decoding against full forward passes of the training model."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from inference_fakes import SPACE, constrained_log_prob, random_model, tiny_config

from audiopalm_jax.inference import beam as beam_lib
from audiopalm_jax.inference import cached_forward, decoding
from audiopalm_jax.inference.constraints import allowed_mask, structure_arrays
from audiopalm_jax.positions import SEQUENTIAL, PositionScheme

PROMPT_LENGTHS = (5, 9, 3)


def _prompts(seed: int = 0, lengths=PROMPT_LENGTHS) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, 60, n).astype(np.int32) for n in lengths]


def _full_forward(model):
    """Jitted uncached forward of one right-padded row: (tokens [L], prompt_len, length,
    positions [L] or None: 0, 1, ...)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(tokens, prompt_len, length, positions):
        col = jnp.arange(tokens.shape[0])
        seg = (col < length).astype(jnp.int32)[None]  # right padding: segment 0
        prefix = (col < prompt_len).astype(jnp.int32)[None]
        logits, _ = nnx.merge(graphdef, state)(
            tokens[None], positions[None], segment_ids=seg, prefix_mask=prefix
        )
        return logits[0]  # [L, vocab]

    return lambda tokens, prompt_len, length, positions=None: run(
        tokens, prompt_len, length, jnp.arange(tokens.shape[0]) if positions is None else positions
    )


def _training_positions(
    scheme: PositionScheme, seq, source_start: int, translated=(), width: int = 32
):
    """The data pipeline's positions of a segment, right-padded to ``width``."""
    ids = np.asarray(seq)
    out = np.zeros((width,), np.int32)
    out[: len(ids)] = scheme.segment(
        ids, SPACE.is_audio(ids), SPACE.sep_id, source_start, translated
    )
    return jnp.asarray(out)


def _reference_greedy(
    model,
    prompt: np.ndarray,
    n: int,
    structure=(),
    scheme=SEQUENTIAL,
    source_start=0,
    translated=(),
) -> tuple[list[int], float]:
    """Greedy with a full (uncached) forward pass per token, as training computes it."""
    forward = _full_forward(model)
    codes, counts = structure_arrays([structure])
    seq, phase, score = list(prompt), 0, 0.0
    for _ in range(n):
        tokens = np.zeros((32,), np.int32)
        tokens[: len(seq)] = seq
        positions = _training_positions(scheme, seq, source_start, translated)
        logits = forward(jnp.asarray(tokens), len(prompt), len(seq), positions)[len(seq) - 1]
        allowed = allowed_mask(SPACE, codes, counts, jnp.asarray([phase]))[0]
        masked = jnp.where(allowed, logits, -jnp.inf)
        token = int(jnp.argmax(masked))
        score += float(jax.nn.log_softmax(masked)[token])
        seq.append(token)
        if token == SPACE.eos_id:
            break
        phase = min(phase + int(token == SPACE.sep_id), int(counts[0]) - 1)
    return seq[len(prompt) :], score


CONFIGS = {
    "gqa_scanned": {},
    "mha_scanned": dict(num_kv_heads=4),  # multi-head attention takes its own einsums
    # The 9-token prefill in chunks of 4 queries (the last one padded).
    "chunked_attention": dict(attention_chunk_length=4),
    "everything_on": dict(
        scan_layers=False,
        qkv_bias=True,
        parallel_block=True,
        tie_embeddings=True,
        norm_plus_one=True,
        scale_embeddings=True,
        mlp_type="geglu",
        query_scale=0.2,
        attn_logit_softcap=5.0,
        final_logit_softcap=30.0,
        num_kv_heads=1,
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cached_logits_match_full_forward(name):
    """Prefill + decode steps on a left-padded batch == the model's uncached logits."""
    model, _, _ = random_model(tiny_config(**CONFIGS[name]))
    prompts = _prompts(1)
    tokens, lengths = decoding.left_pad(prompts)
    cont = np.random.default_rng(2).integers(3, 60, (len(prompts), 3)).astype(np.int32)
    graphdef, state = nnx.split(model)
    prefill = jax.jit(lambda t, n: cached_forward.prefill(nnx.merge(graphdef, state), t, n, 16))
    step = jax.jit(lambda c, t, p: cached_forward.decode_step(nnx.merge(graphdef, state), c, t, p))
    logits, cache = prefill(jnp.asarray(tokens), jnp.asarray(lengths))
    steps = [logits]
    for j in range(cont.shape[1]):
        logits, cache = step(cache, jnp.asarray(cont[:, j]), jnp.asarray(lengths + j))
        steps.append(logits)
    forward = _full_forward(model)
    for i, p in enumerate(prompts):
        seq = np.zeros((32,), np.int32)
        seq[: len(p) + cont.shape[1]] = np.concatenate([p, cont[i]])
        full = forward(jnp.asarray(seq), len(p), len(p) + cont.shape[1])
        for j, got in enumerate(steps):
            np.testing.assert_allclose(got[i], full[len(p) - 1 + j], atol=2e-4, rtol=2e-4)


def test_greedy_matches_repeated_full_forward(tiny):
    _, model, graphdef, params = tiny
    prompts = _prompts()
    tokens, lengths = decoding.left_pad(prompts)
    out = decoding.generate(graphdef, params, SPACE, tokens, lengths, max_new_tokens=8)
    for i, p in enumerate(prompts):
        ref, score = _reference_greedy(model, p, 8)
        assert out.rows()[i].tolist() == ref
        np.testing.assert_allclose(out.scores[i], score, rtol=1e-4, atol=1e-4)


ALIGNED = PositionScheme("aligned", text_step=4, audio_step=3)


# Per row: which of three outputs are translations (start past the source, not at it).
TRANSLATED = [(False, True, True), (True, True, False), (False, False, False)]


def test_aligned_positions_cached_logits_match_full_forward():
    """Under the aligned scheme, prefill + decode steps fed decoding's clock (teacher-forced,
    the continuation crossing separators) == the full forward on the pipeline's positions."""
    model, _, _ = random_model(tiny_config())
    prompts = [np.append(p, SPACE.sep_id) for p in _prompts(4)]
    starts = np.array([2, 0, 1], np.int32)
    sep = SPACE.sep_id
    cont = np.array([[5, 45, sep, 41, sep, 7], [sep, 44, 44, sep, 9, 8], [5, sep, 4, 4, 6, 7]])
    cont = cont.astype(np.int32)
    tokens, lengths = decoding.left_pad(prompts)
    positions, output_starts = decoding.prompt_positions(
        SPACE, ALIGNED, tokens, lengths, starts, TRANSLATED, num_outputs=3
    )
    graphdef, state = nnx.split(model)
    logits, cache = cached_forward.prefill(
        nnx.merge(graphdef, state), jnp.asarray(tokens), jnp.asarray(lengths), 16, None, positions
    )
    clock = decoding._clock(ALIGNED, SPACE, jnp.asarray(output_starts))
    step = jax.jit(lambda c, t, p: cached_forward.decode_step(nnx.merge(graphdef, state), c, t, p))
    steps, pos, last = [logits], jnp.asarray(positions[:, -1]), jnp.asarray(tokens[:, -1])
    phase = jnp.zeros((3,), jnp.int32)  # the prompt's sep opens output 0
    for j in range(cont.shape[1] - 1):
        pos = clock(pos, last, phase)
        last = jnp.asarray(cont[:, j])
        phase = jnp.minimum(phase + (last == sep), 2)
        logits, cache = step(cache, last, pos)
        steps.append(logits)
    forward = _full_forward(model)
    for i, p in enumerate(prompts):
        seq = np.concatenate([p, cont[i]])
        padded = np.zeros((32,), np.int32)
        padded[: len(seq)] = seq
        full = forward(
            jnp.asarray(padded),
            len(p),
            len(seq),
            _training_positions(ALIGNED, seq, int(starts[i]), TRANSLATED[i]),
        )
        for j, got in enumerate(steps):
            np.testing.assert_allclose(got[i], full[len(p) - 1 + j], atol=2e-4, rtol=2e-4)


def _separator_prone(tiny):
    """The tiny model with every output column but <sep>'s shrunk: greedy and beam
    outputs then cross separators, where the aligned clock jumps."""
    _, _, graphdef, params = tiny
    head = params["lm_head"]
    keep = jnp.arange(head.shape[1]) == SPACE.sep_id
    params = {**params, "lm_head": jnp.where(keep, head, 0.2 * head)}
    return nnx.merge(graphdef, nnx.State(params)), graphdef, params


@pytest.mark.parametrize("structured", [False, True])
def test_aligned_positions_greedy_and_beams_match_full_forward(tiny, structured):
    """Greedy, one beam and three beams under the aligned scheme; ``structured``: three
    outputs (text, text, audio) whose starts depend on ``TRANSLATED``."""
    model, graphdef, params = _separator_prone(tiny)
    prompts = [np.append(p, SPACE.sep_id) for p in _prompts(5)]
    starts = np.array([1, 3, 0], np.int32)
    structure = ("text", "text", "audio") if structured else ()
    translated = TRANSLATED if structured else [()] * 3
    codes, counts = structure_arrays([structure] * 3)
    tokens, lengths = decoding.left_pad(prompts)
    run = functools.partial(
        decoding.generate,
        graphdef,
        params,
        SPACE,
        tokens,
        lengths,
        max_new_tokens=10,
        modalities=codes,
        num_phases=counts,
        scheme=ALIGNED,
        source_starts=starts,
        translated=translated,
    )
    greedy = run()
    for i, p in enumerate(prompts):
        ref, score = _reference_greedy(
            model, p, 10, structure, ALIGNED, int(starts[i]), translated[i]
        )
        assert greedy.rows()[i].tolist() == ref
        np.testing.assert_allclose(greedy.scores[i], score, rtol=1e-4, atol=1e-4)
    seps = sum(int(np.sum(r[:-1] == SPACE.sep_id)) for r in greedy.rows())
    assert seps >= 3  # the outputs do cross separators
    beam = run(sampling=dict(method="beam", num_beams=1, length_penalty=0.0))
    np.testing.assert_array_equal(beam.tokens, greedy.tokens)
    # Several beams: each hypothesis carries its own positions and phase through the
    # reordering, so its score is the full forward's log-probability of what it returns.
    beams = run(sampling=dict(method="beam", num_beams=3, length_penalty=0.0))
    forward = _full_forward(model)
    for i, p in enumerate(prompts):
        seq = np.concatenate([p, beams.rows()[i]])
        padded = np.zeros((32,), np.int32)
        padded[: len(seq)] = seq
        positions = _training_positions(ALIGNED, seq, int(starts[i]), translated[i])
        logits = forward(jnp.asarray(padded), len(p), len(seq), positions)
        want = constrained_log_prob(SPACE, logits, seq, len(p), structure)
        np.testing.assert_allclose(beams.scores[i], want, rtol=1e-4, atol=1e-4)


def test_batched_equals_one_by_one(tiny):
    _, _, graphdef, params = tiny
    prompts = _prompts(3, (2, 11, 6, 7))
    tokens, lengths = decoding.left_pad(prompts, 16)
    batched = decoding.generate(graphdef, params, SPACE, tokens, lengths, max_new_tokens=8)
    for i, p in enumerate(prompts):
        t, n = decoding.left_pad([p], 16)
        one = decoding.generate(graphdef, params, SPACE, t, n, max_new_tokens=8)
        assert one.rows()[0].tolist() == batched.rows()[i].tolist()


def test_unstacked_params_decode_the_same(tiny):
    cfg, _, graphdef, params = tiny
    _, g2, p2 = cached_forward.for_decoding(cfg, params)
    tokens, lengths = decoding.left_pad(_prompts())
    a = decoding.generate(graphdef, params, SPACE, tokens, lengths, max_new_tokens=6)
    b = decoding.generate(g2, p2, SPACE, tokens, lengths, max_new_tokens=6)
    np.testing.assert_array_equal(a.tokens, b.tokens)


def test_per_row_limits(tiny):
    _, _, graphdef, params = tiny
    tokens, lengths = decoding.left_pad(_prompts())
    out = decoding.generate(
        graphdef, params, SPACE, tokens, lengths, max_new_tokens=8, limits=np.array([2, 8, 5])
    )
    assert out.lengths.tolist() == [2, 8, 5]
    assert (out.tokens[0, 2:] == -1).all()


def test_sampling_is_seeded_and_topk1_is_greedy(tiny):
    _, _, graphdef, params = tiny
    tokens, lengths = decoding.left_pad(_prompts())

    def run(**kw):
        return decoding.generate(
            graphdef, params, SPACE, tokens, lengths, max_new_tokens=8, sampling=kw or None
        ).tokens

    greedy = run()
    hot = dict(method="sample", temperature=2.0)
    np.testing.assert_array_equal(run(**hot, seed=1), run(**hot, seed=1))
    assert not np.array_equal(run(**hot, seed=1), run(**hot, seed=2))
    np.testing.assert_array_equal(run(method="sample", top_k=1, seed=5), greedy)
    np.testing.assert_array_equal(run(method="sample", top_p=1e-6, seed=5), greedy)


def test_one_beam_is_greedy(tiny):
    _, _, graphdef, params = tiny
    tokens, lengths = decoding.left_pad(_prompts())
    greedy = decoding.generate(graphdef, params, SPACE, tokens, lengths, max_new_tokens=8)
    beam = decoding.generate(
        graphdef,
        params,
        SPACE,
        tokens,
        lengths,
        max_new_tokens=8,
        sampling=dict(method="beam", num_beams=1, length_penalty=0.0),
    )
    np.testing.assert_array_equal(beam.tokens, greedy.tokens)
    np.testing.assert_allclose(beam.scores, greedy.scores, rtol=1e-5)


def test_beam_runs_on_the_model(tiny):
    _, _, graphdef, params = tiny
    tokens, lengths = decoding.left_pad(_prompts())
    out = decoding.generate(
        graphdef, params, SPACE, tokens, lengths, max_new_tokens=8, sampling="beam"
    )
    assert out.tokens.shape == (3, 8) and np.isfinite(out.scores).all()


def _markov_step(table: np.ndarray):
    """A 'model' whose next-token logits depend only on the last token."""
    table = jnp.log(jnp.asarray(table, jnp.float32))

    def step(cache, tokens, positions):
        return table[tokens], cache

    return step


def test_beam_beats_greedy_in_a_constructed_case():
    """Greedy takes A (p=.5) and then wanders; B (p=.4) then eos (p=.99) is far better."""
    v, a, b, eos = SPACE.vocab_size, 3, 4, SPACE.eos_id
    eps = 1e-6
    table = np.full((v, v), eps)
    table[a, [a, b, eos]] = [0.34, 0.33, 0.33]
    table[b, [a, b, eos]] = [0.005, 0.005, 0.99]
    first = np.full((1, v), eps)
    first[0, [a, b, eos]] = [0.5, 0.4, 0.1]
    cache = {"k": (), "v": (), "segment_ids": jnp.zeros((1, 1), jnp.int32), "index": 0}
    codes, counts = structure_arrays([("text",)])
    best, length, score = beam_lib.beam_search(
        _markov_step(table),
        jnp.log(jnp.asarray(first, jnp.float32)),
        cache,
        jnp.zeros((1,), jnp.int32),
        jnp.zeros((1,), jnp.int32),
        lambda position, token, phase: position + 1,
        jnp.asarray(codes),
        jnp.asarray(counts),
        jnp.float32(0.0),
        space=SPACE,
        max_new_tokens=4,
        num_beams=2,
    )
    assert best[0, : int(length[0])].tolist() == [b, eos]
    # Greedy under the same (renormalised over allowed ids) distribution: A A A A.
    allowed = np.asarray(allowed_mask(SPACE, codes, counts, jnp.zeros((1,), jnp.int32)))[0]

    def logp(row, t):
        p = np.where(allowed, row, 0.0)
        return np.log(p[t] / p.sum())

    greedy = logp(first[0], a) + 3 * logp(table[a], a)
    assert float(score[0]) > greedy
    np.testing.assert_allclose(float(score[0]), logp(first[0], b) + logp(table[b], eos), rtol=1e-4)


def test_jit_step_does_not_recompile_per_position(tiny):
    cfg, _, _, params = tiny
    cfg2, graphdef, p2 = cached_forward.for_decoding(cfg, params)
    tokens, lengths = decoding.left_pad(_prompts())
    _, cache = decoding.jit_prefill(graphdef, p2, jnp.asarray(tokens), jnp.asarray(lengths), 40)
    before = decoding.jit_decode_step._cache_size()
    tok = jnp.zeros((3,), jnp.int32)
    for i in range(3):
        _, cache = decoding.jit_decode_step(graphdef, p2, cache, tok, jnp.asarray(lengths + i))
    assert decoding.jit_decode_step._cache_size() <= before + 1
    assert int(cache["index"]) == tokens.shape[1] + 3
