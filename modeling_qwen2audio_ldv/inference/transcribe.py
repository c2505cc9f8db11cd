# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Transcribe recordings of any length: files, folders or arrays, with segment times.

A recording that fits the encoder's window (the feature extractor's ``n_samples``: 30 s on Qwen2-Audio) is
transcribed in one pass. A longer one is split into windows that fit:

1. Sound and pause are told apart per 10 ms frame against the noise floor (of each window-long block, so a
   drifting background stays background). Every pause of at least ``MIN_PAUSE_SECONDS`` is cut, and a
   stretch of speech longer than the window is cut further; the cuts are chosen together (dynamic programming:
   the fewest cuts that fit, each at the lowest mean power in reach).
2. Consecutive windows share ``overlap_seconds`` of audio centred on each cut, so a word that a forced cut
   (no pause in reach) splits is heard whole by at least one window.
3. Each window's silent edges are cut off (``EDGE_MARGIN_SECONDS`` kept) and silent windows are skipped; the
   windows are transcribed in batches, across files too, with the prompt and generation of the evaluation
   (:func:`modeling_qwen2audio_ldv.inference.generate.generate_transcripts`).
4. The texts are stitched: where the shared audio holds speech, the longest run of words that ends one window's
   text and starts the next one's is kept once (word-overlap alignment; characters for Chinese). A silent
   overlap cannot hold a repeated word, so nothing is removed there.
5. Each window gives one segment, from its first to its last active frame between the neighbouring cuts
   (times in seconds, increasing).

The rules of steps 1-5 and their constants live in :mod:`modeling_qwen2audio_ldv.inference.windows`, the output
formats in :mod:`modeling_qwen2audio_ldv.inference.writers`; this module reads the recordings, batches their
windows and assembles the results.

Example:
    >>> from modeling_qwen2audio_ldv.inference.transcribe import transcribe
    >>> result = transcribe(model, processor, "meeting_ldv.flac")     # any format and rate soundfile/ffmpeg read
    >>> result["text"], result["segments"][0]                      # {"start": 0.12, "end": 27.9, "text": ...}
    >>> results = transcribe(model, processor, ["a.wav", "b.wav"], on_error="skip")   # [{"error": ...}, ...]

Command line: ``ldv-qwen2audio transcribe FILE_OR_DIR... --model ADAPTER_OR_BASE [--output out.jsonl|.srt|.txt]``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..audio import SAMPLING_RATE, load_recording
from ..data.collator import DEFAULT_INSTRUCTION
from .generate import generate_transcripts
from .windows import Window, join_texts, plan_windows, stitch, window_pieces, window_samples

logger = logging.getLogger(__name__)

#: Errors of a recording that cannot be read (a bad file, a bad array): with ``on_error="skip"`` it gets an
#: ``error`` and the others go on.
_READ_ERRORS = (OSError, RuntimeError, ValueError, TypeError, EOFError)


@dataclasses.dataclass
class _Pending:
    """One recording on its way: its windows, each window's segment bounds (``None``: silent, not transcribed) and
    text (``None`` until generated), or the error that stopped it."""

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
        return {"file": self.name, "text": join_texts(stitched), "segments": segments, "duration": self.duration}


def _default_max_new_tokens(window_seconds: float) -> int:
    # fast speech is ~4 words (~6 tokens) per second; generation stops at the end of turn anyway
    return max(32, int(math.ceil(8 * window_seconds)))


def _window_and_overlap(processor: Any, window_seconds: float | None, overlap_seconds: float | None
                        ) -> tuple[int, int]:
    """The window and the audio consecutive windows share, in samples (defaults: see :func:`transcribe`)."""
    window = window_samples(processor)
    if window_seconds is not None:
        if not 0 < window_seconds * SAMPLING_RATE <= window:
            raise ValueError(f"window_seconds ({window_seconds}) must be > 0 and at most the encoder's window "
                             f"({window / SAMPLING_RATE:g} s)")
        window = int(round(window_seconds * SAMPLING_RATE))
    window_seconds = window / SAMPLING_RATE
    if overlap_seconds is None:
        overlap_seconds = min(1.0, 0.05 * window_seconds)
    return window, int(round(overlap_seconds * SAMPLING_RATE))


