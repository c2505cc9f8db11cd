"""One optimiser step of DomainAdapterTrainer against a hand computation (tiny model, SGD, no clipping).

The step over a global batch of 4 rows split into 2 gradient-accumulation micro-batches of 2 must equal plain
gradient descent on the loss of all 4 rows at once: the summed token cross-entropy over the count of supervised
tokens of the 4 rows (+ ``distill_weight`` x the squared error summed over the valid frames of the 4 clips, over
their count). SGD makes the update proportional to the gradient, so a wrong scale shows (Adam would hide it).
"""

import copy

import datasets
import pytest
import torch
import torch.nn.functional as F
from transformers import TrainingArguments

from conftest import noise_clips
from modeling_qwen2audio_ldv import add_domain_adapter_to_model
from modeling_qwen2audio_ldv.audio_tower_qwen2audio_ldv import encode_audio
from modeling_qwen2audio_ldv.data.collator import DataCollatorForQwen2AudioLDV
from modeling_qwen2audio_ldv.training.feature_cache import CachedFeatureCollator, build_feature_cache
from modeling_qwen2audio_ldv.training.objectives import distillation_loss
from modeling_qwen2audio_ldv.training.trainer import DomainAdapterTrainer

INSTRUCTION = "Transcribe the audio."
# transcripts of very different lengths: a mean of micro-batch means differs from the mean over all tokens
TEXTS = ["a", "one two three four five", "xy", "seven eight nine"]
LR = 0.5
DISTILL_WEIGHT = 0.7


def paired_dataset():
    lengths = [16000, 6000, 11000, 3000]
    clips, mic = noise_clips(lengths, 0), noise_clips(lengths, 1)
    data = datasets.Dataset.from_dict({
        "audio": [{"array": c, "sampling_rate": 16000} for c in clips],
        "mic_audio": [{"array": c, "sampling_rate": 16000} for c in mic],
        "text": TEXTS,
    })
    audio = datasets.Audio(sampling_rate=16000)
    return data.cast_column("audio", audio).cast_column("mic_audio", audio)


def sgd_step_args(tmp_path) -> TrainingArguments:
    """One plain SGD step (rate LR, no clipping, no decay) over 2 accumulated micro-batches of 2 rows."""
    return TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=1,
        learning_rate=LR, optim="sgd", lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1e9, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
        dataloader_num_workers=0, remove_unused_columns=False, seed=0, disable_tqdm=True,
    )


def fresh_model(base):
    torch.manual_seed(3)
    model = add_domain_adapter_to_model(copy.deepcopy(base), adapter_type="transformer", num_layers=1, num_heads=4,
                                        ff_dim=32, dropout=0.0, zero_init=False)
    return model.train()


def hand_loss(model, batch, objective):
    """The objective over one batch holding every row, computed from its definition."""
    lm_inputs = {k: v for k, v in batch.items() if not k.startswith("mic_") and k != "labels"}
    logits = model(**lm_inputs).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    supervised = targets != -100
    log_probs = F.log_softmax(logits, -1)
    token_nll = -log_probs.gather(-1, targets.clamp_min(0)[..., None])[..., 0]
    loss = token_nll[supervised].sum() / supervised.sum()
    if objective == "lm+distill":
        if "audio_encoder_hidden_states" in batch:
            student_in, lengths = batch["audio_encoder_hidden_states"], batch["audio_encoder_lengths"]
            teacher = batch["mic_audio_encoder_hidden_states"]
        else:
            tower = model.model.audio_tower
            with torch.no_grad():
                student_in, lengths = encode_audio(tower, batch["input_features"], batch["feature_attention_mask"])
                teacher, _ = encode_audio(tower, batch["mic_input_features"], batch["mic_feature_attention_mask"])
        student = model.domain_adapter(student_in, torch.arange(student_in.shape[1])[None] < lengths[:, None])
        frames = min(student.shape[1], teacher.shape[1])
        valid = torch.arange(frames)[None] < lengths[:, None]
        squared = ((student[:, :frames] - teacher[:, :frames]) ** 2).mean(-1)  # per frame, over d_model
        loss = loss + DISTILL_WEIGHT * squared[valid].sum() / valid.sum()
    return loss


@pytest.mark.parametrize(("objective", "source"), [("lm", "cache"), ("lm+distill", "cache"),
                                                   ("lm+distill", "audio")])
