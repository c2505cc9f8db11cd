# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Tests of the eSpeak NG corpus: texts, synthesis, the paired corpus and the ``synth-corpus`` command."""

import argparse
import csv
import io
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from modeling_qwen2audio_ldv.cli import corpus as corpus_cli
from modeling_qwen2audio_ldv.synthetic import corpus
from modeling_qwen2audio_ldv.synthetic.corpus import DEFAULT_VOICES, build_paired_corpus, split_voices
from modeling_qwen2audio_ldv.synthetic.espeak import synthesize
from modeling_qwen2audio_ldv.synthetic.texts import make_texts
from modeling_qwen2audio_ldv.text import number_words

CONDITIONS = ("cardboard_box", "window")
CJK = re.compile(r"^[\u4e00-\u9fff]+$")

# Duration bounds per syllable, in seconds. Syllables, not characters: English spelling packs 1-8 letters into a
# syllable, while a Chinese character is exactly one syllable, so one bound serves both languages. Conversational
# speech runs at 3-7 syllables per second (0.14-0.33 s each); eSpeak at 140-210 words per minute stays inside
# that, and the margins cover the 2 x 50 ms of kept edge silence on short texts and slow, stretched syllables.
MIN_S_PER_SYLLABLE = 0.08
MAX_S_PER_SYLLABLE = 0.5


def syllables(text: str) -> int:
    """Syllables of a transcript: one per Chinese character, one per vowel group in an English word."""
    if CJK.match(text):
        return len(text)
    return sum(max(1, len(re.findall(r"[aeiouy]+", word))) for word in text.split())


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(audio, dtype=np.float64) ** 2)))


def raw_rows(dataset_dict):
    """``(id, mic bytes, ldv bytes)`` of every row, in split and row order (audio left undecoded)."""
    from datasets import Audio

    rows = []
    for split in corpus.SPLITS:
        raw = dataset_dict[split].cast_column("mic_audio", Audio(decode=False))
        raw = raw.cast_column("ldv_audio", Audio(decode=False))
        rows += [(row["id"], row["mic_audio"]["bytes"], row["ldv_audio"]["bytes"]) for row in raw]
    return rows


def wav(data: bytes) -> np.ndarray:
    audio, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == 16_000
    return audio


@pytest.fixture(scope="module")
def espeak():
    pytest.importorskip("espeakng_loader")


@pytest.fixture(scope="module")
def paired(espeak):
    """A small two-condition corpus, seed 0: 6 train and 2 + 2 held-out utterances."""
    return build_paired_corpus(num_train=6, num_eval=2, seed=0, conditions=CONDITIONS, progress=False)


# ------------------------------------------------------------------------------------------------ texts
@pytest.mark.parametrize(
    "value, words",
    [(0, "zero"), (7, "seven"), (10, "ten"), (13, "thirteen"), (20, "twenty"), (45, "forty five"), (99, "ninety nine")],
)
def test_number_words(value, words):
    assert number_words(value) == words


def test_number_words_rejects_out_of_range():
    with pytest.raises(ValueError, match="between 0 and 99"):
        number_words(100)


def test_make_texts_is_seeded_distinct_and_written_as_spoken():
    texts = make_texts(300, seed=0)
    assert texts == make_texts(300, seed=0)
    assert make_texts(100, seed=0) == texts[:100]  # a larger n extends a smaller one
    assert texts != make_texts(300, seed=1)
    assert len(set(texts)) == len(texts)
    assert all(re.fullmatch(r"[a-z]+( [a-z]+)*", text) for text in texts), "transcripts are plain spoken words"
    digit_words = {number_words(d) for d in range(10)}
    digits = make_texts(50, seed=0, kinds=("digits",))
    assert all(set(text.split()) <= digit_words and 3 <= len(text.split()) <= 6 for text in digits)
    # All three kinds are drawn.
    assert any(set(t.split()) <= digit_words for t in texts) and any(t.startswith("turn ") for t in texts)
    mandarin = make_texts(100, seed=0, language="cmn")
    assert all(CJK.match(text) for text in mandarin)
    assert len(set(mandarin)) == 100


