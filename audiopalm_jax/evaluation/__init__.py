"""Metrics the papers report, and evaluation of a model on dataset splits."""

from audiopalm_jax.evaluation.metrics import asr_bleu, bleu, cer, chrf, exact_match, wer


def __getattr__(name):
    # evaluate() pulls in inference (jax, the model); metrics alone stay light.
    if name in ("evaluate", "evaluate_workdir"):
        from audiopalm_jax.evaluation import evaluate as _evaluate
        from audiopalm_jax.evaluation import run as _run

        return {"evaluate": _evaluate.evaluate, "evaluate_workdir": _run.evaluate_workdir}[name]
    raise AttributeError(name)


__all__ = ["asr_bleu", "bleu", "cer", "chrf", "evaluate", "evaluate_workdir", "exact_match", "wer"]
