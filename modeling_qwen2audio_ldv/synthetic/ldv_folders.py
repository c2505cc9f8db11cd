# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Simulated LDV versions of a folder of microphone recordings (``ldv-qwen2audio simulate``).

:func:`simulate_folder` writes the LDV version of every audio file under a folder at the same relative path under
another (mono, same sample rate, format, subtype and length), copies the Hugging Face ``audiofolder`` metadata files
so an audiofolder stays an audiofolder, and writes the condition to ``condition.json``. Each file's simulator seed
derives from the global seed and its relative path (:func:`file_seed`), so a rerun reproduces every file exactly,
whatever the order or the subset of files.

Example:
    >>> from modeling_qwen2audio_ldv.synthetic.ldv_folders import simulate_folder
    >>> failures = simulate_folder("mic_corpus", "ldv_corpus", "window", seed=0)   # [] when every file converted
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from .simulator import DEFAULT_CONDITION, LDVCondition, get_condition, simulate_ldv

logger = logging.getLogger(__name__)

#: Audio files that :func:`simulate_folder` converts. Narrower than ``audio.AUDIO_EXTENSIONS`` (what the model's
#: readers decode, with ffmpeg as well) on purpose: each LDV file is written back in its source's own format and
#: subtype with soundfile, so only formats soundfile both reads and writes qualify, and these three are the ones the
#: command's help promises.
CONVERTED_EXTENSIONS = (".wav", ".flac", ".ogg")
#: Hugging Face ``audiofolder`` metadata files that :func:`simulate_folder` carries over.
METADATA_FILES = ("metadata.csv", "metadata.jsonl")


