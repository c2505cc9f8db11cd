"""The conventions transformers' own model tests check (tests/test_modeling_common.py), on the adapted class.

Each test here holds one convention the stock ``Qwen2AudioForConditionalGeneration`` meets, checked the way
transformers checks it: the float32 module lists, the dtype a checkpoint records, the conversions registered for
the class, the audio features' recorded states, ``forward``'s typed keyword arguments and the initialisation of
missing weights. Where the class deliberately differs (refusing missing weights), the test pins the difference.
"""

import copy
import inspect
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, set_seed
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import PrefixChange, WeightRenaming
from transformers.modeling_utils import local_torch_dtype

from modeling_qwen2audio_ldv import DomainAdapterConfig, Qwen2AudioLDVConfig, Qwen2AudioLDVForConditionalGeneration
from modeling_qwen2audio_ldv.checkpoints_qwen2audio_ldv import _FULL_CHECKPOINT_KEY_MAPPING
from test_modeling import make_inputs

ADAPTERS = {
    "transformer": DomainAdapterConfig(num_heads=4, ff_dim=32),  # the default type, zero-initialised
    "mlp": DomainAdapterConfig.preset("mlp", bottleneck_dim=8),
    "none": DomainAdapterConfig(adapter_type="none"),
}


def _model(tiny_base, adapter: str) -> Qwen2AudioLDVForConditionalGeneration:
    """A freshly built model on the tiny base's configuration (no base reference: saves are full checkpoints)."""
    base, _ = tiny_base
    return Qwen2AudioLDVForConditionalGeneration(Qwen2AudioLDVConfig.from_base_config(base.config, ADAPTERS[adapter]))


def _names_match(module: str, names) -> bool:
    """transformers' test of a float32 list entry against state-dict names (a whole dotted component)."""
    return any(re.search(rf"(?:^|\.){module}(?:\.|$)", name) for name in names)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_adapters_are_in_one_float32_list_and_only_when_the_model_has_them(tiny_base, adapter):
    model = _model(tiny_base, adapter)
    keep, strict = model._keep_in_fp32_modules, model._keep_in_fp32_modules_strict
    assert not keep & strict  # transformers refuses a module in both lists
    assert strict == ({"domain_adapters"} if adapter != "none" else set()) and not keep
    names = set(model.state_dict())
    assert all(_names_match(module, names) for module in keep | strict)  # no entry without weights behind it


@pytest.mark.parametrize("adapter", ["transformer", "mlp"])
def test_the_adapters_are_float32_from_construction(tiny_base, adapter):
    """A strict-list module keeps float32 when the model is built under another default dtype (``from_config``,
    or ``from_pretrained`` building a bf16/fp16 model), not only when weights are loaded."""
    base, _ = tiny_base
    with local_torch_dtype(torch.float16, Qwen2AudioLDVForConditionalGeneration.__name__):
        model = Qwen2AudioLDVForConditionalGeneration(
            Qwen2AudioLDVConfig.from_base_config(base.config, ADAPTERS[adapter]))
    dtypes = {name.startswith("domain_adapters."): v.dtype for name, v in model.state_dict().items()
              if v.is_floating_point()}
    assert dtypes == {True: torch.float32, False: torch.float16}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_reload_keeps_only_the_adapter_in_float32(tiny_base, tmp_path, dtype):
    model = _model(tiny_base, "transformer")
    model.domain_adapter.scale.data.fill_(0.123456789)  # not representable in fp16/bf16
    model.save_pretrained(tmp_path)
    reloaded = Qwen2AudioLDVForConditionalGeneration.from_pretrained(tmp_path, dtype=dtype)
    for name, value in reloaded.state_dict().items():
        if value.is_floating_point():
            assert value.dtype == (torch.float32 if name.startswith("domain_adapters.") else dtype), name
    assert torch.equal(reloaded.domain_adapter.scale, model.domain_adapter.scale)  # loaded exactly, not rounded


def test_get_audio_features_records_what_the_tower_config_asks(tiny_base):
    """``output_hidden_states`` / ``output_attentions`` left to ``None`` follow the audio tower's config, as the
    tower's own forward does; the language model's forward still runs the trimmed pass (records nothing)."""
    _, processor = tiny_base
    model = _model(tiny_base, "transformer").eval()
    model.set_attn_implementation("eager")  # attention maps come from the eager path
    inputs = make_inputs(processor, lengths=(16000, 8000))
    features, mask = inputs["input_features"], inputs["feature_attention_mask"]
    layers = model.config.audio_config.encoder_layers
    with torch.no_grad():
        asked = model.get_audio_features(features, mask, output_hidden_states=True, output_attentions=True)
        model.config.audio_config.output_hidden_states = True
        model.config.audio_config.output_attentions = True
        configured = model.get_audio_features(features, mask)
        assert len(configured.hidden_states) == layers + 1 and len(configured.attentions) == layers
        recorded = configured.hidden_states + configured.attentions
        for got, expected in zip(recorded, asked.hidden_states + asked.attentions):
            assert torch.equal(got, expected)
        assert model.get_audio_features(features, mask, output_hidden_states=False,
                                        output_attentions=False).hidden_states is None
        padded_passes = []
        hook = model.model.audio_tower.register_forward_hook(lambda *args: padded_passes.append(1))
        try:
            model(**inputs)
        finally:
            hook.remove()
    assert padded_passes == []


