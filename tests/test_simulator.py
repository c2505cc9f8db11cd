# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Tests of the LDV simulator.

Expected values come from hand formulas (Butterworth magnitude, -1 dBFS peak), from the condition's own
parameters (event rates and durations, measured back from the audio), or from an independent reference
(``np.convolve``); none is copied from the simulator's output.
"""

import argparse
import csv
import json
import logging
import math

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from modeling_qwen2audio_ldv.cli.simulate import register_cli
from modeling_qwen2audio_ldv.synthetic.simulator import (
    DEFAULT_CONDITION,
    LDV_PRESETS,
    LDVCondition,
    get_condition,
    simulate_ldv,
)

RATE = 16_000
MINUS_1_DBFS = 10.0 ** (-1.0 / 20.0)  # the documented output peak, 0.8913


def white_noise(seconds: float, rate: int = RATE, seed: int = 1234) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(seconds * rate))


def surface_only(**overrides) -> LDVCondition:
    """A flat 200-3000 Hz order-4 surface with every random effect off, plus ``overrides``."""
    fields = dict(name="test", highpass_hz=200.0, lowpass_hz=3000.0, filter_order=4, resonances=(), snr_db=None)
    fields.update(overrides)
    return LDVCondition(**fields)


def runs(mask: np.ndarray) -> np.ndarray:
    """``[start, end)`` of every run of True in a boolean array, shape (num_runs, 2)."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1)


# ---------------------------------------------------------------------------------------------------------
# Presets and determinism
# ---------------------------------------------------------------------------------------------------------
def test_presets_exist_and_differ():
    assert {"window", "cardboard_box", "wall", "throat"} <= set(LDV_PRESETS)
    assert DEFAULT_CONDITION in LDV_PRESETS
    surfaces = {(c.highpass_hz, c.lowpass_hz, c.resonances) for c in LDV_PRESETS.values()}
    assert len(surfaces) == len(LDV_PRESETS)
    for name, condition in LDV_PRESETS.items():
        assert condition.name == name
        assert 1 <= len(condition.resonances) <= 4


@pytest.mark.parametrize("name", sorted(LDV_PRESETS))
@pytest.mark.parametrize("rate", [8_000, 16_000, 44_100])
def test_preset_output_shape_dtype_and_peak(name, rate):
    mic = white_noise(1.0, rate)
    ldv = simulate_ldv(mic, rate, name, seed=3)
    assert ldv.dtype == np.float32
    assert ldv.shape == mic.shape
    assert np.all(np.isfinite(ldv))
    assert np.max(np.abs(ldv)) == pytest.approx(MINUS_1_DBFS, rel=1e-6)


@pytest.mark.parametrize("name", sorted(LDV_PRESETS))
def test_same_seed_identical_different_seed_differs(name):
    mic = white_noise(2.0)
    first = simulate_ldv(mic, RATE, name, seed=11)
    again = simulate_ldv(mic, RATE, LDV_PRESETS[name], seed=11)
    other = simulate_ldv(mic, RATE, name, seed=12)
    assert np.array_equal(first, again)
    assert np.mean(np.abs(first - other)) > 1e-3


def test_integer_input_is_accepted():
    pcm = (white_noise(0.5) * 3000).astype(np.int16)
    ldv = simulate_ldv(pcm, RATE, seed=0)
    assert ldv.dtype == np.float32 and ldv.shape == pcm.shape


# ---------------------------------------------------------------------------------------------------------
# Surface filter
# ---------------------------------------------------------------------------------------------------------
def butterworth_power(freqs: np.ndarray, corner: float, order: int, rate: int, kind: str) -> np.ndarray:
    """|H(f)|^2 of a digital Butterworth filter designed by the bilinear transform.

    The analogue prototype 1 / (1 + (f/fc)^(2N)) is evaluated at pre-warped frequencies tan(pi f / fs), so the
    digital response is 1 / (1 + (tan(pi f/fs) / tan(pi fc/fs))^(2N)) for the low-pass; the ratio is inverted for
    the high-pass.
    """
    ratio = np.tan(np.pi * freqs / rate) / np.tan(np.pi * corner / rate)
    if kind == "highpass":
        with np.errstate(divide="ignore"):  # DC: infinite ratio, zero gain
            ratio = 1.0 / ratio
    return 1.0 / (1.0 + ratio ** (2 * order))


