"""``audiopalm VERB --config FILE [--config.key=value ...]``: thin verbs over the package.

Verbs: train, eval, prepare, compile, tokenizer (fit), tokenize.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

VERBS = {
    "train": "train (or resume) a model in --workdir",
    "eval": "evaluate the latest checkpoint of --workdir on --split",
    "prepare": "build and tokenize the datasets a config needs",
    "compile": "compile the train step for a TPU topology and report memory / roofline",
    "tokenizer": "`tokenizer fit`: fit an audio tokenizer, written to --output",
    "tokenize": "write audio tokens for a dataset split",
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file (configs/*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics, eval")
_OUTPUT = flags.DEFINE_string("output", None, "output directory (tokenizer fit)")
_SPLIT = flags.DEFINE_multi_string("split", None, "dataset split(s) (eval, tokenize)")
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU topology, e.g. v5p:4x4x4 (compile)")
_STEP = flags.DEFINE_integer("step", None, "checkpoint step (eval; default: latest)")


def _usage() -> str:
    lines = ["usage: audiopalm VERB --config FILE [--config.key=value ...] [flags]", "verbs:"]
    lines += [f"  {v:10s} {d}" for v, d in VERBS.items()]
    return "\n".join(lines)


def _require(flag, name: str) -> str:
    if flag.value is None:
        raise app.UsageError(f"--{name} is required")
    return flag.value


def _dispatch(verb: str, config) -> None:
    if verb == "train":
        from audiopalm_jax.train.loop import train

        workdir = _require(_WORKDIR, "workdir")
        if config.data.source != "synthetic":
            from audiopalm_jax.data.prepare import prepare

            prepare(config, workdir)
            if config.acoustic.enabled:
                from audiopalm_jax.acoustic.data import fit_acoustic

                fit_acoustic(config, workdir)
        step = int(train(config, workdir)["step"])
        if config.get("evaluation") and config.data.source != "synthetic":
            from audiopalm_jax.evaluation import run as evaluation

            stored = evaluation.stored_results(config, workdir, step)
            if stored is None:
                evaluation.evaluate_workdir(config, workdir)
            else:  # a finished run: its end-of-run scores, not a second evaluation
                print(evaluation.format_table(stored))
                print(
                    f"scores of step {step} from {workdir}/eval/{step}/metrics.json "
                    "(`audiopalm eval` recomputes them)"
                )
    elif verb == "eval":
        from audiopalm_jax.evaluation.run import evaluate_workdir

        evaluate_workdir(
            config, _require(_WORKDIR, "workdir"), splits=_SPLIT.value, step=_STEP.value
        )
    elif verb == "prepare":
        from audiopalm_jax.data.prepare import prepare

        prepare(config, _WORKDIR.value)
    elif verb == "compile":
        from audiopalm_jax.train.compile_report import compile_report

        compile_report(config, _TOPOLOGY.value)
    elif verb == "tokenizer":
        from audiopalm_jax.audio.commands import fit_tokenizer

        fit_tokenizer(config, _require(_OUTPUT, "output"))
    elif verb == "tokenize":
        from audiopalm_jax.data.prepare import tokenize_splits

        tokenize_splits(config, _require(_WORKDIR, "workdir"), splits=_SPLIT.value)


def _main(verb: str, argv: list[str]) -> None:
    logging.getLogger("absl").setLevel(logging.WARNING)
    if len(argv) > 1 and not (verb == "tokenizer" and argv[1:] == ["fit"]):
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required")
    try:
        _dispatch(verb, config)
    except (ValueError, FileNotFoundError, KeyError, NotImplementedError) as e:
        # User errors (bad values, missing files) end in one line, not a traceback.
        if os.environ.get("AUDIOPALM_TRACEBACK"):
            raise
        print(f"audiopalm {verb}: error: {e}", file=sys.stderr)
        sys.exit(1)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl parsing, with config errors (unknown key, wrong type) as one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        message = str(e).splitlines()[0]
    except AttributeError as e:
        # ml_collections reports an unknown override key as an AttributeError.
        bad = ", ".join(a.split("=")[0] for a in argv[1:] if a.startswith("--config."))
        hint = str(e).replace("\\n", " ").replace("\\'", "").replace("'", "")
        message = f"unknown config key in {bad}: {' '.join(hint.split())}"
    print(f"{argv[0]}: error: {message}", file=sys.stderr)
    sys.exit(2)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] not in VERBS:
        print(_usage(), file=sys.stderr)
        sys.exit(0 if len(argv) >= 2 and argv[1] in ("-h", "--help") else 2)
    verb, rest = argv[1], argv[2:]
    if verb == "tokenizer" and (not rest or rest[0] != "fit"):
        print("usage: audiopalm tokenizer fit --config FILE --output DIR", file=sys.stderr)
        sys.exit(2)
    app.run(lambda a: _main(verb, a), argv=[f"audiopalm {verb}"] + rest, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