def test_make_texts_errors_name_the_problem():
    with pytest.raises(ValueError, match="distinct texts"):
        make_texts(1000, seed=0, kinds=("command",), language="cmn")  # ~100 distinct Mandarin commands exist
    with pytest.raises(ValueError, match="`kinds`"):
        make_texts(3, seed=0, kinds=("poem",))
    with pytest.raises(ValueError, match="`language`"):
        make_texts(3, seed=0, language="fr")


def test_split_voices_holds_out_the_tail():
    voices = tuple("abcdefghijklmn")  # 14 voices: k = 14 // 6 = 2
    assert split_voices(voices) == {"train": tuple("abcdefghij"), "validation": ("k", "l"), "test": ("m", "n")}
    assert split_voices(("a", "b", "c")) == {"train": ("a",), "validation": ("b",), "test": ("c",)}
    with pytest.raises(ValueError, match="at least 3 voices"):
        split_voices(("a", "b"))
    for language, voices in DEFAULT_VOICES.items():
        parts = split_voices(voices)
        assert sum(len(part) for part in parts.values()) == len(set(voices)), language


# ------------------------------------------------------------------------------------------------ optional extra
def test_missing_espeakng_loader_gives_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # makes `import espeakng_loader` fail
    with pytest.raises(ImportError, match=re.escape('pip install "qwen2audio-ldv[speech]"')):
        synthesize("three seven one nine")
    with pytest.raises(ImportError, match=re.escape('pip install "qwen2audio-ldv[speech]"')):
        build_paired_corpus(num_train=2, num_eval=1, seed=0, progress=False)


