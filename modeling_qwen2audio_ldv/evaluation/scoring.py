# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Transcript normalisation and corpus-level word / character error rates for English and Chinese.

The error-rate metric ships inside the package as an ``evaluate`` module
(``metrics/ldv_error_rate/ldv_error_rate.py``) so it loads offline by path::

    import evaluate
    from modeling_qwen2audio_ldv.evaluation.scoring import ERROR_RATE_METRIC_PATH

    wer_cer = evaluate.load(ERROR_RATE_METRIC_PATH)
    wer_cer.compute(predictions=["hello word"], references=["Hello, world!"])
    # {'wer': 0.5, 'cer': 0.0909..., 'substitutions': 1, ...}

or, in one call, :func:`compute_error_rates`. This module holds the definitions the metric uses.

Definitions (all rates are corpus-level: total edits over total reference units, not a mean of per-utterance
rates):

* **Normalisation** (:func:`normalize_transcript`): Unicode NFKC (full-width letters, digits and
  ``，！？：；（）`` become their ASCII forms), lower-case, apostrophes deleted (``don't`` -> ``dont``),
  every other punctuation mark (ASCII ``string.punctuation`` and any Unicode ``P*`` character, e.g.
  ``。、「」《》…``) replaced by a space, whitespace collapsed to single spaces and stripped. Symbols other
  than ASCII punctuation (``°``, ``€``) are kept.
* **Chinese** (and Japanese kana): a written sentence has no word boundaries, so WER needs a segmenter whose
  choices would change the score. Instead each CJK character counts as one word, which makes WER over
  Chinese text equal to its CER; runs of other characters (Latin words, digits) inside Chinese text are still
  words split at spaces. Spaces carry no content next to CJK characters and are removed there.
* **CER** is computed over the characters of the normalised text. For English (space-delimited text) the
  single spaces between words count as characters, so a missing word also costs its space and a wrongly
  split word (``today`` -> ``to day``) costs one insertion. For Chinese no spaces are counted.
* **Empty references** (possibly empty only after normalisation, e.g. ``"..."``): the utterance contributes
  0 reference units and one insertion per hypothesis unit. If the whole corpus has no reference words the
  rates are undefined and a ``ValueError`` is raised.
* **Edit counts** come from a minimum-edit (Levenshtein) alignment with unit costs; among alignments of equal
  cost a substitution is preferred over a deletion, and a deletion over an insertion.

``language`` selects how spaces and CJK characters are treated:

* ``"auto"`` (default): CJK characters are single words and lose neighbouring spaces; spaces between two
  non-CJK words are kept and count in CER. Pure English and pure Chinese text therefore behave as ``"en"``
  and ``"zh"``; mixed text (``打开 wifi 设置``) is handled per run.
* ``"en"``: words are split at whitespace only, CER counts the spaces between words.
* ``"zh"`` (alias ``"cmn"``, the code the corpus uses): as ``"auto"``, but CER ignores every space, including
  those between Latin words embedded in Chinese text.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..text import CJK_RANGES

if TYPE_CHECKING:
    import evaluate

#: Directory of the shipped ``evaluate`` metric module; ``evaluate.load(ERROR_RATE_METRIC_PATH)`` works offline.
ERROR_RATE_METRIC_PATH: str = str(Path(__file__).resolve().parent.parent / "metrics" / "ldv_error_rate")

#: Accepted values of ``language`` (``"cmn"`` is an alias of ``"zh"``).
LANGUAGES: tuple[str, ...] = ("auto", "en", "zh", "cmn")

# A space with a CJK character on at least one side.
_SPACE_NEXT_TO_CJK = re.compile(f"(?<=[{CJK_RANGES}]) | (?=[{CJK_RANGES}])")
# One CJK character, or a run of anything that is neither space nor CJK.
_CJK_AWARE_WORD = re.compile(f"[{CJK_RANGES}]|[^\\s{CJK_RANGES}]+")

_APOSTROPHES = frozenset("'\u2019\u02bc")  # ' ’ ʼ (NFKC leaves the curly forms alone)
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def _check_language(language: str) -> str:
    """Return the canonical language (``"auto"``, ``"en"`` or ``"zh"``) or raise a ``ValueError``."""
    if language not in LANGUAGES:
        raise ValueError(f"`language` ({language!r}) must be one of {', '.join(map(repr, LANGUAGES))}")
    return "zh" if language == "cmn" else language


def _strip_punctuation(text: str) -> str:
    """Delete apostrophes; replace ASCII punctuation and Unicode punctuation (``P*``) with spaces."""
    out = []
    for char in text:
        if char in _APOSTROPHES:
            continue
        if char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P"):
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


def _canonical_spacing(text: str, language: str) -> str:
    """Collapse whitespace to single spaces; unless ``language == "en"``, drop spaces next to CJK characters."""
    text = " ".join(text.split())
    if language != "en":
        text = _SPACE_NEXT_TO_CJK.sub("", text)
    return text


def normalize_transcript(text: str, language: str = "auto") -> str:
    """Normalise a transcript for scoring: NFKC, lower-case, punctuation removed, whitespace collapsed.

    See the module docstring for the exact rules. Examples::

        normalize_transcript("Hello, World!")          # "hello world"
        normalize_transcript("機器運轉正常。")          # "機器運轉正常"
        normalize_transcript("「打開」 WiFi，設定！")    # "打開wifi設定"
        normalize_transcript("機器 運轉", language="en")  # "機器 運轉"

    Args:
        text: a reference or hypothesis transcript.
        language: ``"auto"``, ``"en"``, ``"zh"`` or ``"cmn"``; with ``"en"`` spaces next to CJK characters are
            kept, otherwise they are removed.

    Returns:
        The normalised transcript (possibly empty).
    """
    language = _check_language(language)
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text).lower()
    return _canonical_spacing(_strip_punctuation(text), language)


