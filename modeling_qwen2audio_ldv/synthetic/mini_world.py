# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The mini base: a small stock Qwen2-Audio trained to transcribe synthetic microphone speech.

The real base (``Qwen/Qwen2-Audio-7B-Instruct``) is too large to run here, so the mini world ships a small model of
the *same classes* (``Qwen2AudioForConditionalGeneration``, ``Qwen2AudioProcessor``) that anyone can rebuild on a
laptop CPU::

    ldv-qwen2audio build-mini-base --output mini_base --seed 0 [--real-voice-set outputs/real_voices]

Steps of :func:`build_mini_base` (one function each below):

1. Texts: template texts from :func:`~modeling_qwen2audio_ldv.synthetic.texts.make_texts` (digit strings, short
   commands, status sentences), split into training and held-out texts (disjoint); then the real-voice set's text
   domain (:func:`~modeling_qwen2audio_ldv.data.real_voices.transcript_texts`: the transcripts of its Debian packages,
   never their recordings), each ``prompt_repeats`` times, and ``num_spans`` word spans of them
   (:func:`~modeling_qwen2audio_ldv.synthetic.texts.span_texts`). Each text gets a voice (eSpeak NG, or with
   probability ``natural_share`` a Flite/Festival voice built from a real speaker's recordings), a rate and a pitch.
2. A BPE tokenizer trained on the training texts and the chat prompt
   (:func:`~modeling_qwen2audio_ldv.testing.build_corpus_tokenizer`) and the stock processor; speech from
   :func:`~modeling_qwen2audio_ldv.synthetic.voices.synthesize_voice` in ``num_proc`` processes: training and
   held-out voices share no speaker (the held-out eSpeak voices are the validation and test voices of the default
   corpus, so the base has never heard the voices the adapter is evaluated on). Each training clip is augmented
   (speed, pitch, room, level, noise: :mod:`~modeling_qwen2audio_ldv.synthetic.augment`) or, with
   ``train_condition``, passes the LDV simulator; held-out clips a light microphone channel (gain and faint noise)
   and the simulator.
3. Features through the stock processor, computed once: the log-mel (an encoder that trains; SpecAugment-style
   masks on the fly) or the frozen pretrained encoder's outputs.
4. The model (Whisper-base's pretrained encoder, or a toy encoder trained from scratch, with a projector and a small
   Qwen2 decoder), trained with AdamW, linear warm-up then cosine decay; labels on the transcript tokens only.
5. Greedy ``generate`` on the held-out microphone clips and on their simulated LDV recordings under every preset
   (:data:`~modeling_qwen2audio_ldv.synthetic.simulator.DEFAULT_CONDITION` first): corpus-level CER and WER, per
   held-out voice too; with ``real_voice_set``, on the real-voice set's microphone and ``DEFAULT_CONDITION`` clips.
6. ``save_pretrained`` of model and processor, plus ``build_record.json`` and ``BUILD.md``
   (:mod:`~modeling_qwen2audio_ldv.synthetic.mini_base_report`).

The knobs are :class:`~modeling_qwen2audio_ldv.synthetic.mini_base_settings.MiniBaseSettings`; the speech and batch
helpers are in :mod:`~modeling_qwen2audio_ldv.synthetic.mini_base_data`.
"""

from __future__ import annotations

import dataclasses
import functools
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

from ..audio import SAMPLING_RATE
from ..configuration_qwen2audio_ldv import DomainAdapterConfig, Qwen2AudioLDVConfig
from ..data.collator import DEFAULT_INSTRUCTION, build_prompt
from ..data.real_voices import transcript_texts
from ..evaluation.scoring import compute_error_rates
from ..inference.generate import generate_transcripts
from ..modeling_qwen2audio_ldv import Qwen2AudioLDVForConditionalGeneration
from ..testing import build_char_tokenizer, build_corpus_tokenizer, build_processor
from . import simulator
from .mini_base_data import (
    EncodedClips,
    collate_batch,
    encode_clips,
    keyed_rng,
    microphone_channel,
    render_clean,
    render_heldout_ldv,
    render_train_clip,
    spec_augment,
    utterances,
)
from .mini_base_report import build_markdown
from .mini_base_settings import ENCODERS, SCRATCH_DEFAULTS, MiniBaseSettings, mini_config
from .corpus import ordered_map
from .texts import make_texts, span_texts

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Speech:
    """The build's clips (float32 ``(samples,)`` at 16 kHz) and their utterance rows."""

    train_rows: list[dict[str, Any]]  # the training rows whose clip fits the window
    clips: list[np.ndarray]  # their clips, emptied once the features are computed
    dropped: int  # training rows dropped for exceeding the window
    durations: np.ndarray  # seconds, per training clip
    heldout_rows: list[dict[str, Any]]
    heldout_clean: list[np.ndarray]  # the eSpeak clips, re-simulated under every preset
    heldout_mic: list[np.ndarray]
    heldout_ldv: list[np.ndarray]  # under DEFAULT_CONDITION
    heldout_long: int  # held-out clips longer than the window


@dataclasses.dataclass
class _Training:
    losses: list[float]
    batch_size: int
    steps_per_epoch: int
    first_epoch_loss: float
    seconds: float


@dataclasses.dataclass
class _Evaluation:
    mic_hyp: list[str]
    ldv_hyp: list[str]
    mic_scores: dict[str, float]
    ldv_scores: dict[str, float]
    preset_scores: dict[str, dict[str, float]]  # DEFAULT_CONDITION first, then every other preset
    voice_scores: dict[str, dict[str, float]]  # microphone CER/WER per held-out voice
    real_voices: dict[str, Any] | None = None  # the real-voice set's microphone and cardboard_box scores


def error_rates(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus-level CER and WER of the build's evaluation: ``scoring.compute_error_rates(language="en")``.

    The project's one metric (NFKC, lower case, punctuation removed, whitespace collapsed; the spaces between words
    count as characters), returned as plain floats: ``{"cer": float, "wer": float}`` (fractions, not percent).
    """
    result = compute_error_rates(list(predictions), list(references), language="en")
    return {"cer": float(result["cer"]), "wer": float(result["wer"])}


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
    """Synthesise the corpus, train the mini base, evaluate it and save it to ``output_dir``.

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
    started = time.perf_counter()
    settings = _resolve_settings(settings, seed, overrides)
    torch.set_num_threads(settings.num_threads)
    settings, encoder_state = _load_pretrained_encoder(settings)
    window_s = settings.max_source_positions * 2 * 160 / SAMPLING_RATE

    # 1. Texts and utterances: held-out texts and voices never occur in training.
    train_rows, heldout_rows = _utterance_rows(settings)
    # 2. Tokenizer and processor, then speech.
    tokenizer, processor, prompt = _tokenizer_and_processor(settings, train_rows)
    speech = _render_speech(settings, train_rows, heldout_rows, window_s)
    synth_s = time.perf_counter() - started
    logger.info("synthesised %d training clips (%.1f min, %d longer than the %.0f s window dropped) and %d held-out "
                "clips in %.0f s", len(speech.clips), speech.durations.sum() / 60, speech.dropped, window_s,
                len(heldout_rows), synth_s)

    # 4. Model (3. needs its tower).
    model, base_config, tower = _init_model(settings, tokenizer, encoder_state)
    # 3. Features, once: the log-mel (an encoder that trains; SpecAugment on the fly) or the frozen tower's outputs.
    encode_started = time.perf_counter()
    data = encode_clips(processor, prompt, speech.clips, [row["text"] for row in speech.train_rows], tower=tower)
    speech.clips = []
    encode_s = time.perf_counter() - encode_started
    logger.info("features of %d clips ready after %.0f s", len(data.input_ids), time.perf_counter() - started)
    _configure_generation(model, tokenizer, settings)
    num_parameters, audio_parameters = _parameter_counts(model)
    training = _train(model, data, tokenizer.pad_token_id, settings, tower)
    saved_dtype = torch.float16 if encoder_state is not None else torch.float32
    _round_to_saved_dtype(model, saved_dtype)
    encoder_sha256 = _state_sha256(model.model.audio_tower.state_dict(), saved_dtype)

    # 5. Evaluation on held-out voices and texts.
    evaluation = _evaluate(model, processor, settings, speech)
    model = _to_stock(model, base_config)
    wall_s = time.perf_counter() - started
    logger.info(
        "held-out microphone: CER %.2f%%  WER %.2f%%;  simulated LDV (%s): CER %.2f%%  WER %.2f%%;  wall %.1f min",
        100 * evaluation.mic_scores["cer"], 100 * evaluation.mic_scores["wer"], simulator.DEFAULT_CONDITION,
        100 * evaluation.ldv_scores["cer"], 100 * evaluation.ldv_scores["wer"], wall_s / 60,
    )

    # 6. The record, and the checkpoint.
    record = {
        "command": command if command is not None else " ".join(["ldv-qwen2audio", *sys.argv[1:]]),
        "seed": settings.seed,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()},
        "corpus": _corpus_record(settings, speech, window_s),
        "model": _model_record(settings, encoder_state is not None, encoder_sha256, saved_dtype, num_parameters,
                               audio_parameters, len(tokenizer)),
        "training": _training_record(settings, training, encode_s),
        "evaluation": _evaluation_record(evaluation, heldout_rows),
        "wall_seconds": round(wall_s, 1),
        "synthesis_seconds": round(synth_s, 1),
        "machine": _machine_record(settings),
    }
    if output_dir is not None:
        _save(Path(output_dir), model, saved_dtype, processor, settings, record)
    return record


