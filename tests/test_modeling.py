"""The domain adapters and Qwen2AudioLDVForConditionalGeneration on tiny random configs (no network)."""

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import noise_clips
from modeling_qwen2audio_ldv import (
    DomainAdapterConfig,
    MLPDomainAdapter,
    Qwen2AudioLDVConfig,
    Qwen2AudioLDVForConditionalGeneration,
    TransformerDomainAdapter,
    add_domain_adapter_to_model,
)
from modeling_qwen2audio_ldv.adapter_bank_qwen2audio_ldv import ADAPTER_WEIGHTS_NAME
from modeling_qwen2audio_ldv.modeling_qwen2audio_ldv import CODE_FILES
from modeling_qwen2audio_ldv.data.collator import build_prompt

D = 16  # tiny encoder width


def make_inputs(processor, lengths=(16000, 8000, 24000), seed=0):
    clips = noise_clips(lengths, seed)
    prompt = build_prompt(processor)
    return processor(text=[prompt] * len(clips), audio=clips, sampling_rate=16000, return_tensors="pt", padding=True)


def adapted(base, **adapter):
    model = add_domain_adapter_to_model(copy.deepcopy(base), **adapter)
    return model.eval()


# ---------------------------------------------------------------------------------------------- parameter counts
def transformer_params(d, layers, ff, gate=True):
    """Hand count: per layer qkv (3d^2+3d) + out (d^2+d) + 2 LayerNorms (4d) + fc1 (d*ff+ff) + fc2 (ff*d+d);
    output projection d^2+d, output LayerNorm 2d, gate d^2+d, scale 1."""
    per_layer = (3 * d * d + 3 * d) + (d * d + d) + 4 * d + (d * ff + ff) + (ff * d + d)
    return layers * per_layer + (d * d + d) + 2 * d + (d * d + d if gate else 0) + 1


@pytest.mark.parametrize(
    "preset,expected",
    [("lightweight", 12_469_505), ("standard", 26_902_017), ("heavy", 71_501_825)],
)
def test_transformer_preset_parameter_counts_at_d1280(preset, expected):
    config = DomainAdapterConfig.preset(preset)
    assert expected == transformer_params(1280, config.num_layers, config.ff_dim)
    with torch.device("meta"):
        adapter = TransformerDomainAdapter(config, 1280)
    assert sum(p.numel() for p in adapter.parameters()) == expected


def test_mlp_preset_parameter_count_at_d1280():
    # LayerNorm 2*1280, down 1280*256+256, up 256*1280+1280, scale 1
    expected = 2 * 1280 + (1280 * 256 + 256) + (256 * 1280 + 1280) + 1
    with torch.device("meta"):
        adapter = MLPDomainAdapter(DomainAdapterConfig.preset("mlp"), 1280)
    assert sum(p.numel() for p in adapter.parameters()) == expected == 659_457


# ------------------------------------------------------------------------------------------ exact equivalence
EQUIVALENT_VARIANTS = {
    "transformer_zero_init": dict(adapter_type="transformer", num_layers=2, num_heads=4, ff_dim=32, zero_init=True),
    "mlp_zero_init": dict(adapter_type="mlp", bottleneck_dim=8, zero_init=True),
    "none": dict(adapter_type="none"),
}


@pytest.mark.parametrize("variant", sorted(EQUIVALENT_VARIANTS))
def test_zero_init_and_none_equal_the_base_exactly(tiny_base, variant):
    base, processor = tiny_base
    model = adapted(base, **EQUIVALENT_VARIANTS[variant])
    model.config.trim_audio_tower = False
    inputs = make_inputs(processor)
    with torch.no_grad():
        expected = base(**inputs).logits
        got = model(**inputs).logits
    assert torch.equal(got, expected)
    assert torch.equal(
        model.generate(**inputs, max_new_tokens=6, do_sample=False),
        base.generate(**inputs, max_new_tokens=6, do_sample=False),
    )


def test_disabled_adapter_equals_the_base_exactly(tiny_base):
    base, processor = tiny_base
    model = adapted(base, adapter_type="transformer", num_layers=1, num_heads=4, ff_dim=32, zero_init=False)
    model.config.trim_audio_tower = False
    inputs = make_inputs(processor)
    with torch.no_grad():
        expected = base(**inputs).logits
        assert not torch.equal(model(**inputs).logits, expected)
        with model.disable_domain_adapter():
            assert torch.equal(model(**inputs).logits, expected)
            generated = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        assert not torch.equal(model(**inputs).logits, expected)  # enabled again after the block
    assert torch.equal(generated, base.generate(**inputs, max_new_tokens=6, do_sample=False))


