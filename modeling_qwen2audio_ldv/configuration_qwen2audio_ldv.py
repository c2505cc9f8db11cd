# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Configuration of Qwen2-Audio with an LDV domain adapter.

This file travels to the Hub with every saved adapter (``trust_remote_code``): it imports only
``transformers`` and the standard library.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import Qwen2AudioConfig

ADAPTER_TYPES = ("transformer", "mlp", "lora", "none")

#: The audio tower's (Whisper-style encoder layer's) linear projections a ``lora`` adapter may target.
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

# Presets of the original guide. Parameter counts at d_model 1280 (the real Qwen2-Audio encoder),
# counted from the modules built here, with the gate:
#   lightweight 12,469,505   standard 26,902,017   heavy 71,501,825   mlp 659,457
# (the guide's ~8M / ~30M / ~60M were estimates).
ADAPTER_PRESETS: dict[str, dict[str, Any]] = {
    "lightweight": {"adapter_type": "transformer", "num_layers": 1, "num_heads": 4, "ff_dim": 1024, "dropout": 0.1},
    "standard": {"adapter_type": "transformer", "num_layers": 2, "num_heads": 8, "ff_dim": 2048, "dropout": 0.1},
    "heavy": {"adapter_type": "transformer", "num_layers": 4, "num_heads": 16, "ff_dim": 4096, "dropout": 0.15},
    "mlp": {"adapter_type": "mlp", "bottleneck_dim": 256, "dropout": 0.1, "use_gate": False},
}


