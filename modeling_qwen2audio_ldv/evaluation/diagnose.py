# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Is the adapter set up to learn? The original guide's checks ("調試和優化"; see README), run in one go.

:func:`diagnose` checks, in order:

1. trainable parameters: which tensors have ``requires_grad``, their shapes and counts (none at all, e.g. a
   frozen adapter, is a failure; trainable base parameters are a warning);
2. shapes through the adapter: input shape == output shape, on the guide's synthetic ``(1, 187, d_model)`` and on
   the tower features of a real (or synthetic) clip;
3. one backward pass of the language-model loss on one example, with each trainable parameter's gradient norm
   (no gradient anywhere, or a NaN/Inf loss or gradient, is a failure);
4. ``scale`` and the gate's mean/std against the guide's healthy 0.3-0.7 (outside is a warning);
5. with paired data: the mean squared distance between the tower features of the microphone clip and of the LDV
   clip over their valid frames, before and after the adapter (the distance the ``distill`` objective reduces).

A fresh ``zero_init`` adapter is expected to show zero gradients on most tensors at step 0: only the output
LayerNorm (transformer) or the up-projection (mlp) receives gradient until it moves away from zero. That is
reported as a note; with ``scale_init=0`` as well, nothing can ever move, which is a failure.

Command line: ``ldv-qwen2audio diagnose --model outputs/run/adapter --data my_clips/ --mic-audio-column mic``
(exit code 1 when a check fails).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..audio import SAMPLING_RATE, audio_to_array
from ..audio_tower_qwen2audio_ldv import encode_audio
from .explain import HEALTHY_GATE_RANGE, gate_verdict

logger = logging.getLogger(__name__)

#: The guide's shape check: a 7.5 s clip's encoder output, ``(1, 187, d_model)``.
GUIDE_FRAMES = 187
#: Transcript of the synthetic example.
SYNTHETIC_TEXT = "hello world"


@dataclasses.dataclass
class ParameterInfo:
    """One trainable tensor."""

    name: str
    shape: tuple[int, ...]
    numel: int
    grad_norm: float | None = None  #: ``None`` when the backward pass gave it no gradient (or did not run)


@dataclasses.dataclass
class DiagnosisReport:
    """What :func:`diagnose` found. ``ok`` is ``True`` when ``problems`` is empty."""

    adapter_type: str | None = None
    num_parameters: int = 0
    trainable: list[ParameterInfo] = dataclasses.field(default_factory=list)
    shape_checks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    example: str = ""
    loss: float | None = None
    scale: float | None = None
    gate_mean: float | None = None
    gate_std: float | None = None
    gate_verdict: str = ""
    feature_distance: dict[str, Any] | None = None
    problems: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No check failed."""
        return not self.problems

    @property
    def num_trainable(self) -> int:
        return sum(p.numel for p in self.trainable)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["ok"] = self.ok
        values["num_trainable"] = self.num_trainable
        return values

    def summary(self) -> str:
        """The report as text (what the CLI prints)."""
        share = 100.0 * self.num_trainable / max(self.num_parameters, 1)
        lines = [f"adapter: {self.adapter_type or 'none'}",
                 f"trainable parameters: {len(self.trainable)} tensors, {self.num_trainable:,} of "
                 f"{self.num_parameters:,} parameters ({share:.4f}%)"]
        width = max([len(p.name) for p in self.trainable] + [10])
        for p in self.trainable:
            grad = "no gradient" if p.grad_norm is None else f"grad_norm {p.grad_norm:.4e}"
            lines.append(f"  {p.name:<{width}}  {str(p.shape):<16} {p.numel:>12,}  {grad}")
        for check in self.shape_checks:
            status = "OK" if check["ok"] else "MISMATCH"
            lines.append(f"shape ({check['source']}): {tuple(check['input'])} -> {tuple(check['output'])} {status}")
        if self.loss is not None:
            lines.append(f"LM loss ({self.example}): {self.loss:.4f}")
        if self.scale is not None:
            lines.append(f"scale: {self.scale:.4f}")
        if self.gate_mean is not None:
            low, high = HEALTHY_GATE_RANGE
            lines.append(f"gate: mean {self.gate_mean:.3f}, std {self.gate_std:.3f} (healthy mean {low}-{high})")
        if self.gate_verdict:
            lines.append(f"gate verdict: {self.gate_verdict}")
        if self.feature_distance:
            d = self.feature_distance
            lines.append(f"mic-vs-LDV feature distance (MSE over valid frames, {d['pairs']} pair(s), {d['frames']} "
                         f"frames): before the adapter {d['before']:.6f}, after {d['after']:.6f} "
                         f"({d['relative_change'] * 100:+.2f}%)")
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"warning: {warning}" for warning in self.warnings]
        lines += [f"PROBLEM: {problem}" for problem in self.problems]
        lines.append("result: OK" if self.ok else f"result: FAILED ({len(self.problems)} problem(s))")
        return "\n".join(lines)


def synthetic_example(processor: Any, seconds: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """A seeded voiced-like clip (harmonics of 140 Hz under a syllable envelope) with a short transcript.

    Only for the gradient check: it exercises the code path, it says nothing about accuracy.
    """
    window = processor.feature_extractor.n_samples / SAMPLING_RATE
    samples = int(min(seconds, window) * SAMPLING_RATE)
    t = np.arange(samples) / SAMPLING_RATE
    rng = np.random.default_rng(seed)
    voiced = sum(np.sin(2 * np.pi * 140.0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 12))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t))
    audio = 0.2 * envelope * voiced / 3.0 + 0.005 * rng.standard_normal(samples)
    return {"audio": audio.astype(np.float32), "text": SYNTHETIC_TEXT}


def _tower(model: Any, processor: Any, clips: Sequence[np.ndarray], adapter_input: bool = False
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Tower features ``(len(clips), frames, d_model)`` and the valid mask ``(len(clips), frames)``: the tower's
    output, or with ``adapter_input`` the states the active adapter reads (inside the tower for ``encoder_layer``)."""
    features = processor.feature_extractor(list(clips), sampling_rate=SAMPLING_RATE, return_attention_mask=True,
                                           padding="max_length", return_tensors="pt")
    if adapter_input:
        hidden, lengths = model.domain_adapter_inputs(features["input_features"], features["attention_mask"])
    else:
        tower = model.model.audio_tower
        device = next(tower.parameters()).device
        with torch.no_grad():
            hidden, lengths = encode_audio(tower, features["input_features"].to(device),
                                           features["attention_mask"].to(device), trim=model.config.trim_audio_tower)
    valid = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths.to(hidden.device)[:, None]
    return hidden, valid


