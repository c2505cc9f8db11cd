"""`ldv-qwen2audio validate-data`: check every clip and transcript of a dataset before training."""

import argparse
import json
import logging
from pathlib import Path

from datasets import DatasetDict

from ..audio import SILENCE_PEAK_THRESHOLD
from ..data.loading import (
    AUDIO_COLUMN,
    DEFAULT_MAX_SECONDS,
    MIC_AUDIO_COLUMN,
    TEXT_COLUMN,
    load_audio_dataset,
    validate_dataset,
)

logger = logging.getLogger(__name__)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``validate-data`` subcommand."""
    parser = subparsers.add_parser(
        "validate-data",
        help="check every clip and transcript of a dataset before training",
        description=(
            "Decode every audio file of a dataset (audiofolder directory, JSONL/CSV manifest, save_to_disk "
            "directory or Hub id) and report unreadable, empty, NaN/Inf, silent and over-long clips and "
            "missing or empty transcripts. Exit code 1 when any row is bad."
        ),
    )
    parser.add_argument("source", help="audiofolder dir, .jsonl/.csv manifest, save_to_disk dir or Hub id")
    parser.add_argument("--audio-column", default=AUDIO_COLUMN, help="audio column (default audio)")
    parser.add_argument("--text-column", default=TEXT_COLUMN, help="transcript column (default text)")
    parser.add_argument("--mic-audio-column", default=None, help="microphone audio column of paired data")
    parser.add_argument("--split", default=None, help="split to check (default: every split)")
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                        help="longest accepted clip in seconds (default 30, Qwen2-Audio's window)")
    parser.add_argument("--silence-threshold", type=float, default=SILENCE_PEAK_THRESHOLD,
                        help="peak |sample| (full scale 1.0) below which a clip is digital silence "
                        f"(default {SILENCE_PEAK_THRESHOLD:g})")
    parser.add_argument("--num-proc", type=int, default=None, help="decoding processes (default 1)")
    parser.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    parser.set_defaults(func=_validate_data_command)


def _validate_data_command(args: argparse.Namespace) -> int:
    try:
        dataset = load_audio_dataset(args.source, split=args.split, audio_column=args.audio_column,
                                     text_column=args.text_column, mic_audio_column=args.mic_audio_column)
    except (FileNotFoundError, ValueError) as error:
        logger.error("%s", error)
        return 2
    if isinstance(dataset, DatasetDict):
        splits = dict(dataset)
    else:
        splits = {args.split or str(dataset.split or "dataset"): dataset}
    reports = {
        name: validate_dataset(
            part, max_seconds=args.max_seconds,
            mic_audio_column=MIC_AUDIO_COLUMN if args.mic_audio_column else None,
            silence_threshold=args.silence_threshold, num_proc=args.num_proc, source=args.source,
        )
        for name, part in splits.items()
    }
    for name, report in reports.items():
        report.split = name
        print(report.summary())
    if args.report is not None:
        payload = {
            "source": args.source,
            "num_rows": sum(report.num_rows for report in reports.values()),
            "num_bad": sum(report.num_bad for report in reports.values()),
            "splits": {name: report.to_dict() for name, report in reports.items()},
        }
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"report written to {args.report}")
    return 1 if any(not report.ok for report in reports.values()) else 0
