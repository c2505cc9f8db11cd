# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Microphone recordings of the talker an adapter is for: the speaker-dependent route to a real voice.

An adapter trained on synthetic voices does not carry to a real person's LDV speech; a few minutes of that
person's own English speech through the LDV simulator does (the real-voice set's speaker as the talker: 5.6 minutes
of her as long files, through this route, recovered 105% of her scored clips' LDV gap, where every synthetic or
foreign-language source reached 14% at most; ``benchmarks/README.md``, "What the adapter needs to hear"). ``train_hf.py --talker_recordings DIR`` is that route
as a recipe: any microphone recordings of the talker, no transcripts, pieces of them joining the demo corpus beside
its synthetic rows, each with its own simulated LDV version, trained through ``distill`` (which reads no text).

What a folder may hold: audio files in any format soundfile or ffmpeg decodes (:data:`~modeling_qwen2audio_ldv.audio.
AUDIO_EXTENSIONS`), any rate and channel count, any length. Each file is cut at its pauses into pieces of at most
``max_seconds`` (:func:`cut_at_pauses`): every pause of 0.25 s or more is a place to cut, the speech between
consecutive cuts is kept whole when it fits, and pieces shorter than ``min_seconds`` or silent are left out. A file
that cannot be read, or holds no speech, is reported by name and skipped (or stops the run with
``on_bad_file="error"``); a file byte-identical to held-out test data is always refused
(:mod:`~modeling_qwen2audio_ldv.data.held_out`).

Example:
    >>> from modeling_qwen2audio_ldv.data.talker import prepare_talker_recordings
    >>> talker = prepare_talker_recordings("recordings/alice_mic", "outputs/talker_pieces")
    >>> talker.seconds / 60, len(talker.recordings)        # minutes of speech, pieces
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from ..audio import DECODE_ERRORS, SAMPLING_RATE, error_line, find_audio_files, load_audio
from .held_out import HeldOutError, HeldOutRegistry, file_sha256, resolve_registry
from .other_speakers import Recording

logger = logging.getLogger(__name__)

#: A piece's ``text``: the pieces have no transcript, and only objectives that read none train on them.
TALKER_TEXT = "(untranscribed talker recording)"
#: A piece's ``language``: unknown (nothing reads it).
TALKER_LANGUAGE = "und"
#: Longest piece (s). On the real-voice set's speaker (5.6 min as long files; ``benchmarks/README.md``) pieces of up
#: to 4 s recovered 105% of her LDV gap in 11.5 min, pieces of up to 8 s 83% in 21 min: 1.7x the training audio,
#: half the distinct pieces.
MAX_SECONDS = 4.0
#: Shortest piece (s); shorter speech between two pauses is left out.
MIN_SECONDS = 0.5
#: A piece whose RMS is below this (-60 dBFS) is background, not speech: the pause detector judges sound against the
#: recording's own floor, so a file of room noise alone would otherwise be all "sound". Speech recorded at any usable
#: level sits at -40 to -15 dBFS.
QUIET_RMS = 1e-3


@dataclasses.dataclass(frozen=True)
class TalkerRecordings:
    """The pieces of a talker's recordings, ready to join a corpus."""

    recordings: list[Recording]  #: one per piece, in file order then time order
    files: int  #: files that gave at least one piece
    seconds: float  #: audio in the pieces (s; the pauses inside a piece count)
    skipped: list[tuple[str, str]]  #: ``(file, why)`` for every file that gave no piece

    def describe(self) -> str:
        return (f"{len(self.recordings)} pieces ({self.seconds / 60:.1f} min) from {self.files} file(s)"
                + (f", {len(self.skipped)} file(s) skipped" if self.skipped else ""))


def talker_speaker(source: str | os.PathLike) -> str:
    """The speaker id of a talker folder's pieces (the corpus rows' ``voice``): ``talker:<folder name>``."""
    return f"talker:{Path(source).resolve().name}"


