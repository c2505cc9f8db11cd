"""Adapter type ``lora``: peft LoRA on the audio tower's projections. Configuration and flags, the LoRA delta against
a hand-merged tower, off is the stock model, per-clip routing, the trimmed tower and the feature cache, frozen base,
adapter-only save and load (remote code with and without peft), strict keys."""

import copy
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
    Qwen2AudioLDVForConditionalGeneration,
    add_domain_adapter_to_model,
)
from modeling_qwen2audio_ldv.adapter_bank_qwen2audio_ldv import ADAPTER_WEIGHTS_NAME
from modeling_qwen2audio_ldv.audio_tower_qwen2audio_ldv import encode_audio, encode_audio_to_layer
from modeling_qwen2audio_ldv.data.collator import DataCollatorForQwen2AudioLDV
from modeling_qwen2audio_ldv.lora_qwen2audio_ldv import LORA_ADAPTER_NAME, LoRADomainAdapter
from modeling_qwen2audio_ldv.modeling_qwen2audio_ldv import CODE_FILES
from modeling_qwen2audio_ldv.training.feature_cache import CachedFeatureCollator, build_feature_cache
from test_in_encoder_adapter import cache_and_audio_logits
from test_modeling import (
    HIDE_THE_PACKAGE,
    assert_batched_equals_one_by_one,
    assert_full_checkpoint_round_trip,
    assert_loads_without_the_package,
    make_inputs,
)
from test_training_steps import INSTRUCTION, paired_dataset

ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
PATHS = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
         "out_proj": "self_attn.out_proj", "fc1": "fc1", "fc2": "fc2"}
# zero_init=False: B drawn like A, so the adapter changes the tower from the start; no dropout, so passes compare
LORA = dict(adapter_type="lora", lora_rank=4, lora_alpha=8.0, dropout=0.0, zero_init=False)


def with_lora(base, seed=3, **overrides):
    torch.manual_seed(seed)
    return add_domain_adapter_to_model(copy.deepcopy(base), **{**LORA, **overrides}).eval()


def audio_only(model, inputs, **kwargs):
    return model(input_features=inputs["input_features"], feature_attention_mask=inputs["feature_attention_mask"],
                 **kwargs)


def merged_tower(model, adapter=None):
    """The reference: a copy of the stock tower whose targeted weights are ``W + (alpha / r) B A``, written out by
    hand from the adapter's LoRA weights."""
    adapter = adapter or model.domain_adapter
    tower = copy.deepcopy(model.model.audio_tower)
    config = adapter.config
    with torch.no_grad():
        for index in range(config.encoder_layer, len(tower.layers)):
            for target in config.lora_target_modules:
                name = f"layers.{index}.{PATHS[target]}"
                lora = adapter.get_submodule(name)
                a, b = lora.lora_A[LORA_ADAPTER_NAME].weight, lora.lora_B[LORA_ADAPTER_NAME].weight
                tower.get_submodule(name).weight += (config.lora_alpha / config.lora_rank) * (b @ a)
    return tower


# ------------------------------------------------------------------------------------------ configuration, flags
def test_config_defaults_and_checks():
    config = DomainAdapterConfig(adapter_type="lora")
    assert (config.lora_rank, config.lora_alpha, config.lora_target_modules) == (8, 16.0, ALL_TARGETS)
    assert config.encoder_layer == 0  # unset: every layer of the tower
    assert DomainAdapterConfig(adapter_type="lora", encoder_layer=2).encoder_layer == 2
    assert DomainAdapterConfig().encoder_layer is None  # the other types keep their place after the tower
    assert DomainAdapterConfig.from_dict(config.to_dict()) == config
    narrow = DomainAdapterConfig(adapter_type="lora", lora_target_modules=("q_proj", "v_proj"))
    assert narrow.lora_target_modules == ["q_proj", "v_proj"]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="lora_rank"):
            DomainAdapterConfig(adapter_type="lora", lora_rank=bad)
    for bad in (0, -2.0, "16", True):
        with pytest.raises(ValueError, match="lora_alpha"):
            DomainAdapterConfig(adapter_type="lora", lora_alpha=bad)
    for bad in ([], ["q_proj", "q_proj"], ["query"], "q_proj"):
        with pytest.raises(ValueError, match="lora_target_modules"):
            DomainAdapterConfig(adapter_type="lora", lora_target_modules=bad)


