"""The transcription prompt and the Qwen2-Audio collator (labels, padding sides, paired audio, errors)."""

import re

import numpy as np
import pytest
import torch
from datasets import Audio, Dataset

from modeling_qwen2audio_ldv.data.collator import (
    DEFAULT_INSTRUCTION,
    INSTRUCTION_ANALYZE_ZH,
    INSTRUCTION_TRANSCRIBE_ZH,
    DataCollatorForQwen2AudioLDV,
    build_prompt,
)
from modeling_qwen2audio_ldv.testing import SPECIAL_TOKENS

from conftest import noise_clips

SR = 16_000
# Clip lengths that are whole mel frames (160 samples), so samples // 160 is the valid mel frame count.
LENGTHS = (16_000, 8_000)
TEXTS = ("hello", "hi there")


def encoder_frames(samples: int) -> int:
    """Audio tokens of a clip, by hand: mel frames, then the encoder's stride-2 conv and stride-2 pooling."""
    mel = samples // 160
    return ((mel - 1) // 2 + 1 - 2) // 2 + 1


def count_char_tokens(text: str) -> int:
    """Tokens of ``text`` under the tiny character tokenizer: one per special token, one per other character."""
    pieces = re.findall(r"<\|[A-Za-z_]+\|>|.", text, flags=re.S)
    assert all(piece in SPECIAL_TOKENS for piece in pieces if len(piece) > 1)
    return len(pieces)


def examples(lengths=LENGTHS, texts=TEXTS, seed=0):
    return [{"audio": {"array": clip, "sampling_rate": SR}, "text": text}
            for clip, text in zip(noise_clips(lengths, seed), texts)]


def test_prompt_default_and_chinese_instructions(tiny_base):
    _, processor = tiny_base
    assert DEFAULT_INSTRUCTION == "Transcribe the audio."
    prompt = build_prompt(processor)
    # Qwen2-Audio's chat template (the stock processor's) with one audio and the instruction
    assert prompt == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                      "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nTranscribe the audio.<|im_end|>\n"
                      "<|im_start|>assistant\n")
    assert prompt.count("<|AUDIO|>") == 1 and prompt.endswith("<|im_start|>assistant\n")
    for instruction in (INSTRUCTION_ANALYZE_ZH, INSTRUCTION_TRANSCRIBE_ZH):
        assert instruction in build_prompt(processor, instruction)
        batch = DataCollatorForQwen2AudioLDV(processor, instruction=instruction)(examples())
        unk = processor.tokenizer.unk_token_id
        assert int((batch["input_ids"][0] == unk).sum()) == len(instruction)  # unknown to the tiny vocabulary
        assert (batch["labels"] == unk).sum() == 0  # and never supervised


def test_train_labels_mask_the_prompt_and_padding(tiny_base):
    _, processor = tiny_base
    tokenizer = processor.tokenizer
    batch = DataCollatorForQwen2AudioLDV(processor, mode="train")(examples())

    prompt = build_prompt(processor)
    prompt_lengths = [count_char_tokens(prompt.replace("<|AUDIO|>", "<|AUDIO|>" * encoder_frames(n)))
                      for n in LENGTHS]
    assert [encoder_frames(n) for n in LENGTHS] == [25, 12]
    targets = [tokenizer.convert_tokens_to_ids(list(text) + ["<|im_end|>"]) for text in TEXTS]
    length = max(p + len(t) for p, t in zip(prompt_lengths, targets))
    expected = torch.full((2, length), -100, dtype=torch.long)
    for row, (p, target) in enumerate(zip(prompt_lengths, targets)):
        expected[row, p: p + len(target)] = torch.tensor(target)

    assert batch["labels"].shape == batch["input_ids"].shape == (2, length)
    assert torch.equal(batch["labels"], expected)
    audio_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert (batch["input_ids"] == audio_id).sum(-1).tolist() == [25, 12]
    # right padding: the shorter row ends with attention 0, and starts with the system turn
    short = int(np.argmin([p + len(t) for p, t in zip(prompt_lengths, targets)]))
    assert batch["attention_mask"][short, -1] == 0 and batch["attention_mask"][:, 0].tolist() == [1, 1]
    assert batch["feature_attention_mask"].sum(-1).tolist() == [n // 160 for n in LENGTHS]
    assert batch["input_features"].shape == (2, 80, 200) and batch["input_features"].dtype == torch.float32


def test_train_batch_runs_through_the_model(tiny_base):
    model, processor = tiny_base
    batch = DataCollatorForQwen2AudioLDV(processor)(examples())
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_generate_mode_left_pads_and_returns_references(tiny_base):
    model, processor = tiny_base
    collator = DataCollatorForQwen2AudioLDV(processor, mode="generate")
    batch, references = collator.collate_for_generation(examples())
    assert references == list(TEXTS) and "labels" not in batch
    assert set(collator(examples())) == set(batch)  # __call__ in generate mode = the batch alone
    audio_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    prompt = build_prompt(processor)
    prompt_lengths = [count_char_tokens(prompt.replace("<|AUDIO|>", "<|AUDIO|>" * encoder_frames(n))) for n in LENGTHS]
    assert batch["attention_mask"].sum(-1).tolist() == prompt_lengths
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][:, -1].tolist() == [1, 1]  # left padding
    assert (batch["input_ids"] == audio_id).sum(-1).tolist() == [25, 12]
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == batch["input_ids"].shape[1] + 3