def test_module_imports_without_espeakng_loader():
    code = (
        "import sys; sys.modules['espeakng_loader'] = None\n"
        "import modeling_qwen2audio_ldv.synthetic.corpus as corpus\n"
        "assert corpus.make_texts(3, seed=0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------------------------ synthesis
@pytest.mark.speech
@pytest.mark.parametrize(
    "text, voice",
    [
        ("three seven one nine", "en-us"),
        ("stop the conveyor", "en-gb-x-rp+m3"),
        ("pressure in tank two is high", "en-us+klatt4"),
        ("機器運轉正常", "cmn"),
        ("三七一九", "cmn+f3"),
    ],
)
def test_synthesize_gives_speech_of_plausible_duration(espeak, text, voice):
    audio = synthesize(text, voice=voice)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.all(np.isfinite(audio)) and np.max(np.abs(audio)) <= 1.0
    assert rms(audio) > 0.02, "speech, not silence"
    seconds = audio.shape[0] / 16_000
    assert MIN_S_PER_SYLLABLE * syllables(text) <= seconds <= MAX_S_PER_SYLLABLE * syllables(text), seconds
    # Trimmed: speech starts and ends within ~50 ms (+ one 10 ms frame) of the clip's edges.
    loud = np.flatnonzero(np.abs(audio) > 0.01 * np.max(np.abs(audio)))
    assert loud[0] < 0.07 * 16_000 and audio.shape[0] - loud[-1] < 0.07 * 16_000


@pytest.mark.speech
def test_synthesize_is_a_pure_function_of_its_arguments(espeak):
    first = synthesize("turn on the light", voice="en-us+f3", rate=160, pitch=40)
    # eSpeak NG keeps state between utterances (pitch flutter phase, random generator); it must not leak.
    synthesize("the machine is running normally", voice="en-gb+klatt5", rate=200, pitch=70)
    second = synthesize("turn on the light", voice="en-us+f3", rate=160, pitch=40)
    np.testing.assert_array_equal(first, second)
    faster = synthesize("turn on the light", voice="en-us+f3", rate=320, pitch=40)
    assert faster.shape[0] < 0.8 * first.shape[0]
    higher = synthesize("turn on the light", voice="en-us+f3", rate=160, pitch=80)
    assert higher.shape != first.shape or not np.array_equal(higher, first)


@pytest.mark.speech
def test_every_default_voice_speaks_and_sounds_different(espeak):
    clips = {}
    for language, voices in DEFAULT_VOICES.items():
        text = "the machine is running normally" if language == "en" else "機器運轉正常"
        for voice in voices:
            clips[voice] = synthesize(text, voice=voice)
            assert rms(clips[voice]) > 0.02, voice
    fingerprints = {(clip.shape[0], round(rms(clip), 6)) for clip in clips.values()}
    assert len(fingerprints) == len(clips), "two default voices give the same audio"


@pytest.mark.speech
def test_voice_names(espeak):
    # A language code is accepted where eSpeak's file name differs ("en-gb" is the file "gmw/en").
    assert rms(synthesize("hello", voice="en-gb+m3")) > 0.02
    with pytest.raises(ValueError, match="unknown eSpeak voice 'xx-nope'"):
        synthesize("hello", voice="xx-nope")
    with pytest.raises(ValueError, match="`rate`"):
        synthesize("hello", rate=20)


# ------------------------------------------------------------------------------------------------ paired corpus
@pytest.mark.speech
def test_paired_corpus_sizes_columns_and_ids(paired):
    assert {split: paired[split].num_rows for split in paired} == {"train": 12, "validation": 4, "test": 4}
    expected = {"id", "utterance_id", "text", "language", "voice", "rate", "pitch", "condition"}
    assert expected | {"mic_audio", "ldv_audio", "duration"} == set(paired["train"].column_names)
    assert paired["train"].features["mic_audio"].sampling_rate == 16_000
    for row in paired["train"].select_columns(["id", "utterance_id", "condition", "rate", "pitch"]):
        assert row["id"] == f"{row['utterance_id']}-{row['condition']}"
        assert corpus.RATE_RANGE[0] <= row["rate"] <= corpus.RATE_RANGE[1]
        assert corpus.PITCH_RANGE[0] <= row["pitch"] <= corpus.PITCH_RANGE[1]
    # One row per (utterance, condition).
    for split in paired:
        ids = paired[split]["utterance_id"]
        assert all(ids.count(u) == len(CONDITIONS) for u in ids)
        assert sorted(set(paired[split]["condition"])) == sorted(CONDITIONS)


@pytest.mark.speech
def test_paired_corpus_splits_are_disjoint_in_text_and_voice(paired):
    texts = {split: set(paired[split]["text"]) for split in paired}
    voices = {split: set(paired[split]["voice"]) for split in paired}
    for first, second in [("train", "validation"), ("train", "test"), ("validation", "test")]:
        assert not texts[first] & texts[second], (first, second)
        assert not voices[first] & voices[second], (first, second)
    assert voices["test"] <= set(split_voices(DEFAULT_VOICES["en"])["test"])


def test_extra_train_texts_replace_template_texts_and_never_reach_the_eval_splits(paired):
    test_text = paired["test"]["text"][0]
    extra = ["agent logged off", "please hold", "agent logged off", test_text]
    corpus = build_paired_corpus(num_train=6, num_eval=2, seed=0, conditions=CONDITIONS[:1], progress=False,
                                 extra_train_texts=extra)
    train = corpus["train"]["text"]
    # the two distinct extras first (the duplicate and the test text left out), then the seed's template texts
    assert train[:2] == ["agent logged off", "please hold"]
    template = list(dict.fromkeys(paired["train"]["text"]))  # one row per condition in `paired`
    assert train[2:] == template[:4]
    assert len(train) == 6 and test_text not in train
    # the eval splits are the ones built without extras
    assert corpus["test"]["text"] == list(dict.fromkeys(paired["test"]["text"]))
    assert corpus["validation"]["text"] == list(dict.fromkeys(paired["validation"]["text"]))


def test_train_conditions_record_each_training_utterance_under_one_surface_of_the_mix(espeak):
    from modeling_qwen2audio_ldv.synthetic.corpus import _derived_seed
    from modeling_qwen2audio_ldv.synthetic.simulator import simulate_ldv

    mix = ("window", "wall", "throat")
    corpus = build_paired_corpus(num_train=6, num_eval=2, seed=0, conditions=("cardboard_box",), progress=False,
                                 train_conditions=mix, mic_augment=False)
    train = corpus["train"]
    assert len(train) == 6 and len(set(train["utterance_id"])) == 6  # one row per utterance
    assert sorted(train["condition"]) == sorted(mix * 2)  # round robin: each surface equally often
    assert set(corpus["test"]["condition"]) == set(corpus["validation"]["condition"]) == {"cardboard_box"}
    for row in train.select(range(3)):
        clean = np.asarray(row["mic_audio"]["array"], dtype=np.float32)  # mic_augment off: the synthesised clip
        expected = simulate_ldv(clean, 16000, row["condition"], seed=_derived_seed(0, "ldv", row["id"]))
        assert np.allclose(np.asarray(row["ldv_audio"]["array"]), expected, atol=2e-3), row["id"]


@pytest.mark.speech
def test_paired_rows_align(paired):
    rows = {row["id"]: row for split in paired for row in paired[split].remove_columns(["mic_audio", "ldv_audio"])}
    for row_id, mic_bytes, ldv_bytes in raw_rows(paired):
        row = rows[row_id]
        mic, ldv = wav(mic_bytes), wav(ldv_bytes)
        assert mic.shape == ldv.shape
        assert mic.shape[0] == round(row["duration"] * 16_000)
        assert rms(mic) > 0.02 and rms(ldv) > 0.02
        assert not np.allclose(mic, ldv, atol=1e-2), "the LDV clip is not the microphone clip"
        assert MIN_S_PER_SYLLABLE * syllables(row["text"]) <= row["duration"]
        assert row["duration"] <= MAX_S_PER_SYLLABLE * syllables(row["text"])
    # The same utterance under each condition: same text, voice, rate, pitch and identical microphone bytes,
    # different LDV clips.
    mic_of, ldv_of = {}, {}
    for row_id, mic_bytes, ldv_bytes in raw_rows(paired):
        row = rows[row_id]
        key = (row["utterance_id"], row["text"], row["voice"], row["rate"], row["pitch"])
        mic_of.setdefault(key, set()).add(mic_bytes)
        ldv_of.setdefault(key, set()).add(ldv_bytes)
    assert len(mic_of) == 10  # 6 + 2 + 2 utterances, each with one (text, voice, rate, pitch)
    assert all(len(mics) == 1 for mics in mic_of.values())
    assert all(len(ldvs) == len(CONDITIONS) for ldvs in ldv_of.values())


@pytest.mark.speech
def test_paired_corpus_is_deterministic_for_a_seed(paired):
    again = build_paired_corpus(num_train=6, num_eval=2, seed=0, conditions=CONDITIONS, progress=False)
    assert raw_rows(again) == raw_rows(paired)
    other = build_paired_corpus(num_train=6, num_eval=2, seed=1, conditions=CONDITIONS, progress=False)
    assert other["train"]["text"] != paired["train"]["text"]
    assert not {mic for _, mic, _ in raw_rows(other)} & {mic for _, mic, _ in raw_rows(paired)}


@pytest.mark.speech
def test_worker_processes_give_identical_bytes(paired):
    parallel = build_paired_corpus(num_train=6, num_eval=2, seed=0, conditions=CONDITIONS, num_proc=2, progress=False)
    assert raw_rows(parallel) == raw_rows(paired)


@pytest.mark.speech
def test_unaugmented_microphone_clip_is_the_synthesised_clip(espeak):
    plain = build_paired_corpus(num_train=3, num_eval=1, seed=5, mic_augment=False, progress=False)
    row = plain["train"].remove_columns(["mic_audio", "ldv_audio"])[0]
    (_, mic_bytes, _), *_ = raw_rows(plain)
    expected = synthesize(row["text"], voice=row["voice"], rate=row["rate"], pitch=row["pitch"])
    # Stored as 16-bit PCM: libsndfile writes round(x * 32767) and reads back n / 32768, so the round trip is
    # within 1.5 steps of 1/32768 (half a step of rounding plus up to one step of scale mismatch at full scale).
    np.testing.assert_allclose(wav(mic_bytes), expected, rtol=0, atol=1.5 / 32768)


@pytest.mark.speech
def test_mandarin_corpus(espeak):
    mandarin = build_paired_corpus(num_train=3, num_eval=1, seed=0, language="cmn", progress=False)
    for split in mandarin:
        assert all(CJK.match(text) for text in mandarin[split]["text"])
        assert all(voice.startswith("cmn") for voice in mandarin[split]["voice"])
        assert set(mandarin[split]["language"]) == {"cmn"}


@pytest.mark.speech
def test_save_to_disk_round_trip_decodes_the_same_audio(paired, tmp_path):
    from datasets import load_from_disk

    paired.save_to_disk(str(tmp_path / "corpus"))
    loaded = load_from_disk(str(tmp_path / "corpus"))
    assert raw_rows(loaded) == raw_rows(paired)
    decoded = loaded["test"][0]["ldv_audio"].get_all_samples()  # datasets' own decoder (torchcodec)
    assert decoded.sample_rate == 16_000
    _, _, ldv_bytes = raw_rows(loaded)[12 + 4]  # first test row
    np.testing.assert_allclose(decoded.data.numpy()[0], wav(ldv_bytes), atol=1e-6)


# ------------------------------------------------------------------------------------------------ command line
@pytest.mark.speech
def test_synth_corpus_command(espeak, tmp_path):
    from datasets import load_from_disk

    parser = argparse.ArgumentParser()
    corpus_cli.register_cli(parser.add_subparsers(dest="command"))
    output = tmp_path / "out"
    args = parser.parse_args(
        ["synth-corpus", "--output", str(output), "--num-train", "4", "--num-eval", "1", "--seed", "2"]
        + ["--condition", "wall", "throat", "--audiofolder"]
    )
    assert args.func(args) == 0
    saved = load_from_disk(str(output))
    assert {split: saved[split].num_rows for split in saved} == {"train": 8, "validation": 2, "test": 2}
    for split, utterances in [("train", 4), ("validation", 1), ("test", 1)]:
        for domain, files in [("mic", utterances), ("ldv", 2 * utterances)]:
            folder = output / "audiofolder" / domain / split
            with open(folder / "metadata.csv", newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            assert list(rows[0])[:4] == ["file_name", "text", "voice", "condition"]
            assert len(rows) == files == len(list(folder.glob("*.wav")))
            assert all((folder / row["file_name"]).is_file() for row in rows)
            conditions = {row["condition"] for row in rows}
            assert conditions == ({"mic"} if domain == "mic" else {"wall", "throat"})


def test_span_texts_are_distinct_contiguous_spans_of_the_sources():
    from modeling_qwen2audio_ldv.synthetic.texts import span_texts

    sources = ["please press the pound key", "your call is important to us", "seven"]
    spans = span_texts(sources, 60, seed=1, max_words=4, exclude=["seven"])
    assert len(spans) == len(set(spans)) == 60 and "seven" not in spans
    assert spans == span_texts(sources, 60, seed=1, max_words=4, exclude=["seven"])
    assert spans != span_texts(sources, 60, seed=2, max_words=4, exclude=["seven"])

    def is_span(words):  # a contiguous run of 1-4 words of one source
        return 1 <= len(words) <= 4 and any(f" {' '.join(words)} " in f" {s} " for s in sources)

    joined = 0
    for text in spans:
        words = text.split()
        if is_span(words):
            continue
        # otherwise two spans of at most 4 words each, one after the other
        assert any(is_span(words[:k]) and is_span(words[k:]) for k in range(1, len(words))), text
        joined += 1
    assert joined > 0
    with pytest.raises(ValueError, match="distinct spans"):
        span_texts(["one"], 3, seed=0, join_probability=0.0)
    with pytest.raises(ValueError, match="no text with words"):
        span_texts(["", " "], 1, seed=0)
