"""Evaluation rows mean what they say: "baseline" is the stock base model, "adapted" uses the adapter, and each
reported CER/WER is the metric on the transcripts returned next to it. Also: how close "adapter disabled" is to
the stock model with the default ``trim_audio_tower=True``."""

import copy

import datasets
import pytest
import torch

from conftest import noise_clips
from modeling_qwen2audio_ldv import add_domain_adapter_to_model
from modeling_qwen2audio_ldv.evaluation.evaluate import evaluate_sets
from modeling_qwen2audio_ldv.inference.generate import generate_transcripts
from modeling_qwen2audio_ldv.evaluation.scoring import compute_error_rates
from modeling_qwen2audio_ldv.data.collator import build_prompt

INSTRUCTION = "Transcribe the audio."


def eval_set(seed):
    clips = noise_clips([16000, 9000, 12000, 4000], seed)
    return datasets.Dataset.from_dict({"audio": [{"array": c, "sampling_rate": 16000} for c in clips],
                                       "text": ["abc", "one two", "q", "seven"]})


@pytest.fixture(scope="module")
def loud_adapter(tiny_base):
    """A non-zero adapter whose correction is large enough to change the tiny model's greedy transcripts."""
    base, _ = tiny_base
    torch.manual_seed(0)
    return add_domain_adapter_to_model(copy.deepcopy(base), adapter_type="transformer", num_heads=4, ff_dim=32,
                                       zero_init=False, scale_init=20.0).eval()


def test_baseline_rows_are_the_stock_base_and_scores_match_the_transcripts(tiny_base, loud_adapter):
    base, processor = tiny_base
    sets = {"ldv": eval_set(1), "mic": eval_set(2)}
    scores, predictions = evaluate_sets(loud_adapter, processor, sets, INSTRUCTION, batch_size=3, max_new_tokens=6,
                                        progress=False)
    for name, dataset in sets.items():
        audios, references = list(dataset["audio"]), list(dataset["text"])
        stock = generate_transcripts(base, processor, audios, INSTRUCTION, batch_size=3, max_new_tokens=6, progress=False)
        assert predictions[name]["baseline"] == stock, name
        assert predictions[name]["reference"] == references
        # the adapter does change this model's transcripts, so the row comparison above can tell them apart
        assert predictions[name]["adapted"] != stock, name
        for row in ("baseline", "adapted"):
            rates = compute_error_rates(predictions[name][row], references)
            assert scores[name][row] == {"cer": pytest.approx(float(rates["cer"]), abs=0),
                                         "wer": pytest.approx(float(rates["wer"]), abs=0)}, (name, row)
        assert scores[name]["baseline"] != scores[name]["adapted"]


def test_adapted_rows_use_the_adapter(tiny_base, loud_adapter):
    _, processor = tiny_base
    dataset = eval_set(3)
    _, predictions = evaluate_sets(loud_adapter, processor, {"ldv": dataset}, INSTRUCTION, batch_size=4,
                                   max_new_tokens=6, baseline=False, progress=False)
    assert set(predictions["ldv"]) == {"reference", "adapted"}
    with torch.no_grad():
        direct = generate_transcripts(loud_adapter, processor, list(dataset["audio"]), INSTRUCTION, batch_size=4,
                            max_new_tokens=6, progress=False)
    assert predictions["ldv"]["adapted"] == direct


def test_apply_adapter_to_limits_the_adapted_rows(tiny_base, loud_adapter):
    _, processor = tiny_base
    scores, _ = evaluate_sets(loud_adapter, processor, {"ldv": eval_set(1), "mic": eval_set(2)}, INSTRUCTION,
                              batch_size=4, max_new_tokens=2, apply_adapter_to=["ldv"], progress=False)
    assert set(scores["ldv"]) == {"baseline", "adapted"} and set(scores["mic"]) == {"baseline"}


# Measured on the tiny base (4 clips of 0.01-2 s): max |logit difference| 1.2e-7 with max |logit| 0.46; on the
# committed mini base 6.2e-6 with max |logit| 11 (relative ~6e-7). Bound: 4e-6 of the largest logit.
TRIM_ROUNDING = 4e-6


def test_disabled_adapter_with_trimming_equals_stock_within_float_rounding(tiny_base, loud_adapter):
    base, processor = tiny_base
    assert loud_adapter.config.trim_audio_tower  # the default
    clips = noise_clips((16000, 5000, 32000, 160), seed=4)
    inputs = processor(text=[build_prompt(processor)] * len(clips), audio=clips, sampling_rate=16000,
                       return_tensors="pt", padding=True)
    with torch.no_grad():
        stock = base(**inputs).logits
        stock_tokens = base.generate(**inputs, max_new_tokens=8, do_sample=False)
        with loud_adapter.disable_domain_adapter():
            disabled = loud_adapter(**inputs).logits
            disabled_tokens = loud_adapter.generate(**inputs, max_new_tokens=8, do_sample=False)
        enabled = loud_adapter(**inputs).logits
    assert (disabled - stock).abs().max().item() <= TRIM_ROUNDING * stock.abs().max().item()
    assert torch.equal(disabled_tokens, stock_tokens)
    assert (enabled - stock).abs().max().item() > 1e3 * TRIM_ROUNDING * stock.abs().max().item()
    # without trimming the tower runs the stock padded pass: bit-identical
    loud_adapter.config.trim_audio_tower = False
    try:
        with torch.no_grad(), loud_adapter.disable_domain_adapter():
            assert torch.equal(loud_adapter(**inputs).logits, stock)
    finally:
        loud_adapter.config.trim_audio_tower = True


def test_length_batches_split_where_a_clip_is_under_half_the_batch_longest():
    from modeling_qwen2audio_ldv.inference.generate import length_batches

    lengths = [10, 3, 22, 9, 5, 11, 4]  # longest first: 22(2) 11(5) 10(0) 9(3) 5(4) 4(6) 3(1)
    # 10 * 2 < 22 opens a batch; 5 * 2 >= 10 stays; the batch is then full (3); 3 * 2 >= 4 stays
    assert length_batches(lengths, 3) == [[2, 5], [0, 3, 4], [6, 1]]
    assert length_batches(lengths, 3, max_ratio=float("inf")) == [[2, 5, 0], [3, 4, 6], [1]]  # count only
    assert length_batches([7, 7, 7], 2) == [[0, 1], [2]]  # equal lengths keep their order
    assert length_batches([], 4) == []
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        length_batches([1], 0)


def test_generation_batches_follow_length_batches_and_transcripts_keep_input_order(tiny_base, monkeypatch):
    base, processor = tiny_base
    clips = noise_clips([16000, 4000, 12000, 9000], 5)
    sizes = []
    generate = base.generate

    def recording_generate(**kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        return generate(**kwargs)

    monkeypatch.setattr(base, "generate", recording_generate)
    forward = generate_transcripts(base, processor, clips, INSTRUCTION, batch_size=4, max_new_tokens=6,
                                   progress=False)
    assert sizes == [3, 1]  # 16000, 12000, 9000 (each >= 8000); then 4000
    backward = generate_transcripts(base, processor, clips[::-1], INSTRUCTION, batch_size=4, max_new_tokens=6,
                                    progress=False)
    assert backward == forward[::-1]
    assert len(set(forward)) > 1  # the clips' transcripts differ, so a mix-up of the order would show
