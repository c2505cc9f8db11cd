# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""benchmarks/real_voice_sources.py: its ceiling trains on exactly the clips the demo does not score."""

import csv
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def oracle():
    spec = importlib.util.spec_from_file_location("real_voice_sources", REPO / "benchmarks" / "real_voice_sources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _set(folder: Path, durations: list[float]) -> Path:
    (folder / "mic").mkdir(parents=True)
    with open(folder / "mic" / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "text", "speaker", "duration"])
        for index, seconds in enumerate(durations):
            writer.writerow([f"clip{index:02d}.wav", f"text {index}", "asterisk:allison_smith", seconds])
    return folder


def test_trains_on_the_clips_the_demo_does_not_score(oracle, tmp_path):
    # 10 clips, 4 scored: the demo's step is ceil(10 / 4) = 3, so it scores clips 0, 3, 6, 9; clip 5 is too long
    folder = _set(tmp_path, [1.0, 2.0, 3.0, 1.5, 2.5, 20.0, 1.0, 1.0, 4.0, 2.0])
    recordings = oracle.oracle_recordings(folder, samples=4, copies=2, max_seconds=12.0)
    names = [r.path.name for r in recordings]
    assert names == ["clip01.wav", "clip02.wav", "clip04.wav", "clip07.wav", "clip08.wav"] * 2
    assert {r.speaker for r in recordings} == {"oracle:asterisk:allison_smith"}
    assert [r.seconds for r in recordings[:5]] == [2.0, 3.0, 2.5, 1.0, 4.0]


def test_refuses_a_sample_that_scores_every_clip(oracle, tmp_path):
    folder = _set(tmp_path, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="nothing is left to train on"):
        oracle.oracle_recordings(folder, samples=3, copies=1, max_seconds=12.0)


def test_a_seeded_draw_of_the_unscored_clips(oracle, tmp_path):
    folder = _set(tmp_path, [1.0] * 20)  # step ceil(20 / 5) = 4: clips 0, 4, 8, 12, 16 are scored
    drawn = oracle.oracle_recordings(folder, samples=5, copies=3, max_seconds=12.0, clips=4)
    names = [r.path.name for r in drawn[:4]]
    assert drawn == drawn[:4] * 3 and len(set(names)) == 4
    assert not {int(n[4:6]) for n in names} & {0, 4, 8, 12, 16}
    assert names == sorted(names)  # in the set's order
    assert names == [r.path.name for r in oracle.oracle_recordings(folder, 5, 3, 12.0, clips=4)[:4]]
    with pytest.raises(ValueError, match="--clips"):
        oracle.oracle_recordings(folder, samples=5, copies=1, max_seconds=12.0, clips=16)


def test_talker_folder_joins_the_clips_into_long_48_khz_files(oracle, tmp_path):
    """``--speech talker``: the clips in order, a second of silence after each, a new file once one holds
    ``--file_minutes``; 3 one-second clips with 3 s per file give files of 4 s and 2 s at 48 kHz."""
    import numpy as np
    import soundfile as sf

    from modeling_qwen2audio_ldv.data.other_speakers import Recording

    clips = []
    for index, frequency in enumerate((200.0, 300.0, 400.0)):
        path = tmp_path / f"clip{index}.wav"
        sf.write(path, (0.3 * np.sin(2 * np.pi * frequency * np.arange(16000) / 16000)).astype(np.float32), 16000)
        clips.append(Recording(path, "oracle:x", "en", "text", 1.0))
    folder = oracle.talker_folder(clips, tmp_path / "talker", file_minutes=3 / 60)
    files = sorted(folder.glob("*.flac"))
    assert [f.name for f in files] == ["talker-000.flac", "talker-001.flac"]
    assert [(sf.info(f).samplerate, sf.info(f).frames) for f in files] == [(48000, 4 * 48000), (48000, 2 * 48000)]
    first, _ = sf.read(files[0])  # clip 0 (0-1 s), pause, clip 1 (2-3 s), pause
    back = first[::3]  # 48 -> 16 kHz by taking every third sample of the band-limited tone
    assert np.abs(back[32000 + 800 : 48000 - 800] - np.asarray(sf.read(clips[1].path)[0])[800:-800]).max() < 1e-3
    assert np.abs(first[48000 + 4800 : 2 * 48000 - 4800]).max() < 1e-3  # the pause after the first clip