def cut_at_pauses(audio: np.ndarray, max_seconds: float = MAX_SECONDS, min_seconds: float = MIN_SECONDS,
                  sampling_rate: int = SAMPLING_RATE) -> list[tuple[int, int]]:
    """Where to cut a recording into pieces of speech: ``[(start, end), ...]`` in samples, in order.

    The cuts are those long-file transcription makes (:func:`~modeling_qwen2audio_ldv.inference.windows.
    plan_windows` with no shared audio: a cut in every pause, more in speech too long for one piece); each
    stretch of sound between two cuts keeps :data:`~modeling_qwen2audio_ldv.inference.windows.EDGE_MARGIN_SECONDS`
    around it, and consecutive stretches are joined (with the pause between them) while the piece stays within
    ``max_seconds``: a piece is a phrase or a few, as a prompt would be. Pieces under ``min_seconds`` are dropped.
    """
    from ..inference.windows import EDGE_MARGIN_SECONDS, plan_windows, window_pieces

    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"min_seconds ({min_seconds}) must be > 0 and <= max_seconds ({max_seconds})")
    total = int(audio.shape[0])
    longest = int(round(max_seconds * sampling_rate))
    margin = int(round(EDGE_MARGIN_SECONDS * sampling_rate))
    # the plan's windows hold at most `longest - 2 * margin` samples, so each stretch of sound fits with its margins
    window = max(longest - 2 * margin, 2)
    # each window's bounds: its first and last active sample (also for a recording that is one window); None: silent
    stretches = [bounds for bounds, _ in window_pieces(audio, plan_windows(audio, window, 0, sampling_rate), window)
                 if bounds is not None]
    pieces: list[tuple[int, int]] = []
    for first, last in stretches:
        # the margins never reach into the piece before (a cut forced inside speech has sound on both sides)
        first, last = max(0, first - margin, pieces[-1][1] if pieces else 0), min(total, last + margin)
        if last <= first:
            continue
        if pieces and last - pieces[-1][0] <= longest:
            pieces[-1] = (pieces[-1][0], last)
        else:
            pieces.append((first, last))
    shortest = min_seconds * sampling_rate
    return [(first, last) for first, last in pieces
            if last - first >= shortest and _rms(audio[first:last]) >= QUIET_RMS]


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def prepare_talker_recordings(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    max_seconds: float = MAX_SECONDS,
    min_seconds: float = MIN_SECONDS,
    held_out: HeldOutRegistry | str | os.PathLike | None = None,
    on_bad_file: str = "skip",
) -> TalkerRecordings:
    """Cut every audio file of ``source`` (a folder, searched recursively, or one file) into pieces of speech
    (:func:`cut_at_pauses`) and write each as a 16 kHz mono WAV file under ``output_dir``.

    Args:
        source: the talker's microphone recordings.
        output_dir: where the pieces go (``<sha256 of the file>-<piece>.wav``; a piece already there is rewritten).
        held_out: the held-out registry the files are checked against (default: the default registry).
        on_bad_file: ``"skip"`` logs a file that cannot be decoded or holds no speech and goes on; ``"error"``
            raises on it.

    Raises:
        FileNotFoundError: ``source`` does not exist or holds no audio files.
        HeldOutError: a file is byte-identical to held-out test data (a clip or source of the real-voice set).
        ValueError: ``on_bad_file="error"`` and a file is bad, or no file gave a piece (the message lists why).
    """
    if on_bad_file not in ("skip", "error"):
        raise ValueError(f"on_bad_file must be 'skip' or 'error', not {on_bad_file!r}")
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"--talker_recordings {source}: no such file or folder")
    files = find_audio_files([source])
    if not files:
        raise FileNotFoundError(f"--talker_recordings {source}: no audio files in it (expected .wav, .flac, .mp3, "
                                "... recordings of the talker)")
    registry = resolve_registry(held_out)
    speaker = talker_speaker(source if source.is_dir() else source.parent)
    registry.check_voices([speaker], speaker_of=str)
    digests = {path: file_sha256(path) for path in files}
    held = [path for path, digest in digests.items() if digest in registry.audio_sha256]
    if held:
        raise HeldOutError(f"--talker_recordings: {len(held)} file(s) are held-out test data ({registry.describe()})"
                           f": {', '.join(held[:10])}")
    import soundfile as sf

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    recordings: list[Recording] = []
    skipped: list[tuple[str, str]] = []
    seconds, used = 0.0, 0
    for path in files:
        try:
            audio = load_audio(path)
        except DECODE_ERRORS as error:
            why = f"cannot be decoded ({type(error).__name__}: {error_line(error)})"
        else:
            pieces = cut_at_pauses(audio, max_seconds, min_seconds)
            why = None if pieces else f"holds no speech of {min_seconds:g} s or more"
        if why is not None:
            if on_bad_file == "error":
                raise ValueError(f"--talker_recordings: {path} {why}")
            logger.warning("--talker_recordings: skipped %s: it %s", path, why)
            skipped.append((path, why))
            continue
        used += 1
        stem = digests[path][:16]
        for index, (first, last) in enumerate(pieces):
            piece = output_dir / f"{stem}-{index:04d}.wav"
            sf.write(str(piece), audio[first:last], SAMPLING_RATE, subtype="PCM_16")
            length = (last - first) / SAMPLING_RATE
            recordings.append(Recording(piece, speaker, TALKER_LANGUAGE, TALKER_TEXT, length))
            seconds += length
    if not recordings:
        raise ValueError(f"--talker_recordings {source}: no file gave a piece of speech: "
                         + "; ".join(f"{path}: {why}" for path, why in skipped[:10]))
    talker = TalkerRecordings(recordings, used, seconds, skipped)
    logger.info("--talker_recordings %s: %s", source, talker.describe())
    return talker


def talker_rows(recordings: list[Recording], count: int, seed: int) -> list[Recording]:
    """``count`` training rows from the pieces: distinct pieces (a seeded draw) when there are enough, else every
    piece in turn (a seeded order, repeated), so no piece has more than one row more than another. Each row gets
    its own LDV draw in the corpus."""
    if count < 0:
        raise ValueError(f"`count` ({count}) must be >= 0")
    if not recordings or not count:
        return []
    order = np.random.default_rng(_seed(seed)).permutation(len(recordings))
    return [recordings[order[i % len(recordings)]] for i in range(count)]


def _seed(seed: int) -> int:
    """The draw's own seed (not the corpus seed itself: other draws from that seed stay independent of it)."""
    return int.from_bytes(hashlib.sha256(f"talker:{int(seed)}".encode()).digest()[:8], "little")


__all__ = ["MAX_SECONDS", "MIN_SECONDS", "QUIET_RMS", "TALKER_LANGUAGE", "TALKER_TEXT", "TalkerRecordings", "cut_at_pauses",
           "prepare_talker_recordings", "talker_rows", "talker_speaker"]
