# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Tests of the other speakers' real recordings (data/other_speakers.py) and their rows in the paired corpus."""

import gzip
import subprocess
from pathlib import Path

import numpy as np
import pytest

from modeling_qwen2audio_ldv.data.held_out import REAL_VOICE_SPEAKERS, HeldOutError, HeldOutRegistry, file_sha256
from modeling_qwen2audio_ldv.data.other_speakers import (
    HELD_OUT_FOLDERS,
    MAX_SECONDS,
    OTHER_SPEAKERS,
    Recording,
    draw_recordings,
    find_recordings,
)
from modeling_qwen2audio_ldv.data.real_voices import ASTERISK_SOUNDS, decode_recording
from test_real_voices import needs_ffmpeg, registry_folder  # noqa: F401  (an empty registry folder per test)

INSTALLED = all((Path("/") / s.folder).is_dir() and (Path("/") / s.transcripts).is_file()
                for s in OTHER_SPEAKERS.values())


def _g722(path: Path, seconds: float, frequency: float) -> None:
    """A tone of ``seconds`` encoded as G.722 (what the packages hold) by ffmpeg."""
    t = np.arange(int(seconds * 16000)) / 16000
    pcm = (0.3 * np.sin(2 * np.pi * frequency * t) * 32767).astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "s16le", "-ar", "16000", "-ac", "1", "-i", "-",
                    "-acodec", "g722", "-f", "g722", str(path)], input=pcm, check=True)


@pytest.fixture
def fake_root(tmp_path):
    """A file system root holding the three packages as `dpkg -x` would unpack them, two or three prompts each:
    one too long, one without a transcript; the Italian transcript file starts with a byte-order mark."""
    root = tmp_path / "root"
    for k, source in enumerate(OTHER_SPEAKERS.values()):
        sounds = root / source.folder
        _g722(sounds / "hello.g722", 1.0, 300 + 100 * k)
        _g722(sounds / "digits" / "1.g722", 0.75, 350 + 100 * k)
        _g722(sounds / "long.g722", MAX_SECONDS + 1.0, 400)  # transcribed, but longer than MAX_SECONDS
        _g722(sounds / "untranscribed.g722", 1.0, 500)
        transcripts = root / source.transcripts
        transcripts.parent.mkdir(parents=True, exist_ok=True)
        bom = "\ufeff" if source.language == "it-IT" else ""
        with gzip.open(transcripts, "wt", encoding="utf-8") as handle:
            handle.write(f"{bom}; Core Asterisk Sounds\n\nhello: bonjour {k}\ndigits/1: un {k}\nlong: long text\n")
    return root


@needs_ffmpeg
def test_find_recordings_keeps_transcribed_clips_within_the_length_limits(fake_root):
    recordings = find_recordings(root=fake_root)
    assert [(r.speaker, r.path.name) for r in recordings] == [
        (speaker, name) for speaker in OTHER_SPEAKERS for name in ("1.g722", "hello.g722")]
    first = recordings[1]
    assert first.text == "bonjour 0" and first.language == "fr-CA"
    # the length from the file size (G.722: 8000 bytes/s) is the decoded length
    assert first.seconds == pytest.approx(decode_recording(first.path).shape[0] / 16000, abs=0.01)
    assert recordings[3].text == "bonjour 1"  # Italian: the byte-order mark did not hide the first line


@needs_ffmpeg
def test_draw_recordings_is_seeded_and_lets_the_speakers_take_turns(fake_root):
    drawn = draw_recordings(5, seed=3, root=fake_root)
    assert [r.speaker for r in drawn] == list(OTHER_SPEAKERS) + list(OTHER_SPEAKERS)[:2]
    assert len(set(drawn)) == 5
    assert draw_recordings(5, seed=3, root=fake_root) == drawn
    assert draw_recordings(0, seed=3, root=fake_root) == []
    with pytest.raises(ValueError, match="asked for 7 recordings; the speakers' packages hold 6"):
        draw_recordings(7, seed=3, root=fake_root)
    with pytest.raises(ValueError, match="must be >= 0"):
        draw_recordings(-1, seed=3, root=fake_root)