def test_band_pass_attenuation_matches_butterworth_formula():
    condition = surface_only()  # 200-3000 Hz, order 4; noise, drift, gain, speckle and drop-outs off
    ldv = simulate_ldv(white_noise(20.0), RATE, condition, seed=0)
    freqs, psd = signal.welch(ldv.astype(np.float64), fs=RATE, nperseg=2048)
    expected = butterworth_power(freqs, 200.0, 4, RATE, "highpass") * butterworth_power(
        freqs, 3000.0, 4, RATE, "lowpass"
    )
    passband = (freqs >= 800) & (freqs <= 1600)
    stopband = (freqs >= 6000) & (freqs <= 7000)
    corner = (freqs >= 2950) & (freqs <= 3050)

    def band_ratio_db(values, band):
        return 10 * math.log10(np.mean(values[passband]) / np.mean(values[band]))

    # By hand at 6 kHz: tan(pi*6000/16000) / tan(pi*3000/16000) = 2.414 / 0.668 = 3.61; 3.61^8 = 2.9e4 -> 44.7 dB,
    # rising to ~58 dB at 7 kHz; the band average is ~51.5 dB.
    expected_stop_db = band_ratio_db(expected, stopband)
    assert expected_stop_db > 44.7
    measured_stop_db = band_ratio_db(psd, stopband)
    assert measured_stop_db >= 20.0
    assert measured_stop_db == pytest.approx(expected_stop_db, abs=1.0)
    # Around the corner the formula gives ~3 dB (half power at exactly 3 kHz).
    assert band_ratio_db(psd, corner) == pytest.approx(band_ratio_db(expected, corner), abs=0.5)


# ---------------------------------------------------------------------------------------------------------
# Impulse response
# ---------------------------------------------------------------------------------------------------------
def test_user_fir_impulse_response_matches_np_convolve(tmp_path):
    fir = np.array([0.6, 0.0, -0.3, 0.15, 0.05])
    ir_path = tmp_path / "fir.wav"
    sf.write(ir_path, fir, RATE, subtype="DOUBLE")
    mic = white_noise(1.0)
    plain = simulate_ldv(mic, RATE, surface_only(), seed=0, normalize=False).astype(np.float64)
    with_ir = simulate_ldv(mic, RATE, surface_only(impulse_response=str(ir_path)), seed=0, normalize=False)
    reference = np.convolve(plain, fir)[: mic.shape[0]]
    np.testing.assert_allclose(with_ir, reference, rtol=0, atol=1e-5 * np.max(np.abs(reference)))


def test_delay_impulse_response_and_resampling(tmp_path):
    delay = 37
    mic = white_noise(1.0)
    plain = simulate_ldv(mic, RATE, surface_only(), seed=0, normalize=False).astype(np.float64)

    same_rate = np.zeros(64)
    same_rate[delay] = 1.0
    sf.write(tmp_path / "delay.wav", same_rate, RATE, subtype="DOUBLE")
    delayed = simulate_ldv(mic, RATE, surface_only(impulse_response=str(tmp_path / "delay.wav")), normalize=False)
    np.testing.assert_allclose(delayed[:delay], 0.0, atol=1e-6)
    np.testing.assert_allclose(delayed[delay:], plain[:-delay], rtol=0, atol=1e-5 * np.max(np.abs(plain)))

    # The same delay written at 32 kHz (2 * delay samples) must land at `delay` samples at 16 kHz.
    double_rate = np.zeros(256)
    double_rate[2 * delay] = 1.0
    sf.write(tmp_path / "delay32k.wav", double_rate, 2 * RATE, subtype="DOUBLE")
    resampled = simulate_ldv(mic, RATE, surface_only(impulse_response=str(tmp_path / "delay32k.wav")), normalize=False)
    xcorr = signal.correlate(resampled.astype(np.float64), plain, mode="full", method="fft")
    assert int(np.argmax(xcorr)) - (plain.shape[0] - 1) == delay


def test_missing_impulse_response_is_reported(tmp_path):
    condition = surface_only(impulse_response=str(tmp_path / "nope.wav"))
    with pytest.raises(FileNotFoundError, match="impulse_response"):
        simulate_ldv(white_noise(0.1), RATE, condition)


