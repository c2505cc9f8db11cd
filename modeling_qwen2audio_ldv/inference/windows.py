# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The transcription rules for recordings longer than one window: where to cut, what each window sends to the
model, and how the texts of consecutive windows are stitched.

Every rule of the long-file path lives here (:mod:`.transcribe` runs them; see its docstring for the steps):

- sound vs pause per 10 ms frame against the noise floor of each window-long block (:data:`FRAME_SECONDS`,
  :data:`ACTIVITY_RANGE_DB`, :data:`FLOOR_MARGIN_DB`);
- the cuts (:func:`plan_windows`: every pause of :data:`MIN_PAUSE_SECONDS`, more in long speech, chosen together
  by dynamic programming) and the audio consecutive windows share;
- each window's clip and segment (:func:`window_pieces`: silent windows skipped, silent edges cut off with
  :data:`EDGE_MARGIN_SECONDS` kept);
- stitching (:func:`stitch`, :func:`seam_overlap`, :func:`join_texts`): words heard twice at a seam kept once,
  characters for CJK text (:data:`~modeling_qwen2audio_ldv.text.CJK_CHAR`, the rule scoring uses).

All positions are in samples at :data:`~modeling_qwen2audio_ldv.audio.SAMPLING_RATE`.
"""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..audio import SAMPLING_RATE, SILENCE_PEAK_THRESHOLD
from ..text import CJK_CHAR

#: Power frames for the energy analysis (s).
FRAME_SECONDS = 0.01
#: A frame is active (sound, not pause) only within this many dB of the loudest frame of its block (a window).
ACTIVITY_RANGE_DB = 45.0
#: A frame is active when it is at least this many dB above the noise floor (10th percentile of the frames).
FLOOR_MARGIN_DB = 8.0
#: Audio kept before the first and after the last active frame when a window's silent edges are cut off before
#: transcription (s), never past the window's own cuts. A soft onset or ending (a fricative, a nasal) can sit below
#: the activity threshold, the more so at a low level over the background; the margin keeps it. 50 ms is also the
#: edge of the clips the mini base was trained on (eSpeak clips keep 50 ms around their sound). On
#: ``benchmarks/bench_long_transcription.py``'s grid (54 recordings) whole recordings read at 0.44% CER with 50 ms,
#: 0.66% with 20 ms (1.03% at the lowest level, where onsets are detected up to 61 ms late) and 2.0% with 200 ms (a
#: long silent lead, which that base never saw), against 0.87% for the same utterances as separate clips.
EDGE_MARGIN_SECONDS = 0.05
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
    """The encoder's window in samples at :data:`~modeling_qwen2audio_ldv.audio.SAMPLING_RATE`: the feature
    extractor's ``n_samples`` (30 s on Qwen2-Audio)."""
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
    if peak < SILENCE_PEAK_THRESHOLD**2:
        return np.zeros(power.shape, dtype=bool)
    threshold = peak * 10 ** (-ACTIVITY_RANGE_DB / 10)
    floor = float(np.percentile(power[power > 0], 10)) * 10 ** (FLOOR_MARGIN_DB / 10)
    if floor < peak:
        threshold = max(threshold, floor)
    return power >= threshold


def _activity(power: np.ndarray, block: int) -> np.ndarray:
    """:func:`_active_frames` judged per block of ``block`` frames (a background that drifts over a long
    recording does not turn into speech)."""
    if power.size and float(power.max()) < SILENCE_PEAK_THRESHOLD**2:
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


def window_pieces(audio: np.ndarray, windows: Sequence[Window], window: int
                  ) -> list[tuple[tuple[int, int] | None, np.ndarray | None]]:
    """What each window of ``plan_windows(audio, window, ...)`` sends to the model, and its segment.

    Sets each window's ``shared_speech`` (whether the audio it shares with the window before holds an active
    frame). Returns, per window, ``(bounds, clip)``: ``bounds`` the segment's first and last active sample between
    its cuts (the cuts themselves when the sound is only in the shared audio); a silent window gives ``(None,
    None)`` and is not transcribed (a model may invent words in silence). ``clip`` is the whole ``audio`` for a
    single window, else the window with its silent edges cut off (:data:`EDGE_MARGIN_SECONDS` kept): each window is
    transcribed like a clip of speech.
    """
    frame = int(round(FRAME_SECONDS * SAMPLING_RATE))
    power = _frame_power(audio, frame)
    margin = int(round(EDGE_MARGIN_SECONDS * SAMPLING_RATE))
    active = _activity(power, max(1, window // frame))
    pieces: list[tuple[tuple[int, int] | None, np.ndarray | None]] = []
    for index, w in enumerate(windows):
        first = w.start // frame
        if index:
            w.shared_speech = bool(active[first : math.ceil(windows[index - 1].end / frame)].any())
        sound = _segment_bounds(active, frame, w.start, w.end, audio.shape[0])
        if sound is None:
            pieces.append((None, None))
            continue
        bounds = _segment_bounds(active, frame, w.cut_before, w.cut_after, audio.shape[0])
        bounds = bounds or (w.cut_before, w.cut_after)  # sound only in the shared audio
        clip = audio
        if len(windows) > 1:
            clip = audio[max(w.start, sound[0] - margin) : min(w.end, sound[1] + margin)]
        pieces.append((bounds, clip))
    return pieces


# ------------------------------------------------------------------------------------------------- stitching
def _units(text: str) -> tuple[list[str], str]:
    """Words of ``text`` (characters for CJK text) and the separator that joins them back."""
    if CJK_CHAR.search(text):
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


def join_texts(parts: Sequence[str]) -> str:
    """The stitched texts of a recording as one text: joined without a separator when every part is CJK text,
    with spaces otherwise (empty parts left out)."""
    parts = [p for p in parts if p]
    if not parts:
        return ""
    separator = "" if all(CJK_CHAR.search(p) for p in parts) else " "
    return separator.join(parts)


__all__ = ["Window", "join_texts", "plan_windows", "seam_overlap", "stitch", "window_pieces", "window_samples"]
