# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Laser Doppler Vibrometer (LDV) speech simulator: the signal chain.

Turns microphone speech into plausible LDV speech: the speech as seen through a vibrating surface and
corrupted by the optics. What is simulated (the surface and the ranges of the corruptions) is an
:class:`~modeling_qwen2audio_ldv.synthetic.conditions.LDVCondition`; the presets and their sources are in
``conditions.py``, and this module re-exports them (``LDVCondition``, ``LDV_PRESETS``, ``DEFAULT_CONDITION``,
``get_condition``) so that ``simulator`` stays the one import for simulating.

The chain, in physical order (each stage works at the input's sample rate):

1. surface: Butterworth band-pass, 0-4 peaking resonances, optional measured impulse response;
2. slow gain variation (distance / angle changes);
3. low-frequency drift (target macro motion, a low-passed random walk);
4. coloured Gaussian noise floor at a target SNR relative to the speech after stages 1-2;
5. speckle clicks and bursts (a two-state on/off process);
6. drop-outs (track-and-hold of the last value, or zero);
7. peak normalisation to ``PEAK_LEVEL`` (-1 dBFS), so the result can be written to fixed-point files
   without clipping. The absolute level of the output therefore carries no information.

Every range of the condition is drawn once per call from a generator seeded by ``seed``, each stage from its own
independent stream, so disabling one effect does not change the draws of the others.

Example:
    >>> import numpy as np
    >>> from modeling_qwen2audio_ldv.synthetic.simulator import simulate_ldv
    >>> mic = np.random.default_rng(0).standard_normal(16_000)
    >>> ldv = simulate_ldv(mic, 16_000, "window", seed=3)
    >>> ldv.dtype, ldv.shape
    (dtype('float32'), (16000,))
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import scipy.fft
from scipy import interpolate, signal

from .conditions import (
    DEFAULT_CONDITION,
    LDV_PRESETS,
    REFERENCE_RATE_HZ,
    LDVCondition,
    Resonance,
    get_condition,
)

logger = logging.getLogger(__name__)

#: Peak level of the output (linear): -1 dBFS.
PEAK_LEVEL = 10.0 ** (-1.0 / 20.0)
#: Corner (Hz) of the low-pass that keeps the drift random walk below the speech band.
DRIFT_CUTOFF_HZ = 20.0
#: Spacing (seconds) of the random knots of the slow gain curve.
GAIN_KNOT_INTERVAL_S = 1.0
#: Frequency (Hz) below which the noise colouring is held flat (avoids an infinite DC boost).
NOISE_FLOOR_HZ = 20.0
#: Pre-emphasis coefficient of the speckle waveform: a rising (non-white) spectrum, +~25 dB from DC to Nyquist.
SPECKLE_PREEMPHASIS = 0.9


@dataclass
class LDVEvents:
    """Where the impulsive corruptions of one :func:`simulate_ldv` call landed.

    Attributes:
        clicks: speckle events, int64 array ``(num_events, 2)`` of ``[start, end)`` sample indices.
        dropouts: drop-outs, int64 array ``(num_events, 2)`` of ``[start, end)`` sample indices.
        params: the per-utterance values drawn from the condition's ranges (``snr_db``, ``speckle_rate_hz``, ...;
            absent when the effect is disabled).
    """

    clicks: np.ndarray
    dropouts: np.ndarray
    params: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------
# Signal stages
# --------------------------------------------------------------------------------------------------------
def _peaking_sos(centre_hz: float, q: float, gain_db: float, sample_rate: int) -> np.ndarray:
    """RBJ audio-EQ-cookbook peaking biquad as one SOS row ``[b0, b1, b2, 1, a1, a2]``."""
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * centre_hz / sample_rate
    alpha = math.sin(w0) / (2.0 * q)
    b = np.array([1.0 + alpha * amp, -2.0 * math.cos(w0), 1.0 - alpha * amp])
    a = np.array([1.0 + alpha / amp, -2.0 * math.cos(w0), 1.0 - alpha / amp])
    return np.concatenate([b / a[0], a / a[0]])


@functools.lru_cache(maxsize=64)
def _surface_sos(
    highpass_hz: float, lowpass_hz: float, order: int, resonances: tuple[Resonance, ...], sample_rate: int
) -> np.ndarray:
    """Second-order sections of the surface: Butterworth high-pass, low-pass, then the resonances."""
    nyquist = sample_rate / 2.0
    sections = [signal.butter(order, highpass_hz, btype="highpass", fs=sample_rate, output="sos")]
    if lowpass_hz < nyquist:
        sections.append(signal.butter(order, lowpass_hz, btype="lowpass", fs=sample_rate, output="sos"))
    else:
        logger.warning("low-pass %.0f Hz is not below Nyquist (%.0f Hz): skipped", lowpass_hz, nyquist)
    for centre, q, gain in resonances:
        if centre < nyquist:
            sections.append(_peaking_sos(centre, q, gain, sample_rate)[None, :])
        else:
            logger.warning("resonance at %.0f Hz is not below Nyquist (%.0f Hz): skipped", centre, nyquist)
    return np.concatenate(sections, axis=0)


@functools.lru_cache(maxsize=16)
def _load_impulse_response(path: str, mtime_ns: int, sample_rate: int) -> np.ndarray:
    """Read an impulse response, average its channels and resample it to ``sample_rate`` (Hz)."""
    import soundfile as sf

    data, ir_rate = sf.read(path, dtype="float64", always_2d=True)
    ir = data.mean(axis=1)
    if ir.size == 0 or not np.all(np.isfinite(ir)):
        raise ValueError(f"`impulse_response` {path} must be non-empty with finite samples")
    if ir_rate != sample_rate:
        g = math.gcd(int(ir_rate), int(sample_rate))
        ir = signal.resample_poly(ir, sample_rate // g, ir_rate // g)
    return ir


def _impulse_response(path: str, sample_rate: int) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"`impulse_response` file not found: {path}")
    return _load_impulse_response(str(p.resolve()), p.stat().st_mtime_ns, sample_rate)


def apply_surface(waveform: np.ndarray, sample_rate: int, condition: LDVCondition) -> np.ndarray:
    """Stage 1: the surface's linear, causal transfer function (band-pass, resonances, measured IR).

    Args:
        waveform: float array ``(samples,)``.
        sample_rate: Hz.
        condition: supplies the band, resonances and optional impulse response.

    Returns:
        float64 array ``(samples,)``.
    """
    sos = _surface_sos(
        condition.highpass_hz, condition.lowpass_hz, condition.filter_order, condition.resonances, sample_rate
    )
    out = signal.sosfilt(sos.copy(), waveform)  # copy: the cached design must not be shared mutable state
    if condition.impulse_response is not None:
        ir = _impulse_response(condition.impulse_response, sample_rate)
        out = signal.fftconvolve(out, ir)[: waveform.shape[0]]  # fftconvolve does not write to ``ir``
    return out


def _gain_curve(rng: np.random.Generator, num_samples: int, sample_rate: int, depth_db: float) -> np.ndarray:
    """Slow random gain (linear) whose dB value stays within +-``depth_db``."""
    duration = num_samples / sample_rate
    num_knots = int(math.ceil(duration / GAIN_KNOT_INTERVAL_S)) + 2
    knots_t = np.arange(num_knots) * GAIN_KNOT_INTERVAL_S
    knots = rng.uniform(-1.0, 1.0, size=num_knots)
    t = np.arange(num_samples) / sample_rate
    curve = interpolate.PchipInterpolator(knots_t, knots)(t)  # monotone: stays within the knots' [-1, 1]
    return 10.0 ** (depth_db * curve / 20.0)


def _drift(rng: np.random.Generator, num_samples: int, sample_rate: int, rms: float) -> np.ndarray:
    """Random walk low-passed at ``DRIFT_CUTOFF_HZ``, zero mean, with the given RMS."""
    walk = np.cumsum(rng.standard_normal(num_samples))
    cutoff = min(DRIFT_CUTOFF_HZ, 0.45 * sample_rate)
    walk = signal.sosfilt(signal.butter(2, cutoff, btype="lowpass", fs=sample_rate, output="sos"), walk)
    walk -= walk.mean()
    norm = math.sqrt(float(np.mean(walk**2)))
    return walk * (rms / norm) if norm > 0 else walk


def _coloured_noise(
    rng: np.random.Generator, num_samples: int, sample_rate: int, slope_db_per_octave: float, rms: float
) -> np.ndarray:
    """Gaussian noise whose power density falls by ``slope_db_per_octave`` per octave, with the given RMS."""
    spectrum = scipy.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.maximum(scipy.fft.rfftfreq(num_samples, 1.0 / sample_rate), NOISE_FLOOR_HZ)
    exponent = slope_db_per_octave / (20.0 * math.log10(2.0))  # amplitude ~ f ** exponent
    noise = scipy.fft.irfft(spectrum * (freqs / 1000.0) ** exponent, n=num_samples)
    norm = math.sqrt(float(np.mean(noise**2)))
    return noise * (rms / norm) if norm > 0 else noise


def _on_off_intervals(
    rng: np.random.Generator,
    num_samples: int,
    rate_per_sample: float,
    length_range: tuple[int, int],
    log_uniform: bool,
) -> np.ndarray:
    """Intervals of a two-state on/off process over ``num_samples`` samples.

    The off state is memoryless (geometric sojourn: a per-sample switch-on probability, i.e. a Markov state);
    the on sojourn is drawn from ``length_range`` (samples, inclusive), log-uniformly or uniformly. The mean off
    sojourn is set so that events start at ``rate_per_sample`` on average, on time included.

    Returns:
        int64 array ``(num_events, 2)`` of sorted, non-overlapping ``[start, end)`` intervals, ends clipped.
    """
    low, high = length_range
    lengths = np.arange(low, high + 1, dtype=np.float64)
    if log_uniform:
        probs = np.log((lengths + 1.0) / lengths) / math.log((high + 1.0) / low)
    else:
        probs = np.full(lengths.shape, 1.0 / lengths.size)
    mean_on = float(np.sum(lengths * probs))
    mean_off = max(1.0 / rate_per_sample - mean_on, 1.0)
    expected = num_samples / (mean_off + mean_on)
    chunk = int(expected + 6.0 * math.sqrt(expected) + 16)
    starts_list, ends_list, position = [], [], 0
    while position < num_samples:
        off = rng.geometric(1.0 / mean_off, size=chunk)
        if log_uniform:
            on = np.floor(np.exp(rng.uniform(math.log(low), math.log(high + 1.0), size=chunk))).astype(np.int64)
            on = np.clip(on, low, high)
        else:
            on = rng.integers(low, high + 1, size=chunk)
        ends = position + np.cumsum(off + on)
        starts = ends - on
        starts_list.append(starts)
        ends_list.append(ends)
        position = int(ends[-1])
    starts = np.concatenate(starts_list)
    ends = np.concatenate(ends_list)
    keep = starts < num_samples
    return np.stack([starts[keep], np.minimum(ends[keep], num_samples)], axis=1).astype(np.int64)


def _interval_mask(intervals: np.ndarray, num_samples: int) -> np.ndarray:
    """Boolean mask ``(num_samples,)`` that is True inside the (non-overlapping) intervals."""
    edges = np.zeros(num_samples + 1, dtype=np.int64)
    np.add.at(edges, intervals[:, 0], 1)
    np.add.at(edges, intervals[:, 1], -1)
    return np.cumsum(edges[:-1]) > 0


def _add_speckle(
    rng: np.random.Generator,
    audio: np.ndarray,
    sample_rate: int,
    rate_hz: float,
    condition: LDVCondition,
    reference_rms: float,
) -> np.ndarray:
    """Add speckle events in place; returns their ``[start, end)`` intervals."""
    scale = sample_rate / REFERENCE_RATE_HZ
    low = max(1, round(condition.speckle_length_samples[0] * scale))
    high = max(low, round(condition.speckle_length_samples[1] * scale))
    intervals = _on_off_intervals(rng, audio.shape[0], rate_hz / sample_rate, (low, high), log_uniform=True)
    if intervals.shape[0] == 0:
        return intervals
    lengths = intervals[:, 1] - intervals[:, 0]
    levels_db = rng.uniform(*condition.speckle_level_db, size=lengths.shape[0])
    amplitude = np.repeat(reference_rms * 10.0 ** (levels_db / 20.0), lengths)
    # Gaussian amplitude with a rising spectrum, unit RMS (pre-emphasis gain sqrt(1 + a^2)).
    burst = signal.lfilter([1.0, -SPECKLE_PREEMPHASIS], [1.0], rng.standard_normal(int(lengths.sum())))
    burst /= math.sqrt(1.0 + SPECKLE_PREEMPHASIS**2)
    index = np.flatnonzero(_interval_mask(intervals, audio.shape[0]))  # same order as np.repeat above
    audio[index] += amplitude * burst
    return intervals


def _apply_dropouts(
    rng: np.random.Generator, audio: np.ndarray, sample_rate: int, rate_hz: float, condition: LDVCondition
) -> np.ndarray:
    """Apply drop-outs in place (hold the last good sample, or zero); returns their intervals."""
    low = max(1, round(condition.dropout_duration_ms[0] * sample_rate / 1000.0))
    high = max(low, round(condition.dropout_duration_ms[1] * sample_rate / 1000.0))
    intervals = _on_off_intervals(rng, audio.shape[0], rate_hz / sample_rate, (low, high), log_uniform=False)
    if intervals.shape[0] == 0:
        return intervals
    mask = _interval_mask(intervals, audio.shape[0])
    if condition.dropout_mode == "zero":
        audio[mask] = 0.0
    else:
        # Index of the last sample before the current drop-out (-1 when it starts at sample 0).
        last_start = np.full(audio.shape[0], -1, dtype=np.int64)
        last_start[intervals[:, 0]] = intervals[:, 0]
        source = np.maximum.accumulate(last_start) - 1
        held = np.where(source >= 0, audio[np.maximum(source, 0)], 0.0)
        audio[mask] = held[mask]
    return intervals


def _check_waveform(waveform: Any, sample_rate: Any) -> np.ndarray:
    array = np.asarray(waveform)
    if array.ndim != 1:
        raise ValueError(
            f"`waveform` must be 1-D mono audio (samples,), got shape {array.shape}; mix channels to mono first"
        )
    if array.shape[0] == 0:
        raise ValueError("`waveform` is empty (0 samples)")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"`waveform` must hold real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(f"`waveform` has {bad} non-finite sample(s) (NaN or inf)")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or sample_rate <= 0:
        raise ValueError(f"`sample_rate` ({sample_rate!r}) must be a positive integer in Hz")
    return array


@overload
def simulate_ldv(
    waveform: np.ndarray,
    sample_rate: int,
    condition: str | LDVCondition = ...,
    seed: int = ...,
    *,
    return_events: Literal[False] = ...,
    normalize: bool = ...,
) -> np.ndarray: ...


@overload
def simulate_ldv(
    waveform: np.ndarray,
    sample_rate: int,
    condition: str | LDVCondition = ...,
    seed: int = ...,
    *,
    return_events: Literal[True],
    normalize: bool = ...,
) -> tuple[np.ndarray, LDVEvents]: ...


def simulate_ldv(
    waveform: np.ndarray,
    sample_rate: int,
    condition: str | LDVCondition = DEFAULT_CONDITION,
    seed: int = 0,
    *,
    return_events: bool = False,
    normalize: bool = True,
) -> np.ndarray | tuple[np.ndarray, LDVEvents]:
    """Simulate the LDV recording of microphone speech.

    Args:
        waveform: mono audio ``(samples,)``, float or integer; any scale (only relative levels matter).
        sample_rate: Hz; every stage works at this rate (the model itself consumes 16 kHz).
        condition: preset name, JSON path or :class:`LDVCondition`.
        seed: non-negative integer; the same seed and condition give bit-identical output.
        return_events: also return an :class:`LDVEvents` with the click and drop-out intervals.
        normalize: scale the output so its peak is ``PEAK_LEVEL`` (-1 dBFS). Leave on for audio that is
            written to files; off keeps the pre-normalisation level (for analysis and tests).

    Returns:
        float32 array ``(samples,)``, the same length as the input, and the events if ``return_events``.

    Raises:
        ValueError: 2-D, empty or non-finite input, a bad sample rate or seed, an invalid condition.
        FileNotFoundError: the condition's impulse response file is missing.
    """
    audio = _check_waveform(waveform, sample_rate)
    sample_rate = int(sample_rate)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"`seed` ({seed!r}) must be a non-negative integer")
    condition = get_condition(condition)
    if condition.highpass_hz >= sample_rate / 2.0:
        raise ValueError(
            f"`highpass_hz` ({condition.highpass_hz}) of condition {condition.name!r} must be below the Nyquist "
            f"frequency ({sample_rate / 2.0} Hz) of `sample_rate` {sample_rate}"
        )
    audio, events = _run_stages(audio, sample_rate, condition, int(seed))
    if normalize:
        peak = float(np.max(np.abs(audio)))
        if peak > 0:
            audio *= PEAK_LEVEL / peak
    out = audio.astype(np.float32)
    if return_events:
        return out, events
    return out


