# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Real recordings of speakers outside the real-voice set, for the adapter's distillation.

The ``distill`` objective needs no transcript: it pulls the adapter's output on a simulated LDV clip towards the
frozen tower's output on the paired microphone clip. Real speech in any language can therefore show the adapter
what the LDV channel does to a human voice, which synthetic voices do not (an adapter trained on eSpeak and Flite
alone made real voices' LDV speech worse: ``benchmarks/README.md``). Debian ships such speech: the Asterisk prompts
in other languages, each read by one professional speaker who is not in the real-voice set.

========================  ================================  ===========================  ============
speaker id                Debian package                    speaker                      licence
========================  ================================  ===========================  ============
``asterisk:june_wallack``  ``asterisk-core-sounds-fr-g722``   June Wallack (fr-CA, female)  CC-BY-SA-3.0
``asterisk:carlo_flora``   ``asterisk-core-sounds-it-g722``   Carlo Flora (it-IT, male)     CC-BY-3.0
``asterisk:maxim_topal``   ``asterisk-core-sounds-ru-g722``   ivrvoice.ru (ru-RU, female)   CC-BY-3.0
========================  ================================  ===========================  ============

(about 25 minutes each; ``scripts/setup.sh`` installs the packages). The Spanish package
(``asterisk-core-sounds-es-g722``, folder ``es_MX_f_Allison``) is read by Allison Smith, the real-voice set's
speaker: it is refused like any held-out speaker (:mod:`~modeling_qwen2audio_ldv.data.held_out`). The recordings
train an adapter only through distillation; their transcripts (in their own languages) are never used. An
adapter trained on them is a work derived from CC-BY(-SA) audio: credit the speakers when sharing it.

Example:
    >>> from modeling_qwen2audio_ldv.data.other_speakers import draw_recordings
    >>> recordings = draw_recordings(600, seed=0)       # 200 per speaker, seeded
    >>> recordings[0].speaker, recordings[0].path
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from .held_out import HeldOutRegistry, resolve_registry
from .real_voices import read_asterisk_transcripts


@dataclasses.dataclass(frozen=True)
class OtherSpeaker:
    """One package of recordings: one speaker, one language, one licence."""

    speaker: str  #: speaker id (the corpus rows' ``voice``)
    package: str  #: the Debian package holding the audio
    folder: Path  #: where the package puts the recordings, relative to the file system root
    transcripts: Path  #: the prompts' transcripts (``name: text``), relative to the file system root
    transcripts_package: str  #: the Debian package holding them
    language: str  #: BCP-47 tag of the recordings
    licence: str
    attribution: str


_SOUNDS = Path("usr/share/asterisk/sounds")
_DOCS = Path("usr/share/doc")
#: The speakers whose recordings may train an adapter.
OTHER_SPEAKERS: dict[str, OtherSpeaker] = {
    speaker.speaker: speaker
    for speaker in (
        OtherSpeaker("asterisk:june_wallack", "asterisk-core-sounds-fr-g722", _SOUNDS / "fr_CA_f_June",
                     _DOCS / "asterisk-core-sounds-fr/core-sounds-fr.txt.gz",
                     "asterisk-core-sounds-fr", "fr-CA",
                     "CC-BY-SA-3.0", "Asterisk core sound prompts (French), recorded by June Wallack; Copyright "
                     "2006-2008 June Wallack; CC-BY-SA-3.0"),
        OtherSpeaker("asterisk:carlo_flora", "asterisk-core-sounds-it-g722", _SOUNDS / "it_IT_m_Carlo",
                     _DOCS / "asterisk-core-sounds-it/core-sounds-it.txt.gz",
                     "asterisk-core-sounds-it", "it-IT",
                     "CC-BY-3.0", "Asterisk core sound prompts (Italian), recorded by Carlo Flora; Copyright 2012 "
                     "Carlo Flora; CC-BY-3.0"),
        OtherSpeaker("asterisk:maxim_topal", "asterisk-core-sounds-ru-g722", _SOUNDS / "ru_RU_f_IvrvoiceRU",
                     _DOCS / "asterisk-core-sounds-ru/core-sounds-ru.txt.gz",
                     "asterisk-core-sounds-ru", "ru-RU",
                     "CC-BY-3.0", "Asterisk core sound prompts (Russian), provided by Maxim Topal (ivrvoice.ru); "
                     "Copyright 2010 Maxim; CC-BY-3.0"),
    )
}
#: Asterisk sound folders whose speaker is held out (the real-voice set's): never read as training speech.
HELD_OUT_FOLDERS: dict[str, str] = {
    "en_US_f_Allison": "asterisk:allison_smith",
    "es_MX_f_Allison": "asterisk:allison_smith",
}


@dataclasses.dataclass(frozen=True)
class Recording:
    """One real recording for distillation."""

    path: Path
    speaker: str
    language: str
    text: str  #: its transcript, in its own language (a row's ``text``; no objective reads it)
    seconds: float


#: Recordings longer than this (s) are left out: they would set the padded length of every batch they join.
MAX_SECONDS = 8.0
#: Recordings shorter than this (s) are left out (single syllables, beeps).
MIN_SECONDS = 0.5
#: G.722 at 64 kbit/s: bytes per second of audio (a recording's length without decoding it).
_G722_BYTES_PER_SECOND = 8000


def find_recordings(
    speakers: tuple[str, ...] | None = None,
    root: str | os.PathLike = "/",
    held_out: HeldOutRegistry | str | os.PathLike | None = None,
    max_seconds: float = MAX_SECONDS,
) -> list[Recording]:
    """Every transcribed recording of ``MIN_SECONDS``-``max_seconds`` of ``speakers`` (default: all of
    :data:`OTHER_SPEAKERS`), sorted by speaker and path.

    Args:
        speakers: speaker ids of :data:`OTHER_SPEAKERS`.
        root: the file system root the packages are installed under (``/``), or a folder where ``dpkg -x``
            unpacked them.
        held_out: the held-out registry the speakers are checked against (default: the default registry).

    Raises:
        HeldOutError: a speaker is held out.
        ValueError: an unknown speaker id.
        FileNotFoundError: a package is not installed (the message names it), or it holds no recordings.
    """
    speakers = tuple(OTHER_SPEAKERS) if speakers is None else tuple(speakers)
    # a held-out speaker first: asking for the set's speaker is a HeldOutError, not a typo
    resolve_registry(held_out).check_voices(speakers, speaker_of=str)
    unknown = [s for s in speakers if s not in OTHER_SPEAKERS]
    if unknown or not speakers:
        raise ValueError(f"`speakers` ({list(speakers)}) must be a non-empty subset of {sorted(OTHER_SPEAKERS)}")
    root = Path(root)
    absent = []  # (path, the package that installs it)
    for source in (OTHER_SPEAKERS[s] for s in speakers):
        absent += [(path, package) for path, package in ((root / source.folder, source.package),
                                                         (root / source.transcripts, source.transcripts_package))
                   if not path.exists()]
    if absent:
        raise FileNotFoundError(
            f"{', '.join(str(path) for path, _ in absent)} not found: install the Debian packages "
            f"{' '.join(dict.fromkeys(package for _, package in absent))} (apt-get install ..., or bash "
            "scripts/setup.sh), or pass a root where `dpkg -x` unpacked them"
        )
    recordings = []
    for speaker in speakers:
        source = OTHER_SPEAKERS[speaker]
        transcripts = read_asterisk_transcripts(root / source.transcripts)
        sounds = root / source.folder
        kept = 0
        for path in sorted(sounds.rglob("*.g722")):
            seconds = path.stat().st_size / _G722_BYTES_PER_SECOND
            text = transcripts.get(path.relative_to(sounds).with_suffix("").as_posix(), "").strip()
            if text and MIN_SECONDS <= seconds <= max_seconds:
                recordings.append(Recording(path, speaker, source.language, text, seconds))
                kept += 1
        if not kept:
            raise FileNotFoundError(f"{sounds} holds no transcribed .g722 recordings of {MIN_SECONDS:g}-"
                                    f"{max_seconds:g} s (package {source.package})")
    return recordings


def draw_recordings(
    n: int,
    seed: int,
    speakers: tuple[str, ...] | None = None,
    root: str | os.PathLike = "/",
    held_out: HeldOutRegistry | str | os.PathLike | None = None,
    max_seconds: float = MAX_SECONDS,
) -> list[Recording]:
    """``n`` distinct recordings, the speakers taking turns, each speaker's recordings in a seeded order.

    Raises:
        ValueError: ``n`` < 0 or more than the speakers hold; see also :func:`find_recordings`.
    """
    if n < 0:
        raise ValueError(f"`n` ({n}) must be >= 0")
    if n == 0:
        return []
    recordings = find_recordings(speakers, root, held_out, max_seconds)
    if n > len(recordings):
        raise ValueError(f"asked for {n} recordings; the speakers' packages hold {len(recordings)}")
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list[Recording]] = {}
    for recording in recordings:
        by_speaker.setdefault(recording.speaker, []).append(recording)
    queues = [[group[i] for i in rng.permutation(len(group))] for group in by_speaker.values()]
    drawn: list[Recording] = []
    while len(drawn) < n:
        for queue in queues:
            if queue and len(drawn) < n:
                drawn.append(queue.pop(0))
    return drawn


__all__ = ["HELD_OUT_FOLDERS", "MAX_SECONDS", "MIN_SECONDS", "OTHER_SPEAKERS", "OtherSpeaker", "Recording",
           "draw_recordings", "find_recordings"]
