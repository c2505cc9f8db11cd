"""An adapter inside the frozen audio tower (``DomainAdapterConfig.encoder_layer``): off is the stock model, routing,
the cache and the loss of a training step, remote-code round trip, frozen base."""

import copy
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import noise_clips
from modeling_qwen2audio_ldv import DomainAdapterConfig, Qwen2AudioLDVForConditionalGeneration, add_domain_adapter_to_model
from modeling_qwen2audio_ldv.audio_tower_qwen2audio_ldv import encode_audio, encode_audio_to_layer, finish_audio_tower
from modeling_qwen2audio_ldv.data.collator import DataCollatorForQwen2AudioLDV
from modeling_qwen2audio_ldv.training.feature_cache import CachedFeatureCollator, build_feature_cache
from modeling_qwen2audio_ldv.training.trainer import DomainAdapterTrainer
from test_modeling import assert_batched_equals_one_by_one, assert_loads_without_the_package, make_inputs
from test_training_steps import DISTILL_WEIGHT, INSTRUCTION, paired_dataset, sgd_step_args

LAYER = 1  # the tiny base's tower has 2 layers: the adapter sits between them
ADAPTER = dict(adapter_type="transformer", num_layers=1, num_heads=4, ff_dim=32, dropout=0.0, zero_init=False,
               scale_init=1.0, encoder_layer=LAYER)


def cache_and_audio_logits(model, from_cache, from_audio):
    """The model's logits on a batch of cached tower states and on the same batch from its audio."""
    logits_cache = model(input_ids=from_cache["input_ids"], attention_mask=from_cache["attention_mask"],
                         audio_encoder_hidden_states=from_cache["audio_encoder_hidden_states"],
                         audio_encoder_lengths=from_cache["audio_encoder_lengths"]).logits
    logits_audio = model(input_ids=from_audio["input_ids"], attention_mask=from_audio["attention_mask"],
                         input_features=from_audio["input_features"],
                         feature_attention_mask=from_audio["feature_attention_mask"]).logits
    return logits_cache, logits_audio


def inside(base, **overrides):
    torch.manual_seed(3)
    return add_domain_adapter_to_model(copy.deepcopy(base), **{**ADAPTER, **overrides}).eval()


def test_config_checks_the_place():
    for bad in (-1, True, 1.5, "2"):
        with pytest.raises(ValueError, match="encoder_layer"):
            DomainAdapterConfig(encoder_layer=bad)
    assert DomainAdapterConfig.from_dict(DomainAdapterConfig(encoder_layer=3).to_dict()).encoder_layer == 3


def test_a_place_past_the_tower_is_refused(tiny_base):
    base, _ = tiny_base
    with pytest.raises(ValueError, match="past the audio tower's 2 layers"):
        add_domain_adapter_to_model(copy.deepcopy(base), **{**ADAPTER, "encoder_layer": 3})


@pytest.mark.parametrize("layer", [0, LAYER])
def test_the_adapter_runs_between_the_tower_layers(tiny_base, layer):
    """Adapted output == the tower's first ``layer`` layers (0: the convolutions and positions only), the adapter,
    the rest of the tower, written out by hand."""
    base, processor = tiny_base
    model = inside(base, encoder_layer=layer)
    inputs = make_inputs(processor)
    tower = model.model.audio_tower
    with torch.no_grad():
        got = model(input_features=inputs["input_features"], feature_attention_mask=inputs["feature_attention_mask"])
        hidden, frame_lengths = encode_audio_to_layer(tower, inputs["input_features"],
                                                      inputs["feature_attention_mask"], layer)
        valid = torch.arange(hidden.shape[1])[None] < frame_lengths[:, None]
        expected, lengths = finish_audio_tower(tower, model.domain_adapter(hidden, valid), frame_lengths, layer)
        stock, stock_lengths = encode_audio(tower, inputs["input_features"], inputs["feature_attention_mask"])
    assert torch.equal(got.output_lengths, stock_lengths) and torch.equal(lengths, stock_lengths)
    torch.testing.assert_close(got.hidden_states, expected, rtol=0, atol=1e-6)
    assert (got.hidden_states - stock).abs().max() > 1e-3  # the adapter does change the tower's output