@pytest.mark.parametrize("adapter_type", ["transformer", "mlp"])
def test_adapter_runs_in_forward_and_generate(tiny_base, adapter_type):
    base, processor = tiny_base
    model = adapted(base, adapter_type=adapter_type, num_heads=4, ff_dim=32, bottleneck_dim=8, zero_init=False)
    inputs = make_inputs(processor)
    calls = []
    handle = model.domain_adapter.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    with torch.no_grad():
        logits = model(**inputs).logits
        assert len(calls) == 1
        model.generate(**inputs, max_new_tokens=3, do_sample=False)
    handle.remove()
    assert len(calls) == 2  # once in forward, once in the prefill step of generate (decode steps have no audio)
    assert not torch.allclose(logits, base(**inputs).logits)


# ------------------------------------------------------------------------------------------- batch invariance
@pytest.mark.parametrize("adapter_type", ["transformer", "mlp"])
def test_adapter_batch_invariance_and_padding_untouched(adapter_type):
    torch.manual_seed(0)
    config = DomainAdapterConfig(adapter_type=adapter_type, num_heads=4, ff_dim=32, bottleneck_dim=8,
                                 zero_init=False, dropout=0.0)
    adapter = (TransformerDomainAdapter if adapter_type == "transformer" else MLPDomainAdapter)(config, D).eval()
    x = torch.randn(3, 20, D)
    lengths = torch.tensor([12, 20, 5])
    mask = torch.arange(20)[None] < lengths[:, None]
    with torch.no_grad():
        batched = adapter(x, mask)
        alone = adapter(x[:1, :12], torch.ones(1, 12, dtype=torch.bool))
        garbage = x.clone()
        garbage[~mask] = 1e3 * torch.randn(int((~mask).sum()), D)  # padded frames must not matter
        batched_garbage = adapter(garbage, mask)
    assert (batched[0, :12] - alone[0]).abs().max().item() <= 1e-5
    assert torch.equal(batched[~mask], x[~mask])
    assert (batched_garbage[mask] - batched[mask]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("use_gate", [True, False])
def test_mlp_adapter_is_its_formula(use_gate):
    """``y = x + scale * sigmoid(W_g x + b_g) * (W_u GELU(W_d LayerNorm(x) + b_d) + b_u)`` on the valid frames, ``x``
    on the padded ones, written out from the module's own weights (``scale`` -0.7: a correction added with the
    wrong sign, or gated by the wrong input, shows)."""
    import torch.nn.functional as F

    torch.manual_seed(1)
    config = DomainAdapterConfig(adapter_type="mlp", bottleneck_dim=8, zero_init=False, dropout=0.0,
                                 use_gate=use_gate, scale_init=-0.7)
    adapter = MLPDomainAdapter(config, D).eval()
    with torch.no_grad():
        for parameter in adapter.parameters():  # non-trivial LayerNorm and biases too
            parameter.add_(0.3 * torch.randn_like(parameter))
        x = torch.randn(2, 7, D)
        mask = torch.arange(7)[None] < torch.tensor([7, 4])[:, None]
        out = adapter(x, mask)
        normed = F.layer_norm(x, (D,), adapter.norm.weight, adapter.norm.bias, adapter.norm.eps)
        delta = F.linear(F.gelu(F.linear(normed, adapter.down.weight, adapter.down.bias)), adapter.up.weight,
                         adapter.up.bias)
        if use_gate:
            delta = torch.sigmoid(F.linear(x, adapter.gate[0].weight, adapter.gate[0].bias)) * delta
        expected = torch.where(mask[..., None], x + adapter.scale * delta, x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert (out[mask] - x[mask]).abs().amax(-1).min() > 0  # every valid frame is changed


def test_model_batch_invariance(tiny_base):
    base, processor = tiny_base
    model = adapted(base, adapter_type="transformer", num_heads=4, ff_dim=32, zero_init=False)
    batch = make_inputs(processor, lengths=(16000, 28000, 6000))
    alone = make_inputs(processor, lengths=(16000,))
    with torch.no_grad():
        batched_logits = model(**batch).logits[0]
        alone_logits = model(**alone).logits[0]
    # left padding: the clip's tokens are the last ones of its row
    n = alone_logits.shape[0]
    assert (batched_logits[-n:] - alone_logits).abs().max().item() <= 1e-5


# ----------------------------------------------------------------------------------------------- training
def test_freeze_base_model_puts_gradients_on_the_adapter_only(tiny_base):
    base, processor = tiny_base
    model = adapted(base, adapter_type="transformer", num_heads=4, ff_dim=32, zero_init=False)
    model.train()
    inputs = make_inputs(processor)
    labels = inputs["input_ids"].clone()
    labels[inputs["attention_mask"] == 0] = -100
    model(**inputs, labels=labels).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad and all(n.startswith("domain_adapters.default.") for n in with_grad)
    assert all(n.startswith("domain_adapters.default.") for n in trainable)
    assert {n for n, _ in model.domain_adapter.named_parameters(prefix="domain_adapters.default")} == trainable


def test_zero_init_adapter_still_learns(tiny_base):
    base, processor = tiny_base
    model = adapted(base, adapter_type="transformer", num_heads=4, ff_dim=32, zero_init=True, dropout=0.0)
    inputs = make_inputs(processor)
    labels = inputs["input_ids"].clone()
    optimizer = torch.optim.Adam(model.domain_adapter_parameters(), lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        model(**inputs, labels=labels).loss.backward()
        optimizer.step()
    assert model.domain_adapter.output_norm.weight.abs().sum() > 0
    assert model.domain_adapter.layers[0].qkv.weight.grad.abs().sum() > 0  # gradients reach the layers


# ------------------------------------------------------------------------------------------------ routing
def test_audio_domain_routing(tiny_base):
    base, processor = tiny_base
    model = adapted(base, adapter_type="transformer", num_heads=4, ff_dim=32, zero_init=False)
    inputs = make_inputs(processor)
    with torch.no_grad():
        routed = model(**inputs, audio_domain=["ldv", "mic", "ldv"]).logits
        adapted_logits = model(**inputs).logits
        base_logits = base(**inputs).logits
    assert (routed[1] - base_logits[1]).abs().max().item() <= 1e-5
    assert (routed[0] - adapted_logits[0]).abs().max().item() <= 1e-5
    assert (routed[2] - adapted_logits[2]).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="audio_domain has 2 entries but the batch has 3"):
        model(**inputs, audio_domain=["ldv", "mic"])
    with pytest.raises(ValueError, match="unknown audio_domain 'boxx'"):
        model(**inputs, audio_domain=["ldv", "mic", "boxx"])


# ---------------------------------------------------------------------------------------------- save / load
@pytest.fixture
def trained_adapter_dir(tiny_base, tiny_base_dir, tmp_path):
    base, processor = tiny_base
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        tiny_base_dir, adapter_config=DomainAdapterConfig(num_heads=4, ff_dim=32, zero_init=False, num_layers=1)
    ).eval()
    out = tmp_path / "adapter"
    model.save_pretrained(out)
    return model, out


def test_adapter_only_save_contents_and_size(trained_adapter_dir):
    model, out = trained_adapter_dir
    assert sorted(os.listdir(out)) == sorted(["config.json", ADAPTER_WEIGHTS_NAME, *CODE_FILES])
    saved = load_file(out / ADAPTER_WEIGHTS_NAME)
    assert set(saved) == set(model.domain_adapter.state_dict())
    adapter_bytes = sum(p.numel() * 4 for p in model.domain_adapter.parameters())
    assert adapter_bytes <= os.path.getsize(out / ADAPTER_WEIGHTS_NAME) <= adapter_bytes + 16_384
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "qwen2_audio_ldv"
    assert config["auto_map"]["AutoModelForSeq2SeqLM"].endswith("Qwen2AudioLDVForConditionalGeneration")
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModelForSeq2SeqLM", "AutoModelForMultimodalLM"}


#: The start of a fresh-process script in which ``modeling_qwen2audio_ldv`` cannot be imported (remote code must
#: load from the saved Hub files alone); ``textwrap.dedent`` it with the rest of the script.
HIDE_THE_PACKAGE = """
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "modeling_qwen2audio_ldv":
                    raise ImportError("package hidden for this test")
        sys.meta_path.insert(0, Block())
"""


def assert_full_checkpoint_round_trip(model, processor, folder):
    """A full save (base + adapter) loads back into a model with the same logits, bit for bit."""
    model.save_pretrained(folder, adapter_only=False)
    assert (folder / "model.safetensors").exists()
    reloaded = Qwen2AudioLDVForConditionalGeneration.from_pretrained(folder).eval()
    inputs = make_inputs(processor)
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)