def transcript_words(text: str, language: str = "auto") -> list[str]:
    """The WER units of an already normalised transcript: CJK characters one by one, other words at spaces.

    With ``language="en"`` the text is split at whitespace only.
    """
    language = _check_language(language)
    if language == "en":
        return text.split()
    return _CJK_AWARE_WORD.findall(text)


def transcript_characters(text: str, language: str = "auto") -> list[str]:
    """The CER units of an already normalised transcript.

    ``"en"`` and ``"auto"``: every character of the canonically spaced text, so the single spaces between
    non-CJK words count. ``"zh"``: every character except spaces.
    """
    language = _check_language(language)
    text = _canonical_spacing(text, language)
    if language == "zh":
        return [char for char in text if not char.isspace()]
    return list(text)


def edit_operations(reference: Sequence[str], hypothesis: Sequence[str]) -> tuple[int, int, int]:
    """Minimum-edit alignment counts ``(substitutions, deletions, insertions)`` turning reference into hypothesis.

    Unit costs; among equally cheap alignments a substitution is preferred over a deletion and a deletion over
    an insertion. Common prefixes and suffixes are matched first (this never changes the edit distance).
    O(len(reference) * len(hypothesis)) time, O(len(hypothesis)) memory.
    """
    ref, hyp = list(reference), list(hypothesis)
    start = 0
    while start < min(len(ref), len(hyp)) and ref[start] == hyp[start]:
        start += 1
    end_ref, end_hyp = len(ref), len(hyp)
    while end_ref > start and end_hyp > start and ref[end_ref - 1] == hyp[end_hyp - 1]:
        end_ref -= 1
        end_hyp -= 1
    ref, hyp = ref[start:end_ref], hyp[start:end_hyp]
    if not ref:
        return 0, 0, len(hyp)
    if not hyp:
        return 0, len(ref), 0

    # Each cell holds (cost, substitutions, deletions, insertions); tuples compare on cost first and the
    # candidate order below breaks ties.
    previous = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i, ref_unit in enumerate(ref, start=1):
        current = [(i, 0, i, 0)]
        for j, hyp_unit in enumerate(hyp, start=1):
            cost, sub, dele, ins = previous[j - 1]
            if ref_unit == hyp_unit:
                best = (cost, sub, dele, ins)
            else:
                best = (cost + 1, sub + 1, dele, ins)
            cost, sub, dele, ins = previous[j]
            if cost + 1 < best[0]:
                best = (cost + 1, sub, dele + 1, ins)
            cost, sub, dele, ins = current[j - 1]
            if cost + 1 < best[0]:
                best = (cost + 1, sub, dele, ins + 1)
            current.append(best)
        previous = current
    _, sub, dele, ins = previous[-1]
    return sub, dele, ins


