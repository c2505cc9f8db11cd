"""train_hf.py's demo corpus with a condition given as a JSON file (as the simulator documents)."""

import dataclasses
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train_hf  # noqa: E402

from modeling_qwen2audio_ldv.training.arguments import DataArguments  # noqa: E402
from modeling_qwen2audio_ldv.training.data import build_demo_data  # noqa: E402

pytestmark = pytest.mark.speech


def test_demo_data_with_a_json_condition(tmp_path):
    pytest.importorskip("espeakng_loader")
    from modeling_qwen2audio_ldv.synthetic.simulator import get_condition

    condition = dataclasses.replace(get_condition("cardboard_box"), name="my_box")
    path = condition.to_json(tmp_path / "my_condition.json")
    args = DataArguments(condition=str(path), eval_condition="cardboard_box", num_train_utterances=2,
                         num_eval_utterances=1, text_kinds=["digits"])
    train, eval_sets, corpus = build_demo_data(args, seed=0)
    assert len(train) == 2
    assert set(eval_sets) == {"ldv", "mic", "ldv_cardboard_box"}
    assert all(len(ds) == 1 for ds in eval_sets.values())
    assert set(corpus["train"]["condition"]) == {"my_box", "cardboard_box"}


def test_demo_eval_sets_do_not_move_with_the_training_size_or_draws():
    """The eval clips are the same bytes whatever --num_train_utterances and --ldv_draws are; each extra draw is
    one more training row per utterance with the same microphone clip and its own LDV recording."""
    pytest.importorskip("espeakng_loader")
    from datasets import Audio

    small = DataArguments(num_train_utterances=2, num_eval_utterances=2, text_kinds=["digits"], mic_fraction=0.0)
    large = dataclasses.replace(small, num_train_utterances=5, ldv_draws=3)
    _, small_eval, _ = build_demo_data(small, seed=0)
    train, large_eval, corpus = build_demo_data(large, seed=0)
    for name in ("ldv", "mic"):
        assert small_eval[name]["text"] == large_eval[name]["text"]
        raw = [ds.cast_column("audio", Audio(decode=False))["audio"] for ds in (small_eval[name],
                                                                                        large_eval[name])]
        assert [a["bytes"] for a in raw[0]] == [a["bytes"] for a in raw[1]]
    assert len(train) == 15  # 5 utterances x 3 draws
    rows = corpus["train"].cast_column("ldv_audio", Audio(decode=False)).cast_column(
        "mic_audio", Audio(decode=False))
    by_utterance = {}
    for row in rows:
        by_utterance.setdefault(row["utterance_id"], []).append(row)
    assert len(by_utterance) == 5 and all(len(r) == 3 for r in by_utterance.values())
    for draws in by_utterance.values():
        assert len({r["mic_audio"]["bytes"] for r in draws}) == 1
        assert len({r["ldv_audio"]["bytes"] for r in draws}) == 3
    assert sorted(set(corpus["train"]["condition"])) == ["cardboard_box", "cardboard_box~draw1",
                                                         "cardboard_box~draw2"]
    with pytest.raises(ValueError, match="--ldv_draws"):
        build_demo_data(dataclasses.replace(small, ldv_draws=0), seed=0)


class _Stop(Exception):
    pass


def test_feature_cache_is_built_on_the_training_device(tmp_path, monkeypatch):
    """train_hf.py moves the model to the training device before encoding the corpus (not after, in the Trainer;
    the collation step, ``training.pipeline.training_collator``, builds the cache).

    The training device is faked as ``meta`` (no GPU here): the cache builder must see the model there."""
    pytest.importorskip("espeakng_loader")
    import torch
    from transformers import TrainingArguments

    import modeling_qwen2audio_ldv.training.pipeline as pipeline
    from modeling_qwen2audio_ldv.testing import build_tiny_base

    model, processor = build_tiny_base(max_source_positions=150)
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    seen = {}

    def record(model, *args, **kwargs):
        seen["device"] = next(model.model.audio_tower.parameters()).device
        raise _Stop

    monkeypatch.setattr(pipeline, "build_feature_cache", record)
    # the real device set-up runs (it initialises the distributed state), then the device reads as `meta`
    monkeypatch.setattr(TrainingArguments, "device", property(lambda self: (self._setup_devices,
                                                                            torch.device("meta"))[1]))
    with pytest.raises(_Stop):
        train_hf.main(["--base_model", str(tmp_path / "base"), "--output_dir", str(tmp_path / "run"),
                       "--num_train_utterances", "2", "--num_eval_utterances", "1", "--text_kinds", "digits",
                       "--adapter_type", "transformer", "--num_heads", "4", "--ff_dim", "32", "--max_steps", "1"])
    assert seen["device"] == torch.device("meta")
