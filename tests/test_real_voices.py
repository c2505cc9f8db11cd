"""The real-voice test set (data/real_voices.py) and the held-out registry that keeps it out of training."""

import gzip
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from modeling_qwen2audio_ldv.data import held_out
from modeling_qwen2audio_ldv.data.held_out import HeldOutError, HeldOutRegistry
from modeling_qwen2audio_ldv.data.real_voices import (
    ASTERISK_SOUNDS,
    ASTERISK_TRANSCRIPTS,
    POCKETSPHINX_DATA,
    build_real_voice_set,
    find_prompts,
    read_asterisk_transcripts,
    read_sphinx_transcription,
    scorable_text,
)
from modeling_qwen2audio_ldv.synthetic.ldv_folders import file_seed
from modeling_qwen2audio_ldv.synthetic.simulator import simulate_ldv

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                  reason="ffmpeg not installed (scripts/setup.sh installs it): G.722 needs it")


@pytest.fixture(autouse=True)
def registry_folder(tmp_path, monkeypatch):
    """Every test gets its own empty registry folder: nothing reads or writes the user's."""
    folder = tmp_path / "registry"
    monkeypatch.setenv(held_out.REGISTRY_ENV, str(folder))
    return folder


# ------------------------------------------------------------------------------------------------- transcripts
@pytest.mark.parametrize("raw, expected", [
    ("Press 1 to record, 2 to erase.", "press one to record two to erase"),
    ("folder 45", "folder forty five"),
    ("at [@]", "at"),
    ("press * to toggle pause, press # to enter a new dictation filename",
     "press star to toggle pause press pound to enter a new dictation filename"),
    ("3D audio enabled", "three d audio enabled"),
    ("Sorry you're having problems.", "sorry youre having problems"),
    ("...to leave the conference.", "to leave the conference"),
    ('IAX (note does not say "2")', None),  # the note goes, the acronym stays unscorable
])
def test_scorable_text_rules(raw, expected):
    text, reason = scorable_text(raw)
    assert text == expected
    assert (reason is None) == (expected is not None)


@pytest.mark.parametrize("raw, reason_part", [
    ("", "empty"),
    ("[ascending tones]", "no speech"),
    ("(10 seconds of silence)", "no speech"),
    ("<beep ascending>", "no speech"),
    ("dial 500 to attempt a connection", "'500'"),
    ("a 28.8 kilobit modem", "'28.8'"),
    ("H.323", "'323'"),
    ("dial 05", "'05'"),
    ("the PBX is ready", "PBX"),
    ("the temperature is 21 °C", "'°'"),
])
def test_scorable_text_skips_with_a_reason(raw, reason_part):
    text, reason = scorable_text(raw)
    assert text is None
    assert reason_part in reason


def test_read_asterisk_transcripts(tmp_path):
    path = tmp_path / "core-sounds-en.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("; Core Asterisk Sounds in English\n\ndigits/7: seven\nvm-then-pound: then press pound\n")
    assert read_asterisk_transcripts(path) == {"digits/7": "seven", "vm-then-pound": "then press pound"}
    bad = tmp_path / "bad.txt"
    bad.write_text("digits/7: seven\nthis line has no colon\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt, line 2"):
        read_asterisk_transcripts(bad)


def test_read_sphinx_transcription(tmp_path):
    path = tmp_path / "transcription"
    path.write_text("<s> he was not an ill disposed young man </s> (clip-0880)\n<s> five five  </s> (004)\n")
    assert read_sphinx_transcription(path) == {"clip-0880": "he was not an ill disposed young man",
                                               "004": "five five"}
    path.write_text("<s> no id here </s>\n")
    with pytest.raises(ValueError, match="line 1"):
        read_sphinx_transcription(path)


# ------------------------------------------------------------------------------------------------- a fake root
def _tone(seconds: float, frequency: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * frequency * t) * np.hanning(t.size)).astype(np.float32)


