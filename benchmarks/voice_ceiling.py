"""The voice and intelligibility ceiling of speech output, by outside judges; one JSON line.

    python benchmarks/voice_ceiling.py --workdir runs/demo [--limit 50]

For each test record, the real utterance in ``--language`` (the peer), its own tokens
decoded by the tokenizer (Griffin-Lim of cluster means: no voice), and the same tokens
spoken by the workdir's acoustic stage with a voice prompt taken from the *same speaker
in another language* (``--prompt_language``, as S2ST would) are judged by pocketsphinx
(CER against the transcript, English only) and resemblyzer (speaker-ID accuracy against
training-voice centroids; on the held-out voice, which has no centroid, the margin of
cos(output, own source) over cos(output, other voices' sources)). What a perfect
language model could reach through each decoder.
"""

from __future__ import annotations

import argparse
import json
import os
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "demo"))
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.py"))
    parser.add_argument("--splits", default="test,test_unseen_voice")
    parser.add_argument("--language", default="en")
    parser.add_argument("--prompt_language", default="fr")
    parser.add_argument("--limit", type=int, default=50, help="records per split")
    args = parser.parse_args(argv)

    import numpy as np

    from audiopalm_jax.acoustic.stage import AcousticStage
    from audiopalm_jax.audio import load_tokenizer
    from audiopalm_jax.data.pipeline import prepared_dirs
    from audiopalm_jax.evaluation import judges as J
    from audiopalm_jax.evaluation import metrics
    from audiopalm_jax.evaluation.evaluate import SAMPLE_RATE
    from audiopalm_jax.evaluation.run import build_judges, open_split
    from audiopalm_jax.train.config import load_config_file

    config = load_config_file(args.config)
    _, tok_dir = prepared_dirs(config.data, args.workdir)
    tokenizer = load_tokenizer(tok_dir)
    stage = AcousticStage.load(os.path.join(args.workdir, "acoustic"))
    alias = config.evaluation.get("dataset") or next(iter(config.data.datasets))
    lang, plang = args.language, args.prompt_language
    judges = build_judges(config, args.workdir, alias, [lang])
    names, centroids = judges.centroids.get(lang, ([], None))
    row: dict = {"benchmark": "voice_ceiling", "language": lang, "prompt_language": plang}
    for split in args.splits.split(","):
        records = open_split(config, alias, split)
        recs = [records[i] for i in range(min(args.limit, len(records)))]
        recs = [r for r in recs if r["utterances"].get(lang) and r["utterances"].get(plang)]
        real = [np.asarray(r["utterances"][lang]["audio"]) for r in recs]
        prompts = [(np.asarray(r["utterances"][plang]["audio"]), SAMPLE_RATE) for r in recs]
        refs = [r["utterances"][lang]["text"] for r in recs]
        voices = [str(r.get("speaker") or r["voice"]) for r in recs]
        tokens, lengths = tokenizer.encode(real, SAMPLE_RATE)
        units = [tokens[i, : int(n)] for i, n in enumerate(lengths)]
        t0 = time.perf_counter()
        outputs = {
            "real": [w.astype(np.float32) / 32768.0 for w in real],
            "tokenizer_decode": tokenizer.decode(tokens, lengths),
            "acoustic_stage": stage.synthesize(units, prompts),
        }
        row[f"{split}/acoustic_seconds"] = round(time.perf_counter() - t0, 1)
        sources = judges.speaker.embed([p[0] for p in prompts], SAMPLE_RATE)
        for name, waves in outputs.items():
            if judges.asr is not None and lang == "en":
                hyp = judges.asr.transcribe(waves, SAMPLE_RATE)
                row[f"{split}/{name}/cer_ext"] = metrics.cer(hyp, refs, language=lang)["score"]
            emb = judges.speaker.embed(waves, SAMPLE_RATE)
            if centroids is not None and set(voices) <= set(names):
                acc = J.speaker_id_accuracy(emb, voices, names, centroids)
                row[f"{split}/{name}/speaker_id_acc"] = acc
            row[f"{split}/{name}/cos_source"] = J.cosine(emb, sources)
            row[f"{split}/{name}/margin"] = J.speaker_margin(emb, sources, voices)
        row[f"{split}/examples"] = len(recs)
    print(json.dumps(row))
    return row


if __name__ == "__main__":
    main()