class _WindowBatches:
    """The windows of many recordings, transcribed in shared batches of ``batch_size``.

    :meth:`add` reads one recording and queues its windows; :meth:`flush` transcribes the full batches (with
    ``everything``, all that is queued) and sets, in input order, the result of each recording whose windows are
    all done.
    """

    def __init__(self, model: Any, processor: Any, count: int, *, batch_size: int, instruction: str,
                 max_new_tokens: int, audio_domain: str | None, on_error: str, progress: bool) -> None:
        self.model, self.processor = model, processor
        self.batch_size, self.instruction, self.max_new_tokens = batch_size, instruction, max_new_tokens
        self.audio_domain, self.on_error = audio_domain, on_error
        self.records: list[_Pending] = []
        self.queue: list[tuple[int, int, np.ndarray]] = []  # (record, window, samples)
        self.results: list[dict[str, Any] | None] = [None] * count
        self.finished = 0
        self.bar = tqdm(total=count, desc="transcribing", unit="file", disable=not progress)

    def fail(self, index: int, error: BaseException) -> None:
        """Give recording ``index`` the error (its message naming the file), or raise it (``on_error="raise"``)."""
        record = self.records[index]
        message = str(error) if record.name is None or record.name in str(error) else f"{record.name}: {error}"
        if self.on_error == "raise":
            try:
                named = type(error)(message)
            except TypeError:  # an exception type that takes other arguments
                named = RuntimeError(message)
            raise named from error
        record.error = message
        logger.error("%s", message)

    def add(self, position: int, item: Any, sampling_rate: int, window: int, overlap: int) -> None:
        """Read recording ``position`` (a path, an audio dict or an array), plan its windows and queue them."""
        name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
        record = _Pending(name, 0.0, [], [], [])
        self.records.append(record)
        try:
            audio = load_recording(item, sampling_rate, where=name or f"recording {position}")
        except _READ_ERRORS as error:
            self.fail(position, error)
            return
        record.duration = round(audio.shape[0] / SAMPLING_RATE, 3)
        record.windows = plan_windows(audio, window, overlap)
        for index, (bounds, clip) in enumerate(window_pieces(audio, record.windows, window)):
            if clip is not None:
                self.queue.append((position, index, clip))
            record.bounds.append(bounds)
            record.texts.append(None)

    def _generate(self, batch: list[tuple[int, int, np.ndarray]]) -> None:
        live = [entry for entry in batch if self.records[entry[0]].error is None]
        if not live:
            return
        try:
            texts = generate_transcripts(self.model, self.processor, [clip for _, _, clip in live], self.instruction,
                                         batch_size=len(live), max_new_tokens=self.max_new_tokens,
                                         audio_domain=self.audio_domain, progress=False)
        except (RuntimeError, ValueError) as error:
            if len(live) == 1:
                self.fail(live[0][0], error)
                return
            for entry in live:  # find the window at fault; the others still get their text
                self._generate([entry])
            return
        for (record, index, _), text in zip(live, texts):
            self.records[record].texts[index] = text

    def flush(self, everything: bool) -> None:
        while len(self.queue) >= self.batch_size or (everything and self.queue):
            batch = self.queue[: self.batch_size]
            del self.queue[: self.batch_size]
            self._generate(batch)
        while self.finished < len(self.records) and self.records[self.finished].done():
            self.results[self.finished] = self.records[self.finished].result()
            self.finished += 1
            self.bar.update(1)


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
    window, overlap = _window_and_overlap(processor, window_seconds, overlap_seconds)
    batches = _WindowBatches(model, processor, len(items), batch_size=batch_size, audio_domain=audio_domain,
                             instruction=instruction or DEFAULT_INSTRUCTION,
                             max_new_tokens=max_new_tokens or _default_max_new_tokens(window / SAMPLING_RATE),
                             on_error=on_error, progress=progress)
    try:
        for position, item in enumerate(items):
            batches.add(position, item, sampling_rate, window, overlap)
            batches.flush(False)
        batches.flush(True)
    finally:
        batches.bar.close()
    return batches.results[0] if single else batches.results


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
                           revision: str | None = None, dtype: str | None = None, device: str | None = None,
                           base_model_name_or_path: str | None = None):
    """``(model, processor)`` from an adapter (directory or Hub repo) or from a plain Qwen2-Audio base, which gets
    no adapter (``adapter_type="none"``: the base model exactly). ``base_model_name_or_path`` replaces the base an
    adapter records (``--base``); a plain base has none to replace."""
    if not _is_plain_base(model_name_or_path, revision):
        from ..tools.hub import load_adapter_model

        return load_adapter_model(model_name_or_path, processor_name_or_path, revision, dtype, device,
                                  base_model_name_or_path=base_model_name_or_path)
    if base_model_name_or_path is not None:
        raise ValueError(f"{model_name_or_path} is a plain Qwen2-Audio model, not an adapter: it has no base to "
                         f"replace with {base_model_name_or_path!r}")
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


__all__ = ["load_for_transcription", "transcribe"]
