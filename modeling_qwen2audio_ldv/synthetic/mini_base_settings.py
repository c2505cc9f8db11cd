# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Every knob of the mini base build (:class:`MiniBaseSettings`), its voices and its stock model configuration.

The defaults are the committed ``mini_base/``; :func:`~modeling_qwen2audio_ldv.synthetic.mini_world.build_mini_base`
takes a settings object or overrides of its fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .corpus import DEFAULT_VOICES, split_voices
from .voices import NATURAL_VOICES

#: Held-out microphone CER (fraction) that the mini base is meant to reach on synthetic voices it never heard.
CER_TARGET = 0.03
#: Microphone CER (fraction) that the mini base is meant to reach on the real-voice set.
REAL_VOICE_CER_TARGET = 0.10

_DEFAULT_SPLIT = split_voices(DEFAULT_VOICES["en"])
#: Training voices: the training voices of ``corpus.DEFAULT_VOICES["en"]`` plus accent/variant pairs that the
#: default corpus never uses. More voices is the cheapest way to generalise to unseen ones.
TRAIN_VOICES: tuple[str, ...] = _DEFAULT_SPLIT["train"] + (
    "en-us+m3",
    "en-gb+m5",
    "en-us+klatt2",
    "en-gb-x-rp+f1",
    "en-gb-scotland+f3",
    "en-029+m1",
    "en-us-nyc+f4",
    "en-gb-x-gbclan+m4",
    "en-gb-x-gbcwmd+f2",
    "en-us+klatt6",
    "en-gb+m8",
    "en-us+f5",
)
#: Held-out voices: the validation and test voices of ``corpus.DEFAULT_VOICES["en"]`` (never heard in training).
HELDOUT_VOICES: tuple[str, ...] = _DEFAULT_SPLIT["validation"] + _DEFAULT_SPLIT["test"]
_NATURAL_SPLIT = split_voices(tuple(name for name in NATURAL_VOICES if name != "piper:joe"))
#: Flite and Festival voices built from real speakers' recordings (CMU kal, ked and ARCTIC slt): the training ones.
#: Piper's joe is left out by default (its voice was fine-tuned from one whose data licence is more restrictive:
#: weights trained on its clips are not redistributed here); ``natural_voices=(..., "piper:joe")`` adds it.
NATURAL_TRAIN_VOICES: tuple[str, ...] = _NATURAL_SPLIT["train"]
#: Held-out natural voices: whole speakers never heard in training (ARCTIC awb, Scottish English, and rms).
NATURAL_HELDOUT_VOICES: tuple[str, ...] = _NATURAL_SPLIT["validation"] + _NATURAL_SPLIT["test"]
#: Decoder sizes of the first mini base (``encoder="scratch"``), applied before any explicit override.
SCRATCH_DEFAULTS: dict[str, Any] = {"text_hidden": 128, "text_layers": 2, "text_ffn": 384, "feature_dropout": 0.0,
                                    "kinds": ("digits",), "steps": 1400, "num_train": 4000, "prompt_repeats": 0,
                                    "num_spans": 0, "natural_voices": (), "natural_share": 0.0, "augment": False,
                                    "vocab_size": 1000, "max_new_tokens": 64}
ENCODERS = ("whisper-base", "scratch")


