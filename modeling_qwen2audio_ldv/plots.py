# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Diagnostic figures, written as PNG files with matplotlib's Agg canvas (no display, no pyplot state)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mic = np.asarray(mic, dtype=np.float64)
    ldv = np.asarray(ldv, dtype=np.float64)
    for name, audio in (("mic", mic), ("ldv", ldv)):
        if audio.ndim != 1 or audio.shape[0] == 0:
            raise ValueError(f"`{name}` must be non-empty 1-D audio (samples,), got shape {audio.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    fig = Figure(figsize=(15, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
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
    fig.savefig(path, dpi=100)
    return path
