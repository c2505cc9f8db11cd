# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Speech from eSpeak NG, through ctypes: :func:`synthesize`.

eSpeak NG is GPL-3.0 and stays an optional extra (``pip install "qwen2audio-ldv[speech]"``): this module
imports without it and loads the library (bundled by the ``espeakng-loader`` package) only when speech is
synthesised. Every clip is a pure function of its arguments (see :class:`_ESpeakEngine` for how).

Example:
    >>> from modeling_qwen2audio_ldv.synthetic.espeak import synthesize
    >>> clip = synthesize("three seven one nine", voice="en-us+f3")        # float32, 16 kHz
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal

from ..audio import SAMPLING_RATE

logger = logging.getLogger(__name__)

#: Silence kept before the first and after the last active 10 ms frame of a synthesised clip (seconds).
EDGE_SILENCE_S = 0.05
#: A 10 ms frame is "active" when its RMS is within this many dB of the loudest frame's RMS.
ACTIVITY_THRESHOLD_DB = 45.0
#: How to install the optional speech extra (named in the errors and in ``synth-corpus --help``).
INSTALL_HINT = 'pip install "qwen2audio-ldv[speech]"'


# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0
# int (*t_espeak_callback)(short *wav, int numsamples, espeak_EVENT *events)
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _VoiceInfo(ctypes.Structure):
    """``espeak_VOICE`` of speak_lib.h (read-only use: listing voices)."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # raw pointer: the list holds NUL bytes
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


def _import_espeakng_loader() -> Any:
    """Import ``espeakng-loader`` (the optional GPL-3.0 speech extra) or explain how to install it."""
    try:
        return importlib.import_module("espeakng_loader")
    except ImportError as err:
        raise ImportError(
            "Speech synthesis needs eSpeak NG, which this package uses only for demo and test speech. "
            f"Install it with: {INSTALL_HINT}"
        ) from err


def _unload_library(handle: int) -> None:
    """Unload a library loaded by ``ctypes.CDLL`` (dlclose / FreeLibrary)."""
    import _ctypes  # the C half of ctypes; dlclose and FreeLibrary are not re-exported by ctypes

    if sys.platform == "win32":
        _ctypes.FreeLibrary(handle)
    else:
        _ctypes.dlclose(handle)


def _is_mapped(path: str) -> bool | None:
    """Whether ``path`` is mapped into this process (Linux ``/proc/self/maps``); ``None`` where unknown."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    return path in maps.read_text()


def _private_library_copy(source: Path) -> str:
    """Path of a copy of ``source`` that only this module loads (one per library build and user, kept)."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    folder = Path(tempfile.gettempdir()) / f"qwen2audio-ldv-{user}"
    target = folder / f"{digest}-{source.name}"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{target.name}.{uuid.uuid4().hex}"
        shutil.copyfile(source, partial)
        os.replace(partial, target)  # atomic: concurrent processes never load a half-written file
    return str(target)


class _ESpeakEngine:
    """The process's access to the bundled ``libespeak-ng``.

    eSpeak NG keeps synthesis state in static variables that ``espeak_Terminate`` does not reset (the pitch
    flutter phase, the roughness cycle counter, the random generator, ...), so the same text spoken twice in
    one process comes out different. To make every clip a pure function of its arguments, each call runs on a
    freshly loaded instance: each :meth:`synthesize` loads a private copy of the library (a path that no other
    code loads, so this class holds the only reference and unloading really unloads), initialises it,
    synthesises, terminates and unloads it. This costs about a millisecond per clip (plus ~4 ms to load the
    voice). A lock serialises callers, since eSpeak NG is not thread-safe.
    """

    def __init__(self, espeakng_loader: Any) -> None:
        self._data_path = espeakng_loader.get_data_path().encode()
        self._source = Path(espeakng_loader.get_library_path())
        self._library_path = _private_library_copy(self._source)
        self._lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._on_audio)
        self._identifiers: dict[str, str] | None = None  # language code -> voice file identifier
        self._unload_checked = False
        self.sample_rate: int | None = None

    def _on_audio(self, wav: Any, num_samples: int, events: Any) -> int:
        if num_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # 0: continue synthesis

    def _load(self) -> ctypes.CDLL:
        if not os.path.exists(self._library_path):  # e.g. removed by a temporary-folder cleaner
            self._library_path = _private_library_copy(self._source)
        lib = ctypes.CDLL(self._library_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceInfo))
        # espeak_Synth(text, size, position, position_type, end_position, flags, unique_identifier, user_data)
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint]
        lib.espeak_Synth.argtypes += [ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_Terminate.restype = ctypes.c_int
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data_path, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            _unload_library(lib._handle)
            raise RuntimeError(f"espeak_Initialize failed (returned {rate}) with data at {self._data_path.decode()}")
        self.sample_rate = rate
        lib.espeak_SetSynthCallback(self._callback)
        if hasattr(lib, "espeak_ng_SetRandSeed"):  # eSpeak NG >= 1.52; a fresh load starts from a fixed seed anyway
            lib.espeak_ng_SetRandSeed(0)
        return lib

    def _unload(self, lib: ctypes.CDLL) -> None:
        lib.espeak_Terminate()
        _unload_library(lib._handle)
        if not self._unload_checked:
            self._unload_checked = True
            if _is_mapped(self._library_path):
                logger.warning(
                    "libespeak-ng stayed loaded after dlclose: synthesis state carries over between clips, "
                    "so clips are not reproducible in this process"
                )

    def _list_identifiers(self, lib: ctypes.CDLL) -> dict[str, str]:
        """Map every language code of every voice (``en-gb``, ``cmn``, ...) to its voice file identifier."""
        table: dict[str, str] = {}
        voices = lib.espeak_ListVoices(None)
        index = 0
        while voices[index]:
            voice = voices[index].contents
            identifier = voice.identifier.decode()
            # `languages`: repeated (1 priority byte, NUL-terminated code), ending with an empty code.
            position = voice.languages
            while position and ctypes.string_at(position, 1) != b"\x00":
                code = ctypes.string_at(position + 1)  # up to the NUL
                table.setdefault(code.decode("ascii", "replace").lower(), identifier)
                position += len(code) + 2
            table.setdefault(Path(identifier).name.lower(), identifier)
            index += 1
        return table

    def _set_voice(self, lib: ctypes.CDLL, voice: str) -> None:
        if lib.espeak_SetVoiceByName(voice.encode()) == _EE_OK:
            return
        # eSpeak looks voices up by file name ("en-us", "en-gb-x-rp"); also accept a language code ("en-gb").
        if self._identifiers is None:
            self._identifiers = self._list_identifiers(lib)
        base, plus, variant = voice.partition("+")
        identifier = self._identifiers.get(base.lower())
        if identifier is not None and lib.espeak_SetVoiceByName(f"{identifier}{plus}{variant}".encode()) == _EE_OK:
            return
        known = ", ".join(sorted(self._identifiers)[:40])
        raise ValueError(
            f"unknown eSpeak voice {voice!r}: expected '<language>[+<variant>]' with a language such as {known}, ... "
            "and a variant such as f1-f5, m1-m8, klatt, klatt2-klatt6"
        )

    def synthesize(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """Synthesise ``text``; returns int16 samples at :attr:`sample_rate` (22050 Hz for the bundled data)."""
        data = text.encode("utf-8")
        with self._lock:
            self._chunks = []
            lib = self._load()
            try:
                self._set_voice(lib, voice)
                lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
                lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
                status = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
                if status != _EE_OK:
                    raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}")
                lib.espeak_Synchronize()
            finally:
                self._unload(lib)
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


_ENGINE: _ESpeakEngine | None = None
_ENGINE_PID: int | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _ESpeakEngine:
    """The eSpeak engine of this process (created on first use, again after a fork)."""
    global _ENGINE, _ENGINE_PID
    espeakng_loader = _import_espeakng_loader()  # checked on every call: cheap once imported
    with _ENGINE_LOCK:
        if _ENGINE is None or _ENGINE_PID != os.getpid():
            _ENGINE, _ENGINE_PID = _ESpeakEngine(espeakng_loader), os.getpid()
        return _ENGINE


def _trim_silence(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cut leading and trailing silence, keeping :data:`EDGE_SILENCE_S` around the active part."""
    frame = max(1, int(round(0.010 * sample_rate)))
    num_frames = len(audio) // frame
    if num_frames == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: num_frames * frame].reshape(num_frames, frame) ** 2, axis=1))
    peak = float(rms.max())
    if peak == 0.0:
        return audio
    active = np.flatnonzero(rms >= peak * 10.0 ** (-ACTIVITY_THRESHOLD_DB / 20.0))
    keep = int(round(EDGE_SILENCE_S * sample_rate))
    start = max(0, int(active[0]) * frame - keep)
    end = min(len(audio), (int(active[-1]) + 1) * frame + keep)
    return audio[start:end]


