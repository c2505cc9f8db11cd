# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""``--talker_recordings``: a talker's microphone recordings cut at pauses into pieces (data/talker.py), bad files
named and skipped, held-out files refused, and the pieces filling ``--talker_share`` of the demo corpus's rows."""

import numpy as np
import pytest
import soundfile as sf

from modeling_qwen2audio_ldv.data.held_out import HeldOutError, HeldOutRegistry, file_sha256
from modeling_qwen2audio_ldv.data.talker import (
    TALKER_TEXT,
    cut_at_pauses,
    prepare_talker_recordings,
    talker_rows,
)
from test_real_voices import registry_folder  # noqa: F401  (an empty registry folder per test)

RATE = 16000


def tone(seconds, rate=RATE, frequency=220.0):
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def hush(seconds, rate=RATE, seed=0):
    """Room noise at -80 dBFS: a pause, not digital silence."""
    return (1e-4 * np.random.default_rng(seed).standard_normal(int(round(seconds * rate)))).astype(np.float32)


def at(seconds):
    return int(round(seconds * RATE))


# ------------------------------------------------------------------------------------------------ cutting
def test_phrases_are_joined_up_to_the_longest_piece_with_50_ms_kept_around_the_sound():
    # sound at 1-3 s, 3.5-6.5 s and 7.5-11.5 s: the first two fit one piece of <= 8 s (0.95-6.55 s, their edges
    # with 50 ms kept), the third would make it 10.6 s long and starts a piece of its own (7.45-11.55 s)
    audio = np.concatenate([hush(1), tone(2), hush(0.5), tone(3), hush(1), tone(4), hush(1)])
    assert cut_at_pauses(audio, max_seconds=8.0) == [(at(0.95), at(6.55)), (at(7.45), at(11.55))]
    # with 4-second pieces nothing joins: each stretch is a piece
    assert cut_at_pauses(audio, max_seconds=4.2) == [(at(0.95), at(3.05)), (at(3.45), at(6.55)),
                                                     (at(7.45), at(11.55))]


def test_short_sound_and_background_alone_give_no_piece():
    assert cut_at_pauses(np.concatenate([hush(1), tone(0.3), hush(1)])) == []  # 0.4 s with its margins < 0.5 s
    assert cut_at_pauses(hush(3)) == []  # -80 dBFS: under the -60 dBFS floor, though it is all "sound" to itself
    assert cut_at_pauses(np.zeros(at(2), np.float32)) == []
    with pytest.raises(ValueError, match="min_seconds"):
        cut_at_pauses(tone(1), max_seconds=1.0, min_seconds=2.0)


def test_speech_without_pauses_is_cut_into_pieces_that_fit_and_do_not_overlap():
    audio = np.concatenate([hush(0.5), tone(20.0), hush(0.5)])
    pieces = cut_at_pauses(audio, max_seconds=8.0)
    assert len(pieces) == 3  # 20 s in pieces of at most 8 s
    assert all(end - start <= at(8.0) for start, end in pieces)
    assert pieces[0][0] == at(0.45) and pieces[-1][1] == at(20.55)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))  # contiguous: nothing lost, nothing twice


# ------------------------------------------------------------------------------------------------ a folder
def _folder(tmp_path):
    folder = tmp_path / "alice"
    (folder / "day2").mkdir(parents=True)
    # 44.1 kHz stereo FLAC: two phrases (1-3 s and 3.5-5.5 s) that join into one piece
    phrase = np.concatenate([hush(1, 44100), tone(2, 44100), hush(0.5, 44100), tone(2, 44100), hush(1, 44100)])
    sf.write(folder / "interview.flac", np.stack([phrase, phrase], axis=1), 44100)
    sf.write(folder / "day2" / "note.wav", np.concatenate([hush(0.5), tone(1.5), hush(0.5)]), RATE)
    (folder / "broken.wav").write_bytes(b"RIFF not really a wave file")
    sf.write(folder / "silent.wav", np.zeros(RATE, np.float32), RATE)
    (folder / "notes.txt").write_text("not audio: ignored")
    return folder


