"""The one audio path (decode a file, mono at the model's rate, arrays from any value) and the shared CJK rule."""

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from modeling_qwen2audio_ldv.audio import (
    SAMPLING_RATE,
    audio_to_array,
    decode_audio_file,
    load_audio,
    load_recording,
    to_mono,
)
from modeling_qwen2audio_ldv.evaluation.scoring import transcript_words
from modeling_qwen2audio_ldv.inference.windows import join_texts, stitch
from modeling_qwen2audio_ldv.text import CJK_CHAR


def noise(samples: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    shape = (samples,) if channels == 1 else (samples, channels)
    return (0.1 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def test_a_datasets_clip_at_the_models_rate_passes_unchanged():
    clip = noise(SAMPLING_RATE)
    array = audio_to_array({"array": clip, "sampling_rate": SAMPLING_RATE})
    assert array is clip  # float32 at the right rate: no copy, no resampling
    assert audio_to_array(torch.from_numpy(clip)).dtype == np.float32
    assert load_recording({"array": clip, "sampling_rate": SAMPLING_RATE}) is clip


def test_a_stereo_file_at_another_rate_is_averaged_and_resampled(tmp_path):
    stereo = noise(32_000, channels=2, seed=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 32_000, subtype="FLOAT")
    samples, rate = decode_audio_file(str(path))
    assert samples.shape == (32_000, 2) and samples.dtype == np.float32 and rate == 32_000
    expected = resample_poly(stereo.mean(axis=1), 1, 2).astype(np.float32)
    np.testing.assert_array_equal(load_audio(path), expected)
    np.testing.assert_array_equal(load_recording(str(path)), expected)  # transcription reads files the same way
    # the same samples given as an audio dict or a (channels, samples) array take the same path
    np.testing.assert_array_equal(load_recording({"array": stereo, "sampling_rate": 32_000}), expected)
    np.testing.assert_array_equal(to_mono(stereo.T, 32_000, "clip"), expected)


def test_an_array_at_another_rate_is_resampled_at_the_rate_given():
    """Transcription takes arrays at any ``sampling_rate``: 8 kHz in, twice the samples out (polyphase 2/1);
    the rate of a datasets dict wins over the argument."""
    clip = noise(8_000, seed=2)
    expected = resample_poly(clip, 2, 1).astype(np.float32)
    np.testing.assert_array_equal(load_recording(clip, sampling_rate=8_000), expected)
    np.testing.assert_array_equal(load_recording(torch.from_numpy(clip), sampling_rate=8_000), expected)
    np.testing.assert_array_equal(load_recording({"array": clip, "sampling_rate": 8_000}, sampling_rate=44_100),
                                  expected)
    at_44k = noise(44_100, seed=3)  # 44.1 kHz -> 16 kHz: up 160, down 441 (the ratio reduced by gcd 100)
    np.testing.assert_array_equal(load_recording(at_44k, sampling_rate=44_100),
                                  resample_poly(at_44k, 160, 441).astype(np.float32))
    assert load_recording(at_44k, sampling_rate=44_100).shape == (16_000,)


def test_audio_bytes_decode_whatever_their_path(tmp_path):
    """A datasets ``Audio(decode=False)`` value holds the bytes and the file's original name, which need not
    exist here (an archive member, another machine): the bytes are decoded, the path is not opened."""
    import io

    clip = noise(4_000, seed=4)
    buffer = io.BytesIO()
    sf.write(buffer, clip, 16_000, format="WAV", subtype="FLOAT")
    samples, rate = decode_audio_file({"path": "archive.tar.gz::clips/0001.wav", "bytes": buffer.getvalue()})
    assert rate == 16_000 and samples.shape == (4_000, 1)
    np.testing.assert_array_equal(samples[:, 0], clip)
    with pytest.raises(FileNotFoundError, match="clips/0001.wav"):
        decode_audio_file({"path": "clips/0001.wav", "bytes": None})


def test_errors_name_the_clip(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF0000WAVEnot audio")
    with pytest.raises(RuntimeError, match="soundfile"):
        load_audio(bad)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_recording(str(tmp_path / "missing.wav"))
    with pytest.raises(ValueError, match="audio of example 3: audio is at 8000 Hz but Qwen2-Audio needs 16000 Hz"):
        audio_to_array({"array": noise(800), "sampling_rate": 8000}, where="audio of example 3")
    with pytest.raises(ValueError, match="clip.wav: the audio is empty"):
        to_mono(np.zeros(0, dtype=np.float32), SAMPLING_RATE, "clip.wav")
    with pytest.raises(ValueError, match="recording 2: the audio contains NaN"):
        load_recording(np.array([0.0, np.nan], dtype=np.float32), where="recording 2")
    with pytest.raises(ValueError, match="floating point"):
        audio_to_array(np.zeros(10, dtype=np.int16))
    with pytest.raises(ValueError, match="needs 'array' and 'sampling_rate'"):
        load_recording({"path": "x.wav"})
    with pytest.raises(TypeError, match="expected a path"):
        load_recording(3)


def test_one_cjk_rule_for_scoring_and_stitching():
    rare = "\U00020000\U00020001"  # CJK Unified Ideographs Extension B
    assert CJK_CHAR.search(rare) and not CJK_CHAR.search("한국어 abc")  # Hangul is spaced like English
    assert transcript_words(rare) == list(rare)
    assert stitch([rare, "\U00020001\U00020002"], [False, True]) == [rare, "\U00020002"]
    assert join_texts(["一二", rare]) == "一二" + rare