def _g722(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = path.with_suffix(".wav")
    sf.write(wav, audio, 16000, subtype="PCM_16")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-acodec", "g722", "-f", "g722",
                    str(path)], check=True)
    wav.unlink()


@pytest.fixture
def fake_root(tmp_path):
    """The three packages' layout with a few clips: two scorable asterisk prompts, a tone, a recording without a
    transcript, a transcript without a recording, a LibriVox and a cards clip, and a TIDIGITS clip never to be read."""
    root = tmp_path / "root"
    sounds = root / ASTERISK_SOUNDS
    _g722(sounds / "digits" / "7.g722", _tone(0.6, 220.0))
    _g722(sounds / "vm-then-pound.g722", _tone(0.9, 330.0))
    _g722(sounds / "beep.g722", _tone(0.3, 1000.0))
    _g722(sounds / "unlisted.g722", _tone(0.4, 440.0))
    (root / ASTERISK_TRANSCRIPTS).parent.mkdir(parents=True)
    with gzip.open(root / ASTERISK_TRANSCRIPTS, "wt", encoding="utf-8") as handle:
        handle.write("; comment\ndigits/7: 7\nvm-then-pound: then press #\nbeep: [this is a simple beep tone]\n"
                     "gone: a transcript without a recording\n")
    data = root / POCKETSPHINX_DATA
    (data / "librivox").mkdir(parents=True)
    (data / "cards").mkdir()
    (data / "tidigits").mkdir()
    sf.write(data / "librivox" / "austen-0880.wav", _tone(0.8, 150.0), 16000, subtype="PCM_16")
    (data / "librivox" / "transcription").write_text("<s> he was not an ill disposed young man </s> (austen-0880)\n")
    sf.write(data / "cards" / "004.wav", _tone(0.5, 180.0), 16000, subtype="PCM_16")
    (data / "cards" / "cards.transcription").write_text("<s> five five  </s> (004)\n")
    sf.write(data / "tidigits" / "dhd.wav", _tone(0.5, 200.0), 16000, subtype="PCM_16")
    return root


@needs_ffmpeg
def test_find_prompts_reads_the_sources_and_says_what_it_skipped(fake_root):
    prompts, skipped = find_prompts(fake_root)
    assert {p.prompt_id: p.text for p in prompts} == {
        "asterisk/digits/7": "seven",
        "asterisk/vm-then-pound": "then press pound",
        "librivox/austen-0880": "he was not an ill disposed young man",
        "cards/004": "five five",
    }
    reasons = {s.prompt_id: s.reason for s in skipped}
    assert set(reasons) == {"asterisk/beep", "asterisk/unlisted", "asterisk/gone"}
    assert "no speech" in reasons["asterisk/beep"]
    assert reasons["asterisk/unlisted"] == "no transcript"
    assert "without a recording" in reasons["asterisk/gone"]
    assert not any("tidigits" in str(p.path) for p in prompts)


def test_find_prompts_names_the_missing_packages(tmp_path):
    with pytest.raises(FileNotFoundError, match="asterisk-core-sounds-en-g722"):
        find_prompts(tmp_path)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@needs_ffmpeg
