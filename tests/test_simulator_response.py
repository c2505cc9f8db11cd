# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The simulator's stages measured back from its output against their documented formulas.

High-pass attenuation against the Butterworth magnitude, the peaking filter's gain at its centre (RBJ cookbook:
exactly ``gain_db`` there), the noise's spectral slope in dB per octave, and each speckle event's RMS against
``speckle_level_db`` relative to the surface-filtered speech RMS.
"""

import math

import numpy as np
import pytest
from scipy import signal

from modeling_qwen2audio_ldv.synthetic.simulator import LDVCondition, simulate_ldv

RATE = 16_000


def white_noise(seconds: float, seed: int = 1234) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(seconds * RATE))


def surface_only(**overrides) -> LDVCondition:
    """A flat 200-3000 Hz order-4 surface with every random effect off, plus ``overrides``."""
    fields = dict(name="test", highpass_hz=200.0, lowpass_hz=3000.0, filter_order=4, resonances=(), snr_db=None)
    fields.update(overrides)
    return LDVCondition(**fields)


def simulate(mic, condition, seed=0):
    return simulate_ldv(mic, RATE, condition, seed=seed, normalize=False).astype(np.float64)


def butterworth_highpass_power(freqs, corner: float, order: int) -> np.ndarray:
    """|H(f)|^2 of the bilinear-transform Butterworth high-pass: 1 / (1 + (tan(pi fc/fs) / tan(pi f/fs))^(2N))."""
    ratio = np.tan(np.pi * corner / RATE) / np.tan(np.pi * np.asarray(freqs, dtype=np.float64) / RATE)
    return 1.0 / (1.0 + ratio ** (2 * order))


@pytest.mark.parametrize(("corner", "order"), [(200.0, 4), (300.0, 2)])
def test_high_pass_attenuation_matches_butterworth_formula(corner, order):
    # The low-pass sits far above the bands measured here; its effect on them is < 0.01 dB.
    mic = white_noise(20.0)
    ldv = simulate(mic, surface_only(highpass_hz=corner, lowpass_hz=7000.0, filter_order=order))
    # Same input through the simulator and unfiltered: the PSD ratio is |H|^2, independent of the noise draw.
    freqs, out = signal.welch(ldv, fs=RATE, nperseg=8192)
    _, inp = signal.welch(mic, fs=RATE, nperseg=8192)
    for f in (0.5 * corner, 0.7 * corner, corner, 2.0 * corner):
        band = np.abs(freqs - f) <= 8.0
        measured_db = 10 * math.log10(np.mean(out[band]) / np.mean(inp[band]))
        expected_db = 10 * math.log10(np.mean(butterworth_highpass_power(freqs[band], corner, order)))
        # By hand for 200 Hz order 4: half the corner -> (tan(pi 200/fs)/tan(pi 100/fs))^8 = 2.0^8 -> -24.1 dB;
        # at the corner -3.0 dB.
        assert measured_db == pytest.approx(expected_db, abs=0.5), (f, measured_db, expected_db)
    if (corner, order) == (200.0, 4):
        band = np.abs(freqs - 100.0) <= 8.0
        assert 10 * math.log10(np.mean(out[band]) / np.mean(inp[band])) == pytest.approx(-24.1, abs=0.7)


@pytest.mark.parametrize(("centre", "q", "gain_db"), [(1000.0, 4.0, 10.0), (1800.0, 10.0, 6.0), (600.0, 2.0, -8.0)])
def test_resonance_gain_at_its_centre(centre, q, gain_db):
    mic = white_noise(20.0, seed=7)
    flat = simulate(mic, surface_only(lowpass_hz=7000.0))
    peaked = simulate(mic, surface_only(lowpass_hz=7000.0, resonances=((centre, q, gain_db),)))
    freqs, p_flat = signal.welch(flat, fs=RATE, nperseg=8192)
    _, p_peak = signal.welch(peaked, fs=RATE, nperseg=8192)
    at = int(np.argmin(np.abs(freqs - centre)))  # bin spacing 1.95 Hz: within 1 Hz of the centre
    assert 10 * math.log10(p_peak[at] / p_flat[at]) == pytest.approx(gain_db, abs=0.3)
    # the shape around the centre (its width follows Q): the analogue peaking prototype
    # H(s) = (s^2 + s A/Q + 1) / (s^2 + s/(A Q) + 1), A = 10^(gain/40), mapped by the bilinear transform
    # pre-warped at the centre, s = j tan(pi f/fs) / tan(pi f0/fs)
    amp = 10.0 ** (gain_db / 40.0)
    for ratio in (0.8, 0.9, 1.1, 1.25, 3.0):
        k = int(np.argmin(np.abs(freqs - ratio * centre)))
        s_ = 1j * np.tan(np.pi * freqs[k] / RATE) / np.tan(np.pi * centre / RATE)
        expected_db = 20 * math.log10(abs((s_**2 + s_ * amp / q + 1) / (s_**2 + s_ / (amp * q) + 1)))
        measured_db = 10 * math.log10(p_peak[k] / p_flat[k])
        assert measured_db == pytest.approx(expected_db, abs=0.3), (ratio, measured_db, expected_db)


@pytest.mark.parametrize("slope", [-3.0, -6.0, 3.0])
def test_noise_slope_in_db_per_octave(slope):
    mic = white_noise(10.0, seed=3)
    condition = surface_only(lowpass_hz=7000.0, snr_db=(0.0, 0.0), noise_slope_db_per_octave=slope)
    noise = simulate(mic, condition, seed=5) - simulate(mic, surface_only(lowpass_hz=7000.0), seed=5)
    freqs, psd = signal.welch(noise, fs=RATE, nperseg=4096)
    band = (freqs >= 125.0) & (freqs <= 4000.0)  # five octaves, above the 20 Hz flat floor
    fitted = np.polyfit(np.log2(freqs[band]), 10 * np.log10(psd[band]), 1)[0]
    assert fitted == pytest.approx(slope, abs=0.25)
    # -3 dB/octave (pink): equal power per octave -> 125-250 Hz and 2-4 kHz carry the same power
    if slope == -3.0:
        def octave_power(low):
            inside = (freqs >= low) & (freqs < 2 * low)
            return np.sum(psd[inside])

        assert 10 * math.log10(octave_power(125.0) / octave_power(2000.0)) == pytest.approx(0.0, abs=1.0)


@pytest.mark.parametrize(("level_range", "expected_db"), [((8.0, 8.0), 8.0), ((-12.0, -12.0), -12.0)])
def test_each_click_rms_against_speckle_level(level_range, expected_db):
    mic = white_noise(20.0, seed=9)
    clean = simulate(mic, surface_only(), seed=4)
    reference_rms = math.sqrt(np.mean(clean**2))  # the surface-filtered speech RMS (no gain variation)
    condition = surface_only(speckle_rate_hz=(3.0, 3.0), speckle_length_samples=(600.0, 1000.0),
                             speckle_level_db=level_range)
    noisy, events = simulate_ldv(mic, RATE, condition, seed=4, normalize=False, return_events=True)
    burst = noisy.astype(np.float64) - clean
    assert events.clicks.shape[0] >= 30
    levels = []
    for start, end in events.clicks:
        if end - start < 500:  # an event clipped at the end of the signal
            continue
        levels.append(20 * math.log10(math.sqrt(np.mean(burst[start:end] ** 2)) / reference_rms))
    levels = np.asarray(levels)
    # ~600-1000 correlated Gaussian samples per event: RMS within ~+-1 dB of the level
    assert np.all(np.abs(levels - expected_db) < 1.2), levels
    assert np.mean(levels) == pytest.approx(expected_db, abs=0.25)


def test_click_levels_spread_over_their_range():
    mic = white_noise(40.0, seed=2)
    clean = simulate(mic, surface_only(), seed=1)
    reference_rms = math.sqrt(np.mean(clean**2))
    condition = surface_only(speckle_rate_hz=(3.0, 3.0), speckle_length_samples=(800.0, 1000.0),
                             speckle_level_db=(2.0, 14.0))
    noisy, events = simulate_ldv(mic, RATE, condition, seed=1, normalize=False, return_events=True)
    burst = noisy.astype(np.float64) - clean
    levels = np.asarray([20 * math.log10(math.sqrt(np.mean(burst[s:e] ** 2)) / reference_rms)
                         for s, e in events.clicks if e - s >= 800])
    assert levels.min() > 2.0 - 1.0 and levels.max() < 14.0 + 1.0
    assert np.mean(levels) == pytest.approx(8.0, abs=1.0)  # uniform in dB on [2, 14]: mean 8