def _check_trainable(model: Any, report: DiagnosisReport) -> list[tuple[str, torch.nn.Parameter]]:
    named = list(model.named_parameters())
    report.num_parameters = sum(p.numel() for _, p in named)
    trainable = [(n, p) for n, p in named if p.requires_grad]
    report.trainable = [ParameterInfo(n, tuple(p.shape), p.numel()) for n, p in trainable]
    if not trainable:
        report.problems.append(
            "no trainable parameters: every parameter has requires_grad=False (a frozen adapter?). Call "
            "model.freeze_base_model(), which makes exactly the adapter's `domain_adapter.*` parameters trainable")
    outside = [n for n, _ in trainable if not n.startswith(model.active_adapter_prefix())]
    if outside:
        report.warnings.append(f"{len(outside)} trainable tensors outside the adapter (e.g. {outside[0]}): the base "
                               "model is not frozen; call model.freeze_base_model()")
    bad = [n for n, p in named if n.startswith(model.active_adapter_prefix()) and not torch.isfinite(p).all()]
    if bad:
        report.problems.append(f"NaN/Inf in adapter weights: {bad}")
    return trainable


def _check_shapes(model: Any, hidden: torch.Tensor, valid: torch.Tensor, report: DiagnosisReport) -> None:
    adapter = model.domain_adapter
    reference = adapter.scale
    synthetic = torch.randn(1, GUIDE_FRAMES, hidden.shape[-1], generator=torch.Generator().manual_seed(0))
    cases = [("synthetic features, as in the guide", synthetic.to(reference.device, hidden.dtype), None),
             ("tower features of the example", hidden, valid)]
    for source, features, mask in cases:
        with torch.no_grad():
            output = adapter(features, mask)
        ok = tuple(output.shape) == tuple(features.shape)
        report.shape_checks.append({"source": source, "input": list(features.shape), "output": list(output.shape),
                                    "ok": ok})
        if not ok:
            report.problems.append(f"adapter output shape {tuple(output.shape)} differs from its input shape "
                                   f"{tuple(features.shape)} ({source})")
        if not torch.isfinite(output).all():
            report.problems.append(f"NaN/Inf in the adapter's output ({source})")


