"""Data tools that fit together: synth-corpus's paired audiofolder trains through train_hf.py as it is, with a
manifest as --eval_data, a manifest as --mic_eval_data and --mic_fraction on the user's own paired data."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train_hf  # noqa: E402
from modeling_qwen2audio_ldv.training.data import eval_split, mix_user_mic_rows  # noqa: E402

pytestmark = pytest.mark.speech


@pytest.fixture(scope="module")
def paired_corpus(tmp_path_factory):
    pytest.importorskip("espeakng_loader")
    from modeling_qwen2audio_ldv import cli

    output = tmp_path_factory.mktemp("corpus") / "corpus"
    assert cli.main(["synth-corpus", "--output", str(output), "--num-train", "8", "--num-eval", "3",
                     "--kinds", "digits", "--paired-audiofolder"]) == 0
    return output / "paired_audiofolder"


def _rows(folder: Path):
    with open(folder / "metadata.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_paired_audiofolder_layout(paired_corpus):
    digits = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    for split, count in (("train", 8), ("validation", 3), ("test", 3)):
        rows = _rows(paired_corpus / split)
        assert len(rows) == count
        for row in rows:
            assert row["file_name"].startswith("ldv/") and row["mic_file_name"].startswith("mic/")
            assert (paired_corpus / split / row["file_name"]).is_file()
            assert (paired_corpus / split / row["mic_file_name"]).is_file()
            assert set(row["text"].split()) <= digits  # --kinds digits


def test_mic_fraction_applies_to_paired_user_data(paired_corpus):
    from modeling_qwen2audio_ldv.data.loading import load_audio_dataset

    train = load_audio_dataset(paired_corpus, split="train", mic_audio_column="mic_file_name")
    mixed = mix_user_mic_rows(train, 0.5, seed=3)
    raw = mixed.cast_column("audio", __import__("datasets").Audio(decode=False)).cast_column(
        "mic_audio", __import__("datasets").Audio(decode=False))
    audio, mic = [r["path"] for r in raw["audio"]], [r["path"] for r in raw["mic_audio"]]
    expected = np.random.default_rng(3).random(len(train)) < 0.5  # mix_mic_rows's draw
    assert [a == m for a, m in zip(audio, mic)] == expected.tolist()
    assert 0 < expected.sum() < len(train)
    assert all("/mic/" in m for m in mic) and list(mixed["text"]) == list(train["text"])
    assert mix_user_mic_rows(train, 0.0, seed=3) is train


def _manifest(paired_corpus: Path, path: Path, column: str) -> Path:
    rows = _rows(paired_corpus / "test")
    path.write_text("".join(json.dumps({"audio": str(paired_corpus / "test" / r[column]), "text": r["text"]}) + "\n"
                            for r in rows))
    return path


def test_synth_corpus_output_trains_through_train_hf(paired_corpus, tiny_base_3s, tmp_path):
    """As the README tells a user: the paired folder as --train_data, manifests as --eval_data (a manifest loads
    as one "train" split, which was refused) and --mic_eval_data (which was never reduced to one split)."""
    eval_manifest = _manifest(paired_corpus, tmp_path / "my_test.jsonl", "file_name")
    mic_manifest = _manifest(paired_corpus, tmp_path / "my_mic_test.jsonl", "mic_file_name")
    results = train_hf.main([
        "--base_model", str(tiny_base_3s), "--output_dir", str(tmp_path / "run"),
        "--train_data", str(paired_corpus), "--mic_audio_column", "mic_file_name",
        "--eval_data", str(eval_manifest), "--mic_eval_data", str(mic_manifest), "--mic_fraction", "0.5",
        "--max_steps", "2", "--per_device_train_batch_size", "4", "--adapter_type", "transformer",
        "--num_heads", "4", "--ff_dim", "32",
        "--eval_batch_size", "4", "--max_new_tokens", "3", "--logging_steps", "1", "--save_strategy", "no",
    ])
    assert results["eval"].keys() == {"ldv", "mic"}
    for rows in results["eval"].values():
        assert rows.keys() == {"baseline", "adapted"}
    assert results["train_rows"] == 8
    assert (tmp_path / "run" / "adapter" / "domain_adapter.safetensors").is_file()


def test_eval_split_choice():
    from datasets import Dataset, DatasetDict

    one = Dataset.from_dict({"text": ["a"]})
    assert eval_split(DatasetDict({"train": one}), "m.jsonl", given_for_evaluation=True) is one
    assert eval_split(DatasetDict({"train": one, "test": one}), "d", given_for_evaluation=False) is one
    with pytest.raises(ValueError, match="no test/validation split"):
        eval_split(DatasetDict({"train": one}), "d", given_for_evaluation=False)
    with pytest.raises(ValueError, match="none of them test or validation"):
        eval_split(DatasetDict({"a": one, "b": one}), "d", given_for_evaluation=True)
