"""Every weight must arrive, and wrong inputs or checkpoints fail with an error naming what is wrong."""

import copy
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import noise_clips
from modeling_qwen2audio_ldv import (
    DomainAdapterConfig,
    Qwen2AudioLDVForConditionalGeneration,
    add_domain_adapter_to_model,
)
from modeling_qwen2audio_ldv.adapter_bank_qwen2audio_ldv import ADAPTER_WEIGHTS_NAME
from modeling_qwen2audio_ldv.adapters_qwen2audio_ldv import build_domain_adapter
from modeling_qwen2audio_ldv.data.collator import build_prompt
from test_modeling import make_inputs

ADAPTER = DomainAdapterConfig(num_heads=4, ff_dim=32, num_layers=1, zero_init=False)


def edited_copy(source, destination, edit):
    """A copy of a checkpoint directory whose ``model.safetensors`` went through ``edit(state) -> state``."""
    shutil.copytree(source, destination)
    weights = destination / "model.safetensors"
    save_file(edit(load_file(weights)), weights, metadata={"format": "pt"})
    return destination


def test_intact_base_loads(tiny_base, tiny_base_dir):
    base, _ = tiny_base
    model, info = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tiny_base_dir, adapter_config=ADAPTER,
                                                                             output_loading_info=True)
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    loaded = model.state_dict()
    for key, value in base.state_dict().items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("adapter", [
    dict(adapter_type="lora", lora_rank=4, encoder_layer=1),
    dict(adapter_type="transformer", num_heads=4, ff_dim=32, num_layers=1),
    dict(adapter_type="mlp", encoder_layer=1),
], ids=["lora", "transformer", "mlp"])
def test_a_fresh_zero_init_adapter_from_a_base_starts_as_the_base(tiny_base, tiny_base_dir, adapter):
    """``from_base_pretrained`` initialises the new adapter with its own ``reset_parameters``, not the base's
    N(0, 0.02) for every Linear: with ``zero_init`` (LoRA's B at zero, the transformer's output LayerNorm and the
    MLP's up-projection at zero) the adapted model's logits are those with the adapter off, to the bit."""
    base, processor = tiny_base
    config = DomainAdapterConfig(**adapter, zero_init=True)
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tiny_base_dir, adapter_config=config).eval()
    reference = add_domain_adapter_to_model(copy.deepcopy(base), **adapter, zero_init=True)
    fresh = model.domain_adapter.state_dict()
    zeroed = [key for key, value in reference.domain_adapter.state_dict().items() if not value.abs().sum()]
    assert zeroed and all(not fresh[key].abs().sum() for key in zeroed)  # zero after loading too
    if adapter["adapter_type"] == "lora":  # A drawn Kaiming-uniform (bound 1/sqrt(fan_in)), not N(0, 0.02)
        a = fresh["layers.1.fc1.lora_A.ldv.weight"]
        assert 0 < a.abs().max() <= 1 / a.shape[1] ** 0.5
    inputs = make_inputs(processor, lengths=(16000, 8000))
    with torch.no_grad():
        logits = model(**inputs).logits
        with model.disable_domain_adapter():
            assert torch.equal(logits, model(**inputs).logits)


def test_base_with_a_missing_weight_raises(tiny_base_dir, tmp_path):
    def drop(state):  # the file may use the legacy layout (no leading "model."): find the key by its suffix
        return {k: v for k, v in state.items() if not k.endswith("audio_tower.layers.1.fc1.weight")}

    broken = edited_copy(tiny_base_dir, tmp_path / "base", drop)
    with pytest.raises(ValueError, match=r"base: checkpoint does not match the model: missing keys \['model\.audio_tower"
                                         r"\.layers\.1\.fc1\.weight'\]"):
        Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(broken, adapter_config=ADAPTER)


def test_base_with_an_extra_weight_raises(tiny_base_dir, tmp_path):
    broken = edited_copy(tiny_base_dir, tmp_path / "base",
                         lambda state: {**state, "model.audio_tower.extra_probe.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"unexpected keys \['model\.audio_tower\.extra_probe\.weight'\]"):
        Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(broken, adapter_config=ADAPTER)


def test_base_with_a_wrong_shape_raises(tiny_base_dir, tmp_path):
    def reshape(state):
        key = next(k for k in state if k.endswith("multi_modal_projector.linear.weight"))
        return {**state, key: torch.zeros(state[key].shape[0], state[key].shape[1] + 1)}

    broken = edited_copy(tiny_base_dir, tmp_path / "base", reshape)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):  # transformers' own check
        Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(broken, adapter_config=ADAPTER)
    # asking transformers to skip it does not let a re-initialised weight through
    with pytest.raises(ValueError, match=r"mismatched shapes .*multi_modal_projector\.linear\.weight"):
        Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(broken, adapter_config=ADAPTER,
                                                                   ignore_mismatched_sizes=True)


def test_full_checkpoint_without_its_adapter_raises(tiny_base_dir, tmp_path):
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tiny_base_dir, adapter_config=ADAPTER)
    model.save_pretrained(tmp_path / "full", adapter_only=False)
    assert not (tmp_path / "full" / ADAPTER_WEIGHTS_NAME).exists()
    Qwen2AudioLDVForConditionalGeneration.from_pretrained(tmp_path / "full")  # intact: loads

    def strip(state):
        kept = {k: v for k, v in state.items() if not k.startswith("domain_adapter.")}
        assert len(kept) < len(state)
        return kept

    stripped = edited_copy(tmp_path / "full", tmp_path / "stripped", strip)
    with pytest.raises(ValueError, match=r"missing keys \['domain_adapters\.default\."):
        Qwen2AudioLDVForConditionalGeneration.from_pretrained(stripped)


