"""Transcription of recordings of any length: window planning, stitching, the Python API and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from modeling_qwen2audio_ldv import cli
from modeling_qwen2audio_ldv.audio import find_audio_files
from modeling_qwen2audio_ldv.inference.transcribe import transcribe
from modeling_qwen2audio_ldv.inference.windows import plan_windows, seam_overlap, stitch, window_samples
from modeling_qwen2audio_ldv.inference.writers import to_srt

REPO = Path(__file__).resolve().parents[1]
RATE = 16000


def bursts(layout, seed=0):
    """Noise bursts (amplitude 0.3) and faint background (1e-4) from ``[(kind, seconds), ...]``."""
    rng = np.random.default_rng(seed)
    parts = [(0.3 if kind == "speech" else 1e-4) * rng.standard_normal(int(seconds * RATE)) for kind, seconds in layout]
    return np.concatenate(parts).astype(np.float32)


def tone(seconds, amplitude, hz=440.0):
    """A sine of peak ``amplitude``: a stand-in for speech whose windows can be told apart by their peak."""
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ planning
def test_window_comes_from_the_processor(tiny_base):
    _, processor = tiny_base
    assert window_samples(processor) == processor.feature_extractor.n_samples == 2 * RATE  # the tiny base: 2 s


def test_cuts_fall_in_the_pauses():
    # speech 1.2 s, pause 0.5 s, speech 1.5 s, pause 0.4 s, speech 1.0 s with a 2 s window
    audio = bursts([("speech", 1.2), ("pause", 0.5), ("speech", 1.5), ("pause", 0.4), ("speech", 1.0)])
    windows = plan_windows(audio, 2 * RATE, int(0.1 * RATE))
    assert len(windows) == 3
    first_pause, second_pause = (1.2 * RATE, 1.7 * RATE), (3.2 * RATE, 3.6 * RATE)
    assert first_pause[0] < windows[0].cut_after < first_pause[1]
    assert second_pause[0] < windows[1].cut_after < second_pause[1]
    for window in windows:
        assert window.end - window.start <= 2 * RATE
    assert windows[0].start == 0 and windows[-1].end == len(audio)


def test_speech_without_pauses_is_cut_to_fit_with_the_overlap():
    audio = bursts([("speech", 7.3)])
    window, overlap = 2 * RATE, int(0.2 * RATE)
    windows = plan_windows(audio, window, overlap)
    assert len(windows) >= 4  # 7.3 s in windows of 2 s that share 0.2 s: at least 4
    for previous, following in zip(windows, windows[1:]):
        assert following.start - previous.start > 0
        assert previous.end - following.start == overlap  # the shared audio, centred on the cut
        assert previous.cut_after == following.cut_before
    assert all(w.end - w.start <= window for w in windows)
    assert windows[-1].end == len(audio)


def test_a_recording_that_fits_is_one_window():
    audio = bursts([("speech", 1.9)])
    assert [(w.start, w.end) for w in plan_windows(audio, 2 * RATE, 1600)] == [(0, len(audio))]


# ------------------------------------------------------------------------------------------------ stitching
def test_stitch_removes_the_words_heard_twice_at_a_seam():
    texts = ["the valve is open and", "open and the pressure is", "pressure is low"]
    assert stitch(texts, [False, True, True]) == ["the valve is open and", "the pressure is", "low"]
    assert seam_overlap("one two Three,".split(), "three four".split()) == 1  # case and punctuation ignored


def test_stitch_keeps_repeats_across_a_silent_seam():
    # a silent shared stretch cannot hold a word twice: "two two" was spoken twice
    assert stitch(["one two", "two three"], [False, False]) == ["one two", "two three"]
    assert stitch(["一二三", "三四五"], [False, True]) == ["一二三", "四五"]


def test_shared_speech_is_judged_over_the_shared_audio_only():
    """Windows ``[0, 2.0 s)`` and ``[1.8 s, 3.5 s)`` share ``[1.8 s, 2.0 s)``. (a) speech everywhere but there: the
    two windows share no speech, though both hold speech; (b) speech only up to 1.95 s: they share speech, though
    the rest of the second window is silent."""
    from modeling_qwen2audio_ldv.inference.windows import Window, window_pieces

    def windows():
        return [Window(0, int(2.0 * RATE), 0, int(1.9 * RATE)), Window(int(1.8 * RATE), int(3.5 * RATE),
                                                                       int(1.9 * RATE), int(3.5 * RATE))]

    silent_overlap = bursts([("speech", 1.7), ("pause", 0.4), ("speech", 1.4)])
    planned = windows()
    pieces = window_pieces(silent_overlap, planned, 2 * RATE)
    assert [w.shared_speech for w in planned] == [False, False]
    assert all(clip is not None for _, clip in pieces)  # both windows are transcribed

    speech_in_overlap = np.concatenate([bursts([("speech", 1.95)]), np.zeros(int(1.55 * RATE), np.float32)])
    planned = windows()
    pieces = window_pieces(speech_in_overlap, planned, 2 * RATE)
    assert [w.shared_speech for w in planned] == [False, True]
    # the second window's own segment [1.9 s, 3.5 s) holds speech up to 1.95 s: it is transcribed
    assert pieces[1][0] == (int(1.9 * RATE), int(1.95 * RATE))


@pytest.mark.parametrize("gap_seconds, expected", [(0.2, "one two two three"), (0.0, "one two three")])
def test_a_repeat_at_a_seam_is_kept_when_the_shared_audio_is_silent(tiny_base, monkeypatch, gap_seconds, expected):
    """Two tones (peaks 0.3, then 0.5) too long for one 2 s window, with 0.1 s shared audio at the cut. With a
    0.2 s gap between them (too short to count as a pause, so the cut shares audio) the cut falls in the gap and
    the shared audio is silent: a word at the end of the first text and the start of the second was said twice
    and stays. Without the gap the cut falls in the first tone and the shared audio holds sound: the repeat is
    the same word heard twice and is kept once. The stand-in for generation names each window by its peak."""
    import modeling_qwen2audio_ldv.inference.transcribe as transcribe_module

    _, processor = tiny_base
    texts = {3: "one two", 5: "two three"}
    monkeypatch.setattr(transcribe_module, "generate_transcripts", lambda model, processor, audios, *a, **k: [
        texts[int(round(10 * float(np.abs(a).max())))] for a in audios])
    gap = bursts([("pause", gap_seconds)], seed=3)
    audio = np.concatenate([tone(1.5, 0.3), gap, tone(1.5, 0.5)])
    result = transcribe(None, processor, audio, overlap_seconds=0.1, progress=False)
    assert [s["text"] for s in result["segments"]] == ["one two", expected.removeprefix("one two ")]
    assert result["text"] == expected


def test_srt_cues():
    result = {"segments": [{"start": 0.5, "end": 2.25, "text": "one two"},
                           {"start": 3661.0, "end": 3662.004, "text": "three"}]}
    assert to_srt(result) == ("1\n00:00:00,500 --> 00:00:02,250\none two\n\n"
                              "2\n01:01:01,000 --> 01:01:02,004\nthree\n")


# ------------------------------------------------------------------------------------------------ Python API
def test_transcribe_arrays_and_a_bad_path(tiny_base, tmp_path, monkeypatch):
    import modeling_qwen2audio_ldv.inference.transcribe as transcribe_module

    model, processor = tiny_base
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF0000WAVEnot audio")
    clips = [bursts([("speech", 0.8)], seed=1), str(bad), bursts([("speech", 4.5)], seed=2)]
    batches = []
    generate = transcribe_module.generate_transcripts
    monkeypatch.setattr(transcribe_module, "generate_transcripts", lambda m, p, audios, *a, **k: batches.append(
        [len(x) for x in audios]) or generate(m, p, audios, *a, **k))
    results = transcribe(model, processor, clips, batch_size=3, max_new_tokens=3, on_error="skip", progress=False)
    # the short clip and the first two windows of the long one share the first batch; every window fits
    assert batches[0][0] == len(clips[0]) and len(batches[0]) == 3 and sum(map(len, batches)) >= 4
    assert max(max(b) for b in batches) <= window_samples(processor)
    assert [r["file"] for r in results] == [None, str(bad), None]
    assert results[1]["text"] is None and str(bad) in results[1]["error"]
    for result in (results[0], results[2]):
        assert isinstance(result["text"], str) and "error" not in result
        assert result["segments"]
        times = [t for s in result["segments"] for t in (s["start"], s["end"])]
        assert times == sorted(times) and times[0] >= 0 and times[-1] <= result["duration"]
    with pytest.raises(Exception, match="broken.wav"):
        transcribe(model, processor, [str(bad)], progress=False)


@pytest.mark.parametrize("batch_size", [8, 2])
def test_one_failing_window_fails_only_its_own_file(tiny_base, tmp_path, monkeypatch, batch_size):
    """Three files, four windows; generation raises for one window (the first of the two-window file ``b.wav``):
    that file gets the error, the other two keep their own text, whether the windows share one batch (8) or
    the failing batch is followed by one that holds ``b.wav``'s other window (2). The stand-in for generation
    names each window by its loudness (tones of peak 0.2, 0.4, 0.6, 0.8), so a text that lands on the wrong window
    shows."""
    import modeling_qwen2audio_ldv.inference.transcribe as transcribe_module

    _, processor = tiny_base
    texts = {2: "alpha", 4: "bravo", 6: None, 8: "delta"}  # None: this window cannot be transcribed
    calls = []

    def generate(model, processor, audios, *args, **kwargs):
        keys = [int(round(10 * float(np.abs(a).max()))) for a in audios]
        calls.append(keys)
        if any(texts[k] is None for k in keys):
            raise RuntimeError("out of memory in the window of peak 0.6")
        return [texts[k] for k in keys]

    monkeypatch.setattr(transcribe_module, "generate_transcripts", generate)
    pause = bursts([("pause", 0.5)], seed=7)
    files = {"a.wav": tone(0.8, 0.2), "b.wav": np.concatenate([tone(1.2, 0.6), pause, tone(1.2, 0.4)]),
             "c.wav": tone(0.9, 0.8)}
    for name, audio in files.items():
        sf.write(tmp_path / name, audio, RATE, subtype="FLOAT")
    paths = [str(tmp_path / name) for name in files]
    results = transcribe(None, processor, paths, batch_size=batch_size, on_error="skip", progress=False)
    assert calls[0] == ([2, 6, 4, 8] if batch_size == 8 else [2, 6])  # the failing window shares its batch
    assert [r["file"] for r in results] == paths
    assert (results[0]["text"], results[2]["text"]) == ("alpha", "delta")
    assert "error" not in results[0] and "error" not in results[2]
    assert [s["text"] for s in results[0]["segments"]] == ["alpha"]
    assert results[0]["segments"][0]["start"] == 0.0 and results[0]["segments"][0]["end"] == 0.8
    assert results[1]["text"] is None and results[1]["segments"] == []
    assert paths[1] in results[1]["error"] and "out of memory" in results[1]["error"]
    with pytest.raises(RuntimeError, match="b.wav: out of memory"):
        transcribe(None, processor, paths, batch_size=batch_size, progress=False)


def test_segments_start_and_end_where_the_sound_does(tiny_base, monkeypatch):
    """0.3 s of background, a 1.2 s tone, 0.5 s of background, a 1.5 s tone (3.5 s, two 2 s windows): one segment
    per tone, from its first to its last sample (the tones start and end on the 10 ms frame grid), each with its
    own window's text."""
    import modeling_qwen2audio_ldv.inference.transcribe as transcribe_module

    _, processor = tiny_base
    texts = {3: "alpha", 5: "bravo"}
    monkeypatch.setattr(transcribe_module, "generate_transcripts", lambda model, processor, audios, *a, **k: [
        texts[int(round(10 * float(np.abs(a).max())))] for a in audios])
    audio = np.concatenate([bursts([("pause", 0.3)], seed=1), tone(1.2, 0.3), bursts([("pause", 0.5)], seed=2),
                            tone(1.5, 0.5)])
    result = transcribe(None, processor, audio, progress=False)
    assert result == {"file": None, "text": "alpha bravo", "duration": 3.5,
                      "segments": [{"start": 0.3, "end": 1.5, "text": "alpha"},
                                   {"start": 2.0, "end": 3.5, "text": "bravo"}]}


