"""The guide's training function and save/load, and the PEFT-style adapter control, on tiny models."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from modeling_qwen2audio_ldv import (
    DomainAdapterConfig,
    Qwen2AudioLDVForConditionalGeneration,
    add_domain_adapter_to_model,
    convert_pt_to_safetensors,
    train_with_domain_adapter,
)
from modeling_qwen2audio_ldv.training.guide import batch_loss, evaluate_loss
from modeling_qwen2audio_ldv.data.collator import DataCollatorForQwen2AudioLDV
from modeling_qwen2audio_ldv.testing import build_tiny_base

MINI_BASE = Path(__file__).resolve().parents[1] / "mini_base"
ADAPTER = dict(adapter_type="transformer", num_layers=1, num_heads=4, ff_dim=32, dropout=0.0)


def guide_model(seed=0, **overrides):
    base, processor = build_tiny_base(seed=seed)
    return add_domain_adapter_to_model(base, **{**ADAPTER, **overrides}), processor


def loaders(processor, seed=0):
    rng = np.random.default_rng(seed)
    rows = [{"audio": (0.1 * rng.standard_normal(int(rng.integers(6000, 14000)))).astype(np.float32),
             "text": text} for text in ["one two", "seven", "three four five", "nine"] * 2]
    collate = DataCollatorForQwen2AudioLDV(processor, mode="train")
    return DataLoader(rows[:4], batch_size=2, shuffle=True, collate_fn=collate), \
        DataLoader(rows[4:], batch_size=2, collate_fn=collate)


class Spy(torch.optim.AdamW):
    groups = None

    def __init__(self, params, *args, **kwargs):
        Spy.groups = [{"lr": g["lr"], "names": len(g["params"])} for g in params]
        super().__init__(params, *args, **kwargs)


def test_train_with_domain_adapter_lowers_the_validation_loss_and_trains_only_the_adapter(monkeypatch):
    """On the committed mini base (a random LLM barely reads audio, so its LM loss could not move)."""
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    base = Qwen2AudioForConditionalGeneration.from_pretrained(MINI_BASE)
    processor = AutoProcessor.from_pretrained(MINI_BASE)
    torch.manual_seed(0)
    model = add_domain_adapter_to_model(base, **ADAPTER, zero_init=False)
    train_loader, val_loader = loaders(processor)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    initial = evaluate_loss(model, val_loader, "cpu")
    monkeypatch.setattr(torch.optim, "AdamW", Spy)
    history = []
    returned = train_with_domain_adapter(model=model, processor=processor, train_loader=train_loader,
                                         val_loader=val_loader, num_epochs=6, learning_rate=2e-3, device="cpu",
                                         history=history, progress=False)
    assert returned is model and not model.training
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert history[-1]["val_loss"] < initial - 0.3  # measured before training with the same loss code
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("domain_adapters.default.") for k in changed)
    assert "domain_adapters.default.scale" in changed
    # the guide's separate rate for `scale`: 10x the weights' rate by default
    assert sorted(g["lr"] for g in Spy.groups) == [2e-3, 2e-3, 2e-2]


def test_gradients_reach_the_optimiser_clipped_to_max_grad_norm(monkeypatch):
    """The step sees the backward pass's gradient scaled by ``max_grad_norm / ||g||`` when ``||g||`` is larger
    (clipping after ``backward()``), and ``g`` itself without clipping. ``g`` is computed here by hand with the
    guide's own loss on the same weights and batch (no dropout, so the two passes are the same)."""
    model, processor = guide_model(zero_init=False)
    rng = np.random.default_rng(3)
    rows = [{"audio": (0.1 * rng.standard_normal(9000)).astype(np.float32), "text": t} for t in ("one two", "nine")]
    batch = DataCollatorForQwen2AudioLDV(processor, mode="train")(rows)
    model.train()
    batch_loss(model, dict(batch)).backward()
    parameters = [p for p in model.parameters() if p.requires_grad]
    raw = {id(p): p.grad.clone() for p in parameters}
    norm = float(torch.sqrt(sum(g.pow(2).sum() for g in raw.values())))
    model.zero_grad(set_to_none=True)
    seen = []

    class Recorder(torch.optim.AdamW):
        def step(self, closure=None):
            seen.append({id(p): p.grad.clone() for group in self.param_groups for p in group["params"]})
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "AdamW", Recorder)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for max_grad_norm, factor in ((norm / 10, 0.1), (None, 1.0), (10 * norm, 1.0)):
        model.load_state_dict(state)
        train_with_domain_adapter(model, processor, [batch], num_epochs=1, learning_rate=1e-3, device="cpu",
                                  max_grad_norm=max_grad_norm, progress=False)
        grads = seen.pop()
        assert grads.keys() == raw.keys()
        for key, gradient in grads.items():
            torch.testing.assert_close(gradient, raw[key] * factor, rtol=1e-3, atol=1e-6 * norm * factor)
    assert norm > 1e-6  # a gradient that is not 0 (measured: ~1.6e-3), so the scaled and the raw one differ


