"""The ceiling of the speech-output scores: real speech vs its tokens resynthesized; one JSON line.

    python benchmarks/resynthesis_ceiling.py --workdir runs/demo [--languages en,fr]

TTS CER and S2ST ASR-BLEU score generated audio tokens through the audio tokenizer's
decoder and the model's own ASR. This measures how far that path can go: the test
split's real utterances are transcribed by the model as they are (the peer) and after
tokenizing and decoding them with the workdir's tokenizer (the ground-truth tokens a
perfect TTS would generate). ``ratio`` = resynthesized / real CER per split and language.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(path: str):
    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _utterances(records, language: str, limit: int) -> tuple[list[np.ndarray], list[str]]:
    waves, texts = [], []
    for i in range(min(limit, len(records))):
        utt = (records[i].get("utterances") or {}).get(language)
        if not utt:
            continue
        waves.append(np.asarray(utt["audio"]).astype(np.float32) / 32768.0)
        text = utt["text"]
        texts.append(text.decode() if isinstance(text, bytes) else str(text))
    return waves, texts


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "demo"))
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.py"))
    parser.add_argument("--splits", default="test,test_unseen_voice")
    parser.add_argument("--languages", default="en,fr")
    parser.add_argument("--limit", type=int, default=20, help="records per split")
    args = parser.parse_args(argv)

    from audiopalm_jax.evaluation import metrics
    from audiopalm_jax.evaluation.run import open_split
    from audiopalm_jax.inference.api import AudioPaLM

    config = _config(args.config)
    model = AudioPaLM.from_pretrained(args.workdir)
    tokenizer = model.audio_tokenizer
    dataset = config.evaluation.get("dataset") or next(iter(config.data.datasets))
    sr = int(tokenizer.sample_rate)
    rows = []
    for split in args.splits.split(","):
        records = open_split(config, dataset, split)
        for lang in args.languages.split(","):
            waves, refs = _utterances(records, lang, args.limit)
            tokens, lengths = tokenizer.encode(waves, 16_000)
            resynthesized = tokenizer.decode(tokens, lengths)
            real = model.transcribe([(w, 16_000) for w in waves], language=lang)
            resynth = model.transcribe([(w, sr) for w in resynthesized], language=lang)
            cer_real = metrics.cer(real, refs, language=lang)["score"]
            cer_resynth = metrics.cer(resynth, refs, language=lang)["score"]
            rows.append(
                {
                    "split": split,
                    "language": lang,
                    "examples": len(refs),
                    "cer_real": round(cer_real, 4),
                    "cer_resynthesized": round(cer_resynth, 4),
                    "ratio": round(cer_resynth / max(cer_real, 1e-9), 3),
                }
            )
    result = {"workdir": args.workdir, "tokenizer": tokenizer.kind, "results": rows}
    print(json.dumps(result), file=sys.stdout, flush=True)
    return result


if __name__ == "__main__":
    main()