def _check_gradients(model: Any, processor: Any, example: Mapping[str, Any], instruction: str,
                     trainable: list[tuple[str, torch.nn.Parameter]], report: DiagnosisReport) -> None:
    from ..data.collator import DataCollatorForQwen2AudioLDV

    batch = DataCollatorForQwen2AudioLDV(processor=processor, instruction=instruction, mode="train")(
        [{"audio": example["audio"], "text": example["text"]}])
    device = next(model.parameters()).device
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    saved_grads = [p.grad for _, p in trainable]
    for _, p in trainable:
        p.grad = None
    was_training = model.training
    model.train()
    try:
        with torch.enable_grad():
            loss = model(**batch).loss
            report.loss = float(loss.detach().float())
            if not math.isfinite(report.loss):
                report.problems.append(f"the LM loss is {report.loss} (NaN/Inf) on {report.example}")
            else:
                loss.backward()
        norms = {n: (None if p.grad is None else float(p.grad.detach().float().norm())) for n, p in trainable}
    finally:
        model.train(was_training)
        for (_, p), grad in zip(trainable, saved_grads):
            p.grad = grad
    for info in report.trainable:
        info.grad_norm = norms.get(info.name)
    if not math.isfinite(report.loss):
        return
    values = [v for v in norms.values() if v is not None]
    non_finite = [n for n, v in norms.items() if v is not None and not math.isfinite(v)]
    if non_finite:
        report.problems.append(f"NaN/Inf gradients in {non_finite}")
    elif not values or max(values) == 0.0:
        hint = ""
        adapter = model.domain_adapter
        if adapter is not None and adapter.config.zero_init and float(adapter.scale.detach().abs().max()) == 0.0:
            hint = (": the adapter is zero-initialised AND scale is 0, so neither can ever move; set "
                    "--scale_init to a non-zero value (0.1 is the default)")
        report.problems.append("zero gradients: the backward pass put no gradient on any trainable parameter" + hint)
    else:
        silent = [n for n, v in norms.items() if not v]
        if silent:
            note = f"{len(silent)} of {len(norms)} trainable tensors got no or zero gradient"
            adapter = model.domain_adapter
            if adapter is not None and adapter.config.zero_init:
                note += (" (expected at step 0 of a zero_init adapter: only the zeroed output layer gets gradient "
                         "until it moves away from zero)")
            report.notes.append(note)


def _check_gate(model: Any, hidden: torch.Tensor, valid: torch.Tensor, report: DiagnosisReport) -> None:
    adapter = model.domain_adapter
    report.scale = float(adapter.scale.detach().float().reshape(-1)[0])
    if not math.isfinite(report.scale):
        report.problems.append(f"scale is {report.scale}")
    elif abs(report.scale) < 1e-3:
        report.warnings.append(f"scale is {report.scale:.2e}: the adapter's correction is switched off; if the loss "
                               "does not fall see FAQ Q1 (--scale_init, --scale_learning_rate)")
    with torch.no_grad():
        details = adapter(hidden, valid, output_gate=True)
    if details.gate is None:
        report.gate_verdict = gate_verdict(None)
        return
    gate = details.gate[valid[:, : details.gate.shape[1]]].float()
    report.gate_mean, report.gate_std = float(gate.mean()), float(gate.std(unbiased=False))
    report.gate_verdict = gate_verdict(report.gate_mean)
    low, high = HEALTHY_GATE_RANGE
    if not math.isfinite(report.gate_mean):
        report.problems.append("the gate is NaN/Inf")
    elif not low <= report.gate_mean <= high:
        report.warnings.append(f"gate mean {report.gate_mean:.3f} is outside the guide's healthy {low}-{high}")


