"""Checkpoints written before the adapter bank became a ``ModuleDict`` load unchanged and give the same logits.

``tests/fixtures/legacy/`` was written by ``tests/fixtures/make_legacy_checkpoints.py`` run on commit ccee294 (the
active adapter was ``model.domain_adapter`` and full checkpoints held ``domain_adapter.*`` keys); the logits in
``expected.safetensors`` are that code's.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from modeling_qwen2audio_ldv import Qwen2AudioLDVForConditionalGeneration

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy"


@pytest.fixture
def legacy(tmp_path):
    """The fixture folders, with the adapters' base reference pointed at this copy of the base."""
    root = tmp_path / "legacy"
    shutil.copytree(LEGACY, root)
    for name in ("adapter", "adapter_box"):
        config_path = root / name / "config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = str(root / "base")
        config_path.write_text(json.dumps(config))
    return root


def legacy_inputs(root):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(root / "base")
    processor.tokenizer.padding_side = "left"  # as the in-memory tiny processor that computed the expected logits
    rng = np.random.default_rng(7)
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 9000)]
    prompt = "<|audio_bos|><|AUDIO|><|audio_eos|>Transcribe the audio."
    return processor(text=[prompt] * 2, audio=clips, sampling_rate=16000, return_tensors="pt", padding=True)


def test_a_legacy_adapter_only_checkpoint_loads_with_the_same_logits(legacy):
    expected = load_file(legacy / "expected.safetensors")
    model = Qwen2AudioLDVForConditionalGeneration.from_pretrained(legacy / "adapter").eval()
    assert list(model.domain_adapters) == ["default"] and model.domain_adapter.config.encoder_layer == 1
    model.load_domain_adapter(legacy / "adapter_box", adapter_name="box")
    batch = legacy_inputs(legacy)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, expected["default"], rtol=0, atol=1e-6)
        torch.testing.assert_close(model(**batch, audio_domain="box").logits, expected["box"], rtol=0, atol=1e-6)


def test_a_legacy_full_checkpoint_loads_every_key_into_the_default_slot(legacy):
    expected = load_file(legacy / "expected.safetensors")
    saved = load_file(legacy / "full" / "model.safetensors")
    model, info = Qwen2AudioLDVForConditionalGeneration.from_pretrained(legacy / "full", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    adapter = {k[len("domain_adapter."):]: v for k, v in saved.items() if k.startswith("domain_adapter.")}
    assert adapter and adapter.keys() == model.domain_adapters["default"].state_dict().keys()
    assert all(torch.equal(v, model.domain_adapters["default"].state_dict()[k]) for k, v in adapter.items())
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(**legacy_inputs(legacy)).logits, expected["default"], rtol=0,
                                   atol=1e-6)


def test_a_full_save_keeps_the_legacy_key_layout(legacy, tmp_path):
    """A full checkpoint written now has the keys of the legacy one (the active adapter as ``domain_adapter.*``),
    whichever adapter is active, and the other loaded adapters are not written."""
    model = Qwen2AudioLDVForConditionalGeneration.from_pretrained(legacy / "full")
    model.load_domain_adapter(legacy / "adapter_box", adapter_name="box")
    model.save_pretrained(tmp_path / "again", adapter_only=False)
    assert load_file(tmp_path / "again" / "model.safetensors").keys() == load_file(
        legacy / "full" / "model.safetensors").keys()
    model.set_domain_adapter("box")
    model.save_pretrained(tmp_path / "box", adapter_only=False)
    keys = load_file(tmp_path / "box" / "model.safetensors").keys()
    box = {f"domain_adapter.{k}" for k in model.domain_adapters["box"].state_dict()}
    assert box <= keys and not any(k.startswith("domain_adapters.") for k in keys)
    reloaded = Qwen2AudioLDVForConditionalGeneration.from_pretrained(tmp_path / "box")
    assert reloaded.domain_adapter.config.adapter_type == "mlp"
    assert all(torch.equal(v, reloaded.domain_adapter.state_dict()[k])
               for k, v in model.domain_adapters["box"].state_dict().items())