def test_silence_is_not_transcribed(tiny_base):
    model, processor = tiny_base
    result = transcribe(model, processor, np.zeros(3 * RATE, dtype=np.float32), progress=False)
    assert result == {"file": None, "text": "", "segments": [], "duration": 3.0}


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_transcribes_a_folder_with_one_corrupt_file(tiny_base_dir, tmp_path, capsys):
    folder = tmp_path / "recordings"
    (folder / "day2").mkdir(parents=True)
    sf.write(folder / "a.wav", bursts([("speech", 0.7)], seed=3), RATE)
    stereo_44k = np.stack([bursts([("speech", 1.0)], seed=4)] * 2, axis=1)
    sf.write(folder / "day2" / "b.flac", np.repeat(stereo_44k, 2, axis=0)[: int(1.0 * 32000)], 32000)
    (folder / "day2" / "c.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (folder / "metadata.csv").write_text("not audio\n")
    output = tmp_path / "out.jsonl"
    code = cli.main(["transcribe", str(folder), "--model", tiny_base_dir, "--output", str(output),
                     "--batch-size", "2", "--max-new-tokens", "3"])
    assert code == 1
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [Path(r["file"]).name for r in rows] == ["a.wav", "b.flac", "c.wav"]
    assert rows[2]["error"] and "c.wav" in rows[2]["error"]
    for row in rows[:2]:
        assert set(row) >= {"file", "text", "segments"} and isinstance(row["text"], str) and "error" not in row
    assert "c.wav" in capsys.readouterr().err


def test_cli_srt_and_txt_with_an_adapter_and_without(tiny_base_dir, tmp_path):
    from modeling_qwen2audio_ldv import DomainAdapterConfig, Qwen2AudioLDVForConditionalGeneration

    adapter = tmp_path / "adapter"
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        tiny_base_dir, adapter_config=DomainAdapterConfig(num_heads=4, ff_dim=32))
    model.save_pretrained(adapter)
    clip = tmp_path / "long.wav"
    sf.write(clip, bursts([("speech", 1.5), ("pause", 0.5), ("speech", 1.5)], seed=5), RATE)
    assert cli.main(["transcribe", str(clip), "--model", str(adapter), "--output", str(tmp_path / "o.srt"),
                     "--max-new-tokens", "3"]) == 0
    assert (tmp_path / "o.srt").read_text().startswith("1\n00:00:0")
    assert cli.main(["transcribe", str(clip), "--model", str(adapter), "--no-adapter", "--output",
                     str(tmp_path / "o.txt"), "--max-new-tokens", "3"]) == 0
    assert (tmp_path / "o.txt").read_text().endswith("\n")


