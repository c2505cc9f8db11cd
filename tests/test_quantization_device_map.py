"""A quantised (bitsandbytes) or dispatched (device_map) base: what transformers and accelerate see, on CPU.

bitsandbytes kernels need a GPU; these tests check what decides the outcome without them: the quantiser's skip
list (transformers' own code), the adapter's dtype, the Trainer's check on quantised models, the cached features'
dtype, device_map planning with a memory budget, and a forward with the audio tower offloaded to disk.
"""

import copy
import types

import pytest
import torch
from transformers import BitsAndBytesConfig, TrainingArguments
from transformers.quantizers.base import HfQuantizer
from transformers.quantizers.quantizer_bnb_4bit import Bnb4BitHfQuantizer
from transformers.quantizers.quantizers_utils import should_convert_module

from modeling_qwen2audio_ldv import (
    DomainAdapterConfig,
    Qwen2AudioLDVForConditionalGeneration,
    add_domain_adapter_to_model,
)
from modeling_qwen2audio_ldv.audio_tower_qwen2audio_ldv import encode_audio
from test_modeling import make_inputs

ADAPTER = DomainAdapterConfig(num_heads=4, ff_dim=32, zero_init=False, dropout=0.0)


def _linear_names(model):
    return [name for name, module in model.named_modules() if type(module) is torch.nn.Linear]


class _StopBeforeTheLayerSwap(Exception):
    """Raised in place of bitsandbytes' layer swap, which needs a GPU build: the skip list is decided by then."""


def _quantised_load_skip_list(monkeypatch, load, skip_modules):
    """What a real ``from_pretrained(quantization_config=BitsAndBytesConfig(load_in_4bit=True))`` decides, through
    transformers' own code up to ``replace_with_bnb_linear``: the modules it leaves unconverted, the model's float32
    lists and its ``nn.Linear`` names."""
    seen = {}

    def swap_layers(model, modules_to_not_convert=None, quantization_config=None, pre_quantized=False):
        seen.update(skip=list(modules_to_not_convert), linears=_linear_names(model),
                    keep=set(model._keep_in_fp32_modules), strict=set(model._keep_in_fp32_modules_strict))
        raise _StopBeforeTheLayerSwap

    monkeypatch.setattr(Bnb4BitHfQuantizer, "validate_environment", lambda self, *args, **kwargs: None)
    monkeypatch.setattr("transformers.integrations.replace_with_bnb_linear", swap_layers)
    with pytest.raises(_StopBeforeTheLayerSwap):
        load(BitsAndBytesConfig(load_in_4bit=True, llm_int8_skip_modules=skip_modules))
    return seen


LORA_ADAPTER = DomainAdapterConfig(adapter_type="lora", encoder_layer=1, lora_rank=4)


@pytest.mark.parametrize("adapter", [ADAPTER, LORA_ADAPTER], ids=["transformer", "lora"])
@pytest.mark.parametrize("skip_modules", [None, ["lm_head"]])
def test_bitsandbytes_skip_list_keeps_every_adapter_linear(tiny_base, tiny_base_dir, monkeypatch, skip_modules,
                                                           adapter):
    """The quantiser skips only ``_keep_in_fp32_modules`` (not the strict list, and a module may be in one list
    only): a quantised model names its adapters there, in a real load and after converting a quantised stock model.
    A lora adapter's ``lora_A``/``lora_B`` stay float32 while the tower's projections they update are quantised."""
    loaded = _quantised_load_skip_list(monkeypatch, lambda quantization: (
        Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tiny_base_dir, adapter_config=adapter,
                                                                   quantization_config=quantization)), skip_modules)
    base, _ = tiny_base
    stock = copy.deepcopy(base)
    stock.config.quantization_config = BitsAndBytesConfig(load_in_4bit=True)  # as a quantised load leaves it
    model = add_domain_adapter_to_model(stock, **adapter.to_dict())
    converted = dict(skip=HfQuantizer.get_modules_to_not_convert(model, skip_modules, model._keep_in_fp32_modules),
                     linears=_linear_names(model), keep=set(model._keep_in_fp32_modules),
                     strict=set(model._keep_in_fp32_modules_strict))
    for seen in (loaded, converted):
        assert "domain_adapters" in seen["keep"] and not seen["keep"] & seen["strict"]
        adapter = [n for n in seen["linears"] if n.startswith("domain_adapters.")]
        assert adapter and not any(should_convert_module(n, seen["skip"]) for n in adapter), seen["skip"]
        # the base's layers are still quantised (the skip list is not "everything")
        assert should_convert_module("model.language_model.layers.0.self_attn.q_proj", seen["skip"])
        assert should_convert_module("model.audio_tower.layers.0.fc1", seen["skip"])


def test_adapter_stays_float32_on_a_bfloat16_base(tiny_base_dir):
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tiny_base_dir, adapter_config=ADAPTER,
                                                                       dtype=torch.bfloat16)
    assert {p.dtype for p in model.domain_adapter.parameters()} == {torch.float32}
    assert model.model.language_model.embed_tokens.weight.dtype == torch.bfloat16
    assert model._keep_in_fp32_modules_strict == {"domain_adapters"} and not model._keep_in_fp32_modules