@pytest.mark.parametrize("layer", [0, LAYER])
def test_off_is_exactly_the_stock_model_and_on_differs(tiny_base, layer):
    base, processor = tiny_base
    model = inside(base, encoder_layer=layer)
    inputs = make_inputs(processor)
    with torch.no_grad():
        stock = base(**inputs).logits
        on = model(**inputs).logits
        with model.disable_domain_adapter():
            off = model(**inputs).logits
        mic = model(**inputs, audio_domain="mic").logits
    model.config.trim_audio_tower = False
    with torch.no_grad(), model.disable_domain_adapter():
        padded_off = model(**inputs).logits
    assert torch.equal(padded_off, stock)  # the stock padded pass, bit for bit
    torch.testing.assert_close(off, stock, rtol=0, atol=1e-5)  # trimmed: equal up to float rounding
    assert torch.equal(mic, off)
    assert (on - stock).abs().max() > 1e-3


def test_routing_gives_a_mic_row_the_stock_tower(tiny_base):
    base, processor = tiny_base
    model = inside(base)
    inputs = make_inputs(processor, lengths=(16000, 12000))
    with torch.no_grad():
        routed = model(**inputs, audio_domain=["mic", "ldv"]).logits
        alone = [model(**{k: v[i : i + 1] for k, v in inputs.items()}, audio_domain=[d]).logits
                 for i, d in enumerate(["mic", "ldv"])]
        with model.disable_domain_adapter():
            off = model(**inputs).logits
    # right padding: the first row is the longest and has no padding, the second compares on its own positions
    torch.testing.assert_close(routed[0], off[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(routed[0], alone[0][0], rtol=0, atol=1e-5)
    n = alone[1].shape[1]
    torch.testing.assert_close(routed[1, :n][inputs["attention_mask"][1, :n].bool()],
                               alone[1][0][inputs["attention_mask"][1, :n].bool()], rtol=0, atol=1e-5)
    assert (routed[1] - off[1]).abs().max() > 1e-3


def test_adapters_at_different_places_in_one_batch_are_refused(tiny_base):
    base, processor = tiny_base
    model = inside(base)
    model.add_domain_adapter("after_tower", {**ADAPTER, "encoder_layer": None}, set_active=False)
    inputs = make_inputs(processor, lengths=(16000, 12000))
    with pytest.raises(ValueError, match="different places"):
        model(**inputs, audio_domain=["ldv", "after_tower"])
    with torch.no_grad():  # each alone is fine
        model(**inputs, audio_domain="after_tower")
        model(**inputs, audio_domain="ldv")


def test_recording_hidden_states_with_the_adapter_inside_is_a_clear_error(tiny_base):
    base, processor = tiny_base
    model = inside(base)
    inputs = make_inputs(processor)
    with pytest.raises(ValueError, match="disable_domain_adapter"):
        model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"], output_hidden_states=True)
    with model.disable_domain_adapter():
        out = model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"],
                                       output_hidden_states=True)
    assert out.hidden_states is not None


def test_cache_holds_the_adapter_s_input_and_feeds_the_same_logits(tiny_base, tmp_path):
    """The input column is cached after ``encoder_layer`` layers (two frames per output frame), the teacher column as
    the tower's output; logits from the cache equal logits from audio up to the cache's float16 rounding."""
    base, processor = tiny_base
    model = inside(base)
    data = paired_dataset()
    cached = build_feature_cache(model, processor, data, audio_columns=("audio", "mic_audio"),
                                 cache_dir=str(tmp_path / "cache"), progress=False, encoder_layers={"audio": LAYER})
    output_only = build_feature_cache(model, processor, data, audio_columns=("audio", "mic_audio"),
                                      cache_dir=str(tmp_path / "cache"), progress=False)
    assert len(os.listdir(tmp_path / "cache")) == 2  # another place, another cache key
    tower = model.model.audio_tower
    d = base.config.audio_config.d_model
    for row in range(len(data)):
        inputs = processor.feature_extractor([data[row]["audio"]["array"]], sampling_rate=16000,
                                             return_attention_mask=True, padding="max_length", return_tensors="pt")
        with torch.no_grad():
            states, frames = encode_audio_to_layer(tower, inputs["input_features"], inputs["attention_mask"], LAYER)
            output, out_frames = encode_audio(tower, inputs["input_features"], inputs["attention_mask"])
        got = torch.from_numpy(cached[row]["audio_encoder"]).reshape(-1, d)
        assert got.shape[0] == int(frames[0]) and int(out_frames[0]) == (int(frames[0]) - 2) // 2 + 1
        torch.testing.assert_close(got.float(), states[0, : int(frames[0])], rtol=1e-3, atol=1e-3)
        assert torch.from_numpy(output_only[row]["audio_encoder"]).reshape(-1, d).shape[0] == int(out_frames[0])
    with pytest.raises(ValueError, match="not among audio_columns"):
        build_feature_cache(model, processor, data, audio_columns=("audio",), progress=False,
                            encoder_layers={"mic": 1})

    collator = CachedFeatureCollator(processor, INSTRUCTION, d_model=d, inside_tower=True)
    reference = DataCollatorForQwen2AudioLDV(processor=processor, instruction=INSTRUCTION, mode="train")
    examples = [cached[i] for i in range(len(data))]
    from_cache = collator(examples)
    from_audio = reference([data[i] for i in range(len(data))])
    assert torch.equal(from_cache["input_ids"], from_audio["input_ids"])  # one <|AUDIO|> per output frame
    with torch.no_grad():
        logits_cache, logits_audio = cache_and_audio_logits(model, from_cache, from_audio)
    torch.testing.assert_close(logits_cache, logits_audio, rtol=1e-2, atol=1e-2)


def hand_loss_inside(model, batch):
    """lm + distill_weight * mse by definition: the adapter between the tower's layers, the teacher the tower's
    output on the microphone clip, the squared error over valid output frames."""
    tower = model.model.audio_tower
    if "audio_encoder_hidden_states" in batch:
        states, frame_lengths = batch["audio_encoder_hidden_states"], batch["audio_encoder_lengths"]
        teacher = batch["mic_audio_encoder_hidden_states"]
    else:
        with torch.no_grad():
            states, frame_lengths = encode_audio_to_layer(tower, batch["input_features"],
                                                          batch["feature_attention_mask"], LAYER)
            teacher, _ = encode_audio(tower, batch["mic_input_features"], batch["mic_feature_attention_mask"])
    valid = torch.arange(states.shape[1])[None] < frame_lengths[:, None]
    student, lengths = finish_audio_tower(tower, model.domain_adapter(states, valid), frame_lengths, LAYER)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   audio_encoder_hidden_states=student, audio_encoder_lengths=lengths,
                   audio_features_adapted=True).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    supervised = targets != -100
    token_nll = -F.log_softmax(logits, -1).gather(-1, targets.clamp_min(0)[..., None])[..., 0]
    loss = token_nll[supervised].sum() / supervised.sum()
    frames = min(student.shape[1], teacher.shape[1])
    mask = torch.arange(frames)[None] < lengths[:, None]
    squared = ((student[:, :frames] - teacher[:, :frames]) ** 2).mean(-1)
    return loss + DISTILL_WEIGHT * squared[mask].sum() / mask.sum()


