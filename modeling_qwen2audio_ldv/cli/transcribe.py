"""`ldv-qwen2audio transcribe`: recordings of any length (files or folders) to text, subtitles or JSON Lines."""

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from ..audio import find_audio_files
from ..inference.transcribe import load_for_transcription, transcribe
from ..inference.writers import OUTPUT_FORMATS, write_results
from .common import add_base_argument

logger = logging.getLogger(__name__)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``transcribe`` subcommand."""
    parser = subparsers.add_parser(
        "transcribe",
        help="transcribe recordings (files or folders, any length) with an adapter or a base model",
        description=(
            "Transcribe audio files (any format soundfile or ffmpeg reads, any rate, any length: recordings longer "
            "than the encoder's window are split at pauses and stitched). Exit code 1 when any file failed; the "
            "others are still transcribed."
        ),
    )
    parser.add_argument("inputs", nargs="+", help="audio files and/or folders (searched recursively)")
    parser.add_argument("--model", required=True,
                        help="adapter directory or Hub repo, or a plain Qwen2-Audio model (e.g. mini_base)")
    add_base_argument(parser)
    parser.add_argument("--processor", default=None, help="processor source (default: the base model)")
    parser.add_argument("--revision", default=None, help="revision of the --model repo (pin a commit)")
    parser.add_argument("--output", default=None,
                        help="out.jsonl, out.srt or out.txt (default: file<TAB>text lines on stdout)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per generate call (default 8)")
    parser.add_argument("--audio-domain", default=None,
                        help="ldv (default: the active adapter), mic (no adapter) or an adapter name")
    parser.add_argument("--no-adapter", action="store_true", help="transcribe with the base model alone")
    parser.add_argument("--instruction", default=None, help="prompt instruction (default: Transcribe the audio.)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="tokens per window (default: 8 per second of window, at least 32)")
    parser.add_argument("--overlap-seconds", type=float, default=None,
                        help="audio shared by consecutive windows of a long recording (default 5%% of the window)")
    parser.add_argument("--window-seconds", type=float, default=None,
                        help="longest piece transcribed at once (default: the encoder's window; 3 for the mini base, "
                        "which was trained on short clips)")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: cpu)")
    parser.set_defaults(func=_transcribe_command)


def _transcribe_command(args: argparse.Namespace) -> int:
    if args.no_adapter and args.audio_domain:
        logger.error("--no-adapter and --audio-domain exclude each other")
        return 2
    files = find_audio_files(args.inputs)
    if not files:
        logger.error("no audio files in %s", " ".join(args.inputs))
        return 2
    try:
        if args.output and Path(args.output).suffix.lower() not in OUTPUT_FORMATS:
            raise ValueError(f"--output {args.output}: unknown format; use .jsonl, .srt or .txt")
        model, processor = load_for_transcription(args.model, args.processor, args.revision, args.dtype, args.device,
                                                   base_model_name_or_path=args.base)
    except (OSError, ValueError) as error:
        logger.error("%s", error)
        return 2
    disable = args.no_adapter and hasattr(model, "disable_domain_adapter")
    try:
        with model.disable_domain_adapter() if disable else contextlib.nullcontext():
            results = transcribe(model, processor, files, batch_size=args.batch_size, audio_domain=args.audio_domain,
                                 instruction=args.instruction, max_new_tokens=args.max_new_tokens,
                                 overlap_seconds=args.overlap_seconds, window_seconds=args.window_seconds,
                                 on_error="skip")
    except ValueError as error:  # arguments, not files: nothing was transcribed
        logger.error("%s", error)
        return 2
    failed = [r for r in results if r.get("error") is not None]
    if args.output:
        for path in write_results(results, args.output):
            print(f"written {path}", file=sys.stderr)
    else:
        for result in results:
            if result.get("error") is None:
                print(f"{result['file']}\t{result['text']}")
    if failed:
        print(f"{len(failed)} of {len(results)} file(s) failed:", file=sys.stderr)
        for result in failed:
            print(f"  {result['error']}", file=sys.stderr)
        return 1
    return 0