def test_a_folder_becomes_16_khz_mono_pieces_and_bad_files_are_named_and_skipped(tmp_path, caplog):
    folder = _folder(tmp_path)
    talker = prepare_talker_recordings(folder, tmp_path / "pieces", max_seconds=8.0)
    assert talker.files == 2 and [r.path.parent for r in talker.recordings] == [tmp_path / "pieces"] * 2
    assert {r.speaker for r in talker.recordings} == {"talker:alice"}
    assert {r.text for r in talker.recordings} == {TALKER_TEXT}
    # files in sorted order: day2/note.wav (0.45-2.05 s), then interview.flac (0.95-5.55 s, resampled)
    assert [round(r.seconds, 2) for r in talker.recordings] == [1.6, 4.6]
    for recording in talker.recordings:
        info = sf.info(recording.path)
        assert (info.samplerate, info.channels) == (RATE, 1)
        assert info.frames == at(recording.seconds)
    assert talker.seconds == pytest.approx(6.2)
    assert [(p.rsplit("/", 1)[1], why.split(" (")[0]) for p, why in talker.skipped] == [
        ("broken.wav", "cannot be decoded"), ("silent.wav", "holds no speech of 0.5 s or more")]
    assert "broken.wav" in caplog.text and "silent.wav" in caplog.text
    # the default longest piece, 4 s: the interview's two phrases (0.95-3.05 s, 3.45-5.55 s) no longer join
    assert [round(r.seconds, 2) for r in prepare_talker_recordings(folder, tmp_path / "pieces").recordings] == [
        1.6, 2.1, 2.1]
    with pytest.raises(ValueError, match=r"broken\.wav cannot be decoded"):
        prepare_talker_recordings(folder, tmp_path / "pieces", on_bad_file="error")


def test_no_audio_no_speech_and_held_out_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        prepare_talker_recordings(tmp_path / "absent", tmp_path / "pieces")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no audio files"):
        prepare_talker_recordings(empty, tmp_path / "pieces")
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    sf.write(quiet / "a.wav", np.zeros(RATE, np.float32), RATE)
    with pytest.raises(ValueError, match=r"no file gave a piece of speech: .*a\.wav: holds no speech"):
        prepare_talker_recordings(quiet, tmp_path / "pieces")
    folder = _folder(tmp_path)
    registry = HeldOutRegistry(audio_sha256=frozenset({file_sha256(folder / "day2" / "note.wav")}))
    with pytest.raises(HeldOutError, match=r"1 file\(s\) are held-out test data.*note\.wav"):
        prepare_talker_recordings(folder, tmp_path / "pieces", held_out=registry)


def test_rows_use_every_piece_evenly_in_a_seeded_order():
    pieces = ["a", "b", "c"]
    rows = talker_rows(pieces, 7, seed=0)
    assert sorted(rows.count(p) for p in pieces) == [2, 2, 3]
    assert rows[:3] == rows[3:6] and sorted(rows[:3]) == pieces  # every piece once before any twice
    assert rows == talker_rows(pieces, 7, seed=0)
    assert len(set(talker_rows(pieces, 2, seed=1))) == 2  # fewer rows than pieces: distinct pieces
    assert talker_rows(pieces, 0, seed=0) == [] and talker_rows([], 5, seed=0) == []
    assert {tuple(talker_rows(pieces, 3, seed=s)) for s in range(10)} != {tuple(rows[:3])}  # the seed matters
    with pytest.raises(ValueError, match="count"):
        talker_rows(pieces, -1, seed=0)


# ------------------------------------------------------------------------------------------------ train_hf.py
def test_the_pieces_fill_the_talker_share_of_the_demo_rows(tmp_path, monkeypatch):
    """``--talker_recordings DIR --talker_share 0.4`` with 10 training rows: 4 talker rows (the 2 pieces twice) go
    to the corpus builder as extra recordings beside 6 synthetic utterances; distill only, demo corpus only."""
    import modeling_qwen2audio_ldv.synthetic.corpus as corpus_module
    from modeling_qwen2audio_ldv.training.arguments import DataArguments
    from modeling_qwen2audio_ldv.training.data import build_demo_data, load_training_data

    seen = []

    def fake_corpus(num_train, num_eval, seed, conditions, extra_train_recordings=(), **kwargs):
        seen.append((num_train, list(extra_train_recordings)))
        raise RuntimeError("stop here")

    monkeypatch.setattr(corpus_module, "build_paired_corpus", fake_corpus)
    args = DataArguments(talker_recordings=str(_folder(tmp_path)), talker_share=0.4, num_train_utterances=10,
                         talker_max_seconds=8.0)
    with pytest.raises(RuntimeError, match="stop here"):
        build_demo_data(args, seed=0)
    (num_train, rows), = seen
    assert num_train == 6 and len(rows) == 4
    assert sorted(r.seconds for r in rows) == [1.6, 1.6, 4.6, 4.6]
    for share in (0.0, 1.0, 0.01):  # 0.01 of 10 rows rounds to none
        with pytest.raises(ValueError, match="--talker_share"):
            build_demo_data(DataArguments(talker_recordings=args.talker_recordings, talker_share=share,
                                          num_train_utterances=10), seed=0)
    for objective in ("lm", "lm+distill"):
        with pytest.raises(ValueError, match="untranscribed recordings: use --objective distill"):
            load_training_data(args, seed=0, objective=objective)
    with pytest.raises(ValueError, match="with --train_data, add the talker's paired recordings"):
        load_training_data(DataArguments(talker_recordings=args.talker_recordings, train_data=str(tmp_path)), seed=0,
                           objective="distill")
    assert len(seen) == 1
