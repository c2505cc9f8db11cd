# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""LDV recording conditions: what :func:`~modeling_qwen2audio_ldv.synthetic.simulator.simulate_ldv` simulates.

A :class:`LDVCondition` is one fixed surface (band, resonances, optional measured impulse response) plus
per-utterance random ranges of the corruptions (gain variation, drift, noise floor, speckle, drop-outs). The
presets in :data:`LDV_PRESETS` are four surfaces with the reported characteristics of LDV speech; the comment above
them lists the sources. A condition is immutable and round-trips through JSON (:meth:`LDVCondition.to_json`), so a
new surface needs no code: write its JSON and pass the path wherever a preset name is accepted.

Example:
    >>> from modeling_qwen2audio_ldv.synthetic.conditions import LDVCondition, get_condition
    >>> get_condition("window").lowpass_hz
    4000.0
    >>> LDVCondition(name="door", highpass_hz=250.0, lowpass_hz=3000.0).snr_db
    (10.0, 20.0)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Range = tuple[float, float]
Resonance = tuple[float, float, float]

#: Sample rate (Hz) at which ``speckle_length_samples`` is expressed; lengths scale with the actual rate. A unit of
#: the condition's fields, not the rate the model hears (``audio.SAMPLING_RATE``, the same number today): stored
#: conditions and presets must keep their meaning whatever rate the simulator or the model runs at.
REFERENCE_RATE_HZ = 16_000
#: Valid values of ``LDVCondition.dropout_mode``.
DROPOUT_MODES = ("hold", "zero")

# Plausibility bounds of each range field: (low bound, high bound, unit). Wider than the typical reported values
# (the field documentation of LDVCondition) so that stress conditions remain expressible, narrow enough to catch
# unit mistakes (kHz vs Hz).
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
        highpass_hz: high-pass corner of the surface band (Hz); reported: 100-300 Hz.
        lowpass_hz: low-pass corner of the surface band (Hz); reported: 1.5-4 kHz. Skipped (with a warning) at
            sample rates whose Nyquist frequency is not above it.
        filter_order: order of each Butterworth section (high-pass and low-pass); 4 gives 24 dB/octave.
        resonances: 0-4 peaking filters ``(centre Hz, Q, gain dB)`` (RBJ biquads). Real surfaces have 1-4
            (reported: centre 200-3000 Hz, Q 2-15, gain +3..+15 dB); an empty tuple is a flat, idealised surface.
        impulse_response: path of a WAV/FLAC with a measured surface impulse response, or None. Applied by
            causal convolution after the filters, resampled to the signal's rate, multi-channel files averaged;
            the output keeps the input's length (the IR's tail past the end is dropped).
        gain_variation_db: range of the maximum excursion (dB) of a slow random gain curve (knots every
            ``simulator.GAIN_KNOT_INTERVAL_S`` seconds, monotone cubic interpolation); reported: up to +-10 dB.
        drift_level_db: range of the RMS of the low-frequency drift (a random walk low-passed at
            ``simulator.DRIFT_CUTOFF_HZ``) relative to the speech RMS (dB); reported: -30..-10 dB.
        snr_db: range of the signal-to-noise ratio (dB) of the Gaussian noise floor; the signal power is the
            mean power of the whole utterance after the surface and gain stages; reported: 0-30 dB, default 15.
        noise_slope_db_per_octave: spectral slope of the noise power density (dB/octave); 0 white, -3 pink,
            -6 brown. Flat below ``simulator.NOISE_FLOOR_HZ``.
        speckle_rate_hz: range of the rate of speckle events (events per second); reported: 0-20.
        speckle_length_samples: range of the event length in samples at 16 kHz (scaled to the actual rate),
            drawn log-uniformly so short clicks outnumber long bursts; reported: 1-100.
        speckle_level_db: range of each event's RMS relative to the speech RMS (dB), drawn per event.
        dropout_rate_hz: range of the rate of drop-outs (events per second); reported: 0-3.
        dropout_duration_ms: range of each drop-out's duration (ms), drawn uniformly; reported: 5-50.
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
# Presets. Every parameter of every preset is here. Sources:
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
    if key.startswith("random-") and key[len("random-"):].isdigit():
        return random_condition(int(key[len("random-"):]))
    path = Path(key)
    if path.is_file():
        return LDVCondition.from_json(path)
    raise ValueError(
        f"unknown LDV condition {key!r}: expected a preset ({', '.join(sorted(LDV_PRESETS))}), random-<seed> "
        "(a surface drawn by random_condition) or the path of an existing JSON file"
    )


def random_condition(seed: int, name: str | None = None) -> LDVCondition:
    """One surface drawn over the reported ranges of the source list above (a stand-in for a surface nobody
    simulated): band 80-400 Hz to 1.5-4.5 kHz, 0-3 resonances (200-3000 Hz, Q 2-12, +3..+12 dB), a gain variation
    of up to 8 dB, drift -35..-12 dB, an SNR window of 4-10 dB width starting at 6-24 dB, speckle 0-12 per second,
    drop-outs 0-2 per second held or zeroed. The same ``seed`` gives the same condition; ``name`` defaults to
    ``random-<seed>``.

    Example:
        >>> random_condition(3) == random_condition(3)
        True
    """
    rng = np.random.default_rng([int(seed), 0x1D5])

    def window(low: float, high: float, width_low: float, width_high: float) -> tuple[float, float]:
        start = float(rng.uniform(low, high))
        return start, start + float(rng.uniform(width_low, width_high))

    resonances = tuple(
        (float(math.exp(rng.uniform(math.log(200.0), math.log(3000.0)))), float(rng.uniform(2.0, 12.0)),
         float(rng.uniform(3.0, 12.0)))
        for _ in range(int(rng.integers(0, 4))))
    return LDVCondition(
        name=name or f"random-{int(seed)}",
        highpass_hz=float(rng.uniform(80.0, 400.0)),
        lowpass_hz=float(rng.uniform(1500.0, 4500.0)),
        filter_order=int(rng.integers(2, 7)),
        resonances=resonances,
        gain_variation_db=window(0.0, 4.0, 0.0, 4.0),
        drift_level_db=window(-35.0, -22.0, 0.0, 10.0),
        snr_db=window(6.0, 24.0, 4.0, 10.0),
        noise_slope_db_per_octave=float(rng.uniform(-6.0, 0.0)),
        speckle_rate_hz=window(0.0, 6.0, 0.0, 6.0),
        speckle_length_samples=(1.0, float(rng.uniform(10.0, 100.0))),
        speckle_level_db=window(-5.0, 5.0, 0.0, 8.0),
        dropout_rate_hz=window(0.0, 1.0, 0.0, 1.0),
        dropout_duration_ms=window(3.0, 10.0, 5.0, 40.0),
        dropout_mode=("hold", "zero")[int(rng.integers(2))],
    )


#: Random surfaces of :func:`mix_conditions` (seeds 0 to this - 1); draw unseen test surfaces from other seeds.
MIX_RANDOM_SURFACES = 16


def mix_conditions(num_random: int = MIX_RANDOM_SURFACES) -> tuple[LDVCondition, ...]:
    """The multi-surface training mix: the four presets and ``num_random`` surfaces of :func:`random_condition`
    (seeds ``0 .. num_random - 1``), for one adapter meant for surfaces nobody simulated."""
    return tuple(copy.deepcopy(LDV_PRESETS[name]) for name in LDV_PRESETS) + tuple(
        random_condition(seed) for seed in range(num_random))
