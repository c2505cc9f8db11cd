"""The audio a window of a long recording sends to the model: its sound plus ``EDGE_MARGIN_SECONDS`` on each side
(a soft onset or ending below the sound/pause threshold is kept), never reaching past the window's own cuts.

Hand-built windows and signals, so every sample position below is computed by hand: 16 kHz, 10 ms frames of 160
samples, a faint background (std 1e-4) throughout, loud noise bursts (std 0.3: frame power ~0.09, so the activity
threshold is ~0.09 * 10**-4.5 ~ 2.8e-6) and soft stretches (std 5e-4: power 2.5e-7, 10x below that threshold and
well above the background's 1e-8).
"""

import numpy as np
import pytest

import modeling_qwen2audio_ldv.inference.windows as windows
from modeling_qwen2audio_ldv.inference.windows import Window, window_pieces

RATE = 16000
WINDOW = 2 * RATE  # the planning window (blocks of the activity analysis)


def signal(layout, total=40000, seed=0):
    """``total`` samples of background with ``[(kind, start_sample, end_sample), ...]`` added; kinds ``loud`` and
    ``soft``."""
    rng = np.random.default_rng(seed)
    audio = 1e-4 * rng.standard_normal(total)
    for kind, start, end in layout:
        audio[start:end] += (0.3 if kind == "loud" else 5e-4) * rng.standard_normal(end - start)
    return audio.astype(np.float32)


def test_the_edge_margin_is_the_training_clips_edge():
    assert windows.EDGE_MARGIN_SECONDS == 0.05  # 800 samples, as the positions below assume


def test_a_soft_onset_and_ending_below_the_threshold_are_kept_within_the_margin():
    # window 1 [0, 24000): soft 8000-8640 (40 ms), loud 8640-18240, soft 18240-18880 (40 ms), pause to the cut;
    # window 2 [24000, 40000): loud 24320-32000, soft tail 32000-32320 (20 ms), background to the end
    audio = signal([("soft", 8000, 8640), ("loud", 8640, 18240), ("soft", 18240, 18880),
                    ("loud", 24320, 32000), ("soft", 32000, 32320)])
    plan = [Window(0, 24000, 0, 24000), Window(24000, 40000, 24000, 40000)]
    (bounds_1, clip_1), (bounds_2, clip_2) = window_pieces(audio, plan, WINDOW)
    # the segments follow the loud (active) frames: frames 54..113 and 152..199
    assert bounds_1 == (8640, 18240) and bounds_2 == (24320, 32000)
    # clips: active sound +- 800 samples, so the soft onset (from 8000) and ending (to 18880) are inside
    np.testing.assert_array_equal(clip_1, audio[8640 - 800 : 18240 + 800])
    # window 2 starts at its cut, 320 samples before its sound: the margin stops there (no audio of window 1)
    np.testing.assert_array_equal(clip_2, audio[24000 : 32000 + 800])


def test_the_margin_stops_at_the_end_of_the_recording():
    # sound in frames 12-55 (1920-8960) and from frame 188 (30080) to the last sample
    audio = signal([("loud", 1920, 8960), ("loud", 30080, 40000)])
    plan = [Window(0, 20000, 0, 20000), Window(20000, 40000, 20000, 40000)]
    (_, clip_1), (bounds_2, clip_2) = window_pieces(audio, plan, WINDOW)
    np.testing.assert_array_equal(clip_1, audio[1920 - 800 : 8960 + 800])
    assert bounds_2 == (30080, 40000)  # sound to the last sample: no audio after it to keep
    np.testing.assert_array_equal(clip_2, audio[30080 - 800 : 40000])


@pytest.mark.parametrize("margin_seconds, start", [(0.0, 8640), (0.01, 8480), (0.1, 7040)])
def test_the_clip_follows_the_margin_constant(monkeypatch, margin_seconds, start):
    audio = signal([("soft", 8000, 8640), ("loud", 8640, 18240), ("loud", 30000, 36000)])
    monkeypatch.setattr(windows, "EDGE_MARGIN_SECONDS", margin_seconds)
    (_, clip), _ = window_pieces(audio, [Window(0, 24000, 0, 24000), Window(24000, 40000, 24000, 40000)], WINDOW)
    margin = int(round(margin_seconds * RATE))
    np.testing.assert_array_equal(clip, audio[start : 18240 + margin])
