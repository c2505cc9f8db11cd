"""The frozen audio tower run on the valid frames only equals the stock padded 30 s pass on the valid frames."""

import copy

import pytest
import torch
from transformers import Qwen2AudioEncoder, Qwen2AudioEncoderConfig

from conftest import noise_clips
from modeling_qwen2audio_ldv import add_domain_adapter_to_model
from modeling_qwen2audio_ldv.audio_tower_qwen2audio_ldv import encode_audio
from modeling_qwen2audio_ldv.data.collator import build_prompt

MAX_SOURCE_POSITIONS = 100  # 200 mel frames = a 2 s window for the tiny encoder
MEL = 2 * MAX_SOURCE_POSITIONS


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    config = Qwen2AudioEncoderConfig(
        num_mel_bins=80, encoder_layers=3, encoder_attention_heads=4, encoder_ffn_dim=64, d_model=32,
        max_source_positions=MAX_SOURCE_POSITIONS,
    )
    return Qwen2AudioEncoder(config).eval()


def expected_output_frames(mel_length: int) -> int:
    """By hand: conv2 (stride 2) keeps (L - 1) // 2 + 1 frames, the pooling (2, stride 2) halves again."""
    return ((mel_length - 1) // 2 + 1 - 2) // 2 + 1


def run_both(encoder, mel_lengths):
    torch.manual_seed(1)
    features = torch.randn(len(mel_lengths), 80, MEL)
    mask = (torch.arange(MEL)[None] < torch.tensor(mel_lengths)[:, None]).long()
    with torch.no_grad():
        stock, stock_lengths = encode_audio(encoder, features, mask, trim=False)
        trimmed, trimmed_lengths = encode_audio(encoder, features, mask, trim=True)
    return stock, stock_lengths, trimmed, trimmed_lengths


@pytest.mark.parametrize(
    "mel_lengths",
    [[30], [77], [150], [MEL], [1], [2], [5], [MEL, 41, 1], [33, 100, 64, 199]],
    ids=["0.3s", "0.77s", "1.5s", "full-window", "one-frame", "two-frames", "five-frames", "mixed-with-full",
         "mixed"],
)
def test_trimmed_tower_equals_padded_pass_on_valid_frames(encoder, mel_lengths):
    stock, stock_lengths, trimmed, trimmed_lengths = run_both(encoder, mel_lengths)
    assert stock.shape[1] == MAX_SOURCE_POSITIONS // 2
    assert stock_lengths.tolist() == trimmed_lengths.tolist() == [expected_output_frames(n) for n in mel_lengths]
    assert trimmed.shape[1] <= stock.shape[1]
    if max(mel_lengths) < MEL - 2:
        assert trimmed.shape[1] < stock.shape[1]  # something was actually cut
    for row, valid in enumerate(stock_lengths.tolist()):
        if valid:
            # observed: max abs diff of order 1e-7 (float32 summation order), often exactly 0
            assert (trimmed[row, :valid] - stock[row, :valid]).abs().max().item() <= 1e-5


def test_trimmed_batch_matches_each_clip_alone(encoder):
    _, _, batched, lengths = run_both(encoder, [180, 40, 97])
    for row, mel in enumerate([180, 40, 97]):
        valid = lengths[row].item()
        torch.manual_seed(1)  # the same features run_both drew, cut to this clip
        features = torch.randn(3, 80, MEL)[row : row + 1]
        mask = (torch.arange(MEL)[None] < mel).long()
        with torch.no_grad():
            single, _ = encode_audio(encoder, features, mask, trim=True)
        assert (single[0, :valid] - batched[row, :valid]).abs().max().item() <= 1e-5


def make_inputs(processor, lengths):
    clips = noise_clips(lengths, seed=3)
    prompt = build_prompt(processor)
    return processor(text=[prompt] * len(clips), audio=clips, sampling_rate=16000, return_tensors="pt", padding=True)


@pytest.mark.parametrize("adapter_type", ["transformer", "none"])
def test_whole_model_trim_on_equals_trim_off(tiny_base, adapter_type):
    base, processor = tiny_base
    model = add_domain_adapter_to_model(copy.deepcopy(base), adapter_type=adapter_type, num_heads=4, ff_dim=32,
                                        zero_init=False).eval()
    inputs = make_inputs(processor, (16000, 5000, 32000, 160))
    with torch.no_grad():
        model.config.trim_audio_tower = False
        padded_logits = model(**inputs).logits
        padded_tokens = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        model.config.trim_audio_tower = True
        trimmed_logits = model(**inputs).logits
        trimmed_tokens = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        with model.disable_domain_adapter():
            disabled_logits = model(**inputs).logits
        base_logits = base(**inputs).logits
    assert (trimmed_logits - padded_logits).abs().max().item() <= 1e-5
    assert torch.equal(trimmed_tokens, padded_tokens)
    # the stock base model (adapter disabled or absent) gets the speed-up too, with the same outputs
    assert (disabled_logits - base_logits).abs().max().item() <= 1e-5