def _resolve_settings(settings: MiniBaseSettings | None, seed: int, overrides: dict[str, Any]) -> MiniBaseSettings:
    """The build's settings (the scratch encoder's own defaults when asked for), checked before any work."""
    base = settings or MiniBaseSettings()
    if settings is None and overrides.get("encoder", base.encoder) == "scratch":
        base = dataclasses.replace(base, **SCRATCH_DEFAULTS)
    settings = dataclasses.replace(base, seed=seed, **overrides)
    if settings.encoder not in ENCODERS:
        raise ValueError(f"`encoder` must be one of {ENCODERS}, got {settings.encoder!r}")
    if settings.train_condition is not None:
        simulator.get_condition(settings.train_condition)  # an unknown preset or a bad JSON fails before any work
    if settings.train_encoder and settings.encoder != "whisper-base":
        raise ValueError("train_encoder applies to encoder='whisper-base' (the scratch encoder always trains)")
    from ..data.held_out import default_registry
    from .voices import voice_speaker

    # the real-voice set's speakers never train the base (the registry's speakers and registered manifests)
    default_registry().check_voices(settings.train_voices + settings.natural_voices)
    heard = {voice_speaker(v) for v in settings.train_voices + settings.natural_voices}
    shared = sorted(v for v in settings.heldout_voices if voice_speaker(v) in heard)
    if shared:
        raise ValueError(f"held-out voices {shared} share a speaker with `train_voices`/`natural_voices`: the held-out "
                         "voices must be speakers the base never heard")
    if not 0.0 <= settings.natural_share <= 1.0 or (settings.natural_share > 0 and not settings.natural_voices):
        raise ValueError(f"`natural_share` ({settings.natural_share}) must be in [0, 1], and needs `natural_voices`")
    return settings


