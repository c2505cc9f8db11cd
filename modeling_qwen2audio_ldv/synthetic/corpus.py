# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Paired microphone / LDV speech corpus, synthesised with eSpeak NG.

The "mini world" (see the design notes) trains and evaluates on speech that anyone can regenerate offline:
short industrial-control utterances (digit strings, commands, status sentences) spoken by eSpeak NG voices,
each paired with its simulated LDV recording (:func:`~modeling_qwen2audio_ldv.synthetic.simulator.simulate_ldv`).

eSpeak NG is GPL-3.0 and stays an optional extra (``pip install "qwen2audio-ldv[speech]"``): this module
imports without it and loads the library (bundled by the ``espeakng-loader`` package) only when speech is
synthesised.

Example:
    >>> from modeling_qwen2audio_ldv.synthetic.corpus import build_paired_corpus, synthesize
    >>> clip = synthesize("three seven one nine", voice="en-us+f3")        # float32, 16 kHz
    >>> corpus = build_paired_corpus(num_train=200, num_eval=20, seed=0, conditions=("window", "wall"))
    >>> corpus["train"][0]["text"], corpus["train"][0]["condition"]

Command line: ``ldv-qwen2audio synth-corpus --output corpus --num-train 2000 --num-eval 200 --seed 0``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import ctypes
import dataclasses
import hashlib
import importlib
import io
import logging
import math
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy import signal

from ..text import EN_DIGITS, number_words
from .simulator import DEFAULT_CONDITION, LDVCondition, get_condition, simulate_ldv

logger = logging.getLogger(__name__)

#: Sample rate (Hz) of every clip this module returns: the rate Qwen2-Audio's feature extractor expects.
SAMPLE_RATE = 16_000
#: Split names of :func:`build_paired_corpus`, in order.
SPLITS = ("train", "validation", "test")
#: Text kinds understood by :func:`make_texts`.
TEXT_KINDS = ("digits", "command", "sentence")
#: Languages with text templates and default voices.
LANGUAGES = ("en", "cmn")
#: Silence kept before the first and after the last active 10 ms frame of a synthesised clip (seconds).
EDGE_SILENCE_S = 0.05
#: A 10 ms frame is "active" when its RMS is within this many dB of the loudest frame's RMS.
ACTIVITY_THRESHOLD_DB = 45.0
#: Per-utterance speaking-rate range, eSpeak words per minute (eSpeak's default is 175; it accepts 80-450).
RATE_RANGE = (140, 210)
#: Per-utterance base-pitch range, eSpeak units 0-99 (50 is the voice's own pitch).
PITCH_RANGE = (30, 70)
#: Number of digits in a ``digits`` text.
DIGIT_COUNT_RANGE = (3, 6)

#: eSpeak voices per language, "<language voice>[+<variant>]". Accents (US, RP, Scotland, Caribbean, New York,
#: Lancaster, West Midlands), male and female formant variants and the Klatt synthesiser give clearly different
#: timbres. :func:`split_voices` holds out the tail of each list: with the order below, validation and test
#: each get one female-formant voice and one Klatt or male voice whose accent/variant pair never occurs in train.
DEFAULT_VOICES: dict[str, tuple[str, ...]] = {
    "en": (
        # train (10)
        "en-us",
        "en-us+f3",
        "en-gb-x-rp+m3",
        "en-gb+f2",
        "en-us+klatt4",
        "en-gb-scotland+m1",
        "en-029+f4",
        "en-us-nyc+m7",
        "en-gb+klatt5",
        "en-us+f2",
        # validation (2)
        "en-gb-x-gbclan+f1",
        "en-gb+klatt3",
        # test (2)
        "en-gb-x-gbcwmd+m2",
        "en-029+f5",
    ),
    "cmn": (
        # train (6)
        "cmn",
        "cmn+f3",
        "cmn+m3",
        "cmn+klatt3",
        "cmn+f2",
        "cmn+m1",
        # validation (1)
        "cmn+f4",
        # test (1)
        "cmn+m7",
    ),
}

_INSTALL_HINT = 'pip install "qwen2audio-ldv[speech]"'