def test_a_base_that_is_not_qwen2_audio_is_refused(tmp_path):
    from transformers import Qwen2Config

    Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1).save_pretrained(tmp_path / "qwen2")
    with pytest.raises(ValueError, match=r"qwen2: expected a Qwen2-Audio checkpoint \(model_type 'qwen2_audio'\), "
                                         r"got model_type 'qwen2'"):
        Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tmp_path / "qwen2")


@pytest.mark.parametrize("adapter_only", [True, False])
def test_an_adapter_model_is_refused_as_a_base(tiny_base_dir, tmp_path, adapter_only):
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tiny_base_dir, adapter_config=ADAPTER)
    model.save_pretrained(tmp_path / "adapter", adapter_only=adapter_only)
    with pytest.raises(ValueError, match=r"adapter already holds an LDV adapter model; use from_pretrained"):
        Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tmp_path / "adapter")


def test_adapter_input_width_must_equal_the_encoder_width(tiny_base, tiny_base_dir):
    base, _ = tiny_base
    d_model = base.config.audio_config.d_model
    wrong = DomainAdapterConfig(num_heads=4, ff_dim=32, num_layers=1, input_dim=2 * d_model)
    message = rf"`input_dim` \({2 * d_model}\) differs from the (audio )?encoder's `?d_model`? \({d_model}\)"
    with pytest.raises(ValueError, match=message):
        Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tiny_base_dir, adapter_config=wrong)
    with pytest.raises(ValueError, match=message):
        add_domain_adapter_to_model(copy.deepcopy(base), adapter_type="transformer", num_heads=4, ff_dim=32,
                                    input_dim=2 * d_model)
    with pytest.raises(ValueError, match=message):  # the module-level check, for configs built by hand
        build_domain_adapter(wrong, d_model)


def test_adapter_features_of_another_width_are_refused(tiny_base):
    base, _ = tiny_base
    model = add_domain_adapter_to_model(copy.deepcopy(base), adapter_type="transformer", num_heads=4, ff_dim=32)
    d_model = base.config.audio_config.d_model
    with pytest.raises(ValueError, match=rf"expects features of shape \(batch, frames, {d_model}\), got \(1, 5, "
                                         rf"{d_model + 4}\)"):
        model.domain_adapter(torch.zeros(1, 5, d_model + 4))


def test_adapter_weight_of_the_wrong_shape_is_refused(tiny_base_dir, tmp_path):
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tiny_base_dir, adapter_config=ADAPTER)
    model.save_pretrained(tmp_path / "adapter")
    weights = tmp_path / "adapter" / ADAPTER_WEIGHTS_NAME
    state = load_file(weights)
    rows, columns = state["layers.0.fc1.weight"].shape
    state["layers.0.fc1.weight"] = torch.zeros(rows + 8, columns)
    save_file(state, weights)
    with pytest.raises(ValueError, match=rf"adapter weight shapes differ .*layers\.0\.fc1\.weight: file "
                                         rf"\({rows + 8}, {columns}\) vs model \({rows}, {columns}\)"):
        Qwen2AudioLDVForConditionalGeneration.from_pretrained(tmp_path / "adapter")


def test_audio_tokens_must_match_the_frame_count(tiny_base):
    base, processor = tiny_base
    model = add_domain_adapter_to_model(copy.deepcopy(base), adapter_type="transformer", num_heads=4, ff_dim=32).eval()
    clips = noise_clips([16000, 8000])
    inputs = processor(text=[build_prompt(processor)] * 2, audio=clips, sampling_rate=16000,
                       return_tensors="pt", padding=True)
    audio_token = model.config.audio_token_id
    with torch.no_grad():
        model(**inputs)  # intact: runs
    # drop one <|AUDIO|> token of the first clip (keep the batch rectangular by left-padding it)
    ids, mask = inputs["input_ids"].clone(), inputs["attention_mask"].clone()
    first = int((ids[0] == audio_token).nonzero()[0])
    pad = processor.tokenizer.pad_token_id
    ids[0] = torch.cat([torch.tensor([pad]), ids[0, :first], ids[0, first + 1:]])
    mask[0] = torch.cat([torch.tensor([0]), mask[0, :first], mask[0, first + 1:]])
    frames = int((inputs["input_ids"] == audio_token).sum())
    with torch.no_grad(), pytest.raises(ValueError, match=rf"{frames - 1} <\|AUDIO\|> tokens in input_ids but "
                                                          rf"{frames} audio frames"):
        model(**{**inputs, "input_ids": ids, "attention_mask": mask})
