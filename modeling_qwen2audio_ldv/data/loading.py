# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Load and validate user speech data for Qwen2-Audio LDV fine-tuning.

Every loader returns a ``datasets.Dataset`` (or ``DatasetDict``) with canonical columns:

- ``audio``: an ``Audio(sampling_rate=16000)`` feature. A row decodes to the datasets audio decoder whose
  ``row["audio"]["array"]`` is mono ``float32`` of shape ``(samples,)`` (channels averaged) at 16 kHz and
  ``row["audio"]["sampling_rate"] == 16000``.
- ``text``: the transcript (``str``).
- ``mic_audio``: only for paired data (the microphone recording of the same utterance), like ``audio``.

Sources (:func:`load_audio_dataset`):

- an ``audiofolder`` directory: audio files plus ``metadata.csv`` / ``metadata.jsonl`` with a ``file_name``
  column (and ``<name>_file_name`` columns for more audio columns, e.g. ``mic_file_name``);
- a JSONL or CSV manifest file: one row per clip, audio paths relative to the manifest's folder or absolute;
- a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``;
- a Hub dataset id (passed to ``datasets.load_dataset``).

Validation (:func:`validate_dataset`, :func:`filter_bad_examples`, ``ldv-qwen2audio validate-data``) reads
every row with decoding disabled and decodes each file itself, so one unreadable file is recorded and the
scan goes on. Reasons a row is bad (:data:`BAD_REASONS`): missing audio, unreadable audio, empty audio,
NaN/Inf samples, digital silence, longer than ``max_seconds`` (30 s: Qwen2-Audio's window; longer clips are
never truncated silently), missing or empty transcript.

Example:
    >>> from modeling_qwen2audio_ldv.data.loading import load_audio_dataset, filter_bad_examples
    >>> dataset = load_audio_dataset("my_ldv_clips/", split="train", text_column="transcript")
    >>> dataset, report = filter_bad_examples(dataset, on_bad_example="skip")
    >>> report.counts        # e.g. {"decode_error": 2, "too_long": 1}

Command line: ``ldv-qwen2audio validate-data my_ldv_clips/ --text-column transcript --report report.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from datasets import Audio, Dataset, DatasetDict, Features, Value, load_dataset, load_from_disk

from ..audio import DECODE_ERRORS, SAMPLING_RATE, SILENCE_PEAK_THRESHOLD, decode_audio_file, error_line

logger = logging.getLogger(__name__)

#: Canonical column names of every dataset this module returns.
AUDIO_COLUMN, TEXT_COLUMN, MIC_AUDIO_COLUMN = "audio", "text", "mic_audio"
#: Longest clip (s) accepted by default: Qwen2-Audio's encoder window (3000 mel frames of 10 ms).
DEFAULT_MAX_SECONDS = 30.0

#: Reason codes of a bad row, with their meaning (the JSON report and the summary use these codes).
BAD_REASONS: dict[str, str] = {
    "missing_audio": "no audio path or bytes in the row",
    "decode_error": "the file is missing, unreadable or not audio",
    "empty_audio": "the audio has no samples",
    "non_finite": "the audio contains NaN or Inf samples",
    "silent": f"digital silence (peak |sample| < threshold, default {SILENCE_PEAK_THRESHOLD:g})",
    "too_long": "longer than max_seconds (default 30 s, Qwen2-Audio's window)",
    "missing_text": "the transcript is missing (null)",
    "empty_text": "the transcript is empty or only whitespace",
}

_MANIFEST_FORMATS = {".jsonl": ("json", {}), ".json": ("json", {}), ".csv": ("csv", {}),
                     ".tsv": ("csv", {"delimiter": "\t"})}
_METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")


