# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Transcribe recordings of any length: files, folders or arrays, with segment times.

A recording that fits the encoder's window (the feature extractor's ``n_samples``: 30 s on Qwen2-Audio) is
transcribed in one pass. A longer one is split into windows that fit:

1. Sound and pause are told apart per 10 ms frame against the noise floor (of each window-long block, so a
   drifting background stays background). Every pause of at least :data:`MIN_PAUSE_SECONDS` is cut, and a
   stretch of speech longer than the window is cut further; the cuts are chosen together (dynamic programming:
   the fewest cuts that fit, each at the lowest mean power in reach).
2. Consecutive windows share ``overlap_seconds`` of audio centred on each cut, so a word that a forced cut
   (no pause in reach) splits is heard whole by at least one window.
3. Each window's silent edges are cut off (:data:`EDGE_MARGIN_SECONDS` kept) and silent windows are skipped; the
   windows are transcribed in batches, across files too, with the prompt and generation of the evaluation
   (:func:`modeling_qwen2audio_ldv.inference.generate.generate_transcripts`).
4. The texts are stitched: where the shared audio holds speech, the longest run of words that ends one window's
   text and starts the next one's is kept once (word-overlap alignment; characters for Chinese). A silent
   overlap cannot hold a repeated word, so nothing is removed there.
5. Each window gives one segment, from its first to its last active frame between the neighbouring cuts
   (times in seconds, increasing).

Example:
    >>> from modeling_qwen2audio_ldv.inference.transcribe import transcribe
    >>> result = transcribe(model, processor, "meeting_ldv.flac")     # any format and rate soundfile/ffmpeg read
    >>> result["text"], result["segments"][0]                      # {"start": 0.12, "end": 27.9, "text": ...}
    >>> results = transcribe(model, processor, ["a.wav", "b.wav"], on_error="skip")   # [{"error": ...}, ...]

Command line: ``ldv-qwen2audio transcribe FILE_OR_DIR... --model ADAPTER_OR_BASE [--output out.jsonl|.srt|.txt]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import AUDIO_EXTENSIONS, SAMPLING_RATE

logger = logging.getLogger(__name__)

#: Power frames for the energy analysis (s).
FRAME_SECONDS = 0.01
#: A frame is active (sound, not pause) only within this many dB of the loudest frame of its block (a window).
ACTIVITY_RANGE_DB = 45.0
#: A frame is active when it is at least this many dB above the noise floor (10th percentile of the frames).
FLOOR_MARGIN_DB = 8.0
#: Audio kept before the first and after the last active frame when a window's silent edges are cut off before
#: transcription (s): two frames, for the frame grid's uncertainty of the onset and the offset.
EDGE_MARGIN_SECONDS = 0.02
#: A recording whose peak |sample| is below this is digital silence (as in data validation).
SILENCE_PEAK = 1e-6
#: Shortest run of inactive frames that counts as a pause between two windows of a long recording (s).
MIN_PAUSE_SECONDS = 0.25
#: Shortest stretch over which a cut's quietness is measured (s).
MIN_QUIET_SPAN_SECONDS = 0.1


@dataclasses.dataclass
class Window:
    """One piece of a recording sent to the model, in samples: ``[start, end)``; its segment is ``[cut_before,
    cut_after)`` (the audio it is responsible for), ``shared_speech`` whether the audio it shares with the
    previous window holds speech."""

    start: int
    end: int
    cut_before: int
    cut_after: int
    shared_speech: bool = False


# ------------------------------------------------------------------------------------------------- windows
def window_samples(processor: Any) -> int:
    """The encoder's window in samples at 16 kHz: the feature extractor's ``n_samples`` (30 s on Qwen2-Audio)."""
    extractor = processor.feature_extractor
    if int(extractor.sampling_rate) != SAMPLING_RATE:
        raise ValueError(f"the feature extractor works at {extractor.sampling_rate} Hz; expected {SAMPLING_RATE}")
    samples = getattr(extractor, "n_samples", None)
    if not samples:
        samples = int(extractor.chunk_length) * int(extractor.sampling_rate)
    return int(samples)


