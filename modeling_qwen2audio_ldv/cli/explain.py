"""`ldv-qwen2audio explain`: attention maps, gate over time and a gate-health verdict for one clip."""

import argparse
import logging
from pathlib import Path

from ..audio import load_audio
from ..evaluation.explain import explain
from .common import add_model_arguments

logger = logging.getLogger(__name__)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``explain`` subcommand."""
    parser = subparsers.add_parser(
        "explain",
        help="attention maps, gate over time and a gate-health verdict for one clip",
        description=(
            "Run one clip through the frozen audio tower and the adapter; write per-layer/per-head attention maps, "
            "the gate over time aligned with the spectrogram, and summary.txt (scale, gate mean/std against the "
            "guide's healthy 0.3-0.7, verdict)."
        ),
    )
    parser.add_argument("audio", help="audio file (any rate or channel count; resampled to 16 kHz mono)")
    add_model_arguments(parser)
    parser.add_argument("--output", default=None, help="output folder (default: explain_<audio name>)")
    parser.set_defaults(func=_explain_command)


def _explain_command(args: argparse.Namespace) -> int:
    from ..tools.hub import load_adapter_model

    output = args.output or f"explain_{Path(args.audio).stem}"
    try:
        audio = load_audio(args.audio)
        model, processor = load_adapter_model(args.model, args.processor, args.revision, args.dtype, args.device,
                                              base_model_name_or_path=args.base)
        info = explain(model, processor, audio, output, title=Path(args.audio).name)
    except (OSError, RuntimeError, ValueError) as error:  # missing files, unreadable audio, bad input
        logger.error("%s", error)
        return 2
    print(info["summary"])
    print(f"written to {Path(output).resolve()}")
    return 0