def test_build_writes_mic_and_ldv_audiofolders_with_checksums(fake_root, tmp_path, registry_folder):
    output = tmp_path / "set"
    manifest = build_real_voice_set(output, root=fake_root, conditions=("cardboard_box", "window"), seed=3,
                                    progress=False)
    assert len(manifest["clips"]) == 4
    assert manifest["sources"]["asterisk"]["licence"] == "CC-BY-SA-3.0"
    assert manifest["sources"]["librivox"]["licence"] == "public-domain"
    assert {s["prompt_id"] for s in manifest["skipped"]} == {"asterisk/beep", "asterisk/unlisted", "asterisk/gone"}

    from modeling_qwen2audio_ldv.data.loading import load_audio_dataset

    mic = load_audio_dataset(output / "mic", split="train")
    assert sorted(mic["text"]) == sorted(["seven", "then press pound", "he was not an ill disposed young man",
                                          "five five"])
    assert set(mic["speaker"]) == {"asterisk:allison_smith", "librivox:sense_and_sensibility_01",
                                   "pocketsphinx:cards"}
    assert set(mic["licence"]) == {"CC-BY-SA-3.0", "public-domain", "BSD-2-Clause"}
    for condition in ("cardboard_box", "window"):
        ldv = load_audio_dataset(output / "ldv" / condition, split="train")
        assert sorted(ldv["text"]) == sorted(mic["text"]) and set(ldv["condition"]) == {condition}

    # the microphone clip is the recording itself; the LDV clip is the simulator's, seeded from the file's path
    cards_source = fake_root / POCKETSPHINX_DATA / "cards" / "004.wav"
    cards_mic, _ = sf.read(output / "mic" / "cards-004.wav", dtype="int16")
    np.testing.assert_array_equal(cards_mic, sf.read(cards_source, dtype="int16")[0])
    expected = simulate_ldv(cards_mic.astype(np.float32) / 32768.0, 16000, "window",
                            seed=file_seed(3, "window/cards-004.wav"))
    written, _ = sf.read(output / "ldv" / "window" / "cards-004.wav", dtype="float32")
    np.testing.assert_allclose(written, expected, atol=1.0 / 32768 + 1e-7)

    # every checksum is the file's; the held-out section holds the sources' and the clips' hashes and speakers
    by_id = {clip["prompt_id"]: clip for clip in manifest["clips"]}
    clip = by_id["cards/004"]
    assert clip["source_sha256"] == _sha(cards_source)
    assert clip["mic_sha256"] == _sha(output / "mic" / "cards-004.wav")
    assert clip["ldv"]["window"]["sha256"] == _sha(output / "ldv" / "window" / "cards-004.wav")
    on_disk = {_sha(p) for p in (output / "mic").glob("*.wav")} | {_sha(p) for p in (output / "ldv").rglob("*.wav")}
    assert on_disk <= set(manifest["held_out"]["audio_sha256"])
    assert _sha(cards_source) in manifest["held_out"]["audio_sha256"]
    assert manifest == json.loads((output / "manifest.json").read_text())
    assert len(list(registry_folder.glob("*.json"))) == 1

    # the same packages and seed give the same files
    again = build_real_voice_set(tmp_path / "again", root=fake_root, conditions=("cardboard_box", "window"), seed=3,
                                 progress=False, register_held_out=False)
    assert [c["ldv"] for c in again["clips"]] == [c["ldv"] for c in manifest["clips"]]


_INSTALLED = Path("/") / ASTERISK_TRANSCRIPTS


@pytest.mark.skipif(not _INSTALLED.is_file() or not (Path("/") / POCKETSPHINX_DATA / "librivox").is_dir(),
                    reason="asterisk-core-sounds-en(-g722) / pocketsphinx-testdata not installed (scripts/setup.sh)")
def test_the_installed_packages_give_the_documented_set():
    prompts, skipped = find_prompts("/")
    by_source = {}
    for prompt in prompts:
        by_source[prompt.source] = by_source.get(prompt.source, 0) + 1
    # 568 recordings in asterisk-core-sounds-en-g722 1.6.1: 17 tones/silences/effects, 11 unscorable numbers or
    # acronyms, one transcript without a recording
    assert by_source == {"asterisk": 540, "librivox": 5, "cards": 5}
    texts = {p.prompt_id: p.text for p in prompts}
    assert texts["asterisk/digits/7"] == "seven"
    assert texts["librivox/sense_and_sensibility_01_austen_64kb-0880"] == "he was not an ill disposed young man"
    assert not any("tidigits" in str(p.path) for p in prompts)
    assert len(skipped) == 29 and all(s.reason for s in skipped)


