"""The grain input pipeline: TFDS ArrayRecord records -> audio tokens -> tasks -> packed rows.

Per mixture entry ``dataset:TASKS:src[-tgt][:weight]`` (config ``data.mixture``)::

    record indices of this process's shard, reshuffled each epoch, repeated
        -> parallel view with audio tokens (TokenStore, or the tokenizer on the fly)
        -> AudioPaLM / SpeechGPT formatting

then a deterministic weighted interleave of the entries (``MapDataset.mix``), read in
order (optionally in worker processes) and packed by :class:`PackedIterator`. With
``data.warmup_examples > 0`` the train stream starts with that many examples of
``data.warmup_mixture`` (a curriculum stage, e.g. speech-to-text tasks first). Every
process reads a disjoint shard of every split and yields its ``batch_size /
process_count`` rows of the global batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from ml_collections import ConfigDict

from audiopalm_jax.data import speechgpt, tasks
from audiopalm_jax.data.packing import PackedIterator, PackingConfig
from audiopalm_jax.positions import SEQUENTIAL, PositionScheme, translated_outputs
from audiopalm_jax.vocab import JointVocab

log = logging.getLogger(__name__)

FORMATS = ("audiopalm", "speechgpt")
TOKENS_DIR, TOKENIZER_DIR = "tokens", "audio_tokenizer"


def prepared_dirs(data: Mapping[str, Any], workdir: str | None) -> tuple[str, str]:
    """(tokens dir, audio tokenizer dir): ``data.tokens_dir`` / ``data.audio_tokenizer_dir``
    when set, else their places in ``workdir`` ("" when neither is given)."""
    tokens = data.get("tokens_dir", "") or (os.path.join(workdir, TOKENS_DIR) if workdir else "")
    tok = data.get("audio_tokenizer_dir", "") or (
        os.path.join(workdir, TOKENIZER_DIR) if workdir else ""
    )
    return tokens, tok


# -- config ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MixtureEntry:
    """One weighted (dataset, task, languages) stream of a mixture."""

    dataset: str  # an alias in config.data.datasets
    task: tasks.TaskSpec
    weight: float = 1.0

    @classmethod
    def parse(cls, spec: str) -> MixtureEntry:
        """``"demo_speech:ASR+AST+S2ST:fr-en:0.5"`` (the weight is optional, default 1)."""
        parts = [p.strip() for p in spec.split(":")]
        if len(parts) not in (3, 4):
            raise ValueError(
                f"mixture entry {spec!r}: expected 'dataset:TASKS:src[-tgt][:weight]', "
                "e.g. 'demo_speech:ASR+AST:fr-en:0.5'"
            )
        weight = float(parts[3]) if len(parts) == 4 else 1.0
        if not weight > 0:
            raise ValueError(f"mixture entry {spec!r}: weight must be > 0")
        return cls(parts[0], tasks.TaskSpec.parse(parts[1], parts[2]), weight)

    @property
    def name(self) -> str:
        return f"{self.dataset}:{self.task.name}"


def data_dir(config: ConfigDict) -> str:
    """``data.data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    d = config.data.get("data_dir", "") or os.environ.get("TFDS_DATA_DIR", "")
    return os.path.expanduser(d or "~/tensorflow_datasets")


def dataset_info(config: ConfigDict, alias: str) -> tuple[str, dict[str, str]]:
    """(TFDS name, {pipeline split: dataset split}) of a dataset alias."""
    datasets = config.data.get("datasets", {}) or {}
    if alias not in datasets:
        raise ValueError(
            f"mixture uses dataset {alias!r}, not in config.data.datasets "
            f"({sorted(datasets) or 'empty'})"
        )
    d = datasets[alias]
    if isinstance(d, str):
        return d, {}
    return d["name"], dict(d.get("splits", {}) or {})


def dataset_split(config: ConfigDict, alias: str, split: str) -> str:
    return dataset_info(config, alias)[1].get(split, split)


def mixture(config: ConfigDict, key: str = "mixture") -> list[MixtureEntry]:
    """The parsed entries of ``config.data[key]`` (``mixture`` or ``warmup_mixture``)."""
    entries = [MixtureEntry.parse(s) for s in config.data.get(key) or ()]
    if not entries and key == "mixture":
        raise ValueError("config.data.mixture is empty: list 'dataset:TASKS:src[-tgt][:weight]'")
    return entries


def warmup(config: ConfigDict) -> tuple[list[MixtureEntry], int]:
    """(warm-up mixture entries, examples): the train stream's first stage, if any."""
    n = int(config.data.get("warmup_examples", 0) or 0)
    entries = mixture(config, "warmup_mixture")
    if n < 0 or (n and not entries):
        raise ValueError(
            f"data.warmup_examples={n} needs to be >= 0, and > 0 only with a non-empty "
            "data.warmup_mixture"
        )
    return (entries, n) if n else ([], 0)


