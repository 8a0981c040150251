"""Task formatting: AudioPaLM layouts decode back, SpeechGPT templates, mixture specs."""

import numpy as np
import pytest

from audiopalm_jax.data import speechgpt, tasks
from audiopalm_jax.data.pipeline import MixtureEntry
from audiopalm_jax.vocab import JointVocab, build_char_tokenizer, load_text_tokenizer

CHARS = " !'(),-.:;?[]<>|0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéèàç"
FR_AUDIO = np.array([1, 2, 3, 4, 5])
EN_AUDIO = np.array([7, 8, 9])
EXAMPLE = {
    "id": "rec-1",
    "voice": "m1",
    "utterances": {
        "fr": {"text": "Le chat dort.", "audio": FR_AUDIO},
        "en": {"text": "The cat sleeps.", "audio": EN_AUDIO},
        "de": {"text": "Die Katze schläft.", "audio": None},  # no German audio
    },
}


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    path = build_char_tokenizer(list(CHARS), str(tmp_path_factory.mktemp("char")))
    return JointVocab(load_text_tokenizer(path), num_audio_tokens=16)


def _split(vocab, example):
    p = int(example["prompt_len"])
    return example["ids"][:p], example["ids"][p:]


CASES = [
    ("ASR", "fr", "[ASR French] ", FR_AUDIO, ["Le chat dort."]),
    ("AST", "fr-en", "[AST French English] ", FR_AUDIO, ["The cat sleeps."]),
    ("S2ST", "fr-en", "[S2ST French English] ", FR_AUDIO, [EN_AUDIO]),
    ("TTS", "en", "[TTS English] The cat sleeps.", None, [EN_AUDIO]),
    ("MT", "en-fr", "[MT English French] The cat sleeps.", None, ["Le chat dort."]),
    (
        "ASR+AST+S2ST",
        "fr-en",
        "[ASR AST S2ST French English] ",
        FR_AUDIO,
        ["Le chat dort.", "The cat sleeps.", EN_AUDIO],
    ),
]


@pytest.mark.parametrize("task,langs,prompt_text,prompt_audio,outputs", CASES)
def test_audiopalm_tasks_decode_back(vocab, task, langs, prompt_text, prompt_audio, outputs):
    spec = tasks.TaskSpec.parse(task, langs)
    ex = tasks.format_task(vocab, spec, EXAMPLE)
    assert ex["ids"].dtype == np.int32
    prompt, target = _split(vocab, ex)
    assert prompt[-1] == vocab.sep_id and target[-1] == vocab.eos_id
    spans = vocab.decode(prompt[:-1])
    assert spans[0] == prompt_text
    if prompt_audio is not None:
        np.testing.assert_array_equal(spans[1], prompt_audio)
    else:
        assert len(spans) == 1
    got = tasks.parse_target(vocab, target)
    assert len(got) == len(outputs)
    for g, want in zip(got, outputs, strict=True):
        if isinstance(want, str):
            assert g == want
        else:
            np.testing.assert_array_equal(g, want)
    # The layout is exactly the vocab's: prompt_ids + target_ids.
    np.testing.assert_array_equal(target, vocab.target_ids(outputs))


def test_missing_fields_give_empty_example(vocab):
    spec = tasks.TaskSpec.parse("S2ST", "fr-de")  # German has no audio
    assert not tasks.has_fields(EXAMPLE, spec)
    assert len(tasks.format_task(vocab, spec, EXAMPLE)["ids"]) == 0
    assert len(tasks.format_task(vocab, tasks.TaskSpec.parse("MT", "fr-de"), EXAMPLE)["ids"])
    assert len(tasks.format_task(vocab, tasks.TaskSpec.parse("ASR", "es"), EXAMPLE)["ids"]) == 0


@pytest.mark.parametrize(
    "task,langs,msg",
    [
        ("ASR+TTS", "en", "different modalities"),
        ("AST", "fr", "need a target language"),
        ("ASR", "fr-en", "only the source language"),
        ("FOO", "en", "unknown task"),
        ("MT", "fr-fr", "both"),
        ("ASR", "xx", "unknown language"),
    ],
)
def test_task_spec_validation(task, langs, msg):
    with pytest.raises(ValueError, match=msg):
        tasks.TaskSpec.parse(task, langs)


