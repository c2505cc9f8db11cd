"""Loading user speech data (audiofolder, manifests, save_to_disk) and validating every row."""

import argparse
import json
import logging
import os

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, Dataset, DatasetDict

from modeling_qwen2audio_ldv.cli.data import register_cli
from modeling_qwen2audio_ldv.data.loading import (
    BAD_REASONS,
    SILENCE_PEAK_THRESHOLD,
    filter_bad_examples,
    load_audio_dataset,
    validate_dataset,
)

SR = 16_000


def tone(seconds: float, freq: float = 220.0, rate: int = SR, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path, samples, rate=SR, subtype="FLOAT"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, subtype=subtype)
    return path


def by_text(dataset):
    """text -> decoded mono array, so checks do not depend on the loader's row order."""
    return {row["text"]: row["audio"]["array"] for row in dataset}


@pytest.fixture()
def cache_dir(tmp_path):
    return str(tmp_path / "hf_cache")


# --------------------------------------------------------------------------------------------------- loading
def test_audiofolder_round_trip(tmp_path, cache_dir):
    folder = tmp_path / "clips"
    clips = {"one two three": tone(0.5, 220), "open the valve": tone(0.75, 330), "stop": tone(0.25, 440)}
    lines = ["file_name,text"]
    for number, (text, samples) in enumerate(clips.items()):
        write_wav(folder / f"clip{number}.wav", samples)
        lines.append(f"clip{number}.wav,{text}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")

    dataset = load_audio_dataset(str(folder), split="train", cache_dir=cache_dir)
    assert isinstance(dataset, Dataset) and set(dataset.column_names) == {"audio", "text"}
    assert dataset.features["audio"] == Audio(sampling_rate=SR)
    loaded = by_text(dataset)
    assert loaded.keys() == clips.keys()
    for text, samples in clips.items():
        assert loaded[text].dtype == np.float32 and loaded[text].shape == samples.shape
        np.testing.assert_allclose(loaded[text], samples, atol=1e-6)
    assert dataset[0]["audio"]["sampling_rate"] == SR

    every_split = load_audio_dataset(str(folder), cache_dir=cache_dir)
    assert isinstance(every_split, DatasetDict) and list(every_split) == ["train"]


def test_jsonl_manifest_relative_and_absolute_paths(tmp_path, cache_dir):
    relative = write_wav(tmp_path / "corpus" / "wavs" / "a.wav", tone(0.5, 200))
    absolute = write_wav(tmp_path / "elsewhere" / "b.wav", tone(0.3, 500))
    manifest = tmp_path / "corpus" / "train.jsonl"
    rows = [{"audio": "wavs/a.wav", "text": "alpha"}, {"audio": str(absolute), "text": "bravo"}]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))

    dataset = load_audio_dataset(str(manifest), split="train", cache_dir=cache_dir)
    loaded = by_text(dataset)
    np.testing.assert_allclose(loaded["alpha"], sf.read(relative, dtype="float32")[0], atol=1e-6)
    np.testing.assert_allclose(loaded["bravo"], sf.read(absolute, dtype="float32")[0], atol=1e-6)
    assert isinstance(load_audio_dataset(str(manifest), cache_dir=cache_dir), DatasetDict)


def test_save_to_disk_directory(tmp_path):
    paths = [str(write_wav(tmp_path / f"c{i}.wav", tone(0.2 + 0.1 * i, 300 + 100 * i))) for i in range(2)]
    saved = Dataset.from_dict({"audio": paths, "text": ["first", "second"]}).cast_column("audio", Audio())
    DatasetDict({"train": saved, "test": saved.select([1])}).save_to_disk(str(tmp_path / "saved"))

    test_split = load_audio_dataset(str(tmp_path / "saved"), split="test")
    assert isinstance(test_split, Dataset) and test_split["text"] == ["second"]
    np.testing.assert_allclose(test_split[0]["audio"]["array"], tone(0.3, 400), atol=1e-6)
    assert set(load_audio_dataset(str(tmp_path / "saved"))) == {"train", "test"}
    with pytest.raises(ValueError, match="no split 'validation'"):
        load_audio_dataset(str(tmp_path / "saved"), split="validation")


