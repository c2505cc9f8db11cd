# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Training objectives: one row per objective in :data:`OBJECTIVES`, combined by name.

An ``objective=`` string names one or more rows joined by ``+`` (:func:`parse_objectives`); :func:`objective_loss`
computes a batch's loss from them, for the adapter Trainer
(:class:`~modeling_qwen2audio_ldv.training.trainer.DomainAdapterTrainer`) and the guide's plain loop alike.

- ``lm``: cross-entropy on the response (transcript) tokens, the whole model in the loop.
- ``distill``: paired data only. The adapter's output on the LDV clip is pulled towards the frozen tower's output
  on the paired microphone clip, over the valid frames (MSE and/or cosine). No LLM forward.
- ``lm+distill``: ``lm + distill_weight * distill``.

Each term is a sum normalised by a count (supervised tokens, valid frames). Inside a Trainer step the count is the
step's global one (over gradient-accumulation micro-batches and processes), so one process with batch B and N
processes with B / N each take the same step; without it (evaluation, the guide's loop) each batch is normalised
by its own count.

Adding an objective: a loss function with the signature of :func:`lm_loss`, a count function, and one row in
:data:`OBJECTIVES`. Every objective logs through the Trainer's ``loss`` (the weighted sum of its terms).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F

from ..audio_tower_qwen2audio_ldv import encode_audio, encode_audio_to_layer, pooled_lengths

DISTILL_LOSSES = ("mse", "cosine", "mse+cosine")


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, lengths: torch.Tensor, kind: str = "mse"
) -> torch.Tensor:
    """Feature-matching loss over valid frames.

    Args:
        student: adapter output on LDV audio ``(batch, frames, d_model)``.
        teacher: frozen tower output on the paired microphone audio, same shape.
        lengths: valid frames per clip ``(batch,)``; padded frames do not count.
        kind: ``mse`` (mean squared error per element), ``cosine`` (mean of ``1 - cos`` per frame) or both summed.
    """
    if kind not in DISTILL_LOSSES:
        raise ValueError(f"`distill_loss` ({kind!r}) must be one of {DISTILL_LOSSES}")
    frames = min(student.shape[1], teacher.shape[1])
    student, teacher = student[:, :frames].float(), teacher[:, :frames].float()
    mask = torch.arange(frames, device=student.device)[None, :] < lengths.to(student.device)[:, None]
    count = mask.sum().clamp_min(1)
    loss = student.new_zeros(())
    if "mse" in kind:
        loss = loss + ((student - teacher) ** 2).mean(-1)[mask].sum() / count
    if "cosine" in kind:
        loss = loss + (1 - F.cosine_similarity(student, teacher, dim=-1))[mask].sum() / count
    return loss


def _bare(module):
    return module


@dataclass(frozen=True)
class LossSettings:
    """What the objectives need besides the batch: their settings and the run's processes.

    Attributes:
        distill_weight: weight of ``distill`` when it follows another objective (``lm+distill``).
        distill_kind: ``mse``, ``cosine`` or ``mse+cosine`` (:func:`distillation_loss`).
        world_size: processes of the run; a training term normalised by a global count is multiplied by it, which
            undoes DDP's averaging of gradients over processes.
        unwrap: returns the bare model of a (DDP-)wrapped one (the Trainer's ``accelerator.unwrap_model``).
    """

    distill_weight: float = 1.0
    distill_kind: str = "mse"
    world_size: int = 1
    unwrap: Callable[[Any], Any] = _bare


