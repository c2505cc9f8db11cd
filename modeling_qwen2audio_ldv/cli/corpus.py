"""`ldv-qwen2audio synth-corpus`: a paired microphone / LDV speech corpus synthesised with eSpeak NG."""

import argparse
import logging
from pathlib import Path

from ..synthetic.corpus import build_paired_corpus, write_audiofolder, write_paired_audiofolder
from ..synthetic.espeak import INSTALL_HINT
from ..synthetic.simulator import DEFAULT_CONDITION
from ..synthetic.texts import LANGUAGES, TEXT_KINDS

logger = logging.getLogger(__name__)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``synth-corpus`` subcommand."""
    parser = subparsers.add_parser(
        "synth-corpus",
        help="synthesise a paired microphone / LDV speech corpus with eSpeak NG",
        description=(
            "Synthesise utterances with eSpeak NG, simulate their LDV recordings and write a DatasetDict "
            "(train/validation/test, disjoint in text and voice) with save_to_disk. Needs the speech extra: "
            f"{INSTALL_HINT}."
        ),
    )
    parser.add_argument("--output", required=True, type=Path, help="folder for the dataset (save_to_disk)")
    parser.add_argument("--num-train", required=True, type=int, help="utterances in train")
    parser.add_argument("--num-eval", required=True, type=int, help="utterances in each of validation and test")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument(
        "--condition",
        action="extend",
        nargs="+",
        default=None,
        help=f"LDV condition(s): preset names or JSON paths; one row per utterance and condition "
        f"(default: {DEFAULT_CONDITION})",
    )
    parser.add_argument(
        "--voice",
        action="extend",
        nargs="+",
        default=None,
        help="voices (at least 3; the last ones are held out for validation/test; default: built-in eSpeak list): "
        "eSpeak voices (en-us+f3) or flite:<voice> / festival:<voice> (flite:slt, festival:kal_diphone; "
        "synthetic.voices.NATURAL_VOICES lists them in a speaker-disjoint order)",
    )
    parser.add_argument("--language", choices=LANGUAGES, default="en", help="text and voice language (default en)")
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=TEXT_KINDS,
        default=list(TEXT_KINDS),
        help="text kinds (default: all; the repo's mini base reads digit strings only: --kinds digits)",
    )
    parser.add_argument("--no-mic-augment", action="store_true", help="store the synthesised microphone clip as is")
    parser.add_argument(
        "--augment",
        action="store_true",
        help="speech-training augmentations (synthetic.augment.SpeechAugmentation defaults): speed 0.9-1.1 and pitch "
        "on the talker; room response, level and background noise on the microphone clip; seeded per utterance",
    )
    parser.add_argument(
        "--held-out",
        action="extend",
        nargs="+",
        default=None,
        help="real-voice set manifests whose speakers are refused, beside the built-in ones and the registered sets",
    )
    parser.add_argument("--num-proc", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--audiofolder",
        action="store_true",
        help="also write <output>/audiofolder/{mic,ldv}/<split>/ WAV files with metadata.csv",
    )
    parser.add_argument(
        "--paired-audiofolder",
        action="store_true",
        help="also write <output>/paired_audiofolder/<split>/ (metadata.csv: file_name,text,mic_file_name,...), "
        "which `train_hf.py --train_data DIR --mic_audio_column mic_file_name` reads as it is",
    )
    parser.set_defaults(func=run_synth_corpus)


def run_synth_corpus(args: argparse.Namespace) -> int:
    """Handler of ``synth-corpus``; returns the exit code."""
    corpus = build_paired_corpus(
        num_train=args.num_train,
        num_eval=args.num_eval,
        seed=args.seed,
        conditions=tuple(args.condition or (DEFAULT_CONDITION,)),
        voices=tuple(args.voice) if args.voice else None,
        language=args.language,
        mic_augment=not args.no_mic_augment,
        kinds=tuple(args.kinds),
        num_proc=args.num_proc,
        augment=args.augment,
        held_out=args.held_out,
    )
    corpus.save_to_disk(str(args.output))
    logger.info("wrote %s", args.output)
    if args.audiofolder:
        folder = write_audiofolder(corpus, args.output / "audiofolder")
        logger.info("wrote the audiofolder layout to %s", folder)
    if args.paired_audiofolder:
        folder = write_paired_audiofolder(corpus, args.output / "paired_audiofolder")
        logger.info("wrote the paired audiofolder to %s (train_hf.py --train_data %s --mic_audio_column "
                    "mic_file_name)", folder, folder)
    return 0