def _frame_power(audio: np.ndarray, frame: int) -> np.ndarray:
    count = max(1, math.ceil(audio.shape[0] / frame))
    padded = np.zeros(count * frame, dtype=np.float64)
    padded[: audio.shape[0]] = audio
    return (padded.reshape(count, frame) ** 2).mean(axis=1)


def _active_frames(power: np.ndarray) -> np.ndarray:
    """Frames that hold sound above the noise floor: at least :data:`FLOOR_MARGIN_DB` above the 10th percentile
    of the non-zero frames and within :data:`ACTIVITY_RANGE_DB` of the loudest frame (every frame of audio
    without quieter stretches; none for digital silence)."""
    peak = float(power.max()) if power.size else 0.0
    if peak < SILENCE_PEAK**2:
        return np.zeros(power.shape, dtype=bool)
    threshold = peak * 10 ** (-ACTIVITY_RANGE_DB / 10)
    floor = float(np.percentile(power[power > 0], 10)) * 10 ** (FLOOR_MARGIN_DB / 10)
    if floor < peak:
        threshold = max(threshold, floor)
    return power >= threshold


def _activity(power: np.ndarray, block: int) -> np.ndarray:
    """:func:`_active_frames` judged per block of ``block`` frames (a background that drifts over a long
    recording does not turn into speech)."""
    if power.size and float(power.max()) < SILENCE_PEAK**2:
        return np.zeros(power.shape, dtype=bool)
    active = np.zeros(power.shape, dtype=bool)
    for start in range(0, power.shape[0], block):
        part = power[start : start + block]
        if part.size < block // 2 and start:  # a short last block joins the one before
            part = power[start - block // 2 : start + block]
            active[start:] = _active_frames(part)[block // 2 :]
        else:
            active[start : start + block] = _active_frames(part)
    return active


def _quiet_cost(power: np.ndarray, span: int) -> np.ndarray:
    """Mean power (relative to the loudest frame) over ``span`` frames centred on each frame boundary."""
    frames = power.shape[0]
    cumulative = np.concatenate([[0.0], np.cumsum(power)])
    boundaries = np.arange(frames + 1)
    lo, hi = np.clip(boundaries - span // 2, 0, frames), np.clip(boundaries - span // 2 + span, 0, frames)
    return (cumulative[hi] - cumulative[lo]) / np.maximum(hi - lo, 1) / max(float(power.max()), 1e-30) + 1e-12


def plan_windows(audio: np.ndarray, window: int, overlap: int, sampling_rate: int = SAMPLING_RATE,
                 min_pause_seconds: float | None = None) -> list[Window]:
    """Split ``audio`` (samples) into windows of at most ``window`` samples that share ``overlap`` samples.

    A recording that fits is one window. In a longer one every pause (a run of inactive 10 ms frames of at least
    ``min_pause_seconds``, default :data:`MIN_PAUSE_SECONDS`, not at the very start or end) gets a cut, so a
    window holds one stretch of speech and a segment's times follow the speech; a stretch too long for the window
    gets more cuts. The cuts are chosen together by dynamic programming over the frame boundaries: they minimise
    the summed mean power over ``max(overlap, 0.1 s)`` around each cut (a cut in speech costs orders of magnitude
    more than one in a pause, and every cut costs something: the fewest cuts, each as quiet as the others allow),
    subject to every window fitting and every pause holding a cut. Window ``i`` spans
    ``[cut_before - overlap // 2, cut_after + overlap - overlap // 2)`` where the cuts fall in speech; a cut in a
    pause is shared by no audio (the window ends and the next begins at it).
    """
    total = int(audio.shape[0])
    if window <= 0:
        raise ValueError(f"window ({window}) must be positive")
    if not 0 <= overlap < window // 2:
        raise ValueError(f"overlap ({overlap} samples) must be >= 0 and less than half the window ({window})")
    if total <= window:
        return [Window(0, total, 0, total)]
    frame = max(1, int(round(FRAME_SECONDS * sampling_rate)))
    half = overlap // 2
    power = _frame_power(audio, frame)
    frames = power.shape[0]
    active = _activity(power, max(1, window // frame))
    min_pause = max(1, int(round((MIN_PAUSE_SECONDS if min_pause_seconds is None else min_pause_seconds)
                                 * sampling_rate / frame)))
    edges = np.flatnonzero(np.diff(np.concatenate([[1], active.astype(np.int8), [1]])))
    pauses = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_pause and 0 < a and b < frames]
    cost = _quiet_cost(power, max(1, int(round(max(overlap, MIN_QUIET_SPAN_SECONDS * sampling_rate) / frame))))
    cost[0] = cost[frames] = 0.0  # the start and the end are not cuts
    # consecutive cuts at most `step` boundaries apart (a stretch plus the shared audio fits the window), and the
    # cut before boundary c no earlier than the start of the last pause that ends before c (each pause is cut)
    step = max(1, (window - overlap) // frame)
    lower = np.zeros(frames + 1, dtype=np.int64)
    for start, stop in pauses:
        lower[stop + 1 :] = start
    best = np.full(frames + 1, np.inf)
    parent = np.full(frames + 1, -1, dtype=np.int64)
    best[0] = 0.0
    queue: list[int] = []  # boundaries before c with increasing best (a monotone deque: sliding minimum)
    head = 0
    for c in range(1, frames + 1):
        i = c - 1
        if np.isfinite(best[i]):
            while len(queue) > head and best[queue[-1]] >= best[i]:
                queue.pop()
            queue.append(i)
        bound = max(c - step, int(lower[c]))
        while head < len(queue) and queue[head] < bound:
            head += 1
        if head < len(queue):
            best[c] = best[queue[head]] + cost[c]
            parent[c] = queue[head]
    if not np.isfinite(best[frames]):  # cannot happen for overlap < window / 2; a clear error all the same
        raise RuntimeError(f"no window plan fits windows of {window} samples with {overlap} shared")
    cuts, c = [], int(parent[frames])
    while c > 0:
        cuts.append(min(c * frame, total))
        c = int(parent[c])
    # a cut in a pause needs no shared audio (nobody speaks there, and shared audio would reach into the
    # neighbouring utterance when the pause is shorter than the overlap); a forced cut in speech shares `overlap`
    in_pause = np.zeros(frames + 1, dtype=bool)
    for start, stop in pauses:
        in_pause[start : stop + 1] = True
    windows, start, cut_before = [], 0, 0
    for cut in reversed(cuts):
        quiet = bool(in_pause[min(frames, cut // frame)])
        windows.append(Window(start, min(total, cut + (0 if quiet else overlap - half)), cut_before, cut))
        start, cut_before = (cut if quiet else max(0, cut - half)), cut
    windows.append(Window(start, total, cut_before, total))
    return windows


def _segment_bounds(active: np.ndarray, frame: int, low: int, high: int, total: int) -> tuple[int, int] | None:
    """First and last active sample of ``[low, high)`` (frame resolution), or ``None`` when it is silent."""
    first, last = low // frame, max(low // frame + 1, math.ceil(high / frame))
    hits = np.flatnonzero(active[first:last])
    if hits.size == 0:
        return None
    return max(low, (first + int(hits[0])) * frame), min(high, total, (first + int(hits[-1]) + 1) * frame)


# ------------------------------------------------------------------------------------------------- stitching
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _units(text: str) -> tuple[list[str], str]:
    """Words of ``text`` (characters for CJK text) and the separator that joins them back."""
    if _CJK.search(text):
        return [c for c in text if not c.isspace()], ""
    return text.split(), " "


def _comparable(unit: str) -> str:
    stripped = "".join(c for c in unit if not unicodedata.category(c).startswith("P"))
    return (stripped or unit).casefold()


def seam_overlap(previous: Sequence[str], following: Sequence[str]) -> int:
    """Length of the longest run of units that ends ``previous`` and starts ``following`` (case and
    punctuation ignored): the words both windows heard in their shared audio."""
    left = [_comparable(u) for u in previous]
    right = [_comparable(u) for u in following]
    for length in range(min(len(left), len(right)), 0, -1):
        if left[-length:] == right[:length]:
            return length
    return 0


def stitch(texts: Sequence[str], shared_speech: Sequence[bool] | None = None) -> list[str]:
    """Per-window texts with the words repeated at each seam removed from the later window.

    ``shared_speech[i]``: whether window ``i`` shares speech with window ``i - 1``; where it does not, no word can
    be heard twice and nothing is removed (a repeated word there was spoken twice).
    """
    out: list[str] = []
    previous: list[str] = []
    for index, text in enumerate(texts):
        units, separator = _units(text)
        if index and (shared_speech is None or shared_speech[index]):
            units = units[seam_overlap(previous, units):]
        out.append(separator.join(units))
        if units:
            previous = units
    return out


def _join(parts: Sequence[str]) -> str:
    parts = [p for p in parts if p]
    if not parts:
        return ""
    separator = "" if all(_CJK.search(p) for p in parts) else " "
    return separator.join(parts)


# ------------------------------------------------------------------------------------------------- audio in
def _to_mono_16k(samples: np.ndarray, rate: int, where: str) -> np.ndarray:
    from scipy.signal import resample_poly

    audio = np.asarray(samples)
    if audio.ndim == 2:
        audio = audio.mean(axis=1) if audio.shape[0] > audio.shape[1] else audio.mean(axis=0)
    if audio.ndim != 1:
        raise ValueError(f"{where}: expected mono or (samples, channels) audio, got shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"{where}: audio samples must be floating point in [-1, 1], got {audio.dtype}")
    if int(rate) != SAMPLING_RATE:
        divisor = math.gcd(int(rate), SAMPLING_RATE)
        audio = resample_poly(audio, SAMPLING_RATE // divisor, int(rate) // divisor)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        raise ValueError(f"{where}: the audio is empty")
    if not np.isfinite(audio).all():
        raise ValueError(f"{where}: the audio contains NaN or Inf samples")
    return audio


def load_recording(item: Any, sampling_rate: int = SAMPLING_RATE, where: str = "audio") -> np.ndarray:
    """One recording as mono float32 at 16 kHz: a path (any format soundfile or ffmpeg decodes, any rate and
    channel count), a datasets audio dict (``array``, ``sampling_rate``) or an array at ``sampling_rate``."""
    if isinstance(item, (str, os.PathLike)):
        from ..data.loading import decode_audio_file

        path = os.fspath(item)
        samples, rate = decode_audio_file(path)
        return _to_mono_16k(samples, rate, path)
    if isinstance(item, Mapping) or hasattr(item, "get_all_samples"):
        return _to_mono_16k(item["array"], int(item["sampling_rate"]), where)
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().float().numpy()
    if isinstance(item, np.ndarray):
        return _to_mono_16k(item, sampling_rate, where)
    raise TypeError(f"{where}: expected a path, an audio dict or an array, got {type(item).__name__}")


def find_audio_files(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Files named directly (whatever their ending) and, for each folder, the audio files under it (sorted)."""
    files: list[str] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                logger.warning("%s: no audio files (%s)", path, ", ".join(AUDIO_EXTENSIONS[:6]) + ", ...")
            files.extend(found)
        else:
            files.append(str(path))
    return files


# ------------------------------------------------------------------------------------------------- transcribe
@dataclasses.dataclass
class _Pending:
    name: str | None
    duration: float
    windows: list[Window]
    bounds: list[tuple[int, int] | None]
    texts: list[str | None]
    error: str | None = None

    def done(self) -> bool:
        return self.error is not None or all(t is not None for t, b in zip(self.texts, self.bounds) if b)

    def result(self) -> dict[str, Any]:
        if self.error is not None:
            return {"file": self.name, "text": None, "segments": [], "duration": None, "error": self.error}
        kept = [i for i, b in enumerate(self.bounds) if b is not None]
        stitched = stitch([self.texts[i] for i in kept], [self.windows[i].shared_speech for i in kept])
        segments = [
            {"start": round(self.bounds[i][0] / SAMPLING_RATE, 3), "end": round(self.bounds[i][1] / SAMPLING_RATE, 3),
             "text": text}
            for i, text in zip(kept, stitched) if text
        ]
        return {"file": self.name, "text": _join(stitched), "segments": segments, "duration": self.duration}


def _default_max_new_tokens(window_seconds: float) -> int:
    # fast speech is ~4 words (~6 tokens) per second; generation stops at the end of turn anyway
    return max(32, int(math.ceil(8 * window_seconds)))


def transcribe(
    model: Any,
    processor: Any,
    audio_or_paths: Any,
    *,
    batch_size: int = 8,
    audio_domain: str | None = None,
    instruction: str | None = None,
    max_new_tokens: int | None = None,
    overlap_seconds: float | None = None,
    window_seconds: float | None = None,
    sampling_rate: int = SAMPLING_RATE,
    on_error: str = "raise",
    progress: bool = True,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Transcribe recordings of any length; one result per recording.

    Args:
        model: a Qwen2-Audio model (with or without domain adapter) in eval mode.
        processor: its ``Qwen2AudioProcessor``; the window is its feature extractor's ``n_samples``.
        audio_or_paths: one recording or a list: file paths (any format soundfile or ffmpeg reads, any rate and
            channel count), datasets audio dicts, or 1-D float arrays at ``sampling_rate``.
        batch_size: windows per ``generate`` call (windows of several recordings share batches).
        audio_domain: ``None``/``"ldv"`` (the active adapter), ``"mic"`` (no adapter) or an adapter's name.
        instruction: the prompt's instruction (default
            :data:`~modeling_qwen2audio_ldv.data.collator.DEFAULT_INSTRUCTION`).
        max_new_tokens: generation length per window (default: 8 per second of window, at least 32).
        overlap_seconds: audio shared by consecutive windows of a long recording (default: 5% of the window,
            at most 1 s; cuts in pauses share none).
        window_seconds: the longest piece transcribed at once (default: the encoder's whole window). A model
            trained on short clips only (the repo's mini base: utterances of at most ~4 s in a 30 s window) reads
            best when a longer recording is cut at every pause: pass about its training clips' length.
        sampling_rate: the rate of arrays given without one.
        on_error: ``"raise"`` stops at the first recording that cannot be read or transcribed; ``"skip"``
            gives it a result with ``text`` ``None`` and ``error`` (the message, naming the file) and goes on.
        progress: a progress bar over recordings.

    Returns:
        For one recording a dict, for a list a list of dicts in input order: ``file`` (the path, or ``None`` for
        an array), ``text``, ``segments`` (``[{"start": s, "end": s, "text": ...}, ...]``, times in seconds,
        increasing) and ``duration`` (s); plus ``error`` for a recording that failed (``on_error="skip"``).
    """
    from tqdm.auto import tqdm

    from .generate import generate_transcripts
    from ..data.collator import DEFAULT_INSTRUCTION

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size ({batch_size}) must be >= 1")
    if audio_domain is not None:
        known = ["mic", "ldv", *model.list_domain_adapters()] if hasattr(model, "list_domain_adapters") else []
        if audio_domain not in known:
            raise ValueError(f"unknown audio_domain {audio_domain!r}; this model knows {known or 'none (no adapter)'}")
    single = not isinstance(audio_or_paths, (list, tuple))
    items = [audio_or_paths] if single else list(audio_or_paths)
    window = window_samples(processor)
    if window_seconds is not None:
        if not 0 < window_seconds * SAMPLING_RATE <= window:
            raise ValueError(f"window_seconds ({window_seconds}) must be > 0 and at most the encoder's window "
                             f"({window / SAMPLING_RATE:g} s)")
        window = int(round(window_seconds * SAMPLING_RATE))
    window_seconds = window / SAMPLING_RATE
    if overlap_seconds is None:
        overlap_seconds = min(1.0, 0.05 * window_seconds)
    overlap = int(round(overlap_seconds * SAMPLING_RATE))
    instruction = instruction or DEFAULT_INSTRUCTION
    max_new_tokens = max_new_tokens or _default_max_new_tokens(window_seconds)
    frame = int(round(FRAME_SECONDS * SAMPLING_RATE))

    records: list[_Pending] = []
    queue: list[tuple[int, int, np.ndarray]] = []  # (record, window, samples)
    results: list[dict[str, Any] | None] = [None] * len(items)
    finished = 0
    bar = tqdm(total=len(items), desc="transcribing", unit="file", disable=not progress)

    def fail(index: int, error: BaseException) -> None:
        record = records[index]
        message = str(error) if record.name is None or record.name in str(error) else f"{record.name}: {error}"
        if on_error == "raise":
            try:
                named = type(error)(message)
            except TypeError:  # an exception type that takes other arguments
                named = RuntimeError(message)
            raise named from error
        record.error = message
        logger.error("%s", message)

    def generate(batch: list[tuple[int, int, np.ndarray]]) -> None:
        live = [entry for entry in batch if records[entry[0]].error is None]
        if not live:
            return
        try:
            texts = generate_transcripts(model, processor, [clip for _, _, clip in live], instruction,
                                         batch_size=len(live), max_new_tokens=max_new_tokens,
                                         audio_domain=audio_domain, progress=False)
        except (RuntimeError, ValueError) as error:
            if len(live) == 1:
                fail(live[0][0], error)
                return
            for entry in live:  # find the window at fault; the others still get their text
                generate([entry])
            return
        for (record, index, _), text in zip(live, texts):
            records[record].texts[index] = text

    def flush(everything: bool) -> None:
        nonlocal finished
        while len(queue) >= batch_size or (everything and queue):
            batch = queue[:batch_size]
            del queue[:batch_size]
            generate(batch)
        while finished < len(records) and records[finished].done():
            results[finished] = records[finished].result()
            finished += 1
            bar.update(1)

    try:
        for position, item in enumerate(items):
            is_path = isinstance(item, (str, os.PathLike))
            name = os.fspath(item) if is_path else None
            record = _Pending(name, 0.0, [], [], [])
            records.append(record)
            try:
                audio = load_recording(item, sampling_rate, where=name or f"recording {position}")
            except (OSError, RuntimeError, ValueError, TypeError, EOFError) as error:
                fail(position, error)
                flush(False)
                continue
            record.duration = round(audio.shape[0] / SAMPLING_RATE, 3)
            record.windows = plan_windows(audio, window, overlap)
            power = _frame_power(audio, frame)
            margin = int(round(EDGE_MARGIN_SECONDS * SAMPLING_RATE))
            active = _activity(power, max(1, window // frame))
            for index, w in enumerate(record.windows):
                first = w.start // frame
                if index:
                    w.shared_speech = bool(active[first : math.ceil(record.windows[index - 1].end / frame)].any())
                sound = _segment_bounds(active, frame, w.start, w.end, audio.shape[0])
                bounds = None
                if sound is not None:  # silent windows are not transcribed (a model may invent words in silence)
                    bounds = _segment_bounds(active, frame, w.cut_before, w.cut_after, audio.shape[0])
                    bounds = bounds or (w.cut_before, w.cut_after)  # sound only in the shared audio
                    clip = audio
                    if len(record.windows) > 1:
                        # a window's silent edges are cut off: it is transcribed like a clip of speech
                        clip = audio[max(w.start, sound[0] - margin) : min(w.end, sound[1] + margin)]
                    queue.append((position, index, clip))
                record.bounds.append(bounds)
                record.texts.append(None)
            flush(False)
        flush(True)
    finally:
        bar.close()
    return results[0] if single else results


# ------------------------------------------------------------------------------------------------- output
def _srt_time(seconds: float) -> str:
    milliseconds = int(round(seconds * 1000))
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def to_srt(result: Mapping[str, Any]) -> str:
    """SubRip subtitles of one result: one cue per segment."""
    cues = []
    for number, segment in enumerate(result.get("segments") or [], start=1):
        cues.append(f"{number}\n{_srt_time(segment['start'])} --> {_srt_time(segment['end'])}\n{segment['text']}\n")
    return "\n".join(cues)


def write_results(results: Sequence[Mapping[str, Any]], output: str | os.PathLike) -> list[Path]:
    """Write results by the output's ending: ``.jsonl`` (one object per recording), ``.txt`` (the text; with
    several recordings ``file<TAB>text`` lines) or ``.srt`` (one recording: that file; several: a folder named
    after the output, one ``<recording>.srt`` each). Failed recordings appear in JSONL with their ``error``."""
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in (".jsonl", ".txt", ".srt"):
        raise ValueError(f"{output}: unknown output format {suffix!r}; use .jsonl, .srt or .txt")
    output.parent.mkdir(parents=True, exist_ok=True)
    good = [r for r in results if r.get("error") is None]
    if suffix == ".jsonl":
        output.write_text("".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in results), encoding="utf-8")
        return [output]
    if suffix == ".txt":
        if len(results) == 1:
            text = (good[0]["text"] + "\n") if good else ""
        else:
            text = "".join(f"{r['file']}\t{r['text']}\n" for r in good)
        output.write_text(text, encoding="utf-8")
        return [output]
    if len(results) == 1:
        output.write_text(to_srt(good[0]) if good else "", encoding="utf-8")
        return [output]
    folder = output.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for position, result in enumerate(good):
        stem = Path(result["file"]).stem if result.get("file") else f"recording_{position}"
        name, count = stem, 1
        while name in used:
            count += 1
            name = f"{stem}_{count}"
        used.add(name)
        path = folder / f"{name}.srt"
        path.write_text(to_srt(result), encoding="utf-8")
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------------- loading
def _is_plain_base(name_or_path: str, revision: str | None) -> bool:
    """Whether ``name_or_path`` holds a stock Qwen2-Audio checkpoint (no domain adapter)."""
    from transformers.utils import cached_file

    config_file = os.path.join(name_or_path, "config.json") if os.path.isdir(name_or_path) else cached_file(
        name_or_path, "config.json", revision=revision, _raise_exceptions_for_missing_entries=False)
    if not config_file or not os.path.isfile(config_file):
        raise FileNotFoundError(f"{name_or_path}: no config.json (expected an adapter, or a Qwen2-Audio model)")
    with open(config_file, encoding="utf-8") as handle:
        model_type = json.load(handle).get("model_type")
    if model_type not in ("qwen2_audio", "qwen2_audio_ldv"):
        raise ValueError(f"{name_or_path}: model_type {model_type!r}; expected a Qwen2-Audio model or an LDV adapter")
    return model_type == "qwen2_audio"


def load_for_transcription(model_name_or_path: str, processor_name_or_path: str | None = None,
                           revision: str | None = None, dtype: str | None = None, device: str | None = None):
    """``(model, processor)`` from an adapter (directory or Hub repo) or from a plain Qwen2-Audio base, which gets
    no adapter (``adapter_type="none"``: the base model exactly)."""
    if not _is_plain_base(model_name_or_path, revision):
        from ..tools.hub import load_adapter_model

        return load_adapter_model(model_name_or_path, processor_name_or_path, revision, dtype, device)
    from transformers import AutoProcessor

    from ..configuration_qwen2audio_ldv import DomainAdapterConfig
    from ..modeling_qwen2audio_ldv import Qwen2AudioLDVForConditionalGeneration

    kwargs: dict[str, Any] = {"revision": revision} if revision else {}
    if dtype is not None:
        kwargs["dtype"] = getattr(torch, dtype)
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        model_name_or_path, adapter_config=DomainAdapterConfig(adapter_type="none"), **kwargs)
    processor = AutoProcessor.from_pretrained(processor_name_or_path or model_name_or_path,
                                              **({"revision": revision} if revision and not processor_name_or_path
                                                 else {}))
    return model.to(device or "cpu").eval(), processor


# ------------------------------------------------------------------------------------------------- CLI
def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``transcribe`` subcommand."""
    parser = subparsers.add_parser(
        "transcribe",
        help="transcribe recordings (files or folders, any length) with an adapter or a base model",
        description=(
            "Transcribe audio files (any format soundfile or ffmpeg reads, any rate, any length: recordings longer "
            "than the encoder's window are split at pauses and stitched). Exit code 1 when any file failed; the "
            "others are still transcribed."
        ),
    )
    parser.add_argument("inputs", nargs="+", help="audio files and/or folders (searched recursively)")
    parser.add_argument("--model", required=True,
                        help="adapter directory or Hub repo, or a plain Qwen2-Audio model (e.g. mini_base)")
    parser.add_argument("--processor", default=None, help="processor source (default: the base model)")
    parser.add_argument("--revision", default=None, help="revision of the --model repo (pin a commit)")
    parser.add_argument("--output", default=None,
                        help="out.jsonl, out.srt or out.txt (default: file<TAB>text lines on stdout)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per generate call (default 8)")
    parser.add_argument("--audio-domain", default=None,
                        help="ldv (default: the active adapter), mic (no adapter) or an adapter name")
    parser.add_argument("--no-adapter", action="store_true", help="transcribe with the base model alone")
    parser.add_argument("--instruction", default=None, help="prompt instruction (default: Transcribe the audio.)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="tokens per window (default: 8 per second of window, at least 32)")
    parser.add_argument("--overlap-seconds", type=float, default=None,
                        help="audio shared by consecutive windows of a long recording (default 5%% of the window)")
    parser.add_argument("--window-seconds", type=float, default=None,
                        help="longest piece transcribed at once (default: the encoder's window; 3 for the mini base, "
                        "which was trained on short clips)")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: cpu)")
    parser.set_defaults(func=_transcribe_command)


def _transcribe_command(args: argparse.Namespace) -> int:
    import contextlib

    if args.no_adapter and args.audio_domain:
        logger.error("--no-adapter and --audio-domain exclude each other")
        return 2
    files = find_audio_files(args.inputs)
    if not files:
        logger.error("no audio files in %s", " ".join(args.inputs))
        return 2
    try:
        if args.output and Path(args.output).suffix.lower() not in (".jsonl", ".txt", ".srt"):
            raise ValueError(f"--output {args.output}: unknown format; use .jsonl, .srt or .txt")
        model, processor = load_for_transcription(args.model, args.processor, args.revision, args.dtype, args.device)
    except (OSError, ValueError) as error:
        logger.error("%s", error)
        return 2
    disable = args.no_adapter and hasattr(model, "disable_domain_adapter")
    try:
        with model.disable_domain_adapter() if disable else contextlib.nullcontext():
            results = transcribe(model, processor, files, batch_size=args.batch_size, audio_domain=args.audio_domain,
                                 instruction=args.instruction, max_new_tokens=args.max_new_tokens,
                                 overlap_seconds=args.overlap_seconds, window_seconds=args.window_seconds,
                                 on_error="skip")
    except ValueError as error:  # arguments, not files: nothing was transcribed
        logger.error("%s", error)
        return 2
    failed = [r for r in results if r.get("error") is not None]
    if args.output:
        for path in write_results(results, args.output):
            print(f"written {path}", file=sys.stderr)
    else:
        for result in results:
            if result.get("error") is None:
                print(f"{result['file']}\t{result['text']}")
    if failed:
        print(f"{len(failed)} of {len(results)} file(s) failed:", file=sys.stderr)
        for result in failed:
            print(f"  {result['error']}", file=sys.stderr)
        return 1
    return 0


__all__ = ["find_audio_files", "load_for_transcription", "load_recording", "plan_windows", "seam_overlap", "stitch",
           "to_srt", "transcribe", "window_samples", "write_results"]