# ---------------------------------------------------------------------------------------------------------
# Event statistics, measured from the audio
# ---------------------------------------------------------------------------------------------------------
def test_zero_dropout_rate_and_durations():
    rate, seconds = 8_000, 600.0  # ~1200 drop-outs: count std ~3%, so the 10% tolerance is > 3 sigma
    condition = surface_only(dropout_rate_hz=(2.0, 2.0), dropout_duration_ms=(5.0, 50.0), dropout_mode="zero")
    ldv, events = simulate_ldv(white_noise(seconds, rate), rate, condition, seed=5, return_events=True)
    zero_runs = runs(ldv == 0.0)  # filtered noise is never exactly 0: every zero run is a drop-out
    durations_ms = (zero_runs[:, 1] - zero_runs[:, 0]) * 1000.0 / rate
    assert zero_runs.shape[0] / seconds == pytest.approx(2.0, rel=0.10)
    assert durations_ms.min() >= 5.0 and durations_ms.max() <= 50.0
    # Uniform durations on [5, 50] ms: mean 27.5 ms, std 13 ms -> std of the mean ~0.37 ms; 1.5 ms is 4 sigma.
    assert durations_ms.mean() == pytest.approx(27.5, abs=1.5)
    np.testing.assert_array_equal(events.dropouts, zero_runs)


