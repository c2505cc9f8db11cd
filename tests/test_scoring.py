"""The shipped WER/CER metric against hand-computed error rates (English, Chinese, corpus aggregation)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modeling_qwen2audio_ldv.evaluation.scoring import (
    ERROR_RATE_METRIC_PATH,
    compute_error_rates,
    edit_operations,
    load_error_rate_metric,
    normalize_transcript,
)

# Every expected value below was counted by hand. English CER counts the single spaces between words:
# "the cat sat" is 3 + 1 + 3 + 1 + 3 = 11 characters.
HAND_CASES = [
    # id, reference, hypothesis, expected (wer, cer), word (S, D, I), character (S, D, I)
    pytest.param(
        "the cat sat", "the bat sat",
        # one word substituted: WER 1/3; one character substituted (c -> b): CER 1/11
        1 / 3, 1 / 11, (1, 0, 0), (1, 0, 0),
        id="substitution",
    ),
    pytest.param(
        "the cat sat", "the cat sat down",
        # one word inserted: WER 1/3; " down" inserted, 5 characters: CER 5/11
        1 / 3, 5 / 11, (0, 0, 1), (0, 0, 5),
        id="insertion",
    ),
    pytest.param(
        "the cat sat", "the sat",
        # one word deleted: WER 1/3; "cat " deleted, 4 characters: CER 4/11
        1 / 3, 4 / 11, (0, 1, 0), (0, 4, 0),
        id="deletion",
    ),
    pytest.param(
        "today", "to day",
        # word: "today" -> "to" substituted, "day" inserted: WER 2/1; character: one space inserted: CER 1/5
        2.0, 1 / 5, (1, 0, 1), (0, 0, 1),
        id="split-word-costs-its-space",
    ),
    pytest.param(
        "機器運轉正常", "機器運作正常",
        # one of six characters substituted (轉 -> 作); each CJK character is a word: WER 1/6, CER 1/6
        1 / 6, 1 / 6, (1, 0, 0), (1, 0, 0),
        id="chinese",
    ),
    pytest.param(
        "機器運轉正常。", "機器 運作，正常",
        # punctuation and spaces carry nothing in Chinese: still WER 1/6, CER 1/6
        1 / 6, 1 / 6, (1, 0, 0), (1, 0, 0),
        id="chinese-punctuation-and-spaces",
    ),
    pytest.param(
        "Hello, World!", "hello world",
        # normalisation makes them equal: WER 0, CER 0 ("hello world" is 11 characters)
        0.0, 0.0, (0, 0, 0), (0, 0, 0),
        id="case-and-punctuation",
    ),
]


@pytest.mark.parametrize("reference, hypothesis, wer, cer, word_edits, char_edits", HAND_CASES)
def test_hand_computed_single_utterance(reference, hypothesis, wer, cer, word_edits, char_edits):
    result = compute_error_rates([hypothesis], [reference])
    assert result["wer"] == pytest.approx(wer)
    assert result["cer"] == pytest.approx(cer)
    assert (result["substitutions"], result["deletions"], result["insertions"]) == word_edits
    assert (
        result["character_substitutions"],
        result["character_deletions"],
        result["character_insertions"],
    ) == char_edits


def test_counts_and_reference_totals():
    result = compute_error_rates(["the bat sat"], ["the cat sat"])
    assert result["reference_words"] == 3
    assert result["reference_characters"] == 11
    assert isinstance(result["wer"], float) and isinstance(result["cer"], float)


def test_corpus_level_aggregation_is_not_the_mean_of_utterance_rates():
    # utterance 1: "the cat sat" -> "the bat sat": 1 word edit / 3 words, 1 character edit / 11 characters
    # utterance 2: "hello" -> "hello there": 1 word insertion / 1 word, " there" = 6 character insertions / 5
    # corpus WER = (1 + 1) / (3 + 1) = 2/4 = 0.5        (mean of rates would be (1/3 + 1) / 2 = 2/3)
    # corpus CER = (1 + 6) / (11 + 5) = 7/16 = 0.4375   (mean of rates would be (1/11 + 6/5) / 2)
    result = compute_error_rates(["the bat sat", "hello there"], ["the cat sat", "hello"])
    assert result["wer"] == pytest.approx(0.5)
    assert result["cer"] == pytest.approx(7 / 16)
    assert result["reference_words"] == 4
    assert result["reference_characters"] == 16
    assert (result["substitutions"], result["deletions"], result["insertions"]) == (1, 0, 1)


@pytest.mark.parametrize(
    "language, wer, cer",
    [
        # reference "打开 home page" (words 打 开 home page; auto characters "打开home page" = 11),
        # hypothesis "打开 homepage": words: home -> homepage substituted, page deleted = 2/4;
        # auto keeps the space between the two Latin words: 1 character deleted / 11;
        # zh ignores every space: "打开homepage" on both sides, CER 0/10.
        ("auto", 2 / 4, 1 / 11),
        ("zh", 2 / 4, 0 / 10),
        ("cmn", 2 / 4, 0 / 10),
    ],
)
def test_language_modes_on_mixed_text(language, wer, cer):
    result = compute_error_rates(["打开 homepage"], ["打开 home page"], language=language)
    assert result["wer"] == pytest.approx(wer)
    assert result["cer"] == pytest.approx(cer)


def test_english_mode_does_not_split_cjk():
    # language="en": "機器運轉正常" is one whitespace-delimited word, so one substitution: WER 1/1, CER 1/6
    result = compute_error_rates(["機器運作正常"], ["機器運轉正常"], language="en")
    assert result["wer"] == pytest.approx(1.0)
    assert result["cer"] == pytest.approx(1 / 6)


@pytest.mark.parametrize(
    "text, language, expected",
    [
        ("Hello, World!", "auto", "hello world"),
        ("  Don't   STOP —  state-of-the-art… ", "auto", "dont stop state of the art"),
        ("機器運轉正常。", "auto", "機器運轉正常"),
        ("「打開」 WiFi，設定！", "auto", "打開wifi設定"),  # full-width comma and bang via NFKC, 「」 are Unicode P*
        ("機器、運轉：正常；好嗎？", "zh", "機器運轉正常好嗎"),
        ("機器 運轉", "en", "機器 運轉"),
        ("ＡＢＣ １２３", "auto", "abc 123"),  # full-width letters and digits via NFKC
        ("...", "auto", ""),
    ],
)
def test_normalize_transcript(text, language, expected):
    assert normalize_transcript(text, language) == expected


def test_normalize_false_keeps_case_and_punctuation():
    # without normalisation "Hello," != "hello" and "World!" != "world": 2 substitutions / 2 words
    result = compute_error_rates(["hello world"], ["Hello, World!"], normalize=False)
    assert result["wer"] == pytest.approx(1.0)


def test_empty_reference_counts_insertions():
    # utterance 1: empty reference, hypothesis "extra words": 2 word insertions, 11 character insertions
    # utterance 2: exact match, 3 words, 11 characters
    # WER = 2 / 3, CER = 11 / 11
    result = compute_error_rates(["extra words", "the cat sat"], ["", "the cat sat"])
    assert result["wer"] == pytest.approx(2 / 3)
    assert result["cer"] == pytest.approx(1.0)
    assert result["insertions"] == 2
    assert result["reference_words"] == 3


def test_empty_reference_and_empty_hypothesis_add_nothing():
    result = compute_error_rates(["", "the bat sat"], ["", "the cat sat"])
    assert result["wer"] == pytest.approx(1 / 3)
    assert result["reference_words"] == 3


def test_all_empty_references_raise():
    # "..." is empty after normalisation
    with pytest.raises(ValueError, match="references are empty"):
        compute_error_rates(["something", ""], ["", "..."])


def test_length_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match="1 predictions and 2 references"):
        compute_error_rates(["a"], ["a", "b"])


def test_empty_input_and_unknown_language_raise():
    with pytest.raises(ValueError, match="no predictions"):
        compute_error_rates([], [])
    with pytest.raises(ValueError, match="`language`"):
        compute_error_rates(["a"], ["a"], language="fr")


@pytest.mark.parametrize(
    "reference, hypothesis, expected",
    [
        ("abc", "abc", (0, 0, 0)),
        ("abc", "", (0, 3, 0)),
        ("", "ab", (0, 0, 2)),
        ("kitten", "sitting", (2, 0, 1)),  # k -> s, e -> i, + g: distance 3
        ("abcd", "acd", (0, 1, 0)),
        ("ab", "ba", (2, 0, 0)),  # two substitutions preferred over a deletion plus an insertion of equal cost
    ],
)
def test_edit_operations(reference, hypothesis, expected):
    assert edit_operations(list(reference), list(hypothesis)) == expected


@pytest.mark.parametrize(
    "path",
    [ERROR_RATE_METRIC_PATH, str(Path(ERROR_RATE_METRIC_PATH) / "ldv_error_rate.py")],
    ids=["directory", "file"],
)
def test_evaluate_load_by_path_offline(path, monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(path)
    result = metric.compute(predictions=["機器運作正常"], references=["機器運轉正常"], language="zh")
    assert result["cer"] == pytest.approx(1 / 6)
    assert set(result) >= {"wer", "cer", "substitutions", "deletions", "insertions", "reference_words",
                           "reference_characters"}


def test_evaluate_load_in_a_fresh_offline_process(tmp_path):
    # A fresh interpreter with the Hub switched off and an empty module cache, as on a user's offline machine.
    code = (
        "import evaluate; from modeling_qwen2audio_ldv.evaluation.scoring import ERROR_RATE_METRIC_PATH; "
        "m = evaluate.load(ERROR_RATE_METRIC_PATH); "
        "r = m.compute(predictions=['hello word'], references=['Hello, world!']); "
        "assert r['wer'] == 0.5, r"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]


def test_metric_is_cached_per_process():
    assert load_error_rate_metric() is load_error_rate_metric()