@pytest.mark.parametrize("source", ["cache", "audio"])
def test_accumulated_step_equals_gradient_descent_with_the_adapter_inside(tiny_base, tmp_path, source):
    """One SGD step over 2 micro-batches of 2 == plain gradient descent on the hand loss of all 4 rows; the base's
    weights are bit-identical afterwards and only the adapter trains."""
    base, processor = tiny_base
    data = paired_dataset()
    model = inside(base).train()
    base_state = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("domain_adapters.")}
    if source == "cache":
        train = build_feature_cache(model, processor, data, audio_columns=("audio", "mic_audio"),
                                    cache_dir=str(tmp_path / "cache"), progress=False,
                                    encoder_layers={"audio": LAYER}).remove_columns(["audio", "mic_audio"])
        collator = CachedFeatureCollator(processor, INSTRUCTION, d_model=base.config.audio_config.d_model,
                                         mic_feature_key="mic_audio_encoder", inside_tower=True)
    else:
        train = data
        collator = DataCollatorForQwen2AudioLDV(processor=processor, instruction=INSTRUCTION, mode="train",
                                                mic_audio_key="mic_audio")
    reference = inside(base).train()
    whole = {k: v for k, v in collator([train[i] for i in range(len(train))]).items() if torch.is_tensor(v)}
    expected_loss = hand_loss_inside(reference, whole)
    expected_loss.backward()
    params = dict(reference.domain_adapter.named_parameters())
    expected = {name: (p - sgd_step_args(tmp_path).learning_rate * p.grad).detach() for name, p in params.items()}
    assert all(p.grad is None for n, p in reference.named_parameters() if not n.startswith("domain_adapters."))

    trainer = DomainAdapterTrainer(model=model, args=sgd_step_args(tmp_path), train_dataset=train, data_collator=collator,
                                   objective="lm+distill", distill_weight=DISTILL_WEIGHT)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    assert logged[0]["loss"] == pytest.approx(expected_loss.item(), rel=1e-5)
    for name, value in model.domain_adapter.named_parameters():
        torch.testing.assert_close(value.detach(), expected[name], rtol=1e-4, atol=1e-6, msg=name)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"domain_adapters.default.{n}" for n, _ in model.domain_adapter.named_parameters()}
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in base_state.items())


