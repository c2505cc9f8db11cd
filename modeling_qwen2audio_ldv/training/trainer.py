# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The adapter Trainer: the HF ``Trainer`` with the objectives of :mod:`.objectives`, optimiser groups over the
adapter's parameters only, and a strict adapter-only resume.

``train_hf.py`` builds it; the feature cache it usually trains from is :mod:`.feature_cache`.
"""

import json
import logging
import os

import torch
from safetensors.torch import load_file
from transformers import Trainer

from ..adapter_bank_qwen2audio_ldv import ADAPTER_WEIGHTS_NAME, load_adapter_state
from ..configuration_qwen2audio_ldv import DomainAdapterConfig
from ..modeling_qwen2audio_ldv import Qwen2AudioLDVForConditionalGeneration
from .objectives import LM, LossSettings, objective_loss, parse_objectives, warmup_objective

logger = logging.getLogger(__name__)


def adapter_parameter_groups(model, learning_rate: float, scale_learning_rate: float | None, weight_decay: float):
    """Optimiser groups over the trainable adapter parameters only; ``scale`` gets its own learning rate.

    The guide's FAQ (loss not falling): a larger learning rate for ``scale`` (e.g. 10x) lets the correction's
    strength move faster than the adapter's weights.
    """
    scale, decay, no_decay = [], [], []
    prefix = model.active_adapter_prefix()
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if not name.startswith(prefix):
            raise ValueError(f"parameter {name!r} is trainable but not part of the adapter; call freeze_base_model()")
        if name == prefix + "scale":
            scale.append(parameter)
        elif parameter.dim() < 2:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    if not (scale or decay or no_decay):
        raise ValueError("the model has no trainable adapter parameters (adapter_type 'none'?)")
    groups = [
        {"params": decay, "lr": learning_rate, "weight_decay": weight_decay},
        {"params": no_decay, "lr": learning_rate, "weight_decay": 0.0},
        {"params": scale, "lr": scale_learning_rate or learning_rate, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


class DomainAdapterTrainer(Trainer):
    """The HF Trainer with the adapter objectives, adapter-only optimiser groups and a strict resume.

    ``objective``: a name of :data:`~.objectives.OBJECTIVE_NAMES` (``lm``, ``distill``, ``lm+distill``);
    ``distill_weight``, ``distill_loss``: :class:`~.objectives.LossSettings`; ``scale_learning_rate``: the rate of
    the adapter's ``scale`` (default: the Trainer's); ``distill_warmup_steps``: the first optimiser steps train on
    the objectives without an LLM pass alone (``lm+distill`` only).
    """

    def __init__(self, *args, objective: str = "lm", distill_weight: float = 1.0, distill_loss: str = "mse",
                 scale_learning_rate: float | None = None, distill_warmup_steps: int = 0, **kwargs):
        parse_objectives(objective)
        if distill_warmup_steps < 0 or (distill_warmup_steps and warmup_objective(objective) is None):
            raise ValueError(f"`distill_warmup_steps` ({distill_warmup_steps}) must be >= 0, and > 0 only with the "
                             f"lm+distill objective (got {objective!r})")
        self._objective = objective
        # the first `distill_warmup_steps` optimiser steps train on the distillation loss alone: no LLM forward,
        # a fraction of a full step's cost from the feature cache
        self.distill_warmup_steps = distill_warmup_steps
        self.distill_weight = distill_weight
        self.distill_kind = distill_loss
        self.scale_learning_rate = scale_learning_rate
        model = kwargs.get("model", args[0] if args else None)
        with _quantized_base_with_adapter(model):
            super().__init__(*args, **kwargs)

    @property
    def objective(self) -> str:
        """The objective of the current step: ``distill`` during the warm-up, then the configured one."""
        warming = self.distill_warmup_steps and self.model.training and self.state.global_step < self.distill_warmup_steps
        return warmup_objective(self._objective) if warming else self._objective

    def loss_settings(self) -> LossSettings:
        """The objectives' settings, with this run's process count and the accelerator's unwrapping."""
        return LossSettings(distill_weight=self.distill_weight, distill_kind=self.distill_kind,
                            world_size=self.args.world_size, unwrap=self.accelerator.unwrap_model)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            groups = adapter_parameter_groups(self.model, self.args.learning_rate, self.scale_learning_rate,
                                              self.args.weight_decay)
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            optimizer_kwargs.pop("lr", None)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # Losses are sums normalised by the GLOBAL count of supervised tokens / valid frames of the optimiser step
    # (over gradient-accumulation micro-batches and processes), so one process with batch B and N processes with
    # B / N each take the same step; the Trainer then neither divides by the accumulation steps nor lets DDP's
    # gradient averaging change the scale.
    loss_is_scaled_for_ga = True

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The step's micro-batches, and each objective's global count over them (the ``lm`` count, the supervised
        tokens, is the Trainer's ``num_items_in_batch`` when the Trainer has not counted them itself)."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._step_counts = {}
        bare = self.accelerator.unwrap_model(self.model)
        for objective in parse_objectives(self.objective):
            if objective.name == LM and num_items_in_batch is not None:
                continue  # the Trainer counted the supervised tokens
            count = torch.as_tensor(sum(objective.count(batch, bare) for batch in batch_samples), device=device)
            if self.args.world_size > 1:
                count = self.accelerator.gather(count.reshape(1)).sum()
            self._step_counts[objective.name] = count
        if LM in self._step_counts:
            num_items_in_batch = self._step_counts[LM]
        return batch_samples, num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        counts = {**getattr(self, "_step_counts", {}), LM: num_items_in_batch}
        loss, outputs = objective_loss(model, inputs, parse_objectives(self.objective), self.loss_settings(),
                                       training=self.model.training, counts=counts)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Load the adapter of a checkpoint strictly (the stock resume load is non-strict)."""
        model = self.accelerator.unwrap_model(model or self.model)
        load_adapter_checkpoint(model, resume_from_checkpoint)

    def _load_best_model(self):
        load_adapter_checkpoint(self.accelerator.unwrap_model(self.model), self.state.best_model_checkpoint)


class _quantized_base_with_adapter:
    """Let the Trainer accept a quantised (e.g. 4-bit bitsandbytes) base that carries a trainable domain adapter.

    The Trainer refuses a "purely quantized" model unless a PEFT adapter is attached; the domain adapter plays that
    role here (it is kept out of quantisation and is the only trainable part), so the check is told so while the
    Trainer is built, and only when the quantisation method supports training and the adapter is trainable.
    """

    def __init__(self, model):
        quantizer = getattr(model, "hf_quantizer", None)
        self.model = model if (
            getattr(model, "is_quantized", False) and quantizer is not None
            and getattr(quantizer, "is_trainable", False)
            and not getattr(model, "_hf_peft_config_loaded", False)
            and any(p.requires_grad for p in getattr(model, "domain_adapter_parameters", lambda: [])())
        ) else None

    def __enter__(self):
        if self.model is not None:
            self.model._hf_peft_config_loaded = True

    def __exit__(self, *exc):
        if self.model is not None:
            self.model._hf_peft_config_loaded = False
        return False


def load_adapter_checkpoint(model: Qwen2AudioLDVForConditionalGeneration, checkpoint_dir: str) -> None:
    """Load a Trainer checkpoint's adapter into ``model``: same adapter configuration, every key, nothing else."""
    config_path = os.path.join(checkpoint_dir, "config.json")
    weights_path = os.path.join(checkpoint_dir, ADAPTER_WEIGHTS_NAME)
    if not os.path.isfile(weights_path):
        raise FileNotFoundError(f"{checkpoint_dir}: no {ADAPTER_WEIGHTS_NAME}; not an adapter checkpoint")
    with open(config_path, encoding="utf-8") as handle:
        saved = DomainAdapterConfig.from_dict(json.load(handle).get("domain_adapter") or {})
    current = model.config.adapter_config
    if saved != current:
        differences = {k: (v, getattr(current, k)) for k, v in saved.to_dict().items() if getattr(current, k) != v}
        raise ValueError(
            f"{checkpoint_dir}: checkpoint was trained with another adapter configuration; differing fields "
            f"(checkpoint, current): {differences}"
        )
    state = {k: v.to(next(model.domain_adapter.parameters()).device) for k, v in load_file(weights_path).items()}
    load_adapter_state(model.domain_adapter, state, weights_path)


__all__ = ["DomainAdapterTrainer", "adapter_parameter_groups", "load_adapter_checkpoint"]
