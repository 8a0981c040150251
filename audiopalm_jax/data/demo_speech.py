"""``demo_speech``: an embedded, generated speech-translation corpus for demos and tests.

Parallel sentences from :mod:`audiopalm_jax.data.demo_grammar` in English, French,
German and Spanish, spoken by espeak-ng (:mod:`audiopalm_jax.data.espeak`) at 16 kHz.
One voice (variant + rate + pitch) speaks all four languages of a record. Built with
TFDS into ArrayRecord files, without TensorFlow and without downloading anything.

Splits: ``train`` and ``validation`` (new sentences, training distribution, training
voices); ``test`` (sentences with held-out word combinations, training voices); and
``test_unseen_voice`` (held-out combinations, voice variants never used in training).

Build: ``python -m audiopalm_jax.data.demo_speech --data_dir DIR [--size tiny]``.
Read: ``tfds.data_source("demo_speech", split="train", data_dir=DIR)`` (or
``"demo_speech/tiny"``), or :func:`load_demo_speech` for records with ``str`` text.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from etils import epath

from audiopalm_jax.data import demo_grammar, espeak
from audiopalm_jax.data.demo_grammar import LANGUAGES
from audiopalm_jax.data.espeak import SAMPLE_RATE, Voice

SPLITS = ("train", "validation", "test", "test_unseen_voice")
# espeak-ng variants (espeak-ng-data/voices/!v): training voices and held-out ones.
TRAIN_VARIANTS = ("m1", "m3", "m7", "f1", "f2", "f4", "klatt", "klatt4")
HELD_OUT_VARIANTS = ("m4", "f3")
RATE_RANGE = (150, 210)  # words per minute, espeak's default is 175
PITCH_RANGE = (30, 70)  # espeak's 0..100 scale, default 50
# Records synthesized per fresh worker process. Part of the determinism contract (espeak
# state carries over between utterances within a process): changing it changes the audio.
SHARD_SIZE = 128


@dataclasses.dataclass(eq=False)
class DemoSpeechConfig(tfds.core.BuilderConfig):
    """Sizes (sentence ids per split; each id has all four languages) and seed."""

    num_train: int = 4000
    num_validation: int = 200
    num_test: int = 300
    num_test_unseen_voice: int = 300
    seed: int = 0

    def split_sizes(self) -> dict[str, int]:
        return {
            "train": self.num_train,
            "validation": self.num_validation,
            "test": self.num_test,
            "test_unseen_voice": self.num_test_unseen_voice,
        }


CONFIGS = {
    "default": DemoSpeechConfig(name="default", description="4000/200/300/300 sentence ids"),
    "tiny": DemoSpeechConfig(
        name="tiny",
        description="16/8/8/8 sentence ids, for tests",
        num_train=16,
        num_validation=8,
        num_test=8,
        num_test_unseen_voice=8,
    ),
}


@dataclasses.dataclass(frozen=True)
class RecordPlan:
    """Everything that determines one record, before synthesis."""

    id: str
    sentence: demo_grammar.Sentence
    voice: Voice
    text: dict[str, str]
    seed: int  # espeak's noise seed


def config_for(size: str = "default", seed: int = 0) -> DemoSpeechConfig:
    """The registered config ``size``, or a copy named ``{size}_seed{seed}`` for seed != 0."""
    if size not in CONFIGS:
        raise ValueError(f"unknown demo_speech size {size!r}; known: {sorted(CONFIGS)}")
    if seed == 0:
        return CONFIGS[size]
    return dataclasses.replace(CONFIGS[size], name=f"{size}_seed{seed}", seed=seed)


def plan_records(config: DemoSpeechConfig) -> dict[str, list[RecordPlan]]:
    """Sentences, voices and noise seeds of every split; a pure function of ``config``."""
    plans: dict[str, list[RecordPlan]] = {}
    taken: set[demo_grammar.Sentence] = set()
    for index, (split, count) in enumerate(config.split_sizes().items()):
        # One generator per split: other splits' sizes only matter through duplicates.
        rng = np.random.default_rng([config.seed, index])
        held_out = split in ("test", "test_unseen_voice")
        sentences = demo_grammar.sample_sentences(rng, count, held_out, exclude=taken)
        taken.update(sentences)
        variants = HELD_OUT_VARIANTS if split == "test_unseen_voice" else TRAIN_VARIANTS
        plans[split] = [
            RecordPlan(
                id=f"{split}-{i:05d}",
                sentence=s,
                voice=Voice(
                    variants[int(rng.integers(len(variants)))],
                    int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
                    int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
                ),
                text=demo_grammar.render_all(s),
                seed=int(rng.integers(1, 2**31 - 1)),
            )
            for i, s in enumerate(sentences)
        ]
    return plans


def _default_start_method() -> str:
    # forkserver: cheap fresh workers without fork()ing a process that may hold threads
    # (JAX, TFDS); spawn where forkserver does not exist.
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def synthesize_records(
    plans: Sequence[RecordPlan],
    num_workers: int | None = None,
    start_method: str | None = None,
    desc: str | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields ``{language: int16 audio}`` for each plan, in order, synthesized in parallel.

    Every shard of :data:`SHARD_SIZE` records runs in a fresh worker process, so the
    output is identical for any ``num_workers`` and start method.
    """
    num_workers = max(1, num_workers or os.cpu_count() or 1)
    ctx = multiprocessing.get_context(start_method or _default_start_method())
    shards = [
        [(p.text, p.voice, p.seed) for p in plans[i : i + SHARD_SIZE]]
        for i in range(0, len(plans), SHARD_SIZE)
    ]
    bar = tqdm.tqdm(total=len(plans), desc=desc or "espeak", unit="rec", leave=False)
    with bar, ctx.Pool(min(num_workers, max(1, len(shards))), maxtasksperchild=1) as pool:
        for shard_audio in pool.imap(espeak.synthesize_shard, shards, chunksize=1):
            bar.update(len(shard_audio))
            yield from shard_audio