def test_task_spec_fields_and_outputs():
    spec = tasks.TaskSpec.parse("asr+ast+s2st", "fr-en")
    assert spec.tasks == ("ASR", "AST", "S2ST") and spec.name == "ASR+AST+S2ST:fr-en"
    assert spec.outputs() == [("text", "fr"), ("text", "en"), ("audio", "en")]
    assert spec.fields() == {("fr", "audio"), ("fr", "text"), ("en", "text"), ("en", "audio")}


def test_speechgpt_templates_render(vocab):
    spec = tasks.TaskSpec.parse("ASR", "fr")
    prompt, answer = speechgpt.render(spec, EXAMPLE)
    text = speechgpt.spans_to_text(prompt)
    instruction = text[len("[Human]: ") : text.index(" This is input: ")]
    assert instruction in speechgpt.INSTRUCTIONS["ASR"]
    assert text == (
        f"[Human]: {instruction} This is input: <sosp><1><2><3><4><5><eosp> <eoh>. [SpeechGPT]: "
    )
    assert speechgpt.spans_to_text(answer) == "Le chat dort.<eoa>"
    # TTS: text in, speech out.
    prompt, answer = speechgpt.render(tasks.TaskSpec.parse("TTS", "en"), EXAMPLE)
    assert speechgpt.spans_to_text(prompt).endswith(
        "This is input: The cat sleeps. <eoh>. [SpeechGPT]: "
    )
    assert speechgpt.spans_to_text(answer) == "<sosp><7><8><9><eosp><eoa>"
    # The template choice is stable (crc32, not Python's salted hash) and seed-dependent.
    choices = {
        speechgpt.spans_to_text(speechgpt.render(spec, EXAMPLE, seed=s)[0]) for s in range(20)
    }
    assert len(choices) > 1
    assert speechgpt.render(spec, EXAMPLE, seed=3) == speechgpt.render(spec, EXAMPLE, seed=3)


def test_speechgpt_chain_of_modality(vocab):
    spec = tasks.TaskSpec.parse("ASR+AST+S2ST", "fr-en")
    prompt, answer = speechgpt.render(spec, EXAMPLE)
    assert speechgpt.spans_to_text(prompt).startswith("[Human]: ")
    assert "English" in speechgpt.spans_to_text(prompt)
    assert speechgpt.spans_to_text(answer) == (
        "[tq] Le chat dort.; [ta] The cat sleeps.; [ua] <sosp><7><8><9><eosp><eoa>"
    )
    with pytest.raises(ValueError, match="chain-of-modality"):
        speechgpt.render(tasks.TaskSpec.parse("AST+S2ST", "fr-en"), EXAMPLE)


def test_speechgpt_ids_loss_on_answer_only(vocab):
    spec = tasks.TaskSpec.parse("S2ST", "fr-en")
    ex = speechgpt.format_speechgpt(vocab, spec, EXAMPLE)
    p = int(ex["prompt_len"])
    prompt_spans = vocab.decode(ex["ids"][:p])
    assert prompt_spans[0].startswith("[Human]: ") and prompt_spans[-1].endswith("[SpeechGPT]: ")
    np.testing.assert_array_equal(prompt_spans[1], FR_AUDIO)
    answer = speechgpt.parse_answer(vocab, ex["ids"][p:])
    assert answer[0] == "<sosp>" and answer[2] == "<eosp><eoa>"
    np.testing.assert_array_equal(answer[1], EN_AUDIO)
    assert ex["ids"][-1] == vocab.eos_id


def test_mixture_entry_parse():
    e = MixtureEntry.parse("demo_speech:ASR+AST:fr-en:0.5")
    assert e.dataset == "demo_speech" and e.weight == 0.5
    assert e.task == tasks.TaskSpec(("ASR", "AST"), "fr", "en")
    assert MixtureEntry.parse("d:TTS:en").weight == 1.0
    for bad in ("d:ASR", "d:ASR:en:0", "d:ASR:en:1:2"):
        with pytest.raises(ValueError):
            MixtureEntry.parse(bad)
