# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The held-out registry: speakers and audio files that are test data and must never train a model.

The real-voice test set (:mod:`~modeling_qwen2audio_ldv.data.real_voices`) is only a fair test while its speakers
stay out of training: a model that has heard Allison Smith's prompts, or a corpus that splices her digit
recordings into training strings, would be scored on a voice it knows. This module is the one place that says
who and what is held out, and the two training entry points ask it:

* the synthetic corpus (:func:`~modeling_qwen2audio_ldv.synthetic.corpus.build_paired_corpus`) refuses a voice whose
  speaker (:func:`~modeling_qwen2audio_ldv.synthetic.voices.voice_speaker`) is held out;
* ``train_hf.py --train_data`` (:func:`~modeling_qwen2audio_ldv.training.data.load_user_data`) refuses rows whose
  ``speaker`` column names a held-out speaker, or whose audio file is byte-identical (sha256) to a held-out file.

What is held out (:func:`default_registry`): the speakers of the real-voice set's sources
(:data:`REAL_VOICE_SPEAKERS`, always), plus every manifest in the registry folder (:func:`registry_dir`), where
``ldv-qwen2audio build-real-voice-set`` records the sha256 of every source file and every clip it writes. A
re-encoded copy of a clip is not caught by its hash: keep the ``speaker`` column with the clips.

Example:
    >>> from modeling_qwen2audio_ldv.data.held_out import default_registry
    >>> registry = default_registry()
    >>> registry.check_voices(["en-us", "flite:slt"])         # fine: no held-out speaker
    >>> registry.check_voices(["asterisk:allison_smith"])     # HeldOutError
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Speaker ids of the real-voice test set's sources, held out whatever the registry folder holds.
REAL_VOICE_SPEAKERS: dict[str, str] = {
    "asterisk:allison_smith": "Allison Smith, the English voice of Debian's asterisk-core-sounds-en",
    "librivox:sense_and_sensibility_01": "the LibriVox reader of Sense and Sensibility, chapter 1 "
    "(pocketsphinx-testdata's librivox clips)",
    "pocketsphinx:cards": "the speaker of pocketsphinx-testdata's cards clips",
}
#: Environment variable that moves the registry folder (tests, shared machines).
REGISTRY_ENV = "QWEN2AUDIO_LDV_HELD_OUT_DIR"
#: The ``held_out`` section's format version in manifests and registry files.
FORMAT_VERSION = 1


class HeldOutError(ValueError):
    """Held-out test data (a speaker or a file of the real-voice set) was given as training data."""


