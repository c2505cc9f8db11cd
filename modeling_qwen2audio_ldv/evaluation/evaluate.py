"""Generation-based evaluation: transcribe eval sets with and without the adapter, and score CER/WER.

``ldv-qwen2audio evaluate --model PATH_OR_REPO --data SOURCE`` runs it on any saved adapter or base model.
"""

import argparse
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


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="CER/WER of a saved adapter (and its base) on a dataset")
    parser.add_argument("--model", required=True, help="adapter directory or Hub repo (or a plain Qwen2-Audio model)")
    parser.add_argument("--data", required=True, help="audiofolder dir, JSONL/CSV manifest, save_to_disk dir or Hub id")
    parser.add_argument("--processor", default=None, help="processor source (default: the base model)")
    parser.add_argument("--split", default=None)
    parser.add_argument("--audio-column", default="audio")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--instruction", default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--language", default="auto")
    parser.add_argument("--revision", default=None, help="pin the adapter repo's revision")
    parser.add_argument("--output-dir", default=None, help="write results.json / results.md here")
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from transformers import AutoModelForSeq2SeqLM, AutoProcessor

    from ..data.loading import filter_bad_examples, load_audio_dataset
    from ..data.collator import DEFAULT_INSTRUCTION

    model = AutoModelForSeq2SeqLM.from_pretrained(args.model, trust_remote_code=True, revision=args.revision).eval()
    base = getattr(model.config, "base_model_name_or_path", None) or args.model
    processor = AutoProcessor.from_pretrained(args.processor or base)
    dataset = load_audio_dataset(args.data, split=args.split, audio_column=args.audio_column,
                                 text_column=args.text_column)
    if hasattr(dataset, "keys"):
        dataset = dataset[args.split or next(iter(dataset.keys()))]
    dataset, report = filter_bad_examples(dataset, on_bad_example="skip")
    scores, predictions = evaluate_sets(
        model, processor, {"eval": dataset}, args.instruction or DEFAULT_INSTRUCTION, args.batch_size,
        args.max_new_tokens, args.language, baseline=hasattr(model, "disable_domain_adapter"),
    )
    for row, values in scores["eval"].items():
        print(f"{row:>9}: CER {100 * values['cer']:.2f}%  WER {100 * values['wer']:.2f}%")
    if args.output_dir:
        from .report import write_results

        write_results({"model": args.model, "data": args.data, "eval": scores}, args.output_dir)
    return 0
