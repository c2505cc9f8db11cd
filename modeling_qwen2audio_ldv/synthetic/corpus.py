# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Paired microphone / LDV speech corpus, synthesised with eSpeak NG (and, on request, Flite and Festival voices).

The mini world trains and evaluates on speech that anyone can regenerate offline: short industrial-control
utterances (:func:`~modeling_qwen2audio_ldv.synthetic.texts.make_texts`: digit strings, commands, status sentences)
spoken by eSpeak NG voices (:func:`~modeling_qwen2audio_ldv.synthetic.espeak.synthesize`), each paired with its
simulated LDV recording (:func:`~modeling_qwen2audio_ldv.synthetic.simulator.simulate_ldv`). Voices named
``"flite:<voice>"`` or ``"festival:<voice>"`` (:mod:`~modeling_qwen2audio_ldv.synthetic.voices`) speak through
those engines instead; ``augment`` adds speech-training augmentations
(:mod:`~modeling_qwen2audio_ldv.synthetic.augment`). A voice of a held-out test speaker
(:mod:`~modeling_qwen2audio_ldv.data.held_out`) is refused.

eSpeak NG is GPL-3.0 and stays an optional extra (``pip install "qwen2audio-ldv[speech]"``): this module
imports without it and loads the library (bundled by the ``espeakng-loader`` package) only when speech is
synthesised.

Example:
    >>> from modeling_qwen2audio_ldv.synthetic.corpus import build_paired_corpus, synthesize
    >>> clip = synthesize("three seven one nine", voice="en-us+f3")        # float32, 16 kHz
    >>> corpus = build_paired_corpus(num_train=200, num_eval=20, seed=0, conditions=("window", "wall"))
    >>> corpus["train"][0]["text"], corpus["train"][0]["condition"]

Command line: ``ldv-qwen2audio synth-corpus --output corpus --num-train 2000 --num-eval 200 --seed 0``.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import hashlib
import io
import logging
import multiprocessing
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ..audio import SAMPLING_RATE
from ..data.held_out import HeldOutError, HeldOutRegistry, file_sha256, resolve_registry
from ..data.other_speakers import Recording
from .augment import SpeechAugmentation, microphone_channel, perturb_speech
from .espeak import synthesize  # noqa: F401  (re-exported: callers take the eSpeak synthesiser from here)
from .simulator import DEFAULT_CONDITION, LDVCondition, get_condition, simulate_ldv
from .texts import TEXT_KINDS, check_language, make_texts
from .voices import NEUTRAL_PITCH, supports_pitch, synthesize_voice, voice_speaker

logger = logging.getLogger(__name__)

#: Split names of :func:`build_paired_corpus`, in order.
SPLITS = ("train", "validation", "test")
#: Per-utterance speaking-rate range, eSpeak words per minute (eSpeak's default is 175; it accepts 80-450).
RATE_RANGE = (140, 210)
#: Per-utterance base-pitch range, eSpeak units 0-99 (50 is the voice's own pitch).
PITCH_RANGE = (30, 70)

#: eSpeak voices per language, "<language voice>[+<variant>]". Accents (US, RP, Scotland, Caribbean, New York,
#: Lancaster, West Midlands), male and female formant variants and the Klatt synthesiser give clearly different
#: timbres. :func:`split_voices` holds out the tail of each list: with the order below, validation and test
#: each get one female-formant voice and one Klatt or male voice whose accent/variant pair never occurs in train.
DEFAULT_VOICES: dict[str, tuple[str, ...]] = {
    "en": (
        # train (10)
        "en-us",
        "en-us+f3",
        "en-gb-x-rp+m3",
        "en-gb+f2",
        "en-us+klatt4",
        "en-gb-scotland+m1",
        "en-029+f4",
        "en-us-nyc+m7",
        "en-gb+klatt5",
        "en-us+f2",
        # validation (2)
        "en-gb-x-gbclan+f1",
        "en-gb+klatt3",
        # test (2)
        "en-gb-x-gbcwmd+m2",
        "en-029+f5",
    ),
    "cmn": (
        # train (6)
        "cmn",
        "cmn+f3",
        "cmn+m3",
        "cmn+klatt3",
        "cmn+f2",
        "cmn+m1",
        # validation (1)
        "cmn+f4",
        # test (1)
        "cmn+m7",
    ),
}