def registry_dir() -> Path:
    """The folder of registered held-out manifests: ``$QWEN2AUDIO_LDV_HELD_OUT_DIR``, else
    ``$XDG_CACHE_HOME/qwen2audio-ldv/held-out`` (``~/.cache/...`` without ``XDG_CACHE_HOME``)."""
    if os.environ.get(REGISTRY_ENV):
        return Path(os.environ[REGISTRY_ENV]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "qwen2audio-ldv" / "held-out"


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class HeldOutRegistry:
    """Speakers and audio files that must not train.

    Attributes:
        speakers: held-out speaker ids (``"asterisk:allison_smith"``, ...).
        audio_sha256: sha256 (hex) of held-out audio files, sources and derived clips alike.
        origins: where the entries came from (built in, manifest paths), for error messages.
    """

    speakers: frozenset[str] = frozenset()
    audio_sha256: frozenset[str] = frozenset()
    origins: tuple[str, ...] = ()

    def merged(self, other: HeldOutRegistry) -> HeldOutRegistry:
        """The union of two registries."""
        return HeldOutRegistry(self.speakers | other.speakers, self.audio_sha256 | other.audio_sha256,
                               self.origins + tuple(o for o in other.origins if o not in self.origins))

    def to_dict(self) -> dict[str, Any]:
        """The ``held_out`` section of a manifest (sorted, so the same registry gives the same JSON)."""
        return {"format": FORMAT_VERSION, "speakers": sorted(self.speakers), "audio_sha256": sorted(self.audio_sha256)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str) -> HeldOutRegistry:
        """Read a ``held_out`` section (see :meth:`to_dict`); ``origin`` names it in errors.

        Raises:
            ValueError: a missing or mistyped field, naming ``origin`` and the field.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{origin}: the held-out section must be a JSON object, got {type(data).__name__}")
        values = {}
        for field in ("speakers", "audio_sha256"):
            value = data.get(field)
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise ValueError(f"{origin}: field {field!r} of the held-out section must be a list of strings, "
                                 f"got {value!r:.80}")
            values[field] = frozenset(value)
        bad = sorted(h for h in values["audio_sha256"] if len(h) != 64 or any(c not in "0123456789abcdef" for c in h))
        if bad:
            raise ValueError(f"{origin}: field 'audio_sha256' holds values that are not sha256 hex digests: {bad[:3]}")
        return cls(values["speakers"], values["audio_sha256"], (origin,))

    @classmethod
    def from_manifest(cls, path: str | os.PathLike) -> HeldOutRegistry:
        """The held-out section of a real-voice set manifest (its ``held_out`` key) or of a registry file (the
        section alone).

        Raises:
            FileNotFoundError: no such file.
            ValueError: not JSON, or a bad held-out section (the message names the file and the field).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not a JSON held-out manifest ({error})") from error
        section = data.get("held_out", data) if isinstance(data, Mapping) else data
        return cls.from_dict(section, str(path))

    def describe(self) -> str:
        return ", ".join(self.origins) or "an empty registry"

    # ------------------------------------------------------------------------------------------- checks
    def check_voices(self, voices: Iterable[str], speaker_of: Callable[[str], str] | None = None) -> None:
        """Refuse synthesis voices that are, or are built from, a held-out speaker.

        Args:
            voices: voice names as the corpus builder takes them (``"en-us"``, ``"flite:slt"``, ...).
            speaker_of: maps a voice to its speaker id; default
                :func:`~modeling_qwen2audio_ldv.synthetic.voices.voice_speaker`.

        Raises:
            HeldOutError: naming each refused voice and its speaker.
        """
        if speaker_of is None:
            from ..synthetic.voices import voice_speaker as speaker_of
        refused = []
        for voice in voices:
            speaker = speaker_of(voice)
            if voice in self.speakers or speaker in self.speakers:
                refused.append(f"{voice!r} (speaker {speaker!r})")
        if refused:
            raise HeldOutError(
                f"voice(s) {', '.join(refused)} speak for a held-out test speaker ({self.describe()}): the real-voice "
                "set's speakers never train a model; choose other voices"
            )

    def check_rows(
        self,
        dataset: Any,
        where: str,
        audio_columns: Sequence[str] = ("audio", "mic_audio"),
        speaker_column: str = "speaker",
    ) -> None:
        """Refuse training rows whose speaker is held out or whose audio file is a held-out file (sha256).

        Args:
            dataset: a ``datasets.Dataset`` with ``Audio`` columns (as ``load_audio_dataset`` returns).
            where: the data source, for the message.
            audio_columns: audio columns to hash (those present are checked).
            speaker_column: the column of speaker ids, if the data has one.

        Raises:
            HeldOutError: naming the rows (up to ten), their files and what matched.
        """
        from datasets import Audio

        problems: list[str] = []
        if speaker_column in dataset.column_names:
            for index, speaker in enumerate(dataset[speaker_column]):
                if speaker in self.speakers:
                    problems.append(f"row {index}: speaker {speaker!r}")
        columns = [c for c in audio_columns if c in dataset.column_names] if self.audio_sha256 else []
        for column in columns:
            raw = dataset.select_columns([column]).cast_column(column, Audio(decode=False))
            index = 0
            for batch in raw.iter(batch_size=64):  # batches: a column of audio bytes may not fit in memory at once
                for value in batch[column]:
                    digest = _value_sha256(value)
                    if digest is not None and digest in self.audio_sha256:
                        problems.append(f"row {index}: {column} {value.get('path') or '<bytes>'} "
                                        f"(sha256 {digest[:12]}...)")
                    index += 1
        if problems:
            shown = "; ".join(problems[:10]) + (f"; ... {len(problems) - 10} more" if len(problems) > 10 else "")
            raise HeldOutError(
                f"{where}: {len(problems)} training row(s) are held-out test data ({self.describe()}): {shown}. The "
                "real-voice set and its speakers are for evaluation only; remove these rows from the training data"
            )


def _value_sha256(value: Any) -> str | None:
    """sha256 of an ``Audio(decode=False)`` value's bytes (or its file); ``None`` when neither is there."""
    if not isinstance(value, Mapping):
        return None
    if value.get("bytes") is not None:
        return hashlib.sha256(value["bytes"]).hexdigest()
    path = value.get("path")
    if path and os.path.isfile(path):
        return file_sha256(path)
    return None  # an unreadable row: validation reports it, this check has nothing to compare


def builtin_registry() -> HeldOutRegistry:
    """The speakers of the real-voice set's sources (:data:`REAL_VOICE_SPEAKERS`), no files."""
    return HeldOutRegistry(frozenset(REAL_VOICE_SPEAKERS), frozenset(), ("the built-in real-voice speakers",))


def default_registry(extra: Iterable[str | os.PathLike] = ()) -> HeldOutRegistry:
    """The built-in speakers, every registered manifest (:func:`registry_dir`) and the manifests in ``extra``.

    A registry file that cannot be read is an error (it would otherwise let held-out data through silently).
    """
    registry = builtin_registry()
    folder = registry_dir()
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    for path in [*paths, *map(Path, extra)]:
        registry = registry.merged(HeldOutRegistry.from_manifest(path))
    return registry


def register(section: HeldOutRegistry, name: str) -> Path:
    """Record a held-out section in the registry folder as ``<name>.json`` (atomically); returns its path."""
    folder = registry_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.json"
    partial = folder / f".{name}.json.{os.getpid()}"
    partial.write_text(json.dumps(section.to_dict(), indent=1) + "\n", encoding="utf-8")
    os.replace(partial, target)
    return target


def resolve_registry(held_out: HeldOutRegistry | str | os.PathLike | Sequence[str | os.PathLike] | None
                     ) -> HeldOutRegistry:
    """A registry from what a caller passed: ``None`` (the default registry), a registry (joined to the built-in
    speakers, which no caller can drop), or manifest path(s) added to the default registry."""
    if held_out is None:
        return default_registry()
    if isinstance(held_out, HeldOutRegistry):
        return builtin_registry().merged(held_out)
    if isinstance(held_out, (str, os.PathLike)):
        held_out = [held_out]
    return default_registry(held_out)


__all__ = [
    "REAL_VOICE_SPEAKERS",
    "REGISTRY_ENV",
    "HeldOutError",
    "HeldOutRegistry",
    "builtin_registry",
    "default_registry",
    "file_sha256",
    "register",
    "registry_dir",
    "resolve_registry",
]
