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
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "demo"))
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.py"))
    parser.add_argument("--splits", default="test,test_unseen_voice")
    parser.add_argument("--languages", default="en,fr")
    parser.add_argument("--limit", type=int, default=20, help="records per split")
    args = parser.parse_args(argv)

    from audiopalm_jax.evaluation import metrics
    from audiopalm_jax.evaluation.evaluate import SAMPLE_RATE, task_examples
    from audiopalm_jax.evaluation.run import open_split
    from audiopalm_jax.inference.api import AudioPaLM
    from audiopalm_jax.train.config import load_config_file

    config = load_config_file(args.config)
    model = AudioPaLM.from_pretrained(args.workdir)
    tokenizer = model.audio_tokenizer
    dataset = config.evaluation.get("dataset") or next(iter(config.data.datasets))
    sr = int(tokenizer.sample_rate)
    rows = []
    for split in args.splits.split(","):
        split_records = open_split(config, dataset, split)
        records = [split_records[i] for i in range(min(args.limit, len(split_records)))]
        for lang in args.languages.split(","):
            examples = task_examples(records, "ASR", lang)  # int16 speech, its transcript
            waves = [e["source"] for e in examples]
            refs = [e["reference"] for e in examples]
            tokens, lengths = tokenizer.encode(waves, SAMPLE_RATE)
            resynthesized = tokenizer.decode(tokens, lengths)
            real = model.transcribe([(w, SAMPLE_RATE) for w in waves], language=lang)
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
