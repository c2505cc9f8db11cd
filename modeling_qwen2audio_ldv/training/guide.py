# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The usage guide's training function: a plain PyTorch loop over ``DataLoader``s of processor outputs.

The guide's step 3, as written there::

    from modeling_qwen2audio_ldv import add_domain_adapter_to_model, train_with_domain_adapter
    from modeling_qwen2audio_ldv.data.collator import DataCollatorForQwen2AudioLDV

    model = add_domain_adapter_to_model(model, adapter_type="transformer", input_dim=1280, num_layers=2,
                                        num_heads=8, ff_dim=2048, dropout=0.1)
    collate_fn = DataCollatorForQwen2AudioLDV(processor, mode="train")     # rows {"audio", "text"} -> batches
    train_loader = DataLoader(train_dataset, batch_size=2, shuffle=True, collate_fn=collate_fn)
    val_loader = DataLoader(val_dataset, batch_size=2, collate_fn=collate_fn)
    model = train_with_domain_adapter(model=model, processor=processor, train_loader=train_loader,
                                      val_loader=val_loader, num_epochs=3, learning_rate=1e-4, device="mps")
    torch.save(model.domain_adapter.state_dict(), "ldv_domain_adapter.pt")

The loss is the adapter Trainer's own (:func:`~modeling_qwen2audio_ldv.training.objectives.objective_loss`: the
``lm``, ``distill`` and ``lm+distill`` objectives, prompt and padding masked), per batch, each batch normalised by
its own count (one process, no Trainer step to count over); the optimiser holds the adapter's parameters only
(:func:`~modeling_qwen2audio_ldv.training.trainer.adapter_parameter_groups`), with the guide's separate learning rate
for ``scale`` (its FAQ Q1: 10x the weights' rate). ``train_hf.py`` (the HF Trainer) is
the way for real runs: checkpoints, resume, several GPUs, the feature cache.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch

from .objectives import LossSettings, objective_loss, parse_objectives
from .trainer import adapter_parameter_groups

logger = logging.getLogger(__name__)


def batch_loss(model, batch: dict[str, Any], objective: str = "lm", settings: LossSettings | None = None
               ) -> torch.Tensor:
    """The adapter Trainer's loss of one collated batch outside the Trainer, for one process: the same objectives
    and masking, normalised by the batch's own count of supervised tokens / valid frames."""
    objectives = parse_objectives(objective)
    if any(o.needs_labels for o in objectives) and "labels" not in batch:
        raise ValueError(f"objective {objective!r} needs `labels` in every batch (the transcript's token "
                         f"ids, -100 on the prompt and padding): collate with "
                         f"DataCollatorForQwen2AudioLDV(processor, mode='train'); batch keys: {sorted(batch)}")
    loss, _ = objective_loss(model, batch, objectives, settings or LossSettings(), training=model.training)
    return loss


def _default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _to_device(batch: Any, device: torch.device, index: int) -> dict[str, Any]:
    if not hasattr(batch, "keys"):
        raise TypeError(f"batch {index} is a {type(batch).__name__}; the loaders must yield dicts of processor "
                        f"outputs (collate_fn=DataCollatorForQwen2AudioLDV(processor, mode='train'))")
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def train_with_domain_adapter(
    model,
    processor=None,
    train_loader=None,
    val_loader=None,
    num_epochs: int = 3,
    learning_rate: float = 1e-4,
    device: str | torch.device | None = None,
    *,
    scale_learning_rate: float | None = None,
    weight_decay: float = 0.01,
    objective: str = "lm",
    distill_weight: float = 1.0,
    distill_loss: str = "mse",
    max_grad_norm: float | None = 1.0,
    history: list[dict[str, float]] | None = None,
    progress: bool = True,
):
    """Train the adapter of ``model`` (the rest stays frozen) and return the model, as the guide's function.

    Args:
        model: a model with a domain adapter, e.g. from ``add_domain_adapter_to_model``; only its trainable
            parameters, which must all be the adapter's, are optimised.
        processor: the ``Qwen2AudioProcessor`` (taken for the guide's call; the loaders already yield its outputs).
        train_loader, val_loader: iterables of batches as ``DataCollatorForQwen2AudioLDV(processor,
            mode="train")`` builds them (``input_ids``, ``attention_mask``, ``input_features``,
            ``feature_attention_mask``, ``labels``; ``mic_input_features`` and ``mic_feature_attention_mask``
            for ``distill``). ``val_loader`` may be ``None``.
        num_epochs: passes over ``train_loader``.
        learning_rate: AdamW learning rate of the adapter's weights (the guide's 1e-4 for the 7B model).
        device: ``"cuda"``, ``"mps"``, ``"cpu"``; default: the first available, in that order.
        scale_learning_rate: learning rate of ``scale``; default 10x ``learning_rate`` (the guide's FAQ Q1).
        weight_decay: AdamW weight decay of the weight matrices (not of biases, norms or ``scale``).
        objective: ``lm`` (the guide's), ``distill`` or ``lm+distill`` (paired batches).
        distill_weight, distill_loss: as ``train_hf.py``'s flags.
        max_grad_norm: gradient clipping of the adapter's parameters (``None``: none).
        history: a list to append ``{"epoch", "train_loss", "val_loss"}`` to, one entry per epoch.
        progress: a progress bar per epoch.

    Returns:
        ``model``, on ``device``, in eval mode.
    """
    if train_loader is None:
        raise ValueError("train_loader is required")
    if num_epochs < 1:
        raise ValueError(f"num_epochs ({num_epochs}) must be >= 1")
    device = torch.device(device or _default_device())
    model.to(device)
    groups = adapter_parameter_groups(model, learning_rate,
                                      scale_learning_rate if scale_learning_rate is not None else 10 * learning_rate,
                                      weight_decay)
    optimizer = torch.optim.AdamW(groups)
    parameters = [p for group in groups for p in group["params"]]
    parse_objectives(objective)
    settings = LossSettings(distill_weight=distill_weight, distill_kind=distill_loss)

    def loss_of(batch: dict[str, Any]) -> torch.Tensor:
        return batch_loss(model, batch, objective, settings)

    for epoch in range(1, num_epochs + 1):
        train_loss = _train_epoch(model, train_loader, optimizer, parameters, loss_of, device, max_grad_norm,
                                  epoch, num_epochs, progress)
        entry = {"epoch": epoch, "train_loss": train_loss, "val_loss": math.nan}
        if val_loader is not None:
            entry["val_loss"] = evaluate_loss(model, val_loader, device, loss_of)
        message = f"epoch {epoch}/{num_epochs}: train loss {entry['train_loss']:.4f}"
        if val_loader is not None:
            message += f", val loss {entry['val_loss']:.4f}"
        print(message)
        logger.info("%s", message)
        if history is not None:
            history.append(entry)
    return model.eval()


def _train_epoch(model, loader, optimizer, parameters, loss_of: Callable[[dict[str, Any]], torch.Tensor],
                 device: torch.device, max_grad_norm: float | None, epoch: int, num_epochs: int, progress: bool
                 ) -> float:
    """Epoch ``epoch``: one pass over ``loader`` (train mode, one optimiser step per batch); returns the mean batch
    loss."""
    from tqdm.auto import tqdm

    model.train()
    total, batches = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}/{num_epochs}", disable=not progress)
    for index, batch in enumerate(bar):
        loss = loss_of(_to_device(batch, device, index))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"epoch {epoch}, batch {index}: the loss is {loss.item()}; lower the "
                                     f"learning rate (or check the batch for NaN/Inf audio)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        optimizer.step()
        total, batches = total + loss.item(), batches + 1
        bar.set_postfix(loss=f"{loss.item():.4f}")
    if batches == 0:
        raise ValueError("train_loader yielded no batches")
    return total / batches


@torch.no_grad()
def evaluate_loss(model, loader, device: str | torch.device | None = None,
                  loss_of: Callable[[dict[str, Any]], torch.Tensor] | None = None, objective: str = "lm") -> float:
    """Mean loss over ``loader``'s batches (eval mode, no gradients); ``loss_of``: batch -> loss (default: the
    ``objective``'s, :func:`batch_loss`)."""
    device = torch.device(device or next(model.parameters()).device)
    if loss_of is None:
        parse_objectives(objective)

        def loss_of(batch: dict[str, Any]) -> torch.Tensor:
            return batch_loss(model, batch, objective)

    model.eval()
    losses = [loss_of(_to_device(batch, device, index)).item() for index, batch in enumerate(loader)]
    if not losses:
        raise ValueError("val_loader yielded no batches")
    return sum(losses) / len(losses)


__all__ = ["batch_loss", "evaluate_loss", "train_with_domain_adapter"]
