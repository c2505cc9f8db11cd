# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Transcription results to files: JSON Lines, SubRip subtitles or plain text, chosen by the output's ending."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The output endings :func:`write_results` knows.
OUTPUT_FORMATS = (".jsonl", ".txt", ".srt")


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
    if suffix not in OUTPUT_FORMATS:
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


__all__ = ["OUTPUT_FORMATS", "to_srt", "write_results"]
