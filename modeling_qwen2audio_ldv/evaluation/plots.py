# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Diagnostic figures, written as PNG files with matplotlib's Agg canvas (no display, no pyplot state)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: Seconds per Qwen2-Audio encoder frame (4 mel frames of 10 ms).
ENCODER_FRAME_SECONDS = 0.04


def new_figure(figsize: tuple[float, float]):
    """A constrained-layout ``Figure`` on an Agg canvas (no pyplot state, no display), ready for ``savefig``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a 100 dpi PNG at ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _spectrogram_db(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power spectrogram in dB relative to its own maximum: (frequencies Hz, times s, dB (freqs, frames))."""
    from scipy import signal

    nperseg = min(max(16, int(0.032 * sample_rate)), audio.shape[0])  # 32 ms frames
    freqs, times, power = signal.spectrogram(
        audio, fs=sample_rate, window="hann", nperseg=nperseg, noverlap=nperseg * 3 // 4, scaling="density"
    )
    power_db = 10.0 * np.log10(power + 1e-20)
    return freqs, times, power_db - power_db.max()


def _ltas_db(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Long-term average spectrum (Welch) in dB relative to the signal's total power: (frequencies Hz, dB)."""
    from scipy import signal

    nperseg = min(max(16, int(0.064 * sample_rate)), audio.shape[0])
    freqs, psd = signal.welch(audio, fs=sample_rate, nperseg=nperseg)
    total = float(np.sum(psd) * (freqs[1] - freqs[0])) if freqs.size > 1 else float(np.sum(psd))
    return freqs, 10.0 * np.log10(psd / max(total, 1e-30) + 1e-20)


def plot_mic_vs_ldv(
    mic: np.ndarray, ldv: np.ndarray, sample_rate: int, path: str | os.PathLike, title: str = ""
) -> Path:
    """Side-by-side log-spectrograms of microphone and LDV audio plus their long-term average spectra.

    Each spectrogram is in dB relative to its own maximum (80 dB shown); the long-term average spectra are in
    dB relative to each signal's total power, so the overlay compares spectral shape, not level (the
    simulator peak-normalises its output).

    Args:
        mic: microphone audio ``(samples,)``.
        ldv: LDV audio ``(samples,)`` at the same ``sample_rate`` (lengths may differ).
        sample_rate: Hz.
        path: PNG file to write (parent folders are created).
        title: figure title.

    Returns:
        The path of the PNG.
    """
    mic = np.asarray(mic, dtype=np.float64)
    ldv = np.asarray(ldv, dtype=np.float64)
    for name, audio in (("mic", mic), ("ldv", ldv)):
        if audio.ndim != 1 or audio.shape[0] == 0:
            raise ValueError(f"`{name}` must be non-empty 1-D audio (samples,), got shape {audio.shape}")

    fig = new_figure((15, 4.5))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 0.8]})
    image = None
    for ax, audio, label in ((axes[0], mic, "microphone"), (axes[1], ldv, "LDV")):
        freqs, times, power_db = _spectrogram_db(audio, sample_rate)
        image = ax.pcolormesh(times, freqs / 1000.0, power_db, vmin=-80.0, vmax=0.0, cmap="magma", shading="auto")
        ax.set_title(f"{label} spectrogram")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("frequency (kHz)")
    fig.colorbar(image, ax=axes[:2], label="power (dB re max)", shrink=0.9)

    for audio, label in ((mic, "microphone"), (ldv, "LDV")):
        freqs, ltas = _ltas_db(audio, sample_rate)
        axes[2].plot(freqs / 1000.0, ltas, label=label, linewidth=1.2)
    axes[2].set_title("long-term average spectrum")
    axes[2].set_xlabel("frequency (kHz)")
    axes[2].set_ylabel("power density (dB re total power)")
    axes[2].grid(True, alpha=0.3)
    axes[2].legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_gate_over_time(
    audio: np.ndarray, sample_rate: int, gate: np.ndarray, path: str | os.PathLike, title: str = ""
) -> Path:
    """The adapter's gate over time, aligned with the input's spectrogram.

    Args:
        audio: the (LDV) input ``(samples,)``.
        sample_rate: Hz.
        gate: gate values ``(frames, d_model)`` in (0, 1) for the valid encoder frames (40 ms each).
        path: PNG file to write.
        title: figure title.

    The top panel is the spectrogram, the middle one the gate per channel (channels on the y axis), the bottom
    one the gate's mean over channels per frame: the original guide expects it between about 0.3 and 0.7 when
    healthy (``explain.HEALTHY_GATE_RANGE``).
    """
    audio = np.asarray(audio, dtype=np.float64)
    gate = np.asarray(gate, dtype=np.float64)
    if gate.ndim != 2 or gate.shape[0] == 0:
        raise ValueError(f"`gate` must be (frames, d_model) with at least one frame, got shape {gate.shape}")
    fig = new_figure((11, 7))
    axes = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1, 0.6]})
    freqs, times, power_db = _spectrogram_db(audio, sample_rate)
    axes[0].pcolormesh(times, freqs / 1000.0, power_db, vmin=-80.0, vmax=0.0, cmap="magma", shading="auto")
    axes[0].set_ylabel("frequency (kHz)")
    axes[0].set_title("input spectrogram")
    frame_times = (np.arange(gate.shape[0]) + 0.5) * ENCODER_FRAME_SECONDS
    edges = np.arange(gate.shape[0] + 1) * ENCODER_FRAME_SECONDS
    image = axes[1].pcolormesh(edges, np.arange(gate.shape[1] + 1), gate.T, vmin=0.0, vmax=1.0, cmap="viridis")
    axes[1].set_ylabel("channel")
    axes[1].set_title("gate per channel")
    fig.colorbar(image, ax=axes[1], label="gate")
    mean = gate.mean(axis=1)
    axes[2].plot(frame_times, mean, color="black")
    axes[2].axhspan(0.3, 0.7, color="green", alpha=0.1, label="healthy range (0.3-0.7)")
    axes[2].set_ylim(0.0, 1.0)
    axes[2].set_ylabel("mean gate")
    axes[2].set_xlabel("time (s)")
    axes[2].legend(loc="upper right")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
