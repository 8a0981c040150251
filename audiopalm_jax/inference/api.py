"""``AudioPaLM``: a trained checkpoint with its vocabulary and audio tokenizer.

    model = AudioPaLM.from_pretrained("runs/demo")
    model.transcribe(audio, language="English")                 # ASR  -> str
    model.translate(audio, source="French", target="English")   # AST  -> str
    model.translate_speech(audio, source="fr", target="en")     # S2ST -> waveform
    model.synthesize("bonjour", language="French")              # TTS  -> waveform
    model.translate_text("hello", source="en", target="fr")     # MT   -> str
    model.generate(prompt, task="ASR+AST", source_language="fr", target_language="en")

Lists in, lists out: a batch decodes as one jitted call per ``batch_size`` rows (rows
sorted by length; batch, prompt and output lengths rounded up to buckets to limit
recompiles). Waveforms come back as float32 at ``audio_tokenizer.sample_rate``. When the
tokenizer cannot synthesize, S2ST / TTS warn and return :class:`SpeechTokens`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from audiopalm_jax import sharding
from audiopalm_jax.inference import decoding, inputs
from audiopalm_jax.inference.cached_forward import for_decoding
from audiopalm_jax.inference.constraints import TokenSpace, output_modalities, structure_arrays
from audiopalm_jax.inference.inputs import Generation, SpeechTokens
from audiopalm_jax.model import ModelConfig
from audiopalm_jax.positions import PositionScheme, translated_outputs
from audiopalm_jax.vocab import TASK_SOURCE, JointVocab

PROMPT_BUCKET = 64  # prompt lengths round up to this
NEW_TOKENS_BUCKET = 64  # and max_new_tokens too
MAX_NEW_TOKENS = 4096


class AudioPaLM:
    """Decoder params (in their shardings) + vocabulary + optional audio tokenizer."""

    def __init__(
        self,
        model_config: ModelConfig,
        params: dict,
        vocab: JointVocab,
        audio_tokenizer: Any | None = None,
        *,
        mesh: jax.sharding.Mesh | None = None,
        rules: Sequence | None = None,
        train_config: dict | None = None,
        batch_size: int = 16,
        step: int | None = None,
        acoustic: Any | None = None,
    ):
        if model_config.vocab_size != vocab.size:
            raise ValueError(
                f"model vocab_size {model_config.vocab_size} != vocabulary size {vocab.size}"
            )
        self.model_config, self.graphdef, self.params = for_decoding(model_config, params)
        self.vocab = vocab
        self.audio_tokenizer = audio_tokenizer
        self.acoustic = acoustic  # an AcousticStage: units + a voice prompt -> speech
        self.mesh = mesh
        self.rules = sharding.normalize_rules(rules or sharding.DEFAULT_RULES)
        self.train_config = train_config or {}
        self.batch_size = int(batch_size)
        self.step = step
        self.space = TokenSpace.from_vocab(vocab)
        self.directions = inputs.trained_directions(self.train_config)

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str,
        *,
        step: int | None = None,
        audio_tokenizer: Any | str | None = None,
        mesh_config: dict | None = None,
        batch_size: int = 16,
        acoustic: Any | str | None = None,
    ) -> AudioPaLM:
        """Loads a workdir (``path/checkpoints``) or a checkpoint directory.

        Only the parameters are read (no optimizer state), straight into their shardings
        on the training config's mesh (or ``mesh_config``; a mesh that does not fit the
        local devices falls back to data parallelism). The audio tokenizer is the one given
        (an object or a directory), else ``<workdir>/audio_tokenizer``, else the training
        config's ``data.audio_tokenizer_dir``. The acoustic stage (speech output in a given
        voice) is ``acoustic`` (an ``AcousticStage`` or a directory), else
        ``<workdir>/acoustic`` when the main job trained one; without it speech output
        comes from the tokenizer's own decoder, in no particular voice.
        """
        from audiopalm_jax.acoustic.stage import AcousticStage, is_saved_stage
        from audiopalm_jax.audio import is_saved_tokenizer, load_tokenizer
        from audiopalm_jax.data.pipeline import TOKENIZER_DIR
        from audiopalm_jax.inference.loading import load_checkpoint

        loaded = load_checkpoint(path, step=step, mesh_config=mesh_config)
        tok = audio_tokenizer
        if tok is None:
            # The workdir's own copy first: the configured path is absolute and goes stale
            # when a workdir is moved.
            configured = loaded.config.get("data", {}).get("audio_tokenizer_dir", "")
            found = [
                d
                for d in (os.path.join(loaded.workdir, TOKENIZER_DIR), configured)
                if d and is_saved_tokenizer(d)
            ]
            tok = found[0] if found else None
        if isinstance(tok, str):  # load_tokenizer names a directory that holds none
            tok = load_tokenizer(tok)
        if acoustic is None and is_saved_stage(os.path.join(loaded.workdir, "acoustic")):
            acoustic = os.path.join(loaded.workdir, "acoustic")
        if isinstance(acoustic, str | os.PathLike):
            acoustic = AcousticStage.load(os.fspath(acoustic))
        if acoustic is not None and tok is not None and acoustic.cfg.num_tokens != tok.num_tokens:
            raise ValueError(
                f"the acoustic stage reads {acoustic.cfg.num_tokens} audio tokens but the "
                f"audio tokenizer has {tok.num_tokens}; pass the matching pair"
            )
        return cls(
            loaded.model_config,
            loaded.params,
            loaded.vocab,
            tok,
            mesh=loaded.mesh,
            rules=loaded.rules,
            train_config=loaded.config,
            batch_size=batch_size,
            step=loaded.step,
            acoustic=acoustic,
        )

    # -- what the model knows -------------------------------------------------------------
    def languages(self) -> list[str]:
        """Languages of the training mixture (all known languages if it is unknown)."""
        if self.directions:
            return inputs.languages_of(self.directions)
        return sorted(inputs.LANGUAGE_NAMES)

    def _direction(
        self, tasks: tuple[str, ...], source: str, target: str | None
    ) -> tuple[str, str | None]:
        """Validated (source code, target code or None) for ``tasks``."""
        trained = inputs.languages_of(self.directions) if self.directions else None
        src = inputs.language_code(source, trained)
        tgt = None
        if inputs.needs_target(tasks):
            if target is None:
                raise ValueError(f"task {'+'.join(tasks)} needs a target language")
            tgt = inputs.language_code(target, trained)
        if self.directions:
            for t in tasks:
                d = f"{src}-{tgt}" if inputs.needs_target([t]) else src
                if d not in self.directions.get(t, set()):
                    known = "; ".join(
                        f"{k}: {', '.join(sorted(v))}" for k, v in sorted(self.directions.items())
                    )
                    raise ValueError(f"the model was not trained on {t} {d}; trained: {known}")
        return src, tgt

    # -- audio ----------------------------------------------------------------------------
    def _tokenizer(self):
        if self.audio_tokenizer is None:
            raise ValueError(
                "this model has no audio tokenizer: pass audio_tokenizer= to from_pretrained, "
                "or audio as SpeechTokens"
            )
        return self.audio_tokenizer

    def encode_audio(self, audio: Any, sample_rate: int | None = None) -> list[np.ndarray]:
        """Audio input(s) -> audio-token rows (one tokenizer call for the batch)."""
        items, _ = inputs.audio_batch(audio, sample_rate)
        out: list[np.ndarray | None] = [None] * len(items)
        waves, rates, where = [], [], []
        for i, item in enumerate(items):
            if isinstance(item, SpeechTokens):
                out[i] = np.asarray(item.tokens, np.int32)
                continue
            if isinstance(item, str):
                from audiopalm_jax.audio import load_audio

                item = load_audio(item)
            waves.append(np.asarray(item[0]))
            rates.append(int(item[1]))
            where.append(i)
        if waves:
            tokens, lengths = self._tokenizer().encode(waves, rates)
            for i, row, n in zip(where, tokens, lengths, strict=True):
                out[i] = np.asarray(row[: int(n)], np.int32)
        return out  # type: ignore[return-value]

    def decode_audio(
        self, rows: list[np.ndarray], voices: Sequence[Any | None] | None = None
    ) -> list[np.ndarray | SpeechTokens]:
        """Audio-token rows -> waveforms, or SpeechTokens (with a warning) if it cannot.

        With an acoustic stage each row is spoken in its voice (``voices``: one prompt per
        row, None for the stage's default voice); else by the tokenizer's decoder."""
        if self.acoustic is not None:
            waves = self.acoustic.synthesize([np.asarray(r, np.int32) for r in rows], voices)
            return list(waves)
        tok = self.audio_tokenizer
        if tok is None or not getattr(tok, "can_decode", False):
            name = f"{type(tok).__name__} cannot synthesize" if tok else "no audio tokenizer"
            note = f"{name}: returning audio tokens (SpeechTokens), not a waveform"
            warnings.warn(note, stacklevel=3)
            return [SpeechTokens(np.asarray(r, np.int32), note) for r in rows]
        out: list[np.ndarray | SpeechTokens] = [np.zeros((0,), np.float32)] * len(rows)
        keep = [i for i, r in enumerate(rows) if len(r)]  # empty outputs stay empty audio
        if keep:
            width = max(len(rows[i]) for i in keep)
            tokens = np.zeros((len(keep), width), np.int32)
            for j, i in enumerate(keep):
                tokens[j, : len(rows[i])] = rows[i]
            lengths = np.asarray([len(rows[i]) for i in keep], np.int32)
            for i, wave in zip(keep, tok.decode(tokens, lengths), strict=True):
                out[i] = np.asarray(wave, np.float32)
        return out

    def _voices(
        self, voice: Any, n: int, sample_rate: int | None, lenient: bool = False
    ) -> list[Any | None]:
        """``voice=`` (one for all, or a list of one per input) -> validated prompts;
        ``lenient``: an unusable one becomes None (the default voice) instead of an error."""
        from audiopalm_jax.acoustic.stage import check_voice

        if voice is None:
            return [None] * n
        many = isinstance(voice, list)
        voices = list(voice) if many else [voice] * n
        if len(voices) != n:
            raise ValueError(f"voice= has {len(voices)} entries for {n} inputs; give one or {n}")
        rate = int(getattr(self.audio_tokenizer, "sample_rate", 16_000))
        out = []
        for i, v in enumerate(voices):
            if isinstance(v, np.ndarray) and sample_rate is not None:
                v = (v, sample_rate)
            try:
                out.append(None if v is None else (check_voice(v, rate, f"voice {i}"), rate))
            except ValueError:
                if not lenient:
                    raise
                out.append(None)
        return out

    # -- decoding -------------------------------------------------------------------------
    def _max_new(self, tasks: tuple[str, ...], source: str | np.ndarray) -> int:
        """A generous output budget from the source length (rows stop at eos anyway)."""
        frame_rate = float(getattr(self.audio_tokenizer, "frame_rate", 50.0))
        total = 0
        for t in tasks:
            if isinstance(source, str):
                chars = len(source)
                # ~15 characters per second of speech; 2x margin for slow voices.
                total += int(chars / 15 * frame_rate * 2) + 32 if t == "TTS" else 2 * chars + 16
            else:
                n = len(source)
                # Text: ~20 characters per second of speech at most, with a 1.5x margin.
                text = int(1.5 * n * max(1.0, 20.0 / frame_rate)) + 16
                total += 2 * n + 32 if t == "S2ST" else text
        return min(total + len(tasks), MAX_NEW_TOKENS)

    def decode_prompts(
        self,
        prompts: list[np.ndarray],
        structures: list[tuple[str, ...]],
        limits: list[int],
        sampling: decoding.SamplingConfig | str | dict | None = None,
        source_starts: list[int] | None = None,
        translated: list[tuple[bool, ...]] | None = None,
    ) -> list[Generation]:
        """Batched decoding of ready-made prompts; ``structures`` are output modalities,
        ``source_starts`` where each prompt's source begins (its task tag's length; 0),
        ``translated`` which outputs are in another language than the source
        (:func:`~audiopalm_jax.positions.translated_outputs`; none)."""
        source_starts = source_starts or [0] * len(prompts)
        translated = translated or [()] * len(prompts)
        s = decoding.SamplingConfig.parse(sampling)
        order = np.argsort([len(p) for p in prompts], kind="stable")  # similar lengths batch
        results: list[Generation | None] = [None] * len(prompts)
        width = max(len(s_) for s_ in structures) or 1
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            rows = inputs.batch_bucket(len(idx), self.batch_size)
            # Pad the batch with copies of its first row; their outputs are dropped.
            take = list(idx) + [idx[0]] * (rows - len(idx))
            plen = inputs.bucket(max(len(prompts[i]) for i in idx), PROMPT_BUCKET)
            tokens, lengths = decoding.left_pad([prompts[i] for i in take], plen)
            codes, counts = structure_arrays([structures[i] for i in take], width)
            lim = np.asarray([limits[i] for i in take], np.int32)
            n = inputs.bucket(int(lim.max()), NEW_TOKENS_BUCKET)
            with self._context():
                out = decoding.generate(
                    self.graphdef,
                    self.params,
                    self.space,
                    tokens,
                    lengths,
                    max_new_tokens=n,
                    modalities=codes,
                    num_phases=counts,
                    limits=lim,
                    sampling=s,
                    scheme=PositionScheme.of(self.model_config),
                    source_starts=np.asarray([source_starts[i] for i in take], np.int32),
                    translated=[translated[i] for i in take],
                )
            for j, i in enumerate(idx):
                ids = out.tokens[j, : int(out.lengths[j])]
                finished = bool(len(ids)) and int(ids[-1]) == self.vocab.eos_id
                results[i] = Generation(
                    ids, self.vocab.split_target(ids), float(out.scores[j]), finished
                )
        return results  # type: ignore[return-value]

    def _context(self):
        stack = contextlib.ExitStack()
        if self.mesh is not None:
            stack.enter_context(jax.set_mesh(self.mesh))
            stack.enter_context(sharding.axis_rules(self.rules))
        return stack

    def generate(
        self,
        prompt: Any,
        *,
        task: str | Sequence[str] | None = None,
        source_language: str | None = None,
        target_language: str | None = None,
        max_new_tokens: int | None = None,
        sampling: decoding.SamplingConfig | str | dict | None = None,
        sample_rate: int | None = None,
    ) -> Generation | list[Generation]:
        """Low-level generation.

        Without ``task``: ``prompt`` is prompt token ids (1-D int array, or a list of
        them), decoded unconstrained (any text/audio id, sep, eos). With ``task`` (e.g.
        ``"ASR+AST+S2ST"``): ``prompt`` is the source (text, or audio input) and decoding
        follows the task's output structure. ``sampling``: ``"greedy"`` (default),
        ``"beam"``, or a :class:`~audiopalm_jax.inference.decoding.SamplingConfig` / dict.
        """
        if task is None:
            single = isinstance(prompt, np.ndarray) and prompt.ndim == 1
            rows = [np.asarray(p, np.int32) for p in ([prompt] if single else prompt)]
            structures = [()] * len(rows)
            limits = [max_new_tokens or 256] * len(rows)
            # Raw prompts: with aligned positions every output starts at the prompt's start.
            starts, translated = None, None
        else:
            tasks = inputs.parse_tasks(task)
            if source_language is None:
                raise ValueError("generate(task=...) needs source_language")
            src, tgt = self._direction(tasks, source_language, target_language)
            if TASK_SOURCE[tasks[0]] == "text":
                sources, single = inputs.text_batch(prompt)
            else:
                sources = self.encode_audio(prompt, sample_rate)
                single = inputs.is_audio_item(prompt)
            rows = [self.vocab.prompt_ids(list(tasks), src, tgt, s) for s in sources]
            structures = [output_modalities(tasks)] * len(rows)
            limits = [max_new_tokens or self._max_new(tasks, s) for s in sources]
            starts = [len(self.vocab.tag_ids(list(tasks), src, tgt))] * len(rows)
            translated = [translated_outputs(tasks)] * len(rows)
        out = self.decode_prompts(rows, structures, limits, sampling, starts, translated)
        return out[0] if single else out

    def _run(self, tasks, source, src, tgt, sampling, max_new_tokens, sample_rate=None):
        """(outputs per row [list of outputs], single) for one task on a batch of sources."""
        gens = self.generate(
            source,
            task=tasks,
            source_language=src,
            target_language=tgt,
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            sample_rate=sample_rate,
        )
        single = isinstance(gens, Generation)
        return [g.outputs for g in ([gens] if single else gens)], single

    @staticmethod
    def _text(outputs: list[str | np.ndarray]) -> str:
        first = outputs[0] if outputs else ""
        return first if isinstance(first, str) else ""

    def _audio(self, outputs: list[str | np.ndarray]) -> np.ndarray:
        first = outputs[0] if outputs else np.zeros((0,), np.int32)
        return first if isinstance(first, np.ndarray) else np.zeros((0,), np.int32)

    # -- tasks ----------------------------------------------------------------------------
    # Each takes one input (returns one result) or a list (returns a list). ``sampling``
    # and ``max_new_tokens`` are as in :meth:`generate`.
    def transcribe(
        self, audio, language: str, *, sample_rate=None, sampling=None, max_new_tokens=None
    ):
        """ASR: speech -> text in ``language`` (str)."""
        outs, single = self._run(
            ("ASR",), audio, language, None, sampling, max_new_tokens, sample_rate
        )
        texts = [self._text(o) for o in outs]
        return texts[0] if single else texts

    def translate(
        self,
        audio,
        source: str,
        target: str,
        *,
        sample_rate=None,
        sampling=None,
        max_new_tokens=None,
    ):
        """AST: speech in ``source`` -> text in ``target`` (str)."""
        outs, single = self._run(
            ("AST",), audio, source, target, sampling, max_new_tokens, sample_rate
        )
        texts = [self._text(o) for o in outs]
        return texts[0] if single else texts

    def translate_speech(
        self,
        audio,
        source: str,
        target: str,
        *,
        voice=None,
        sample_rate=None,
        sampling=None,
        max_new_tokens=None,
    ):
        """S2ST: speech -> speech: a float32 waveform at ``audio_tokenizer.sample_rate``, or
        :class:`SpeechTokens` (with a warning) when nothing can synthesize.

        ``voice``: who speaks the translation; default: the source's own speaker (its
        first 3 s are the acoustic stage's prompt). A path, an array (at
        ``sample_rate``), ``(array, rate)``, or a list of one per input."""
        from audiopalm_jax.audio import load_audio

        items, single = inputs.audio_batch(audio, sample_rate)
        # Files are read once, for the prompt and the voice both.
        items = [load_audio(x) if isinstance(x, str) else x for x in items]
        if voice is None:  # each source is its own voice; too short / SpeechTokens: default
            own = [None if isinstance(x, SpeechTokens) else x for x in items]
            voices = self._voices(own, len(items), None, lenient=True)
        else:
            voices = self._voices(voice, len(items), sample_rate)
        outs, _ = self._run(
            ("S2ST",), items[0] if single else items, source, target, sampling, max_new_tokens
        )
        waves = self.decode_audio([self._audio(o) for o in outs], voices)
        return waves[0] if single else waves

    def synthesize(
        self,
        text,
        language: str,
        *,
        voice=None,
        sample_rate=None,
        sampling=None,
        max_new_tokens=None,
    ):
        """TTS: text -> speech in ``language`` (waveform or SpeechTokens, as S2ST).

        ``voice``: a recording of the speaker to imitate (as in :meth:`translate_speech`;
        at least 0.5 s, its first 3 s used); default: the acoustic stage's default voice,
        a training utterance's speaker (``model.acoustic.info["default_voice"]``)."""
        voices = self._voices(voice, len(inputs.text_batch(text)[0]), sample_rate)
        outs, single = self._run(("TTS",), text, language, None, sampling, max_new_tokens)
        waves = self.decode_audio([self._audio(o) for o in outs], voices)
        return waves[0] if single else waves

    def translate_text(self, text, source: str, target: str, *, sampling=None, max_new_tokens=None):
        """MT: text in ``source`` -> text in ``target`` (str)."""
        outs, single = self._run(("MT",), text, source, target, sampling, max_new_tokens)
        texts = [self._text(o) for o in outs]
        return texts[0] if single else texts

    def __repr__(self) -> str:
        c = self.model_config
        return (
            f"AudioPaLM(d_model={c.d_model}, layers={c.num_layers}, vocab={self.vocab}, "
            f"step={self.step}, audio_tokenizer={type(self.audio_tokenizer).__name__})"
        )
