"""train_hf.py's demo corpus with a condition given as a JSON file (as the simulator documents)."""

import dataclasses
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train_hf  # noqa: E402

pytestmark = pytest.mark.speech


def test_demo_data_with_a_json_condition(tmp_path):
    pytest.importorskip("espeakng_loader")
    from modeling_qwen2audio_ldv.simulator import get_condition

    condition = dataclasses.replace(get_condition("cardboard_box"), name="my_box")
    path = condition.to_json(tmp_path / "my_condition.json")
    args = train_hf.DataArguments(condition=str(path), eval_condition="cardboard_box", num_train_utterances=2,
                                  num_eval_utterances=1, text_kinds=["digits"])
    train, eval_sets, corpus = train_hf.build_demo_data(args, seed=0)
    assert len(train) == 2
    assert set(eval_sets) == {"ldv", "mic", "ldv_cardboard_box"}
    assert all(len(ds) == 1 for ds in eval_sets.values())
    assert set(corpus["train"]["condition"]) == {"my_box", "cardboard_box"}


class _Stop(Exception):
    pass


def test_feature_cache_is_built_on_the_training_device(tmp_path, monkeypatch):
    """train_hf.py moves the model to the training device before encoding the corpus (not after, in the Trainer).

    The training device is faked as ``meta`` (no GPU here): the cache builder must see the model there."""
    pytest.importorskip("espeakng_loader")
    import torch
    from transformers import TrainingArguments

    import modeling_qwen2audio_ldv.training as training
    from modeling_qwen2audio_ldv.testing import build_tiny_base

    model, processor = build_tiny_base(max_source_positions=150)
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    seen = {}

    def record(model, *args, **kwargs):
        seen["device"] = next(model.model.audio_tower.parameters()).device
        raise _Stop

    monkeypatch.setattr(training, "build_feature_cache", record)
    # the real device set-up runs (it initialises the distributed state), then the device reads as `meta`
    monkeypatch.setattr(TrainingArguments, "device", property(lambda self: (self._setup_devices,
                                                                            torch.device("meta"))[1]))
    with pytest.raises(_Stop):
        train_hf.main(["--base_model", str(tmp_path / "base"), "--output_dir", str(tmp_path / "run"),
                       "--num_train_utterances", "2", "--num_eval_utterances", "1", "--text_kinds", "digits",
                       "--num_heads", "4", "--ff_dim", "32", "--max_steps", "1"])
    assert seen["device"] == torch.device("meta")
