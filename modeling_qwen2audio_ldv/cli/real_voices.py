"""`ldv-qwen2audio build-real-voice-set`: the real-voice test set from Debian's packages (never trained on)."""

import argparse
import logging
from pathlib import Path

from ..data.real_voices import APT_PACKAGES, build_real_voice_set
from ..synthetic.conditions import LDV_PRESETS

logger = logging.getLogger(__name__)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``build-real-voice-set`` subcommand."""
    parser = subparsers.add_parser(
        "build-real-voice-set",
        help="build the real-voice test set (microphone + simulated LDV) from Debian's speech packages",
        description=(
            "Decode the real recordings of Debian's " + ", ".join(APT_PACKAGES) + " (bash scripts/setup.sh installs "
            "them), turn their transcripts into scorable text, and write one audiofolder for the microphone "
            "recordings and one per LDV condition, with manifest.json (sources, licences, sha256 of every file, "
            "skipped prompts and why). The set's speakers and files are recorded as held out, so training refuses "
            "them."
        ),
    )
    parser.add_argument("--output", required=True, type=Path, help="folder to write the set to")
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="where the packages' files are: / (installed) or a folder `dpkg -x` unpacked them into")
    parser.add_argument("--condition", action="extend", nargs="+", default=None,
                        help=f"LDV presets or condition JSON files (default: every preset: {', '.join(LDV_PRESETS)})")
    parser.add_argument("--seed", type=int, default=0, help="LDV simulator seed (default 0)")
    parser.add_argument("--no-register", action="store_true",
                        help="do not record the set in the held-out registry folder (training would not refuse its "
                        "files by hash on this machine; its speakers stay refused)")
    parser.set_defaults(func=run_build_real_voice_set)


def run_build_real_voice_set(args: argparse.Namespace) -> int:
    """Handler of ``build-real-voice-set``; returns the exit code."""
    manifest = build_real_voice_set(
        args.output,
        root=args.root,
        conditions=tuple(args.condition or LDV_PRESETS),
        seed=args.seed,
        register_held_out=not args.no_register,
    )
    for name, source in manifest["sources"].items():
        print(f"{name:>9}: {source['clips']} clips, {source['minutes']:.1f} min, {source['licence']}")
    print(f"  skipped: {len(manifest['skipped'])} (reasons in {args.output / 'manifest.json'})")
    print(f"evaluate: ldv-qwen2audio evaluate --model MODEL --data {args.output / 'mic'}  (or ldv/<condition>)")
    return 0
