"""The joint text + audio vocabulary.

Ids ``[0, text_vocab_size)`` are the text tokenizer's; ids
``[audio_offset, audio_offset + num_audio_tokens)`` are audio tokens; the total is
padded up to a multiple of 128 so the embedding shards evenly. Padding ids are never
produced by a tokenizer and are masked out when decoding.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from typing import Protocol

import numpy as np

VOCAB_FILE = "joint_vocab.json"

# ISO 639-1 code -> the English language name used in task tags.
LANGUAGE_NAMES = {
    "en": "English",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "ru": "Russian",
    "zh": "Chinese",
    "ja": "Japanese",
    "ar": "Arabic",
    "ca": "Catalan",
    "et": "Estonian",
    "fa": "Persian",
    "id": "Indonesian",
    "lv": "Latvian",
    "mn": "Mongolian",
    "sl": "Slovenian",
    "sv": "Swedish",
    "ta": "Tamil",
    "tr": "Turkish",
    "cy": "Welsh",
}
# Default character set for `text_tokenizer = "char"`: English, French, German, Spanish.
DEFAULT_CHARS = (
    " !\"'(),-.:;?[]|0123456789"
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "àâæçéèêëîïôœùûüÿÀÂÆÇÉÈÊËÎÏÔŒÙÛÜŸäöüßÄÖÜáéíóúñ¿¡ÁÉÍÓÚÑ"
)
TASKS = ("ASR", "AST", "S2ST", "TTS", "MT")
# What each task reads and writes. Combined tasks write their outputs in tag order.
TASK_SOURCE = {"ASR": "audio", "AST": "audio", "S2ST": "audio", "TTS": "text", "MT": "text"}
TASK_OUTPUT = {"ASR": "text", "AST": "text", "S2ST": "audio", "TTS": "audio", "MT": "text"}
# Which language each output is in: the source's (ASR, TTS) or the target's.
TASK_OUTPUT_LANGUAGE = {
    "ASR": "source",
    "AST": "target",
    "S2ST": "target",
    "TTS": "source",
    "MT": "target",
}


class TextTokenizer(Protocol):
    """What JointVocab needs from a text tokenizer."""

    vocab_size: int
    pad_id: int
    eos_id: int
    bos_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def files(self) -> dict[str, bytes]: ...


class HFTextTokenizer:
    """A Hugging Face tokenizer directory, loaded with ``transformers.AutoTokenizer``."""

    kind = "hf"

    def __init__(self, path: str):
        from transformers import AutoTokenizer  # deferred: transformers import is slow

        self.path = path
        self._tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        self.vocab_size = len(self._tok)
        if self._tok.eos_token_id is None:
            raise ValueError(f"tokenizer at {path!r} has no eos token; JointVocab needs one")
        self.eos_id = int(self._tok.eos_token_id)
        pad = self._tok.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.eos_id
        bos = self._tok.bos_token_id
        self.bos_id = int(bos) if bos is not None else None

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def files(self) -> dict[str, bytes]:
        out = {}
        with tempfile.TemporaryDirectory() as tmp:
            self._tok.save_pretrained(tmp)
            for name in sorted(os.listdir(tmp)):
                with open(os.path.join(tmp, name), "rb") as f:
                    out[name] = f.read()
        return out


class SentencePieceTextTokenizer:
    """A SentencePiece ``.model`` file (PaLM, Gemma, Llama-2 style)."""

    kind = "sentencepiece"

    def __init__(self, path: str):
        import sentencepiece as spm

        self.path = path
        with open(path, "rb") as f:
            self._model = f.read()  # kept: files() must not depend on path surviving
        self._sp = spm.SentencePieceProcessor(model_proto=self._model)
        self.vocab_size = int(self._sp.get_piece_size())
        self.eos_id = int(self._sp.eos_id())
        if self.eos_id < 0:
            raise ValueError(f"SentencePiece model {path!r} has no eos id; JointVocab needs one")
        self.pad_id = int(self._sp.pad_id()) if self._sp.pad_id() >= 0 else self.eos_id
        self.bos_id = int(self._sp.bos_id()) if self._sp.bos_id() >= 0 else None

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids if 0 <= int(i) < self.vocab_size])

    def files(self) -> dict[str, bytes]:
        return {os.path.basename(self.path): self._model}


def load_text_tokenizer(path: str) -> TextTokenizer:
    """A tokenizer from a HF tokenizer directory or a SentencePiece ``.model`` file."""
    if os.path.isdir(path):
        return HFTextTokenizer(path)
    if path.endswith(".model") and os.path.isfile(path):
        return SentencePieceTextTokenizer(path)
    raise FileNotFoundError(
        f"text tokenizer {path!r}: expected a Hugging Face tokenizer directory "
        "(tokenizer.json / tokenizer_config.json) or a SentencePiece .model file"
    )


def build_char_tokenizer(texts: Sequence[str], output_dir: str) -> str:
    """Writes a character-level HF tokenizer covering ``texts`` to ``output_dir``.

    Ids 0..3 are ``<pad> </s> <s> <unk>``; characters follow in sorted order, so the
    result depends only on the set of characters.
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<s>", "<unk>"]
    chars = sorted({c for t in texts for c in t})
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        bos_token="<s>",
        unk_token="<unk>",
    )
    os.makedirs(output_dir, exist_ok=True)
    fast.save_pretrained(output_dir)
    return output_dir