def test_missing_packages_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="asterisk-core-sounds-it-g722 asterisk-core-sounds-it"):
        find_recordings(("asterisk:carlo_flora",), root=tmp_path)
    with pytest.raises(ValueError, match="non-empty subset"):
        find_recordings(("asterisk:nobody",), root=tmp_path)


def test_the_test_sets_speaker_is_refused_whatever_the_package():
    # the real-voice set's speaker also reads the Spanish package: both folders map to her held-out id
    assert set(HELD_OUT_FOLDERS.values()) <= set(REAL_VOICE_SPEAKERS)
    assert ASTERISK_SOUNDS.name in HELD_OUT_FOLDERS
    assert not {s.folder.name for s in OTHER_SPEAKERS.values()} & set(HELD_OUT_FOLDERS)
    assert not set(OTHER_SPEAKERS) & set(REAL_VOICE_SPEAKERS)
    with pytest.raises(HeldOutError, match="asterisk:allison_smith"):
        find_recordings(("asterisk:allison_smith",))


@needs_ffmpeg
def test_recordings_become_training_rows_with_their_own_ldv_simulation(fake_root):
    pytest.importorskip("espeakng_loader")
    from modeling_qwen2audio_ldv.synthetic.corpus import _derived_seed, build_paired_corpus
    from modeling_qwen2audio_ldv.synthetic.simulator import simulate_ldv

    recordings = draw_recordings(3, seed=0, root=fake_root)
    plain = build_paired_corpus(num_train=4, num_eval=1, seed=0, conditions=("cardboard_box",), progress=False,
                                mic_augment=False)
    corpus = build_paired_corpus(num_train=4, num_eval=1, seed=0, conditions=("cardboard_box",), progress=False,
                                 mic_augment=False, extra_train_recordings=recordings)
    train = corpus["train"]
    assert len(train) == 7
    # the synthesised utterances and the eval splits are those of the corpus without recordings
    assert train["id"][:4] == plain["train"]["id"] and train["text"][:4] == plain["train"]["text"]
    assert corpus["test"]["text"] == plain["test"]["text"]
    for row, recording in zip(train.select(range(4, 7)), recordings):
        assert row["voice"] == recording.speaker and row["text"] == recording.text and row["rate"] == 0
        clean = decode_recording(recording.path)
        mic = np.asarray(row["mic_audio"]["array"], dtype=np.float32)  # mic_augment off: the recording itself
        assert mic.shape == clean.shape and np.allclose(mic, clean, atol=1e-4)
        expected = simulate_ldv(clean, 16000, "cardboard_box", seed=_derived_seed(0, "ldv", row["id"]))
        assert np.allclose(np.asarray(row["ldv_audio"]["array"]), expected, atol=2e-3), row["id"]


@needs_ffmpeg
def test_the_corpus_refuses_held_out_recordings(fake_root, tmp_path):
    pytest.importorskip("espeakng_loader")
    from modeling_qwen2audio_ldv.synthetic.corpus import build_paired_corpus

    recording = find_recordings(root=fake_root)[0]
    by_speaker = Recording(recording.path, "asterisk:allison_smith", "en-US", "hello", 1.0)
    with pytest.raises(HeldOutError, match="asterisk:allison_smith"):
        build_paired_corpus(num_train=1, num_eval=0, seed=0, progress=False, extra_train_recordings=[by_speaker])
    by_file = HeldOutRegistry(audio_sha256=frozenset({file_sha256(recording.path)}), origins=("a test",))
    with pytest.raises(HeldOutError, match=f"1 file.*{recording.path.name}"):
        build_paired_corpus(num_train=1, num_eval=0, seed=0, progress=False, extra_train_recordings=[recording],
                            held_out=by_file)


@pytest.mark.skipif(not INSTALLED, reason="the Asterisk fr/it/ru packages are not installed (scripts/setup.sh)")
def test_the_installed_packages_hold_three_speakers_of_short_transcribed_prompts():
    recordings = find_recordings()
    counts = {speaker: sum(r.speaker == speaker for r in recordings) for speaker in OTHER_SPEAKERS}
    assert all(count > 400 for count in counts.values()), counts
    assert all(0.5 <= r.seconds <= MAX_SECONDS and r.text for r in recordings)
    assert not any("Allison" in str(r.path) for r in recordings)