def test_train_hf_flags_reach_the_lora_configuration():
    from modeling_qwen2audio_ldv.training.arguments import parse_arguments

    recipe = os.path.join(os.path.dirname(__file__), "..", "configuration", "recipes", "demo.yaml")
    (_, adapter_args, *_), _ = parse_arguments(
        ["--adapter_type", "lora", "--lora_rank", "4", "--lora_alpha", "32", "--lora_target_modules", "q_proj",
         "v_proj", "--encoder_layer", "none", "--dropout", "0.05"], recipe)
    config = adapter_args.to_config()
    assert (config.adapter_type, config.lora_rank, config.lora_alpha, config.dropout) == ("lora", 4, 32.0, 0.05)
    assert config.lora_target_modules == ["q_proj", "v_proj"] and config.encoder_layer == 0
    (_, plain, *_), _ = parse_arguments(["--adapter_type", "lora"], recipe)
    defaults = plain.to_config()  # the demo recipe's place (after layer 2): LoRA on layers 2 to the last
    assert (defaults.lora_rank, defaults.lora_alpha, defaults.lora_target_modules) == (8, 16.0, ALL_TARGETS)
    assert defaults.encoder_layer == 2


def test_peft_builds_lora_layers_on_the_chosen_projections(tiny_base):
    from peft.tuners.lora import LoraLayer

    base, _ = tiny_base
    model = with_lora(base, encoder_layer=1, lora_target_modules=["k_proj", "fc2"])
    adapter = model.domain_adapter
    assert isinstance(adapter, LoRADomainAdapter)
    layers = {name: module for name, module in adapter.named_modules() if isinstance(module, LoraLayer)}
    assert sorted(layers) == ["layers.1.fc2", "layers.1.self_attn.k_proj"]  # layer 0 has none
    audio = base.config.audio_config
    for name, layer in layers.items():
        stock = base.model.audio_tower.get_submodule(name)
        assert (layer.in_features, layer.out_features) == (stock.in_features, stock.out_features)
        assert layer.r[LORA_ADAPTER_NAME] == 4 and layer.scaling[LORA_ADAPTER_NAME] == 8.0 / 4
        assert "base_layer" not in layer._modules  # the tower's projection is not the adapter's
    expected = 4 * (audio.d_model + audio.d_model) + 4 * (audio.encoder_ffn_dim + audio.d_model)
    assert model.num_domain_adapter_parameters() == expected
    assert set(adapter.state_dict()) == {f"{n}.{ab}.{LORA_ADAPTER_NAME}.weight" for n in layers
                                         for ab in ("lora_A", "lora_B")}
    # the tower's own modules and weight names are untouched at rest
    assert all(type(m) is torch.nn.Linear for n, m in model.model.audio_tower.named_modules() if n in layers)
    assert set(model.model.audio_tower.state_dict()) == set(base.model.audio_tower.state_dict())
    with pytest.raises(ValueError, match="must name one of the audio tower's 2 layers"):
        with_lora(base, encoder_layer=2)


# ------------------------------------------------------------------------------------------------ what it computes
@pytest.mark.parametrize("trim", [False, True])
def test_the_lora_delta_is_the_hand_merged_tower(tiny_base, trim):
    """The adapted tower == the stock tower with ``W + (alpha / r) B A`` in every targeted projection of the layers
    from ``encoder_layer`` on (peft's forward computes ``W x + (alpha / r) B A x`` without merging)."""
    base, processor = tiny_base
    for layer, targets in ((0, ALL_TARGETS), (1, ["q_proj", "out_proj", "fc1"])):
        model = with_lora(base, encoder_layer=layer, lora_target_modules=targets)
        model.config.trim_audio_tower = trim
        inputs = make_inputs(processor)
        with torch.no_grad():
            got = audio_only(model, inputs)
            expected, lengths = encode_audio(merged_tower(model), inputs["input_features"],
                                             inputs["feature_attention_mask"], trim=trim)
            stock, _ = encode_audio(base.model.audio_tower, inputs["input_features"],
                                    inputs["feature_attention_mask"], trim=trim)
        assert torch.equal(got.output_lengths, lengths)
        valid = torch.arange(expected.shape[1])[None] < lengths[:, None]
        torch.testing.assert_close(got.hidden_states[valid], expected[valid], rtol=0, atol=1e-5)
        assert (got.hidden_states[valid] - stock[valid]).abs().max() > 1e-2  # LoRA does change the tower