def test_accumulated_step_equals_gradient_descent_on_the_whole_batch(tiny_base, tmp_path, objective, source):
    base, processor = tiny_base
    data = paired_dataset()
    distill = objective == "lm+distill"
    model = fresh_model(base)
    if source == "cache":
        columns = ("audio", "mic_audio") if distill else ("audio",)
        train = build_feature_cache(model, processor, data, audio_columns=columns, cache_dir=str(tmp_path / "cache"),
                                    progress=False).remove_columns(["audio", "mic_audio"])
        collator = CachedFeatureCollator(processor, INSTRUCTION, d_model=base.config.audio_config.d_model,
                                         mic_feature_key="mic_audio_encoder" if distill else None)
    else:
        train = data
        collator = DataCollatorForQwen2AudioLDV(processor=processor, instruction=INSTRUCTION, mode="train",
                                                mic_audio_key="mic_audio" if distill else None)

    # by hand: all four rows in one batch, one gradient, one SGD step
    reference = fresh_model(base)
    whole = collator([train[i] for i in range(len(train))])
    whole = {k: v for k, v in whole.items() if torch.is_tensor(v)}
    expected_loss = hand_loss(reference, whole, objective)
    expected_loss.backward()
    params = dict(reference.domain_adapter.named_parameters())
    grad_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params.values())).item()
    expected = {name: (p - LR * p.grad).detach() for name, p in params.items()}

    trainer = DomainAdapterTrainer(model=model, args=sgd_step_args(tmp_path), train_dataset=train, data_collator=collator,
                                   objective=objective, distill_weight=DISTILL_WEIGHT)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    assert len(logged) == 1
    assert logged[0]["loss"] == pytest.approx(expected_loss.item(), rel=1e-5)
    assert logged[0]["grad_norm"] == pytest.approx(grad_norm, rel=1e-4)
    for name, value in model.domain_adapter.named_parameters():
        assert not torch.equal(value.detach(), params[name].detach()), name  # it moved
        torch.testing.assert_close(value.detach(), expected[name], rtol=1e-4, atol=1e-6, msg=name)


def cached_pairs(model, processor, tmp_path):
    """The paired rows from the feature cache (the input clip and its microphone teacher) and their collator."""
    train = build_feature_cache(model, processor, paired_dataset(), audio_columns=("audio", "mic_audio"),
                                cache_dir=str(tmp_path / "cache"), progress=False).remove_columns(["audio", "mic_audio"])
    collator = CachedFeatureCollator(processor, INSTRUCTION, d_model=model.config.audio_config.d_model,
                                     mic_feature_key="mic_audio_encoder")
    return train, collator


def test_lm_plus_distill_from_the_cache_runs_the_adapter_once(tiny_base, tmp_path):
    """From cached features the adapter's output feeds both losses (the step above checks the values)."""
    base, processor = tiny_base
    model = fresh_model(base)
    train, collator = cached_pairs(model, processor, tmp_path)
    batch = {k: v for k, v in collator([train[i] for i in range(2)]).items() if torch.is_tensor(v)}
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, save_strategy="no")
    trainer = DomainAdapterTrainer(model=model, args=args, train_dataset=train, data_collator=collator,
                                   objective="lm+distill", distill_weight=DISTILL_WEIGHT)
    calls = []
    handle = model.domain_adapter.register_forward_hook(lambda module, inputs, output: calls.append(1))
    loss = trainer.compute_loss(model, batch)
    handle.remove()
    assert len(calls) == 1
    reference = fresh_model(base)
    assert loss.item() == pytest.approx(hand_loss(reference, batch, "lm+distill").item(), rel=1e-5)


def test_distill_warmup_steps_skip_the_language_model(tiny_base, tmp_path):
    """The first ``distill_warmup_steps`` steps train on distill alone (the LLM never runs, the logged loss is the
    distillation term only); the later steps take lm + distill."""
    base, processor = tiny_base
    model = fresh_model(base)
    train, collator = cached_pairs(model, processor, tmp_path)
    args = sgd_step_args(tmp_path)
    args.max_steps, args.gradient_accumulation_steps, args.per_device_train_batch_size = 3, 1, 4
    trainer = DomainAdapterTrainer(model=model, args=args, train_dataset=train, data_collator=collator,
                                   objective="lm+distill", distill_weight=DISTILL_WEIGHT, distill_warmup_steps=2)
    llm_calls = []
    handle = model.model.language_model.register_forward_hook(lambda *a: llm_calls.append(trainer.state.global_step))
    reference = fresh_model(base)
    whole = {k: v for k, v in collator([train[i] for i in range(4)]).items() if torch.is_tensor(v)}
    student = reference.domain_adapter(whole["audio_encoder_hidden_states"],
                                       torch.arange(whole["audio_encoder_hidden_states"].shape[1])[None]
                                       < whole["audio_encoder_lengths"][:, None])
    first_distill = distillation_loss(student, whole["mic_audio_encoder_hidden_states"], whole["audio_encoder_lengths"])
    trainer.train()
    handle.remove()
    assert llm_calls == [2]  # only the third step runs the language model
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    assert logged[0] == pytest.approx(first_distill.item(), rel=1e-5)  # no lm term, no distill weight
    assert trainer.objective == "lm+distill"
    with pytest.raises(ValueError, match="distill_warmup_steps"):
        DomainAdapterTrainer(model=model, args=args, train_dataset=train, data_collator=collator, objective="lm",
                             distill_warmup_steps=2)