def all_entries(config: ConfigDict) -> list[MixtureEntry]:
    """Every entry the train stream reads: the warm-up stage's and the mixture's."""
    return warmup(config)[0] + mixture(config)


def tokens_path(tokens_dir: str, alias: str, split: str, language: str) -> str:
    """Where :mod:`prepare` writes a split's audio tokens of one language."""
    return os.path.join(tokens_dir, alias, split, language)


# -- records -> parallel view with audio tokens ---------------------------------------------
def _str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def to_parallel(tfds_name: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """A stored record -> the parallel view (docs/contracts.md), audio as waveforms."""
    builder = tfds_name.split("/")[0].split(":")[0]
    if builder == "demo_speech":
        audio = record["audio"]
        voice = _str(record["voice"])
        return {
            "id": _str(record["id"]),
            "voice": voice,
            # Who speaks: the espeak variant of "m3_r182_p47"; rate and pitch vary within
            # a speaker.
            "speaker": voice.rsplit("_", 2)[0],
            "utterances": {
                lang: {"text": _str(text), "audio": audio.get(lang)}
                for lang, text in record["text"].items()
            },
        }
    from audiopalm_jax.data import corpora  # deferred: imports every corpus builder

    return corpora.to_parallel(tfds_name, record)


class RecordSource:
    """One split of one dataset: ``view(i, fields)`` -> the parallel view with audio tokens.

    Audio tokens come from ``tokens_dir/<alias>/<split>/<lang>`` (a complete
    :class:`~audiopalm_jax.audio.commands.TokenStore`) when present, else the audio
    tokenizer in ``tokenizer_dir`` encodes the waveform on the fly (slow: one compile per
    new length bucket). Picklable for grain workers: open files are reopened lazily.
    """

    def __init__(
        self,
        alias: str,
        tfds_name: str,
        split: str,
        data_dir: str,
        tokens_dir: str = "",
        tokenizer_dir: str = "",
    ):
        self.alias, self.tfds_name, self.split, self.data_dir = alias, tfds_name, split, data_dir
        self.tokens_dir, self.tokenizer_dir = tokens_dir, tokenizer_dir
        self._records = None
        self._stores: dict[str, Any] = {}
        self._tokenizer = None
        self._length = len(self.records)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_records=None, _stores={}, _tokenizer=None)
        return state

    @property
    def records(self):
        if self._records is None:
            import tensorflow_datasets as tfds

            try:
                self._records = tfds.data_source(
                    self.tfds_name, split=self.split, data_dir=self.data_dir
                )
            except Exception as e:  # TFDS raises several types for "not built"
                raise FileNotFoundError(
                    f"dataset {self.tfds_name!r} split {self.split!r} not found in "
                    f"{self.data_dir} ({type(e).__name__}: {e}); run `audiopalm prepare`"
                ) from e
        return self._records

    def __len__(self) -> int:
        return self._length

    def store(self, language: str):
        """The complete TokenStore of ``language``, or None (encode on the fly)."""
        if language not in self._stores:
            store = None
            path = tokens_path(self.tokens_dir, self.alias, self.split, language)
            if self.tokens_dir and os.path.exists(os.path.join(path, "manifest.json")):
                from audiopalm_jax.audio.commands import TokenStore

                store = TokenStore(path)
                if not store.complete or len(store) != self._length:
                    raise ValueError(
                        f"{path}: incomplete tokens ({len(store)} records for a split of "
                        f"{self._length}); rerun `audiopalm prepare`"
                    )
            self._stores[language] = store
        return self._stores[language]

    def _encode(self, wave: np.ndarray) -> np.ndarray:
        if self._tokenizer is None:
            if not self.tokenizer_dir:
                raise FileNotFoundError(
                    f"{self.alias}/{self.split}: no audio tokens under {self.tokens_dir!r} and "
                    "no data.audio_tokenizer_dir to encode on the fly; run `audiopalm prepare`"
                )
            from audiopalm_jax.audio import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_dir)
        return self._tokenizer.encode_one(np.asarray(wave), 16_000)

    def view(self, index: int, fields: set[tuple[str, str]]) -> dict[str, Any]:
        """The parallel view of record ``index`` with only ``fields`` (lang, modality)."""
        view = to_parallel(self.tfds_name, self.records[index])
        utts: dict[str, dict[str, Any]] = {}
        for lang, modality in fields:
            utt = view["utterances"].get(lang) or {}
            value = utt.get(modality)
            if modality == "audio" and value is not None:
                store = self.store(lang)
                if store is None:
                    value = self._encode(value)
                elif store.status(index) == 1:
                    value = store[index]
                else:
                    value = None  # no audio, or invalid audio skipped at tokenization
            utts.setdefault(lang, {"text": None, "audio": None})[modality] = value
        return {"id": view["id"], "voice": view["voice"], "utterances": utts}


