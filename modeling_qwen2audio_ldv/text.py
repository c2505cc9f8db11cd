"""Facts about text that scoring, stitching and the synthetic corpus share."""

import re

#: Scripts written without spaces between words, as regex character-class ranges: Japanese kana and the CJK
#: ideographs (unified, extension A, compatibility, extensions B and later). Hangul is excluded: Korean separates
#: words with spaces. Scoring counts each such character as one word; stitching compares such text by character.
CJK_RANGES = (
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3400-\u4dbf"  # CJK Unified Ideographs Extension A
    "\u4e00-\u9fff"  # CJK Unified Ideographs
    "\uf900-\ufaff"  # CJK Compatibility Ideographs
    "\U00020000-\U0003134f"  # CJK Unified Ideographs Extensions B-G
)
#: One character of :data:`CJK_RANGES`.
CJK_CHAR = re.compile(f"[{CJK_RANGES}]")

#: English digit words, 0-9.
EN_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_EN_TEENS = (
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)
_EN_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(value: int) -> str:
    """English words for an integer in 0-99, as spoken: ``45 -> "forty five"``, ``13 -> "thirteen"``."""
    if not 0 <= value <= 99:
        raise ValueError(f"`value` ({value}) must be between 0 and 99")
    if value < 10:
        return EN_DIGITS[value]
    if value < 20:
        return _EN_TEENS[value - 10]
    tens, units = divmod(value, 10)
    return _EN_TENS[tens] if units == 0 else f"{_EN_TENS[tens]} {EN_DIGITS[units]}"