# ---------------------------------------------------------------------------------------------------- loading
def load_audio_dataset(
    source: str | os.PathLike,
    split: str | None = None,
    audio_column: str = AUDIO_COLUMN,
    text_column: str | None = TEXT_COLUMN,
    mic_audio_column: str | None = None,
    sampling_rate: int = SAMPLING_RATE,
    **load_kwargs: Any,
) -> Dataset | DatasetDict:
    """Load speech data and give it the canonical columns ``audio``, ``text`` (and ``mic_audio``).

    Args:
        source: an ``audiofolder`` directory, a ``.jsonl``/``.csv``/``.tsv`` manifest, a ``save_to_disk``
            directory, or a Hub dataset id.
        split: the split to return (``"train"``, ...). ``None`` returns a ``DatasetDict`` of every split (a
            manifest holds one split, ``"train"``); a ``save_to_disk`` directory returns what was saved.
        audio_column: the user's audio column (paths, or an ``Audio`` feature), renamed to ``audio``. For an
            audiofolder, ``file_name`` and ``<name>_file_name`` are accepted as aliases of the columns that
            ``audiofolder`` builds from them (``audio`` and ``<name>``).
        text_column: the user's transcript column, renamed to ``text``; ``None`` for unlabelled audio.
        mic_audio_column: for paired data, the microphone audio column, renamed to ``mic_audio``.
        sampling_rate: decoding rate (Hz) of every audio column; :data:`~modeling_qwen2audio_ldv.audio.SAMPLING_RATE`
            for Qwen2-Audio.
        **load_kwargs: passed to ``datasets.load_dataset`` (``cache_dir``, ``revision``, ``num_proc``, ...),
            or to ``datasets.load_from_disk`` (``keep_in_memory``) for a saved dataset.

    Returns:
        A ``Dataset`` (``split`` given, or a saved single dataset) or a ``DatasetDict``. Audio columns are
        cast to ``Audio(sampling_rate=sampling_rate)``; decoding happens on access.

    Raises:
        FileNotFoundError: ``source`` looks like a path but does not exist.
        ValueError: a named column is missing (the message names the source, the column and the columns
            that exist), a canonical name is taken by another column, or the manifest format is unknown.
    """
    source = os.fspath(source)
    kind, dataset = _load_raw(source, split, **load_kwargs)
    columns = {AUDIO_COLUMN: audio_column, TEXT_COLUMN: text_column, MIC_AUDIO_COLUMN: mic_audio_column}
    if kind == "audiofolder":
        columns = {canonical: _audiofolder_alias(user) for canonical, user in columns.items()}
    columns = {canonical: user for canonical, user in columns.items() if user is not None}
    prepare = functools.partial(_canonicalize, source=source, kind=kind, columns=columns,
                                sampling_rate=sampling_rate)
    if isinstance(dataset, DatasetDict):
        return DatasetDict({name: prepare(part, split_name=name) for name, part in dataset.items()})
    return prepare(dataset, split_name=split)


def _load_raw(source: str, split: str | None, **load_kwargs: Any) -> tuple[str, Dataset | DatasetDict]:
    """Load ``source`` as it is; returns ``(kind, dataset)`` with kind in audiofolder/manifest/disk/hub."""
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return "disk", _select_split(load_from_disk(str(path), **load_kwargs), split, source)
        folders = [path, *(sub for sub in path.iterdir() if sub.is_dir())]  # metadata may sit in split folders
        if not any((folder / name).is_file() for folder in folders for name in _METADATA_FILES):
            logger.warning("%s has no %s: audiofolder will find audio files but no transcripts", source,
                           " / ".join(_METADATA_FILES))
        return "audiofolder", load_dataset("audiofolder", data_dir=str(path), split=split, **load_kwargs)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in _MANIFEST_FORMATS:
            raise ValueError(f"{source}: unknown manifest format {suffix!r}; expected one of "
                             f"{sorted(_MANIFEST_FORMATS)} (or an audiofolder / save_to_disk directory)")
        builder, options = _MANIFEST_FORMATS[suffix]
        split_name = split or "train"
        dataset = load_dataset(builder, data_files={split_name: str(path)}, split=split_name,
                               **options, **load_kwargs)
        return "manifest", dataset if split is not None else DatasetDict({split_name: dataset})
    looks_like_path = (path.is_absolute() or source.startswith((".", "~")) or source.count("/") > 1
                       or path.suffix.lower() in _MANIFEST_FORMATS)
    if looks_like_path:
        raise FileNotFoundError(f"{source}: no such file or directory (and not a Hub dataset id)")
    return "hub", load_dataset(source, split=split, **load_kwargs)