def error_counts(
    predictions: Sequence[str], references: Sequence[str], normalize: bool = True, language: str = "auto"
) -> dict[str, float | int]:
    """Corpus-level WER and CER with their edit counts (the computation behind the shipped metric).

    Args:
        predictions: hypothesis transcripts.
        references: reference transcripts, as many as ``predictions``.
        normalize: apply :func:`normalize_transcript` to both sides first; with ``False`` only whitespace is
            canonicalised (collapsed, and removed next to CJK characters unless ``language="en"``).
        language: ``"auto"``, ``"en"``, ``"zh"`` or ``"cmn"`` (see the module docstring).

    Returns:
        ``wer`` and ``cer`` (floats), the word-level ``substitutions``, ``deletions``, ``insertions``,
        the character-level ``character_substitutions``, ``character_deletions``, ``character_insertions``,
        and the totals ``reference_words`` and ``reference_characters``.

    Raises:
        ValueError: the two lists differ in length, are empty, or every reference is empty (after
            normalisation), so the rates would divide by zero.
    """
    language = _check_language(language)
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions and {len(references)} references; they must pair up one to one"
        )
    if not references:
        raise ValueError("no predictions and references to score")

    def prepare(text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"transcripts must be str, got {type(text).__name__}: {text!r}")
        return normalize_transcript(text, language) if normalize else _canonical_spacing(text, language)

    totals = dict.fromkeys(
        (
            "substitutions",
            "deletions",
            "insertions",
            "character_substitutions",
            "character_deletions",
            "character_insertions",
            "reference_words",
            "reference_characters",
        ),
        0,
    )
    for prediction, reference in zip(predictions, references):
        hyp, ref = prepare(prediction), prepare(reference)
        ref_words = transcript_words(ref, language)
        sub, dele, ins = edit_operations(ref_words, transcript_words(hyp, language))
        totals["substitutions"] += sub
        totals["deletions"] += dele
        totals["insertions"] += ins
        totals["reference_words"] += len(ref_words)

        ref_chars = transcript_characters(ref, language)
        sub, dele, ins = edit_operations(ref_chars, transcript_characters(hyp, language))
        totals["character_substitutions"] += sub
        totals["character_deletions"] += dele
        totals["character_insertions"] += ins
        totals["reference_characters"] += len(ref_chars)

    if totals["reference_words"] == 0:
        raise ValueError(
            f"all {len(references)} references are empty"
            + (" after normalisation" if normalize else "")
            + "; WER and CER are undefined (division by zero reference units)"
        )
    word_edits = totals["substitutions"] + totals["deletions"] + totals["insertions"]
    char_edits = totals["character_substitutions"] + totals["character_deletions"] + totals["character_insertions"]
    return {
        "wer": word_edits / totals["reference_words"],
        "cer": char_edits / totals["reference_characters"],
        **totals,
    }


@functools.lru_cache(maxsize=1)
def load_error_rate_metric() -> "evaluate.EvaluationModule":
    """Load the shipped WER/CER ``evaluate`` metric by path (offline); one instance per process.

    The instance keeps rows added with ``add_batch`` until ``compute``, so do not share it between threads.
    """
    import evaluate

    return evaluate.load(ERROR_RATE_METRIC_PATH, keep_in_memory=True)


def compute_error_rates(
    predictions: list[str], references: list[str], language: str = "auto", normalize: bool = True
) -> dict[str, float | int]:
    """Corpus-level WER and CER of ``predictions`` against ``references`` through the shipped metric.

    Args:
        predictions: hypothesis transcripts.
        references: reference transcripts, one per prediction.
        language: ``"auto"``, ``"en"``, ``"zh"`` or ``"cmn"`` (see the module docstring).
        normalize: normalise both sides with :func:`normalize_transcript` first.

    Returns:
        The metric's dictionary: ``wer``, ``cer`` and the edit and reference-unit counts (see
        :func:`error_counts`).

    Raises:
        ValueError: different numbers of predictions and references, nothing to score, an unknown
            ``language``, or only empty references.
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions and {len(references)} references; they must pair up one to one"
        )
    if not references:
        raise ValueError("no predictions and references to score")
    _check_language(language)
    metric = load_error_rate_metric()
    return metric.compute(
        predictions=list(predictions), references=list(references), normalize=normalize, language=language
    )


_DIGIT_RUN = re.compile(r"[0-9]+")
_THOUSANDS_COMMA = re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))")


def spell_out_numbers(text: str) -> str:
    """Write the numerals of an English ASR transcript as the words the corpus's references use.

    Meant for systems that print numerals (Whisper writes ``"6 5 2"``, ``"6-5-2"`` or ``"652"`` for a spoken
    ``"six five two"``), before :func:`normalize_transcript`, which leaves digits alone. Each run of ASCII digits
    (after NFKC, so full-width digits count)
    becomes words and is separated from its neighbours by spaces:

    * ``1``-``99`` without a leading zero as one number (``text.number_words``): ``"45"`` -> ``"forty five"``,
      ``"7"`` -> ``"seven"`` (the corpus speaks quantities ``1``-``99`` this way);
    * anything else (``0``, a leading zero, three or more digits) digit by digit: ``"652"`` -> ``"six five two"``,
      ``"05"`` -> ``"zero five"`` (the corpus speaks digit strings this way; it has no numbers >= 100).

    A comma between digit groups (``"1,000"``) is dropped first. Nothing else changes: ordinals (``"2nd"`` ->
    ``"two nd"``), decimals and symbols are not interpreted, so this is an English-corpus rule, not a general
    text normaliser.
    """
    from ..text import number_words

    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}")

    def words(match: re.Match) -> str:
        digits = match.group(0)
        if len(digits) <= 2 and digits[0] != "0":
            return f" {number_words(int(digits))} "
        return " " + " ".join(number_words(int(d)) for d in digits) + " "

    spelled = _DIGIT_RUN.sub(words, _THOUSANDS_COMMA.sub("", unicodedata.normalize("NFKC", text)))
    return " ".join(spelled.split())