# ------------------------------------------------------------------------------------------------- held out
def test_corpus_builder_refuses_a_held_out_speaker():
    from modeling_qwen2audio_ldv.synthetic.corpus import build_paired_corpus

    # refused before any synthesis: no engine is needed to say no
    with pytest.raises(HeldOutError, match="asterisk:allison_smith"):
        build_paired_corpus(3, 1, seed=0, voices=("en-us", "en-us+f3", "asterisk:allison_smith"), progress=False)
    # an empty registry passed in cannot drop the built-in speakers
    with pytest.raises(HeldOutError):
        build_paired_corpus(3, 0, seed=0, voices=("asterisk:allison_smith",), held_out=HeldOutRegistry(),
                            progress=False)


def test_corpus_builder_refuses_voices_built_from_a_registered_speaker(tmp_path, registry_folder):
    from modeling_qwen2audio_ldv.synthetic.corpus import build_paired_corpus

    # a set whose speaker is CMU ARCTIC's slt: both engines' slt voices are that speaker
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"held_out": {"format": 1, "speakers": ["cmu_arctic:slt"], "audio_sha256": []}}))
    for voice in ("flite:slt", "festival:cmu_us_slt_arctic_hts"):
        with pytest.raises(HeldOutError, match="cmu_arctic:slt"):
            build_paired_corpus(3, 0, seed=0, voices=(voice, "flite:awb"), held_out=manifest, progress=False)
    # the same set found in the registry folder, as build-real-voice-set leaves it
    held_out.register(HeldOutRegistry.from_manifest(manifest), "cmu")
    with pytest.raises(HeldOutError, match="flite:slt"):
        build_paired_corpus(3, 0, seed=0, voices=("flite:rms", "flite:slt"), progress=False)


def test_a_broken_registry_file_is_an_error_not_a_pass(registry_folder):
    registry_folder.mkdir()
    (registry_folder / "x.json").write_text(json.dumps({"speakers": "asterisk:allison_smith", "audio_sha256": []}))
    with pytest.raises(ValueError, match=r"x.json: field 'speakers'"):
        held_out.default_registry()


def _audiofolder(folder: Path, clips: dict[str, np.ndarray], speakers: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True)
    lines = ["file_name,text" + (",speaker" if speakers else "")]
    for name, audio in clips.items():
        sf.write(folder / name, audio, 16000, subtype="PCM_16")
        lines.append(f"{name},five five" + (f",{speakers[name]}" if speakers else ""))
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_training_data_refuses_held_out_files_and_speakers(tmp_path):
    from modeling_qwen2audio_ldv.training.arguments import DataArguments
    from modeling_qwen2audio_ldv.training.data import load_user_data

    held = tmp_path / "held.wav"
    sf.write(held, _tone(0.5, 300.0), 16000, subtype="PCM_16")
    held_out.register(HeldOutRegistry(frozenset(), frozenset({_sha(held)})), "set")

    clean = _audiofolder(tmp_path / "clean", {"a.wav": _tone(0.5, 200.0), "b.wav": _tone(0.5, 250.0)})
    train, _ = load_user_data(DataArguments(train_data=str(clean), eval_data=str(clean), mic_fraction=0.0), seed=0)
    assert len(train) == 2

    copied = _audiofolder(tmp_path / "copied", {"a.wav": _tone(0.5, 200.0)})
    shutil.copy(held, copied / "c.wav")
    (copied / "metadata.csv").write_text("file_name,text\na.wav,five five\nc.wav,five five\n")
    with pytest.raises(HeldOutError, match=r"row \d: audio .*c\.wav"):
        load_user_data(DataArguments(train_data=str(copied), eval_data=str(clean), mic_fraction=0.0), seed=0)

    labelled = _audiofolder(tmp_path / "labelled", {"a.wav": _tone(0.5, 210.0), "b.wav": _tone(0.5, 260.0)},
                            speakers={"a.wav": "someone", "b.wav": "asterisk:allison_smith"})
    with pytest.raises(HeldOutError, match=r"row \d: speaker 'asterisk:allison_smith'"):
        load_user_data(DataArguments(train_data=str(labelled), eval_data=str(clean), mic_fraction=0.0), seed=0)