def test_off_is_exactly_the_stock_model_and_zero_b_starts_at_the_base(tiny_base):
    base, processor = tiny_base
    inputs = make_inputs(processor)
    model = with_lora(base)
    zero_b = with_lora(base, zero_init=True)
    assert all(not p.any() for n, p in zero_b.domain_adapter.named_parameters() if ".lora_B." in n)
    with torch.no_grad():
        stock = base(**inputs).logits
        on = model(**inputs).logits
        with model.disable_domain_adapter():
            off_trimmed = model(**inputs).logits
        mic_trimmed = model(**inputs, audio_domain="mic").logits
        zero_trimmed = zero_b(**inputs).logits
        model.config.trim_audio_tower = zero_b.config.trim_audio_tower = False
        with model.disable_domain_adapter():
            off = model(**inputs).logits
        mic = model(**inputs, audio_domain="mic").logits
        zero = zero_b(**inputs).logits
    assert torch.equal(off, stock) and torch.equal(mic, stock)  # the stock padded pass, bit for bit
    assert torch.equal(zero, stock)  # B = 0: the enabled LoRA adds exactly nothing
    # trimmed (the default): equal to the stock pass up to float rounding, as for every adapter type
    for trimmed in (off_trimmed, mic_trimmed, zero_trimmed):
        torch.testing.assert_close(trimmed, stock, rtol=0, atol=1e-5)
    assert torch.equal(mic_trimmed, off_trimmed)
    assert (on - stock).abs().max() > 1e-3
    # the tower holds its own projections again after every pass
    assert all(type(m) is torch.nn.Linear for m in model.model.audio_tower.modules()
               if isinstance(m, torch.nn.Linear))


def test_routing_gives_each_clip_its_own_tower(tiny_base):
    """A mixed batch: each row equals the same row run alone; mic rows get the stock tower (peft's ``__base__``)."""
    base, processor = tiny_base
    model = with_lora(base)
    torch.manual_seed(9)
    model.add_domain_adapter("box", {**LORA, "lora_rank": 2}, set_active=False)
    model.domain_adapters["box"].reset_parameters()
    domains = ["ldv", "mic", "box", "ldv"]
    inputs = make_inputs(processor, lengths=(16000, 9000, 12000, 7000))
    with torch.no_grad():
        routed = model(**inputs, audio_domain=domains)
        alone = [model(**{k: v[i : i + 1] for k, v in inputs.items()}, audio_domain=[d]) for i, d in enumerate(domains)]
        with model.disable_domain_adapter():
            off = model(**inputs)
        features = audio_only(model, inputs, audio_domain=domains)
        expected_box, lengths = encode_audio(merged_tower(model, model.domain_adapters["box"]),
                                             inputs["input_features"], inputs["feature_attention_mask"])
    for row in range(len(domains)):
        n = alone[row].logits.shape[1]  # left padding: the row's own positions are the last n
        keep = inputs["attention_mask"][row, -n:].bool()
        torch.testing.assert_close(routed.logits[row, -n:][keep], alone[row].logits[0][keep], rtol=0, atol=1e-5)
    torch.testing.assert_close(routed.logits[1], off.logits[1], rtol=0, atol=1e-5)
    for row in (0, 2, 3):
        assert (routed.logits[row] - off.logits[row]).abs().max() > 1e-3, row
    m = int(lengths[2])  # the box row through its own hand-merged tower
    torch.testing.assert_close(features.hidden_states[2, :m], expected_box[2, :m], rtol=0, atol=1e-5)


