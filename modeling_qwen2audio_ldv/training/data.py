# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The rows a training run trains and evaluates on: the synthetic demo corpus or the user's recordings.

:func:`load_training_data` is ``train_hf.py``'s data step: the training rows (``audio``, ``text`` and, with paired
data, ``mic_audio``; a ``mic_fraction`` share of them train on their microphone clip) and the eval sets
(``{"ldv": rows, "mic": rows, ...}`` of ``audio`` and ``text``), bad rows handled by ``--on_bad_example``.
:func:`build_demo_data` is the demo corpus alone (the method comparison and the benchmarks use it too).
"""

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import SAMPLING_RATE
from ..synthetic.conditions import DEFAULT_CONDITION
from .arguments import DataArguments
from .objectives import needs_mic_clip, parse_objectives

logger = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """What a run trains and evaluates on.

    Attributes:
        train: the training rows (``audio``, ``text``, ``mic_audio`` with paired data).
        eval_sets: ``{name: rows of audio and text}`` (``ldv``, ``mic`` when there are microphone clips, and
            ``ldv_<condition>`` for the demo's cross-condition set).
        condition: the name the results give the data (the demo's LDV condition, or the data folder's name).
        corpus: the whole demo corpus (``DatasetDict`` with ``train``/``test`` splits), ``None`` for the user's data.
        report: what ``filter_bad_examples`` dropped from the training rows.
    """

    train: Any
    eval_sets: dict[str, Any]
    condition: str
    corpus: Any = None
    report: Any = None


#: ``--condition mix``: train one adapter on a mix of surfaces (``synthetic.conditions.mix_conditions``)
MIX_CONDITION = "mix"


def scored_condition(condition: str) -> str:
    """The condition the demo's eval sets (and the real-voice set's LDV clips) use for ``--condition``: itself, or
    for ``mix`` the default preset."""
    return DEFAULT_CONDITION if condition == MIX_CONDITION else condition


def corpus_processes(requested: int | None) -> int:
    """Processes for the demo corpus: ``requested``, or one per CPU core this process may use, at most 8."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--preprocessing_num_workers ({requested}) must be >= 1")
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores))


