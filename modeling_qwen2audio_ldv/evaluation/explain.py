# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""What a trained domain adapter does to one clip: attention maps, gate over time, and a short verdict.

The original guide's checks ("調試和優化", FAQ Q2; see README, "Diagnose and explain an adapter") read the gate's
mean as a health check: about 0.3-0.7 means the adapter corrects some frames and channels and leaves others alone;
near 0 it barely acts, near 1 it corrects everything (microphone accuracy may drop). :func:`explain` runs the clip
through the frozen audio tower and the active adapter and writes:

- ``attention_layer{N}.png`` (transformer adapters): one map per head plus the mean over heads, query frame
  against key frame, over the clip's valid encoder frames (40 ms each);
- ``gate_over_time.png``: the input spectrogram, the gate per channel and the gate's mean per frame, aligned in
  time (:func:`~modeling_qwen2audio_ldv.evaluation.plots.plot_gate_over_time`);
- ``summary.txt``: ``scale``, the gate's mean and standard deviation, the healthy range and a verdict, and the
  size of the correction relative to the features.

Command line: ``ldv-qwen2audio explain clip.wav --model user/qwen2-audio-ldv-window --output explain_clip``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import SAMPLING_RATE, load_audio
from .plots import ENCODER_FRAME_SECONDS, new_figure, plot_gate_over_time, save_figure

logger = logging.getLogger(__name__)

#: The gate-mean range the original guide calls healthy (its FAQ Q2: "應該在 0.3-0.7 之間"; see README).
HEALTHY_GATE_RANGE: tuple[float, float] = (0.3, 0.7)


def gate_verdict(gate_mean: float | None) -> str:
    """One line on the gate's mean against :data:`HEALTHY_GATE_RANGE`, with the guide's remedy when outside."""
    low, high = HEALTHY_GATE_RANGE
    if gate_mean is None:
        return "no gate (use_gate=False): every valid frame receives the full scale * delta correction"
    if not math.isfinite(gate_mean):
        return "broken: the gate is NaN/Inf (check the adapter weights and the input features)"
    if gate_mean < low:
        return (f"low: below {low}, the gate mostly closes and the adapter barely changes the features; if LDV "
                "accuracy does not improve, see FAQ Q1 (--scale_learning_rate, --scale_init, --learning_rate)")
    if gate_mean > high:
        return (f"high: above {high}, the gate is open almost everywhere and nearly every frame is corrected; if "
                "microphone accuracy drops, see FAQ Q2 (lower --scale_init, --objective lm+distill, mic rows)")
    return f"healthy: within the guide's {low}-{high}"


def _fit_window(audio: np.ndarray, processor: Any) -> np.ndarray:
    """The clip cut to the feature extractor's window (30 s for Qwen2-Audio), with a warning when it was longer."""
    window = int(processor.feature_extractor.n_samples)
    if audio.shape[0] > window:
        logger.warning("the clip is %.2f s, longer than the encoder's %.2f s window: explaining the first %.2f s",
                       audio.shape[0] / SAMPLING_RATE, window / SAMPLING_RATE, window / SAMPLING_RATE)
        return audio[:window]
    return audio


@torch.no_grad()
def adapter_details(model: Any, processor: Any, audio: np.ndarray):
    """The active adapter's input for one clip (the tower's output, or its states after ``encoder_layer`` layers for
    an adapter inside the tower) and the adapter's output with attention maps and gate.

    Returns:
        ``(hidden, valid, details)``: adapter input ``(1, frames, d_model)``, valid mask ``(1, frames)`` and the
        adapter's ``DomainAdapterOutput`` (``attentions``: per layer ``(1, heads, n, n)`` over the ``n`` valid
        frames; ``gate``: ``(1, n, d_model)`` or ``None``).
    """
    if model.domain_adapter is None:
        raise ValueError("the model has no domain adapter (adapter_type 'none'): nothing to explain")
    features = processor.feature_extractor([audio], sampling_rate=SAMPLING_RATE, return_attention_mask=True,
                                           padding="max_length", return_tensors="pt")
    hidden, lengths = model.domain_adapter_inputs(features["input_features"], features["attention_mask"])
    valid = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths.to(hidden.device)[:, None]
    details = model.domain_adapter(hidden, valid, output_attentions=True, output_gate=True)
    return hidden, valid, details


