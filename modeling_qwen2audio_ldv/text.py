"""Facts about text that scoring, stitching and the synthetic corpus share."""

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