@pytest.mark.parametrize("adapter", ["transformer", "none"])
def test_a_full_checkpoint_records_its_dtype(tiny_base, tmp_path, adapter):
    """config.json carries ``dtype`` (what ``dtype="auto"`` loads in) as the stock save writes it; without it
    transformers takes the dtype of the file's first tensor, here an integer one, and cannot build the model."""
    model = _model(tiny_base, adapter)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "float32"
    # transformers' "every weight missing" reload: a placeholder integer tensor in place of the weights
    save_file({"tensor": torch.tensor([1, 2])}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    if adapter == "none":
        reloaded, info = Qwen2AudioLDVForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
        assert set(info["missing_keys"]) == set(reloaded.state_dict())
        assert reloaded.dtype == torch.float32
    else:  # the deliberate difference: a model without its adapter's weights is refused, whatever was asked
        with pytest.raises(ValueError, match="adapter's weights are missing"):
            Qwen2AudioLDVForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)


@pytest.mark.parametrize("adapter", ["transformer", "none"])
def test_every_registered_conversion_matches_a_saved_key(tiny_base, tmp_path, adapter):
    """transformers checks that each renaming registered for a class matches keys of its saved checkpoints; the full
    checkpoint's ``domain_adapter.*`` keys, which a model without adapters lacks, are the loader's key mapping."""
    model = _model(tiny_base, adapter)
    model.save_pretrained(tmp_path)
    saved = list(load_file(tmp_path / "model.safetensors"))
    conversions = [c for c in get_model_conversion_mapping(model, add_legacy=False)
                   if isinstance(c, WeightRenaming) and not isinstance(c, PrefixChange) and c.scope_prefix is None]
    assert conversions  # the stock Qwen2-Audio renaming, registered for this class
    for conversion in conversions:
        for pattern in conversion.source_patterns:
            assert any(re.search(pattern, key) for key in saved), (pattern, saved[:5])
    assert any(k.startswith("domain_adapter.") for k in saved) == (adapter != "none")


def test_a_full_checkpoint_loads_with_a_key_mapping_of_the_callers_own(tiny_base, tmp_path):
    model = _model(tiny_base, "transformer")
    model.domain_adapter.scale.data.fill_(0.5)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    head = [k for k in state if k.endswith("lm_head.weight")]  # saved in the legacy layout, language_model.lm_head
    assert len(head) == 1
    state["old_head.weight"] = state.pop(head[0])
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    reloaded = Qwen2AudioLDVForConditionalGeneration.from_pretrained(tmp_path, key_mapping={r"^old_head\.": "lm_head."})
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)
    assert torch.equal(reloaded.domain_adapter.scale, model.domain_adapter.scale)  # the adapter's mapping still applies


def test_forward_declares_the_transformers_keyword_arguments(tiny_base):
    """transformers reads ``forward``'s ``**kwargs`` annotation to tell whether a model returns attentions (its
    attention-implementation tests skip a model that does not declare ``output_attentions``)."""
    kwargs = inspect.signature(Qwen2AudioLDVForConditionalGeneration.forward).parameters["kwargs"]
    assert "output_attentions" in kwargs.annotation.__args__[0].__annotations__
    base, processor = tiny_base
    base = copy.deepcopy(base)
    model = _model(tiny_base, "none").eval()
    model.load_state_dict(base.state_dict())
    for m in (base, model):
        m.set_attn_implementation("eager")  # attention maps come from the eager path
    inputs = make_inputs(processor, lengths=(16000,))
    with torch.no_grad():
        ours = model(**inputs, output_attentions=True, output_hidden_states=True)
        stock = base(**inputs, output_attentions=True, output_hidden_states=True)
    assert len(ours.attentions) == len(stock.attentions) == base.config.text_config.num_hidden_layers
    for got, expected in zip(ours.attentions + ours.hidden_states, stock.attentions + stock.hidden_states):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("adapter", ["transformer", "mlp"])
def test_missing_weights_initialise_as_the_constructor_does(tiny_base, adapter, monkeypatch):
    """transformers' missing-weight initialisation (``_init_weights`` on every weight of an empty model) gives what
    ``__init__`` gives, the adapter's weights included: the class differs only in refusing missing weights, which
    transformers' own loader (run here on the class) does not."""
    base, _ = tiny_base
    config = Qwen2AudioLDVConfig.from_base_config(base.config, ADAPTERS[adapter])
    original = PreTrainedModel._initialize_weights

    def seeded(*args, **kwargs):  # transformers' seeded_weight_init: the same random weights both ways
        set_seed(42)
        original(*args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "_initialize_weights", seeded)
    built = Qwen2AudioLDVForConditionalGeneration(copy.deepcopy(config))
    initialised = PreTrainedModel.from_pretrained.__func__(
        Qwen2AudioLDVForConditionalGeneration, None, config=copy.deepcopy(config), state_dict={},
        key_mapping=_FULL_CHECKPOINT_KEY_MAPPING)
    expected, got = built.state_dict(), initialised.state_dict()
    assert sorted(got) == sorted(expected) and any(k.startswith("domain_adapters.") for k in got)
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert different == []
    # the class's own loader refuses the same empty state dict, naming the missing keys
    with pytest.raises(ValueError, match=r"missing keys \[.*domain_adapters\.default\..*lm_head\.weight"):
        Qwen2AudioLDVForConditionalGeneration.from_pretrained(None, config=copy.deepcopy(config), state_dict={})
