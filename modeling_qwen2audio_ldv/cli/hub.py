"""`ldv-qwen2audio push`: publish a saved adapter on the Hub with a model card."""

import argparse
import logging
from pathlib import Path

from ..tools.hub import adapter_card, push_adapter

logger = logging.getLogger(__name__)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``push`` subcommand."""
    parser = subparsers.add_parser(
        "push",
        help="publish a saved adapter on the Hub with a model card",
        description=(
            "Upload an adapter-only checkpoint (config.json, domain_adapter.safetensors, the code files) to a Hub "
            "repository with a model card (base model, LDV condition, CER/WER from results.json, pinned usage "
            "snippet). With --card-only, write README.md into the adapter directory and upload nothing."
        ),
    )
    parser.add_argument("adapter_dir", help="directory written by save_pretrained (e.g. output_dir/adapter)")
    parser.add_argument("repo_id", help="user/name (created if missing)")
    parser.add_argument("--results", default=None, help="results.json of the run (or its directory)")
    parser.add_argument("--condition", default=None, help="LDV condition (default: the results' condition)")
    parser.add_argument("--dataset", action="append", default=None, help="Hub dataset id of the training data "
                        "(repeat for several)")
    parser.add_argument("--base-model", default=None, help="Hub id of the base, replacing a local path in config.json")
    parser.add_argument("--base-model-revision", default=None, help="revision of the base model")
    parser.add_argument("--revision", default=None, help="branch to push to (default: main)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--card-only", action="store_true", help="write README.md into ADAPTER_DIR, upload nothing")
    parser.set_defaults(func=_push_command)


def _push_command(args: argparse.Namespace) -> int:
    try:
        if args.card_only:
            card = adapter_card(args.adapter_dir, args.repo_id, results=args.results, condition=args.condition,
                                datasets=args.dataset)
            path = Path(args.adapter_dir) / "README.md"
            card.save(path)
            print(f"model card written to {path}")
            return 0
        commit = push_adapter(args.adapter_dir, args.repo_id, args.results, condition=args.condition,
                              datasets=args.dataset, base_model=args.base_model,
                              base_model_revision=args.base_model_revision, revision=args.revision,
                              private=args.private or None, create_pr=args.create_pr)
    except (OSError, ValueError) as error:  # missing files, bad results, Hub errors
        logger.error("%s", error)
        return 2
    print(f"published {commit.repo_url.repo_id} at commit {commit.oid}")
    print(f"load with: AutoModelForSeq2SeqLM.from_pretrained({commit.repo_url.repo_id!r}, revision={commit.oid!r}, "
          f"trust_remote_code=True)")
    return 0