def build_demo_data(data_args: DataArguments, seed: int):
    """The synthetic paired corpus: LDV training rows (a share are microphone rows) and the eval sets."""
    from ..synthetic.conditions import mix_conditions
    from ..synthetic.corpus import build_paired_corpus
    from ..synthetic.simulator import get_condition

    if data_args.ldv_draws < 1:
        raise ValueError(f"--ldv_draws ({data_args.ldv_draws}) must be >= 1")
    mix = data_args.condition == MIX_CONDITION
    if mix and data_args.ldv_draws > 1:
        raise ValueError("--condition mix draws a surface per utterance already: use --ldv_draws 1 with it")
    # `mix`: every training utterance under one surface of the mix; the eval sets stay on the default preset
    conditions = [get_condition(scored_condition(data_args.condition))]
    conditions += [get_condition(data_args.eval_condition)] if data_args.eval_condition else []
    # the corpus's `condition` column holds the condition's name (a JSON condition's `name`, not its path)
    names = [c.name for c in conditions]
    # further LDV draws of the training condition: the same surface under another name, so each row gets its own
    # simulator seed; only the first draw is scored (the eval sets do not change with --ldv_draws)
    draws = [dataclasses.replace(conditions[0], name=f"{names[0]}~draw{k}") for k in range(1, data_args.ldv_draws)]
    if data_args.real_voice_texts < 0:
        raise ValueError(f"--real_voice_texts ({data_args.real_voice_texts}) must be >= 0")
    extra_texts: list[str] = []
    if data_args.real_voice_texts:
        from ..data.real_voices import transcript_texts
        from ..synthetic.texts import span_texts

        extra_texts = span_texts(transcript_texts(), data_args.real_voice_texts, data_args.corpus_seed)
    if data_args.other_speaker_clips < 0:
        raise ValueError(f"--other_speaker_clips ({data_args.other_speaker_clips}) must be >= 0")
    recordings = []
    if data_args.other_speaker_clips:
        from ..data.other_speakers import draw_recordings

        recordings = draw_recordings(data_args.other_speaker_clips, data_args.corpus_seed,
                                     max_seconds=data_args.other_speaker_max_seconds)
    num_synthetic = data_args.num_train_utterances
    if data_args.talker_recordings:
        talker = talker_recordings(data_args)
        num_synthetic -= len(talker)
        recordings = list(recordings) + talker
    corpus = build_paired_corpus(num_synthetic, data_args.num_eval_utterances, data_args.corpus_seed,
                                 conditions=conditions + draws, kinds=tuple(data_args.text_kinds),
                                 voices=tuple(data_args.voices) if data_args.voices else None,
                                 augment=data_args.augment or None, extra_train_texts=extra_texts,
                                 train_conditions=mix_conditions() if mix else None,
                                 extra_train_recordings=recordings,
                                 num_proc=corpus_processes(data_args.preprocessing_num_workers))

    def rows_of(split: str, name: str):
        rows = corpus[split].filter(lambda c: c == name, input_columns="condition")
        if len(corpus[split]) and not len(rows):
            raise ValueError(f"demo corpus: no {split} rows for condition {name!r} (conditions in the corpus: "
                             f"{sorted(set(corpus[split]['condition']))})")
        return rows

    train = corpus["train"] if mix else rows_of("train", names[0])
    if draws:
        from datasets import concatenate_datasets

        train = concatenate_datasets([train] + [rows_of("train", d.name) for d in draws])
    test_rows = rows_of("test", names[0])
    eval_sets = {
        "ldv": test_rows.select_columns(["ldv_audio", "text"]).rename_column("ldv_audio", "audio"),
        "mic": test_rows.select_columns(["mic_audio", "text"]).rename_column("mic_audio", "audio"),
    }
    if data_args.eval_condition:
        eval_sets[f"ldv_{names[1]}"] = (
            rows_of("test", names[1]).select_columns(["ldv_audio", "text"]).rename_column("ldv_audio", "audio"))
    return mix_mic_rows(train, "ldv_audio", "mic_audio", data_args.mic_fraction, seed), eval_sets, corpus


def talker_recordings(data_args: DataArguments) -> list:
    """``--talker_recordings``' pieces (written to a temporary folder), drawn to fill ``--talker_share`` of the
    ``--num_train_utterances`` rows; at least one synthetic row stays."""
    from datasets.fingerprint import get_temporary_cache_files_directory

    from ..data.talker import prepare_talker_recordings, talker_rows

    share = data_args.talker_share
    count = round(share * data_args.num_train_utterances)
    if not 0 < share < 1 or not 0 < count < data_args.num_train_utterances:
        raise ValueError(f"--talker_share ({share}) must be in (0, 1), leaving talker and synthetic rows among the "
                         f"--num_train_utterances ({data_args.num_train_utterances})")
    talker = prepare_talker_recordings(data_args.talker_recordings,
                                       Path(get_temporary_cache_files_directory()) / "talker_pieces",
                                       max_seconds=data_args.talker_max_seconds,
                                       on_bad_file=data_args.on_bad_example)
    rows = talker_rows(talker.recordings, count, data_args.corpus_seed)
    logger.info("--talker_recordings: %s; %d training rows (%.1f per piece), %d synthetic", talker.describe(),
                count, count / len(talker.recordings), data_args.num_train_utterances - count)
    return rows