def language_name(language: str) -> str:
    """'fr' or 'French' -> 'French'."""
    if language in LANGUAGE_NAMES:
        return LANGUAGE_NAMES[language]
    if language in LANGUAGE_NAMES.values():
        return language
    raise ValueError(
        f"unknown language {language!r}; known: "
        + ", ".join(f"{k} ({v})" for k, v in sorted(LANGUAGE_NAMES.items()))
    )


def task_tag(tasks: str | Sequence[str], source: str, target: str | None = None) -> str:
    """AudioPaLM's plain-text task tag, e.g. ``[ASR AST S2ST French English]``."""
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    for t in tasks:
        if t not in TASKS:
            raise ValueError(f"unknown task {t!r}; known tasks: {', '.join(TASKS)}")
    langs = [language_name(source)] + ([language_name(target)] if target else [])
    return "[" + " ".join(tasks + langs) + "]"


class JointVocab:
    """Text tokenizer ids, then ``num_audio_tokens`` audio ids, then one separator id.

    AudioPaLM's sequence layout (the separator is not published; ours is a dedicated id
    so decoding can switch modality on one token)::

        prompt = text(task tag) + text(" ") + source (text or audio ids) + <sep>
        target = output_1 [+ <sep> + output_2 ...] + <eos>
    """

    def __init__(self, text: TextTokenizer, num_audio_tokens: int, pad_to_multiple: int = 128):
        if num_audio_tokens < 0:
            raise ValueError(f"num_audio_tokens must be >= 0, got {num_audio_tokens}")
        self.text = text
        self.num_audio_tokens = int(num_audio_tokens)
        self.pad_to_multiple = int(pad_to_multiple)
        self.audio_offset = text.vocab_size
        self.sep_id = self.audio_offset + self.num_audio_tokens
        used = self.sep_id + 1
        self.size = -(-used // self.pad_to_multiple) * self.pad_to_multiple

    # -- ids ----------------------------------------------------------------------------
    @property
    def text_vocab_size(self) -> int:
        return self.text.vocab_size

    @property
    def pad_id(self) -> int:
        return self.text.pad_id

    @property
    def eos_id(self) -> int:
        return self.text.eos_id

    @property
    def bos_id(self) -> int | None:
        return self.text.bos_id

    def is_audio(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        return (ids >= self.audio_offset) & (ids < self.audio_offset + self.num_audio_tokens)

    def is_text(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        return (ids >= 0) & (ids < self.text_vocab_size)

    def audio_to_ids(self, audio_tokens) -> np.ndarray:
        tokens = np.asarray(audio_tokens, dtype=np.int64)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.num_audio_tokens):
            raise ValueError(
                f"audio tokens must lie in [0, {self.num_audio_tokens}), "
                f"got range [{tokens.min()}, {tokens.max()}]"
            )
        return (tokens + self.audio_offset).astype(np.int32)

    def ids_to_audio(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        return (ids[self.is_audio(ids)] - self.audio_offset).astype(np.int32)

    # -- mixed sequences ---------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        return self.text.encode(text)

    def decode_text(self, ids) -> str:
        """Text of ``ids``, ignoring audio and padding ids."""
        ids = np.asarray(ids)
        return self.text.decode(ids[self.is_text(ids)].tolist())

    def encode(self, spans: Sequence[str | np.ndarray]) -> np.ndarray:
        """Text spans (str) and audio-token spans (int arrays) -> one id sequence."""
        out: list[np.ndarray] = []
        for span in spans:
            if isinstance(span, str):
                out.append(np.asarray(self.encode_text(span), dtype=np.int32))
            else:
                out.append(self.audio_to_ids(span))
        return np.concatenate(out) if out else np.zeros((0,), np.int32)

    def decode(self, ids) -> list[str | np.ndarray]:
        """Splits ids into maximal text spans (decoded str) and audio spans (token arrays)."""
        ids = np.asarray(ids)
        spans: list[str | np.ndarray] = []
        audio = self.is_audio(ids)
        start = 0
        for i in range(1, len(ids) + 1):
            if i == len(ids) or audio[i] != audio[start]:
                chunk = ids[start:i]
                spans.append(
                    (chunk - self.audio_offset).astype(np.int32)
                    if audio[start]
                    else self.decode_text(chunk)
                )
                start = i
        return spans

    # -- task sequences ----------------------------------------------------------------
    def prompt_ids(
        self,
        tasks: str | Sequence[str],
        source_language: str,
        target_language: str | None,
        source: str | np.ndarray,
    ) -> np.ndarray:
        """The model's input prefix: task tag, source (text or audio tokens), separator."""
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        expected = {TASK_SOURCE[t] for t in tasks if t in TASK_SOURCE}
        got = "text" if isinstance(source, str) else "audio"
        if len(expected) > 1:
            raise ValueError(f"tasks {tasks} read different modalities {sorted(expected)}")
        if expected and got not in expected:
            raise ValueError(f"tasks {tasks} read {expected.pop()}, but the source is {got}")
        ids = [self.tag_ids(tasks, source_language, target_language), self.encode([source])]
        return np.concatenate(ids + [[self.sep_id]]).astype(np.int32)

    def tag_ids(
        self, tasks: str | Sequence[str], source_language: str, target_language: str | None
    ) -> np.ndarray:
        """The prompt's first ids: the task tag and a space (the source follows)."""
        return self.encode([task_tag(tasks, source_language, target_language) + " "])

    def target_ids(self, outputs: Sequence[str | np.ndarray]) -> np.ndarray:
        """Outputs (in task-tag order) joined by the separator, ending with eos."""
        parts: list[np.ndarray] = []
        for i, out in enumerate(outputs):
            if i:
                parts.append(np.asarray([self.sep_id], np.int32))
            parts.append(self.encode([out]))
        parts.append(np.asarray([self.eos_id], np.int32))
        return np.concatenate(parts).astype(np.int32)

    def split_target(self, ids) -> list[str | np.ndarray]:
        """Inverse of :meth:`target_ids`: stops at eos, splits at separators."""
        ids = np.asarray(ids)
        end = np.flatnonzero(ids == self.eos_id)
        ids = ids[: end[0]] if len(end) else ids
        pieces = np.split(ids, np.flatnonzero(ids == self.sep_id))
        out: list[str | np.ndarray] = []
        for i, piece in enumerate(pieces):
            piece = piece[1:] if i else piece
            audio = self.is_audio(piece)
            out.append(
                self.ids_to_audio(piece)
                if audio.any() and audio.mean() >= 0.5
                else self.decode_text(piece)
            )
        return out

    # -- persistence ---------------------------------------------------------------------
    def to_json(self) -> dict:
        files = self.text.files()
        return {
            "kind": self.text.kind,
            "num_audio_tokens": self.num_audio_tokens,
            "pad_to_multiple": self.pad_to_multiple,
            "text_vocab_size": self.text_vocab_size,
            "size": self.size,
            "files": {k: base64.b64encode(v).decode("ascii") for k, v in sorted(files.items())},
        }

    def fingerprint(self) -> str:
        """Identifies the vocabulary: tokenizer behaviour, audio size and padding."""
        d = self.to_json()
        h = hashlib.sha256()
        h.update(json.dumps({k: v for k, v in d.items() if k != "files"}, sort_keys=True).encode())
        # tokenizer_config.json holds volatile fields (paths); the vocabulary itself doesn't.
        for name, content in sorted(d["files"].items()):
            if name not in ("tokenizer_config.json", "special_tokens_map.json"):
                h.update(name.encode())
                h.update(content.encode())
        return h.hexdigest()[:16]

    @classmethod
    def from_json(cls, d: dict, cache_dir: str | None = None) -> JointVocab:
        """The vocabulary saved by :meth:`to_json`; tokenizer files go to ``cache_dir``
        (kept) or to a temporary directory removed once the tokenizer is loaded."""
        if cache_dir is None:
            with tempfile.TemporaryDirectory(prefix="audiopalm_vocab_") as tmp:
                return cls._from_json(d, tmp)
        return cls._from_json(d, cache_dir)

    @classmethod
    def _from_json(cls, d: dict, target: str) -> JointVocab:
        os.makedirs(target, exist_ok=True)
        for name, content in d["files"].items():
            with open(os.path.join(target, name), "wb") as f:
                f.write(base64.b64decode(content))
        if d["kind"] == "sentencepiece":
            (name,) = d["files"]
            text: TextTokenizer = SentencePieceTextTokenizer(os.path.join(target, name))
        else:
            text = HFTextTokenizer(target)
        vocab = cls(text, d["num_audio_tokens"], d["pad_to_multiple"])
        if vocab.size != d["size"] or vocab.text_vocab_size != d["text_vocab_size"]:
            raise ValueError(
                f"restored vocabulary has size {vocab.size} (text {vocab.text_vocab_size}), "
                f"but was saved with size {d['size']} (text {d['text_vocab_size']})"
            )
        return vocab

    def save(self, directory: str) -> str:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, VOCAB_FILE)
        with open(path, "w") as f:
            json.dump(self.to_json(), f)
        return path

    @classmethod
    def load(cls, directory: str) -> JointVocab:
        path = os.path.join(directory, VOCAB_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no {VOCAB_FILE} in {directory!r}")
        with open(path) as f:
            return cls.from_json(json.load(f), cache_dir=os.path.join(directory, "text_tokenizer"))

    def check_matches(self, other: JointVocab, where: str = "checkpoint") -> None:
        """Raises if ``other`` (e.g. the one saved in a checkpoint) is a different vocabulary."""
        if self.fingerprint() != other.fingerprint():
            raise ValueError(
                f"vocabulary mismatch with the {where}: configured vocab has size {self.size} "
                f"(text {self.text_vocab_size} + audio {self.num_audio_tokens}), the {where}'s "
                f"has size {other.size} (text {other.text_vocab_size} + audio "
                f"{other.num_audio_tokens}); fingerprints {self.fingerprint()} != "
                f"{other.fingerprint()}"
            )

    def __repr__(self) -> str:
        return (
            f"JointVocab(text={self.text_vocab_size}, audio={self.num_audio_tokens}, "
            f"size={self.size})"
        )