def feature_distance(model: Any, processor: Any, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Mean squared distance between mic and LDV tower features over valid frames, before and after the adapter.

    Args:
        model: the adapted model (its active adapter is applied to the LDV features).
        processor: its processor.
        pairs: ``(mic, ldv)`` clips of the same utterance, mono ``float32`` at
            :data:`~modeling_qwen2audio_ldv.audio.SAMPLING_RATE`.

    Returns:
        ``before``, ``after`` (mean over the frames both clips have and over channels), ``relative_change``
        (``after / before - 1``), ``pairs`` and ``frames``.
    """
    if not pairs:
        raise ValueError("feature_distance needs at least one (mic, ldv) pair")
    before_sum = after_sum = 0.0
    count = 0
    adapter = model.domain_adapter
    inside = adapter.config.encoder_layer is not None
    for mic, ldv in pairs:
        hidden, valid = _tower(model, processor, [mic, ldv])
        with torch.no_grad():
            if inside:  # the adapted tower output: the adapter between the tower's layers, the mic row bypassed
                features = processor.feature_extractor([mic, ldv], sampling_rate=SAMPLING_RATE,
                                                       return_attention_mask=True, padding="max_length",
                                                       return_tensors="pt")
                adapted = model(input_features=features["input_features"].to(hidden.device),
                                feature_attention_mask=features["attention_mask"].to(hidden.device),
                                audio_domain=["mic", "ldv"]).hidden_states[1:]
            else:
                adapted = adapter(hidden[1:], valid[1:])
        frames = int(min(valid[0].sum(), valid[1].sum()))
        mic_features, ldv_features = hidden[0, :frames].float(), hidden[1, :frames].float()
        before_sum += float((mic_features - ldv_features).pow(2).sum())
        after_sum += float((mic_features - adapted[0, :frames].float()).pow(2).sum())
        count += frames * hidden.shape[-1]
    before, after = before_sum / max(count, 1), after_sum / max(count, 1)
    return {"before": before, "after": after, "relative_change": after / before - 1.0 if before > 0 else 0.0,
            "pairs": len(pairs), "frames": count // hidden.shape[-1]}


def diagnose(
    model: Any,
    processor: Any,
    examples: Sequence[Mapping[str, Any]] | None = None,
    instruction: str | None = None,
    max_pairs: int = 8,
) -> DiagnosisReport:
    """Run the guide's checks on ``model`` as it is (nothing is frozen or unfrozen; gradients are restored).

    Args:
        model: a ``Qwen2AudioLDVForConditionalGeneration``.
        processor: its ``Qwen2AudioProcessor``.
        examples: rows with ``audio`` (decoded datasets audio or a 1-D float array at the model's rate), ``text`` and
            optionally ``mic_audio`` (paired microphone clip). The first row that fits the encoder window is the
            LM example; rows with ``mic_audio`` (up to ``max_pairs``) give the feature distance. ``None`` or no
            usable row: a synthetic clip (:func:`synthetic_example`).
        instruction: the prompt's instruction (default:
            :data:`~modeling_qwen2audio_ldv.data.collator.DEFAULT_INSTRUCTION`).
        max_pairs: most mic/LDV pairs for the feature distance.

    Returns:
        A :class:`DiagnosisReport`; ``report.ok`` is ``False`` and ``report.problems`` says why when a check fails.
    """
    from ..data.collator import DEFAULT_INSTRUCTION

    report = DiagnosisReport()
    adapter = model.domain_adapter
    report.adapter_type = None if adapter is None else adapter.config.adapter_type
    trainable = _check_trainable(model, report)
    if adapter is None:
        report.problems.append("the model has no domain adapter (adapter_type 'none'): there is nothing to train")
        return report
    if adapter.config.adapter_type == "lora":
        raise ValueError("diagnose checks an adapter's own output (scale, gate, correction); a lora adapter changes "
                         "the audio tower's projections and has none: not supported")

    window = int(processor.feature_extractor.n_samples)
    example, pairs = None, []
    for index, row in enumerate(examples or []):
        where = f"example {index}"
        ldv = audio_to_array(row["audio"], SAMPLING_RATE, f"audio of {where}")
        if example is None and ldv.shape[0] <= window and isinstance(row.get("text"), str) and row["text"].strip():
            example = {"audio": ldv, "text": row["text"]}
            report.example = f"{where} of the data"
        if row.get("mic_audio") is not None and len(pairs) < max_pairs:
            pairs.append((audio_to_array(row["mic_audio"], SAMPLING_RATE, f"mic_audio of {where}")[:window],
                          ldv[:window]))
    if example is None:
        if examples:
            report.notes.append("no row of the data fits the encoder window with a transcript: using a synthetic clip")
        example = synthetic_example(processor)
        report.example = "a synthetic clip"

    hidden, valid = _tower(model, processor, [example["audio"]], adapter_input=True)
    hidden = hidden.to(adapter.scale.dtype)
    was_training = model.training
    model.eval()
    try:
        _check_shapes(model, hidden, valid, report)
        _check_gate(model, hidden, valid, report)
        if pairs:
            report.feature_distance = feature_distance(model, processor, pairs)
            if report.feature_distance["relative_change"] > 0:
                report.warnings.append("the adapter moves LDV features away from the paired microphone features "
                                       "(expected only early in training; else see --objective lm+distill)")
        else:
            report.notes.append("no paired microphone audio: mic-vs-LDV feature distance not computed "
                                "(pass data with a mic_audio column)")
    finally:
        model.train(was_training)
    if trainable:
        _check_gradients(model, processor, example, instruction or DEFAULT_INSTRUCTION, trainable, report)
    else:
        report.notes.append("backward pass skipped: no trainable parameters")
    for problem in report.problems:
        logger.error("%s", problem)
    return report


__all__ = ["DiagnosisReport", "ParameterInfo", "diagnose", "feature_distance", "synthetic_example"]