def test_train_with_domain_adapter_refuses_a_trainable_base_and_batches_without_labels():
    model, processor = guide_model()
    train_loader, _ = loaders(processor)
    unlabelled = [{k: v for k, v in batch.items() if k != "labels"} for batch in train_loader]
    with pytest.raises(ValueError, match="needs `labels`"):
        train_with_domain_adapter(model, processor, unlabelled, num_epochs=1, device="cpu", progress=False)
    model.lm_head.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="not part of the adapter"):
        train_with_domain_adapter(model, processor, train_loader, num_epochs=1, device="cpu", progress=False)


def test_guide_loss_is_the_trainers_for_every_objective(tmp_path):
    """The guide's loop computes the adapter Trainer's loss (the objective registry's), paired objectives too."""
    from transformers import TrainingArguments

    from modeling_qwen2audio_ldv.training.objectives import OBJECTIVE_NAMES, LossSettings
    from modeling_qwen2audio_ldv.training.trainer import DomainAdapterTrainer

    model, processor = guide_model(zero_init=False)
    rng = np.random.default_rng(1)
    rows = [{"audio": (0.1 * rng.standard_normal(9000 + 1000 * i)).astype(np.float32),
             "mic_audio": (0.1 * rng.standard_normal(9000 + 1000 * i)).astype(np.float32), "text": text}
            for i, text in enumerate(["one two", "seven", "three four five", "nine"])]
    loader = DataLoader(rows, batch_size=2, collate_fn=DataCollatorForQwen2AudioLDV(processor, mode="train",
                                                                                   mic_audio_key="mic_audio"))
    batch = {k: v for k, v in next(iter(loader)).items() if torch.is_tensor(v)}
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    model.eval()
    for objective in OBJECTIVE_NAMES:
        trainer = DomainAdapterTrainer(model=model, args=args, objective=objective, distill_weight=0.5)
        with torch.no_grad():
            expected = trainer.compute_loss(model, dict(batch))
            assert torch.equal(batch_loss(model, dict(batch), objective, LossSettings(distill_weight=0.5)),
                               expected), objective
    history = []
    train_with_domain_adapter(model, processor, loader, num_epochs=1, learning_rate=1e-3, device="cpu",
                              objective="lm+distill", history=history, progress=False)
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])