class _QuantisedProjectorLinear(torch.nn.Module):
    """Stands for a bitsandbytes Linear4bit: uint8 weight storage, a float compute dtype; records its input dtype."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.linear = linear
        self.weight = torch.nn.Parameter(torch.zeros(4, dtype=torch.uint8), requires_grad=False)
        self.compute_dtype = torch.float32
        self.seen = []

    def forward(self, x):
        self.seen.append(x.dtype)
        return self.linear(x.to(self.compute_dtype))


def test_cached_features_are_cast_to_the_compute_dtype_not_the_storage_dtype(tiny_base):
    base, processor = tiny_base
    model = add_domain_adapter_to_model(copy.deepcopy(base), adapter_type="transformer", num_heads=4, ff_dim=32).eval()
    inputs = make_inputs(processor, lengths=(8000,))
    with torch.no_grad():
        hidden, lengths = encode_audio(model.model.audio_tower, inputs["input_features"],
                                       inputs["feature_attention_mask"])
        reference = model(**inputs).logits
        stand_in = _QuantisedProjectorLinear(model.model.multi_modal_projector.linear)
        model.model.multi_modal_projector.linear = stand_in
        cached = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                       audio_encoder_hidden_states=hidden.to(torch.float16), audio_encoder_lengths=lengths).logits
    assert stand_in.seen == [torch.float32]
    assert torch.allclose(cached, reference, atol=1e-2)  # float16 storage of the cached features


def test_trainer_accepts_a_quantised_base_with_a_trainable_adapter(tiny_base, tmp_path):
    from transformers import Trainer

    from modeling_qwen2audio_ldv.training.trainer import DomainAdapterTrainer

    base, _ = tiny_base
    model = add_domain_adapter_to_model(copy.deepcopy(base), adapter_type="transformer", num_heads=4, ff_dim=32)
    # what from_pretrained(quantization_config=BitsAndBytesConfig(load_in_4bit=True)) attaches
    model.hf_quantizer = types.SimpleNamespace(is_trainable=True, is_qat_trainable=False,
                                               quantization_config=types.SimpleNamespace(quant_method="bitsandbytes"))
    model.is_quantized = True
    args = TrainingArguments(str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match="purely quantized"):
        Trainer(model=model, args=args)  # the stock check this Trainer has to pass
    DomainAdapterTrainer(model=model, args=args)
    assert not getattr(model, "_hf_peft_config_loaded", False)  # not left behind
    model.freeze_base_model()
    model.domain_adapter.requires_grad_(False)  # nothing trainable: refused as before
    with pytest.raises(ValueError, match="purely quantized"):
        DomainAdapterTrainer(model=model, args=args)


def _sizes(model):
    return {name: sum(p.numel() * p.element_size() for p in module.parameters())
            for name, module in model.named_children()}


def test_device_map_never_splits_the_adapter(tiny_base_dir):
    from accelerate import infer_auto_device_map
    from accelerate.utils import compute_module_sizes

    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tiny_base_dir, adapter_config=ADAPTER)
    sizes = compute_module_sizes(model)
    before = sizes[""] - sizes["domain_adapters"]
    # device 0 ends in the middle of the adapter (it comes last, after lm_head)
    budget = {0: before + sizes["domain_adapters"] // 2, 1: sizes[""], "cpu": sizes[""]}
    device_map = infer_auto_device_map(model, max_memory=budget,
                                       no_split_module_classes=model._no_split_modules)  # as device_map="auto"
    adapter_devices = {device for name, device in device_map.items() if name.startswith("domain_adapter")}
    assert len(adapter_devices) == 1, device_map


def test_forward_with_the_audio_tower_offloaded_to_disk(tiny_base, tiny_base_dir, tmp_path):
    """accelerate keeps offloaded weights on the meta device and loads them in its hooks: the trimmed tower pass
    must run through them (the stock padded pass moves the features to the meta device and fails)."""
    _, processor = tiny_base
    reference = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tiny_base_dir, adapter_config=ADAPTER)
    device_map = {"model.audio_tower": "disk", "model.multi_modal_projector": "cpu", "model.language_model": "cpu",
                  "lm_head": "cpu", "domain_adapters": "cpu"}
    offloaded = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        tiny_base_dir, adapter_config=ADAPTER, device_map=device_map, offload_folder=str(tmp_path))
    offloaded.domain_adapter.load_state_dict(reference.domain_adapter.state_dict())
    assert offloaded.model.audio_tower.conv1.weight.device.type == "meta"
    inputs = make_inputs(processor, lengths=(16000, 8000))
    with torch.no_grad():
        assert torch.allclose(offloaded.eval()(**inputs).logits, reference.eval()(**inputs).logits, atol=1e-5)


def test_4bit_recipe_loads_the_base_in_4bit_with_a_bfloat16_compute_dtype():
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo))
    import train_hf

    from modeling_qwen2audio_ldv.training.pipeline import quantization_kwargs

    recipe = repo / "configuration" / "recipes" / "qwen2_audio_7b_4bit.yaml"
    (model_args, _, _, _, training_args), _ = train_hf.parse_arguments([str(recipe), "--output_dir", "unused",
                                                                        "--bf16", "false"])
    kwargs = quantization_kwargs(model_args, "cuda:0")
    config = kwargs["quantization_config"]
    assert config.load_in_4bit and not config.load_in_8bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert kwargs["device_map"] == {"": "cuda:0"}  # one device per process, as the Trainer expects
    model_args.load_in_4bit = False
    assert quantization_kwargs(model_args, "cpu") == {}
