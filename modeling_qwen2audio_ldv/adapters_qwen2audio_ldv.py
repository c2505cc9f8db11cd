# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Domain adapter layers: the modules that map audio-encoder features ``(batch, frames, d_model)`` to the same shape.

Each adapter type computes a correction ``delta`` from its input; how the correction merges with the input (the
gated, scaled residual ``y = x + scale * gate(x) * delta`` on the valid frames, padding left as it is) is the
:class:`ResidualAddStrategy`, shared by every type. A new adapter type is a subclass of :class:`DomainAdapter`
with ``compute_delta`` and ``zero_output``, listed in :data:`ADAPTER_CLASSES` (and its name in the
configuration's ``ADAPTER_TYPES``). The ``lora`` type is the exception that sits elsewhere: LoRA inside the audio
tower's own projections (:class:`~.lora_qwen2audio_ldv.LoRADomainAdapter`, built with ``peft``), listed here too,
with no correction of its own to merge.

This file travels to the Hub with every saved adapter (``trust_remote_code``): it imports only torch, transformers
and, relatively, the configuration file.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .configuration_qwen2audio_ldv import ADAPTER_TYPES, DomainAdapterConfig
from .lora_qwen2audio_ldv import LoRADomainAdapter


@dataclass
class DomainAdapterOutput(ModelOutput):
    """Output of a domain adapter when details are requested.

    Args:
        hidden_states: adapted features ``(batch, frames, d_model)``.
        attentions: one ``(batch, heads, frames, frames)`` map per layer (transformer adapter), over the valid
            frames of the batch (``frames`` = longest valid length).
        gate: gate values ``(batch, frames, d_model)`` in (0, 1), ``None`` without a gate.
        output_lengths: valid frames per clip of ``hidden_states`` (the model's audio-only call).
    """

    hidden_states: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    gate: torch.Tensor | None = None
    output_lengths: torch.LongTensor | None = None



def _sinusoidal_positions(length: int, dim: int, device, dtype) -> torch.Tensor:
    """Sinusoidal position encoding ``(length, dim)`` (Vaswani et al., 2017)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table.to(dtype)


def _trim_to_valid(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None):
    """Cut ``(B, T, D)`` features to the batch's longest valid length; returns (trimmed, mask (B, L) bool)."""
    batch, frames, _ = hidden_states.shape
    if attention_mask is None:
        return hidden_states, torch.ones(batch, frames, dtype=torch.bool, device=hidden_states.device)
    mask = attention_mask.to(device=hidden_states.device, dtype=torch.bool)
    if mask.shape != (batch, frames):
        raise ValueError(f"attention_mask must have shape {(batch, frames)} (batch, frames), got {tuple(mask.shape)}")
    valid = int(mask.sum(-1).max().item()) if batch else 0
    return hidden_states[:, :valid], mask[:, :valid]


class DomainAdapterLayer(nn.Module):
    """Pre-LN transformer encoder layer (self-attention + GELU feed-forward) over ``(batch, frames, dim)``."""

    def __init__(self, dim: int, num_heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ff_dim)
        self.fc2 = nn.Linear(ff_dim, dim)

    def forward(self, hidden_states: torch.Tensor, key_mask: torch.Tensor, output_attentions: bool = False):
        """``key_mask`` ``(batch, 1, 1, frames)`` bool, True where a frame may be attended to."""
        batch, frames, dim = hidden_states.shape
        residual = hidden_states
        qkv = self.qkv(self.self_attn_layer_norm(hidden_states))
        q, k, v = qkv.view(batch, frames, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if output_attentions:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
            weights = scores.softmax(-1)
            attn = F.dropout(weights, p=dropout_p, training=self.training) @ v
        else:
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)
        attn = attn.transpose(1, 2).reshape(batch, frames, dim)
        hidden_states = residual + F.dropout(self.out_proj(attn), p=self.dropout, training=self.training)
        residual = hidden_states
        hidden_states = self.fc2(F.dropout(F.gelu(self.fc1(self.final_layer_norm(hidden_states))), p=self.dropout,
                                           training=self.training))
        hidden_states = residual + F.dropout(hidden_states, p=self.dropout, training=self.training)
        return hidden_states, weights


class ResidualAddStrategy:
    """How an adapter's correction merges with its input (NeMo's residual-add adapter strategy, with a gate).

    ``y = x + scale * (gate * delta)`` (``gate`` optional) on the valid frames, in the adapter's dtype, returned in
    the input's device and dtype; padded frames (and frames past the batch's longest valid length) are the input's.
    """

    def __call__(self, hidden_states: torch.Tensor, x: torch.Tensor, delta: torch.Tensor,
                 gate: torch.Tensor | None, scale: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``hidden_states`` ``(batch, frames, d)`` the adapter's input; ``x`` ``(batch, valid_frames, d)`` its trimmed
        copy in the adapter's dtype, ``delta`` the correction of ``x``, ``gate`` in (0, 1) or ``None``, ``valid``
        ``(batch, valid_frames)`` bool."""
        if gate is not None:
            delta = gate * delta
        adapted = (x + scale * delta).to(device=hidden_states.device, dtype=hidden_states.dtype)
        adapted = torch.where(valid[..., None], adapted, hidden_states[:, : adapted.shape[1]])
        return torch.cat([adapted, hidden_states[:, adapted.shape[1]:]], dim=1)


class DomainAdapter(nn.Module):
    """Base of the adapter types: the gate, the learnable ``scale``, padding handling and the residual merge
    (:class:`ResidualAddStrategy`); a subclass computes the correction (``compute_delta``) and says how to zero it
    (``zero_output``)."""

    merge_strategy = ResidualAddStrategy()

    def __init__(self, config: DomainAdapterConfig, input_dim: int):
        super().__init__()
        config.check_input_dim(input_dim)
        self.config = config
        self.input_dim = input_dim
        self.gate = nn.Sequential(nn.Linear(input_dim, input_dim), nn.Sigmoid()) if config.use_gate else None
        self.scale = nn.Parameter(torch.full((1,), float(config.scale_init)))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Xavier-uniform Linear weights, zero biases, unit LayerNorms, ``scale = scale_init``; with ``zero_init``
        the last affine map of the correction starts at zero, so the adapter starts as the identity."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.config.zero_init:
            self.zero_output()
        nn.init.constant_(self.scale, float(self.config.scale_init))

    def zero_output(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute_delta(self, hidden_states, valid_mask, output_attentions):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_gate: bool = False,
    ) -> torch.Tensor | DomainAdapterOutput:
        """Adapt encoder features.

        Args:
            hidden_states: ``(batch, frames, d_model)`` audio-encoder output.
            attention_mask: ``(batch, frames)``, 1 on valid frames, 0 on padding; ``None`` = all valid. The
                adapter computes over the batch's longest valid length only; padded frames are returned unchanged
                and never influence valid ones.
            output_attentions, output_gate: return a [`DomainAdapterOutput`] with the attention maps / gate values.

        Returns:
            ``(batch, frames, d_model)`` in the input's dtype, or a [`DomainAdapterOutput`] when details are asked.
        """
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.input_dim:
            raise ValueError(
                f"domain adapter expects features of shape (batch, frames, {self.input_dim}), "
                f"got {tuple(hidden_states.shape)}"
            )
        x, valid = _trim_to_valid(hidden_states, attention_mask)
        # the adapter computes on its own device and dtype (float32 on a bf16 base, wherever device_map put it)
        x, valid_here = x.to(device=self.scale.device, dtype=self.scale.dtype), valid.to(self.scale.device)
        delta, attentions = self.compute_delta(x, valid_here, output_attentions)
        gate = self.gate(x) if self.gate is not None else None
        output = self.merge_strategy(hidden_states, x, delta, gate, self.scale, valid)
        if output_attentions or output_gate:
            return DomainAdapterOutput(hidden_states=output, attentions=attentions, gate=gate)
        return output


class TransformerDomainAdapter(DomainAdapter):
    """``y = x + scale * sigmoid(gate(x)) * LayerNorm(Linear(layers(x [+ pos])))``, masked by padding.

    ``layers`` are ``num_layers`` pre-LN transformer encoder layers (self-attention through
    ``scaled_dot_product_attention``, GELU feed-forward). Parameter counts at d_model 1280 with the gate:
    lightweight 12.47M, standard 26.90M, heavy 71.50M.
    """

    def __init__(self, config: DomainAdapterConfig, input_dim: int):
        super().__init__(config, input_dim)
        self.layers = nn.ModuleList(
            DomainAdapterLayer(input_dim, config.num_heads, config.ff_dim, config.dropout)
            for _ in range(config.num_layers)
        )
        self.output_projection = nn.Linear(input_dim, input_dim)
        self.output_norm = nn.LayerNorm(input_dim)
        self.reset_parameters()

    def zero_output(self) -> None:
        nn.init.zeros_(self.output_norm.weight)
        nn.init.zeros_(self.output_norm.bias)

    def compute_delta(self, x, valid, output_attentions):
        h = x
        if self.config.use_position_encoding:
            h = h + _sinusoidal_positions(x.shape[1], self.input_dim, x.device, x.dtype)
        key_mask = valid.clone()
        key_mask[:, 0] = True  # a clip with no valid frame must not turn softmax into NaN; its output is discarded
        key_mask = key_mask[:, None, None, :]
        attentions = []
        for layer in self.layers:
            h, weights = layer(h, key_mask, output_attentions)
            attentions.append(weights)
        delta = self.output_norm(self.output_projection(h))
        return delta, (tuple(attentions) if output_attentions else None)


class MLPDomainAdapter(DomainAdapter):
    """Per-frame bottleneck: ``y = x + scale * [gate(x) *] up(GELU(down(LayerNorm(x))))``.

    About 0.66M parameters at d_model 1280 with ``bottleneck_dim`` 256 and no gate.
    """

    def __init__(self, config: DomainAdapterConfig, input_dim: int):
        super().__init__(config, input_dim)
        self.norm = nn.LayerNorm(input_dim)
        self.down = nn.Linear(input_dim, config.bottleneck_dim)
        self.up = nn.Linear(config.bottleneck_dim, input_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.reset_parameters()

    def zero_output(self) -> None:
        nn.init.zeros_(self.up.weight)

    def compute_delta(self, x, valid, output_attentions):
        return self.up(self.dropout(F.gelu(self.down(self.norm(x))))), None


#: The registry of adapter types: ``DomainAdapterConfig.adapter_type`` -> module class (``"none"``: no module).
#: ``lora`` is built from the tower's shape too (:func:`build_domain_adapter`).
ADAPTER_CLASSES: dict[str, type[nn.Module]] = {"transformer": TransformerDomainAdapter, "mlp": MLPDomainAdapter,
                                               "lora": LoRADomainAdapter}
if set(ADAPTER_CLASSES) | {"none"} != set(ADAPTER_TYPES):  # pragma: no cover - a new type registered in one place only
    raise ImportError(f"adapter types {sorted(ADAPTER_CLASSES)} + none differ from the configuration's {ADAPTER_TYPES}")


def build_domain_adapter(config: DomainAdapterConfig, input_dim: int, encoder_layers: int | None = None,
                         ffn_dim: int | None = None) -> nn.Module | None:
    """The adapter module for ``config`` in float32 (``None`` for ``adapter_type="none"``); ``encoder_layers``: the
    tower's layer count, the largest ``encoder_layer`` an adapter inside it may have; ``ffn_dim``: the tower's
    feed-forward width (``lora`` needs both: its LoRA layers take the tower's projection shapes)."""
    if config.input_dim is not None and config.input_dim != input_dim:
        raise ValueError(f"adapter `input_dim` ({config.input_dim}) differs from the encoder's d_model ({input_dim})")
    if config.encoder_layer is not None and encoder_layers is not None and config.encoder_layer > encoder_layers:
        raise ValueError(f"adapter `encoder_layer` ({config.encoder_layer}) is past the audio tower's "
                         f"{encoder_layers} layers (0..{encoder_layers}, or None for after the tower)")
    if config.adapter_type == "none":
        return None
    if config.adapter_type == "lora":
        if encoder_layers is None or ffn_dim is None:
            raise ValueError("a lora adapter needs the audio tower's layer count and feed-forward width "
                             "(build_domain_adapter(..., encoder_layers=..., ffn_dim=...))")
        return LoRADomainAdapter(config, input_dim, encoder_layers, ffn_dim).float()
    # float32 whatever the default dtype (a bf16/fp16 base is built under it): the adapters are in the model's
    # `_keep_in_fp32_modules_strict`, whose modules transformers expects to be float32 from construction on
    return ADAPTER_CLASSES[config.adapter_type](config, input_dim).float()


__all__ = [
    "ADAPTER_CLASSES",
    "DomainAdapter",
    "DomainAdapterLayer",
    "DomainAdapterOutput",
    "LoRADomainAdapter",
    "MLPDomainAdapter",
    "ResidualAddStrategy",
    "TransformerDomainAdapter",
    "build_domain_adapter",
]
