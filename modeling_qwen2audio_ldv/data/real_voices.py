# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The real-voice test set: recordings of real people from Debian packages, with microphone and simulated LDV
versions, that nothing trains on.

Sources (installed by ``bash scripts/setup.sh``; :data:`APT_PACKAGES`):

* ``asterisk-core-sounds-en-g722``: 568 telephony prompts read by one professional US-English speaker, Allison Smith
  (digits, numbers, dates, letters, the phonetic alphabet, voicemail and conference sentences), 16 kHz G.722,
  decoded with ``ffmpeg``; transcripts from ``asterisk-core-sounds-en`` (``core-sounds-en.txt``). CC-BY-SA-3.0.
* ``pocketsphinx-testdata``: five LibriVox clips of *Sense and Sensibility* (public domain, one reader) and five
  "cards" clips (BSD-2-Clause), 16 kHz WAV, with their transcription files. The package's TIDIGITS clip is never
  read (LDC licence), nor its clips without a transcript.

Each transcript becomes what the metric scores (:func:`scorable_text`): editorial notes in brackets dropped,
``*``/``#`` read as "star"/"pound" (as the prompts say them), numerals 0-99 as words like the synthetic corpus
(``press 1`` -> ``press one``), then :func:`~modeling_qwen2audio_ldv.evaluation.scoring.normalize_transcript`. A
prompt is skipped, with its reason logged and kept in the manifest, when it has no speech (tones, silence, sound
effects), no transcript, a number whose reading the transcript does not give (``500``, ``28.8``, ``H.323``), an
acronym that may be spelled or said as a word (``PBX``, ``DAHDI``), or is longer than the model's 30 s window.

Layout written by :func:`build_real_voice_set` (each folder an ``audiofolder`` that ``load_audio_dataset``, ``ldv-
qwen2audio evaluate --data`` and ``train_hf.py --eval_data`` read as it is)::

    <output>/mic/metadata.csv            file_name, text, speaker, source, licence, prompt_id, original_text, ...
    <output>/mic/<source>-<prompt>.wav   the recording, 16 kHz mono 16-bit
    <output>/ldv/<preset>/...            its simulated LDV recording under each preset (same names, same columns)
    <output>/manifest.json               sources, package versions, licences, sha256 of every source file and clip,
                                         skipped prompts with reasons, the held-out section
    <output>/ATTRIBUTION.txt             the licences and credits the recordings carry

The set's speakers and files are held out (:mod:`~modeling_qwen2audio_ldv.data.held_out`): the manifest's
``held_out`` section is also recorded in the registry folder, so the corpus builder and ``train_hf.py`` refuse them.
What the set is not: many speakers (one professional for 578 prompts, one LibriVox reader, one "cards" speaker),
spontaneous speech (all read prompts), or real LDV recordings (the LDV versions are simulated).

Example:
    >>> from modeling_qwen2audio_ldv.data.real_voices import build_real_voice_set
    >>> manifest = build_real_voice_set("real_voices", seed=0)
    >>> len(manifest["clips"]), len(manifest["skipped"])

Command line: ``ldv-qwen2audio build-real-voice-set --output real_voices``.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ..audio import SAMPLING_RATE
from ..evaluation.scoring import normalize_transcript
from ..synthetic.conditions import LDV_PRESETS, LDVCondition, get_condition
from ..synthetic.ldv_folders import file_seed
from ..synthetic.simulator import simulate_ldv
from ..text import number_words
from .held_out import HeldOutRegistry, file_sha256, register

logger = logging.getLogger(__name__)

