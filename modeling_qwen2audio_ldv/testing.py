"""Tiny offline Qwen2-Audio models and processors, for tests, benchmarks and examples.

Nothing here downloads: the tokenizer is a character-level ``tokenizers`` vocabulary with the Qwen2-Audio chat
and audio special tokens, and the feature extractor is a ``WhisperFeatureExtractor`` whose fixed length matches
the tiny encoder (``max_source_positions * 2`` mel frames).
"""

import string

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    WhisperFeatureExtractor,
)

from .audio import SAMPLING_RATE

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<unk>")
HOP_LENGTH = 160  # samples per mel frame at SAMPLING_RATE (10 ms), as in Whisper


def build_char_tokenizer(extra_characters: str = "") -> PreTrainedTokenizerFast:
    """A character-level tokenizer: the special tokens, printable ASCII, and ``extra_characters``."""
    characters = list(dict.fromkeys(string.printable + extra_characters))
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *characters])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.decoder = decoders.Fuse()
    return _wrap(backend)


def _wrap(backend: Tokenizer) -> PreTrainedTokenizerFast:
    """A transformers tokenizer over ``backend`` with the Qwen2-Audio special tokens, left-padding by default."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        bos_token=None,
        additional_special_tokens=list(SPECIAL_TOKENS[1:6]),
    )
    tokenizer.padding_side = "left"
    return tokenizer


def build_corpus_tokenizer(texts, vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained with ``tokenizers`` on ``texts``, plus the Qwen2-Audio special tokens.

    Words are split at spaces (Metaspace) and newlines are their own pre-tokens, so a chat prompt never merges with
    the transcript that follows it. On a small closed-vocabulary corpus most words become single tokens, which
    keeps transcripts a few tokens long. Printable ASCII is in the alphabet, so any English text encodes.
    """
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", "isolated"),
                                                     pre_tokenizers.Metaspace()])
    backend.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=list(string.printable), show_progress=False)
    backend.train_from_iterator(list(texts), trainer)
    return _wrap(backend)


def build_processor(tokenizer: PreTrainedTokenizerFast, max_source_positions: int, num_mel_bins: int = 80):
    """A ``Qwen2AudioProcessor`` whose feature extractor pads to ``max_source_positions * 2`` mel frames."""
    mel_frames = max_source_positions * 2
    if (mel_frames * HOP_LENGTH) % SAMPLING_RATE:
        raise ValueError(f"max_source_positions ({max_source_positions}) must make a whole number of seconds "
                         f"(multiples of 50)")
    feature_extractor = WhisperFeatureExtractor(
        feature_size=num_mel_bins,
        sampling_rate=SAMPLING_RATE,
        hop_length=HOP_LENGTH,
        chunk_length=mel_frames * HOP_LENGTH // SAMPLING_RATE,
        n_fft=400,
        padding_value=0.0,
        return_attention_mask=True,
    )
    return Qwen2AudioProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def tiny_config(tokenizer: PreTrainedTokenizerFast, max_source_positions: int = 100,
                **audio_overrides) -> Qwen2AudioConfig:
    """A tiny Qwen2-Audio configuration (as in transformers' own tests): audio d_model 16, text hidden 32."""
    audio = dict(
        num_mel_bins=80, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=32, d_model=16,
        max_source_positions=max_source_positions,
    )
    audio.update(audio_overrides)
    text = dict(
        model_type="qwen2", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return Qwen2AudioConfig(
        audio_config={"model_type": "qwen2_audio_encoder", **audio},
        text_config=text,
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )


def build_tiny_base(seed: int = 0, max_source_positions: int = 100, **audio_overrides):
    """A random tiny stock ``Qwen2AudioForConditionalGeneration`` and its processor (2 s audio window)."""
    tokenizer = build_char_tokenizer()
    processor = build_processor(tokenizer, max_source_positions, audio_overrides.get("num_mel_bins", 80))
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(tiny_config(tokenizer, max_source_positions, **audio_overrides))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval(), processor
