"""Where generic transformers code meets the adapted class: it behaves like the stock Qwen2-Audio class."""

import copy
import warnings

import pytest
import torch
from transformers import GenerationMixin, Qwen2AudioForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling

from modeling_qwen2audio_ldv import (
    DomainAdapterConfig,
    Qwen2AudioLDVForConditionalGeneration,
    add_domain_adapter_to_model,
)
from modeling_qwen2audio_ldv.adapter_bank_qwen2audio_ldv import ADAPTER_WEIGHTS_NAME
from modeling_qwen2audio_ldv.audio_tower_qwen2audio_ldv import encode_audio
from test_modeling import make_inputs

ADAPTER = dict(adapter_type="transformer", num_heads=4, ff_dim=32, zero_init=False, dropout=0.0)


@pytest.fixture()
def model(tiny_base):
    base, _ = tiny_base
    return add_domain_adapter_to_model(copy.deepcopy(base), **ADAPTER).eval()


def _generate(model, inputs, domains, **kwargs):
    return model.generate(**inputs, audio_domain=domains, max_new_tokens=4, do_sample=False, **kwargs)


def test_generate_with_beams_and_several_sequences_routes_each_row(tiny_base):
    """With ``num_beams=2`` each clip becomes two consecutive rows (``repeat_interleave``), so ``["ldv", "mic"]``
    must become ``["ldv", "ldv", "mic", "mic"]``. The tiny model picks the same tokens for both domains, so the
    rows are compared by their per-step logits, which a loud adapter (``scale_init=10``) moves by ~0.02-0.5 while a
    correctly routed row matches its clip generated alone to float32 rounding (~1e-7)."""
    base, processor = tiny_base
    torch.manual_seed(0)
    model = add_domain_adapter_to_model(copy.deepcopy(base), **{**ADAPTER, "scale_init": 10.0}).eval()
    inputs = make_inputs(processor, lengths=(16000, 12000))
    beams = dict(num_beams=2, num_return_sequences=2, return_dict_in_generate=True, output_logits=True)
    with torch.no_grad():
        routed = _generate(model, inputs, ["ldv", "mic"], **beams)
        assert routed.sequences.shape[0] == 4 and len(routed.logits) == 4
        for row, (domain, other) in enumerate([("ldv", "mic"), ("mic", "ldv")]):
            alone = {k: v[row : row + 1] for k, v in inputs.items()}
            own = _generate(model, alone, [domain], **beams)
            wrong = _generate(model, alone, [other], **beams)
            # left padding: compare the generated tokens (the last positions)
            assert torch.equal(routed.sequences[2 * row : 2 * row + 2, -4:], own.sequences[:, -4:])
            for step in range(4):
                torch.testing.assert_close(routed.logits[step][2 * row : 2 * row + 2], own.logits[step],
                                           rtol=0, atol=1e-5)
            # the comparison can tell the domains apart: this clip's other domain moves the logits
            assert max((w - o).abs().max() for w, o in zip(wrong.logits, own.logits)) > 1e-2


def test_every_loader_freezes_the_base(tiny_base_dir, tmp_path):
    config = DomainAdapterConfig(num_heads=4, ff_dim=32)
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tiny_base_dir, adapter_config=config)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("domain_adapters.default.") for name in trainable)
    model.save_pretrained(tmp_path / "full", adapter_only=False)
    full = Qwen2AudioLDVForConditionalGeneration.from_pretrained(tmp_path / "full")
    assert {name for name, p in full.named_parameters() if p.requires_grad} == trainable


def test_output_loading_info_on_an_adapter_and_a_full_checkpoint(tiny_base_dir, tmp_path):
    config = DomainAdapterConfig(num_heads=4, ff_dim=32, zero_init=False)
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tiny_base_dir, adapter_config=config)
    model.save_pretrained(tmp_path / "adapter")
    loaded, info = Qwen2AudioLDVForConditionalGeneration.from_pretrained(tmp_path / "adapter",
                                                                         output_loading_info=True)
    assert isinstance(loaded, Qwen2AudioLDVForConditionalGeneration)
    assert info["missing_keys"] == [] and not info["unexpected_keys"]
    assert torch.equal(loaded.domain_adapter.scale, model.domain_adapter.scale)
    # a full checkpoint without its adapter: refused even when the caller asks for the loading info
    base = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_base_dir)
    base.config.architectures = ["Qwen2AudioLDVForConditionalGeneration"]
    stripped = tmp_path / "no_adapter"
    full_config = copy.deepcopy(model.config)
    full_config.base_model_name_or_path = None
    Qwen2AudioLDVForConditionalGeneration(full_config).save_pretrained(stripped, adapter_only=False)
    from safetensors.torch import load_file, save_file

    weights = stripped / "model.safetensors"
    state = {k: v for k, v in load_file(weights).items() if not k.startswith("domain_adapter.")}
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="adapter's weights are missing"):
        Qwen2AudioLDVForConditionalGeneration.from_pretrained(stripped, output_loading_info=True)


def test_adapter_type_none_saves_and_reloads_as_the_base(tiny_base, tiny_base_dir, tmp_path):
    base, processor = tiny_base
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        tiny_base_dir, adapter_config=DomainAdapterConfig(adapter_type="none"))
    model.save_pretrained(tmp_path / "none")
    assert (tmp_path / "none" / ADAPTER_WEIGHTS_NAME).is_file()
    reloaded = Qwen2AudioLDVForConditionalGeneration.from_pretrained(tmp_path / "none").eval()
    assert reloaded.domain_adapter is None
    inputs = make_inputs(processor, lengths=(8000,))
    with torch.no_grad():
        assert torch.allclose(reloaded(**inputs).logits, base(**inputs).logits, atol=1e-5)