def test_lora_and_another_adapter_type_in_one_batch_are_refused(tiny_base):
    base, processor = tiny_base
    model = with_lora(base, encoder_layer=1)
    model.add_domain_adapter("between", dict(adapter_type="mlp", bottleneck_dim=8, encoder_layer=1), set_active=False)
    inputs = make_inputs(processor, lengths=(16000, 12000))
    with pytest.raises(ValueError, match="different places"):
        model(**inputs, audio_domain=["ldv", "between"])
    with torch.no_grad():
        model(**inputs, audio_domain=["ldv", "mic"])
        model(**inputs, audio_domain=["between", "mic"])


# ----------------------------------------------------------------------------------------- the feature cache
def test_cache_holds_the_states_before_the_first_adapted_layer(tiny_base, tmp_path):
    """LoRA on layers >= k: the cache holds the frozen tower's states after k layers, and logits from the cache equal
    logits from audio (up to the cache's float16 rounding)."""
    base, processor = tiny_base
    assert with_lora(base)._cached_features_layer() == 0  # every layer adapted: the states before the first
    layer = 1
    model = with_lora(base, encoder_layer=layer)
    assert model._cached_features_layer() == layer
    data = paired_dataset()
    features = processor.feature_extractor([data[0]["audio"]["array"]], sampling_rate=16000,
                                           return_attention_mask=True, padding="max_length", return_tensors="pt")
    states, frames = model.domain_adapter_inputs(features["input_features"], features["attention_mask"])
    expected, expected_frames = encode_audio_to_layer(model.model.audio_tower, features["input_features"],
                                                      features["attention_mask"], layer)
    assert torch.equal(states, expected) and torch.equal(frames, expected_frames)

    cached = build_feature_cache(model, processor, data, audio_columns=("audio",), cache_dir=str(tmp_path / "cache"),
                                 progress=False, encoder_layers={"audio": layer})
    d = base.config.audio_config.d_model
    collator = CachedFeatureCollator(processor, INSTRUCTION, d_model=d, inside_tower=True)
    reference = DataCollatorForQwen2AudioLDV(processor=processor, instruction=INSTRUCTION, mode="train")
    from_cache = collator([cached[i] for i in range(len(data))])
    from_audio = reference([data[i] for i in range(len(data))])
    assert torch.equal(from_cache["input_ids"], from_audio["input_ids"])
    with torch.no_grad():
        logits_cache, logits_audio = cache_and_audio_logits(model, from_cache, from_audio)
        with model.disable_domain_adapter():
            logits_off = model(input_ids=from_audio["input_ids"], attention_mask=from_audio["attention_mask"],
                               input_features=from_audio["input_features"],
                               feature_attention_mask=from_audio["feature_attention_mask"]).logits
    torch.testing.assert_close(logits_cache, logits_audio, rtol=1e-2, atol=1e-2)
    assert (logits_audio - logits_off).abs().max() > 1e-2  # the cache path does run the LoRA layers


# -------------------------------------------------------------------------------------------------- training
def test_only_lora_trains_and_the_base_is_unchanged(tiny_base):
    base, processor = tiny_base
    model = with_lora(base, zero_init=True, dropout=0.1).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"domain_adapters.default.{k}" for k in model.domain_adapter.state_dict()}
    assert trainable and all(".lora_A.ldv." in n or ".lora_B.ldv." in n for n in trainable)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = paired_dataset()
    batch = DataCollatorForQwen2AudioLDV(processor=processor, instruction=INSTRUCTION, mode="train")(
        [data[i] for i in range(len(data))])
    batch = {k: v for k, v in batch.items() if torch.is_tensor(v)}
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(3):
        loss = model(**batch).loss
        loss.backward()
        assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        losses.append(loss.item())
    after = model.state_dict()
    assert set(after) == set(before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("domain_adapters.default.") for k in changed)
    assert any(".lora_B." in k for k in changed)  # B left zero: the model now differs from the base
    assert all(torch.equal(v, after[k]) for k, v in before.items() if not k.startswith("domain_adapters."))


