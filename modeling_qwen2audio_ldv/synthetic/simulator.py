# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Laser Doppler Vibrometer (LDV) speech simulator.

Turns microphone speech into plausible LDV speech: the speech as seen through a vibrating surface and
corrupted by the optics (see ``LDV.md`` in the project notes for the reported characteristics and sources).

The chain, in physical order (each stage works at the input's sample rate):

1. surface: Butterworth band-pass, 0-4 peaking resonances, optional measured impulse response;
2. slow gain variation (distance / angle changes);
3. low-frequency drift (target macro motion, a low-passed random walk);
4. coloured Gaussian noise floor at a target SNR relative to the speech after stages 1-2;
5. speckle clicks and bursts (a two-state on/off process);
6. drop-outs (track-and-hold of the last value, or zero);
7. peak normalisation to ``PEAK_LEVEL`` (-1 dBFS), so the result can be written to fixed-point files
   without clipping. The absolute level of the output therefore carries no information.

A :class:`LDVCondition` is one fixed surface plus per-utterance random ranges for stages 2-6; every range is
drawn once per call from a generator seeded by ``seed``, each stage from its own independent stream, so
disabling one effect does not change the draws of the others.

Example:
    >>> import numpy as np
    >>> from modeling_qwen2audio_ldv.synthetic.simulator import simulate_ldv
    >>> mic = np.random.default_rng(0).standard_normal(16_000)
    >>> ldv = simulate_ldv(mic, 16_000, "window", seed=3)
    >>> ldv.dtype, ldv.shape
    (dtype('float32'), (16000,))
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import functools
import hashlib
import json
import logging
import math
import numbers
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import scipy.fft
from scipy import interpolate, signal

logger = logging.getLogger(__name__)

Range = tuple[float, float]
Resonance = tuple[float, float, float]

#: Sample rate (Hz) at which ``speckle_length_samples`` is expressed; lengths scale with the actual rate.
REFERENCE_RATE_HZ = 16_000
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
#: Valid values of ``LDVCondition.dropout_mode``.
DROPOUT_MODES = ("hold", "zero")
#: Audio files that ``simulate`` converts (read and written with soundfile).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
#: Hugging Face ``audiofolder`` metadata files that ``simulate`` carries over.
METADATA_FILES = ("metadata.csv", "metadata.jsonl")

# Plausibility bounds of each range field: (low bound, high bound, unit). Wider than LDV.md's typical
# values so that stress conditions remain expressible, narrow enough to catch unit mistakes (kHz vs Hz).
_RANGE_BOUNDS: dict[str, tuple[float, float, str]] = {
    "gain_variation_db": (0.0, 40.0, "dB"),
    "drift_level_db": (-80.0, 0.0, "dB"),
    "snr_db": (-20.0, 80.0, "dB"),
    "speckle_rate_hz": (0.0, 200.0, "events per second"),
    "speckle_length_samples": (1.0, 1000.0, "samples at 16 kHz"),
    "speckle_level_db": (-40.0, 40.0, "dB"),
    "dropout_rate_hz": (0.0, 20.0, "events per second"),
    "dropout_duration_ms": (0.1, 1000.0, "ms"),
}
# Range fields that may be None (effect disabled).
_OPTIONAL_RANGES = ("gain_variation_db", "drift_level_db", "snr_db", "speckle_rate_hz", "dropout_rate_hz")


@dataclass(frozen=True)
class LDVCondition:
    """One LDV recording condition: a fixed surface plus per-utterance random ranges of the corruptions.

    Every ``*_db``/``*_hz``/``*_ms`` range is a ``(low, high)`` pair; each call of :func:`simulate_ldv` draws
    one value uniformly from it. A range set to ``None`` (or a rate of ``(0, 0)``) disables that effect.
    Lists given for pairs are stored as tuples, so a condition is immutable, hashable and compares equal
    after a JSON round trip.

    Args:
        name: identifier written into ``condition.json`` and logs.
        highpass_hz: high-pass corner of the surface band (Hz); LDV.md: 100-300 Hz.
        lowpass_hz: low-pass corner of the surface band (Hz); LDV.md: 1.5-4 kHz. Skipped (with a warning) at
            sample rates whose Nyquist frequency is not above it.
        filter_order: order of each Butterworth section (high-pass and low-pass); 4 gives 24 dB/octave.
        resonances: 0-4 peaking filters ``(centre Hz, Q, gain dB)`` (RBJ biquads). Real surfaces have 1-4
            (LDV.md: centre 200-3000 Hz, Q 2-15, gain +3..+15 dB); an empty tuple is a flat, idealised surface.
        impulse_response: path of a WAV/FLAC with a measured surface impulse response, or None. Applied by
            causal convolution after the filters, resampled to the signal's rate, multi-channel files averaged;
            the output keeps the input's length (the IR's tail past the end is dropped).
        gain_variation_db: range of the maximum excursion (dB) of a slow random gain curve (knots every
            ``GAIN_KNOT_INTERVAL_S`` seconds, monotone cubic interpolation); LDV.md: up to +-10 dB.
        drift_level_db: range of the RMS of the low-frequency drift (a random walk low-passed at
            ``DRIFT_CUTOFF_HZ``) relative to the speech RMS (dB); LDV.md: -30..-10 dB.
        snr_db: range of the signal-to-noise ratio (dB) of the Gaussian noise floor; the signal power is the
            mean power of the whole utterance after the surface and gain stages; LDV.md: 0-30 dB, default 15.
        noise_slope_db_per_octave: spectral slope of the noise power density (dB/octave); 0 white, -3 pink,
            -6 brown. Flat below ``NOISE_FLOOR_HZ``.
        speckle_rate_hz: range of the rate of speckle events (events per second); LDV.md: 0-20.
        speckle_length_samples: range of the event length in samples at 16 kHz (scaled to the actual rate),
            drawn log-uniformly so short clicks outnumber long bursts; LDV.md: 1-100.
        speckle_level_db: range of each event's RMS relative to the speech RMS (dB), drawn per event.
        dropout_rate_hz: range of the rate of drop-outs (events per second); LDV.md: 0-3.
        dropout_duration_ms: range of each drop-out's duration (ms), drawn uniformly; LDV.md: 5-50.
        dropout_mode: ``"hold"`` (track-and-hold of the last good sample) or ``"zero"`` (signal lost).
    """

    name: str
    highpass_hz: float = 200.0
    lowpass_hz: float = 3000.0
    filter_order: int = 4
    resonances: tuple[Resonance, ...] = ()
    impulse_response: str | None = None
    gain_variation_db: Range | None = None
    drift_level_db: Range | None = None
    snr_db: Range | None = (10.0, 20.0)
    noise_slope_db_per_octave: float = -3.0
    speckle_rate_hz: Range | None = None
    speckle_length_samples: Range = (1.0, 100.0)
    speckle_level_db: Range = (0.0, 10.0)
    dropout_rate_hz: Range | None = None
    dropout_duration_ms: Range = (5.0, 50.0)
    dropout_mode: str = "hold"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"`name` ({self.name!r}) must be a non-empty string")
        highpass = _as_float("highpass_hz", self.highpass_hz)
        lowpass = _as_float("lowpass_hz", self.lowpass_hz)
        if highpass <= 0:
            raise ValueError(f"`highpass_hz` ({highpass}) must be a positive frequency in Hz")
        if lowpass <= highpass:
            raise ValueError(f"`lowpass_hz` ({lowpass}) must be above `highpass_hz` ({highpass}) Hz")
        _set(self, "highpass_hz", highpass)
        _set(self, "lowpass_hz", lowpass)
        order = self.filter_order
        if isinstance(order, bool) or not isinstance(order, numbers.Integral) or not 1 <= order <= 8:
            raise ValueError(f"`filter_order` ({order!r}) must be an integer in [1, 8]")
        _set(self, "filter_order", int(order))
        _set(self, "resonances", _check_resonances(self.resonances))
        if self.impulse_response is not None:
            if not isinstance(self.impulse_response, (str, os.PathLike)) or not str(self.impulse_response):
                raise ValueError(
                    f"`impulse_response` ({self.impulse_response!r}) must be a path to an audio file or None"
                )
            _set(self, "impulse_response", str(self.impulse_response))
        for name, (low_bound, high_bound, unit) in _RANGE_BOUNDS.items():
            value = _check_range(name, getattr(self, name), low_bound, high_bound, unit, name in _OPTIONAL_RANGES)
            _set(self, name, value)
        slope = _as_float("noise_slope_db_per_octave", self.noise_slope_db_per_octave)
        if not -12.0 <= slope <= 12.0:
            raise ValueError(f"`noise_slope_db_per_octave` ({slope}) must lie within [-12, 12] dB/octave")
        _set(self, "noise_slope_db_per_octave", slope)
        if self.dropout_mode not in DROPOUT_MODES:
            raise ValueError(f"`dropout_mode` ({self.dropout_mode!r}) must be one of {DROPOUT_MODES}")
        # The on/off processes need room for the off state: events may cover at most half of the signal.
        if self.speckle_rate_hz is not None:
            duty = self.speckle_rate_hz[1] * self.speckle_length_samples[1] / REFERENCE_RATE_HZ
            if duty > 0.5:
                raise ValueError(
                    f"`speckle_rate_hz` high ({self.speckle_rate_hz[1]}/s) times `speckle_length_samples` high "
                    f"({self.speckle_length_samples[1]} samples at 16 kHz) covers {duty:.0%} of the signal; "
                    "expected at most 50%"
                )
        if self.dropout_rate_hz is not None:
            duty = self.dropout_rate_hz[1] * self.dropout_duration_ms[1] / 1000.0
            if duty > 0.5:
                raise ValueError(
                    f"`dropout_rate_hz` high ({self.dropout_rate_hz[1]}/s) times `dropout_duration_ms` high "
                    f"({self.dropout_duration_ms[1]} ms) covers {duty:.0%} of the signal; expected at most 50%"
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = [list(v) if isinstance(v, tuple) else v for v in value]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LDVCondition:
        """Build a condition from :meth:`to_dict`'s output; unknown keys are an error."""
        if not isinstance(data, dict):
            raise ValueError(f"an LDV condition must be a JSON object (dict), got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LDV condition field(s) {unknown}; expected a subset of {sorted(known)}")
        if "name" not in data:
            raise ValueError("an LDV condition needs a `name` field")
        return cls(**data)

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the condition to ``path`` as indented JSON; returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> LDVCondition:
        """Read a condition written by :meth:`to_json`.

        A relative ``impulse_response`` path is resolved against the JSON file's folder, so a condition and
        its IR can travel together.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        if isinstance(data, dict) and isinstance(data.get("impulse_response"), str):
            ir = Path(data["impulse_response"])
            if not ir.is_absolute():
                data["impulse_response"] = str((path.parent / ir).resolve())
        return cls.from_dict(data)


def _set(condition: LDVCondition, name: str, value: Any) -> None:
    object.__setattr__(condition, name, value)


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"`{name}` ({value!r}) must be a finite number")
    return float(value)


def _check_range(
    name: str, value: Any, low_bound: float, high_bound: float, unit: str, optional: bool
) -> Range | None:
    if value is None:
        if optional:
            return None
        raise ValueError(f"`{name}` must be a (low, high) pair in {unit}, got None")
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"`{name}` ({value!r}) must be a (low, high) pair in {unit}")
    low, high = (_as_float(name, v) for v in value)
    if low > high:
        raise ValueError(f"`{name}` ({value!r}): low ({low}) must not exceed high ({high})")
    if low < low_bound or high > high_bound:
        raise ValueError(f"`{name}` ({value!r}) must lie within [{low_bound}, {high_bound}] {unit}")
    return (low, high)


def _check_resonances(value: Any) -> tuple[Resonance, ...]:
    if value is None:
        return ()
    if not isinstance(value, (tuple, list)) or len(value) > 4:
        raise ValueError(f"`resonances` ({value!r}) must be a list of 0-4 (centre Hz, Q, gain dB) triples")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"`resonances[{i}]` ({item!r}) must be a (centre Hz, Q, gain dB) triple")
        centre, q, gain = (_as_float(f"resonances[{i}]", v) for v in item)
        if centre <= 0:
            raise ValueError(f"`resonances[{i}]` centre ({centre}) must be a positive frequency in Hz")
        if not 0.1 <= q <= 100:
            raise ValueError(f"`resonances[{i}]` Q ({q}) must lie within [0.1, 100]")
        if not -30 <= gain <= 30:
            raise ValueError(f"`resonances[{i}]` gain ({gain}) must lie within [-30, 30] dB")
        out.append((centre, q, gain))
    return tuple(out)


# --------------------------------------------------------------------------------------------------------
# Presets. Every parameter of every preset is here. Sources (full references in LDV.md):
#   band            Avargel & Cohen, HSCMA 2011 (membrane usable 200 Hz-4 kHz); Xiao et al., Sensors 21:3866,
#                   2021 (band set by the surface, not the instrument).
#   resonances      Cai, Iwai, Nishiura, Appl. Sci. 13:1958, 2023 and Sensors 23:330, 2023 (shape and frequency
#                   response of the object distort the sound; resonances).
#   box band        mic-LDV coherence on a box: 0.82 at 250-500 Hz, 0.38 at 0.5-2 kHz, 0.09 above 2 kHz
#                   (technical report, sk413025 repositories) -> pass band ~200-2500 Hz, strong low resonance.
#   speckle         Appl. Sci. 11:9870, 2021; Wang et al., IEICE E104.D:850, 2021; Jin et al., Opt. Lasers Eng.
#                   2022 (clicks of a few samples, bursts up to ~100, on/off process, 0-20 per second).
#   drop-outs       Rothberg, Appl. Opt. 45:4523, 2006 (track-and-hold or signal loss when the return is weak).
#   drift           Li et al., ICPR 2006; Chen et al., Optoelectron. Lett. 16(6), 2020 (macro motion < 20 Hz).
#   noise floor     Li et al., ICPR 2006; Jin et al. 2022 (Gaussian, not white); SNR 0-30 dB, typical 15.
#   gain            Zhu, CCNY LDV report, 2004 (distance/surface dependent; adaptive volume scaling).
# The individual numbers inside those ranges are choices that make the four surfaces clearly different;
# they are not measurements.
# --------------------------------------------------------------------------------------------------------
LDV_PRESETS: dict[str, LDVCondition] = {
    # Glass pane: stiff, light plate; widest band, sharp plate modes, specular return -> few speckles.
    "window": LDVCondition(
        name="window",
        highpass_hz=300.0,
        lowpass_hz=4000.0,
        filter_order=4,
        resonances=((450.0, 8.0, 8.0), (1800.0, 10.0, 6.0), (3200.0, 12.0, 5.0)),
        gain_variation_db=(0.0, 4.0),
        drift_level_db=(-30.0, -25.0),
        snr_db=(18.0, 25.0),
        noise_slope_db_per_octave=-3.0,
        speckle_rate_hz=(0.0, 3.0),
        speckle_length_samples=(1.0, 30.0),
        speckle_level_db=(-5.0, 5.0),
        dropout_rate_hz=(0.0, 0.5),
        dropout_duration_ms=(5.0, 20.0),
        dropout_mode="hold",
    ),
    # Cardboard box (the default): soft panel, narrow band, strong low panel mode, moderate optics.
    "cardboard_box": LDVCondition(
        name="cardboard_box",
        highpass_hz=200.0,
        lowpass_hz=2500.0,
        filter_order=4,
        resonances=((350.0, 4.0, 10.0), (1200.0, 6.0, 6.0)),
        gain_variation_db=(2.0, 6.0),
        drift_level_db=(-30.0, -20.0),
        snr_db=(12.0, 18.0),
        noise_slope_db_per_octave=-3.0,
        speckle_rate_hz=(2.0, 10.0),
        speckle_length_samples=(1.0, 100.0),
        speckle_level_db=(0.0, 10.0),
        dropout_rate_hz=(0.5, 2.0),
        dropout_duration_ms=(5.0, 50.0),
        dropout_mode="hold",
    ),
    # Wall: massive, heavily damped; only low frequencies pass, weak signal, rough surface -> many speckles,
    # and signal loss (zero) rather than hold when the return fades.
    "wall": LDVCondition(
        name="wall",
        highpass_hz=100.0,
        lowpass_hz=1500.0,
        filter_order=4,
        resonances=((180.0, 2.0, 6.0),),
        gain_variation_db=(0.0, 3.0),
        drift_level_db=(-20.0, -10.0),
        snr_db=(5.0, 12.0),
        noise_slope_db_per_octave=-6.0,
        speckle_rate_hz=(8.0, 20.0),
        speckle_length_samples=(1.0, 100.0),
        speckle_level_db=(0.0, 12.0),
        dropout_rate_hz=(1.0, 3.0),
        dropout_duration_ms=(10.0, 50.0),
        dropout_mode="zero",
    ),
    # Throat skin: soft tissue, broad damped resonances (like throat microphones), breathing and pulse motion
    # -> strong drift and gain changes, speckle decorrelation from moving tissue.
    "throat": LDVCondition(
        name="throat",
        highpass_hz=150.0,
        lowpass_hz=2000.0,
        filter_order=2,
        resonances=((600.0, 2.0, 5.0), (1500.0, 3.0, 4.0)),
        gain_variation_db=(4.0, 10.0),
        drift_level_db=(-20.0, -10.0),
        snr_db=(15.0, 25.0),
        noise_slope_db_per_octave=-3.0,
        speckle_rate_hz=(5.0, 15.0),
        speckle_length_samples=(1.0, 60.0),
        speckle_level_db=(-5.0, 5.0),
        dropout_rate_hz=(0.2, 1.0),
        dropout_duration_ms=(5.0, 30.0),
        dropout_mode="hold",
    ),
}

#: The default condition: a plausible but challenging surface (band ~200-2500 Hz, two resonances, SNR around
#: 15 dB, clicks and drop-outs), close to the only public paired set up reported (a box, see the coherence row).
DEFAULT_CONDITION = "cardboard_box"


def get_condition(name_or_path: str | os.PathLike | LDVCondition) -> LDVCondition:
    """Resolve a condition: an :class:`LDVCondition` (returned as is), a preset name or a JSON file path.

    Raises:
        ValueError: for an unknown name (the message lists the presets) or an invalid JSON condition.
    """
    if isinstance(name_or_path, LDVCondition):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ValueError(
            f"`condition` must be a preset name, a JSON path or an LDVCondition, got {type(name_or_path).__name__}"
        )
    key = str(name_or_path)
    if key in LDV_PRESETS:
        return copy.deepcopy(LDV_PRESETS[key])
    path = Path(key)
    if path.is_file():
        return LDVCondition.from_json(path)
    raise ValueError(
        f"unknown LDV condition {key!r}: expected a preset ({', '.join(sorted(LDV_PRESETS))}) "
        "or the path of an existing JSON file"
    )


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
    num_samples = audio.shape[0]
    # One independent stream per stage, so disabling a stage leaves the others' draws unchanged.
    rng_gain, rng_drift, rng_noise, rng_speckle, rng_dropout = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(5)
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
    if normalize:
        peak = float(np.max(np.abs(audio)))
        if peak > 0:
            audio *= PEAK_LEVEL / peak
    out = audio.astype(np.float32)
    if return_events:
        return out, LDVEvents(clicks=clicks, dropouts=dropouts, params=params)
    return out


# --------------------------------------------------------------------------------------------------------
# Command line: ldv-qwen2audio simulate
# --------------------------------------------------------------------------------------------------------
def file_seed(seed: int, relative_path: str | os.PathLike) -> int:
    """Per-file seed: a 64-bit hash of the global ``seed`` and the file's POSIX relative path.

    Stable across machines and runs, independent of file order, different for every file.
    """
    key = f"{int(seed)}:{Path(relative_path).as_posix()}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``simulate`` subcommand."""
    parser = subparsers.add_parser(
        "simulate",
        help="turn a folder of microphone audio into simulated LDV audio",
        description=(
            "Write the simulated LDV version of every wav/flac/ogg file under --input at the same relative path "
            "under --output (mono, same sample rate, format and length), copy metadata.csv/metadata.jsonl so an "
            "audiofolder stays an audiofolder, and write the condition to condition.json."
        ),
    )
    parser.add_argument("--input", required=True, type=Path, help="folder of microphone audio (searched recursively)")
    parser.add_argument("--output", required=True, type=Path, help="folder for the LDV audio (created)")
    parser.add_argument(
        "--condition",
        default=DEFAULT_CONDITION,
        help=f"preset ({', '.join(LDV_PRESETS)}) or path of a condition JSON (default: {DEFAULT_CONDITION})",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="global seed; each file's seed derives from it and its relative path"
    )
    parser.add_argument("--plot", action="store_true", help="write mic_vs_ldv.png for the first file")
    parser.set_defaults(func=run_simulate)


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def _simulate_file(
    source: Path, target: Path, condition: LDVCondition, seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Simulate one file; returns (mic mono, ldv, sample rate). Writes ``target`` atomically."""
    import soundfile as sf

    info = sf.info(str(source))
    data, sample_rate = sf.read(str(source), dtype="float64", always_2d=True)
    mono = data.mean(axis=1)
    ldv = simulate_ldv(mono, sample_rate, condition, seed=seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        sf.write(str(partial), ldv, sample_rate, subtype=info.subtype, format=info.format)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)  # only left behind when writing failed
    return mono, ldv, sample_rate


def _metadata_file_columns(fieldnames: list[str]) -> list[str]:
    return [name for name in fieldnames if name == "file_name" or name.endswith("_file_name")]


def _copy_metadata(source: Path, target: Path, failed: set[str]) -> int:
    """Copy an audiofolder metadata file, dropping rows whose file failed; returns the number dropped.

    ``failed`` holds POSIX paths relative to the metadata file's folder.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if not failed:
        shutil.copy2(source, target)
        return 0
    dropped = 0
    if source.suffix == ".csv":
        with source.open(newline="", encoding="utf-8") as fin:
            reader = csv.DictReader(fin)
            fieldnames = list(reader.fieldnames or [])
            columns = _metadata_file_columns(fieldnames)
            rows = []
            for row in reader:
                if any(Path(row.get(c) or "").as_posix() in failed for c in columns):
                    dropped += 1
                else:
                    rows.append(row)
        with target.open("w", newline="", encoding="utf-8") as fout:
            writer = csv.DictWriter(fout, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
    else:
        lines = []
        for line in source.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            columns = _metadata_file_columns(list(record))
            if any(Path(str(record[c])).as_posix() in failed for c in columns):
                dropped += 1
            else:
                lines.append(line)
        target.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return dropped


def run_simulate(args: argparse.Namespace) -> int:
    """Handler of ``simulate``; returns 0 when every file was converted, 1 when any failed, 2 on bad arguments."""
    import soundfile as sf
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    source_root = Path(args.input).resolve()
    target_root = Path(args.output).resolve()
    if not source_root.is_dir():
        logger.error("--input %s is not a folder", args.input)
        return 2
    if target_root == source_root:
        logger.error("--output must differ from --input (%s)", args.input)
        return 2
    try:
        condition = get_condition(args.condition)
    except ValueError as err:
        logger.error("--condition: %s", err)
        return 2
    if condition.impulse_response is not None and not Path(condition.impulse_response).is_file():
        logger.error("impulse_response of condition %r not found: %s", condition.name, condition.impulse_response)
        return 2

    def wanted(path: Path, names: tuple[str, ...], by_suffix: bool) -> bool:
        if not path.is_file() or _is_within(path, target_root):  # output may live inside the input
            return False
        return path.suffix.lower() in names if by_suffix else path.name in names

    candidates = sorted(source_root.rglob("*"))
    files = [p for p in candidates if wanted(p, AUDIO_EXTENSIONS, by_suffix=True)]
    metadata = [p for p in candidates if wanted(p, METADATA_FILES, by_suffix=False)]
    if not files:
        logger.error("no %s files under %s", "/".join(AUDIO_EXTENSIONS), source_root)
        return 1
    target_root.mkdir(parents=True, exist_ok=True)
    condition.to_json(target_root / "condition.json")
    logger.info("simulating %d files with condition %r, seed %d", len(files), condition.name, args.seed)

    failures: list[tuple[Path, str]] = []
    plotted = not args.plot
    with logging_redirect_tqdm():
        for path in tqdm(files, desc="simulate", unit="file"):
            relative = path.relative_to(source_root)
            try:
                mic, ldv, sample_rate = _simulate_file(
                    path, target_root / relative, condition, file_seed(args.seed, relative)
                )
            except (sf.SoundFileError, RuntimeError, ValueError, OSError) as err:
                failures.append((relative, f"{type(err).__name__}: {err}"))
                logger.error("skipped %s: %s: %s", relative, type(err).__name__, err)
                continue
            if not plotted:
                from ..evaluation.plots import plot_mic_vs_ldv

                title = f"{relative.as_posix()} ({condition.name})"
                png = plot_mic_vs_ldv(mic, ldv, sample_rate, target_root / "mic_vs_ldv.png", title=title)
                logger.info("wrote %s", png)
                plotted = True

    failed_paths = [source_root / rel for rel, _ in failures]
    for meta in metadata:
        failed_here = {p.relative_to(meta.parent).as_posix() for p in failed_paths if _is_within(p, meta.parent)}
        dropped = _copy_metadata(meta, target_root / meta.relative_to(source_root), failed_here)
        if dropped:
            logger.warning("%s: dropped %d row(s) of files that failed", meta.relative_to(source_root), dropped)

    logger.info("wrote %d of %d files to %s", len(files) - len(failures), len(files), target_root)
    if failures:
        logger.error(
            "%d file(s) failed:\n%s", len(failures), "\n".join(f"  {rel}: {reason}" for rel, reason in failures)
        )
        return 1
    return 0
