"""`ldv-qwen2audio simulate`: simulated LDV versions of a folder of microphone audio."""

import argparse
import logging
from pathlib import Path

from ..synthetic.ldv_folders import simulate_folder
from ..synthetic.simulator import DEFAULT_CONDITION, LDV_PRESETS, get_condition

logger = logging.getLogger(__name__)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``simulate`` subcommand."""
    parser = subparsers.add_parser(
        "simulate",
        help="turn a folder of microphone audio into simulated LDV audio",
        description=(
            "Write the simulated LDV version of every wav/flac/ogg file under --input at the same relative path "
            "under --output (mono, same sample rate, format and length), copy metadata.csv/metadata.jsonl so an "
            "audiofolder stays an audiofolder, and write the condition to condition.json."
        ),
    )
    parser.add_argument("--input", required=True, type=Path, help="folder of microphone audio (searched recursively)")
    parser.add_argument("--output", required=True, type=Path, help="folder for the LDV audio (created)")
    parser.add_argument(
        "--condition",
        default=DEFAULT_CONDITION,
        help=f"preset ({', '.join(LDV_PRESETS)}) or path of a condition JSON (default: {DEFAULT_CONDITION})",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="global seed; each file's seed derives from it and its relative path"
    )
    parser.add_argument("--plot", action="store_true", help="write mic_vs_ldv.png for the first file")
    parser.set_defaults(func=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    """Handler of ``simulate``; returns 0 when every file was converted, 1 when any failed, 2 on bad arguments."""
    source_root = Path(args.input).resolve()
    target_root = Path(args.output).resolve()
    if not source_root.is_dir():
        logger.error("--input %s is not a folder", args.input)
        return 2
    if target_root == source_root:
        logger.error("--output must differ from --input (%s)", args.input)
        return 2
    try:
        condition = get_condition(args.condition)
    except ValueError as err:
        logger.error("--condition: %s", err)
        return 2
    if condition.impulse_response is not None and not Path(condition.impulse_response).is_file():
        logger.error("impulse_response of condition %r not found: %s", condition.name, condition.impulse_response)
        return 2
    try:
        failures = simulate_folder(source_root, target_root, condition, seed=args.seed, plot=args.plot)
    except FileNotFoundError as err:  # no audio file under --input
        logger.error("%s", err)
        return 1
    return 1 if failures else 0