class ObjectiveBatch:
    """One collated batch as the objectives read it.

    Attributes:
        inputs: the model's inputs (``labels`` included until the ``lm`` term takes them).
        extra: the paired clip's keys (``mic_*``, ``distill_*``), which the model's forward does not take.
        adapted: the adapter's output on the cached input features ``(hidden (batch, frames, d_model), lengths
            (batch,))`` once computed: the distillation student, and with ``lm`` in the same step the audio the LLM
            hears, so the adapter runs once per step.
    """

    def __init__(self, inputs: dict[str, Any]):
        self.inputs = dict(inputs)
        self.extra = {k: self.inputs.pop(k) for k in list(self.inputs) if k.startswith(("mic_", "distill_"))}
        self.adapted: tuple[torch.Tensor, torch.Tensor] | None = None

    def from_cache_with_teacher(self) -> bool:
        """Cached tower states for the input and the microphone teacher, routed to the active adapter."""
        return ("audio_encoder_hidden_states" in self.inputs and "mic_audio_encoder_hidden_states" in self.extra
                and self.inputs.get("audio_domain") is None)


def adapter_output(model, hidden: torch.Tensor, lengths: torch.Tensor, settings: LossSettings
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The active adapter on frozen-tower states (and, for an adapter inside the tower, the tower's remaining
    layers), through the (possibly DDP-wrapped) model's forward so that gradients are synchronised across
    processes. Returns the adapted tower output and its valid lengths."""
    unwrapped = settings.unwrap(model)
    output = model(audio_encoder_hidden_states=hidden.to(next(unwrapped.domain_adapter.parameters()).dtype),
                   audio_encoder_lengths=lengths)
    return output.hidden_states, output.output_lengths


def lm_loss(model, batch: ObjectiveBatch, settings: LossSettings, count: torch.Tensor | None, process_scale: int):
    """Summed token cross-entropy of the transcript over ``count`` (``None``: the batch's own supervised tokens).

    Returns ``(loss, model outputs)``.
    """
    inputs = batch.inputs
    labels = inputs.pop("labels")
    lm_inputs = inputs if batch.adapted is None else {**inputs, "audio_encoder_hidden_states": batch.adapted[0],
                                                      "audio_encoder_lengths": batch.adapted[1],
                                                      "audio_features_adapted": True}
    # the head (and its full-vocabulary float logits) only on positions whose next token is supervised: the
    # prompt and the audio run carry no labels
    supervised = labels[:, 1:] != -100
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = supervised
    outputs = model(**lm_inputs, logits_to_keep=keep)
    logits = outputs.logits.float()  # (supervised tokens, vocab), row-major like labels[:, 1:][supervised]
    targets = labels[:, 1:][supervised].to(logits.device)
    token_loss = F.cross_entropy(logits, targets, reduction="sum")
    if count is None:
        return token_loss / max(targets.numel(), 1), outputs
    return token_loss / count * process_scale, outputs


def distill_sum(model, batch: ObjectiveBatch, settings: LossSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed distillation loss over valid output frames, and their number. The student is ``batch.adapted`` when
    already computed from the cached features; the teacher is the frozen tower's output on the paired microphone
    clip, wherever the adapter sits."""
    unwrapped = settings.unwrap(model)
    inputs, extra = batch.inputs, batch.extra
    if "audio_encoder_hidden_states" in inputs and "mic_audio_encoder_hidden_states" in extra:
        student_in, lengths = inputs["audio_encoder_hidden_states"], inputs["audio_encoder_lengths"]
        teacher = extra["mic_audio_encoder_hidden_states"]
    elif "mic_input_features" in extra:
        tower = unwrapped.model.audio_tower
        trim = unwrapped.config.trim_audio_tower
        layer = unwrapped._cached_features_layer()
        with torch.no_grad():
            if layer is None:
                student_in, lengths = encode_audio(tower, inputs["input_features"],
                                                   inputs["feature_attention_mask"], trim=trim)
            else:  # the adapter's input inside the tower; the rest of the tower runs with the adapter
                student_in, lengths = encode_audio_to_layer(tower, inputs["input_features"],
                                                            inputs["feature_attention_mask"], layer, trim=trim)
            teacher, _ = encode_audio(tower, extra["mic_input_features"], extra["mic_feature_attention_mask"],
                                      trim=trim)
    else:
        raise ValueError("the distill objective needs paired data (a mic_audio column)")
    if batch.adapted is None:
        student, out_lengths = adapter_output(model, student_in, lengths, settings)
    else:
        student, out_lengths = batch.adapted
    frames = out_lengths.sum()
    return distillation_loss(student, teacher, out_lengths, settings.distill_kind) * frames, frames


def distill_loss(model, batch: ObjectiveBatch, settings: LossSettings, count: torch.Tensor | None,
                 process_scale: int):
    """The distillation term over ``count`` valid frames (``None``: the batch's own). Returns ``(loss, None)``."""
    summed, local_frames = distill_sum(model, batch, settings)
    if count is None:
        return summed / local_frames.clamp_min(1), None
    return summed / count.clamp_min(1) * process_scale, None


def supervised_tokens(batch: dict[str, Any], model=None) -> torch.Tensor:
    """Tokens of a collated batch whose next-token loss counts (``labels`` shifted by one, not -100)."""
    return (batch["labels"][..., 1:] != -100).sum()


def valid_frames(batch: dict[str, Any], inside_tower: bool = False) -> torch.Tensor:
    """Valid tower output frames per clip of a collated batch (cached or from audio): the frames distillation
    compares. ``inside_tower``: cached states of an adapter inside the tower (two per output frame)."""
    if "audio_encoder_lengths" in batch:
        lengths = batch["audio_encoder_lengths"]
        return pooled_lengths(lengths) if inside_tower else lengths
    mel = batch["feature_attention_mask"].sum(-1)
    return ((mel - 1) // 2 + 1 - 2) // 2 + 1


def valid_frame_total(batch: dict[str, Any], model) -> torch.Tensor:
    """All valid tower output frames of a collated batch for ``model`` (the bare model: where its active adapter
    sits says what cached states hold)."""
    return valid_frames(batch, model._cached_features_layer() is not None).sum()


def _one(settings: LossSettings) -> float:
    return 1.0


@dataclass(frozen=True)
class Objective:
    """One training objective.

    Attributes:
        name: its name in ``objective=`` (``--objective``).
        loss: ``(model, batch, settings, count, process_scale) -> (loss, model outputs or None)``; ``count`` is
            the step's global count of what the loss sums over, or ``None`` for the batch's own.
        count: ``(collated batch, bare model) -> count`` of what the loss sums over in the batch (supervised
            tokens, valid frames); the Trainer adds it up over a step's micro-batches and processes.
        weight: the term's weight when it follows another objective (``lm+distill``); the first term is taken
            as it is.
        needs_labels: the batches must carry ``labels`` (the transcript).
        needs_mic_clip: the rows must be paired with a microphone clip (``mic_audio``; ``mic_*`` batch keys).
        runs_llm: the loss runs the language model (a step without it costs a fraction of a full step).
        shares_adapter_output: the loss reads the adapter's output on the batch's own cached features; with an
            objective that runs the LLM in the same step the adapter runs once and the LLM hears that output.
    """

    name: str
    loss: Callable[..., tuple[torch.Tensor, Any]]
    count: Callable[[dict[str, Any], Any], torch.Tensor]
    weight: Callable[[LossSettings], float] = _one
    needs_labels: bool = False
    needs_mic_clip: bool = False
    runs_llm: bool = False
    shares_adapter_output: bool = False


LM, DISTILL = "lm", "distill"

#: Every objective, in the order a step adds up their terms.
OBJECTIVES: dict[str, Objective] = {
    LM: Objective(LM, lm_loss, supervised_tokens, needs_labels=True, runs_llm=True),
    DISTILL: Objective(DISTILL, distill_loss, valid_frame_total, weight=operator.attrgetter("distill_weight"),
                       needs_mic_clip=True, shares_adapter_output=True),
}

#: Every ``objective=`` name: each objective alone, then their combinations (``lm+distill``).
OBJECTIVE_NAMES: tuple[str, ...] = tuple(
    "+".join(parts) for size in range(1, len(OBJECTIVES) + 1) for parts in combinations(OBJECTIVES, size))


def parse_objectives(name: str) -> tuple[Objective, ...]:
    """``"lm+distill"`` -> the rows of :data:`OBJECTIVES` it names, in the order their terms add up.

    Raises:
        ValueError: a part that is not an objective, one named twice, or the parts out of :data:`OBJECTIVES`'
            order (``distill+lm``); the message names it.
    """
    parts = str(name).split("+")
    unknown = [part for part in parts if part not in OBJECTIVES]
    if unknown:
        raise ValueError(f"`objective` ({name!r}) names {', '.join(map(repr, unknown))}, not among the objectives "
                         f"{list(OBJECTIVES)}; use one of {OBJECTIVE_NAMES}")
    if name not in OBJECTIVE_NAMES:  # repeated or reordered parts
        raise ValueError(f"`objective` ({name!r}) must be one of {OBJECTIVE_NAMES}")
    return tuple(OBJECTIVES[part] for part in parts)


def needs_mic_clip(name: str) -> bool:
    """Whether the objective ``name`` needs each row paired with a microphone clip."""
    return any(objective.needs_mic_clip for objective in parse_objectives(name))


def warmup_objective(name: str) -> str | None:
    """What a warm-up trains on: the parts of ``name`` without an LLM pass, when ``name`` has parts with one too
    (``lm+distill`` -> ``distill``); ``None`` when a warm-up has nothing to leave out."""
    objectives = parse_objectives(name)
    cheap = [objective.name for objective in objectives if not objective.runs_llm]
    return "+".join(cheap) if cheap and len(cheap) < len(objectives) else None


def objective_loss(model, inputs: dict[str, Any], objectives: tuple[Objective, ...], settings: LossSettings, *,
                   training: bool, counts: dict[str, torch.Tensor | None] | None = None):
    """The loss of one collated batch: the objectives' terms, the first as it is, each later one weighted.

    Args:
        model: the model in the loop (possibly DDP-wrapped; ``settings.unwrap`` reaches the bare one).
        inputs: a collated batch (processor outputs or cached features, ``labels``, the paired ``mic_*`` keys).
        objectives: from :func:`parse_objectives`.
        settings: the objectives' settings.
        training: a training step: each term is normalised by ``counts[name]`` (the step's global count) when
            given, and scaled by ``settings.world_size``; otherwise by the batch's own count.
        counts: the step's global counts by objective name (``None`` or missing: the batch's own).

    Returns:
        ``(loss, model outputs of the LLM pass or None)``.
    """
    batch = ObjectiveBatch(inputs)
    # scale of a sum normalised by a global count: undo DDP's averaging over processes
    process_scale = settings.world_size if training else 1
    if (any(o.runs_llm for o in objectives) and any(o.shares_adapter_output for o in objectives)
            and batch.from_cache_with_teacher()):
        # From the feature cache the adapter runs once per step: its output is the distillation student and,
        # routed as "mic" (no second adapter pass), the audio the LLM hears. The same loss and gradients as two
        # passes (bit for bit without adapter dropout), at half the adapter's cost.
        batch.adapted = adapter_output(model, batch.inputs["audio_encoder_hidden_states"],
                                       batch.inputs["audio_encoder_lengths"], settings)
    loss, outputs = None, None
    for objective in objectives:
        count = (counts or {}).get(objective.name) if training else None
        term, term_outputs = objective.loss(model, batch, settings, count, process_scale)
        if term_outputs is not None:
            outputs = term_outputs
        loss = term if loss is None else loss + objective.weight(settings) * term
    return loss, outputs


__all__ = [
    "DISTILL",
    "DISTILL_LOSSES",
    "LM",
    "OBJECTIVES",
    "OBJECTIVE_NAMES",
    "LossSettings",
    "Objective",
    "ObjectiveBatch",
    "adapter_output",
    "distillation_loss",
    "needs_mic_clip",
    "objective_loss",
    "parse_objectives",
    "valid_frames",
    "warmup_objective",
]