# --------------------------------------------------------------------------------------------------------
# eSpeak NG through ctypes
# --------------------------------------------------------------------------------------------------------
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
            f"Install it with: {_INSTALL_HINT}"
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
    sample_rate: int = SAMPLE_RATE,
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


# --------------------------------------------------------------------------------------------------------
# Texts
# --------------------------------------------------------------------------------------------------------
# Template slots: "{name}" draws uniformly from _EN_SLOTS[name]; "{n}" is a number 1-9 in words, "{nn}" 10-99.
_EN_SLOTS: dict[str, tuple[str, ...]] = {
    "switchable": (
        "light", "fan", "pump", "heater", "motor", "compressor", "alarm", "radio", "printer", "cooler", "mixer",
    ),
    "machine": (
        "conveyor", "motor", "pump", "compressor", "mixer", "press", "drill", "generator", "crane", "engine", "turbine",
        "fan",
    ),
    "openable": ("valve", "door", "window", "gate", "hatch", "shutter", "vent"),
    "quantity": ("speed", "temperature", "pressure", "volume", "flow", "power"),
    "adjust": ("raise", "lower", "increase", "decrease"),
    "start_stop": ("start", "stop", "restart", "pause", "reset"),
    "person": ("operator", "supervisor", "technician", "engineer", "driver"),
    "direction": ("up", "down", "left", "right", "forward", "back"),
    "mover": ("robot arm", "crane", "lift", "camera"),
    "room": ("kitchen", "office", "lab", "warehouse", "hall", "workshop", "control room", "basement"),
    "manner": ("normally", "smoothly", "slowly", "too fast", "hot", "quietly", "loudly"),
    "level": ("high", "low", "normal", "rising", "falling", "stable"),
    "state": ("on", "off", "broken", "working"),
    "open_state": ("open", "closed", "stuck", "locked"),
    "vessel": ("tank", "boiler", "pipe", "line"),
    "need": ("maintenance", "oil", "cleaning", "a new filter", "inspection", "more power"),
    "system_state": ("normal", "ready", "online", "offline"),
}
_EN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "command": (
        "turn on the {switchable}",
        "turn off the {switchable}",
        "turn on the {switchable} in the {room}",
        "turn off the {switchable} in the {room}",
        "{start_stop} the {machine}",
        "{start_stop} {machine} {n}",
        "open the {openable}",
        "close the {openable}",
        "{adjust} the {quantity}",
        "set the {quantity} to {nn}",
        "move the {mover} {direction}",
        "call the {person}",
    ),
    "sentence": (
        "the {machine} is running {manner}",
        "{quantity} in {vessel} {n} is {level}",
        "the {switchable} in the {room} is {state}",
        "the temperature is {nn} degrees",
        "{machine} {n} needs {need}",
        "there is a leak near {vessel} {n}",
        "the {openable} is {open_state}",
        "line {n} has stopped",
        "all systems are {system_state}",
        "the {person} is in the {room}",
    ),
}

# Traditional characters (the original guide is zh-TW), avoiding heteronyms that eSpeak misreads (it reads
# 調高 as diao-gao).
_CMN_DIGITS = "零一二三四五六七八九"
_CMN_NUMBERS = ("一", "二", "三", "四", "五", "六", "七", "八", "九", "十")
_CMN_SLOTS: dict[str, tuple[str, ...]] = {
    "switchable": ("燈", "風扇", "幫浦", "加熱器", "馬達", "警報器", "空調"),
    "machine": ("機器", "馬達", "輸送帶", "壓縮機", "攪拌機", "發電機", "幫浦"),
    "openable": ("閥門", "大門", "窗戶", "艙門"),
    "quantity": ("速度", "溫度", "壓力", "音量", "流量"),
    "adjust": ("提高", "降低"),
    "start_stop": ("啟動", "停止", "再次啟動", "暫停"),
    "room": ("廚房", "辦公室", "實驗室", "倉庫", "工廠", "控制室"),
    "manner": ("正常", "緩慢", "異常", "平穩"),
    "vessel": ("槽", "鍋爐", "管線", "機台"),
    "level": ("過高", "過低", "正常", "上升", "下降"),
    "device_state": ("開了", "關了", "壞了"),
    "system_state": ("正常", "就緒", "離線"),
    "person": ("操作員", "工程師", "技術員", "主管"),
}
_CMN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "command": (
        "打開{switchable}",
        "關閉{switchable}",
        "{start_stop}{machine}",
        "把{quantity}{adjust}",
        "打開{openable}",
        "關上{openable}",
        "打開{room}的{switchable}",
        "請叫{person}過來",
    ),
    "sentence": (
        "{machine}運轉{manner}",
        "{n}號{vessel}的{quantity}{level}",
        "{room}的{switchable}{device_state}",
        "{n}號生產線已經停止",
        "所有系統{system_state}",
        "{person}在{room}",
    ),
}