@needs_ffmpeg
def test_transcript_texts_are_the_scorable_transcripts_without_reading_audio(fake_root):
    """The text domain the mini base trains on: every scorable transcript (with or without a recording), once,
    sorted; notes-only transcripts dropped. The recordings are never opened (they are deleted first)."""
    from modeling_qwen2audio_ldv.data.real_voices import transcript_texts

    for path in list(fake_root.rglob("*.g722")) + list(fake_root.rglob("*.wav")):
        path.unlink()
    assert transcript_texts(fake_root) == [
        "a transcript without a recording",
        "five five",
        "he was not an ill disposed young man",
        "seven",
        "then press pound",
    ]


def test_transcript_texts_name_the_missing_package(tmp_path):
    from modeling_qwen2audio_ldv.data.real_voices import transcript_texts

    with pytest.raises(FileNotFoundError, match="asterisk-core-sounds-en"):
        transcript_texts(tmp_path)


def test_read_set_folder_reads_rows_and_names_a_bad_rate(tmp_path):
    from modeling_qwen2audio_ldv.data.real_voices import read_set_folder

    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        read_set_folder(tmp_path)
    sf.write(tmp_path / "a.wav", _tone(0.5, 200.0), 16000, subtype="PCM_16")
    sf.write(tmp_path / "b.wav", _tone(0.5, 200.0, rate=8000), 8000, subtype="PCM_16")
    (tmp_path / "metadata.csv").write_text("file_name,text\na.wav,seven\nb.wav,eight\n")
    rows = read_set_folder(tmp_path, limit=1)
    assert [row["text"] for row in rows] == ["seven"] and rows[0]["audio"].shape == (8000,)
    with pytest.raises(ValueError, match=r"b\.wav: 8000 Hz, expected 16000"):
        read_set_folder(tmp_path)


def test_a_run_scores_the_real_voice_set_s_mic_and_ldv_folders(tmp_path):
    """``--real_voice_set`` adds the set's microphone folder as ``real_mic`` and the run's condition's LDV folder as
    ``real_ldv`` (an existing set is read as it is, not rebuilt)."""
    from modeling_qwen2audio_ldv.training.arguments import DataArguments
    from modeling_qwen2audio_ldv.training.data import real_voice_eval_sets

    folder = tmp_path / "set"
    for sub, frequency in (("mic", 200.0), ("ldv/cardboard_box", 300.0), ("ldv/wall", 400.0)):
        (folder / sub).mkdir(parents=True)
        for name in ("a.wav", "b.wav"):
            sf.write(folder / sub / name, _tone(0.4, frequency), 16000, subtype="PCM_16")
        (folder / sub / "metadata.csv").write_text("file_name,text\na.wav,seven\nb.wav,press pound\n")
    (folder / "manifest.json").write_text("{}")
    sets = real_voice_eval_sets(DataArguments(real_voice_set=str(folder)), "cardboard_box")
    assert sorted(sets) == ["real_ldv", "real_mic"]
    for name, frequency in (("real_mic", 200.0), ("real_ldv", 300.0)):
        assert sets[name]["text"] == ["seven", "press pound"]
        audio = sets[name][0]["audio"]["array"]
        spectrum = np.abs(np.fft.rfft(audio))
        assert abs(np.argmax(spectrum) * 16000 / audio.shape[0] - frequency) < 10.0, name
    # 7 clips, about 3 wanted: every 3rd (ceil(7 / 3)), the first included
    for sub in ("mic", "ldv/cardboard_box"):
        names = [f"c{i}.wav" for i in range(7)]
        for name in names:
            sf.write(folder / sub / name, _tone(0.2, 250.0), 16000, subtype="PCM_16")
        (folder / sub / "metadata.csv").write_text("file_name,text\n" + "".join(f"{n},t {i}\n" for i, n in
                                                                                 enumerate(names)))
    sets = real_voice_eval_sets(DataArguments(real_voice_set=str(folder), real_voice_samples=3), "cardboard_box")
    assert sets["real_mic"]["text"] == sets["real_ldv"]["text"] == ["t 0", "t 3", "t 6"]