class FormatFn:
    """Record index -> formatted example of one mixture entry (runs in grain workers)."""

    def __init__(
        self,
        source: RecordSource,
        entry: MixtureEntry,
        vocab: JointVocab,
        fmt: str,
        seed: int = 0,
        positions: PositionScheme = SEQUENTIAL,
    ):
        if fmt not in FORMATS:
            raise ValueError(f"data.format={fmt!r}; allowed: {FORMATS}")
        self.source, self.entry, self.vocab, self.fmt, self.seed = source, entry, vocab, fmt, seed
        self.fields = entry.task.fields()
        self.positions = positions

    def __call__(self, index: int) -> tasks.Example:
        view = self.source.view(int(index), self.fields)
        if self.fmt == "speechgpt":
            ex = speechgpt.format_speechgpt(self.vocab, self.entry.task, view, self.seed)
        else:
            ex = tasks.format_task(self.vocab, self.entry.task, view)
        if not self.positions.sequential and len(ex["ids"]):
            ids = ex["ids"]
            ex["positions"] = self.positions.segment(
                ids,
                self.vocab.is_audio(ids),
                self.vocab.sep_id,
                int(ex.get("source_start", 0)),
                translated_outputs(self.entry.task.tasks),
            )
        return ex


def check_markup(vocab: JointVocab, entries: list[MixtureEntry], fmt: str) -> None:
    """Raises if the text tokenizer cannot spell the format's fixed strings (a char vocab
    without ``<>`` would silently turn ``<sosp>`` into unknown tokens)."""
    from audiopalm_jax.vocab import task_tag

    fixed = {
        task_tag(list(e.task.tasks), e.task.source_language, e.task.target_language)
        for e in entries
    }
    if fmt == "speechgpt":
        fixed |= {speechgpt.SOSP, speechgpt.EOSP, speechgpt.EOH, speechgpt.EOA}
        fixed |= {speechgpt.HUMAN, speechgpt.ASSISTANT, "[tq] [ta] [ua]"}
    for text in sorted(fixed):
        if vocab.decode_text(vocab.encode_text(text)) != text:
            raise ValueError(
                f"the text tokenizer cannot encode {text!r} (unknown characters?); for "
                "vocab.text_tokenizer='char' add them to vocab.chars"
            )