def _fill(template: str, slots: Mapping[str, Sequence[str]], rng: np.random.Generator, language: str) -> str:
    def draw(match: re.Match) -> str:
        name = match.group(1)
        if name == "n":
            value = int(rng.integers(1, 10))
            return number_words(value) if language == "en" else _CMN_NUMBERS[value - 1]
        if name == "nn":
            return number_words(int(rng.integers(10, 100)))
        options = slots[name]
        return options[int(rng.integers(len(options)))]

    return re.sub(r"\{(\w+)\}", draw, template)


def _make_text(kind: str, rng: np.random.Generator, language: str) -> str:
    if kind == "digits":
        count = int(rng.integers(DIGIT_COUNT_RANGE[0], DIGIT_COUNT_RANGE[1] + 1))
        digits = rng.integers(0, 10, size=count)
        if language == "en":
            return " ".join(EN_DIGITS[d] for d in digits)
        return "".join(_CMN_DIGITS[d] for d in digits)
    templates, slots = (_EN_TEMPLATES, _EN_SLOTS) if language == "en" else (_CMN_TEMPLATES, _CMN_SLOTS)
    options = templates[kind]
    return _fill(options[int(rng.integers(len(options)))], slots, rng, language)


# make_texts gives up after this many draws in a row that repeat an earlier text (the templates are exhausted).
_MAX_CONSECUTIVE_REPEATS = 10_000


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"`language` ({language!r}) must be one of {', '.join(LANGUAGES)}")


def make_texts(
    n: int,
    seed: int,
    kinds: Sequence[str] = TEXT_KINDS,
    language: str = "en",
) -> list[str]:
    """Draw ``n`` distinct utterance texts.

    Each text is a transcript exactly as spoken: lower-case words without punctuation for English (digits are
    spelled, ``"three seven one nine"``), Chinese characters for Mandarin (``"三七一九"``, ``"機器運轉正常"``).

    Args:
        n: number of texts.
        seed: seed of the draw; the same ``(n, seed, kinds, language)`` gives the same list, and a larger ``n``
            extends the list of a smaller one.
        kinds: any of ``"digits"`` (3-6 digits), ``"command"`` (``"turn on the light"``, ``"stop the
            conveyor"``) and ``"sentence"`` (``"pressure in tank two is high"``); each text draws its kind
            uniformly.
        language: ``"en"`` or ``"cmn"`` (Mandarin, Traditional characters).

    Returns:
        ``n`` distinct strings.

    Raises:
        ValueError: unknown kind or language, or ``n`` larger than the templates can make distinct texts.
    """
    _check_language(language)
    kinds = tuple(kinds)
    if not kinds or any(kind not in TEXT_KINDS for kind in kinds):
        raise ValueError(f"`kinds` ({kinds}) must be a non-empty subset of {TEXT_KINDS}")
    if n < 0:
        raise ValueError(f"`n` ({n}) must be non-negative")
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    seen: set[str] = set()
    misses = 0  # consecutive draws of a text already drawn
    while len(texts) < n:
        text = _make_text(kinds[int(rng.integers(len(kinds)))], rng, language)
        if text in seen:
            misses += 1
            if misses > _MAX_CONSECUTIVE_REPEATS:
                raise ValueError(
                    f"could only make {len(texts)} distinct texts of kinds {kinds} in {language!r}, {n} requested: "
                    "add kinds or lower `n`"
                )
            continue
        misses = 0
        seen.add(text)
        texts.append(text)
    return texts