def test_hold_dropouts_repeat_the_last_sample():
    condition = surface_only(dropout_rate_hz=(3.0, 3.0), dropout_duration_ms=(5.0, 50.0), dropout_mode="hold")
    seconds = 60.0
    ldv, events = simulate_ldv(white_noise(seconds), RATE, condition, seed=9, return_events=True)
    # A held stretch of L samples shows up as L consecutive zero differences after the last good sample;
    # filtered noise never repeats a value by itself for 80 samples (5 ms).
    flat = runs(np.diff(ldv) == 0.0)
    flat = flat[(flat[:, 1] - flat[:, 0]) >= 5 * RATE // 1000]
    assert flat.shape[0] / seconds == pytest.approx(3.0, rel=0.25)  # ~180 events: count std ~7.5%
    held = flat + 1  # diff index i compares samples i and i+1
    interior = events.dropouts[events.dropouts[:, 0] > 0]
    np.testing.assert_array_equal(held, interior)
    for start, end in held:
        assert np.all(ldv[start:end] == ldv[start - 1])


def test_speckle_rate_and_lengths():
    seconds = 120.0  # ~1200 clicks: count std ~3%, tolerance 10% > 3 sigma
    mic = white_noise(seconds)
    clean = simulate_ldv(mic, RATE, surface_only(), seed=4, normalize=False)
    condition = surface_only(speckle_rate_hz=(10.0, 10.0), speckle_length_samples=(1.0, 100.0))
    noisy, events = simulate_ldv(mic, RATE, condition, seed=4, normalize=False, return_events=True)
    clicks = runs(noisy != clean)  # speckle is additive: the audio differs only inside events
    lengths = clicks[:, 1] - clicks[:, 0]
    assert clicks.shape[0] / seconds == pytest.approx(10.0, rel=0.10)
    assert lengths.min() >= 1 and lengths.max() <= 100
    # Log-uniform lengths on [1, 101): median sqrt(101) ~ 10 samples, so clicks outnumber bursts.
    assert 6 <= np.median(lengths) <= 16
    np.testing.assert_array_equal(events.clicks, clicks)


def test_disabled_effects_leave_surface_output_unchanged():
    mic = white_noise(1.0)
    plain = simulate_ldv(mic, RATE, surface_only(), seed=1)
    zero_rates = surface_only(speckle_rate_hz=(0.0, 0.0), dropout_rate_hz=(0.0, 0.0), gain_variation_db=None)
    assert np.array_equal(simulate_ldv(mic, RATE, zero_rates, seed=2), plain)


def test_each_stage_draws_from_its_own_stream():
    """Switching one random stage on leaves the other stages' draws as they were: with the same seed, the noise
    and drift added together are the noise added alone plus the drift added alone (each a difference from the
    plain surface output), sample for sample. A shared random stream would shift the noise's draws by the
    drift's. Another seed gives other noise."""
    mic = white_noise(2.0)

    def added(seed=6, **effects):
        plain = simulate_ldv(mic, RATE, surface_only(), seed=seed, normalize=False).astype(np.float64)
        return simulate_ldv(mic, RATE, surface_only(**effects), seed=seed, normalize=False).astype(np.float64) - plain

    noise_only = added(snr_db=(10.0, 20.0))
    drift_only = added(drift_level_db=(-30.0, -20.0))
    both = added(snr_db=(10.0, 20.0), drift_level_db=(-30.0, -20.0))
    scale = np.max(np.abs(noise_only))
    assert np.max(np.abs(both - (noise_only + drift_only))) <= 1e-6 * scale
    assert np.max(np.abs(added(seed=7, snr_db=(10.0, 20.0)) - noise_only)) > 0.1 * scale


def test_snr_of_white_noise_floor():
    # Noise with a 0 dB/octave slope (white) at SNR 10 dB: noise power = speech power / 10.
    mic = white_noise(5.0)
    clean = simulate_ldv(mic, RATE, surface_only(), seed=2, normalize=False).astype(np.float64)
    noisy = simulate_ldv(
        mic, RATE, surface_only(snr_db=(10.0, 10.0), noise_slope_db_per_octave=0.0), seed=2, normalize=False
    ).astype(np.float64)
    noise = noisy - clean
    assert 10 * math.log10(np.mean(clean**2) / np.mean(noise**2)) == pytest.approx(10.0, abs=0.01)
    freqs, psd = signal.welch(noise, fs=RATE, nperseg=1024)
    low, high = np.mean(psd[(freqs > 500) & (freqs < 1500)]), np.mean(psd[(freqs > 5000) & (freqs < 7000)])
    assert 10 * math.log10(low / high) == pytest.approx(0.0, abs=0.5)


def test_gain_variation_stays_within_its_depth():
    t = np.arange(5 * RATE) / RATE
    tone = np.sin(2 * np.pi * 1000.0 * t)  # in the pass band
    plain = simulate_ldv(tone, RATE, surface_only(), normalize=False).astype(np.float64)
    varied = simulate_ldv(tone, RATE, surface_only(gain_variation_db=(6.0, 6.0)), normalize=False).astype(np.float64)
    usable = np.abs(plain) > 0.1 * np.max(np.abs(plain))  # the gain is applied after the filter: a sample ratio
    gain_db = 20 * np.log10(varied[usable] / plain[usable])
    assert np.max(np.abs(gain_db)) <= 6.0 + 1e-3
    assert np.ptp(gain_db) > 3.0  # it does vary


def test_drift_level_and_band():
    mic = white_noise(8.0)
    plain = simulate_ldv(mic, RATE, surface_only(), seed=3, normalize=False).astype(np.float64)
    drifting = simulate_ldv(mic, RATE, surface_only(drift_level_db=(-20.0, -20.0)), seed=3, normalize=False)
    drift = drifting.astype(np.float64) - plain
    assert 10 * math.log10(np.mean(drift**2) / np.mean(plain**2)) == pytest.approx(-20.0, abs=0.01)
    freqs, psd = signal.welch(drift, fs=RATE, nperseg=2**15)
    assert np.sum(psd[freqs > 40.0]) < 0.01 * np.sum(psd)  # random walk low-passed at 20 Hz: below the speech band


# ---------------------------------------------------------------------------------------------------------
# Serialisation and validation
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LDV_PRESETS))
def test_json_round_trip(name, tmp_path):
    condition = LDV_PRESETS[name]
    path = condition.to_json(tmp_path / f"{name}.json")
    assert isinstance(json.loads(path.read_text()), dict)
    assert LDVCondition.from_json(path) == condition
    assert LDVCondition.from_dict(json.loads(json.dumps(condition.to_dict()))) == condition
    assert get_condition(str(path)) == condition


