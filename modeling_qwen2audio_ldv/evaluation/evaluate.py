"""Generation-based evaluation: transcribe eval sets with and without the adapter, and score CER/WER.

``ldv-qwen2audio evaluate --model PATH_OR_REPO --data SOURCE`` runs it on any saved adapter or base model.
"""

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from ..inference.generate import generate_transcripts

logger = logging.getLogger(__name__)


def evaluate_sets(
    model,
    processor,
    eval_sets: dict[str, Any],
    instruction: str,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    language: str = "auto",
    baseline: bool = True,
    apply_adapter_to: Sequence[str] | None = None,
    progress: bool = True,
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, list[str]]]]:
    """Score each eval set (a dataset with ``audio`` and ``text``) with the adapter and, optionally, without.

    Returns ``(scores, predictions)``: ``scores[set]["baseline"|"adapted"] = {"cer", "wer"}`` and the transcripts
    per set and row. The adapter is applied to every set named in ``apply_adapter_to`` (default: all), so its
    effect on microphone speech shows.
    """
    from .scoring import compute_error_rates

    scores: dict[str, dict[str, dict[str, float]]] = {}
    predictions: dict[str, dict[str, list[str]]] = {}
    for name, dataset in eval_sets.items():
        audios, references = list(dataset["audio"]), list(dataset["text"])
        scores[name], predictions[name] = {}, {"reference": references}
        rows = []
        if baseline:
            rows.append("baseline")
        if apply_adapter_to is None or name in apply_adapter_to:
            rows.append("adapted")
        for row in rows:
            disable = row == "baseline" and hasattr(model, "disable_domain_adapter")
            with model.disable_domain_adapter() if disable else contextlib.nullcontext():
                hypotheses = generate_transcripts(model, processor, audios, instruction, batch_size, max_new_tokens,
                                                  progress=progress, desc=f"{name}/{row}")
            rates = compute_error_rates(hypotheses, references, language=language)
            scores[name][row] = {"cer": float(rates["cer"]), "wer": float(rates["wer"])}
            predictions[name][row] = hypotheses
            logger.info("%s %s: CER %.2f%% WER %.2f%%", name, row, 100 * rates["cer"], 100 * rates["wer"])
    return scores, predictions
