"""Objectives, optimiser groups, the feature cache and strict resume, on the tiny model."""

import copy
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from conftest import noise_clips
from modeling_qwen2audio_ldv import DomainAdapterConfig, add_domain_adapter_to_model
from modeling_qwen2audio_ldv.training.feature_cache import CachedFeatureCollator, build_feature_cache
from modeling_qwen2audio_ldv.training.objectives import (
    OBJECTIVE_NAMES,
    distillation_loss,
    needs_mic_clip,
    parse_objectives,
    warmup_objective,
)
from modeling_qwen2audio_ldv.training.trainer import adapter_parameter_groups, load_adapter_checkpoint


def test_distillation_loss_by_hand():
    student = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])
    teacher = torch.tensor([[[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    lengths = torch.tensor([2])  # the third frame is padding and must not count
    # mse per frame: frame 0: ((0)^2 + (-1)^2) / 2 = 0.5; frame 1: (0 + 4) / 2 = 2.0 -> mean 1.25
    assert distillation_loss(student, teacher, lengths, "mse").item() == pytest.approx(1.25)
    # cosine: frame 0: cos((1,0),(1,1)) = 1/sqrt(2); frame 1: teacher is zero -> cos 0 (eps) -> 1 - 0 = 1
    expected = ((1 - 1 / np.sqrt(2)) + 1.0) / 2
    assert distillation_loss(student, teacher, lengths, "cosine").item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="`distill_loss`"):
        distillation_loss(student, teacher, lengths, "l1")


def test_distillation_loss_over_rows_of_different_lengths_by_hand():
    """Two clips padded to 3 frames, valid 1 and 3: the mean is over the 4 valid frames, not per row and not over
    the 6 padded ones; ``mse+cosine`` is the sum of both terms."""
    student = torch.tensor([[[2.0, 0.0], [7.0, 7.0], [7.0, 7.0]],
                            [[1.0, 1.0], [0.0, 3.0], [1.0, 0.0]]])
    teacher = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
                            [[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]]])
    lengths = torch.tensor([1, 3])
    # squared error per frame, averaged over d_model: row 0 frame 0: (4 + 0) / 2 = 2; row 1: 0, (0 + 4) / 2 = 2,
    # (1 + 1) / 2 = 1 -> (2 + 0 + 2 + 1) / 4 = 1.25 (per-row means would give (2 + 1) / 2 = 1.5)
    assert distillation_loss(student, teacher, lengths, "mse").item() == pytest.approx(1.25)
    # 1 - cos per frame: row 0 frame 0 against a zero teacher: 1; row 1: 0, 0 (parallel), 1 (orthogonal) -> 2 / 4
    assert distillation_loss(student, teacher, lengths, "cosine").item() == pytest.approx(0.5, abs=1e-6)
    assert distillation_loss(student, teacher, lengths, "mse+cosine").item() == pytest.approx(1.75, abs=1e-6)
    # a teacher one frame shorter than the student: only the frames both have count (row 1's third drops out)
    assert distillation_loss(student, teacher[:, :2], lengths, "mse").item() == pytest.approx(4 / 3)


def test_a_batch_outside_a_step_is_normalised_by_its_own_supervised_tokens(tiny_base):
    """``lm`` without a step's count (evaluation, the guide's loop) is the mean token cross-entropy over the
    batch's supervised tokens: the stock model's own loss on the same batch (rows of 2 and 19 target tokens, so a
    mean of row means or a division by the padded length differs)."""
    from modeling_qwen2audio_ldv.data.collator import DataCollatorForQwen2AudioLDV
    from modeling_qwen2audio_ldv.training.objectives import LossSettings, objective_loss

    base, processor = tiny_base
    model = add_domain_adapter_to_model(copy.deepcopy(base), adapter_type="transformer", num_heads=4, ff_dim=32,
                                        dropout=0.0, zero_init=False).eval()
    clips = noise_clips([9000, 12000], seed=8)
    batch = DataCollatorForQwen2AudioLDV(processor)([{"audio": c, "text": t}
                                                     for c, t in zip(clips, ["a", "one two three four"])])
    assert (batch["labels"][:, 1:] != -100).sum(-1).tolist() == [2, 19]  # the transcript and <|im_end|>
    with torch.no_grad():
        expected = model(**batch).loss  # transformers' causal LM loss: mean over the shifted labels
        loss, _ = objective_loss(model, dict(batch), parse_objectives("lm"), LossSettings(), training=False)
        counted, _ = objective_loss(model, dict(batch), parse_objectives("lm"), LossSettings(), training=True,
                                    counts={"lm": torch.tensor(42)})
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    # inside a step the same sum is divided by the step's count instead: 21 tokens here, 42 given
    torch.testing.assert_close(counted, expected * 21 / 42, rtol=1e-6, atol=0)


def test_objective_names_come_from_the_registry_and_a_bad_part_is_named():
    assert OBJECTIVE_NAMES == ("lm", "distill", "lm+distill")
    assert [o.name for o in parse_objectives("lm+distill")] == ["lm", "distill"]  # the order the terms add up
    assert [needs_mic_clip(name) for name in OBJECTIVE_NAMES] == [False, True, True]
    assert [warmup_objective(name) for name in OBJECTIVE_NAMES] == [None, None, "distill"]
    with pytest.raises(ValueError, match="names 'ctc', not among the objectives"):
        parse_objectives("lm+ctc")
    for bad in ("distill+lm", "lm+lm"):
        with pytest.raises(ValueError, match="must be one of"):
            parse_objectives(bad)


def test_parameter_groups_give_scale_its_own_learning_rate(tiny_base):
    base, _ = tiny_base
    model = add_domain_adapter_to_model(copy.deepcopy(base), adapter_type="transformer", num_heads=4, ff_dim=32)
    groups = adapter_parameter_groups(model, 1e-4, 1e-2, 0.01)
    scale_group = [g for g in groups if any(p is model.domain_adapter.scale for p in g["params"])]
    assert len(scale_group) == 1 and scale_group[0]["lr"] == 1e-2 and len(scale_group[0]["params"]) == 1
    counted = sum(p.numel() for g in groups for p in g["params"])
    assert counted == model.num_domain_adapter_parameters()
    model.lm_head.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="'lm_head.weight' is trainable but not part of the adapter"):
        adapter_parameter_groups(model, 1e-4, None, 0.0)