class _Touch:
    """Pickles to a call that creates a file: a load that ran pickled code would leave the file behind."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        from pathlib import Path

        return Path.touch, (Path(self.path),)


def test_guide_style_pt_save_and_load(tmp_path):
    model, processor = guide_model(seed=0, zero_init=False)
    path = tmp_path / "ldv_domain_adapter.pt"
    torch.save(model.domain_adapter.state_dict(), path)  # the guide's step 4

    other, _ = guide_model(seed=1, zero_init=False)
    other.domain_adapter.load_state_dict(torch.load(path, weights_only=True))  # the guide's load keeps working
    for key, value in model.domain_adapter.state_dict().items():
        assert torch.equal(other.domain_adapter.state_dict()[key], value)

    fresh, _ = guide_model(seed=2, zero_init=False)
    name = fresh.load_domain_adapter(path)  # configuration: the active adapter's
    assert name == "ldv_domain_adapter" and fresh.list_domain_adapters() == ["default", "ldv_domain_adapter"]
    for key, value in model.domain_adapter.state_dict().items():
        assert torch.equal(fresh.domain_adapters[name].state_dict()[key], value)

    from safetensors.torch import load_file

    converted = convert_pt_to_safetensors(path)
    assert converted == str(tmp_path / "ldv_domain_adapter.safetensors")
    assert load_file(converted).keys() == model.domain_adapter.state_dict().keys()
    assert fresh.load_domain_adapter(converted, adapter_name="converted") == "converted"


def test_pickled_objects_inside_a_pt_file_are_refused(tmp_path):
    model, _ = guide_model()
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    torch.save({**model.domain_adapter.state_dict(), "payload": _Touch(marker)}, evil)
    with pytest.raises(ValueError, match="refusing to load"):
        model.load_domain_adapter(evil)
    assert not marker.exists()
    mixed = tmp_path / "mixed.pt"
    torch.save({**model.domain_adapter.state_dict(), "step": 3}, mixed)
    with pytest.raises(ValueError, match="only tensors"):
        model.load_domain_adapter(mixed)
    with pytest.raises(ValueError, match="refusing to load"):
        convert_pt_to_safetensors(evil)
    assert not marker.exists()
    # a .bin stays refused (the existing rule for pickled checkpoints); nothing was added by the failures
    assert model.list_domain_adapters() == ["default"]


def test_add_domain_adapter_trains_the_new_adapter_only(tiny_base_dir):
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        tiny_base_dir, adapter_config=DomainAdapterConfig(**ADAPTER, zero_init=False))
    _, processor = build_tiny_base()
    first = {k: v.clone() for k, v in model.domain_adapter.state_dict().items()}
    base_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("domain_adapter")}

    assert model.add_domain_adapter("window", DomainAdapterConfig(**ADAPTER, zero_init=False)) == "window"
    assert model.list_domain_adapters() == ["window", "default"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"domain_adapters.window.{k}" for k, _ in model.domain_adapter.named_parameters()}
    assert model.get_nb_trainable_parameters()[0] == model.num_domain_adapter_parameters()

    train_loader, _ = loaders(processor)
    train_with_domain_adapter(model, processor, train_loader, num_epochs=1, learning_rate=1e-2, device="cpu",
                              progress=False)
    for key, value in first.items():  # the other adapter is frozen
        assert torch.equal(model.domain_adapters["default"].state_dict()[key], value)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in base_before.items())
    assert any(not torch.equal(model.domain_adapter.state_dict()[k], first[k]) for k in first)
    with pytest.raises(ValueError, match="reserved or already loaded"):
        model.add_domain_adapter("default")


def test_enable_disable_and_print_trainable_parameters(tiny_base_dir, capsys):
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        tiny_base_dir, adapter_config=DomainAdapterConfig(**ADAPTER, zero_init=False)).eval()
    model.freeze_base_model()
    _, processor = build_tiny_base()
    batch = DataCollatorForQwen2AudioLDV(processor, mode="train")(
        [{"audio": np.random.default_rng(0).standard_normal(9000).astype(np.float32) * 0.1, "text": "on"}])
    batch.pop("labels")
    with torch.no_grad():
        adapted = model(**batch).logits
        with model.disable_domain_adapter():
            base = model(**batch).logits
        model.set_domain_adapters_enabled(False)
        assert not model.domain_adapters_enabled
        assert torch.equal(model(**batch).logits, base)
        with model.disable_domain_adapter():  # entered while off: still off after it
            pass
        assert not model.domain_adapters_enabled and torch.equal(model(**batch).logits, base)
        model.set_domain_adapters_enabled(True)
        assert torch.equal(model(**batch).logits, adapted)
        with model.disable_domain_adapter():
            with model.disable_domain_adapter():  # nested: the inner block leaves the outer one off
                pass
            assert not model.domain_adapters_enabled and torch.equal(model(**batch).logits, base)
        assert model.domain_adapters_enabled and torch.equal(model(**batch).logits, adapted)
        for before in (True, False):  # an error inside the block leaves the switch where it was too
            model.set_domain_adapters_enabled(before)
            with pytest.raises(KeyError, match="inside the block"), model.disable_domain_adapter():
                raise KeyError("inside the block")
            assert model.domain_adapters_enabled is before
        model.set_domain_adapters_enabled(True)
        assert torch.equal(model(**batch).logits, adapted)
    assert not torch.equal(adapted, base)

    model.print_trainable_parameters()
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == model.num_domain_adapter_parameters() and total == sum(p.numel() for p in model.parameters())
    assert capsys.readouterr().out.strip() == (f"trainable params: {trainable:,d} || all params: {total:,d} || "
                                               f"trainable%: {100 * trainable / total:.4f}")


def test_attach_a_saved_adapter_to_a_loaded_base(tiny_base_dir, tmp_path):
    from transformers import Qwen2AudioForConditionalGeneration

    trained = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        tiny_base_dir, adapter_config=DomainAdapterConfig(**ADAPTER, zero_init=False))
    trained.save_pretrained(tmp_path / "adapter")

    base = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_base_dir).eval()
    pointers = {n: p.data_ptr() for n, p in base.named_parameters()}
    model = Qwen2AudioLDVForConditionalGeneration.from_base_model(base, tmp_path / "adapter")
    assert model is base  # converted in place: the base weights were not loaded or copied again
    assert all(p.data_ptr() == pointers[n] for n, p in model.named_parameters() if n in pointers)
    assert model.active_domain_adapter == "adapter"
    assert not any(p.requires_grad for p in model.parameters())
    for key, value in trained.domain_adapter.state_dict().items():
        assert torch.equal(model.domain_adapter.state_dict()[key], value)

    _, processor = build_tiny_base()
    batch = DataCollatorForQwen2AudioLDV(processor, mode="train")(
        [{"audio": np.random.default_rng(1).standard_normal(8000).astype(np.float32) * 0.1, "text": "off"}])
    batch.pop("labels")
    reference = Qwen2AudioLDVForConditionalGeneration.from_pretrained(tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, reference(**batch).logits)

    trainable = Qwen2AudioLDVForConditionalGeneration.from_base_model(
        Qwen2AudioForConditionalGeneration.from_pretrained(tiny_base_dir), tmp_path / "adapter", is_trainable=True)
    assert {n for n, p in trainable.named_parameters() if p.requires_grad} == {
        f"domain_adapters.{trainable.active_domain_adapter}.{k}" for k, _ in trainable.domain_adapter.named_parameters()}