def plot_attention_maps(attention: np.ndarray, path: str | os.PathLike, layer: int, title: str = "") -> Path:
    """One layer's attention: a panel per head and the mean over heads.

    Args:
        attention: ``(heads, frames, frames)`` weights (rows: query frame, columns: key frame), valid frames only.
        path: PNG file to write (parent folders are created).
        layer: the layer's index, for the titles.
        title: figure title.
    """
    attention = np.asarray(attention, dtype=np.float64)
    if attention.ndim != 3 or attention.shape[1] != attention.shape[2] or attention.shape[1] == 0:
        raise ValueError(f"`attention` must be (heads, frames, frames), got shape {attention.shape}")
    panels = [(f"layer {layer}, mean over heads", attention.mean(axis=0))]
    panels += [(f"head {head}", attention[head]) for head in range(attention.shape[0])]
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure((3.4 * ncols, 3.2 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    seconds = attention.shape[1] * ENCODER_FRAME_SECONDS
    vmax = max(float(attention.max()), 1e-12)  # one colour scale for every panel
    image = None
    for ax, (label, weights) in zip(axes.flat, panels):
        image = ax.imshow(weights, origin="lower", aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax,
                          extent=(0.0, seconds, 0.0, seconds))
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("key time (s)", fontsize=8)
        ax.set_ylabel("query time (s)", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes, label="attention weight", shrink=0.8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def _summary_text(info: dict[str, Any]) -> str:
    low, high = HEALTHY_GATE_RANGE
    lines = [
        f"adapter: {info['adapter']}, {info['num_parameters']:,} parameters",
        f"clip: {info['seconds']:.2f} s, {info['frames']} encoder frames of {ENCODER_FRAME_SECONDS * 1000:.0f} ms",
        f"scale: {info['scale']:.4f}",
    ]
    if info["gate_mean"] is None:
        lines.append("gate: none")
    else:
        lines.append(f"gate: mean {info['gate_mean']:.3f}, std {info['gate_std']:.3f} "
                     f"(healthy mean {low}-{high}, from the usage guide)")
    lines.append(f"verdict: {info['verdict']}")
    lines.append(f"correction: {100 * info['correction_ratio']:.2f}% of the features' RMS "
                 "(RMS of adapted - input over RMS of input, valid frames)")
    if not info["attention_files"]:
        lines.append("attention maps: none (this adapter has no self-attention)")
    lines.append("files: " + ", ".join(Path(f).name for f in info["files"]))
    return "\n".join(lines)


def _write_attention_maps(details: Any, frames: int, output_dir: Path, title: str) -> list[str]:
    """``attention_layer{N}.png`` for each layer that returned attention weights, over the ``frames`` valid frames."""
    files = []
    for layer, weights in enumerate(details.attentions or ()):
        if weights is None:
            continue
        path = plot_attention_maps(weights[0, :, :frames, :frames].float().cpu().numpy(),
                                   output_dir / f"attention_layer{layer}.png", layer, title)
        files.append(str(path))
    return files


def _describe_adapter(config: Any) -> str:
    """``"transformer, 2 layer(s) x 4 heads, ff 32"`` (or the type alone for other adapters)."""
    description = config.adapter_type
    if config.adapter_type == "transformer":
        description += f", {config.num_layers} layer(s) x {config.num_heads} heads, ff {config.ff_dim}"
    return description


def explain(
    model: Any,
    processor: Any,
    audio: np.ndarray | str | os.PathLike,
    output_dir: str | os.PathLike,
    title: str = "",
) -> dict[str, Any]:
    """Explain the active adapter on one clip: write the figures and ``summary.txt`` into ``output_dir``.

    Args:
        model: a ``Qwen2AudioLDVForConditionalGeneration`` with an adapter.
        processor: its ``Qwen2AudioProcessor`` (only the feature extractor is used).
        audio: mono ``float32`` ``(samples,)`` at :data:`~modeling_qwen2audio_ldv.audio.SAMPLING_RATE`, or an
            audio file (decoded, averaged to mono, resampled: :func:`~modeling_qwen2audio_ldv.audio.load_audio`).
            Clips longer than the encoder window are cut to it.
        output_dir: folder for the PNGs and ``summary.txt`` (created).
        title: figure title (default: the file name, if any).

    Returns:
        ``scale``, ``gate_mean``, ``gate_std`` (``None`` without a gate), ``healthy_range``, ``verdict``,
        ``healthy`` (bool, ``None`` without a gate), ``correction_ratio``, ``frames``, ``seconds``, ``adapter``,
        ``num_parameters``, ``attention_files``, ``gate_file``, ``files`` and ``summary`` (the text).
    """
    if getattr(getattr(model, "domain_adapter", None), "config", None) is not None \
            and model.domain_adapter.config.adapter_type == "lora":
        raise ValueError("explain reads an adapter's own output (scale, gate, attention); a lora adapter changes the "
                         "audio tower's projections and has none: not supported")
    if isinstance(audio, (str, os.PathLike)):
        title = title or Path(audio).name
        audio = load_audio(audio)
    audio = _fit_window(np.asarray(audio, dtype=np.float32), processor)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"`audio` must be non-empty mono (samples,), got shape {audio.shape}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        hidden, valid, details = adapter_details(model, processor, audio)
    finally:
        model.train(was_training)
    frames = int(valid[0].sum())
    if frames == 0:
        raise ValueError("the clip has no valid encoder frame (too short)")
    adapter = model.domain_adapter
    x = hidden[0, :frames].float()
    y = details.hidden_states[0, :frames].float()
    correction_ratio = float((y - x).pow(2).mean().sqrt() / x.pow(2).mean().sqrt().clamp_min(1e-12))

    attention_files = _write_attention_maps(details, frames, output_dir, title)
    gate_mean = gate_std = None
    gate_file = None
    if details.gate is not None:
        gate = details.gate[0, :frames].float()
        gate_mean, gate_std = float(gate.mean()), float(gate.std(unbiased=False))
        gate_file = str(plot_gate_over_time(audio, SAMPLING_RATE, gate.cpu().numpy(),
                                            output_dir / "gate_over_time.png", title=title))
    low, high = HEALTHY_GATE_RANGE
    info: dict[str, Any] = {
        "adapter": _describe_adapter(adapter.config),
        "num_parameters": sum(p.numel() for p in adapter.parameters()),
        "scale": float(adapter.scale.detach().float().reshape(-1)[0]),
        "gate_mean": gate_mean,
        "gate_std": gate_std,
        "healthy_range": [low, high],
        "healthy": None if gate_mean is None else bool(low <= gate_mean <= high),
        "verdict": gate_verdict(gate_mean),
        "correction_ratio": correction_ratio,
        "frames": frames,
        "seconds": audio.shape[0] / SAMPLING_RATE,
        "attention_files": attention_files,
        "gate_file": gate_file,
    }
    summary_path = output_dir / "summary.txt"
    info["files"] = [*attention_files, *([gate_file] if gate_file else []), str(summary_path),
                     str(output_dir / "summary.json")]
    info["summary"] = _summary_text(info)
    summary_path.write_text(info["summary"] + "\n", encoding="utf-8")
    (output_dir / "summary.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    logger.info("explanation written to %s", output_dir)
    return info


__all__ = ["HEALTHY_GATE_RANGE", "adapter_details", "explain", "gate_verdict", "plot_attention_maps"]