def test_column_mapping_and_missing_column_errors(tmp_path, cache_dir):
    write_wav(tmp_path / "ldv.wav", tone(0.4, 250))
    write_wav(tmp_path / "mic.wav", tone(0.4, 600))
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("wav,transcript,mic_wav,speaker\nldv.wav,turn left,mic.wav,s1\n")

    dataset = load_audio_dataset(str(manifest), split="train", audio_column="wav", text_column="transcript",
                                 mic_audio_column="mic_wav", cache_dir=cache_dir)
    assert set(dataset.column_names) == {"audio", "text", "mic_audio", "speaker"}
    assert dataset.features["mic_audio"] == Audio(sampling_rate=SR)
    row = dataset[0]
    assert row["text"] == "turn left" and row["speaker"] == "s1"
    np.testing.assert_allclose(row["audio"]["array"], tone(0.4, 250), atol=1e-6)
    np.testing.assert_allclose(row["mic_audio"]["array"], tone(0.4, 600), atol=1e-6)

    with pytest.raises(ValueError) as error:
        load_audio_dataset(str(manifest), split="train", audio_column="wav", text_column="sentence",
                           cache_dir=cache_dir)
    message = str(error.value)
    assert str(manifest) in message and "'sentence'" in message and "'transcript'" in message

    clash = tmp_path / "clash.csv"
    clash.write_text("audio,transcript,text\nldv.wav,a,b\n")
    with pytest.raises(ValueError, match="already exist"):
        load_audio_dataset(str(clash), split="train", text_column="transcript", cache_dir=cache_dir)


def test_stereo_44k_arrives_mono_16k(tmp_path, cache_dir):
    import librosa

    rate, seconds = 44_100, 1.0
    t = np.arange(int(rate * seconds)) / rate
    noise = 0.02 * np.random.default_rng(0).standard_normal(t.shape[0])
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 1000 * t) + noise], axis=1)
    write_wav(tmp_path / "st" / "stereo.wav", stereo.astype(np.float32), rate)
    (tmp_path / "st" / "metadata.csv").write_text("file_name,text\nstereo.wav,stereo\n")

    audio = load_audio_dataset(str(tmp_path / "st"), split="train", cache_dir=cache_dir)[0]["audio"]
    mono = audio["array"]
    assert audio["sampling_rate"] == SR and mono.ndim == 1 and mono.shape[0] == int(SR * seconds)
    reference = librosa.resample(stereo.mean(axis=1), orig_sr=rate, target_sr=SR, res_type="soxr_hq")
    interior = slice(200, -200)  # resampler edge effects differ
    assert np.abs(mono[interior] - reference[interior]).max() < 0.02
    left_only = librosa.resample(stereo[:, 0], orig_sr=rate, target_sr=SR, res_type="soxr_hq")
    assert np.abs(mono[interior] - left_only[interior]).max() > 0.1  # really the mean, not one channel


