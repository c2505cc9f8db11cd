"""`ldv-qwen2audio diagnose`: check that an adapter can learn (the original guide's checks, in one go)."""

import argparse
import json
import logging
from typing import Any

from ..data.loading import load_audio_dataset
from ..evaluation.diagnose import diagnose
from .common import add_model_arguments

logger = logging.getLogger(__name__)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``diagnose`` subcommand."""
    parser = subparsers.add_parser(
        "diagnose",
        help="check that an adapter can learn: trainable parameters, shapes, gradients, scale, gate",
        description=(
            "Load an adapter, freeze the base as train_hf.py does, and run the usage guide's checks: trainable "
            "parameters, input == output shape through the adapter, one LM backward pass with per-parameter "
            "gradient norms, scale and gate statistics, and (with paired data) the mic-vs-LDV feature distance "
            "before and after the adapter. Exit code 1 when a check fails."
        ),
    )
    add_model_arguments(parser)
    parser.add_argument("--data", default=None, help="audiofolder dir, .jsonl/.csv manifest, save_to_disk dir or Hub "
                        "id (default: a synthetic clip)")
    parser.add_argument("--split", default=None, help="split of --data (default: train, or the first split)")
    parser.add_argument("--audio-column", default="audio", help="(LDV) audio column (default audio)")
    parser.add_argument("--text-column", default="text", help="transcript column (default text)")
    parser.add_argument("--mic-audio-column", default=None, help="paired microphone audio column")
    parser.add_argument("--num-examples", type=int, default=8, help="rows of --data to use (default 8)")
    parser.add_argument("--instruction", default=None, help="prompt instruction (default: transcribe)")
    parser.add_argument("--report", default=None, help="write the report as JSON here")
    parser.set_defaults(func=_diagnose_command)


def _load_rows(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    if args.data is None:
        return None
    dataset = load_audio_dataset(args.data, split=args.split, audio_column=args.audio_column,
                                 text_column=args.text_column, mic_audio_column=args.mic_audio_column)
    if hasattr(dataset, "keys"):
        dataset = dataset["train"] if "train" in dataset else dataset[next(iter(dataset.keys()))]
    return [dataset[index] for index in range(min(len(dataset), args.num_examples))]


def _diagnose_command(args: argparse.Namespace) -> int:
    from ..tools.hub import load_adapter_model

    try:
        model, processor = load_adapter_model(args.model, args.processor, args.revision, args.dtype, args.device,
                                              base_model_name_or_path=args.base)
        model.freeze_base_model()
        report = diagnose(model, processor, _load_rows(args), instruction=args.instruction,
                          max_pairs=args.num_examples)
    except (OSError, RuntimeError, ValueError) as error:  # missing files, unreadable audio, bad input
        logger.error("%s", error)
        return 2
    print(report.summary())
    if args.report:
        with open(args.report, "w", encoding="utf-8") as handle:
            json.dump(report.to_dict(), handle, indent=2)
        print(f"report written to {args.report}")
    return 0 if report.ok else 1
