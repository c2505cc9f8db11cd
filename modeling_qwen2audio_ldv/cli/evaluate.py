"""`ldv-qwen2audio evaluate`: CER/WER of a saved adapter (and of its base, the adapter switched off) on a dataset."""

import argparse
import logging

from ..data.collator import DEFAULT_INSTRUCTION
from ..data.loading import filter_bad_examples, load_audio_dataset
from ..evaluation.evaluate import evaluate_sets
from ..evaluation.report import write_results
from .common import add_base_argument

logger = logging.getLogger(__name__)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``evaluate`` subcommand."""
    parser = subparsers.add_parser("evaluate", help="CER/WER of a saved adapter (and its base) on a dataset")
    parser.add_argument("--model", required=True, help="adapter directory or Hub repo (or a plain Qwen2-Audio model)")
    add_base_argument(parser)
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
    parser.set_defaults(func=_evaluate_command)


def _evaluate_command(args: argparse.Namespace) -> int:
    from ..inference.transcribe import load_for_transcription

    # the loader of the other tools: this package's class (an adapter's base found from any working directory, or
    # --base), or a plain Qwen2-Audio model without adapter
    try:
        model, processor = load_for_transcription(args.model, args.processor, args.revision,
                                                  base_model_name_or_path=args.base)
    except (OSError, ValueError) as error:
        logger.error("%s", error)
        return 2
    dataset = load_audio_dataset(args.data, split=args.split, audio_column=args.audio_column,
                                 text_column=args.text_column)
    if hasattr(dataset, "keys"):
        dataset = dataset[args.split or next(iter(dataset.keys()))]
    dataset, report = filter_bad_examples(dataset, on_bad_example="skip")
    scores, predictions = evaluate_sets(
        model, processor, {"eval": dataset}, args.instruction or DEFAULT_INSTRUCTION, args.batch_size,
        args.max_new_tokens, args.language, baseline=getattr(model, "domain_adapter", None) is not None,
    )
    for row, values in scores["eval"].items():
        print(f"{row:>9}: CER {100 * values['cer']:.2f}%  WER {100 * values['wer']:.2f}%")
    if args.output_dir:
        write_results({"model": args.model, "data": args.data, "eval": scores}, args.output_dir)
    return 0