def test_one_config_object_after_adding_the_adapter(tiny_base):
    base, _ = tiny_base
    model = add_domain_adapter_to_model(copy.deepcopy(base), **ADAPTER)
    assert model.model.config is model.config
    assert model.config.text_config is model.model.language_model.config
    assert model.config.audio_config is model.model.audio_tower.config
    model.config.text_config.output_attentions_probe = 1  # an edit of a sub-config reaches the language model
    assert model.model.language_model.config.output_attentions_probe == 1


def test_from_pretrained_none_with_config_and_state_dict(model, tiny_base):
    _, processor = tiny_base
    rebuilt = Qwen2AudioLDVForConditionalGeneration.from_pretrained(None, config=model.config,
                                                                    state_dict=model.state_dict()).eval()
    inputs = make_inputs(processor, lengths=(8000,))
    with torch.no_grad():
        assert torch.allclose(rebuilt(**inputs).logits, model(**inputs).logits, atol=1e-6)


def test_get_audio_features_follows_the_transformers_5_contract(model, tiny_base):
    _, processor = tiny_base
    inputs = make_inputs(processor, lengths=(16000, 8000))
    features, mask = inputs["input_features"], inputs["feature_attention_mask"]
    with torch.no_grad():
        out = model.get_audio_features(features, mask)
        hidden, lengths = encode_audio(model.model.audio_tower, features, mask)
        adapted = model.apply_domain_adapter(hidden, lengths)
        assert isinstance(out, BaseModelOutputWithPooling)
        assert torch.equal(out.last_hidden_state, adapted)
        assert torch.equal(out.pooler_output, model.model.multi_modal_projector(adapted))
        assert torch.equal(out.audio_output_lengths, lengths)
        as_tuple = model.get_audio_features(features, mask, return_dict=False)
        assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.last_hidden_state)
        recorded = model.get_audio_features(features, mask, output_hidden_states=True)
        layers = len(model.model.audio_tower.layers)
        assert recorded.hidden_states is not None and len(recorded.hidden_states) >= layers
        # the stock padded pass: the valid frames equal the trimmed pass's (float32)
        for row, n in enumerate(lengths.tolist()):
            assert torch.allclose(recorded.pooler_output[row, :n], out.pooler_output[row, :n], atol=1e-5)


def test_past_key_values_warns_as_in_the_stock_class(model, tiny_base):
    base, processor = tiny_base
    inputs = make_inputs(processor, lengths=(8000,))
    caught = {}
    for name, m in (("stock", base), ("adapted", model)):
        with warnings.catch_warnings(record=True) as records, torch.no_grad():
            warnings.simplefilter("always")
            m(**inputs, past_key_values=None)
        caught[name] = [str(r.message).split(" for ")[0] for r in records if "past_key_values" in str(r.message)]
    assert caught["stock"] and caught["adapted"] == caught["stock"]


def test_the_class_generates_as_the_stock_one():
    # transformers decides from the class hierarchy whether a model gets a generation config and generate()
    assert issubclass(Qwen2AudioLDVForConditionalGeneration, GenerationMixin)
    assert Qwen2AudioLDVForConditionalGeneration.can_generate()


def test_freeze_base_model_with_integer_weights(model):
    # a quantised base weight (int8 storage, as bitsandbytes leaves it) stays untouched
    model.lm_head.weight = torch.nn.Parameter(torch.zeros_like(model.lm_head.weight, dtype=torch.int8),
                                              requires_grad=False)
    model.freeze_base_model()
    assert not model.lm_head.weight.requires_grad
    # a quantised adapter weight is refused with a clear message (the adapter must stay out of quantisation)
    model.domain_adapter.output_projection.weight = torch.nn.Parameter(
        torch.zeros_like(model.domain_adapter.output_projection.weight, dtype=torch.int8), requires_grad=False)
    with pytest.raises(ValueError, match="must stay out of quantisation"):
        model.freeze_base_model()


def test_training_loss_runs_the_head_on_supervised_positions_only(model, tiny_base, tmp_path):
    from transformers import TrainingArguments

    from modeling_qwen2audio_ldv.data.collator import DataCollatorForQwen2AudioLDV
    from modeling_qwen2audio_ldv.training.trainer import DomainAdapterTrainer

    _, processor = tiny_base
    from conftest import noise_clips

    rows = [{"audio": {"array": clip, "sampling_rate": 16000}, "text": text}
            for clip, text in zip(noise_clips([16000, 9000]), ["one two three", "four"])]
    batch = DataCollatorForQwen2AudioLDV(processor=processor, mode="train")(rows)
    batch = {k: v for k, v in batch.items() if torch.is_tensor(v)}
    supervised = int((batch["labels"][:, 1:] != -100).sum())
    with torch.no_grad():  # reference: full logits, mean cross-entropy over the supervised next tokens
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1]
        expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
    rows_seen = []
    handle = model.lm_head.register_forward_hook(lambda m, args, out: rows_seen.append(args[0].shape))
    trainer = DomainAdapterTrainer(model=model, args=TrainingArguments(str(tmp_path), report_to=[], use_cpu=True),
                                   objective="lm")
    try:
        with torch.no_grad():
            loss = trainer.compute_loss(model, dict(batch))
    finally:
        handle.remove()
    assert rows_seen == [torch.Size([supervised, model.config.text_config.hidden_size])]
    assert supervised < batch["labels"].numel() // 4  # the prompt and audio positions are most of the sequence
    assert torch.allclose(loss, expected, atol=1e-5)