def test_json_relative_impulse_response_resolves_next_to_file(tmp_path):
    (tmp_path / "ir.json").write_text(json.dumps({"name": "mine", "impulse_response": "ir.wav"}))
    condition = get_condition(tmp_path / "ir.json")
    assert condition.impulse_response == str((tmp_path / "ir.wav").resolve())


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"name": ""}, "name"),
        ({"highpass_hz": -5.0}, "highpass_hz"),
        ({"lowpass_hz": 100.0}, "lowpass_hz"),
        ({"filter_order": 0}, "filter_order"),
        ({"resonances": [(500.0, 4.0, 6.0)] * 5}, "resonances"),
        ({"resonances": [(500.0, 4.0)]}, r"resonances\[0\]"),
        ({"resonances": [(500.0, 0.0, 6.0)]}, r"resonances\[0\]"),
        ({"snr_db": (20.0, 10.0)}, "snr_db"),
        ({"snr_db": 15.0}, "snr_db"),
        ({"drift_level_db": (-30.0, 5.0)}, "drift_level_db"),
        ({"speckle_rate_hz": (0.0, 500.0)}, "speckle_rate_hz"),
        ({"speckle_length_samples": None}, "speckle_length_samples"),
        ({"dropout_duration_ms": (5.0, "x")}, "dropout_duration_ms"),
        ({"dropout_mode": "freeze"}, "dropout_mode"),
        ({"noise_slope_db_per_octave": float("nan")}, "noise_slope_db_per_octave"),
    ],
)
def test_invalid_condition_field_is_named(overrides, field):
    with pytest.raises(ValueError, match=field):
        surface_only(**overrides)


@pytest.mark.parametrize(
    "waveform, rate, seed, message",
    [
        (np.zeros((2, 100)), RATE, 0, "1-D"),
        (np.zeros(0), RATE, 0, "empty"),
        (np.array([0.0, np.nan, 1.0]), RATE, 0, "non-finite"),
        (np.array([0.0, np.inf]), RATE, 0, "non-finite"),
        (np.zeros(100), 0, 0, "sample_rate"),
        (np.zeros(100), RATE, -1, "seed"),
        (np.zeros(100), 300, 0, "highpass_hz"),  # 200 Hz high-pass above Nyquist (150 Hz)
    ],
)
def test_bad_inputs_raise(waveform, rate, seed, message):
    with pytest.raises(ValueError, match=message):
        simulate_ldv(waveform, rate, DEFAULT_CONDITION, seed=seed)


def test_unknown_condition_lists_presets():
    with pytest.raises(ValueError, match="cardboard_box.*throat.*wall.*window"):
        get_condition("marble")
    with pytest.raises(ValueError, match="unknown LDV condition field"):
        LDVCondition.from_dict({"name": "x", "snr": [1, 2]})


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------
def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ldv-qwen2audio")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["simulate", *argv])
    return args.func(args)