def split_voices(voices: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Hold out voices: the last ``k`` voices go to test, the ``k`` before them to validation, the rest to train.

    ``k = max(1, len(voices) // 6)``; the order of ``voices`` decides (no randomness), so the held-out voices are
    the same for every seed.

    Raises:
        ValueError: fewer than 3 voices, or a voice listed twice.
    """
    voices = tuple(voices)
    if len(set(voices)) != len(voices):
        raise ValueError(f"`voices` lists a voice twice: {voices}")
    if len(voices) < 3:
        raise ValueError(
            f"`voices` ({voices}) needs at least 3 voices to hold out one for validation and one for test"
        )
    held = max(1, len(voices) // 6)
    return {
        "train": voices[: len(voices) - 2 * held],
        "validation": voices[len(voices) - 2 * held : len(voices) - held],
        "test": voices[len(voices) - held :],
    }


def _derived_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from the corpus seed and a key (stable across machines, runs and worker counts)."""
    key = ":".join([str(int(seed)), *(str(part) for part in parts)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def _wav_bytes(audio: np.ndarray) -> bytes:
    """16-bit PCM WAV bytes at :data:`SAMPLING_RATE` (deterministic; decodes fast)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0), SAMPLING_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _mic_channel(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A light microphone channel: gain -6..0 dB and white noise 35-55 dB below the speech RMS."""
    gain = 10.0 ** (rng.uniform(-6.0, 0.0) / 20.0)
    rms = float(np.sqrt(np.mean(clean.astype(np.float64) ** 2)))
    noise_rms = rms * 10.0 ** (-rng.uniform(35.0, 55.0) / 20.0)
    mic = gain * (clean + noise_rms * rng.standard_normal(clean.shape[0]))
    return mic.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Utterance:
    """One synthesis job: everything a worker needs to produce the rows of one utterance."""

    utterance_id: str
    text: str
    voice: str
    rate: int
    pitch: int
    language: str
    seed: int
    conditions: tuple[LDVCondition, ...]
    mic_augment: bool
    augment: SpeechAugmentation | None = None
    recording: str | None = None  # a real recording spoken instead of synthesising `text` (``voice`` is its speaker)


def _render(job: _Utterance) -> list[dict[str, Any]]:
    """Synthesise one utterance (or read its real recording) and simulate its LDV recording under each condition."""
    if job.recording is not None:
        from ..data.real_voices import decode_recording

        clean = decode_recording(job.recording)
    else:
        clean = synthesize_voice(job.text, voice=job.voice, rate=job.rate, pitch=job.pitch)
    if job.augment is not None:
        # the perturbed talker is what both the microphone and the LDV hear; the room, level and noise are the
        # microphone's own (the LDV gets the simulator's channel)
        clean = perturb_speech(clean, SAMPLING_RATE, _derived_seed(job.seed, "talker", job.utterance_id), job.augment)
        mic = microphone_channel(clean, SAMPLING_RATE, _derived_seed(job.seed, "room", job.utterance_id), job.augment)
    elif job.mic_augment:
        mic = _mic_channel(clean, np.random.default_rng(_derived_seed(job.seed, "mic", job.utterance_id)))
    else:
        mic = clean
    mic_bytes = _wav_bytes(mic)
    rows = []
    for condition in job.conditions:
        row_id = f"{job.utterance_id}-{condition.name}"
        # The LDV sees the talker through the surface, not through the microphone: simulate from the clean clip.
        ldv = simulate_ldv(clean, SAMPLING_RATE, condition, seed=_derived_seed(job.seed, "ldv", row_id))
        rows.append(
            {
                "id": row_id,
                "utterance_id": job.utterance_id,
                "text": job.text,
                "language": job.language,
                "voice": job.voice,
                "rate": job.rate,
                "pitch": job.pitch,
                "condition": condition.name,
                "mic_audio": {"bytes": mic_bytes, "path": f"{job.utterance_id}.wav"},
                "ldv_audio": {"bytes": _wav_bytes(ldv), "path": f"{row_id}.wav"},
                "duration": clean.shape[0] / SAMPLING_RATE,
            }
        )
    return rows


def corpus_features() -> Any:
    """The ``datasets.Features`` of a paired corpus split (audio columns hold 16-bit WAV bytes at 16 kHz)."""
    from datasets import Audio, Features, Value

    return Features(
        {
            "id": Value("string"),
            "utterance_id": Value("string"),
            "text": Value("string"),
            "language": Value("string"),
            "voice": Value("string"),
            "rate": Value("int32"),
            "pitch": Value("int32"),
            "condition": Value("string"),
            "mic_audio": Audio(sampling_rate=SAMPLING_RATE),
            "ldv_audio": Audio(sampling_rate=SAMPLING_RATE),
            "duration": Value("float32"),
        }
    )


def ordered_map(function: Callable[[Any], Any], items: Sequence[Any], num_proc: int,
                preload: str = __name__) -> Iterator[Any]:
    """``function`` of each item, in item order, computed here or in ``num_proc`` worker processes.

    Workers never share state with this process (the parent may run torch threads or hold the eSpeak lock):
    they come from a fork server that has imported ``preload`` once (POSIX), or are spawned (elsewhere; each
    then imports the package, seconds per worker). ``function`` must be picklable (a module-level function or a
    ``functools.partial`` of one).
    """
    if num_proc <= 1 or len(items) < 2:
        yield from map(function, items)
        return
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([preload])
    else:
        context = multiprocessing.get_context("spawn")
    chunksize = max(1, min(16, len(items) // (4 * num_proc)))
    with concurrent.futures.ProcessPoolExecutor(max_workers=num_proc, mp_context=context) as pool:
        yield from pool.map(function, items, chunksize=chunksize)


def build_paired_corpus(
    num_train: int,
    num_eval: int,
    seed: int,
    conditions: Sequence[str | LDVCondition] = (DEFAULT_CONDITION,),
    voices: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    language: str = "en",
    mic_augment: bool = True,
    kinds: Sequence[str] = TEXT_KINDS,
    rate_range: tuple[int, int] = RATE_RANGE,
    pitch_range: tuple[int, int] = PITCH_RANGE,
    num_proc: int = 1,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    augment: SpeechAugmentation | bool | None = None,
    held_out: HeldOutRegistry | str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    extra_train_texts: Sequence[str] = (),
    train_conditions: Sequence[str | LDVCondition] | None = None,
    extra_train_recordings: Sequence[Recording] = (),
) -> Any:
    """Synthesise a paired microphone / LDV corpus with held-out texts and held-out voices.

    Each utterance is one text spoken by one voice at a rate and pitch drawn from ``rate_range`` and
    ``pitch_range``. It yields one row per LDV condition: with several conditions the same microphone clip
    (identical bytes) appears once per condition, next to that condition's LDV clip.

    Splits are disjoint in text (every text occurs in one split only), in voice (:func:`split_voices`) and in
    speaker (two voices built from one speaker's recordings, e.g. ``flite:slt`` and
    ``festival:cmu_us_slt_arctic_hts``, are never in different splits).
    Everything derives from ``seed``: texts from ``make_texts(num_train + 2 * num_eval, seed)`` (the first
    ``num_eval`` for ``test``, the next ``num_eval`` for ``validation``, the rest for ``train``), each
    utterance's voice, rate and pitch and its microphone noise from ``(seed, utterance_id)``, each LDV clip's
    simulator seed from ``(seed, id)``. The same arguments give identical audio bytes, for any ``num_proc``.

    Args:
        num_train: utterances in ``train``.
        num_eval: utterances in each of ``validation`` and ``test``.
        seed: corpus seed.
        conditions: LDV conditions (preset names, JSON paths or :class:`LDVCondition`), names distinct.
        voices: eSpeak voices (``"en-us+f3"``) or other engines' voices (``"flite:slt"``,
            ``"festival:kal_diphone"``: :mod:`~modeling_qwen2audio_ldv.synthetic.voices`), split by
            :func:`split_voices`; or a mapping ``{"train": [...], "validation": [...], "test": [...]}`` of disjoint
            voice lists. ``None``: ``DEFAULT_VOICES[language]``. Flite and Festival take the drawn rate as a
            duration stretch and the pitch as a pitch factor; a voice without pitch control speaks at its own
            pitch (its rows' ``pitch`` is 50).
        language: ``"en"`` or ``"cmn"`` (Mandarin); selects the text templates and the default voices.
        mic_augment: pass the microphone clip through a light channel (gain -6..0 dB, white noise 35-55 dB
            below the speech), so it is not digitally clean; ``False`` stores the synthesised clip as is. The
            LDV clip is always simulated from the synthesised clip.
        kinds: text kinds (see :func:`make_texts`).
        rate_range: inclusive speaking-rate range, eSpeak words per minute.
        pitch_range: inclusive base-pitch range, eSpeak units 0-99.
        num_proc: worker processes for synthesis and simulation (1: in this process).
        cache_dir: folder for the Arrow files (memory-mapped by the returned dataset); default a temporary folder
            removed when the process exits: call ``save_to_disk`` to keep the corpus.
        progress: show a progress bar per split.
        augment: speech-training augmentations (``True``: the defaults of
            :class:`~modeling_qwen2audio_ldv.synthetic.augment.SpeechAugmentation`): each utterance's talker is
            perturbed (speed 0.9-1.1, pitch) before both recordings, and its microphone clip gets a room response,
            a level and background noise instead of the light ``mic_augment`` channel; every draw comes from
            ``(seed, utterance_id)``. ``None``/``False``: none.
        held_out: the held-out registry the voices are checked against (default:
            :func:`~modeling_qwen2audio_ldv.data.held_out.default_registry`; manifest paths are added to it).
        extra_train_texts: texts the train split speaks first, in place of as many template texts (``train``
            keeps ``num_train`` utterances), e.g. word spans of a target domain's transcripts; a text also drawn
            for validation or test, or listed twice, is left out (the splits stay disjoint in text).
        train_conditions: when given, each train utterance is recorded under one of these conditions (round robin
            from a seeded start: one row per utterance, the condition's name in ``condition``) instead of under
            every one of ``conditions``, which the eval splits keep; a mix of surfaces for one adapter.
        extra_train_recordings: real recordings (:func:`~modeling_qwen2audio_ldv.data.other_speakers.draw_recordings`)
            added to ``train`` after its ``num_train`` utterances (ids ``train-rec-<i>``): each goes through the same
            microphone channel and LDV simulation as a synthesised utterance (``voice`` is its speaker, ``rate`` 0,
            ``text`` its own-language transcript, which only distillation may train on). Their speakers and files
            are checked against ``held_out``.

    Returns:
        ``datasets.DatasetDict`` with splits ``train`` (``num_train * len(conditions)`` rows), ``validation`` and
        ``test`` (``num_eval * len(conditions)`` rows each) and columns ``id``, ``utterance_id``, ``text``,
        ``language``, ``voice``, ``rate``, ``pitch``, ``condition``, ``mic_audio``, ``ldv_audio`` (16 kHz
        ``Audio`` columns of 16-bit WAV bytes) and ``duration`` (seconds).

    Raises:
        ImportError: ``espeakng-loader`` (or, with ``augment``, ``audiomentations``) is missing
            (``pip install "qwen2audio-ldv[speech]"``).
        FileNotFoundError: a Flite or Festival voice is asked for and the program is not installed.
        HeldOutError: a voice speaks for a held-out test speaker (a ``ValueError``).
        ValueError: bad sizes, ranges, conditions or voices.
    """
    check_language(language)
    _check_sizes(num_train, num_eval, rate_range, pitch_range)
    resolved = _resolve_conditions(conditions)
    mixed = None if train_conditions is None else _resolve_conditions(train_conditions)
    sizes = {"train": num_train, "validation": num_eval, "test": num_eval}
    voice_splits = _voice_splits(voices, language, sizes)
    # every voice, the held-out splits' too: a test speaker heard in validation is as lost as one heard in training
    registry = resolve_registry(held_out)
    registry.check_voices(voice for split in SPLITS for voice in voice_splits[split])
    _check_recordings(extra_train_recordings, registry)
    augmentation = SpeechAugmentation() if augment is True else (augment or None)
    if augmentation is not None and not isinstance(augmentation, SpeechAugmentation):
        raise ValueError(f"`augment` must be a bool or a SpeechAugmentation, got {type(augment).__name__}")
    # Fail on a bad voice or a missing engine now, not in a worker after minutes.
    for voice in sorted({voice for split in SPLITS if sizes[split] for voice in voice_splits[split]}):
        synthesize_voice("a" if language == "en" else "一", voice=voice)

    texts = make_texts(num_train + 2 * num_eval, seed, kinds=kinds, language=language)
    # test texts first, then validation, then train: the eval sets do not move when `num_train` changes (and a
    # larger `num_eval` extends a smaller one's test set), so runs with more training data score the same clips
    offsets = {"test": 0, "validation": num_eval, "train": 2 * num_eval}
    split_texts = {split: [texts[offsets[split] + i] for i in range(sizes[split])] for split in SPLITS}
    if extra_train_texts:
        held = set(split_texts["validation"]) | set(split_texts["test"])
        extra = [text for text in dict.fromkeys(extra_train_texts) if text not in held][:num_train]
        taken = set(extra)
        split_texts["train"] = extra + [text for text in split_texts["train"] if text not in taken][: num_train - len(extra)]
    jobs = {
        split: _utterance_jobs(split, split_texts[split], voice_splits[split], seed, rate_range, pitch_range,
                               language, resolved if split != "train" or mixed is None else mixed, mic_augment,
                               augmentation, one_condition=split == "train" and mixed is not None)
        for split in SPLITS
    }
    jobs["train"] += _recording_jobs(extra_train_recordings, seed, resolved if mixed is None else mixed,
                                     mic_augment, augmentation, one_condition=mixed is not None)
    return _write_splits(jobs, cache_dir, num_proc, progress)


def _check_recordings(recordings: Sequence[Recording], registry: HeldOutRegistry) -> None:
    """Refuse real recordings of a held-out speaker or byte-identical to a held-out file."""
    registry.check_voices((recording.speaker for recording in recordings), speaker_of=str)
    if registry.audio_sha256:
        held = [str(r.path) for r in recordings if file_sha256(r.path) in registry.audio_sha256]
        if held:
            raise HeldOutError(f"extra_train_recordings: {len(held)} file(s) are held-out test data "
                               f"({registry.describe()}): {', '.join(held[:10])}")


def _recording_jobs(recordings: Sequence[Recording], seed: int, conditions: tuple[LDVCondition, ...],
                    mic_augment: bool, augment: SpeechAugmentation | None, one_condition: bool) -> list[_Utterance]:
    """The jobs of real recordings added to ``train``: like synthesised utterances, from a file instead of text."""
    condition_start = _derived_seed(seed, "conditions", "train-rec")
    return [
        _Utterance(utterance_id=f"train-rec-{index:05d}", text=recording.text, voice=recording.speaker, rate=0,
                   pitch=NEUTRAL_PITCH, language=recording.language, seed=int(seed),
                   conditions=(conditions[(condition_start + index) % len(conditions)],) if one_condition
                   else conditions,
                   mic_augment=bool(mic_augment), augment=augment, recording=str(recording.path))
        for index, recording in enumerate(recordings)
    ]


def _check_sizes(num_train: int, num_eval: int, rate_range: tuple[int, int], pitch_range: tuple[int, int]) -> None:
    if num_train < 1 or num_eval < 0:
        raise ValueError(f"`num_train` ({num_train}) must be >= 1 and `num_eval` ({num_eval}) >= 0")
    for name, (low, high), (lowest, highest) in (
        ("rate_range", rate_range, (80, 450)),
        ("pitch_range", pitch_range, (0, 99)),
    ):
        if not lowest <= low <= high <= highest:
            raise ValueError(f"`{name}` ({(low, high)}) must be an increasing pair within {lowest}-{highest}")


def _resolve_conditions(conditions: Any) -> tuple[LDVCondition, ...]:
    """One condition or a sequence of them (preset names, JSON paths, LDVCondition), resolved; names distinct."""
    if isinstance(conditions, (str, os.PathLike, LDVCondition)):
        conditions = (conditions,)
    resolved = tuple(get_condition(condition) for condition in conditions)
    names = [condition.name for condition in resolved]
    if not resolved or len(set(names)) != len(names):
        raise ValueError(f"`conditions` must be non-empty with distinct names, got {names}")
    return resolved


def _voice_splits(voices: Any, language: str, sizes: Mapping[str, int]) -> dict[str, tuple[str, ...]]:
    """The voices of each split (see :func:`build_paired_corpus`'s ``voices``), checked to be there and disjoint."""
    if isinstance(voices, str):
        voices = (voices,)
    if voices is None:
        voices = DEFAULT_VOICES[language]
    if isinstance(voices, Mapping):
        voice_splits = {split: tuple(voices.get(split, ())) for split in SPLITS}
        if set(voices) - set(SPLITS):
            raise ValueError(f"`voices` keys ({sorted(voices)}) must be among {SPLITS}")
    elif sizes["test"] == 0:  # nothing held out: every voice trains
        voice_splits = {"train": tuple(voices), "validation": (), "test": ()}
    else:
        voice_splits = split_voices(voices)
    for split in SPLITS:
        if sizes[split] and not voice_splits[split]:
            raise ValueError(f"no voices for split {split!r}")
    for index, first in enumerate(SPLITS):
        for second in SPLITS[index + 1 :]:
            shared = set(voice_splits[first]) & set(voice_splits[second])
            if shared:
                raise ValueError(f"splits {first!r} and {second!r} share voices {sorted(shared)}")
            speakers = set(map(voice_speaker, voice_splits[first])) & set(map(voice_speaker, voice_splits[second]))
            if speakers:
                pairs = [f"{v} ({voice_speaker(v)})" for split in (first, second) for v in voice_splits[split]
                         if voice_speaker(v) in speakers]
                raise ValueError(f"splits {first!r} and {second!r} share speakers: {', '.join(pairs)}; a held-out "
                                 "split must not hear a speaker that another split has (order the voices so the "
                                 "held-out tail holds whole speakers, or pass a mapping)")
    return voice_splits


def _utterance_jobs(
    split: str,
    texts: Sequence[str],
    voices: Sequence[str],
    seed: int,
    rate_range: tuple[int, int],
    pitch_range: tuple[int, int],
    language: str,
    conditions: tuple[LDVCondition, ...],
    mic_augment: bool,
    augment: SpeechAugmentation | None = None,
    one_condition: bool = False,
) -> list[_Utterance]:
    """The synthesis jobs of one split: ``texts[i]`` is utterance ``<split>-<i:05d>``; with ``one_condition`` each
    is recorded under one of ``conditions`` (round robin from a seeded start), else under all of them."""
    # Round robin from a seeded start: every voice of the split speaks about equally often.
    start = _derived_seed(seed, "voices", split)
    condition_start = _derived_seed(seed, "conditions", split)
    jobs = []
    for index, text in enumerate(texts):
        utterance_id = f"{split}-{index:05d}"
        rng = np.random.default_rng(_derived_seed(seed, "voice", utterance_id))
        voice = voices[(start + index) % len(voices)]
        rate = int(rng.integers(rate_range[0], rate_range[1] + 1))
        pitch = int(rng.integers(pitch_range[0], pitch_range[1] + 1))  # drawn for every voice: the draws stay aligned
        jobs.append(
            _Utterance(
                utterance_id=utterance_id,
                text=text,
                voice=voice,
                rate=rate,
                pitch=pitch if supports_pitch(voice) else NEUTRAL_PITCH,
                language=language,
                seed=int(seed),
                conditions=(conditions[(condition_start + index) % len(conditions)],) if one_condition else conditions,
                mic_augment=bool(mic_augment),
                augment=augment,
            )
        )
    return jobs


def _write_splits(
    jobs: Mapping[str, list[_Utterance]], cache_dir: str | os.PathLike | None, num_proc: int, progress: bool
) -> Any:
    """Render every job (one pass, one worker pool) and stream the rows to one Arrow file per split.

    Returns:
        ``datasets.DatasetDict`` of the splits, memory-mapped from ``cache_dir`` (default: a temporary folder).
    """
    from datasets import Dataset, DatasetDict
    from datasets.arrow_writer import ArrowWriter
    from datasets.fingerprint import get_temporary_cache_files_directory
    from tqdm.auto import tqdm

    folder = Path(cache_dir) if cache_dir is not None else Path(get_temporary_cache_files_directory())
    folder.mkdir(parents=True, exist_ok=True)
    features = corpus_features()
    started = time.perf_counter()
    rendered = ordered_map(_render, [job for split in SPLITS for job in jobs[split]], num_proc)
    splits = {}
    try:
        for split in SPLITS:
            path = folder / f"ldv-corpus-{uuid.uuid4().hex}-{split}.arrow"
            with ArrowWriter(features=features, path=str(path)) as writer:
                for _ in tqdm(range(len(jobs[split])), desc=f"synthesising {split}", unit="utt", disable=not progress):
                    for row in next(rendered):
                        writer.write(features.encode_example(row))
                writer.finalize()
            splits[split] = Dataset.from_file(str(path), split=split)
    finally:
        rendered.close()  # shuts the worker pool down
    elapsed = time.perf_counter() - started
    total_utterances = sum(len(split_jobs) for split_jobs in jobs.values())
    num_conditions = len(jobs["train"][0].conditions)  # train has at least one utterance
    logger.info(
        "synthesised %d utterances (%d rows, %.1f min of microphone audio) in %.1f s (%.1f utterances/s)",
        total_utterances,
        sum(len(dataset) for dataset in splits.values()),
        sum(sum(dataset["duration"]) for dataset in splits.values()) / num_conditions / 60.0,
        elapsed,
        total_utterances / max(elapsed, 1e-9),
    )
    return DatasetDict(splits)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def write_audiofolder(corpus: Any, output: str | os.PathLike) -> Path:
    """Write a paired corpus as two ``audiofolder`` trees: ``mic/<split>/`` and ``ldv/<split>/``.

    Each split folder holds WAV files (16 kHz, 16-bit) and a ``metadata.csv`` with columns ``file_name``,
    ``text``, ``voice``, ``condition`` and ``utterance_id`` (``condition`` is ``"mic"`` for the microphone clips,
    which are written once per utterance). ``load_dataset("audiofolder", data_dir=output / "ldv")`` then gives
    the LDV splits.

    Returns:
        ``output`` as a :class:`~pathlib.Path`.
    """
    from datasets import Audio

    output = Path(output)
    for split, dataset in corpus.items():
        raw = dataset.cast_column("mic_audio", Audio(decode=False)).cast_column("ldv_audio", Audio(decode=False))
        mic_dir, ldv_dir = output / "mic" / split, output / "ldv" / split
        mic_dir.mkdir(parents=True, exist_ok=True)
        ldv_dir.mkdir(parents=True, exist_ok=True)
        columns = ["file_name", "text", "voice", "condition", "utterance_id"]
        with (
            open(mic_dir / "metadata.csv", "w", newline="", encoding="utf-8") as mic_file,
            open(ldv_dir / "metadata.csv", "w", newline="", encoding="utf-8") as ldv_file,
        ):
            mic_csv, ldv_csv = csv.writer(mic_file), csv.writer(ldv_file)
            mic_csv.writerow(columns)
            ldv_csv.writerow(columns)
            seen: set[str] = set()
            for row in raw:
                if row["utterance_id"] not in seen:
                    seen.add(row["utterance_id"])
                    name = f"{_safe_name(row['utterance_id'])}.wav"
                    (mic_dir / name).write_bytes(row["mic_audio"]["bytes"])
                    mic_csv.writerow([name, row["text"], row["voice"], "mic", row["utterance_id"]])
                name = f"{_safe_name(row['id'])}.wav"
                (ldv_dir / name).write_bytes(row["ldv_audio"]["bytes"])
                ldv_csv.writerow([name, row["text"], row["voice"], row["condition"], row["utterance_id"]])
    return output


def write_paired_audiofolder(corpus: Any, output: str | os.PathLike) -> Path:
    """Write a paired corpus as one ``audiofolder`` that ``train_hf.py`` reads as it is.

    Layout: ``<output>/<split>/metadata.csv`` with columns ``file_name`` (the LDV clip), ``text``,
    ``mic_file_name`` (the microphone clip of the same utterance), ``condition``, ``voice`` and ``utterance_id``;
    the clips (16 kHz, 16-bit WAV) under ``<split>/ldv/`` and ``<split>/mic/`` (one microphone clip per utterance,
    shared by its conditions). Train with
    ``python train_hf.py --train_data <output> --mic_audio_column mic_file_name`` (test split: the LDV eval set).

    Returns:
        ``output`` as a :class:`~pathlib.Path`.
    """
    from datasets import Audio

    output = Path(output)
    for split, dataset in corpus.items():
        if len(dataset) == 0:
            continue
        raw = dataset.cast_column("mic_audio", Audio(decode=False)).cast_column("ldv_audio", Audio(decode=False))
        folder = output / split
        (folder / "ldv").mkdir(parents=True, exist_ok=True)
        (folder / "mic").mkdir(parents=True, exist_ok=True)
        with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file_name", "text", "mic_file_name", "condition", "voice", "utterance_id"])
            seen: set[str] = set()
            for row in raw:
                mic_name = f"mic/{_safe_name(row['utterance_id'])}.wav"
                if row["utterance_id"] not in seen:
                    seen.add(row["utterance_id"])
                    (folder / mic_name).write_bytes(row["mic_audio"]["bytes"])
                ldv_name = f"ldv/{_safe_name(row['id'])}.wav"
                (folder / ldv_name).write_bytes(row["ldv_audio"]["bytes"])
                writer.writerow([ldv_name, row["text"], mic_name, row["condition"], row["voice"], row["utterance_id"]])
    return output