def _dataset(n=4, seed=0):
    clips = noise_clips([8000 + 2000 * i for i in range(n)], seed)
    mic = noise_clips([8000 + 2000 * i for i in range(n)], seed + 1)
    data = datasets.Dataset.from_dict({
        "audio": [{"array": c, "sampling_rate": 16000} for c in clips],
        "mic_audio": [{"array": c, "sampling_rate": 16000} for c in mic],
        "text": ["one two", "seven", "three four five", "nine"][:n],
    })
    audio = datasets.Audio(sampling_rate=16000)
    return data.cast_column("audio", audio).cast_column("mic_audio", audio)


def _overfit(model, batch_fn, loss_fn, steps=60, lr=3e-3):
    optimizer = torch.optim.Adam(model.domain_adapter_parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model, batch_fn())
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


MINI_BASE = Path(__file__).resolve().parents[1] / "mini_base"


def test_lm_and_distill_losses_fall_when_overfitting_one_batch(tmp_path):
    """On the committed mini base (a random LLM barely reads audio, so the LM loss could not move)."""
    from modeling_qwen2audio_ldv import Qwen2AudioLDVForConditionalGeneration
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(MINI_BASE)
    torch.manual_seed(0)  # the adapter's initialisation must not depend on which tests ran before (Trainer seeds)
    config = DomainAdapterConfig(num_heads=4, ff_dim=256, num_layers=1, dropout=0.0, zero_init=False)
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(MINI_BASE, adapter_config=config)
    model.freeze_base_model()
    d_model = model.config.audio_config.d_model
    cached = build_feature_cache(model, processor, _dataset(), audio_columns=("audio", "mic_audio"),
                                 cache_dir=str(tmp_path), progress=False)
    collator = CachedFeatureCollator(processor, "Transcribe the audio.", mic_feature_key="mic_audio_encoder",
                                     d_model=d_model)
    batch = collator([cached[i] for i in range(len(cached))])
    lm_inputs = {k: v for k, v in batch.items() if not k.startswith("mic_")}
    lm = _overfit(model, lambda: lm_inputs, lambda m, b: m(**b).loss, steps=100)
    assert lm[-1] < 0.5 * lm[0], lm[::10]

    def distill(m, b):
        student = m(audio_encoder_hidden_states=b["audio_encoder_hidden_states"],
                    audio_encoder_lengths=b["audio_encoder_lengths"]).hidden_states
        return distillation_loss(student, b["mic_audio_encoder_hidden_states"], b["audio_encoder_lengths"])

    model2 = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(MINI_BASE, adapter_config=config)
    model2.freeze_base_model()
    dl = _overfit(model2, lambda: batch, distill)
    assert dl[-1] < 0.5 * dl[0], dl[::10]


