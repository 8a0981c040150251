"""Fitting the weight-free mel k-means audio tokenizer (``fit_tokenizer``).

    audiopalm fit-tokenizer --config configs/tokenizer_mel.py \
        --config.audio=/data/librispeech/train-clean-100 --output_dir=tokenizers/mel1024

For the w2v-BERT 2.0 tokenizer set ``kind='w2v_bert_kmeans'`` and
``w2v_bert.checkpoint`` to a local Hugging Face ``facebook/w2v-bert-2.0`` directory.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.kind = "mel_kmeans"  # or "w2v_bert_kmeans"
    # Audio to fit on: a directory (searched recursively), a glob, or a list of files.
    config.audio = ""
    config.max_files = 0  # 0 = all; otherwise a random subset of this many files
    config.sample_rate = 16000  # rate of waveforms passed in directly (files carry their own)
    config.num_tokens = 1024  # AudioPaLM: 1024 clusters
    config.frame_rate = 25.0  # tokens per second: 25 (2 x 20 ms frames stacked) or 50
    config.seed = 0
    config.max_frames = 2_000_000  # subsample frames for k-means beyond this (~22 h at 25 Hz)
    config.progress = True

    config.kmeans = ml_collections.ConfigDict()
    config.kmeans.batch_size = 8192  # global mini-batch, split over devices
    config.kmeans.num_steps = 300
    config.kmeans.init_sample = 32768  # frames for k-means++ seeding

    # MelConfig overrides (features and Griffin-Lim decoding).
    config.mel = ml_collections.ConfigDict()
    # "log_mel", or "vtln_cepstra": speaker-normalised cepstra that voices share (docs/audio.md)
    config.mel.features = "log_mel"
    config.mel.n_mels = 80
    config.mel.griffin_lim_iters = 32

    config.w2v_bert = ml_collections.ConfigDict()
    config.w2v_bert.checkpoint = ""  # local HF directory: config.json + model.safetensors
    config.w2v_bert.layer = 17
    return config
