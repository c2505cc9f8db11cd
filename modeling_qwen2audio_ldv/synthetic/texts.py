# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Utterance texts of the synthetic corpus: digit strings, commands and status sentences, in English or Mandarin.

Each text is a transcript exactly as spoken (digits and numbers spelled out in words, no punctuation), drawn from
templates by :func:`make_texts`.

Example:
    >>> from modeling_qwen2audio_ldv.synthetic.texts import make_texts
    >>> make_texts(3, seed=0, kinds=("digits",))            # three distinct digit strings, e.g. "three seven one nine"
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from ..text import EN_DIGITS, number_words

#: Text kinds understood by :func:`make_texts`.
TEXT_KINDS = ("digits", "command", "sentence")
#: Languages with text templates and default voices.
LANGUAGES = ("en", "cmn")
#: Number of digits in a ``digits`` text.
DIGIT_COUNT_RANGE = (3, 6)

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

# Traditional characters (as in README.zh-TW.md), avoiding heteronyms that eSpeak misreads (it reads 調高 as
# diao-gao).
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


def check_language(language: str) -> None:
    """Raise a ``ValueError`` unless ``language`` is one of :data:`LANGUAGES`."""
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
    check_language(language)
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


#: Longest span (words) that :func:`span_texts` cuts.
MAX_SPAN_WORDS = 8


def span_texts(
    sources: Sequence[str], n: int, seed: int, max_words: int = MAX_SPAN_WORDS, join_probability: float = 0.3,
    exclude: Sequence[str] = (),
) -> list[str]:
    """Draw ``n`` distinct word spans cut from ``sources`` (new word orders over the sources' vocabulary).

    Each text is a contiguous span of 1-``max_words`` words of a source drawn uniformly (start and length uniform);
    with ``join_probability`` a second span of another source follows it. A model trained on whole sentences only
    can learn to recognise a sentence from its first words; spans make it read every word.

    Args:
        sources: texts (words separated by spaces).
        n: number of spans.
        seed: seed of the draw (the same arguments give the same list).
        max_words: longest span of one source.
        join_probability: share of texts made of two spans.
        exclude: texts never returned (e.g. the sources themselves, or held-out texts).

    Raises:
        ValueError: no source with words, or ``n`` more than the sources can make distinct spans.
    """
    words = [text.split() for text in sources if text.split()]
    if not words:
        raise ValueError("`sources` has no text with words to cut spans from")
    if n < 0 or max_words < 1 or not 0.0 <= join_probability <= 1.0:
        raise ValueError(f"expected n >= 0, max_words >= 1 and 0 <= join_probability <= 1, got {n}, {max_words}, "
                         f"{join_probability}")
    rng = np.random.default_rng(seed)

    def cut() -> list[str]:
        source = words[int(rng.integers(len(words)))]
        length = int(rng.integers(1, min(max_words, len(source)) + 1))
        start = int(rng.integers(len(source) - length + 1))
        return source[start : start + length]

    seen = set(exclude)
    texts: list[str] = []
    misses = 0
    while len(texts) < n:
        span = cut()
        if rng.random() < join_probability:
            span = span + cut()
        text = " ".join(span)
        if text in seen:
            misses += 1
            if misses > _MAX_CONSECUTIVE_REPEATS:
                raise ValueError(f"could only cut {len(texts)} distinct spans from {len(words)} sources, {n} requested")
            continue
        misses = 0
        seen.add(text)
        texts.append(text)
    return texts