def _select_split(dataset: Dataset | DatasetDict, split: str | None, source: str) -> Dataset | DatasetDict:
    if split is None:
        return dataset
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise ValueError(f"{source}: no split {split!r}; splits are {list(dataset)}")
        return dataset[split]
    if dataset.split is not None and str(dataset.split) != split:
        raise ValueError(f"{source}: holds the single split {str(dataset.split)!r}, not {split!r}")
    return dataset


def _audiofolder_alias(column: str | None) -> str | None:
    """``audiofolder`` turns ``file_name`` into ``audio`` and ``<name>_file_name`` into ``<name>``."""
    if column == "file_name":
        return AUDIO_COLUMN
    if column is not None and column.endswith("_file_name"):
        return column[: -len("_file_name")]
    return column


def _canonicalize(dataset: Dataset, *, source: str, kind: str, columns: dict[str, str], sampling_rate: int,
                  split_name: str | None) -> Dataset:
    where = source if split_name is None else f"{source} (split {split_name!r})"
    existing = list(dataset.column_names)
    for canonical, user in columns.items():
        if user not in existing:
            argument = {AUDIO_COLUMN: "audio_column", TEXT_COLUMN: "text_column",
                        MIC_AUDIO_COLUMN: "mic_audio_column"}[canonical]
            hint = ""
            if kind == "audiofolder" and canonical == TEXT_COLUMN:
                hint = f" (transcripts come from {' / '.join(_METADATA_FILES)} next to the audio files)"
            raise ValueError(f"{where}: no {canonical} column {user!r} ({argument}={user!r}); the columns are "
                             f"{existing}{hint}")
    renames = {user: canonical for canonical, user in columns.items() if user != canonical}
    taken = [canonical for canonical in renames.values() if canonical in existing and canonical not in renames]
    if taken:
        raise ValueError(f"{where}: cannot rename {renames} because {taken} already exist(s) as other "
                         f"column(s); rename or remove them first (columns: {existing})")
    if kind == "manifest":
        base = os.path.dirname(os.path.abspath(source))
        audio_columns = [user for canonical, user in columns.items() if canonical != TEXT_COLUMN]
        dataset = dataset.map(_resolve_paths, batched=True, fn_kwargs={"columns": audio_columns, "base": base},
                              desc="Resolving audio paths")
    if renames:
        dataset = dataset.rename_columns(renames)
    for column in (AUDIO_COLUMN, MIC_AUDIO_COLUMN):
        if column in columns:
            feature = dataset.features[column]
            if isinstance(feature, Value) and feature.dtype == "large_string":
                # The CSV builder gives large_string, which the Audio feature cannot cast from.
                dataset = dataset.cast_column(column, Value("string"))
            try:
                dataset = dataset.cast_column(column, Audio(sampling_rate=sampling_rate))
            except (TypeError, ValueError, NotImplementedError) as err:
                raise ValueError(f"{where}: column {columns[column]!r} ({dataset.features[column]}) cannot be "
                                 f"read as audio; expected file paths or an Audio feature") from err
    return dataset


def _resolve_paths(batch: dict[str, list], columns: Sequence[str], base: str) -> dict[str, list]:
    """Make manifest paths absolute: relative paths are relative to the manifest's folder."""
    resolved = {}
    for column in columns:
        values = batch[column]
        if values and any(value is not None and not isinstance(value, str) for value in values):
            raise ValueError(f"manifest column {column!r} must hold audio file paths (strings)")
        resolved[column] = [None if value is None or not value.strip()
                            else os.path.join(base, os.path.expanduser(value)) for value in values]
    return resolved


# ------------------------------------------------------------------------------------------------- validation
@dataclasses.dataclass
class BadExample:
    """One problem found in one row (a row may have several)."""

    index: int  #: row index in the validated dataset
    reason: str  #: a key of :data:`BAD_REASONS`
    column: str  #: the column the problem is in
    path: str | None = None  #: the audio file, when known
    detail: str = ""  #: decoder message, sample counts, duration, ...