# -- the iterator ---------------------------------------------------------------------------
def _seed(*parts: Any) -> int:
    words = [zlib.crc32(str(p).encode()) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import grain

        opts = grain.sharding.ShardByJaxProcess()
        return opts.shard_index, opts.shard_count
    return int(process_index), int(process_count)


def shard_records(num_records: int, process_index: int, process_count: int) -> np.ndarray:
    """This process's record indices of a split: strided, disjoint, covering all records."""
    if num_records < process_count:
        raise ValueError(f"{num_records} records cannot be split over {process_count} processes")
    return np.arange(process_index, num_records, process_count, dtype=np.int64)


class EpochOrder:
    """Stream position -> record index: the shard in a fresh permutation every epoch.

    Replaces ``MapDataset.shuffle``, whose index_shuffle costs milliseconds per element
    on small datasets; a cached numpy permutation per epoch costs microseconds.
    """

    def __init__(self, records: np.ndarray, seed: int, shuffle: bool):
        self.records, self.seed, self.shuffle = records, seed, shuffle
        self._cache: dict[int, np.ndarray] = {}

    def __getstate__(self):
        return {**self.__dict__, "_cache": {}}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if len(self._cache) >= 2:  # readers are at most one epoch apart
                self._cache.pop(min(self._cache))
            rng = np.random.default_rng([self.seed, epoch])
            self._cache[epoch] = self.records[rng.permutation(len(self.records))]
        return self._cache[epoch]

    def __call__(self, position: int) -> int:
        epoch, k = divmod(int(position), len(self.records))
        if not self.shuffle:
            return int(self.records[k])
        return int(self._order(epoch)[k])


def make_examples(
    config: ConfigDict,
    vocab: JointVocab,
    split: str = "train",
    *,
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
    shuffle: bool | None = None,
    workdir: str | None = None,
):
    """The mixed, formatted example stream of this process (a grain ``MapDataset``)."""
    import grain

    d = config.data
    fmt = d.get("format", "audiopalm")
    # Eval splits are shuffled too (with a fixed seed): a few eval batches then cover many
    # sentences per task instead of every task's first records; still deterministic.
    shuffle = bool(d.get("shuffle", True)) if shuffle is None else shuffle
    tokens_dir, tok_dir = prepared_dirs(d, workdir)
    root = data_dir(config)
    scheme = PositionScheme.of(config.model)
    sources: dict[str, RecordSource] = {}

    def mixed(entries: list[MixtureEntry], stage: str):
        check_markup(vocab, entries, fmt)
        streams, weights = [], []
        for i, entry in enumerate(entries):
            if entry.dataset not in sources:
                name, _ = dataset_info(config, entry.dataset)
                ds_split = dataset_split(config, entry.dataset, split)
                sources[entry.dataset] = RecordSource(
                    entry.dataset, name, ds_split, root, tokens_dir, tok_dir
                )
            source = sources[entry.dataset]
            records = shard_records(len(source), process_index, process_count)
            length = sys.maxsize if num_epochs is None else num_epochs * len(records)
            order = EpochOrder(records, _seed(config.seed, split, i, stage + entry.name), shuffle)
            ds = grain.MapDataset.range(length).map(order)
            format_fn = FormatFn(source, entry, vocab, fmt, config.seed, scheme)
            streams.append(ds.map(format_fn))
            weights.append(entry.weight)
        return streams[0] if len(streams) == 1 else grain.MapDataset.mix(streams, weights)

    main = mixed(mixture(config), "")
    first, n = warmup(config)
    if split != "train" or not n:
        return main
    # The stream's positions: [0, n) from the warm-up mixture, then the main mixture from
    # its start. A position is all an iterator checkpoint stores, so resuming works as is.
    length = sys.maxsize if num_epochs is None else n + len(main)
    return grain.MapDataset.range(length).map(Stages(mixed(first, "warmup:"), main, n))


class Stages:
    """Position -> example: the first ``n`` from ``first``, the rest from ``then``."""

    def __init__(self, first, then, n: int):
        self.first, self.then, self.n = first, then, n

    def __call__(self, position: int):
        return self.first[position] if position < self.n else self.then[position - self.n]


def fingerprint(config: ConfigDict, split: str, process_index: int, process_count: int) -> str:
    """Identifies what an iterator state refers to (warned about on mismatched restore)."""
    d = config.data.to_dict() if hasattr(config.data, "to_dict") else dict(config.data)
    keys = (
        "mixture",
        "warmup_mixture",
        "warmup_examples",
        "datasets",
        "format",
        "seq_len",
        "batch_size",
        "overlong",
        "packing_bins",
    )
    blob = json.dumps(
        [{k: d.get(k) for k in keys}, config.seed, split, process_index, process_count],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_iterator(
    config: ConfigDict,
    vocab: JointVocab,
    split: str = "train",
    *,
    process_index: int | None = None,
    process_count: int | None = None,
    num_epochs: int | None = None,
    workdir: str | None = None,
) -> PackedIterator:
    """This process's checkpointable iterator of packed local batches for ``split``.

    ``data.batch_size`` is global; each of the ``process_count`` processes gets its own
    records and ``batch_size / process_count`` rows. Every split is shuffled with a seed
    from ``config.seed`` and repeated (``num_epochs=None``): a fresh validation iterator
    yields the same batches every time. ``workdir`` locates tokens and the audio tokenizer
    when ``data.tokens_dir`` / ``data.audio_tokenizer_dir`` are unset.
    """
    d = config.data
    pi, pc = _process(process_index, process_count)
    if d.batch_size % pc:
        raise ValueError(f"data.batch_size={d.batch_size} is not divisible by {pc} processes")
    examples = make_examples(
        config,
        vocab,
        split,
        process_index=pi,
        process_count=pc,
        num_epochs=num_epochs,
        workdir=workdir,
    )
    cfg = PackingConfig(
        seq_len=int(d.seq_len),
        batch_size=int(d.batch_size) // pc,
        num_bins=int(d.get("packing_bins", 16)),
        overlong=d.get("overlong", "drop"),
        prompt_loss_weight=float(d.get("prompt_loss_weight", 0.0)),
        prefix_lm=bool(d.get("prefix_lm", True)),
    )
    train = split == "train"
    return PackedIterator(
        examples,
        cfg,
        num_workers=int(d.get("num_workers", 0)) if train else int(d.get("eval_num_workers", 0)),
        read_threads=int(d.get("read_threads", 2)),
        name=f"{split} data",
        fingerprint=fingerprint(config, split, pi, pc),
        log_every=int(d.get("log_every_batches", 1000)) if train else 0,
    )
