# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Speech and batches of the mini base build: utterances, clips of any synthesis engine (eSpeak NG, Flite, Festival,
Piper) through a microphone channel or the LDV simulator, the processor outputs computed once, SpecAugment-style masks and padded training batches.

Every random choice draws from a generator keyed by the build seed and the utterance (:func:`keyed_rng`), so a clip
does not depend on which other clips are rendered or in which order.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..audio import SAMPLING_RATE
from . import simulator
from .corpus import PITCH_RANGE, RATE_RANGE
from .mini_base_settings import MiniBaseSettings
from .voices import NEUTRAL_PITCH, supports_pitch, synthesize_voice


def keyed_rng(seed: int, *key: object) -> np.random.Generator:
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
        length = int(rt60 * SAMPLING_RATE)
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
    texts: Sequence[str], voices: Sequence[str], seed: int, split: str,
    natural_voices: Sequence[str] = (), natural_share: float = 0.0,
) -> list[dict[str, Any]]:
    """Assign a voice, a speaking rate and a base pitch to each text.

    The voice is ``voices[index % len(voices)]`` (round robin), or, with probability ``natural_share``, one of
    ``natural_voices`` drawn uniformly. A voice without pitch control (:func:`~.voices.supports_pitch`) speaks at its
    own pitch (50).

    Returns:
        ``[{"id", "text", "voice", "rate", "pitch"}]``; rate in eSpeak words per minute, pitch 0-99.
    """
    rows = []
    for index, text in enumerate(texts):
        rng = keyed_rng(seed, "utterance", split, index)
        rate = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
        pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
        voice = voices[index % len(voices)]
        if natural_voices and rng.random() < natural_share:  # no extra draw without natural voices
            voice = natural_voices[int(rng.integers(len(natural_voices)))]
        rows.append({"id": f"{split}-{index:05d}", "text": text, "voice": voice, "rate": rate,
                     "pitch": pitch if supports_pitch(voice) else NEUTRAL_PITCH})
    return rows


def render_clean(row: dict[str, Any]) -> np.ndarray:
    """The clip of an utterance row by its voice's engine (float32, 16 kHz, silence trimmed)."""
    return synthesize_voice(row["text"], voice=row["voice"], rate=row["rate"], pitch=row["pitch"],
                            sample_rate=SAMPLING_RATE)


def render_train_clip(row: dict[str, Any], seed: int, augment: bool = False, condition: Any = None) -> np.ndarray:
    """A training clip of an utterance row.

    With ``augment``, the talker is perturbed (speed 0.9-1.1, pitch: :func:`~.augment.perturb_speech`); the clip is
    then what a microphone hears (:func:`~.augment.microphone_channel`: room, level, coloured noise) or, with an LDV
    ``condition``, the simulator's recording of the perturbed talker. Without ``augment``: the light channel of
    :func:`microphone_channel` (or the simulator on the clean clip). Every draw is keyed by the seed and the row id.
    """
    clean = render_clean(row)
    if augment:
        from .augment import SpeechAugmentation, perturb_speech
        from .augment import microphone_channel as room_channel

        talker_seed = int(keyed_rng(seed, "train-talker", row["id"]).integers(2**62))
        clean = perturb_speech(clean, SAMPLING_RATE, talker_seed, SpeechAugmentation())
        if condition is None:
            room_seed = int(keyed_rng(seed, "train-room", row["id"]).integers(2**62))
            return room_channel(clean, SAMPLING_RATE, room_seed, SpeechAugmentation())
    if condition is None:
        return microphone_channel(clean, keyed_rng(seed, "train-channel", row["id"]), reverb=True)
    simulator_seed = int(keyed_rng(seed, "train-ldv", row["id"]).integers(2**31))
    return simulator.simulate_ldv(clean, SAMPLING_RATE, condition, seed=simulator_seed)


def render_heldout_microphone(row: dict[str, Any], seed: int) -> np.ndarray:
    """The held-out microphone clip of an utterance row: clean speech through a light channel (no reverb)."""
    return microphone_channel(render_clean(row), keyed_rng(seed, "mic", row["id"]), reverb=False)


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
    clean = render_clean(row) if clean is None else clean
    simulator_seed = int(keyed_rng(seed, "ldv", row["id"]).integers(2**31))
    # `simulator.simulate_ldv` is looked up at call time, so a test can count the simulator's calls
    return simulator.simulate_ldv(clean, SAMPLING_RATE, condition or simulator.DEFAULT_CONDITION, seed=simulator_seed)


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
            text=batch_texts, audio=list(clips[start : start + chunk]), sampling_rate=SAMPLING_RATE,
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


def spec_augment(features: torch.Tensor, frames: torch.Tensor, settings: MiniBaseSettings, generator: torch.Generator):
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


def collate_batch(data: EncodedClips, indices: list[int], pad_id: int) -> dict[str, torch.Tensor]:
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