def test_cli_round_trip_with_metadata_and_a_corrupt_file(tmp_path, caplog):
    mic_dir, out_dir, again_dir = tmp_path / "mic", tmp_path / "ldv", tmp_path / "ldv_again"
    (mic_dir / "sub").mkdir(parents=True)
    speech = 0.3 * white_noise(1.0)
    sf.write(mic_dir / "a.wav", speech, RATE, subtype="PCM_16")
    sf.write(mic_dir / "d.wav", speech, RATE, subtype="PCM_16")  # same audio, different path -> different seed
    sf.write(mic_dir / "sub" / "b.flac", np.stack([speech, -0.5 * speech], axis=1), RATE)  # stereo
    sf.write(mic_dir / "c.ogg", speech[: RATE // 2], RATE)
    (mic_dir / "bad.wav").write_bytes(b"RIFF-this-is-not-audio" * 10)
    rows = [("a.wav", "alpha"), ("bad.wav", "broken"), ("c.ogg", "gamma"), ("d.wav", "delta"), ("sub/b.flac", "beta")]
    with (mic_dir / "metadata.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("file_name", "transcription"), *rows])

    with caplog.at_level(logging.ERROR):
        rc = run_cli("--input", str(mic_dir), "--output", str(out_dir), "--condition", "wall", "--seed", "7", "--plot")
    assert rc != 0
    assert "bad.wav" in caplog.text

    good = ["a.wav", "c.ogg", "d.wav", "sub/b.flac"]
    for name in good:
        mic_info, ldv_info = sf.info(mic_dir / name), sf.info(out_dir / name)
        assert (ldv_info.samplerate, ldv_info.frames, ldv_info.channels) == (mic_info.samplerate, mic_info.frames, 1)
        assert ldv_info.format == mic_info.format
    assert not (out_dir / "bad.wav").exists()
    a, _ = sf.read(out_dir / "a.wav")
    d, _ = sf.read(out_dir / "d.wav")
    assert np.max(np.abs(a)) == pytest.approx(MINUS_1_DBFS, abs=1e-4)  # PCM_16 quantisation
    assert not np.array_equal(a, d)

    with (out_dir / "metadata.csv").open(newline="") as f:
        copied = list(csv.reader(f))
    assert copied == [["file_name", "transcription"], *[list(r) for r in rows if r[0] != "bad.wav"]]
    assert LDVCondition.from_json(out_dir / "condition.json") == LDV_PRESETS["wall"]
    assert (out_dir / "mic_vs_ldv.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (mic_dir / "bad.wav").unlink()  # the rerun succeeds and reproduces the first run exactly
    assert run_cli("--input", str(mic_dir), "--output", str(again_dir), "--condition", "wall", "--seed", "7") == 0
    for name in good:
        np.testing.assert_array_equal(sf.read(out_dir / name)[0], sf.read(again_dir / name)[0])


def test_cli_copies_jsonl_and_skips_output_inside_input(tmp_path):
    mic_dir = tmp_path / "mic"
    mic_dir.mkdir()
    sf.write(mic_dir / "x.flac", 0.1 * white_noise(0.5), RATE)
    jsonl = '{"file_name": "x.flac", "text": "hello"}\n'
    (mic_dir / "metadata.jsonl").write_text(jsonl)
    condition_path = LDV_PRESETS["throat"].to_json(tmp_path / "throat.json")
    out_dir = mic_dir / "ldv"  # inside the input: must not be read back as input
    assert run_cli("--input", str(mic_dir), "--output", str(out_dir), "--condition", str(condition_path)) == 0
    assert run_cli("--input", str(mic_dir), "--output", str(out_dir), "--condition", str(condition_path)) == 0
    assert (out_dir / "metadata.jsonl").read_text() == jsonl
    assert sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*")) == [
        "condition.json",
        "metadata.jsonl",
        "x.flac",
    ]


def test_cli_unknown_condition_fails_cleanly(tmp_path, caplog):
    (tmp_path / "mic").mkdir()
    sf.write(tmp_path / "mic" / "x.wav", np.zeros(100), RATE)
    with caplog.at_level(logging.ERROR):
        assert run_cli("--input", str(tmp_path / "mic"), "--output", str(tmp_path / "o"), "--condition", "marble") == 2
    assert "window" in caplog.text


def test_random_conditions_are_seeded_valid_within_their_ranges_and_round_trip(tmp_path):
    from modeling_qwen2audio_ldv.synthetic.conditions import MIX_RANDOM_SURFACES, mix_conditions, random_condition

    drawn = [random_condition(seed) for seed in range(40)]
    assert random_condition(7) == drawn[7] and drawn[7].name == "random-7"
    assert len({(c.highpass_hz, c.lowpass_hz) for c in drawn}) == 40  # different surfaces
    for condition in drawn:
        assert 80.0 <= condition.highpass_hz <= 400.0 and 1500.0 <= condition.lowpass_hz <= 4500.0
        assert len(condition.resonances) <= 3
        assert all(200.0 <= f <= 3000.0 and 2.0 <= q <= 12.0 and 3.0 <= g <= 12.0 for f, q, g in condition.resonances)
        low, high = condition.snr_db
        assert 6.0 <= low <= 24.0 and 4.0 <= high - low <= 10.0
        assert condition.dropout_mode in ("hold", "zero")
    # a name the CLI and recipes accept, and a JSON round trip like any other condition
    assert get_condition("random-7") == drawn[7]
    drawn[7].to_json(tmp_path / "surface.json")
    assert get_condition(str(tmp_path / "surface.json")) == drawn[7]
    with pytest.raises(ValueError, match="random-<seed>"):
        get_condition("random-x")
    mix = mix_conditions()
    assert [c.name for c in mix] == list(LDV_PRESETS) + [f"random-{k}" for k in range(MIX_RANDOM_SURFACES)]
    audio = simulate_ldv(np.sin(np.linspace(0, 400 * np.pi, 16000)).astype(np.float32), 16000, drawn[3], seed=0)
    assert audio.shape == (16000,) and np.isfinite(audio).all()