def test_paired_mic_audio_and_audio_domain(tiny_base):
    _, processor = tiny_base
    mic = noise_clips((12_000, 4_800), seed=5)
    rows = [{**row, "mic": {"array": clip, "sampling_rate": SR}, "domain": domain}
            for row, clip, domain in zip(examples(), mic, ("ldv", "mic"))]
    collator = DataCollatorForQwen2AudioLDV(processor, mic_audio_key="mic", audio_domain_key="domain")
    batch = collator(rows)
    assert batch["mic_input_features"].shape == batch["input_features"].shape
    assert batch["mic_feature_attention_mask"].sum(-1).tolist() == [75, 30]
    assert batch["audio_domain"] == ["ldv", "mic"]
    generate_batch, _ = DataCollatorForQwen2AudioLDV(
        processor, mode="generate", mic_audio_key="mic", audio_domain_key="domain").collate_for_generation(rows)
    assert "mic_input_features" not in generate_batch and generate_batch["audio_domain"] == ["ldv", "mic"]


def test_rows_from_a_datasets_audio_column(tiny_base):
    _, processor = tiny_base
    clips = noise_clips(LENGTHS, seed=2)
    dataset = Dataset.from_dict({"audio": [{"array": c, "sampling_rate": SR} for c in clips], "text": list(TEXTS)})
    dataset = dataset.cast_column("audio", Audio(sampling_rate=SR))
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=DataCollatorForQwen2AudioLDV(processor))
    batch = next(iter(loader))
    assert batch["feature_attention_mask"].sum(-1).tolist() == [n // 160 for n in LENGTHS]
    assert (batch["labels"] != -100).sum(-1).tolist() == [len(t) + 1 for t in TEXTS]


def test_a_clip_of_exactly_the_window_is_kept(tiny_base):
    """The limit is inclusive: a clip of exactly the encoder's window (2 s on the tiny processor) is collated with
    every mel frame valid (200) and ``((200 - 1) // 2 + 1 - 2) // 2 + 1 = 50`` audio tokens; one sample more is
    refused."""
    _, processor = tiny_base
    window = processor.feature_extractor.n_samples
    assert window == 2 * SR
    clip, longer = noise_clips((window, window + 1), seed=6)
    batch = DataCollatorForQwen2AudioLDV(processor)([{"audio": clip, "text": "x"}])
    assert batch["feature_attention_mask"].sum().item() == 200
    audio_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert int((batch["input_ids"] == audio_id).sum()) == encoder_frames(window) == 50
    with pytest.raises(ValueError, match=r"2\.00 s, longer than 2 s"):
        DataCollatorForQwen2AudioLDV(processor)([{"audio": longer, "text": "x"}])
    # max_audio_seconds is inclusive too: 0.5 s = 8000 samples passes a 0.5 s limit
    short = noise_clips((SR // 2,), seed=7)[0]
    assert DataCollatorForQwen2AudioLDV(processor, max_audio_seconds=0.5)([{"audio": short, "text": "x"}])[
        "feature_attention_mask"].sum().item() == 50


def test_bad_audio_and_text_raise_clear_errors(tiny_base):
    _, processor = tiny_base
    collator = DataCollatorForQwen2AudioLDV(processor)
    (clip,) = noise_clips((SR,))
    window = noise_clips((int(2.5 * SR),))[0]  # the tiny processor's window is 2 s
    with pytest.raises(ValueError, match=r"example 0 .*2\.50 s, longer than 2 s"):
        collator([{"audio": {"array": window, "sampling_rate": SR, "path": "long.wav"}, "text": "x"}])
    with pytest.raises(ValueError, match=r"long\.wav"):
        collator([{"audio": {"array": window, "sampling_rate": SR, "path": "long.wav"}, "text": "x"}])
    with pytest.raises(ValueError, match="longer than 0.5 s"):
        DataCollatorForQwen2AudioLDV(processor, max_audio_seconds=0.5)([{"audio": clip, "text": "x"}])
    with pytest.raises(ValueError, match="44100 Hz but Qwen2-Audio needs 16000 Hz"):
        collator([{"audio": {"array": clip, "sampling_rate": 44_100}, "text": "x"}])
    with pytest.raises(ValueError, match="mono"):
        collator([{"audio": np.stack([clip, clip]), "text": "x"}])
    with pytest.raises(ValueError, match="NaN"):
        collator([{"audio": np.full(SR, np.nan, np.float32), "text": "x"}])
    with pytest.raises(ValueError, match="missing or empty transcript"):
        collator([{"audio": clip, "text": " "}])
    with pytest.raises(ValueError, match="sampling_rate"):
        DataCollatorForQwen2AudioLDV(processor, sampling_rate=8_000)