def test_find_audio_files(tmp_path):
    (tmp_path / "x").mkdir()
    for name in ("x/b.WAV", "a.mp3", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [Path(p).name for p in find_audio_files([tmp_path])] == ["a.mp3", "b.WAV"]


# ------------------------------------------------------------------------------------------------ mini base
@pytest.mark.speech
def test_long_recording_on_the_mini_base():
    """Four spoken digit strings with pauses, in a recording longer than the mini base's window: one segment per
    utterance, in time order, each over its own utterance, and the words of each, none twice."""
    pytest.importorskip("espeakng_loader")
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from modeling_qwen2audio_ldv.synthetic.corpus import synthesize
    from modeling_qwen2audio_ldv.evaluation.scoring import compute_error_rates

    processor = AutoProcessor.from_pretrained(REPO / "mini_base")
    model = Qwen2AudioForConditionalGeneration.from_pretrained(REPO / "mini_base").eval()
    phrases = ["four nine eight", "six one two seven", "three three five", "nine zero one one", "two eight six"]
    clips = {text: synthesize(text, voice="en-gb+klatt3") for text in phrases}
    rng = np.random.default_rng(0)
    texts, parts, spans, position = [], [], [], 0
    while position < 2 * window_samples(processor) or len(texts) < len(phrases):  # several windows, any window
        text = phrases[len(texts) % len(phrases)]
        pause = np.zeros(int(0.5 * RATE), dtype=np.float32)
        spans.append((position / RATE, (position + len(clips[text])) / RATE))
        parts += [clips[text], pause]
        position += len(clips[text]) + len(pause)
        texts.append(text)
    audio = np.concatenate(parts)
    audio = (audio + 1e-3 * rng.standard_normal(len(audio))).astype(np.float32)

    result = transcribe(model, processor, audio, progress=False)
    segments = result["segments"]
    assert len(segments) == len(texts)
    for segment, (start, end) in zip(segments, spans):
        assert start - 0.05 <= segment["start"] < segment["end"] <= end + 0.05
    for previous, following in zip(segments, segments[1:]):
        assert previous["end"] <= following["start"]
    assert compute_error_rates([result["text"]], [" ".join(texts)])["cer"] < 0.1


@pytest.mark.speech
def test_forced_cuts_in_speech_are_stitched_without_repeats(monkeypatch):
    """No pause is long enough to cut at, so every cut falls in speech and the windows share 0.4 s of it: the
    words both windows heard appear once in the stitched text."""
    pytest.importorskip("espeakng_loader")
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    import modeling_qwen2audio_ldv.inference.windows as windows_module
    from modeling_qwen2audio_ldv.synthetic.corpus import synthesize
    from modeling_qwen2audio_ldv.evaluation.scoring import compute_error_rates

    processor = AutoProcessor.from_pretrained(REPO / "mini_base")
    model = Qwen2AudioForConditionalGeneration.from_pretrained(REPO / "mini_base").eval()
    phrases = ["four nine eight", "six one two seven", "three five", "nine zero one"]
    clips = {text: synthesize(text, voice="en-gb+klatt3") for text in phrases}
    # windows of 3 s: the mini base was trained on clips of at most ~4 s (its encoder's window is 30 s)
    window_seconds = 3.0
    assert window_seconds * RATE <= window_samples(processor)
    texts = []
    while sum(len(clips[t]) for t in texts) < 1.5 * window_seconds * RATE or len(texts) < len(phrases):
        texts.append(phrases[len(texts) % len(phrases)])
    audio = np.concatenate([clips[t] for t in texts]).astype(np.float32)
    monkeypatch.setattr(windows_module, "MIN_PAUSE_SECONDS", 10.0)
    result = transcribe(model, processor, audio, overlap_seconds=0.4, window_seconds=window_seconds, progress=False)
    assert len(result["segments"]) >= 2
    reference = " ".join(texts)
    words = result["text"].split()
    assert len(words) <= len(reference.split()) + 1
    assert compute_error_rates([result["text"]], [reference])["cer"] < 0.25


def test_unknown_audio_domain_is_a_usage_error(tiny_base_dir, tmp_path):
    clip = tmp_path / "a.wav"
    sf.write(clip, bursts([("speech", 0.5)]), RATE)
    assert cli.main(["transcribe", str(clip), "--model", tiny_base_dir, "--audio-domain", "window"]) == 2