@dataclasses.dataclass
class MiniBaseSettings:
    """Every knob of :func:`build_mini_base` (the defaults are the committed ``mini_base/``)."""

    seed: int = 0  # seeds texts, voices, channels, initialisation, data order and masks
    # audio tower: "whisper-base" = OpenAI Whisper-base's pretrained encoder (d_model 512, 6 layers, 30 s window),
    # frozen, as Qwen2-Audio's encoder is a pretrained Whisper one; "scratch" = the toy encoder of the `audio_*`
    # sizes below, trained from scratch with the rest (the first mini base)
    encoder: str = "whisper-base"
    # --- corpus
    num_train: int = 3000  # template utterances (texts.make_texts `kinds`); more helps unseen voices
    num_heldout: int = 200  # held-out utterances (unseen texts and voices) for the final CER/WER
    # text kinds of texts.make_texts. The scratch encoder reads digit strings only (SCRATCH_DEFAULTS): with commands
    # and sentences as well, 1000-1800 steps left its held-out microphone CER at 40-49% (the model leaned on the
    # templates' wording instead of the audio).
    kinds: tuple[str, ...] = ("digits", "command", "sentence")
    train_voices: tuple[str, ...] = TRAIN_VOICES
    # --- the real-voice set's text domain (data.real_voices.transcript_texts: the transcripts of the Debian packages
    # the set is built from; their recordings, the real speakers, are never read), spoken by synthetic voices only
    prompt_repeats: int = 6  # training clips of each transcript (each with its own voice, rate, pitch, channel)
    num_spans: int = 3000  # training clips of word spans (1-8 words, texts.span_texts) cut from those transcripts
    # voices built from real speakers' recordings (Flite, Festival): each training clip draws one of them with
    # probability `natural_share`, otherwise an eSpeak voice of `train_voices` (round robin)
    natural_voices: tuple[str, ...] = NATURAL_TRAIN_VOICES
    natural_share: float = 0.6
    # True: training clips through synthetic.augment (speed 0.9-1.1, pitch, room, level, coloured noise; what
    # speech training uses); False: the light channel of mini_base_data.microphone_channel
    augment: bool = True
    # a real-voice set folder (build-real-voice-set): its microphone and `cardboard_box` clips are scored too
    real_voice_set: str | None = None
    num_proc: int = 2  # processes rendering training clips (synthesis and augmentation)
    # None: training clips through the microphone channel (the base). An LDV preset or condition JSON: every training
    # clip is that condition's simulated LDV recording instead (the "LDV-native" model; with `train_encoder` too, what
    # a model of this size reads from LDV speech when trained on it: the ceiling for a domain adapter there)
    train_condition: str | None = None
    # whisper-base only: False keeps the pretrained encoder frozen (the base's recipe: its outputs are computed once
    # and cached). True trains it too, at `encoder_learning_rate` (every weight of the model then trains; each step
    # runs the encoder's forward and backward, ~4x a cached step). With `train_condition` this is the LDV-native
    # model with every weight, the encoder included, fitted to that condition: the ceiling of what a model of this
    # size reads from its recordings.
    train_encoder: bool = False
    # peak LR of the pretrained encoder when it trains (same warm-up and decay as the rest): fine-tuning rates for
    # Whisper are ~1e-5..1e-4, the from-scratch decoder's 2e-3 would overwrite what the encoder learnt
    encoder_learning_rate: float = 1e-4
    heldout_voices: tuple[str, ...] = HELDOUT_VOICES + NATURAL_HELDOUT_VOICES
    # encoder positions: 150 = 3 s window (multiple of 50) for the "scratch" encoder; "whisper-base" always uses its
    # own 1500 (Whisper's 30 s window, made cheap by the trimmed tower)
    max_source_positions: int = 150
    # --- model (stock Qwen2-Audio sub-configs); the audio_* sizes apply to encoder="scratch" only
    audio_d_model: int = 128  # encoder width; cost grows ~quadratically
    audio_layers: int = 3
    audio_heads: int = 4
    audio_ffn: int = 512
    audio_dropout: float = 0.05  # small: the training voices are few, the clips many
    # the decoder learns to read a pretrained encoder (128 wide, 2 layers, FFN 384 for "scratch"); 256 wide with 4
    # layers cost 2.5x the step time on a shared core
    text_hidden: int = 192
    text_layers: int = 3
    text_heads: int = 4
    text_kv_heads: int = 2
    text_ffn: int = 576
    # dropout on the frozen encoder's outputs during training (whisper-base: the cached features cannot get
    # SpecAugment masks, which act on the log-mel input)
    feature_dropout: float = 0.1
    vocab_size: int = 1500  # BPE vocabulary trained on the training texts (~800 distinct words: most are one token)
    # --- optimisation
    steps: int = 2400  # optimiser steps; whisper-base: ~0.7 s each with 2 threads (features cached); 500 underfit
    batch_size: int = 32  # clips per step
    learning_rate: float = 2e-3  # peak LR; tiny transformers trained from scratch tolerate 1e-3..3e-3
    warmup_steps: int = 100  # linear warm-up, then cosine decay to `min_lr_ratio` * peak
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    freq_masks: int = 2  # SpecAugment frequency masks per clip, each up to `freq_mask_bins` mel bins
    freq_mask_bins: int = 8
    time_masks: int = 2  # time masks per clip, each up to `time_mask_frames` 10 ms frames (short: words are short)
    time_mask_frames: int = 8
    # --- evaluation and logging
    eval_batch_size: int = 50
    max_new_tokens: int = 160  # the real-voice set's longest transcript is 81 words
    log_every: int = 50
    num_threads: int = 1  # torch intra-op threads: 1 is 2-4x faster than 2 when other jobs share the cores


def mini_config(tokenizer: Any, settings: MiniBaseSettings) -> Any:
    """The stock ``Qwen2AudioConfig`` of the mini base."""
    from transformers import Qwen2AudioConfig

    audio = dict(
        model_type="qwen2_audio_encoder",
        num_mel_bins=80,
        encoder_layers=settings.audio_layers,
        encoder_attention_heads=settings.audio_heads,
        encoder_ffn_dim=settings.audio_ffn,
        d_model=settings.audio_d_model,
        max_source_positions=settings.max_source_positions,
        dropout=settings.audio_dropout,
    )
    text = dict(
        model_type="qwen2",
        vocab_size=len(tokenizer),
        hidden_size=settings.text_hidden,
        intermediate_size=settings.text_ffn,
        num_hidden_layers=settings.text_layers,
        num_attention_heads=settings.text_heads,
        num_key_value_heads=settings.text_kv_heads,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return Qwen2AudioConfig(
        audio_config=audio,
        text_config=text,
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )

