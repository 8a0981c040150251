"""How much do voices share audio tokens? Log-mel vs speaker-normalised clusters; one JSON line.

    python benchmarks/token_speaker_invariance.py [--num_tokens 128]

Fits a ``log_mel`` and a ``vtln_cepstra`` mel k-means tokenizer on the same demo_speech-like
English utterances (random training voice variant, rate and pitch), then speaks held-out
sentences with every voice variant at the default rate and pitch, aligns each voice's
utterance to the reference voice ``m1``'s by DTW on per-utterance-normalised MFCCs, and
reports the share of aligned frames whose tokens are equal, per voice and tokenizer.
``ratio`` = vtln_cepstra / log_mel mean agreement over the training voices (> 1: voices
share more tokens). Needs librosa (a test dependency).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

REFERENCE = "m1"


def _speak(text: str, variant: str, rate: int = 175, pitch: int = 50) -> np.ndarray:
    from audiopalm_jax.data import espeak

    audio, _ = espeak.synthesize(text, "en", variant, rate, pitch, seed=1)
    return audio.astype(np.float32) / 32768.0


def _dtw_path(a: np.ndarray, b: np.ndarray, hop: int) -> np.ndarray:
    """[steps, 2] frame pairs aligning two utterances (MFCCs at ``hop`` samples)."""
    import librosa

    def mfcc(x):
        c = librosa.feature.mfcc(y=x, sr=16000, n_mfcc=13, n_fft=512, hop_length=hop)
        return (c - c.mean(1, keepdims=True)) / (c.std(1, keepdims=True) + 1e-3)

    _, path = librosa.sequence.dtw(X=mfcc(a), Y=mfcc(b))
    return path[::-1]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_tokens", type=int, default=128)
    parser.add_argument("--fit_utterances", type=int, default=300)
    parser.add_argument("--eval_sentences", type=int, default=40)
    args = parser.parse_args(argv)

    from audiopalm_jax.audio import MelKMeansTokenizer
    from audiopalm_jax.data import demo_grammar
    from audiopalm_jax.data.demo_speech import (
        HELD_OUT_VARIANTS,
        PITCH_RANGE,
        RATE_RANGE,
        TRAIN_VARIANTS,
    )

    rng = np.random.default_rng(0)
    sentences = demo_grammar.sample_sentences(rng, args.fit_utterances + args.eval_sentences, False)
    texts = [demo_grammar.render(s, "en") for s in sentences]
    fit = [
        _speak(
            t,
            TRAIN_VARIANTS[rng.integers(len(TRAIN_VARIANTS))],
            int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
            int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
        )
        for t in texts[: args.fit_utterances]
    ]
    voices = TRAIN_VARIANTS + HELD_OUT_VARIANTS
    held = {v: [_speak(t, v) for t in texts[args.fit_utterances :]] for v in voices}
    hop = 640  # one 25 Hz token
    paths = {
        v: [_dtw_path(w, r, hop) for w, r in zip(held[v], held[REFERENCE], strict=True)]
        for v in voices
        if v != REFERENCE
    }
    result = {"num_tokens": args.num_tokens, "reference_voice": REFERENCE}
    for features in ("log_mel", "vtln_cepstra"):
        t0 = time.perf_counter()
        tok = MelKMeansTokenizer.fit(
            fit, 16000, num_tokens=args.num_tokens, seed=0, features=features
        )
        tokens = {v: [tok.encode_one(w, 16000) for w in held[v]] for v in voices}
        agreement = {}
        for v, vpaths in paths.items():
            shares = []
            for ta, tb, path in zip(tokens[v], tokens[REFERENCE], vpaths, strict=True):
                i = np.minimum(path[:, 0], len(ta) - 1)
                j = np.minimum(path[:, 1], len(tb) - 1)
                shares.append(np.mean(ta[i] == tb[j]))
            agreement[v] = round(float(np.mean(shares)), 3)
        train = [agreement[v] for v in TRAIN_VARIANTS if v != REFERENCE]
        result[features] = {
            "agreement": agreement,
            "mean_train_voices": round(float(np.mean(train)), 3),
            "mean_held_out_voices": round(
                float(np.mean([agreement[v] for v in HELD_OUT_VARIANTS])), 3
            ),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    result["ratio"] = round(
        result["vtln_cepstra"]["mean_train_voices"] / result["log_mel"]["mean_train_voices"], 2
    )
    print(json.dumps(result), file=sys.stdout, flush=True)
    return result


if __name__ == "__main__":
    main()
