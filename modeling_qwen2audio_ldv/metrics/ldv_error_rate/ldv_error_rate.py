# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Corpus-level word and character error rates (WER and CER) for English and Chinese transcripts.

An ``evaluate`` metric module shipped inside ``modeling_qwen2audio_ldv``; load it by path (no Hub access)::

    import evaluate
    from modeling_qwen2audio_ldv.evaluation.scoring import ERROR_RATE_METRIC_PATH

    metric = evaluate.load(ERROR_RATE_METRIC_PATH)
    metric.compute(predictions=["機器運作正常"], references=["機器運轉正常。"])
    # {'wer': 0.1666..., 'cer': 0.1666..., ...}

Normalisation, tokenisation and alignment are defined in ``modeling_qwen2audio_ldv.evaluation.scoring`` (which therefore
must be installed); see that module for the exact rules.
"""

import datasets
import evaluate

from modeling_qwen2audio_ldv.evaluation.scoring import error_counts

_DESCRIPTION = """\
Corpus-level word error rate (WER) and character error rate (CER): the total number of substitutions,
deletions and insertions of a minimum-edit alignment, summed over all utterances, divided by the total number
of reference words (characters). This is not the mean of per-utterance rates.

With `normalize=True` (default) both sides are NFKC-normalised, lower-cased and stripped of ASCII and CJK
punctuation, and whitespace is collapsed. Each CJK character counts as one word (Chinese has no spaces to
split on, so WER equals CER for Chinese); English CER counts the single spaces between words, Chinese CER
ignores spaces. An empty reference contributes no reference units and one insertion per hypothesis unit; a
corpus whose references are all empty raises a ValueError.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list[str]`): hypothesis transcripts.
    references (`list[str]`): reference transcripts, one per prediction.
    normalize (`bool`, defaults to `True`): normalise case, punctuation, Unicode forms and whitespace first.
    language (`str`, defaults to `"auto"`): `"auto"` (CJK characters are words, spaces count only between
        non-CJK words), `"en"` (words split at spaces, CER counts spaces) or `"zh"` / `"cmn"` (as `"auto"`, but
        CER ignores every space).

Returns:
    wer (`float`): (substitutions + deletions + insertions) / reference_words.
    cer (`float`): (character_substitutions + character_deletions + character_insertions) / reference_characters.
    substitutions, deletions, insertions (`int`): word-level edit counts over the corpus.
    character_substitutions, character_deletions, character_insertions (`int`): character-level edit counts.
    reference_words, reference_characters (`int`): total reference units after normalisation.

Examples:
    >>> metric = evaluate.load(ERROR_RATE_METRIC_PATH)
    >>> result = metric.compute(predictions=["hello word"], references=["Hello, world!"])
    >>> result["wer"], result["substitutions"], result["reference_words"]
    (0.5, 1, 2)
"""

_CITATION = """\
@inproceedings{morris2004wer,
  title     = {From WER and RIL to MER and WIL: improved evaluation measures for connected speech recognition},
  author    = {Morris, Andrew Cameron and Maier, Viktoria and Green, Phil},
  booktitle = {Interspeech},
  year      = {2004}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LdvErrorRate(evaluate.Metric):
    """Corpus-level WER and CER with English/Chinese normalisation (see the module docstring)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://en.wikipedia.org/wiki/Word_error_rate"],
        )

    def _compute(
        self, predictions: list[str], references: list[str], normalize: bool = True, language: str = "auto"
    ) -> dict[str, float | int]:
        return error_counts(predictions, references, normalize=normalize, language=language)