def file_seed(seed: int, relative_path: str | os.PathLike) -> int:
    """Per-file seed: a 64-bit hash of the global ``seed`` and the file's POSIX relative path.

    Stable across machines and runs, independent of file order, different for every file.
    """
    key = f"{int(seed)}:{Path(relative_path).as_posix()}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def _simulate_file(
    source: Path, target: Path, condition: LDVCondition, seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Simulate one file; returns (mic mono, ldv, sample rate). Writes ``target`` atomically.

    Read with soundfile in float64 (not ``audio.decode_audio_file``, which decodes float32 and falls back to ffmpeg):
    the LDV file is written back in the source's own format and subtype, which needs soundfile's ``info``, and a
    64-bit float source keeps its precision.
    """
    import soundfile as sf

    info = sf.info(str(source))
    data, sample_rate = sf.read(str(source), dtype="float64", always_2d=True)
    mono = data.mean(axis=1)
    ldv = simulate_ldv(mono, sample_rate, condition, seed=seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        sf.write(str(partial), ldv, sample_rate, subtype=info.subtype, format=info.format)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)  # only left behind when writing failed
    return mono, ldv, sample_rate


def _metadata_file_columns(fieldnames: list[str]) -> list[str]:
    return [name for name in fieldnames if name == "file_name" or name.endswith("_file_name")]


def _copy_metadata(source: Path, target: Path, failed: set[str]) -> int:
    """Copy an audiofolder metadata file, dropping rows whose file failed; returns the number dropped.

    ``failed`` holds POSIX paths relative to the metadata file's folder.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if not failed:
        shutil.copy2(source, target)
        return 0
    dropped = 0
    if source.suffix == ".csv":
        with source.open(newline="", encoding="utf-8") as fin:
            reader = csv.DictReader(fin)
            fieldnames = list(reader.fieldnames or [])
            columns = _metadata_file_columns(fieldnames)
            rows = []
            for row in reader:
                if any(Path(row.get(c) or "").as_posix() in failed for c in columns):
                    dropped += 1
                else:
                    rows.append(row)
        with target.open("w", newline="", encoding="utf-8") as fout:
            writer = csv.DictWriter(fout, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
    else:
        lines = []
        for line in source.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            columns = _metadata_file_columns(list(record))
            if any(Path(str(record[c])).as_posix() in failed for c in columns):
                dropped += 1
            else:
                lines.append(line)
        target.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return dropped


def _scan(source_root: Path, target_root: Path) -> tuple[list[Path], list[Path]]:
    """The audio files and the metadata files under ``source_root``, sorted, outside ``target_root``."""

    def wanted(path: Path, names: tuple[str, ...], by_suffix: bool) -> bool:
        if not path.is_file() or _is_within(path, target_root):  # output may live inside the input
            return False
        return path.suffix.lower() in names if by_suffix else path.name in names

    candidates = sorted(source_root.rglob("*"))
    files = [p for p in candidates if wanted(p, CONVERTED_EXTENSIONS, by_suffix=True)]
    metadata = [p for p in candidates if wanted(p, METADATA_FILES, by_suffix=False)]
    return files, metadata


def _convert_files(
    files: list[Path], source_root: Path, target_root: Path, condition: LDVCondition, seed: int, plot: bool
) -> list[tuple[Path, str]]:
    """Convert every file (plotting the first converted one with ``plot``); returns the failures.

    A file that cannot be converted (unreadable, a sample rate below the condition's band, a write error) is skipped
    and reported; the others are still converted.
    """
    import soundfile as sf
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    failures: list[tuple[Path, str]] = []
    plotted = not plot
    with logging_redirect_tqdm():
        for path in tqdm(files, desc="simulate", unit="file"):
            relative = path.relative_to(source_root)
            try:
                mic, ldv, sample_rate = _simulate_file(
                    path, target_root / relative, condition, file_seed(seed, relative)
                )
            except (sf.SoundFileError, RuntimeError, ValueError, OSError) as err:
                failures.append((relative, f"{type(err).__name__}: {err}"))
                logger.error("skipped %s: %s: %s", relative, type(err).__name__, err)
                continue
            if not plotted:
                from ..evaluation.plots import plot_mic_vs_ldv

                title = f"{relative.as_posix()} ({condition.name})"
                png = plot_mic_vs_ldv(mic, ldv, sample_rate, target_root / "mic_vs_ldv.png", title=title)
                logger.info("wrote %s", png)
                plotted = True
    return failures


def simulate_folder(
    source_root: str | os.PathLike,
    target_root: str | os.PathLike,
    condition: str | os.PathLike | LDVCondition = DEFAULT_CONDITION,
    seed: int = 0,
    plot: bool = False,
) -> list[tuple[Path, str]]:
    """Write the simulated LDV version of every ``.wav``/``.flac``/``.ogg`` file under ``source_root``.

    Args:
        source_root: folder of microphone audio, searched recursively (files inside ``target_root`` are skipped, so
            the output may live inside the input).
        target_root: folder for the LDV audio (created); must differ from ``source_root``.
        condition: preset name, JSON path or :class:`LDVCondition`; written to ``target_root/condition.json``.
        seed: global seed; each file's seed is :func:`file_seed` of it and the file's relative path.
        plot: write ``mic_vs_ldv.png`` for the first converted file.

    Returns:
        The files that could not be converted, as ``(relative path, reason)`` (empty when every file converted);
        their rows are dropped from the copied metadata files.

    Raises:
        FileNotFoundError: no audio file under ``source_root``.
        ValueError: an unknown or invalid condition.
    """
    source_root, target_root = Path(source_root).resolve(), Path(target_root).resolve()
    condition = get_condition(condition)
    files, metadata = _scan(source_root, target_root)
    if not files:
        raise FileNotFoundError(f"no {'/'.join(CONVERTED_EXTENSIONS)} files under {source_root}")
    target_root.mkdir(parents=True, exist_ok=True)
    condition.to_json(target_root / "condition.json")
    logger.info("simulating %d files with condition %r, seed %d", len(files), condition.name, seed)
    failures = _convert_files(files, source_root, target_root, condition, seed, plot)

    failed_paths = [source_root / rel for rel, _ in failures]
    for meta in metadata:
        failed_here = {p.relative_to(meta.parent).as_posix() for p in failed_paths if _is_within(p, meta.parent)}
        dropped = _copy_metadata(meta, target_root / meta.relative_to(source_root), failed_here)
        if dropped:
            logger.warning("%s: dropped %d row(s) of files that failed", meta.relative_to(source_root), dropped)

    logger.info("wrote %d of %d files to %s", len(files) - len(failures), len(files), target_root)
    if failures:
        logger.error(
            "%d file(s) failed:\n%s", len(failures), "\n".join(f"  {rel}: {reason}" for rel, reason in failures)
        )
    return failures


__all__ = ["CONVERTED_EXTENSIONS", "METADATA_FILES", "file_seed", "simulate_folder"]