def training_batch(tiny_base, encoder_layer):
    """A LoRA model in training mode with its base frozen, a collated batch of 4 paired clips and their routing."""
    base, processor = tiny_base
    model = with_lora(base, encoder_layer=encoder_layer).train()
    model.freeze_base_model()
    data = paired_dataset()
    batch = DataCollatorForQwen2AudioLDV(processor=processor, instruction=INSTRUCTION, mode="train")(
        [data[i] for i in range(4)])
    return model, {k: v for k, v in batch.items() if torch.is_tensor(v)}, ["ldv", "mic", "ldv", "ldv"]


def lora_gradients(model, batch, domains):
    """The loss and every LoRA weight's gradient of one training pass with per-clip routing."""
    model.zero_grad(set_to_none=True)
    loss = model(**batch, audio_domain=domains).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("first", [0, 1])
def test_gradient_checkpointing_of_the_tower_gives_the_same_gradients(tiny_base, first):
    """Checkpointed tower layers recompute their forward during backward, after the adapted pass has returned: they
    must still run with LoRA there (and route rows as in the forward), or the LoRA weights get wrong gradients."""
    model, batch, domains = training_batch(tiny_base, encoder_layer=first)
    loss, expected = lora_gradients(model, batch, domains)
    assert all(g.abs().sum() > 0 for g in expected.values())  # every LoRA layer of every adapted layer learns
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.model.audio_tower.layers)
    projections = {n: m for n, m in model.model.audio_tower.named_modules()}
    checkpointed_loss, gradients = lora_gradients(model, batch, domains)
    torch.testing.assert_close(checkpointed_loss, loss, rtol=0, atol=1e-6)
    assert gradients.keys() == expected.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, expected[name], rtol=1e-4, atol=1e-7, msg=name)
    # the tower holds its own projections again after backward, and a frozen pass is unchanged by it
    assert {n: m for n, m in model.model.audio_tower.named_modules()} == projections
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(**batch, audio_domain=domains).loss, loss, rtol=0, atol=1e-6)


def test_reentrant_checkpointing_of_the_tower_is_refused_while_lora_trains(tiny_base):
    base, processor = tiny_base
    model = with_lora(base)
    model.freeze_base_model()
    model.model.audio_tower.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    model.train()
    inputs = make_inputs(processor)
    with pytest.raises(ValueError, match="use_reentrant=False"):
        audio_only(model, inputs)
    with torch.no_grad():  # inference recomputes nothing
        audio_only(model, inputs)


# ----------------------------------------------------------------------------------------------- save and load
@pytest.fixture
def saved_lora(tiny_base, tiny_base_dir, tmp_path):
    config = DomainAdapterConfig(**{**LORA, "encoder_layer": 1})
    torch.manual_seed(5)
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tiny_base_dir, adapter_config=config).eval()
    out = tmp_path / "lora_adapter"
    model.save_pretrained(out)
    return model, out


def test_adapter_only_save_and_load_give_the_same_logits(saved_lora, tiny_base, tmp_path):
    model, out = saved_lora
    _, processor = tiny_base
    assert sorted(os.listdir(out)) == sorted(["config.json", ADAPTER_WEIGHTS_NAME, *CODE_FILES])
    assert "lora_qwen2audio_ldv.py" in CODE_FILES
    saved = load_file(out / ADAPTER_WEIGHTS_NAME)
    assert set(saved) == set(model.domain_adapter.state_dict())  # LoRA A and B only, no tower weight
    assert all(".lora_A." in k or ".lora_B." in k for k in saved)
    reloaded = Qwen2AudioLDVForConditionalGeneration.from_pretrained(out).eval()
    assert isinstance(reloaded.domain_adapter, LoRADomainAdapter)
    assert reloaded.domain_adapter_config() == model.domain_adapter_config()
    inputs = make_inputs(processor)
    with torch.no_grad():
        expected = model(**inputs).logits
        assert torch.equal(reloaded(**inputs).logits, expected)
        with model.disable_domain_adapter():
            assert (model(**inputs).logits - expected).abs().max() > 1e-3
    other = with_lora(tiny_base[0], seed=11)  # loaded next to another adapter, by name
    assert other.load_domain_adapter(out, adapter_name="loaded") == "loaded"
    with torch.no_grad():
        assert torch.equal(other(**inputs, audio_domain="loaded").logits, expected)
    # through remote code, in a process where this package cannot be imported (peft installed there)
    assert_loads_without_the_package(out, inputs, expected, tmp_path, autos=("AutoModelForSeq2SeqLM",))


