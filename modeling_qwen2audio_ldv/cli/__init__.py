"""`ldv-qwen2audio`: one command with a subcommand per tool.

Each command group is one module of the package that registers its subcommands through
``register_cli(subparsers)``; a subcommand's handler is ``args.func(args)`` and returns the process exit code.
"""

import argparse
import logging
import sys
from importlib import import_module

# Modules that contribute subcommands, in the order `--help` lists them.
SUBCOMMAND_MODULES = (
    "cli.transcribe",
    "cli.simulate",
    "cli.corpus",
    "cli.real_voices",
    "cli.data",
    "cli.mini_base",
    "cli.evaluate",
    "cli.hub",
    "cli.explain",
    "cli.diagnose",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldv-qwen2audio",
        description="Tools for Qwen2-Audio with an LDV domain adapter.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        import_module(f"modeling_qwen2audio_ldv.{name}").register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
