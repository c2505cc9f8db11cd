"""The committed mini base (``mini_base/``) and its build (``mini_world.build_mini_base``)."""

import json
from pathlib import Path

import pytest

from modeling_qwen2audio_ldv.mini_world import edit_distance, error_rates

MINI_BASE = Path(__file__).resolve().parents[1] / "mini_base"


def test_error_rates_by_hand():
    # "kitten" -> "sitting": 3 edits; words: 1 substitution in 2 words.
    assert edit_distance("kitten", "sitting") == 3
    rates = error_rates(["one two", "sitting"], ["one three", "kitten"])
    # characters: "three" -> "two" is 2 substitutions + 2 deletions; "kitten" -> "sitting" 3; 9 + 6 reference chars.
    assert rates["cer"] == pytest.approx(7 / 15)
    assert rates["wer"] == pytest.approx(2 / 3)
    assert error_rates(["a b"], ["a b"]) == {"cer": 0.0, "wer": 0.0}


def test_mini_base_is_committed_and_small():
    for name in ("config.json", "model.safetensors", "generation_config.json", "BUILD.md", "build_record.json"):
        assert (MINI_BASE / name).is_file(), name
    size = sum(path.stat().st_size for path in MINI_BASE.iterdir())
    assert size < 20 * 2**20, f"mini_base/ is {size / 2**20:.1f} MB"


@pytest.mark.speech
def test_mini_base_transcribes_heldout_microphone_speech():
    """Stock classes load the base; 10 held-out clips (unseen voices and texts) transcribe as in the build.

    The bound is the CER that the build recorded for the same 10 utterances (their transcripts are stored in
    build_record.json) plus 3 points for float differences between machines and thread counts.
    """
    pytest.importorskip("espeakng_loader")
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from modeling_qwen2audio_ldv.mini_world import render_heldout_microphone, transcribe

    record = json.loads((MINI_BASE / "build_record.json").read_text())
    examples = record["evaluation"]["examples"][:10]
    assert len(examples) == 10
    assert {e["voice"] for e in examples} <= set(record["corpus"]["heldout_voices"])
    assert not {e["voice"] for e in examples} & set(record["corpus"]["train_voices"])

    model = Qwen2AudioForConditionalGeneration.from_pretrained(MINI_BASE)
    processor = AutoProcessor.from_pretrained(MINI_BASE)
    clips = [render_heldout_microphone(example, record["seed"]) for example in examples]
    hypotheses = transcribe(model, processor, clips, batch_size=10)
    references = [example["text"] for example in examples]
    recorded = error_rates([example["microphone"] for example in examples], references)["cer"]
    measured = error_rates(hypotheses, references)["cer"]
    assert measured <= recorded + 0.03, (measured, recorded, list(zip(references, hypotheses)))


@pytest.mark.speech
def test_build_is_deterministic_for_a_seed():
    """Two short builds (tiny corpus, 4 steps) with the same seed give the same first-epoch loss."""
    pytest.importorskip("espeakng_loader")
    from modeling_qwen2audio_ldv.mini_world import build_mini_base

    small = dict(num_train=24, num_heldout=2, steps=4, batch_size=8, max_new_tokens=4, log_every=2, command="test")
    first = build_mini_base(None, seed=3, **small)
    second = build_mini_base(None, seed=3, **small)
    other = build_mini_base(None, seed=4, **small)
    assert first["training"]["steps_per_epoch"] == 3
    assert first["training"]["first_epoch_loss"] == second["training"]["first_epoch_loss"]
    assert first["training"]["losses_every_50"] == second["training"]["losses_every_50"]
    assert first["training"]["first_epoch_loss"] != other["training"]["first_epoch_loss"]