def _run_stages(
    audio: np.ndarray, sample_rate: int, condition: LDVCondition, seed: int
) -> tuple[np.ndarray, LDVEvents]:
    """Stages 1-6 of the chain on a checked float64 ``(samples,)`` waveform; returns the audio and its events."""
    num_samples = audio.shape[0]
    # One independent stream per stage, so disabling a stage leaves the others' draws unchanged.
    rng_gain, rng_drift, rng_noise, rng_speckle, rng_dropout = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    params: dict[str, float] = {}

    audio = apply_surface(audio, sample_rate, condition)
    if condition.gain_variation_db is not None:
        depth = float(rng_gain.uniform(*condition.gain_variation_db))
        params["gain_variation_db"] = depth
        if depth > 0:
            audio *= _gain_curve(rng_gain, num_samples, sample_rate, depth)
    reference_rms = math.sqrt(float(np.mean(audio**2)))
    if reference_rms == 0.0:
        logger.warning("the surface-filtered signal is silent: noise, drift and speckle have zero level")
    if condition.drift_level_db is not None:
        level = float(rng_drift.uniform(*condition.drift_level_db))
        params["drift_level_db"] = level
        audio += _drift(rng_drift, num_samples, sample_rate, reference_rms * 10.0 ** (level / 20.0))
    if condition.snr_db is not None:
        snr = float(rng_noise.uniform(*condition.snr_db))
        params["snr_db"] = snr
        noise_rms = reference_rms * 10.0 ** (-snr / 20.0)
        audio += _coloured_noise(rng_noise, num_samples, sample_rate, condition.noise_slope_db_per_octave, noise_rms)
    clicks = np.zeros((0, 2), dtype=np.int64)
    if condition.speckle_rate_hz is not None and condition.speckle_rate_hz[1] > 0:
        rate = float(rng_speckle.uniform(*condition.speckle_rate_hz))
        params["speckle_rate_hz"] = rate
        if rate > 0:
            clicks = _add_speckle(rng_speckle, audio, sample_rate, rate, condition, reference_rms)
    dropouts = np.zeros((0, 2), dtype=np.int64)
    if condition.dropout_rate_hz is not None and condition.dropout_rate_hz[1] > 0:
        rate = float(rng_dropout.uniform(*condition.dropout_rate_hz))
        params["dropout_rate_hz"] = rate
        if rate > 0:
            dropouts = _apply_dropouts(rng_dropout, audio, sample_rate, rate, condition)
    return audio, LDVEvents(clicks=clicks, dropouts=dropouts, params=params)


# The condition names are re-exported: `from .simulator import LDVCondition, LDV_PRESETS, simulate_ldv` is the one
# import for simulating (train_hf.py, the corpus, the package root).
__all__ = ["DEFAULT_CONDITION", "LDV_PRESETS", "LDVCondition", "LDVEvents", "apply_surface", "get_condition",
           "simulate_ldv"]