def test_first_step_loss_from_cache_equals_loss_from_audio(tiny_base, tmp_path):
    from modeling_qwen2audio_ldv.data.collator import DataCollatorForQwen2AudioLDV

    base, processor = tiny_base
    model = add_domain_adapter_to_model(copy.deepcopy(base), adapter_type="transformer", num_heads=4, ff_dim=32,
                                        dropout=0.0, zero_init=False).eval()
    data = _dataset()
    cached = build_feature_cache(model, processor, data, cache_dir=str(tmp_path), progress=False)
    instruction = "Transcribe the audio."
    from_cache = CachedFeatureCollator(processor, instruction, d_model=16)([cached[i] for i in range(len(cached))])
    examples = [data[i] for i in range(len(data))]
    from_audio = DataCollatorForQwen2AudioLDV(processor=processor, instruction=instruction, mode="train")(examples)
    assert torch.equal(from_cache["input_ids"], from_audio["input_ids"])
    assert torch.equal(from_cache["labels"], from_audio["labels"])
    with torch.no_grad():
        cached_loss = model(**from_cache).loss
        audio_loss = model(**{k: v for k, v in from_audio.items() if torch.is_tensor(v)}).loss
    # float16 storage of the tower outputs is the only difference
    assert abs(cached_loss.item() - audio_loss.item()) <= 1e-3 * abs(audio_loss.item())


def test_feature_cache_is_reused_and_keyed_by_audio(tiny_base, tmp_path):
    base, processor = tiny_base
    model = add_domain_adapter_to_model(copy.deepcopy(base), adapter_type="none")
    first = build_feature_cache(model, processor, _dataset(), cache_dir=str(tmp_path), progress=False)
    assert len(list(tmp_path.iterdir())) == 1
    again = build_feature_cache(model, processor, _dataset(), cache_dir=str(tmp_path), progress=False)
    assert len(list(tmp_path.iterdir())) == 1
    assert np.array_equal(np.asarray(first[0]["audio_encoder"]), np.asarray(again[0]["audio_encoder"]))
    build_feature_cache(model, processor, _dataset(seed=5), cache_dir=str(tmp_path), progress=False)
    assert len(list(tmp_path.iterdir())) == 2  # other audio -> another cache
    # only the valid frames are stored: a 0.5 s clip = 50 mel frames -> ((50-1)//2+1-2)//2+1 = 12 frames of 16
    stored = first.with_format("numpy")[0]["audio_encoder"]
    assert stored.shape == (12 * 16,)
    assert first.features["audio_encoder"].feature.dtype == "float16"  # stored as float16 on disk


def test_resume_from_another_adapter_configuration_is_refused(tiny_base, tiny_base_dir, tmp_path):
    from modeling_qwen2audio_ldv import Qwen2AudioLDVForConditionalGeneration

    small = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        tiny_base_dir, adapter_config=DomainAdapterConfig(num_heads=4, ff_dim=32, num_layers=1))
    small.save_pretrained(tmp_path / "checkpoint-10")
    large = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        tiny_base_dir, adapter_config=DomainAdapterConfig(num_heads=4, ff_dim=32, num_layers=2))
    with pytest.raises(ValueError, match=r"another adapter configuration; differing fields .*'num_layers': \(1, 2\)"):
        load_adapter_checkpoint(large, str(tmp_path / "checkpoint-10"))
    same = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        tiny_base_dir, adapter_config=DomainAdapterConfig(num_heads=4, ff_dim=32, num_layers=1))
    load_adapter_checkpoint(same, str(tmp_path / "checkpoint-10"))
    for (name, a), b in zip(small.domain_adapter.state_dict().items(), same.domain_adapter.state_dict().values()):
        assert torch.equal(a, b), name