def test_a_checkpoint_missing_a_lora_key_is_refused(saved_lora, tiny_base, tmp_path):
    _, out = saved_lora
    state = load_file(out / ADAPTER_WEIGHTS_NAME)
    for key in ("layers.1.self_attn.v_proj.lora_B.ldv.weight", "layers.1.fc1.lora_A.ldv.weight"):
        broken = {k: v for k, v in state.items() if k != key}
        save_file(broken, out / ADAPTER_WEIGHTS_NAME, metadata={"format": "pt"})
        with pytest.raises(ValueError, match=f"missing keys \\['{key}'\\]"):
            Qwen2AudioLDVForConditionalGeneration.from_pretrained(out)
        with pytest.raises(ValueError, match="missing keys"):
            with_lora(tiny_base[0]).load_domain_adapter(out, adapter_name="broken")
    save_file({**state, "layers.0.fc1.lora_A.ldv.weight": state["layers.1.fc1.lora_A.ldv.weight"].clone()},
              out / ADAPTER_WEIGHTS_NAME, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="unexpected keys"):
        Qwen2AudioLDVForConditionalGeneration.from_pretrained(out)


def test_without_peft_a_lora_adapter_is_a_clear_import_error(saved_lora, monkeypatch):
    _, out = saved_lora
    for name in [m for m in sys.modules if m == "peft" or m.startswith("peft.")] + ["peft"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import peft` now fails as if it were not installed
    with pytest.raises(ImportError, match=r"needs the `peft` package.*pip install peft"):
        Qwen2AudioLDVForConditionalGeneration.from_pretrained(out)
    with pytest.raises(ImportError, match="pip install peft"):
        LoRADomainAdapter(DomainAdapterConfig(adapter_type="lora"), 16, 2, 32)


def test_remote_code_without_peft_loads_other_adapters_and_names_peft_for_lora(saved_lora, tiny_base_dir, tmp_path):
    """In a process where neither this package nor peft can be imported: a transformer adapter loads through remote
    code (the Hub files import peft only for a lora adapter), a lora adapter raises an ImportError naming peft."""
    _, lora_dir = saved_lora
    plain = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        tiny_base_dir, adapter_config=DomainAdapterConfig(num_layers=1, num_heads=4, ff_dim=32))
    plain_dir = tmp_path / "plain_adapter"
    plain.save_pretrained(plain_dir)
    script = textwrap.dedent(HIDE_THE_PACKAGE + f"""
        sys.modules["peft"] = None  # as if not installed: find_spec gives None, `import peft` raises ImportError
        import transformers
        assert not transformers.utils.is_peft_available()
        model = transformers.AutoModelForSeq2SeqLM.from_pretrained({str(plain_dir)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert sys.modules["peft"] is None and not any(m.startswith("peft.") for m in sys.modules)
        print("PLAIN OK")
        try:
            transformers.AutoModelForSeq2SeqLM.from_pretrained({str(lora_dir)!r}, trust_remote_code=True)
        except ImportError as error:
            assert "pip install peft" in str(error), error
            print("LORA NEEDS PEFT")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HOME"] = str(tmp_path / "hf_home")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PLAIN OK" in result.stdout and "LORA NEEDS PEFT" in result.stdout, result.stdout + result.stderr


def test_batched_equals_one_by_one_over_padding(tiny_base):
    """Clips of one batch do not see each other through the LoRA layers (padding stays masked)."""
    base, processor = tiny_base
    assert_batched_equals_one_by_one(with_lora(base), processor)


def test_explain_and_diagnose_refuse_a_lora_adapter_clearly(tiny_base, tmp_path):
    from modeling_qwen2audio_ldv.evaluation.diagnose import diagnose
    from modeling_qwen2audio_ldv.evaluation.explain import explain

    base, processor = tiny_base
    model = with_lora(base)
    clip = noise_clips([12000], seed=2)[0]
    with pytest.raises(ValueError, match="lora adapter .* not supported"):
        explain(model, processor, clip, tmp_path / "explain")
    with pytest.raises(ValueError, match="lora adapter .* not supported"):
        diagnose(model, processor, [{"audio": clip, "text": "hello"}])


def test_full_checkpoint_round_trip(tiny_base, tmp_path):
    base, processor = tiny_base
    assert_full_checkpoint_round_trip(with_lora(base), processor, tmp_path / "full")


def test_a_bfloat16_base_keeps_lora_in_float32(tiny_base_dir, tiny_base):
    _, processor = tiny_base
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        tiny_base_dir, adapter_config=DomainAdapterConfig(**LORA), dtype=torch.bfloat16).eval()
    assert {p.dtype for p in model.domain_adapter.parameters()} == {torch.float32}
    assert model.model.audio_tower.layers[0].fc1.weight.dtype == torch.bfloat16
    inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in make_inputs(processor).items()}
    with torch.no_grad():
        routed = model(**inputs, audio_domain=["ldv", "mic", "ldv"]).logits
        with model.disable_domain_adapter():
            off = model(**inputs).logits
    assert routed.dtype == torch.bfloat16 and torch.isfinite(routed.float()).all()
    assert torch.equal(routed[1], off[1])  # the mic row: peft's "__base__" rows are the projection's output as is
    assert (routed[0].float() - off[0].float()).abs().max() > 1e-2


class _Quantised4bitLinear(torch.nn.Linear):
    """Stands for bitsandbytes' ``Linear4bit`` (an ``nn.Linear`` subclass, which a 4-bit base has in place of the
    tower's projections): packed uint8 weight storage, a bfloat16 compute dtype, the output cast back to the input's
    dtype. The dequantised weight is kept aside for the arithmetic."""

    def __init__(self, linear: torch.nn.Linear):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = torch.nn.Parameter(torch.zeros(linear.weight.numel() // 2, 1, dtype=torch.uint8),
                                         requires_grad=False)
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().clone(),
                                                                        requires_grad=False)
        self.register_buffer("dequantised", linear.weight.detach().to(torch.bfloat16))

    def forward(self, x):
        bias = None if self.bias is None else self.bias.to(torch.bfloat16)
        return torch.nn.functional.linear(x.to(torch.bfloat16), self.dequantised, bias).to(x.dtype)


def test_lora_trains_on_a_tower_whose_projections_are_4bit(tiny_base):
    """The 7B 4-bit recipe puts LoRA on bitsandbytes ``Linear4bit`` projections: the LoRA layer must call the
    quantised layer as its base layer (never read its uint8 weight as a matrix), add its float32 update, and train
    only the LoRA weights, with the gradients of the unquantised tower up to bfloat16 rounding."""
    model, batch, domains = training_batch(tiny_base, encoder_layer=1)
    loss, expected = lora_gradients(model, batch, domains)
    tower = model.model.audio_tower
    for name in model.domain_adapter.target_names:
        parent, _, leaf = name.rpartition(".")
        setattr(tower.get_submodule(parent), leaf, _Quantised4bitLinear(tower.get_submodule(name)))
    quantised_loss, gradients = lora_gradients(model, batch, domains)
    assert gradients.keys() == expected.keys()  # only the LoRA weights train; the uint8 storage has no gradient
    assert all(name.startswith("domain_adapters.") for name in gradients)
    torch.testing.assert_close(quantised_loss, loss, rtol=2e-2, atol=0)
    for name, gradient in gradients.items():
        cosine = torch.nn.functional.cosine_similarity(gradient.flatten(), expected[name].flatten(), dim=0)
        assert cosine > 0.99, (name, float(cosine))
    assert all(gradient.abs().sum() > 0 for gradient in gradients.values())  # the update runs on the 4-bit tower
    assert all(isinstance(tower.get_submodule(name), _Quantised4bitLinear)  # the tower's own layers put back
               for name in model.domain_adapter.target_names)