def assert_batched_equals_one_by_one(model, processor, lengths=(16000, 7000, 11000)):
    """Each clip of a padded batch gets the output lengths and audio states it gets alone (clips do not see each
    other's padding)."""
    clips = noise_clips(lengths, 4)
    features = processor.feature_extractor(clips, sampling_rate=16000, return_attention_mask=True,
                                           padding="max_length", return_tensors="pt")
    with torch.no_grad():
        batch = model(input_features=features["input_features"], feature_attention_mask=features["attention_mask"])
        for row in range(len(clips)):
            one = model(input_features=features["input_features"][row : row + 1],
                        feature_attention_mask=features["attention_mask"][row : row + 1])
            n = int(one.output_lengths[0])
            assert int(batch.output_lengths[row]) == n
            torch.testing.assert_close(batch.hidden_states[row, :n], one.hidden_states[0, :n], rtol=0, atol=1e-5)


def assert_loads_without_the_package(out, inputs, expected, tmp_path, autos=("AutoModelForSeq2SeqLM",
                                                                          "AutoModelForMultimodalLM")):
    """In a fresh process where ``modeling_qwen2audio_ldv`` cannot be imported, each auto class loads ``out`` through
    remote code and gives exactly ``expected`` logits on ``inputs``."""
    torch.save(dict(inputs), tmp_path / "inputs.pt")
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(HIDE_THE_PACKAGE + f"""
        try:
            import modeling_qwen2audio_ldv
            raise SystemExit("the package is importable")
        except ImportError:
            pass
        import torch
        import transformers
        inputs = torch.load({str(tmp_path / "inputs.pt")!r}, weights_only=True)
        expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
        for auto in {list(autos)!r}:
            model = getattr(transformers, auto).from_pretrained({str(out)!r}, trust_remote_code=True).eval()
            assert type(model).__name__ == "Qwen2AudioLDVForConditionalGeneration", type(model)
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            with torch.no_grad():
                got = model(**inputs).logits
            assert torch.equal(got, expected), (got - expected).abs().max()
        print("ROUND TRIP OK")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HOME"] = str(tmp_path / "hf_home")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ROUND TRIP OK" in result.stdout


def test_round_trip_in_a_process_without_the_package(trained_adapter_dir, tiny_base, tmp_path):
    model, out = trained_adapter_dir
    _, processor = tiny_base
    inputs = make_inputs(processor)
    with torch.no_grad():
        expected = model(**inputs).logits
    assert_loads_without_the_package(out, inputs, expected, tmp_path)


def test_missing_trust_remote_code_is_a_clear_error(trained_adapter_dir):
    from transformers import AutoModelForSeq2SeqLM

    _, out = trained_adapter_dir
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForSeq2SeqLM.from_pretrained(out, trust_remote_code=False)


def test_full_save_round_trip(trained_adapter_dir, tiny_base, tmp_path):
    model, _ = trained_adapter_dir
    _, processor = tiny_base
    assert_full_checkpoint_round_trip(model, processor, tmp_path / "full")


def test_legacy_checkpoint_layout_loads_every_weight(tiny_base, tmp_path):
    """Qwen/Qwen2-Audio-7B-Instruct stores `language_model.lm_head`, `audio_tower`, ...: every weight must arrive."""
    base, _ = tiny_base
    legacy = {}
    for key, value in base.state_dict().items():
        if key == "lm_head.weight":
            key = "language_model.lm_head.weight"
        elif key.startswith("model.language_model."):
            key = "language_model.model." + key[len("model.language_model."):]
        elif key.startswith("model."):
            key = key[len("model."):]
        legacy[key] = value.clone().contiguous()
    assert "language_model.lm_head.weight" in legacy and "audio_tower.conv1.weight" in legacy
    base.config.save_pretrained(tmp_path)
    save_file(legacy, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(str(tmp_path))
    loaded = model.state_dict()
    for key, value in base.state_dict().items():
        assert torch.equal(loaded[key], value), key


# ---------------------------------------------------------------------------------------------- bad input
def test_num_heads_must_divide_input_dim():
    with pytest.raises(ValueError, match=r"`num_heads` \(6\) must divide `input_dim` \(1280\)"):
        DomainAdapterConfig(num_heads=6, input_dim=1280)
    with pytest.raises(ValueError, match=r"`num_heads` \(3\) must divide `input_dim` \(16\)"):
        TransformerDomainAdapter(DomainAdapterConfig(num_heads=3), 16)


def test_bad_config_fields_name_themselves():
    with pytest.raises(ValueError, match="`adapter_type`"):
        DomainAdapterConfig(adapter_type="lstm")
    with pytest.raises(ValueError, match="`dropout`"):
        DomainAdapterConfig(dropout=1.5)
    with pytest.raises(ValueError, match="unknown adapter preset 'huge'"):
        DomainAdapterConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown domain adapter config keys"):
        Qwen2AudioLDVConfig(domain_adapter={"num_layer": 2})


def test_adapter_for_another_width_is_refused(trained_adapter_dir):
    from modeling_qwen2audio_ldv.testing import build_tiny_base

    _, out = trained_adapter_dir
    wide, _ = build_tiny_base(d_model=32)
    model = add_domain_adapter_to_model(wide, adapter_type="none")
    with pytest.raises(ValueError, match="d_model 16, this model's encoder has d_model 32"):
        model.load_domain_adapter(out, adapter_name="narrow")


def test_missing_and_unexpected_adapter_keys_are_listed(trained_adapter_dir, tiny_base_dir):
    _, out = trained_adapter_dir
    state = load_file(out / ADAPTER_WEIGHTS_NAME)
    state.pop("scale")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, out / ADAPTER_WEIGHTS_NAME)
    with pytest.raises(ValueError, match=r"missing keys \['scale'\], unexpected keys \['extra.weight'\]"):
        Qwen2AudioLDVForConditionalGeneration.from_pretrained(out)


def test_pickled_adapter_is_refused(trained_adapter_dir, tmp_path):
    model, out = trained_adapter_dir
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save(model.domain_adapter.state_dict(), pickled / "domain_adapter.bin")
    (pickled / "config.json").write_text((out / "config.json").read_text())
    with pytest.raises(ValueError, match="refusing to load a pickled adapter"):
        model.load_domain_adapter(pickled / "domain_adapter.bin", adapter_name="p")
    with pytest.raises(FileNotFoundError, match="only pickle files"):
        model.load_domain_adapter(pickled, adapter_name="p")


def test_seed_style_add_domain_adapter(tiny_base):
    base, _ = tiny_base
    original = copy.deepcopy(base)
    conv_storage = original.model.audio_tower.conv1.weight.data_ptr()
    model = add_domain_adapter_to_model(original, adapter_type="transformer", input_dim=16, num_layers=2,
                                        num_heads=4, ff_dim=32, dropout=0.1)
    assert model is original  # converted in place
    assert isinstance(model, Qwen2AudioLDVForConditionalGeneration)
    assert model.domain_adapter.scale.item() == pytest.approx(0.1)
    features = torch.randn(1, 7, 16)
    assert model.domain_adapter(features).shape == (1, 7, 16)
    gate = model.domain_adapter.gate(features)
    assert gate.shape == (1, 7, 16) and bool(((gate > 0) & (gate < 1)).all())
    assert model.model.audio_tower.conv1.weight.data_ptr() == conv_storage  # base weights not copied
    light = add_domain_adapter_to_model(copy.deepcopy(base), adapter_type="lightweight", input_dim=16, ff_dim=32)
    assert len(light.domain_adapter.layers) == 1 and light.config.adapter_config.num_heads == 4


def test_adapter_details_on_request():
    torch.manual_seed(0)
    adapter = TransformerDomainAdapter(DomainAdapterConfig(num_layers=2, num_heads=4, ff_dim=32), D).eval()
    x = torch.randn(2, 9, D)
    mask = torch.arange(9)[None] < torch.tensor([[9], [4]])
    out = adapter(x, mask, output_attentions=True, output_gate=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 9, 9)
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(2, 4, 9), atol=1e-5)
    assert out.attentions[0][1, :, :, 4:].abs().max() == 0  # padded keys get no attention
    assert out.gate.shape == (2, 9, D)
    assert torch.allclose(out.hidden_states, adapter(x, mask), atol=1e-6)


def test_adapter_stays_float32_on_a_bf16_base(tiny_base, tiny_base_dir, tmp_path):
    _, processor = tiny_base
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        tiny_base_dir, adapter_config=DomainAdapterConfig(num_heads=4, ff_dim=32, zero_init=False),
        dtype=torch.bfloat16)
    assert model.model.audio_tower.conv1.weight.dtype == torch.bfloat16
    assert {p.dtype for p in model.domain_adapter.parameters()} == {torch.float32}
    inputs = make_inputs(processor, lengths=(16000,))
    inputs["input_features"] = inputs["input_features"].to(torch.bfloat16)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    model.save_pretrained(tmp_path / "adapter")
    reloaded = Qwen2AudioLDVForConditionalGeneration.from_pretrained(tmp_path / "adapter", dtype=torch.bfloat16)
    assert torch.equal(reloaded.domain_adapter.output_projection.weight, model.domain_adapter.output_projection.weight)
