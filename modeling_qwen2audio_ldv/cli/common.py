"""Flags shared by several commands."""

import argparse


def add_base_argument(parser: argparse.ArgumentParser) -> None:
    """``--base``: the base model an adapter loads onto, in place of the one its ``config.json`` records."""
    parser.add_argument("--base", default=None,
                        help="base model directory or Hub id, in place of the one the adapter records (for an adapter "
                        "whose base is elsewhere; default: the recorded base, a relative path tried against the "
                        "adapter folder, then the working directory)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--model/--base/--processor/--revision/--dtype/--device`` flags shared by the tools that load an
    adapter."""
    parser.add_argument("--model", required=True, help="adapter: Hub repo id or directory written by save_pretrained")
    add_base_argument(parser)
    parser.add_argument("--processor", default=None,
                        help="processor source (default: the adapter's base model)")
    parser.add_argument("--revision", default=None, help="revision of the adapter repo (pin a commit)")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="model dtype (default: the checkpoint's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cpu)")