def test_saved_inside_adapter_loads_without_the_package(tiny_base, tiny_base_dir, tmp_path):
    base, processor = tiny_base
    config = DomainAdapterConfig(**ADAPTER)
    torch.manual_seed(5)
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tiny_base_dir, adapter_config=config).eval()
    out = tmp_path / "adapter"
    model.save_pretrained(out)
    assert (out / "adapter_model.safetensors").exists() or any(p.suffix == ".safetensors" for p in out.iterdir())
    reloaded = Qwen2AudioLDVForConditionalGeneration.from_pretrained(out).eval()
    assert reloaded.config.adapter_config.encoder_layer == LAYER
    inputs = make_inputs(processor)
    with torch.no_grad():
        expected = model(**inputs).logits
        assert torch.equal(reloaded(**inputs).logits, expected)
        with model.disable_domain_adapter():
            assert (model(**inputs).logits - expected).abs().max() > 1e-3
    assert_loads_without_the_package(out, inputs, expected, tmp_path, autos=("AutoModelForSeq2SeqLM",))


def test_clips_of_one_batch_do_not_see_each_other(tiny_base):
    """Batched == one by one (the adapter and the remaining layers mask every clip's padding)."""
    base, processor = tiny_base
    assert_batched_equals_one_by_one(inside(base), processor)


def test_explain_and_diagnose_read_the_adapter_where_it_sits(tiny_base, tmp_path):
    """Both tools feed the adapter its own input (the states after ``encoder_layer`` layers), and the diagnosis's
    feature distance compares tower outputs (the adapted one through the tower's remaining layers)."""
    from modeling_qwen2audio_ldv.evaluation.diagnose import diagnose
    from modeling_qwen2audio_ldv.evaluation.explain import explain

    base, processor = tiny_base
    model = inside(base)
    mic, ldv = noise_clips([12000, 12000], seed=4)
    features = processor.feature_extractor([ldv], sampling_rate=16000, return_attention_mask=True,
                                           padding="max_length", return_tensors="pt")
    states, frames = model.domain_adapter_inputs(features["input_features"], features["attention_mask"])
    expected, expected_frames = encode_audio_to_layer(model.model.audio_tower, features["input_features"],
                                                      features["attention_mask"], LAYER)
    assert torch.equal(states, expected) and torch.equal(frames, expected_frames)
    info = explain(model, processor, ldv, tmp_path / "explain")
    assert info["frames"] == int(frames[0])  # the tower's internal frame rate: 2 per output frame
    report = diagnose(model, processor, [{"audio": ldv, "text": "hello", "mic_audio": mic}])
    assert report.ok, report.summary()
    both = processor.feature_extractor([mic, ldv], sampling_rate=16000, return_attention_mask=True,
                                       padding="max_length", return_tensors="pt")
    with torch.no_grad():
        out, lengths = encode_audio(model.model.audio_tower, both["input_features"], both["attention_mask"])
        adapted = model(input_features=both["input_features"], feature_attention_mask=both["attention_mask"],
                        audio_domain=["mic", "ldv"]).hidden_states
    n = int(lengths.min())
    assert report.feature_distance["before"] == pytest.approx(float(((out[0, :n] - out[1, :n]) ** 2).mean()), rel=1e-5)
    assert report.feature_distance["after"] == pytest.approx(float(((out[0, :n] - adapted[1, :n]) ** 2).mean()),
                                                             rel=1e-5)