def mic_rows(count: int, mic_fraction: float, seed: int) -> np.ndarray:
    """Which of ``count`` training rows train on their microphone clip: ``(count,)`` bool, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.random(count) < mic_fraction


def mix_mic_rows(train, ldv_column: str, mic_column: str, mic_fraction: float, seed: int):
    """Rows with ``audio`` (LDV, or for a ``mic_fraction`` share the microphone clip) and ``mic_audio``."""
    from datasets import Audio

    use_mic = mic_rows(len(train), mic_fraction, seed)
    raw = train.cast_column(ldv_column, Audio(decode=False)).cast_column(mic_column, Audio(decode=False))

    def pick(batch, indices):
        return {"audio": [m if use_mic[i] else l for i, l, m in zip(indices, batch[ldv_column], batch[mic_column])],
                "mic_audio": batch[mic_column]}

    drop = [c for c in raw.column_names if c != "text"]
    mixed = raw.map(pick, with_indices=True, batched=True, remove_columns=drop)
    return mixed.cast_column("audio", Audio(sampling_rate=SAMPLING_RATE)).cast_column(
        "mic_audio", Audio(sampling_rate=SAMPLING_RATE))


def eval_split(loaded, source: str, given_for_evaluation: bool):
    """The one split to evaluate on: ``test``, else ``validation``; a source given for evaluation alone
    (``--eval_data``, ``--mic_eval_data``) that holds a single split is used whole (a manifest, or a folder
    without split folders, loads as one ``train`` split)."""
    if not hasattr(loaded, "keys"):
        return loaded
    for split in ("test", "validation"):
        if split in loaded:
            return loaded[split]
    if given_for_evaluation and len(loaded) == 1:
        return next(iter(loaded.values()))
    if given_for_evaluation:
        raise ValueError(f"{source}: splits {list(loaded)}, none of them test or validation; keep one split in it")
    raise ValueError(f"{source}: no test/validation split (splits: {list(loaded)}); pass --eval_data")


def mix_user_mic_rows(train, mic_fraction: float, seed: int):
    """``--mic_fraction`` on the user's paired data: that share of the rows train on their microphone clip (as
    ``audio``, with ``mic_audio`` unchanged), so the adapter learns to leave microphone speech alone."""
    if not mic_fraction:
        return train
    if "mic_audio" not in train.column_names:
        logger.info("--mic_fraction %g needs paired data (--mic_audio_column); training on the LDV rows only",
                    mic_fraction)
        return train
    if not 0.0 < mic_fraction <= 1.0:
        raise ValueError(f"--mic_fraction ({mic_fraction}) must be in [0, 1]")
    mixed = mix_mic_rows(train, "audio", "mic_audio", mic_fraction, seed)
    logger.info("--mic_fraction %g: microphone clips in place of about that share of %d training rows",
                mic_fraction, len(mixed))
    return mixed


def load_user_data(data_args: DataArguments, seed: int):
    """``--train_data`` (and ``--eval_data``, ``--mic_eval_data``): the training rows and the eval sets."""
    from ..data.held_out import default_registry
    from ..data.loading import load_audio_dataset

    def load(source: str, **columns):
        return load_audio_dataset(source, audio_column=data_args.audio_column, text_column=data_args.text_column,
                                  **columns)

    loaded = load(data_args.train_data, mic_audio_column=data_args.mic_audio_column)
    train = loaded["train"] if hasattr(loaded, "keys") else loaded
    # the real-voice test set's speakers and files are for evaluation only (data.held_out): refuse them here
    default_registry().check_rows(train, where=data_args.train_data)
    if data_args.eval_data:
        eval_source = eval_split(load(data_args.eval_data), data_args.eval_data, given_for_evaluation=True)
    else:
        eval_source = eval_split(loaded, data_args.train_data, given_for_evaluation=False)
    eval_sets = {"ldv": eval_source}
    if data_args.mic_eval_data:
        eval_sets["mic"] = eval_split(load(data_args.mic_eval_data), data_args.mic_eval_data,
                                      given_for_evaluation=True)
    return mix_user_mic_rows(train, data_args.mic_fraction, seed), eval_sets


def real_voice_eval_sets(data_args: DataArguments, condition: str) -> dict[str, Any]:
    """``--real_voice_set``: the set's microphone clips (``real_mic``) and its ``condition`` LDV clips
    (``real_ldv``) as eval sets, every k-th clip with ``--real_voice_samples``; a folder without a set is built there
    first (``build_real_voice_set`` for that
    condition, from the Debian packages of ``scripts/setup.sh``)."""
    from ..data.loading import load_audio_dataset
    from ..data.real_voices import build_real_voice_set
    from ..synthetic.simulator import get_condition

    folder = Path(data_args.real_voice_set)
    name = get_condition(condition).name
    if not (folder / "manifest.json").is_file() or not (folder / "ldv" / name / "metadata.csv").is_file():
        logger.info("building the real-voice set (microphone and %s) in %s", name, folder)
        build_real_voice_set(folder, conditions=[condition], progress=False)
    sets = {}
    for key, path in (("real_mic", folder / "mic"), ("real_ldv", folder / "ldv" / name)):
        loaded = load_audio_dataset(str(path), audio_column="audio", text_column="text")
        rows = eval_split(loaded, str(path), given_for_evaluation=True)
        if data_args.real_voice_samples and len(rows) > data_args.real_voice_samples:
            # every k-th clip in the set's order (sorted by prompt: every group of prompts keeps its share)
            step = -(-len(rows) // data_args.real_voice_samples)
            rows = rows.select(range(0, len(rows), step))
        sets[key] = rows
    return sets


def load_training_data(data_args: DataArguments, seed: int, objective: str) -> TrainingData:
    """The demo corpus (no ``--train_data``) or the user's recordings, bad rows handled by ``--on_bad_example``,
    each eval set capped at ``--max_eval_samples``; an objective that needs paired data checks it is."""
    from ..data.loading import filter_bad_examples

    if data_args.train_data is None:
        if data_args.other_speaker_clips and any(o.needs_labels for o in parse_objectives(objective)):
            raise ValueError(f"--other_speaker_clips trains on recordings in other languages, whose transcripts the "
                             f"model must not learn to write: use --objective distill (got {objective!r})")
        if data_args.talker_recordings and any(o.needs_labels for o in parse_objectives(objective)):
            raise ValueError(f"--talker_recordings trains on untranscribed recordings: use --objective distill (got "
                             f"{objective!r})")
        train, eval_sets, corpus = build_demo_data(data_args, seed)
        condition = data_args.condition
    else:
        if data_args.talker_recordings:
            raise ValueError("--talker_recordings joins the demo corpus (the talker's microphone speech with LDV "
                             "simulated under --condition); with --train_data, add the talker's paired recordings to "
                             "the data instead")
        corpus = None
        train, eval_sets = load_user_data(data_args, seed)
        condition = Path(data_args.train_data).name
    if data_args.real_voice_set and data_args.train_data is None:
        # the demo corpus: its LDV condition is a simulator preset, which the set's LDV folders are made with
        eval_sets.update(real_voice_eval_sets(data_args, scored_condition(data_args.condition)))
    # paired rows: a bad microphone clip is a bad row too (it would stop the feature cache or the distill step)
    train, report = filter_bad_examples(train, on_bad_example=data_args.on_bad_example,
                                        mic_audio_column="mic_audio" if "mic_audio" in train.column_names else None)
    eval_sets = {name: filter_bad_examples(ds, on_bad_example=data_args.on_bad_example)[0].select_columns(
        ["audio", "text"]) for name, ds in eval_sets.items()}
    if data_args.max_eval_samples:
        eval_sets = {k: v.select(range(min(len(v), data_args.max_eval_samples))) for k, v in eval_sets.items()}
    if needs_mic_clip(objective) and "mic_audio" not in train.column_names:
        raise ValueError("objective 'distill' needs paired data: set --mic_audio_column")
    return TrainingData(train=train, eval_sets=eval_sets, condition=condition, corpus=corpus, report=report)


__all__ = [
    "TrainingData",
    "build_demo_data",
    "eval_split",
    "load_training_data",
    "load_user_data",
    "mic_rows",
    "mix_mic_rows",
    "mix_user_mic_rows",
    "real_voice_eval_sets",
]