@dataclass
class DomainAdapterConfig:
    """Hyper-parameters of one domain adapter.

    The adapter maps audio-encoder features ``(batch, frames, d_model)`` to the same shape:
    ``y = x + scale * gate(x) * LayerNorm(Linear(layers(x)))`` for ``transformer`` and
    ``y = x + scale * gate(x) * up(GELU(down(LayerNorm(x))))`` for ``mlp``. A ``lora`` adapter is no module
    between layers: it adds low-rank updates ``W x + (alpha / r) * B A x`` (built with ``peft``) to the tower's own
    attention and feed-forward projections in the layers from ``encoder_layer`` on.

    Args:
        adapter_type: ``"transformer"`` (self-attention over time), ``"mlp"`` (per-frame bottleneck), ``"lora"``
            (low-rank updates of the audio tower's projections, needs the ``peft`` package) or ``"none"`` (no
            adapter: the model is exactly the base model).
        input_dim: feature width; ``None`` takes ``audio_config.d_model`` of the base model (1280 for Qwen2-Audio).
        num_layers: pre-LN transformer layers (transformer only). More layers model longer-range distortion.
        num_heads: attention heads; must divide ``input_dim``.
        ff_dim: hidden width of each layer's feed-forward block.
        dropout: dropout in attention, feed-forward and bottleneck; 0.1 for a few thousand clips. For ``lora``:
            the dropout on each adapted projection's input to its LoRA path (peft's ``lora_dropout``).
        use_gate: multiply the correction by ``sigmoid(Linear(x))`` per frame and channel, so the adapter can
            leave frames that need no change alone.
        use_position_encoding: add a sinusoidal position encoding before the layers. Off by default: the
            encoder's features already carry position.
        scale_init: initial value of the learnable scalar ``scale`` that multiplies the correction.
        zero_init: start the output LayerNorm's weight and bias (transformer) or the up-projection (mlp) at
            zero, so the adapted model starts exactly equal to the base model. Gradients still flow: the first
            step moves the zeroed affine and the rest follows.
        bottleneck_dim: hidden width of the ``mlp`` adapter.
        encoder_layer: where the adapter sits. ``None`` (default, the guide's placement): on the audio tower's
            output, before the projector. An integer ``k``: inside the frozen tower, on its hidden states after
            its first ``k`` layers (``0``: after the convolutions and position embeddings; the tower's layer count:
            after its last layer, before its pooling and final LayerNorm); the tower's remaining layers then run
            on the adapted states. Inside the tower the adapter sees twice the output frame rate, and training
            back-propagates through the remaining frozen layers (a feature cache then holds the states after
            layer ``k``). For ``lora``: the first layer that gets LoRA (layers ``k`` to the last are adapted;
            ``None`` is read as ``0``, every layer); a feature cache holds the states after layer ``k`` too.
        lora_rank: rank ``r`` of each LoRA update (``lora`` only).
        lora_alpha: LoRA's ``alpha``; the update is scaled by ``alpha / r`` (``lora`` only).
        lora_target_modules: which projections of each adapted tower layer get LoRA, among ``q_proj``, ``k_proj``,
            ``v_proj``, ``out_proj`` (self-attention) and ``fc1``, ``fc2`` (feed-forward) (``lora`` only). With
            ``zero_init`` (default) LoRA's ``B`` starts at zero (peft's default), so the adapted model starts equal
            to the base; without it ``B`` is drawn like ``A`` (as peft's ``init_lora_weights=False``).
    """

    adapter_type: str = "transformer"
    input_dim: int | None = None
    num_layers: int = 2
    num_heads: int = 8
    ff_dim: int = 2048
    dropout: float = 0.1
    use_gate: bool = True
    use_position_encoding: bool = False
    scale_init: float = 0.1
    zero_init: bool = True
    bottleneck_dim: int = 256
    encoder_layer: int | None = None
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_target_modules: list[str] = dataclasses.field(default_factory=lambda: list(LORA_TARGET_MODULES))

    def __post_init__(self):
        if self.adapter_type not in ADAPTER_TYPES:
            raise ValueError(f"`adapter_type` ({self.adapter_type!r}) must be one of {ADAPTER_TYPES}")
        for name in ("num_layers", "num_heads", "ff_dim", "bottleneck_dim", "lora_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` ({value!r}) must be a positive integer")
        if self.encoder_layer is not None and (isinstance(self.encoder_layer, bool)
                                               or not isinstance(self.encoder_layer, int) or self.encoder_layer < 0):
            raise ValueError(f"`encoder_layer` ({self.encoder_layer!r}) must be None (after the audio tower) or a "
                             "layer count >= 0 (inside it)")
        if self.input_dim is not None and (not isinstance(self.input_dim, int) or self.input_dim < 1):
            raise ValueError(f"`input_dim` ({self.input_dim!r}) must be a positive integer or None")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"`dropout` ({self.dropout!r}) must be in [0, 1)")
        for name in ("use_gate", "use_position_encoding", "zero_init"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` ({getattr(self, name)!r}) must be a bool")
        if not isinstance(self.scale_init, (int, float)) or isinstance(self.scale_init, bool):
            raise ValueError(f"`scale_init` ({self.scale_init!r}) must be a number")
        if not isinstance(self.lora_alpha, (int, float)) or isinstance(self.lora_alpha, bool) or self.lora_alpha <= 0:
            raise ValueError(f"`lora_alpha` ({self.lora_alpha!r}) must be a positive number")
        targets = self.lora_target_modules
        if isinstance(targets, str) or not isinstance(targets, (list, tuple)) or not targets \
                or any(t not in LORA_TARGET_MODULES for t in targets) or len(set(targets)) != len(targets):
            raise ValueError(f"`lora_target_modules` ({targets!r}) must be a non-empty list of distinct names among "
                             f"{list(LORA_TARGET_MODULES)}")
        self.lora_target_modules = list(targets)
        if self.adapter_type == "lora" and self.encoder_layer is None:
            self.encoder_layer = 0  # LoRA sits inside the tower: on every layer unless told where to start
        if self.input_dim is not None:
            self.check_input_dim(self.input_dim)

    def check_input_dim(self, input_dim: int) -> None:
        """Raise if this adapter cannot run on features of width ``input_dim``."""
        if self.adapter_type == "transformer" and input_dim % self.num_heads != 0:
            raise ValueError(f"`num_heads` ({self.num_heads}) must divide `input_dim` ({input_dim})")
        if self.use_position_encoding and input_dim % 2 != 0:
            raise ValueError(f"`use_position_encoding` needs an even `input_dim` (got {input_dim})")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "DomainAdapterConfig":
        """One of ``lightweight``, ``standard``, ``heavy``, ``mlp``, with optional field overrides."""
        if name not in ADAPTER_PRESETS:
            raise ValueError(f"unknown adapter preset {name!r}; known presets: {sorted(ADAPTER_PRESETS)}")
        return cls(**{**ADAPTER_PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DomainAdapterConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown domain adapter config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)


@strict
class Qwen2AudioLDVConfig(Qwen2AudioConfig):
    r"""Qwen2-Audio configuration plus an LDV domain adapter between the audio encoder and the projector.

    domain_adapter (`dict`, *optional*):
        The [`DomainAdapterConfig`] as a dict; ``None`` means the default (``standard``-shaped, zero-init).
    base_model_name_or_path (`str`, *optional*):
        Hub id or directory of the frozen base model. When set, ``save_pretrained`` writes the adapter only and
        ``from_pretrained`` loads the base from here first.
    base_model_revision (`str`, *optional*):
        Revision (branch, tag or commit) of the base model to load.
    trim_audio_tower (`bool`, *optional*, defaults to `True`):
        Run the frozen audio encoder on the batch's longest valid length instead of the padded 30 s. The valid
        frames' outputs equal the padded pass (the stock model masks padding out of attention).

    Example:

    ```python
    >>> from modeling_qwen2audio_ldv import DomainAdapterConfig, Qwen2AudioLDVConfig
    >>> config = Qwen2AudioLDVConfig(domain_adapter=DomainAdapterConfig.preset("lightweight").to_dict())
    ```
    """

    model_type = "qwen2_audio_ldv"

    domain_adapter: dict | None = None
    base_model_name_or_path: str | None = None
    base_model_revision: str | None = None
    trim_audio_tower: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        adapter = DomainAdapterConfig.from_dict(self.domain_adapter or {})
        adapter.check_input_dim(adapter.input_dim or self.audio_config.d_model)
        if adapter.input_dim is not None and adapter.input_dim != self.audio_config.d_model:
            raise ValueError(
                f"domain adapter `input_dim` ({adapter.input_dim}) differs from the audio encoder's "
                f"`d_model` ({self.audio_config.d_model})"
            )
        self.domain_adapter = adapter.to_dict()

    @property
    def adapter_config(self) -> DomainAdapterConfig:
        """The domain adapter's hyper-parameters as a [`DomainAdapterConfig`]."""
        return DomainAdapterConfig.from_dict(self.domain_adapter)

    @classmethod
    def from_base_config(
        cls, base_config: Qwen2AudioConfig, adapter_config: DomainAdapterConfig | None = None, **kwargs: Any
    ) -> "Qwen2AudioLDVConfig":
        """Wrap a stock Qwen2-Audio config, keeping every base field."""
        values = {k: v for k, v in base_config.to_dict().items() if k not in ("model_type", "auto_map")}
        values.update(kwargs)
        if adapter_config is not None:
            values["domain_adapter"] = adapter_config.to_dict()
        return cls(**values)


__all__ = ["ADAPTER_PRESETS", "LORA_TARGET_MODULES", "DomainAdapterConfig", "Qwen2AudioLDVConfig"]