def _load_pretrained_encoder(settings: MiniBaseSettings) -> tuple[MiniBaseSettings, dict[str, torch.Tensor] | None]:
    """Whisper-base's encoder weights (``None`` for the scratch encoder) and the settings with its sizes."""
    if settings.encoder != "whisper-base":
        return settings, None
    from .whisper_ct2 import load_whisper_base_encoder

    sizes, encoder_state = load_whisper_base_encoder()
    settings = dataclasses.replace(
        settings, audio_d_model=sizes["d_model"], audio_layers=sizes["encoder_layers"],
        audio_heads=sizes["encoder_attention_heads"], audio_ffn=sizes["encoder_ffn_dim"], audio_dropout=0.0,
        max_source_positions=sizes["max_source_positions"],
    )
    return settings, encoder_state


def _utterance_rows(settings: MiniBaseSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Step 1: the training and held-out utterance rows (disjoint texts and voices).

    Training texts: ``num_train`` template texts, then each transcript of the real-voice set's text domain
    ``prompt_repeats`` times, then ``num_spans`` word spans cut from those transcripts; held-out texts: the next
    ``num_heldout`` template texts (never a training text).
    """
    texts = make_texts(settings.num_train + settings.num_heldout, settings.seed, kinds=settings.kinds, language="en")
    train_texts, heldout_texts = texts[: settings.num_train], texts[settings.num_train :]
    if settings.prompt_repeats > 0 or settings.num_spans > 0:
        held = set(heldout_texts)
        domain = [text for text in transcript_texts() if text not in held]
        spans = span_texts(domain, settings.num_spans, settings.seed, exclude=set(domain) | held | set(train_texts))
        train_texts = train_texts + domain * settings.prompt_repeats + spans
    train_rows = utterances(train_texts, settings.train_voices, settings.seed, "train",
                            natural_voices=settings.natural_voices, natural_share=settings.natural_share)
    heldout_rows = utterances(heldout_texts, settings.heldout_voices, settings.seed, "heldout")
    return train_rows, heldout_rows


def _tokenizer_and_processor(settings: MiniBaseSettings, train_rows: list[dict[str, Any]]) -> tuple[Any, Any, str]:
    """Step 2a: a BPE vocabulary trained on the training texts and the chat prompt (held-out texts are not seen),
    the stock processor around it and the prompt; returns ``(tokenizer, processor, prompt)``."""
    prompt_words = build_prompt(build_processor(build_char_tokenizer(), settings.max_source_positions),
                                DEFAULT_INSTRUCTION)
    tokenizer = build_corpus_tokenizer([row["text"] for row in train_rows] + [prompt_words] * 20,
                                       settings.vocab_size)
    processor = build_processor(tokenizer, settings.max_source_positions)
    return tokenizer, processor, build_prompt(processor, DEFAULT_INSTRUCTION)


def _render_speech(settings: MiniBaseSettings, train_rows: list[dict[str, Any]], heldout_rows: list[dict[str, Any]],
                   window_s: float) -> _Speech:
    """Step 2b: the training clips (:func:`render_train_clip`: a microphone channel, augmented or not, or
    ``train_condition``'s LDV recordings; clips longer than the window dropped) and the held-out clips (microphone
    and simulated LDV of the same utterances)."""
    max_samples = int(window_s * SAMPLING_RATE)
    clips, kept_rows, dropped = [], [], 0
    render = functools.partial(render_train_clip, seed=settings.seed, augment=settings.augment,
                               condition=settings.train_condition)
    # worker processes from a fork server that imported this module once: they share no torch threads with this one
    for row, clip in zip(train_rows, ordered_map(render, train_rows, settings.num_proc, preload=__name__)):
        if clip.shape[0] > max_samples:
            dropped += 1
            continue
        clips.append(clip)
        kept_rows.append(row)
    heldout_clean = [render_clean(row) for row in heldout_rows]
    heldout_long = sum(clip.shape[0] > max_samples for clip in heldout_clean)
    heldout_mic = [
        microphone_channel(clean, keyed_rng(settings.seed, "mic", row["id"]), reverb=False)
        for clean, row in zip(heldout_clean, heldout_rows)
    ]
    heldout_ldv = [render_heldout_ldv(row, settings.seed, clean) for clean, row in zip(heldout_clean, heldout_rows)]
    durations = np.array([clip.shape[0] / SAMPLING_RATE for clip in clips])
    return _Speech(kept_rows, clips, dropped, durations, heldout_rows, heldout_clean, heldout_mic, heldout_ldv,
                   int(heldout_long))


def _init_model(settings: MiniBaseSettings, tokenizer: Any, encoder_state: dict[str, torch.Tensor] | None
                ) -> tuple[Any, Any, Any]:
    """Step 4a: the model, seeded; returns ``(model, stock config, frozen tower or None)``.

    Trained through the adapted class with no adapter: the same modules and weight names as the stock class, but
    the encoder runs on each batch's valid frames only (equal outputs, a fraction of the time). The weights are
    moved into the stock class for saving (:func:`_to_stock`).
    """
    torch.manual_seed(settings.seed)
    base_config = mini_config(tokenizer, settings)
    model = Qwen2AudioLDVForConditionalGeneration(
        Qwen2AudioLDVConfig.from_base_config(base_config, DomainAdapterConfig(adapter_type="none")))
    tower = None
    if encoder_state is not None:  # the pretrained encoder (its fp16 weights computed in float32)
        model.model.audio_tower.load_state_dict({k: v.float() for k, v in encoder_state.items()}, strict=True)
        if not settings.train_encoder:  # frozen: its outputs are cached
            tower = model.model.audio_tower.requires_grad_(False).eval()
    return model, base_config, tower


def _configure_generation(model: Any, tokenizer: Any, settings: MiniBaseSettings) -> None:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    model.generation_config.do_sample = False
    model.generation_config.max_new_tokens = settings.max_new_tokens


def _parameter_counts(model: Any) -> tuple[int, int]:
    """``(all parameters, audio tower parameters)``, logged."""
    num_parameters = sum(p.numel() for p in model.parameters())
    audio_parameters = sum(p.numel() for n, p in model.named_parameters() if "audio_tower." in n)
    logger.info("model: %.2fM parameters (audio tower %.2fM)", num_parameters / 1e6, audio_parameters / 1e6)
    return num_parameters, audio_parameters


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


def _optimizer(trainable: list[tuple[str, torch.nn.Parameter]], settings: MiniBaseSettings) -> torch.optim.AdamW:
    """AdamW over weight-decayed matrices and undecayed vectors/embeddings; each group's ``lr_scale`` multiplies the
    scheduled rate (the pretrained encoder, when it trains: whisper-base only, gets its own, lower peak rate)."""
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
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=settings.learning_rate, betas=(0.9, 0.98),
                             eps=1e-8)


def _train(model: Any, data: EncodedClips, pad_id: int, settings: MiniBaseSettings, tower: Any) -> _Training:
    """Step 4b: ``settings.steps`` optimiser steps over shuffled epochs of the encoded clips."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = _optimizer(trainable, settings)
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
        batch = collate_batch(data, indices, pad_id)
        if data.hidden is None:
            spec_augment(batch["input_features"], data.frames[indices], settings, generator)
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
    return _Training(losses, batch_size, steps_per_epoch, float(np.mean(losses[:steps_per_epoch])), train_s)


def _round_to_saved_dtype(model: Any, saved_dtype: torch.dtype) -> None:
    """Round every weight to the dtype it is saved in, so the evaluation scores exactly the saved weights."""
    if saved_dtype != torch.float32:  # Whisper's own fp16
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(parameter.to(saved_dtype).float())


def _evaluate(model: Any, processor: Any, settings: MiniBaseSettings, speech: _Speech) -> _Evaluation:
    """Step 5: greedy transcripts of the held-out microphone clips, then of the simulated LDV recordings of the same
    utterances under every preset (through the trimmed tower: the same outputs as the stock class, without encoding
    30 s of padding per clip), scored by :func:`error_rates`."""
    model.eval()
    references = [row["text"] for row in speech.heldout_rows]

    def transcribe(clips: list[np.ndarray]) -> list[str]:
        return generate_transcripts(model, processor, clips, DEFAULT_INSTRUCTION, settings.eval_batch_size,
                                    settings.max_new_tokens, progress=False)

    mic_hyp = transcribe(speech.heldout_mic)
    ldv_hyp = transcribe(speech.heldout_ldv)
    mic_scores, ldv_scores = error_rates(mic_hyp, references), error_rates(ldv_hyp, references)
    preset_scores = {simulator.DEFAULT_CONDITION: ldv_scores}
    for name in simulator.LDV_PRESETS:  # the same utterances and simulator seeds through every preset
        if name not in preset_scores:
            clips = [render_heldout_ldv(row, settings.seed, clean, name)
                     for clean, row in zip(speech.heldout_clean, speech.heldout_rows)]
            preset_scores[name] = error_rates(transcribe(clips), references)
    voice_scores = {}
    for voice in dict.fromkeys(row["voice"] for row in speech.heldout_rows):
        picked = [i for i, row in enumerate(speech.heldout_rows) if row["voice"] == voice]
        voice_scores[voice] = {**error_rates([mic_hyp[i] for i in picked], [references[i] for i in picked]),
                               "clips": len(picked)}
    real = _evaluate_real_voices(settings, transcribe) if settings.real_voice_set else None
    return _Evaluation(mic_hyp, ldv_hyp, mic_scores, ldv_scores, preset_scores, voice_scores, real)


#: The real-voice set's folders the build scores (microphone, and the default LDV preset).
REAL_VOICE_FOLDERS = ("mic", f"ldv/{simulator.DEFAULT_CONDITION}")


def _evaluate_real_voices(settings: MiniBaseSettings, transcribe: Any) -> dict[str, Any]:
    """Greedy transcripts of the real-voice set's microphone and ``DEFAULT_CONDITION`` folders, scored overall."""
    from ..data.real_voices import read_set_folder

    result: dict[str, Any] = {"set": str(settings.real_voice_set)}
    for folder in REAL_VOICE_FOLDERS:
        rows = read_set_folder(Path(settings.real_voice_set) / folder)
        hypotheses = transcribe([row["audio"] for row in rows])
        references = [row["text"] for row in rows]
        result[folder.split("/")[-1]] = {
            **error_rates(hypotheses, references), "clips": len(rows),
            "minutes": round(sum(row["audio"].shape[0] for row in rows) / SAMPLING_RATE / 60, 2),
            "examples": [{"prompt_id": row.get("prompt_id"), "text": ref, "hypothesis": hyp}
                         for row, ref, hyp in list(zip(rows, references, hypotheses))[:: max(1, len(rows) // 12)]],
        }
    logger.info("real-voice set: microphone CER %.2f%%, %s CER %.2f%%", 100 * result["mic"]["cer"],
                simulator.DEFAULT_CONDITION, 100 * result[simulator.DEFAULT_CONDITION]["cer"])
    return result


def _to_stock(model: Any, base_config: Any) -> Any:
    """The trained weights in the stock ``Qwen2AudioForConditionalGeneration`` (what ``mini_base/`` holds)."""
    from transformers import Qwen2AudioForConditionalGeneration

    stock = Qwen2AudioForConditionalGeneration(base_config)
    stock.load_state_dict(model.state_dict(), strict=True)  # identical keys: adapter_type "none" adds none
    stock.generation_config = model.generation_config
    return stock


def _state_sha256(state: dict[str, torch.Tensor], dtype: torch.dtype) -> str:
    """sha256 over a state dict's names and tensor bytes in ``dtype`` (sorted by name): a weights checksum."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().to(dtype).contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------
# Step 6: the build record and the checkpoint
# --------------------------------------------------------------------------------------------------------
def _encoder_origin(encoder: str) -> dict[str, Any] | None:
    if encoder != "whisper-base":
        return None
    from .whisper_ct2 import WHISPER_BASE_ORIGIN

    return dict(WHISPER_BASE_ORIGIN)


def _corpus_record(settings: MiniBaseSettings, speech: _Speech, window_s: float) -> dict[str, Any]:
    from .voices import parse_voice

    engines: dict[str, int] = {}
    for row in speech.train_rows:
        engine = parse_voice(row["voice"])[0]
        engines[engine] = engines.get(engine, 0) + 1
    domain = settings.prompt_repeats > 0 or settings.num_spans > 0
    if settings.augment:
        channel = ("synthetic.augment: speed 0.9-1.1 (all), pitch -2..+2 semitones (half), room RT60 0.15-0.6 s "
                   "(half), gain -12..0 dB, coloured noise at 10-40 dB SNR (half)")
    else:
        channel = "gain -6..0 dB, reverb on half (RT60 0.1-0.4 s), white noise 25-50 dB below speech"
    return {
        "synthesiser": "synthetic.voices.synthesize_voice (eSpeak NG; Flite, Festival and Piper voices by name)",
        "kinds": list(settings.kinds),
        "texts": "corpus.make_texts(num_train + num_heldout, seed, kinds): first num_train train, rest held out"
                 + ("; then every transcript of data.real_voices.transcript_texts (the real-voice set's packages; "
                    "held-out texts removed) prompt_repeats times, and num_spans texts.span_texts of them"
                    if domain else ""),
        "transcript_texts": len(transcript_texts()) if domain else 0,
        "train_voices": list(settings.train_voices),
        "natural_voices": list(settings.natural_voices),
        "train_clips_by_engine": engines,
        "heldout_voices": list(settings.heldout_voices),
        "train_clips": len(speech.train_rows),
        "train_clips_dropped_longer_than_window": speech.dropped,
        "train_audio_minutes": round(float(speech.durations.sum()) / 60, 2),
        "train_clip_seconds_max": round(float(speech.durations.max()), 3),
        "heldout_clips": len(speech.heldout_rows),
        "heldout_clips_longer_than_window": int(speech.heldout_long),
        "window_seconds": window_s,
        "train_channel": channel,
        "heldout_channel": "gain -6..0 dB, white noise 35-55 dB below speech",
        "ldv_condition": simulator.DEFAULT_CONDITION,
    }


def _model_record(settings: MiniBaseSettings, pretrained: bool, encoder_sha256: str, saved_dtype: torch.dtype,
                  num_parameters: int, audio_parameters: int, vocab: int) -> dict[str, Any]:
    return {
        "encoder": settings.encoder,
        "encoder_frozen": pretrained and not settings.train_encoder,
        "encoder_origin": _encoder_origin(settings.encoder),
        "audio_tower_sha256": encoder_sha256,
        "saved_dtype": str(saved_dtype).replace("torch.", ""),
        "parameters": num_parameters,
        "audio_tower_parameters": audio_parameters,
        "audio": {"d_model": settings.audio_d_model, "layers": settings.audio_layers, "heads": settings.audio_heads,
                  "ffn": settings.audio_ffn, "max_source_positions": settings.max_source_positions},
        "text": {"hidden": settings.text_hidden, "layers": settings.text_layers, "heads": settings.text_heads,
                 "kv_heads": settings.text_kv_heads, "ffn": settings.text_ffn, "vocab": vocab},
        "tokenizer": "BPE trained with tokenizers on the training texts and the chat prompt "
                     "(testing.build_corpus_tokenizer): Metaspace words, newlines isolated, printable ASCII "
                     "alphabet, Qwen2-Audio specials",
    }


def _training_record(settings: MiniBaseSettings, training: _Training, encode_s: float) -> dict[str, Any]:
    losses = training.losses
    return {
        "steps": settings.steps,
        "batch_size": training.batch_size,
        "steps_per_epoch": training.steps_per_epoch,
        "first_epoch_loss": training.first_epoch_loss,
        "final_loss_mean_last_50": float(np.mean(losses[-50:])),
        "losses_every_50": [round(float(np.mean(losses[i : i + 50])), 4) for i in range(0, len(losses), 50)],
        "train_seconds": round(training.seconds, 1),
        "encode_seconds": round(encode_s, 1),
    }


def _evaluation_record(evaluation: _Evaluation, heldout_rows: list[dict[str, Any]]) -> dict[str, Any]:
    mic_scores, ldv_scores = evaluation.mic_scores, evaluation.ldv_scores
    return {
        "heldout_microphone": {"cer": mic_scores["cer"], "wer": mic_scores["wer"]},
        "heldout_ldv": {"cer": ldv_scores["cer"], "wer": ldv_scores["wer"], "condition": simulator.DEFAULT_CONDITION},
        "heldout_ldv_presets": {name: {"cer": v["cer"], "wer": v["wer"]}
                                for name, v in evaluation.preset_scores.items()},
        "heldout_microphone_by_voice": evaluation.voice_scores,
        "real_voices": evaluation.real_voices,
        "decoding": "greedy generate, prompt-only inputs, left padding",
        "examples": [
            {**row, "microphone": mic, "ldv": ldv}
            for row, mic, ldv in zip(heldout_rows[:20], evaluation.mic_hyp[:20], evaluation.ldv_hyp[:20])
        ],
    }


def _machine_record(settings: MiniBaseSettings) -> dict[str, Any]:
    return {
        "torch_threads": settings.num_threads,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }


def _save(output: Path, model: Any, saved_dtype: torch.dtype, processor: Any, settings: MiniBaseSettings,
          record: dict[str, Any]) -> None:
    """``save_pretrained`` of the stock model (in ``saved_dtype``) and the processor, plus the build record."""
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
    (output / "BUILD.md").write_text(build_markdown(record))
    logger.info("saved the mini base to %s", output)