#: Debian packages the set is built from (``apt-get install``; ``scripts/setup.sh`` installs them).
APT_PACKAGES = ("asterisk-core-sounds-en-g722", "asterisk-core-sounds-en", "pocketsphinx-testdata")
#: Where the packages put their files, relative to the file system root (``/``, or a ``dpkg -x`` folder).
ASTERISK_SOUNDS = Path("usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TRANSCRIPTS = Path("usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
POCKETSPHINX_DATA = Path("usr/share/pocketsphinx/test/data")
#: Longest clip kept (s): Qwen2-Audio's (and Whisper's) window.
MAX_SECONDS = 30.0
#: Format version of ``manifest.json``.
MANIFEST_FORMAT = 1
#: Metadata columns of every folder, in order.
METADATA_COLUMNS = ("file_name", "text", "speaker", "source", "licence", "prompt_id", "original_text", "duration",
                    "condition")


@dataclasses.dataclass(frozen=True)
class Source:
    """One group of recordings: one speaker, one licence."""

    name: str
    package: str  #: the Debian package holding the audio
    transcripts_package: str  #: the Debian package holding the transcripts
    speaker: str  #: held-out speaker id (:data:`~modeling_qwen2audio_ldv.data.held_out.REAL_VOICE_SPEAKERS`)
    licence: str
    attribution: str


SOURCES: dict[str, Source] = {
    "asterisk": Source(
        "asterisk", "asterisk-core-sounds-en-g722", "asterisk-core-sounds-en", "asterisk:allison_smith",
        "CC-BY-SA-3.0",
        "Asterisk core sound prompts (English), recorded by Allison Smith (http://www.theivrvoice.com), financial "
        "contributions by Digium, Inc.; Copyright 2003-2010 Allison Smith; licensed CC-BY-SA-3.0. Decoded from "
        "G.722 to 16-bit PCM; LDV versions are modified (simulated) copies under the same licence.",
    ),
    "librivox": Source(
        "librivox", "pocketsphinx-testdata", "pocketsphinx-testdata", "librivox:sense_and_sensibility_01",
        "public-domain",
        "LibriVox recording of Jane Austen, Sense and Sensibility, chapter 1 (public domain), as cut into utterances "
        "by CMU Sphinx's test data (pocketsphinx-testdata, BSD-2-Clause, Carnegie Mellon University).",
    ),
    "cards": Source(
        "cards", "pocketsphinx-testdata", "pocketsphinx-testdata", "pocketsphinx:cards", "BSD-2-Clause",
        "CMU Sphinx test data (pocketsphinx-testdata), Copyright 1995-2014 Carnegie Mellon University, 2014-2015 "
        "Alpha Cephei Inc., BSD-2-Clause.",
    ),
}
#: pocketsphinx-testdata files deliberately not used, with the reason (recorded in the manifest).
NOT_USED = {
    "tidigits/": "TIDIGITS (LDC licence): not redistributable",
    "goforward.raw, numbers.raw, something.raw": "no transcript file in the package",
}


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One recording with a scorable transcript."""

    prompt_id: str  #: ``<source>/<name>``, e.g. ``asterisk/digits/7``
    source: str  #: a key of :data:`SOURCES`
    path: Path  #: the source file
    original_text: str  #: the transcript as the package gives it
    text: str  #: what the metric scores (:func:`scorable_text`)

    @property
    def file_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.prompt_id.replace("/", "-")) + ".wav"


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A recording or transcript left out, and why."""

    prompt_id: str
    source: str
    reason: str


# ----------------------------------------------------------------------------------------------------- transcripts
_NOTE = re.compile(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>")
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_ACRONYM = re.compile(r"\b[A-Z]{2,}\b")


def scorable_text(raw: str) -> tuple[str | None, str | None]:
    """The transcript the metric scores, or why there is none.

    Rules, in order: a transcript that is only a note (``[ascending tones]``, ``(3 seconds of silence)``, ``<beep>``)
    has no speech; notes inside a transcript are dropped (``at [@]`` -> ``at``); ``*`` and ``#`` become "star" and
    "pound"; a numeral 0-99 becomes words (``text.number_words``, as the corpus speaks quantities); any other number
    (``500``, ``28.8``, ``H.323``, ``05``) and any all-capital acronym (``PBX``) make the prompt unscorable, since the
    transcript does not say how they were read; then :func:`normalize_transcript` (lower case, punctuation out). What
    remains must be lower-case letters and spaces.

    Returns:
        ``(text, None)`` or ``(None, reason)``.
    """
    stripped = raw.strip()
    if not stripped:
        return None, "empty transcript"
    if not _NOTE.sub("", stripped).strip(" .,;:!?-…"):
        return None, f"no speech to score: {stripped!r} (tone, silence or sound effect)"
    text = _NOTE.sub(" ", stripped).replace("*", " star ").replace("#", " pound ")
    for match in _NUMBER.finditer(text):
        token = match.group(0)
        if not token.isdigit() or int(token) > 99 or (len(token) > 1 and token.startswith("0")):
            return None, f"the number {token!r}: the transcript does not say how it was read"
    text = re.sub(r"\d+", lambda m: f" {number_words(int(m.group(0)))} ", text)
    acronyms = sorted(set(_ACRONYM.findall(text)))
    if acronyms:
        return None, f"acronym(s) {', '.join(acronyms)}: the transcript does not say whether spelled or said as words"
    text = normalize_transcript(text, language="en")
    if not text:
        return None, f"nothing to score after normalisation: {stripped!r}"
    odd = sorted(set(re.sub(r"[a-z ]", "", text)))
    if odd:
        return None, f"characters {''.join(odd)!r} that the references never use: {stripped!r}"
    return text, None


def read_asterisk_transcripts(path: str | os.PathLike) -> dict[str, str]:
    """``core-sounds-en.txt`` (plain or gzipped): ``{"digits/7": "seven", ...}``; ``;`` lines are comments.

    Raises:
        ValueError: a line that is neither a comment, blank, nor ``name: text`` (naming the file and line).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    transcripts: dict[str, str] = {}
    with opener(path, "rt", encoding="utf-8-sig") as handle:  # some packages start with a BOM
        for number, line in enumerate(handle, start=1):
            if not line.strip() or line.lstrip().startswith(";"):
                continue
            name, colon, text = line.partition(":")
            if not colon or not name.strip() or " " in name.strip():
                raise ValueError(f"{path}, line {number}: expected 'name: text', got {line.strip()!r}")
            transcripts[name.strip()] = text.strip()
    return transcripts


def read_sphinx_transcription(path: str | os.PathLike) -> dict[str, str]:
    """A Sphinx ``transcription`` file: lines ``<s> words </s> (utterance_id)`` -> ``{utterance_id: words}``.

    Raises:
        ValueError: a line not in that form (naming the file and line).
    """
    path = Path(path)
    pattern = re.compile(r"^(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\(([^()]+)\)\s*$")
    transcripts: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        match = pattern.match(line.strip())
        if match is None:
            raise ValueError(f"{path}, line {number}: expected '<s> words </s> (id)', got {line.strip()!r}")
        transcripts[match.group(2).strip()] = match.group(1).strip()
    return transcripts


# ----------------------------------------------------------------------------------------------------- sources
def _missing(root: Path, paths: Sequence[Path], packages: Sequence[str]) -> None:
    absent = [str(root / p) for p in paths if not (root / p).exists()]
    if absent:
        raise FileNotFoundError(
            f"{', '.join(absent)} not found: install the Debian packages {' '.join(packages)} (apt-get install ..., "
            "or bash scripts/setup.sh), or pass --root with a folder where `dpkg -x` unpacked them"
        )


def find_prompts(root: str | os.PathLike = "/") -> tuple[list[Prompt], list[Skipped]]:
    """Every recording of the sources with a scorable transcript, and every one left out with its reason.

    Args:
        root: the file system root the packages are installed under (``/``), or a folder where ``dpkg -x``
            unpacked them.

    Raises:
        FileNotFoundError: a package's files are missing (the message names the packages to install).
    """
    root = Path(root)
    _missing(root, [ASTERISK_SOUNDS, ASTERISK_TRANSCRIPTS], APT_PACKAGES[:2])
    _missing(root, [POCKETSPHINX_DATA / "librivox", POCKETSPHINX_DATA / "cards"], APT_PACKAGES[2:])
    prompts: list[Prompt] = []
    skipped: list[Skipped] = []

    def add(source: str, name: str, path: Path, raw: str | None) -> None:
        prompt_id = f"{source}/{name}"
        if raw is None:
            skipped.append(Skipped(prompt_id, source, "no transcript"))
            return
        text, reason = scorable_text(raw)
        if text is None:
            skipped.append(Skipped(prompt_id, source, reason))
        else:
            prompts.append(Prompt(prompt_id, source, path, raw, text))

    transcripts = read_asterisk_transcripts(root / ASTERISK_TRANSCRIPTS)
    sounds = root / ASTERISK_SOUNDS
    files = {path.relative_to(sounds).with_suffix("").as_posix(): path for path in sounds.rglob("*.g722")}
    for name in sorted(files):
        add("asterisk", name, files[name], transcripts.get(name))
    for name in sorted(set(transcripts) - set(files)):
        skipped.append(Skipped(f"asterisk/{name}", "asterisk", "transcript without a recording in the package"))

    for source, folder, transcription in (("librivox", "librivox", "transcription"),
                                          ("cards", "cards", "cards.transcription")):
        texts = read_sphinx_transcription(root / POCKETSPHINX_DATA / folder / transcription)
        for path in sorted((root / POCKETSPHINX_DATA / folder).glob("*.wav")):
            add(source, path.stem, path, texts.get(path.stem))
    return prompts, skipped


def transcript_texts(root: str | os.PathLike = "/") -> list[str]:
    """Every distinct scorable transcript of the sources (:func:`scorable_text`), sorted; reads only the transcript
    files (``asterisk-core-sounds-en``, ``pocketsphinx-testdata``), never the recordings.

    This is the set's text domain: the mini base is trained on these texts spoken by synthetic voices, while the
    recordings (the real speakers) stay held out.

    Raises:
        FileNotFoundError: a transcript file is missing (the message names the packages to install).
    """
    root = Path(root)
    _missing(root, [ASTERISK_TRANSCRIPTS], APT_PACKAGES[1:2])
    sphinx = [POCKETSPHINX_DATA / "librivox" / "transcription", POCKETSPHINX_DATA / "cards" / "cards.transcription"]
    _missing(root, sphinx, APT_PACKAGES[2:])
    raw = list(read_asterisk_transcripts(root / ASTERISK_TRANSCRIPTS).values())
    for path in sphinx:
        raw += list(read_sphinx_transcription(root / path).values())
    return sorted({text for text in (scorable_text(item)[0] for item in raw) if text is not None})


def read_set_folder(folder: str | os.PathLike, limit: int = 0) -> list[dict[str, Any]]:
    """The rows of one audiofolder of the set (``<set>/mic`` or ``<set>/ldv/<preset>``), each with its ``audio``
    (float32, 16 kHz); ``limit`` > 0 keeps the first rows only.

    Raises:
        FileNotFoundError: no ``metadata.csv`` in ``folder``.
        ValueError: a row without ``file_name``/``text``, or a file that is not 16 kHz (naming the file).
    """
    folder = Path(folder)
    if not (folder / "metadata.csv").is_file():
        raise FileNotFoundError(f"{folder / 'metadata.csv'} not found: build the set with "
                                "`ldv-qwen2audio build-real-voice-set --output DIR` and pass DIR/mic or DIR/ldv/<preset>")
    with open(folder / "metadata.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rows = rows[:limit] if limit > 0 else rows
    for number, row in enumerate(rows, start=2):
        if not row.get("file_name") or row.get("text") is None:
            raise ValueError(f"{folder / 'metadata.csv'}, line {number}: expected the columns file_name and text")
        audio, rate = sf.read(folder / row["file_name"], dtype="float32")
        if rate != SAMPLING_RATE:
            raise ValueError(f"{folder / row['file_name']}: {rate} Hz, expected {SAMPLING_RATE}")
        row["audio"] = audio if audio.ndim == 1 else audio.mean(axis=1)
    return rows


def decode_recording(path: str | os.PathLike) -> np.ndarray:
    """A source recording as float32 mono ``(samples,)`` at 16 kHz: G.722 through ``ffmpeg`` (soundfile cannot read
    it), WAV through soundfile (it must already be 16 kHz mono: these sources are; a different file is an error).

    Raises:
        FileNotFoundError: ``ffmpeg`` is missing for a G.722 file.
        RuntimeError: ``ffmpeg`` failed (its message included).
        ValueError: a WAV file that is not 16 kHz mono.
    """
    path = Path(path)
    if path.suffix == ".g722":
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise FileNotFoundError("ffmpeg is needed to decode G.722: apt-get install ffmpeg (bash scripts/setup.sh)")
        result = subprocess.run(
            [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path), "-ac", "1",
             "-ar", str(SAMPLING_RATE), "-f", "s16le", "-acodec", "pcm_s16le", "-"],
            capture_output=True, timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"ffmpeg could not decode {path}: {result.stderr.decode(errors='replace').strip()}")
        return np.frombuffer(result.stdout, dtype="<i2").astype(np.float32) / 32768.0
    info = sf.info(str(path))
    if info.samplerate != SAMPLING_RATE or info.channels != 1:
        raise ValueError(f"{path}: expected 16 kHz mono, got {info.samplerate} Hz with {info.channels} channel(s)")
    return sf.read(str(path), dtype="float32")[0]


def _package_version(package: str, root: Path) -> str | None:
    """The installed version of a Debian package (only when ``root`` is the system's own ``/``)."""
    if root.resolve() != Path("/") or shutil.which("dpkg-query") is None:
        return None
    result = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True)
    return (result.stdout.strip() or None) if result.returncode == 0 else None


def _ffmpeg_version() -> str | None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    result = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True)
    return result.stdout.splitlines()[0] if result.returncode == 0 and result.stdout else None


# ----------------------------------------------------------------------------------------------------- the set
def _write_wav(path: Path, audio: np.ndarray) -> str:
    """Write 16-bit PCM at 16 kHz; returns the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1.0, 1.0), SAMPLING_RATE, format="WAV", subtype="PCM_16")
    return file_sha256(path)


def _write_metadata(folder: Path, rows: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(METADATA_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)


def _attribution() -> str:
    lines = ["Recordings in this folder and what they may be used for.", ""]
    for source in SOURCES.values():
        lines += [f"{source.name} ({source.package}): {source.licence}", f"  {source.attribution}", ""]
    lines.append("The LDV versions are simulated from the recordings (qwen2audio-ldv's simulator).")
    return "\n".join(lines) + "\n"


def build_real_voice_set(
    output: str | os.PathLike,
    root: str | os.PathLike = "/",
    conditions: Sequence[str | LDVCondition] = tuple(LDV_PRESETS),
    seed: int = 0,
    register_held_out: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the real-voice test set (see the module docstring for sources, rules and layout).

    Args:
        output: the folder to write (created; files of an earlier build at the same names are replaced).
        root: where the Debian packages' files are (``/``, or a ``dpkg -x`` folder).
        conditions: LDV presets or condition files; one LDV folder each (default: every preset).
        seed: the simulator seed; clip ``f`` under condition ``c`` gets ``ldv_folders.file_seed(seed, "c/f")``, so
            every clip is reproducible on its own.
        register_held_out: record the manifest's held-out section in the registry folder
            (:func:`~modeling_qwen2audio_ldv.data.held_out.registry_dir`), so training refuses these speakers and
            files on this machine.
        progress: show a progress bar.

    Returns:
        The manifest (also written to ``<output>/manifest.json``).

    Raises:
        FileNotFoundError: a package or ``ffmpeg`` is missing.
        ValueError: conditions with clashing names, or a source file that cannot be read as described.
    """
    from tqdm.auto import tqdm

    output, root = Path(output), Path(root)
    resolved = [get_condition(condition) for condition in conditions]
    names = [condition.name for condition in resolved]
    if len(set(names)) != len(names) or "mic" in names:
        raise ValueError(f"`conditions` must have distinct names other than 'mic', got {names}")
    prompts, skipped = find_prompts(root)
    rows: dict[str, list[dict[str, Any]]] = {"mic": [], **{name: [] for name in names}}
    clips: list[dict[str, Any]] = []
    held_out_hashes: set[str] = set()
    for prompt in tqdm(prompts, desc="real voices", unit="clip", disable=not progress):
        audio = decode_recording(prompt.path)
        duration = audio.shape[0] / SAMPLING_RATE
        if duration > MAX_SECONDS:
            skipped.append(Skipped(prompt.prompt_id, prompt.source,
                                   f"{duration:.1f} s, longer than the model's {MAX_SECONDS:.0f} s window"))
            continue
        if duration == 0 or not np.any(audio):
            skipped.append(Skipped(prompt.prompt_id, prompt.source, "the recording is empty or silent"))
            continue
        source = SOURCES[prompt.source]
        base = {"text": prompt.text, "speaker": source.speaker, "source": source.name, "licence": source.licence,
                "prompt_id": prompt.prompt_id, "original_text": prompt.original_text,
                "duration": round(duration, 4)}
        source_sha = file_sha256(prompt.path)
        record: dict[str, Any] = {"prompt_id": prompt.prompt_id, "source_file": str(prompt.path),
                                  "source_sha256": source_sha, "text": prompt.text}
        record["mic_sha256"] = _write_wav(output / "mic" / prompt.file_name, audio)
        rows["mic"].append({"file_name": prompt.file_name, **base, "condition": "mic"})
        record["ldv"] = {}
        for condition in resolved:
            relative = f"{condition.name}/{prompt.file_name}"
            clip_seed = file_seed(seed, relative)
            ldv = simulate_ldv(audio, SAMPLING_RATE, condition, seed=clip_seed)
            digest = _write_wav(output / "ldv" / relative, ldv)
            record["ldv"][condition.name] = {"sha256": digest, "seed": clip_seed}
            rows[condition.name].append({"file_name": prompt.file_name, **base, "condition": condition.name})
            held_out_hashes.add(digest)
        held_out_hashes.update((source_sha, record["mic_sha256"]))
        clips.append(record)
    if not clips:
        raise ValueError(f"no scorable recording found under {root}: {len(skipped)} skipped")
    _write_metadata(output / "mic", rows["mic"])
    for condition in resolved:
        _write_metadata(output / "ldv" / condition.name, rows[condition.name])
    for item in skipped:
        logger.info("skipped %s: %s", item.prompt_id, item.reason)
    logger.info("real-voice set: %d clips (%.1f min), %d recordings or transcripts skipped (reasons in the manifest)",
                len(clips), sum(r["duration"] for r in rows["mic"]) / 60.0, len(skipped))

    transcript_files = {"asterisk": root / ASTERISK_TRANSCRIPTS,
                        "librivox": root / POCKETSPHINX_DATA / "librivox" / "transcription",
                        "cards": root / POCKETSPHINX_DATA / "cards" / "cards.transcription"}
    speakers = sorted({SOURCES[p.source].speaker for p in prompts})
    held_out = HeldOutRegistry(frozenset(speakers), frozenset(held_out_hashes), (str(output / "manifest.json"),))
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": "qwen2audio-ldv real-voice test set",
        "seed": int(seed),
        "sampling_rate": SAMPLING_RATE,
        "conditions": {condition.name: condition.to_dict() for condition in resolved},
        "sources": {
            name: {**dataclasses.asdict(source),
                   "package_version": _package_version(source.package, root),
                   "transcripts_file": str(transcript_files[name]),
                   "transcripts_sha256": file_sha256(transcript_files[name]),
                   "clips": sum(1 for r in rows["mic"] if r["source"] == name),
                   "minutes": round(sum(r["duration"] for r in rows["mic"] if r["source"] == name) / 60.0, 3)}
            for name, source in SOURCES.items()
        },
        "not_used": NOT_USED,
        "tools": {"ffmpeg": _ffmpeg_version()},
        "clips": clips,
        "skipped": [dataclasses.asdict(item) for item in skipped],
        "held_out": held_out.to_dict(),
    }
    (output / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    (output / "ATTRIBUTION.txt").write_text(_attribution(), encoding="utf-8")
    if register_held_out:
        # one registry file per output folder: rebuilding the same folder replaces its entry
        key = re.sub(r"[^A-Za-z0-9._-]+", "_", str(output.resolve()).strip("/"))
        path = register(held_out, f"real-voices-{key}")
        logger.info("held-out speakers and files recorded in %s", path)
    return manifest


__all__ = [
    "APT_PACKAGES",
    "MAX_SECONDS",
    "SOURCES",
    "Prompt",
    "Skipped",
    "Source",
    "build_real_voice_set",
    "decode_recording",
    "find_prompts",
    "read_asterisk_transcripts",
    "read_set_folder",
    "read_sphinx_transcription",
    "scorable_text",
    "transcript_texts",
]