def _features() -> tfds.features.FeaturesDict:
    # Raw int16 bytes (Encoding.BYTES): plain int64 protobuf lists would take ~5x the space.
    audio = tfds.features.Tensor(
        shape=(None,), dtype=np.int16, encoding=tfds.features.Encoding.BYTES
    )
    return tfds.features.FeaturesDict(
        {
            "id": tfds.features.Text(),
            "voice": tfds.features.Text(),
            "text": {lang: tfds.features.Text() for lang in LANGUAGES},
            "audio": {lang: audio for lang in LANGUAGES},
        }
    )


class DemoSpeech(tfds.core.GeneratorBasedBuilder):
    """Generated parallel en/fr/de/es speech, spoken by espeak-ng voices."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = list(CONFIGS.values())
    DEFAULT_CONFIG_NAME = "default"

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's default lookup needs `importlib_resources` (not installed) whenever the
        # builder lives in a package; the file path is all it is used for here.
        return epath.Path(__file__)

    def __init__(
        self, *, num_workers: int | None = None, start_method: str | None = None, **kwargs
    ):
        # ArrayRecord: random access without TensorFlow (tfds.data_source, grain).
        kwargs.setdefault("file_format", tfds.core.FileFormat.ARRAY_RECORD)
        super().__init__(**kwargs)
        self._num_workers = num_workers
        self._start_method = start_method

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=_features(),
            metadata=tfds.core.MetadataDict(
                sample_rate=SAMPLE_RATE,
                languages=list(LANGUAGES),
                train_variants=list(TRAIN_VARIANTS),
                held_out_variants=list(HELD_OUT_VARIANTS),
                shard_size=SHARD_SIZE,
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        plans = plan_records(self.builder_config)
        return {split: self._generate_examples(split, plans[split]) for split in SPLITS}

    def _generate_examples(self, split: str, plans: Sequence[RecordPlan]):
        audio_iter = synthesize_records(
            plans, self._num_workers, self._start_method, desc=f"demo_speech {split}"
        )
        for plan, audio in zip(plans, audio_iter, strict=True):
            yield (
                plan.id,
                {"id": plan.id, "voice": plan.voice.name, "text": plan.text, "audio": audio},
            )


def prepare_demo_speech(
    data_dir: str,
    size: str = "default",
    num_workers: int | None = None,
    seed: int = 0,
    start_method: str | None = None,
) -> tfds.core.DatasetBuilder:
    """Builds ``demo_speech`` (config ``size``) under ``data_dir`` unless already built.

    Returns the prepared builder; ``builder.as_data_source()`` reads it.
    """
    builder = DemoSpeech(
        data_dir=data_dir,
        config=config_for(size, seed),
        num_workers=num_workers,
        start_method=start_method,
    )
    builder.download_and_prepare()
    return builder


def _decode(value):
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    return value.decode("utf-8") if isinstance(value, bytes) else value


def decode_record(raw: dict) -> dict:
    """A record as read by TFDS (text as bytes) -> the contract's ``str`` text."""
    return _decode(raw)


class DemoSpeechSource(Sequence):
    """Random-access records of one split, with ``str`` text (see docs/contracts.md)."""

    def __init__(self, source):
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        return decode_record(self._source[index])


def load_demo_speech(
    data_dir: str, split: str, size: str = "default", seed: int = 0
) -> DemoSpeechSource:
    """Reads a built split (no TensorFlow needed)."""
    builder = DemoSpeech(data_dir=data_dir, config=config_for(size, seed))
    return DemoSpeechSource(builder.as_data_source(split=split))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--size", default="default", choices=sorted(CONFIGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_workers", type=int, default=None)
    parser.add_argument("--start_method", default=None, choices=["spawn", "forkserver", "fork"])
    args = parser.parse_args(argv)
    start = time.time()
    builder = prepare_demo_speech(
        args.data_dir, args.size, args.num_workers, args.seed, args.start_method
    )
    print(f"built {builder.info.full_name} in {time.time() - start:.1f} s at {builder.data_dir}")
    for split, info in builder.info.splits.items():
        print(f"  {split}: {info.num_examples} records, {info.num_bytes / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