# --------------------------------------------------------------------------------------------------------
# Paired corpus
# --------------------------------------------------------------------------------------------------------
def split_voices(voices: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Hold out voices: the last ``k`` voices go to test, the ``k`` before them to validation, the rest to train.

    ``k = max(1, len(voices) // 6)``; the order of ``voices`` decides (no randomness), so the held-out voices are
    the same for every seed.

    Raises:
        ValueError: fewer than 3 voices, or a voice listed twice.
    """
    voices = tuple(voices)
    if len(set(voices)) != len(voices):
        raise ValueError(f"`voices` lists a voice twice: {voices}")
    if len(voices) < 3:
        raise ValueError(
            f"`voices` ({voices}) needs at least 3 voices to hold out one for validation and one for test"
        )
    held = max(1, len(voices) // 6)
    return {
        "train": voices[: len(voices) - 2 * held],
        "validation": voices[len(voices) - 2 * held : len(voices) - held],
        "test": voices[len(voices) - held :],
    }


def _derived_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from the corpus seed and a key (stable across machines, runs and worker counts)."""
    key = ":".join([str(int(seed)), *(str(part) for part in parts)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def _wav_bytes(audio: np.ndarray) -> bytes:
    """16-bit PCM WAV bytes at :data:`SAMPLE_RATE` (deterministic; decodes fast)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _mic_channel(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A light microphone channel: gain -6..0 dB and white noise 35-55 dB below the speech RMS."""
    gain = 10.0 ** (rng.uniform(-6.0, 0.0) / 20.0)
    rms = float(np.sqrt(np.mean(clean.astype(np.float64) ** 2)))
    noise_rms = rms * 10.0 ** (-rng.uniform(35.0, 55.0) / 20.0)
    mic = gain * (clean + noise_rms * rng.standard_normal(clean.shape[0]))
    return mic.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Utterance:
    """One synthesis job: everything a worker needs to produce the rows of one utterance."""

    utterance_id: str
    text: str
    voice: str
    rate: int
    pitch: int
    language: str
    seed: int
    conditions: tuple[LDVCondition, ...]
    mic_augment: bool


def _render(job: _Utterance) -> list[dict[str, Any]]:
    """Synthesise one utterance and simulate its LDV recording under each condition."""
    clean = synthesize(job.text, voice=job.voice, rate=job.rate, pitch=job.pitch)
    if job.mic_augment:
        mic = _mic_channel(clean, np.random.default_rng(_derived_seed(job.seed, "mic", job.utterance_id)))
    else:
        mic = clean
    mic_bytes = _wav_bytes(mic)
    rows = []
    for condition in job.conditions:
        row_id = f"{job.utterance_id}-{condition.name}"
        # The LDV sees the talker through the surface, not through the microphone: simulate from the clean clip.
        ldv = simulate_ldv(clean, SAMPLE_RATE, condition, seed=_derived_seed(job.seed, "ldv", row_id))
        rows.append(
            {
                "id": row_id,
                "utterance_id": job.utterance_id,
                "text": job.text,
                "language": job.language,
                "voice": job.voice,
                "rate": job.rate,
                "pitch": job.pitch,
                "condition": condition.name,
                "mic_audio": {"bytes": mic_bytes, "path": f"{job.utterance_id}.wav"},
                "ldv_audio": {"bytes": _wav_bytes(ldv), "path": f"{row_id}.wav"},
                "duration": clean.shape[0] / SAMPLE_RATE,
            }
        )
    return rows


def corpus_features() -> Any:
    """The ``datasets.Features`` of a paired corpus split (audio columns hold 16-bit WAV bytes at 16 kHz)."""
    from datasets import Audio, Features, Value

    return Features(
        {
            "id": Value("string"),
            "utterance_id": Value("string"),
            "text": Value("string"),
            "language": Value("string"),
            "voice": Value("string"),
            "rate": Value("int32"),
            "pitch": Value("int32"),
            "condition": Value("string"),
            "mic_audio": Audio(sampling_rate=SAMPLE_RATE),
            "ldv_audio": Audio(sampling_rate=SAMPLE_RATE),
            "duration": Value("float32"),
        }
    )


def _rendered(jobs: Sequence[_Utterance], num_proc: int) -> Iterator[list[dict[str, Any]]]:
    """Rows of each job, in job order, computed here or in ``num_proc`` worker processes.

    Workers never share state with this process (the parent may run torch threads or hold the eSpeak lock):
    they come from a fork server that has imported this module once (POSIX), or are spawned (elsewhere; each
    then imports the package, seconds per worker).
    """
    if num_proc <= 1 or len(jobs) < 2:
        for job in jobs:
            yield _render(job)
        return
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
    else:
        context = multiprocessing.get_context("spawn")
    chunksize = max(1, min(16, len(jobs) // (4 * num_proc)))
    with concurrent.futures.ProcessPoolExecutor(max_workers=num_proc, mp_context=context) as pool:
        yield from pool.map(_render, jobs, chunksize=chunksize)


def build_paired_corpus(
    num_train: int,
    num_eval: int,
    seed: int,
    conditions: Sequence[str | LDVCondition] = (DEFAULT_CONDITION,),
    voices: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    language: str = "en",
    mic_augment: bool = True,
    kinds: Sequence[str] = TEXT_KINDS,
    rate_range: tuple[int, int] = RATE_RANGE,
    pitch_range: tuple[int, int] = PITCH_RANGE,
    num_proc: int = 1,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Any:
    """Synthesise a paired microphone / LDV corpus with held-out texts and held-out voices.

    Each utterance is one text spoken by one voice at a rate and pitch drawn from ``rate_range`` and
    ``pitch_range``. It yields one row per LDV condition: with several conditions the same microphone clip
    (identical bytes) appears once per condition, next to that condition's LDV clip.

    Splits are disjoint in text (every text occurs in one split only) and in voice (:func:`split_voices`).
    Everything derives from ``seed``: texts from ``make_texts(num_train + 2 * num_eval, seed)`` (the first
    ``num_eval`` for ``test``, the next ``num_eval`` for ``validation``, the rest for ``train``), each
    utterance's voice, rate and pitch and its microphone noise from ``(seed, utterance_id)``, each LDV clip's
    simulator seed from ``(seed, id)``. The same arguments give identical audio bytes, for any ``num_proc``.

    Args:
        num_train: utterances in ``train``.
        num_eval: utterances in each of ``validation`` and ``test``.
        seed: corpus seed.
        conditions: LDV conditions (preset names, JSON paths or :class:`LDVCondition`), names distinct.
        voices: eSpeak voices, split by :func:`split_voices`; or a mapping ``{"train": [...], "validation":
            [...], "test": [...]}`` of disjoint voice lists. ``None``: ``DEFAULT_VOICES[language]``.
        language: ``"en"`` or ``"cmn"`` (Mandarin); selects the text templates and the default voices.
        mic_augment: pass the microphone clip through a light channel (gain -6..0 dB, white noise 35-55 dB
            below the speech), so it is not digitally clean; ``False`` stores the synthesised clip as is. The
            LDV clip is always simulated from the synthesised clip.
        kinds: text kinds (see :func:`make_texts`).
        rate_range: inclusive speaking-rate range, eSpeak words per minute.
        pitch_range: inclusive base-pitch range, eSpeak units 0-99.
        num_proc: worker processes for synthesis and simulation (1: in this process).
        cache_dir: folder for the Arrow files (memory-mapped by the returned dataset); default a temporary folder
            removed when the process exits: call ``save_to_disk`` to keep the corpus.
        progress: show a progress bar per split.

    Returns:
        ``datasets.DatasetDict`` with splits ``train`` (``num_train * len(conditions)`` rows), ``validation`` and
        ``test`` (``num_eval * len(conditions)`` rows each) and columns ``id``, ``utterance_id``, ``text``,
        ``language``, ``voice``, ``rate``, ``pitch``, ``condition``, ``mic_audio``, ``ldv_audio`` (16 kHz
        ``Audio`` columns of 16-bit WAV bytes) and ``duration`` (seconds).

    Raises:
        ImportError: ``espeakng-loader`` is missing (``pip install "qwen2audio-ldv[speech]"``).
        ValueError: bad sizes, ranges, conditions or voices.
    """
    from datasets import Dataset, DatasetDict
    from datasets.arrow_writer import ArrowWriter
    from datasets.fingerprint import get_temporary_cache_files_directory
    from tqdm.auto import tqdm

    _check_language(language)
    if num_train < 1 or num_eval < 0:
        raise ValueError(f"`num_train` ({num_train}) must be >= 1 and `num_eval` ({num_eval}) >= 0")
    for name, (low, high), (lowest, highest) in (
        ("rate_range", rate_range, (80, 450)),
        ("pitch_range", pitch_range, (0, 99)),
    ):
        if not lowest <= low <= high <= highest:
            raise ValueError(f"`{name}` ({(low, high)}) must be an increasing pair within {lowest}-{highest}")
    if isinstance(conditions, (str, os.PathLike, LDVCondition)):
        conditions = (conditions,)
    if isinstance(voices, str):
        voices = (voices,)
    resolved = tuple(get_condition(condition) for condition in conditions)
    names = [condition.name for condition in resolved]
    if not resolved or len(set(names)) != len(names):
        raise ValueError(f"`conditions` must be non-empty with distinct names, got {names}")
    if voices is None:
        voices = DEFAULT_VOICES[language]
    if isinstance(voices, Mapping):
        voice_splits = {split: tuple(voices.get(split, ())) for split in SPLITS}
        if set(voices) - set(SPLITS):
            raise ValueError(f"`voices` keys ({sorted(voices)}) must be among {SPLITS}")
    elif num_eval == 0:
        voice_splits = {"train": tuple(voices), "validation": (), "test": ()}
    else:
        voice_splits = split_voices(voices)
    sizes = {"train": num_train, "validation": num_eval, "test": num_eval}
    for split in SPLITS:
        if sizes[split] and not voice_splits[split]:
            raise ValueError(f"no voices for split {split!r}")
    for index, first in enumerate(SPLITS):
        for second in SPLITS[index + 1 :]:
            shared = set(voice_splits[first]) & set(voice_splits[second])
            if shared:
                raise ValueError(f"splits {first!r} and {second!r} share voices {sorted(shared)}")
    # Fail on a bad voice or a missing eSpeak now, not in a worker after minutes.
    for voice in sorted({voice for split in SPLITS if sizes[split] for voice in voice_splits[split]}):
        synthesize("a" if language == "en" else "一", voice=voice)

    texts = make_texts(num_train + 2 * num_eval, seed, kinds=kinds, language=language)
    # test texts first, then validation, then train: the eval sets do not move when `num_train` changes (and a
    # larger `num_eval` extends a smaller one's test set), so runs with more training data score the same clips
    offsets = {"test": 0, "validation": num_eval, "train": 2 * num_eval}
    folder = Path(cache_dir) if cache_dir is not None else Path(get_temporary_cache_files_directory())
    folder.mkdir(parents=True, exist_ok=True)
    features = corpus_features()
    jobs: dict[str, list[_Utterance]] = {}
    for split in SPLITS:
        split_voice_list = voice_splits[split]
        # Round robin from a seeded start: every voice of the split speaks about equally often.
        start = _derived_seed(seed, "voices", split)
        jobs[split] = []
        for index in range(sizes[split]):
            utterance_id = f"{split}-{index:05d}"
            rng = np.random.default_rng(_derived_seed(seed, "voice", utterance_id))
            jobs[split].append(
                _Utterance(
                    utterance_id=utterance_id,
                    text=texts[offsets[split] + index],
                    voice=split_voice_list[(start + index) % len(split_voice_list)],
                    rate=int(rng.integers(rate_range[0], rate_range[1] + 1)),
                    pitch=int(rng.integers(pitch_range[0], pitch_range[1] + 1)),
                    language=language,
                    seed=int(seed),
                    conditions=resolved,
                    mic_augment=bool(mic_augment),
                )
            )
    started = time.perf_counter()
    # One pass over all jobs (one worker pool), rows streamed to one Arrow file per split.
    rendered = _rendered([job for split in SPLITS for job in jobs[split]], num_proc)
    splits = {}
    try:
        for split in SPLITS:
            path = folder / f"ldv-corpus-{uuid.uuid4().hex}-{split}.arrow"
            with ArrowWriter(features=features, path=str(path)) as writer:
                for _ in tqdm(range(sizes[split]), desc=f"synthesising {split}", unit="utt", disable=not progress):
                    for row in next(rendered):
                        writer.write(features.encode_example(row))
                writer.finalize()
            splits[split] = Dataset.from_file(str(path), split=split)
    finally:
        rendered.close()  # shuts the worker pool down
    elapsed = time.perf_counter() - started
    total_utterances = sum(sizes.values())
    logger.info(
        "synthesised %d utterances (%d rows, %.1f min of microphone audio) in %.1f s (%.1f utterances/s)",
        total_utterances,
        sum(len(dataset) for dataset in splits.values()),
        sum(sum(dataset["duration"]) for dataset in splits.values()) / len(resolved) / 60.0,
        elapsed,
        total_utterances / max(elapsed, 1e-9),
    )
    return DatasetDict(splits)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def write_audiofolder(corpus: Any, output: str | os.PathLike) -> Path:
    """Write a paired corpus as two ``audiofolder`` trees: ``mic/<split>/`` and ``ldv/<split>/``.

    Each split folder holds WAV files (16 kHz, 16-bit) and a ``metadata.csv`` with columns ``file_name``,
    ``text``, ``voice``, ``condition`` and ``utterance_id`` (``condition`` is ``"mic"`` for the microphone clips,
    which are written once per utterance). ``load_dataset("audiofolder", data_dir=output / "ldv")`` then gives
    the LDV splits.

    Returns:
        ``output`` as a :class:`~pathlib.Path`.
    """
    from datasets import Audio

    output = Path(output)
    for split, dataset in corpus.items():
        raw = dataset.cast_column("mic_audio", Audio(decode=False)).cast_column("ldv_audio", Audio(decode=False))
        mic_dir, ldv_dir = output / "mic" / split, output / "ldv" / split
        mic_dir.mkdir(parents=True, exist_ok=True)
        ldv_dir.mkdir(parents=True, exist_ok=True)
        columns = ["file_name", "text", "voice", "condition", "utterance_id"]
        with (
            open(mic_dir / "metadata.csv", "w", newline="", encoding="utf-8") as mic_file,
            open(ldv_dir / "metadata.csv", "w", newline="", encoding="utf-8") as ldv_file,
        ):
            mic_csv, ldv_csv = csv.writer(mic_file), csv.writer(ldv_file)
            mic_csv.writerow(columns)
            ldv_csv.writerow(columns)
            seen: set[str] = set()
            for row in raw:
                if row["utterance_id"] not in seen:
                    seen.add(row["utterance_id"])
                    name = f"{_safe_name(row['utterance_id'])}.wav"
                    (mic_dir / name).write_bytes(row["mic_audio"]["bytes"])
                    mic_csv.writerow([name, row["text"], row["voice"], "mic", row["utterance_id"]])
                name = f"{_safe_name(row['id'])}.wav"
                (ldv_dir / name).write_bytes(row["ldv_audio"]["bytes"])
                ldv_csv.writerow([name, row["text"], row["voice"], row["condition"], row["utterance_id"]])
    return output


def write_paired_audiofolder(corpus: Any, output: str | os.PathLike) -> Path:
    """Write a paired corpus as one ``audiofolder`` that ``train_hf.py`` reads as it is.

    Layout: ``<output>/<split>/metadata.csv`` with columns ``file_name`` (the LDV clip), ``text``,
    ``mic_file_name`` (the microphone clip of the same utterance), ``condition``, ``voice`` and ``utterance_id``;
    the clips (16 kHz, 16-bit WAV) under ``<split>/ldv/`` and ``<split>/mic/`` (one microphone clip per utterance,
    shared by its conditions). Train with
    ``python train_hf.py --train_data <output> --mic_audio_column mic_file_name`` (test split: the LDV eval set).

    Returns:
        ``output`` as a :class:`~pathlib.Path`.
    """
    from datasets import Audio

    output = Path(output)
    for split, dataset in corpus.items():
        if len(dataset) == 0:
            continue
        raw = dataset.cast_column("mic_audio", Audio(decode=False)).cast_column("ldv_audio", Audio(decode=False))
        folder = output / split
        (folder / "ldv").mkdir(parents=True, exist_ok=True)
        (folder / "mic").mkdir(parents=True, exist_ok=True)
        with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file_name", "text", "mic_file_name", "condition", "voice", "utterance_id"])
            seen: set[str] = set()
            for row in raw:
                mic_name = f"mic/{_safe_name(row['utterance_id'])}.wav"
                if row["utterance_id"] not in seen:
                    seen.add(row["utterance_id"])
                    (folder / mic_name).write_bytes(row["mic_audio"]["bytes"])
                ldv_name = f"ldv/{_safe_name(row['id'])}.wav"
                (folder / ldv_name).write_bytes(row["ldv_audio"]["bytes"])
                writer.writerow([ldv_name, row["text"], mic_name, row["condition"], row["voice"], row["utterance_id"]])
    return output


# --------------------------------------------------------------------------------------------------------
# Command line: ldv-qwen2audio synth-corpus
# --------------------------------------------------------------------------------------------------------
def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``synth-corpus`` subcommand."""
    parser = subparsers.add_parser(
        "synth-corpus",
        help="synthesise a paired microphone / LDV speech corpus with eSpeak NG",
        description=(
            "Synthesise utterances with eSpeak NG, simulate their LDV recordings and write a DatasetDict "
            "(train/validation/test, disjoint in text and voice) with save_to_disk. Needs the speech extra: "
            f"{_INSTALL_HINT}."
        ),
    )
    parser.add_argument("--output", required=True, type=Path, help="folder for the dataset (save_to_disk)")
    parser.add_argument("--num-train", required=True, type=int, help="utterances in train")
    parser.add_argument("--num-eval", required=True, type=int, help="utterances in each of validation and test")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument(
        "--condition",
        action="extend",
        nargs="+",
        default=None,
        help=f"LDV condition(s): preset names or JSON paths; one row per utterance and condition "
        f"(default: {DEFAULT_CONDITION})",
    )
    parser.add_argument(
        "--voice",
        action="extend",
        nargs="+",
        default=None,
        help="eSpeak voices (at least 3; the last ones are held out for validation/test; default: built-in list)",
    )
    parser.add_argument("--language", choices=LANGUAGES, default="en", help="text and voice language (default en)")
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=TEXT_KINDS,
        default=list(TEXT_KINDS),
        help="text kinds (default: all; the repo's mini base reads digit strings only: --kinds digits)",
    )
    parser.add_argument("--no-mic-augment", action="store_true", help="store the synthesised microphone clip as is")
    parser.add_argument("--num-proc", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--audiofolder",
        action="store_true",
        help="also write <output>/audiofolder/{mic,ldv}/<split>/ WAV files with metadata.csv",
    )
    parser.add_argument(
        "--paired-audiofolder",
        action="store_true",
        help="also write <output>/paired_audiofolder/<split>/ (metadata.csv: file_name,text,mic_file_name,...), "
        "which `train_hf.py --train_data DIR --mic_audio_column mic_file_name` reads as it is",
    )
    parser.set_defaults(func=run_synth_corpus)


def run_synth_corpus(args: argparse.Namespace) -> int:
    """Handler of ``synth-corpus``; returns the exit code."""
    corpus = build_paired_corpus(
        num_train=args.num_train,
        num_eval=args.num_eval,
        seed=args.seed,
        conditions=tuple(args.condition or (DEFAULT_CONDITION,)),
        voices=tuple(args.voice) if args.voice else None,
        language=args.language,
        mic_augment=not args.no_mic_augment,
        kinds=tuple(args.kinds),
        num_proc=args.num_proc,
    )
    corpus.save_to_disk(str(args.output))
    logger.info("wrote %s", args.output)
    if args.audiofolder:
        folder = write_audiofolder(corpus, args.output / "audiofolder")
        logger.info("wrote the audiofolder layout to %s", folder)
    if args.paired_audiofolder:
        folder = write_paired_audiofolder(corpus, args.output / "paired_audiofolder")
        logger.info("wrote the paired audiofolder to %s (train_hf.py --train_data %s --mic_audio_column "
                    "mic_file_name)", folder, folder)
    return 0