def synthesize(
    text: str,
    voice: str = "en-us",
    rate: int = 175,
    pitch: int = 50,
    sample_rate: int = SAMPLING_RATE,
) -> np.ndarray:
    """Speak ``text`` with eSpeak NG.

    The output is a pure function of the arguments: the same call gives bit-identical samples in any process.

    Args:
        text: what to say (UTF-8; any script the voice's language reads, e.g. Chinese characters for ``cmn``).
        voice: eSpeak voice ``"<language>[+<variant>]"``: ``"en-us"``, ``"en-gb-x-rp+m3"``, ``"en-us+klatt4"``,
            ``"cmn+f3"``, ... A language code such as ``"en-gb"`` is also accepted.
        rate: speaking rate in words per minute, 80-450 (eSpeak's default 175).
        pitch: base pitch, 0-99 (50 is the voice's own pitch).
        sample_rate: output rate in Hz; eSpeak synthesises at 22050 Hz and the result is resampled
            (polyphase, ``scipy.signal.resample_poly``).

    Returns:
        float32 mono waveform ``(samples,)`` in [-1, 1], trimmed to the speech plus :data:`EDGE_SILENCE_S`
        (50 ms) of silence at each end.

    Raises:
        ImportError: ``espeakng-loader`` is not installed (``pip install "qwen2audio-ldv[speech]"``).
        ValueError: empty text, unknown voice, or an out-of-range rate, pitch or sample rate.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"`text` must be a non-empty string, got {text!r}")
    if not 80 <= int(rate) <= 450:
        raise ValueError(f"`rate` ({rate}) must be between 80 and 450 words per minute")
    if not 0 <= int(pitch) <= 99:
        raise ValueError(f"`pitch` ({pitch}) must be between 0 and 99")
    if int(sample_rate) <= 0:
        raise ValueError(f"`sample_rate` ({sample_rate}) must be a positive number of Hz")
    engine = _engine()
    samples = engine.synthesize(text, voice, int(rate), int(pitch))
    if samples.size == 0:
        raise RuntimeError(f"eSpeak NG produced no audio for {text!r} with voice {voice!r}")
    audio = samples.astype(np.float64) / 32768.0
    native_rate = int(engine.sample_rate or 22_050)
    if native_rate != int(sample_rate):
        divisor = math.gcd(native_rate, int(sample_rate))
        audio = signal.resample_poly(audio, int(sample_rate) // divisor, native_rate // divisor)
    audio = _trim_silence(audio, int(sample_rate))
    return np.clip(audio, -1.0, 1.0).astype(np.float32)