@dataclasses.dataclass
class ValidationReport:
    """Result of :func:`validate_dataset`: every problem of every row, and the clean rows.

    ``bad_examples`` lists one entry per (row, problem); ``bad_indices``/``good_indices`` are row indices
    into the validated dataset (sorted); ``counts`` counts bad rows per reason (a row with two problems
    counts under both).
    """

    num_rows: int
    bad_examples: list[BadExample]
    max_seconds: float
    silence_threshold: float
    audio_seconds: float = 0.0  #: total duration (s) of the readable ``audio`` clips of the good rows
    source: str | None = None
    split: str | None = None

    @property
    def bad_indices(self) -> list[int]:
        return sorted({bad.index for bad in self.bad_examples})

    @property
    def good_indices(self) -> list[int]:
        bad = set(self.bad_indices)
        return [index for index in range(self.num_rows) if index not in bad]

    @property
    def num_bad(self) -> int:
        return len(self.bad_indices)

    @property
    def ok(self) -> bool:
        return not self.bad_examples

    @property
    def counts(self) -> dict[str, int]:
        """Bad rows per reason, in :data:`BAD_REASONS` order (reasons with no rows are left out)."""
        rows = Counter((bad.reason, bad.index) for bad in self.bad_examples)
        per_reason = Counter(reason for reason, _ in rows)
        return {reason: per_reason[reason] for reason in BAD_REASONS if per_reason[reason]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "split": self.split,
            "num_rows": self.num_rows,
            "num_good": self.num_rows - self.num_bad,
            "num_bad": self.num_bad,
            "good_audio_hours": round(self.audio_seconds / 3600, 4),
            "max_seconds": self.max_seconds,
            "silence_threshold": self.silence_threshold,
            "counts": self.counts,
            "reasons": {reason: BAD_REASONS[reason] for reason in self.counts},
            "bad_examples": [dataclasses.asdict(bad) for bad in self.bad_examples],
        }

    def to_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` as indented JSON (UTF-8)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def describe_first(self) -> str:
        """``"<path>, row <i>: <reason> (<detail>)"`` for the first problem; ``""`` when there is none."""
        if not self.bad_examples:
            return ""
        bad = self.bad_examples[0]
        detail = f" ({bad.detail})" if bad.detail else ""
        return f"{bad.path or '<no path>'}, row {bad.index}, column {bad.column!r}: {bad.reason}{detail}"

    def summary(self, max_rows: int = 20) -> str:
        """A plain-text table: row counts, bad rows per reason, and the first ``max_rows`` problems."""
        title = " ".join(part for part in (self.source, f"[{self.split}]" if self.split else None) if part)
        lines = [f"{title or 'dataset'}: {self.num_rows} rows, {self.num_rows - self.num_bad} good, "
                 f"{self.num_bad} bad; {self.audio_seconds / 3600:.2f} h of good audio"]
        if self.counts:
            lines.append(f"  {'reason':<14} {'rows':>6}  meaning")
            lines += [f"  {reason:<14} {count:>6}  {BAD_REASONS[reason]}" for reason, count in self.counts.items()]
            lines.append(f"  {'row':>6}  {'reason':<14} file (detail)")
            for bad in self.bad_examples[:max_rows]:
                detail = f" ({bad.detail})" if bad.detail else ""
                lines.append(f"  {bad.index:>6}  {bad.reason:<14} {bad.path or '-'}{detail}")
            if len(self.bad_examples) > max_rows:
                lines.append(f"  ... {len(self.bad_examples) - max_rows} more in the JSON report")
        return "\n".join(lines)


def _check_audio(value: Any, column: str, index: int, max_seconds: float, silence_threshold: float
                 ) -> tuple[list[BadExample], float | None]:
    """Problems of one audio value, and its duration (s) when it decodes."""
    if value is None or (isinstance(value, Mapping) and value.get("path") is None and value.get("bytes") is None):
        return [BadExample(index, "missing_audio", column)], None
    path = value if isinstance(value, str) else value.get("path")
    try:
        samples, rate = decode_audio_file(value)
    except DECODE_ERRORS as error:
        return [BadExample(index, "decode_error", column, path, f"{type(error).__name__}: {error_line(error)}")], None
    problems = []
    frames = samples.shape[0]
    seconds = frames / rate if rate > 0 else 0.0
    if frames == 0 or samples.size == 0:
        return [BadExample(index, "empty_audio", column, path, f"0 samples at {rate} Hz")], 0.0
    finite = np.isfinite(samples)
    if not finite.all():
        problems.append(BadExample(index, "non_finite", column, path,
                                   f"{int(samples.size - finite.sum())} of {samples.size} samples NaN/Inf"))
    else:
        peak = float(np.abs(samples).max())
        if peak < silence_threshold:
            problems.append(BadExample(index, "silent", column, path,
                                       f"peak {peak:.3g} < {silence_threshold:g}"))
    if seconds > max_seconds:
        problems.append(BadExample(index, "too_long", column, path, f"{seconds:.2f} s > {max_seconds:g} s"))
    return problems, seconds


def _check_text(value: Any, column: str, index: int, path: str | None) -> list[BadExample]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return [BadExample(index, "missing_text", column, path)]
    if not isinstance(value, str):
        return [BadExample(index, "missing_text", column, path, f"not a string: {type(value).__name__}")]
    if not value.strip():
        return [BadExample(index, "empty_text", column, path, f"{value!r}")]
    return []


def _check_batch(batch: dict[str, list], indices: list[int], *, audio_columns: Sequence[str],
                 text_column: str | None, max_seconds: float, silence_threshold: float) -> dict[str, list]:
    """``datasets.map`` function: one JSON list of :class:`BadExample` and one duration per row."""
    issues, durations = [], []
    for offset, index in enumerate(indices):
        problems: list[BadExample] = []
        seconds = None
        for column in audio_columns:
            found, column_seconds = _check_audio(batch[column][offset], column, index, max_seconds,
                                                 silence_threshold)
            problems += found
            if column == audio_columns[0]:
                seconds = column_seconds
        if text_column is not None:
            value = batch[audio_columns[0]][offset]
            path = value if isinstance(value, str) else (value or {}).get("path")
            problems += _check_text(batch[text_column][offset], text_column, index, path)
        issues.append(json.dumps([dataclasses.asdict(problem) for problem in problems]))
        durations.append(seconds)
    return {"issues": issues, "seconds": durations}


def validate_dataset(
    dataset: Dataset,
    audio_column: str = AUDIO_COLUMN,
    text_column: str | None = TEXT_COLUMN,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    *,
    mic_audio_column: str | None = None,
    silence_threshold: float = SILENCE_PEAK_THRESHOLD,
    num_proc: int | None = None,
    source: str | None = None,
) -> ValidationReport:
    """Check EVERY row of ``dataset`` and report each problem with its row, file and reason.

    The audio columns are read with decoding disabled and each file is decoded here
    (:func:`~modeling_qwen2audio_ldv.audio.decode_audio_file`), so an unreadable file becomes a ``decode_error``
    entry and the scan goes on. Checks per audio column: missing, unreadable, empty, NaN/Inf samples, digital
    silence (peak ``< silence_threshold``), longer than ``max_seconds``; and for ``text_column``: missing or empty.

    Args:
        dataset: a ``Dataset`` whose audio columns are ``Audio`` features or file paths.
        audio_column: the audio column (canonical name ``audio`` after :func:`load_audio_dataset`).
        text_column: the transcript column; ``None`` skips the transcript checks.
        max_seconds: longest accepted clip (s); Qwen2-Audio's window is 30 s.
        mic_audio_column: for paired data, the microphone audio column, checked like ``audio_column``.
        silence_threshold: peak absolute sample (full scale 1.0) below which a clip is digital silence.
        num_proc: processes for decoding (``datasets.map``); ``None`` or 1 runs in this process.
        source: a name for the data, written to the report.

    Returns:
        A :class:`ValidationReport` (``num_rows == len(dataset)``).
    """
    if isinstance(dataset, DatasetDict):
        raise TypeError(f"validate_dataset takes one split; got a DatasetDict with splits {list(dataset)}")
    audio_columns = [column for column in (audio_column, mic_audio_column) if column is not None]
    wanted = [*audio_columns, *([text_column] if text_column is not None else [])]
    missing = [column for column in wanted if column not in dataset.column_names]
    if missing:
        raise ValueError(f"{source or 'dataset'}: missing column(s) {missing}; the columns are "
                         f"{dataset.column_names}")
    raw = dataset.select_columns(wanted)
    for column in audio_columns:
        feature = raw.features[column]
        if isinstance(feature, Audio):
            raw = raw.cast_column(column, Audio(decode=False))
        elif not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
            raise ValueError(f"{source or 'dataset'}: column {column!r} is {feature}; expected an Audio feature "
                             f"or file paths")
    check = functools.partial(_check_batch, audio_columns=audio_columns, text_column=text_column,
                              max_seconds=max_seconds, silence_threshold=silence_threshold)
    checked = raw.map(
        check,
        batched=True,
        batch_size=16,
        with_indices=True,
        remove_columns=raw.column_names,
        features=Features({"issues": Value("string"), "seconds": Value("float64")}),
        num_proc=num_proc if num_proc and num_proc > 1 and len(raw) > 1 else None,
        keep_in_memory=True,
        load_from_cache_file=False,
        desc=f"Validating {source or 'rows'}",
    )
    bad_examples = [BadExample(**problem) for issues in checked["issues"] for problem in json.loads(issues)]
    bad_rows = {bad.index for bad in bad_examples}
    audio_seconds = sum(seconds for index, seconds in enumerate(checked["seconds"])
                        if seconds is not None and index not in bad_rows)
    report = ValidationReport(num_rows=len(dataset), bad_examples=bad_examples, max_seconds=max_seconds,
                              silence_threshold=silence_threshold, audio_seconds=audio_seconds, source=source,
                              split=str(dataset.split) if dataset.split is not None else None)
    if report.ok:
        logger.info("%s: all %d rows are good (%.2f h of audio)", source or "dataset", len(dataset),
                    audio_seconds / 3600)
    else:
        logger.warning("%s: %d of %d rows are bad: %s", source or "dataset", report.num_bad, len(dataset),
                       report.counts)
    return report


def filter_bad_examples(
    dataset: Dataset,
    on_bad_example: Literal["skip", "error"] = "skip",
    audio_column: str = AUDIO_COLUMN,
    text_column: str | None = TEXT_COLUMN,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    *,
    mic_audio_column: str | None = None,
    silence_threshold: float = SILENCE_PEAK_THRESHOLD,
    num_proc: int | None = None,
    report: ValidationReport | None = None,
) -> tuple[Dataset, ValidationReport]:
    """Validate ``dataset`` (:func:`validate_dataset`) and apply a policy to the bad rows.

    Args:
        on_bad_example: ``"skip"`` drops every bad row (clips over ``max_seconds`` included: nothing is
            truncated) and logs how many were dropped, per reason; ``"error"`` raises on any bad row.
        report: a report of this very dataset from an earlier :func:`validate_dataset` call, to avoid a
            second scan.
        Other arguments: as :func:`validate_dataset`.

    Returns:
        ``(clean_dataset, report)``: the good rows in their original order, and the full report.

    Raises:
        ValueError: ``on_bad_example="error"`` and a row is bad; the message names the first bad file, its
            row and reason, and how many other rows are bad.
    """
    if on_bad_example not in ("skip", "error"):
        raise ValueError(f"on_bad_example must be 'skip' or 'error', not {on_bad_example!r}")
    if report is None:
        report = validate_dataset(dataset, audio_column, text_column, max_seconds, mic_audio_column=mic_audio_column,
                                  silence_threshold=silence_threshold, num_proc=num_proc)
    elif report.num_rows != len(dataset):
        raise ValueError(f"the report covers {report.num_rows} rows but the dataset has {len(dataset)}")
    if report.ok:
        return dataset, report
    if on_bad_example == "error":
        others = report.num_bad - 1
        raise ValueError(f"bad example: {report.describe_first()}; {others} other bad row(s) "
                         f"{report.counts}. Fix the data, or use on_bad_example='skip' to drop them.")
    logger.warning("dropped %d of %d rows (%s); %d rows remain. Run `ldv-qwen2audio validate-data` for the "
                   "list of files.", report.num_bad, report.num_rows,
                   ", ".join(f"{reason}: {count}" for reason, count in report.counts.items()),
                   report.num_rows - report.num_bad)
    return dataset.select(report.good_indices), report
