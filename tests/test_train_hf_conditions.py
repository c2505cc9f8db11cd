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