# ------------------------------------------------------------------------------------------------ validation
GOOD = {"good0.wav": "one", "good1.wav": "two", "good2.wav": "three"}
BAD = {  # file -> expected reason
    "garbage.wav": "decode_error",
    "empty.wav": "empty_audio",
    "nan.wav": "non_finite",
    "silent.wav": "silent",
    "long.wav": "too_long",
    "untranscribed.wav": "missing_text",
    "blank.wav": "empty_text",
}


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    """An audiofolder with three good clips and one clip of each bad kind."""
    folder = tmp_path_factory.mktemp("bad_folder")
    rng = np.random.default_rng(1)
    for number, name in enumerate(GOOD):
        write_wav(folder / name, tone(0.5, 200 + 100 * number), subtype="PCM_16")
    (folder / "garbage.wav").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    write_wav(folder / "empty.wav", np.zeros(0, np.float32))
    nan = tone(0.5)
    nan[100:110] = np.nan
    write_wav(folder / "nan.wav", nan, subtype="FLOAT")
    write_wav(folder / "silent.wav", np.zeros(SR // 2, np.float32), subtype="PCM_16")
    long = np.zeros(31 * SR, np.float32)
    long[SR:] = 0.05 * rng.standard_normal(30 * SR)
    write_wav(folder / "long.wav", long, subtype="PCM_16")
    write_wav(folder / "untranscribed.wav", tone(0.5, 700), subtype="PCM_16")
    write_wav(folder / "blank.wav", tone(0.5, 800), subtype="PCM_16")
    texts = {**GOOD, **{name: "fine" for name in BAD}, "untranscribed.wav": None, "blank.wav": "  "}
    (folder / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": name, "text": text}) + "\n" for name, text in texts.items()))
    dataset = load_audio_dataset(str(folder), split="train", cache_dir=str(tmp_path_factory.mktemp("hf_cache")))
    return folder, dataset


def reasons_by_file(report):
    return {os.path.basename(bad.path): bad.reason for bad in report.bad_examples}


def test_validate_reports_every_bad_row_with_its_reason(bad_folder):
    folder, dataset = bad_folder
    report = validate_dataset(dataset)
    assert report.num_rows == len(dataset) == len(GOOD) + len(BAD)
    assert reasons_by_file(report) == BAD  # one entry per bad file, each with its reason
    assert report.counts == {reason: 1 for reason in BAD_REASONS if reason in BAD.values()}
    assert sorted(dataset[i]["text"] for i in report.good_indices) == sorted(GOOD.values())
    by_reason = {bad.reason: bad for bad in report.bad_examples}
    assert "LibsndfileError" in by_reason["decode_error"].detail or "RuntimeError" in by_reason["decode_error"].detail
    assert f"{SILENCE_PEAK_THRESHOLD:g}" in by_reason["silent"].detail
    assert "31.00 s" in by_reason["too_long"].detail
    assert abs(report.audio_seconds - 1.5) < 1e-6  # three good 0.5 s clips

    path = folder / "report.json"
    report.to_json(path)
    saved = json.loads(path.read_text())
    assert saved["num_bad"] == len(BAD) and saved["counts"] == report.counts
    assert {os.path.basename(bad["path"]) for bad in saved["bad_examples"]} == set(BAD)


def test_validate_with_two_processes_matches(bad_folder):
    _, dataset = bad_folder
    one, two = validate_dataset(dataset), validate_dataset(dataset, num_proc=2)
    assert one.to_dict() == two.to_dict()


def test_skip_drops_bad_rows_and_keeps_every_good_row(bad_folder, caplog):
    _, dataset = bad_folder
    with caplog.at_level(logging.WARNING, logger="modeling_qwen2audio_ldv.data.loading"):
        clean, report = filter_bad_examples(dataset, on_bad_example="skip")
    assert sorted(clean["text"]) == sorted(GOOD.values())
    for row in clean:  # every kept row decodes
        assert row["audio"]["array"].shape == (SR // 2,)
    assert f"dropped {len(BAD)} of {len(dataset)} rows" in caplog.text and "too_long: 1" in caplog.text
    same, _ = filter_bad_examples(clean, on_bad_example="error")  # a clean dataset passes the strict policy
    assert len(same) == len(GOOD)


def test_error_policy_names_the_first_bad_file(bad_folder):
    _, dataset = bad_folder
    report = validate_dataset(dataset)
    first = report.bad_examples[0]
    with pytest.raises(ValueError) as error:
        filter_bad_examples(dataset, on_bad_example="error", report=report)
    message = str(error.value)
    assert os.path.basename(first.path) in message and f"row {first.index}" in message
    assert first.reason in message and f"{len(BAD) - 1} other" in message


def test_paired_rows_are_judged_by_both_clips(tmp_path):
    """With ``mic_audio_column`` a row is bad when either clip is (the problem names the column); the good rows'
    hours count their LDV clips only; a clip of exactly ``max_seconds`` is kept, a sample more is too long."""
    for name, samples in {"ldv_a.wav": tone(0.5), "ldv_b.wav": tone(0.25), "ldv_c.wav": tone(0.5),
                          "ldv_d.wav": tone(0.5), "mic_a.wav": tone(0.4), "mic_c.wav": np.zeros(SR // 4, np.float32),
                          "mic_d.wav": tone(0.5 + 1 / SR)}.items():
        write_wav(tmp_path / name, samples)
    (tmp_path / "mic_b.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    rows = {"audio": [str(tmp_path / f"ldv_{k}.wav") for k in "abcd"],
            "mic_audio": [str(tmp_path / f"mic_{k}.wav") for k in "abcd"], "text": ["a", "b", "c", "d"]}
    dataset = Dataset.from_dict(rows)
    report = validate_dataset(dataset, mic_audio_column="mic_audio", max_seconds=0.5)
    found = {(bad.index, bad.column, bad.reason) for bad in report.bad_examples}
    assert found == {(1, "mic_audio", "decode_error"), (2, "mic_audio", "silent"), (3, "mic_audio", "too_long")}
    assert report.good_indices == [0] and report.audio_seconds == pytest.approx(0.5)  # ldv_a.wav, not mic_a.wav
    clean, _ = filter_bad_examples(dataset, mic_audio_column="mic_audio", max_seconds=0.5)
    assert clean["text"] == ["a"]
    # without the pairing only the LDV clips are judged: every row is good
    assert validate_dataset(dataset, max_seconds=0.5).ok


def run_cli(argv):
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_report_and_exits_1_on_bad_rows(bad_folder, tmp_path, capsys, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")  # keep ~/.cache clean
    folder, _ = bad_folder
    report_path = tmp_path / "out" / "report.json"
    assert run_cli(["validate-data", str(folder), "--split", "train", "--report", str(report_path)]) == 1
    saved = json.loads(report_path.read_text())
    assert saved["num_rows"] == len(GOOD) + len(BAD) and saved["num_bad"] == len(BAD)
    assert saved["splits"]["train"]["counts"]["decode_error"] == 1
    printed = capsys.readouterr().out
    assert "garbage.wav" in printed and "too_long" in printed

    good = tmp_path / "good"
    write_wav(good / "a.wav", tone(0.5))
    (good / "metadata.csv").write_text("file_name,text\na.wav,hello\n")
    assert run_cli(["validate-data", str(good)]) == 0
