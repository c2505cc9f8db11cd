# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Qwen2-Audio with a trainable domain adapter between the audio encoder and the projector.

```
input_features (B, n_mels, 3000) -> audio_tower (frozen) -> (B, T, d_model), T <= 750
  -> domain_adapter (trainable)  -> (B, T, d_model), padding-aware, same shape
  -> multi_modal_projector (frozen) -> replaces the <|AUDIO|> tokens -> language model (frozen)
```

This file travels to the Hub with every saved adapter (``trust_remote_code``): it imports only torch,
transformers, safetensors (a transformers dependency) and, relatively, the configuration file.

Integration: ``Qwen2AudioModel.forward`` runs tower and projector inline with no hook in between, so this
class owns the audio path only (tower -> adapter -> projector -> merge into the token embeddings) and hands
``inputs_embeds`` to the parent's ``forward``, which then runs just the language model and the loss. The
base weight names are unchanged; the adapter's parameters all start with ``domain_adapter.``.
"""

import contextlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, GenerationMixin, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioCausalLMOutputWithPast
from transformers.utils import ModelOutput, cached_file
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_qwen2audio_ldv import ADAPTER_PRESETS, DomainAdapterConfig, Qwen2AudioLDVConfig

try:  # transformers >= 5: legacy checkpoint keys are renamed by model type, which skips custom classes.
    from transformers.conversion_mapping import (
        get_checkpoint_conversion_mapping,
        register_checkpoint_conversion_mapping,
    )
except ImportError:  # pragma: no cover - older transformers load legacy keys by other means
    get_checkpoint_conversion_mapping = register_checkpoint_conversion_mapping = None

#: Every trainable parameter of the adapted model starts with this prefix (freeze, count, save and load by it).
DOMAIN_ADAPTER_PREFIX = "domain_adapter."
#: File of an adapter-only checkpoint (not ``adapter_config.json``/``adapter_model.*``: those names make
#: transformers redirect the repo to PEFT).
ADAPTER_WEIGHTS_NAME = "domain_adapter.safetensors"
#: The name of the adapter a model is built with.
DEFAULT_ADAPTER_NAME = "default"
#: ``audio_domain`` values with a fixed meaning: ``mic`` bypasses every adapter, ``ldv`` uses the active one.
MIC_DOMAIN, LDV_DOMAIN = "mic", "ldv"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_CODE_FILES = ("configuration_qwen2audio_ldv.py", "modeling_qwen2audio_ldv.py")
_AUTO_MAP = {
    "AutoConfig": "configuration_qwen2audio_ldv.Qwen2AudioLDVConfig",
    "AutoModelForSeq2SeqLM": "modeling_qwen2audio_ldv.Qwen2AudioLDVForConditionalGeneration",
    "AutoModelForMultimodalLM": "modeling_qwen2audio_ldv.Qwen2AudioLDVForConditionalGeneration",
}


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


@dataclass
class Qwen2AudioLDVAudioFeaturesOutput(BaseModelOutputWithPooling):
    """Output of [`Qwen2AudioLDVForConditionalGeneration.get_audio_features`] (the transformers 5 audio-features
    contract: a ``BaseModelOutputWithPooling``, a tuple with ``return_dict=False``).

    Args:
        last_hidden_state: adapted encoder features ``(num_audios, frames, d_model)`` (the projector's input).
        pooler_output: projected features ``(num_audios, frames, text_hidden)``, the embeddings that replace the
            ``<|AUDIO|>`` tokens (valid frames first).
        hidden_states, attentions: the audio tower's, when ``output_hidden_states`` / ``output_attentions``.
        audio_output_lengths: valid frames per audio ``(num_audios,)``.
    """

    audio_output_lengths: torch.LongTensor | None = None


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


class _DomainAdapterBase(nn.Module):
    """Shared residual/gate/scale/padding logic of the adapters."""

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
        if gate is not None:
            delta = gate * delta
        adapted = (x + self.scale * delta).to(device=hidden_states.device, dtype=hidden_states.dtype)
        adapted = torch.where(valid[..., None], adapted, hidden_states[:, : adapted.shape[1]])
        output = torch.cat([adapted, hidden_states[:, adapted.shape[1]:]], dim=1)
        if output_attentions or output_gate:
            return DomainAdapterOutput(hidden_states=output, attentions=attentions, gate=gate)
        return output


class TransformerDomainAdapter(_DomainAdapterBase):
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


class MLPDomainAdapter(_DomainAdapterBase):
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


_ADAPTER_CLASSES = {"transformer": TransformerDomainAdapter, "mlp": MLPDomainAdapter}


def build_domain_adapter(config: DomainAdapterConfig, input_dim: int, encoder_layers: int | None = None
                         ) -> nn.Module | None:
    """The adapter module for ``config`` (``None`` for ``adapter_type="none"``); ``encoder_layers``: the tower's
    layer count, the largest ``encoder_layer`` an adapter inside it may have."""
    if config.input_dim is not None and config.input_dim != input_dim:
        raise ValueError(f"adapter `input_dim` ({config.input_dim}) differs from the encoder's d_model ({input_dim})")
    if config.encoder_layer is not None and encoder_layers is not None and config.encoder_layer > encoder_layers:
        raise ValueError(f"adapter `encoder_layer` ({config.encoder_layer}) is past the audio tower's "
                         f"{encoder_layers} layers (0..{encoder_layers}, or None for after the tower)")
    if config.adapter_type == "none":
        return None
    return _ADAPTER_CLASSES[config.adapter_type](config, input_dim)


def execution_device(module: nn.Module) -> torch.device:
    """Where ``module`` computes: the device of an accelerate hook (``device_map`` with offloading, whose weights
    wait on the ``meta`` device until the hook loads them), else the device of its first weight."""
    hook = getattr(module, "_hf_hook", None)
    for candidate in (hook, *getattr(hook, "hooks", ())):
        device = getattr(candidate, "execution_device", None)
        if device is not None:
            return torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    return next(module.parameters()).device


def _frame_attention_mask(audio_tower: nn.Module, frame_lengths: torch.Tensor, frames: int, device) -> torch.Tensor:
    """The stock bidirectional mask over ``frames`` convolution frames, ``frame_lengths`` valid per clip."""
    frame_mask = torch.arange(frames, device=frame_lengths.device)[None, :] < frame_lengths[:, None]
    dummy = torch.zeros((frame_lengths.shape[0], frames, 1), dtype=audio_tower.conv1.weight.dtype, device=device)
    return create_bidirectional_mask(config=audio_tower.config, inputs_embeds=dummy, attention_mask=frame_mask.long())


def _run_tower_layers(audio_tower: nn.Module, hidden: torch.Tensor, attention_mask, start: int = 0,
                      stop: int | None = None) -> torch.Tensor:
    for layer in audio_tower.layers[start:stop]:
        if audio_tower.training and audio_tower.layerdrop > 0.0 and torch.rand([]) < audio_tower.layerdrop:
            continue
        hidden = layer(hidden, attention_mask)
    return hidden


def pooled_lengths(frame_lengths: torch.Tensor) -> torch.Tensor:
    """Valid output frames of the tower for ``frame_lengths`` valid frames inside it (its 2x average pooling)."""
    return (frame_lengths - 2) // 2 + 1


def _check_layer(audio_tower: nn.Module, layer: int) -> None:
    if not 0 <= layer <= len(audio_tower.layers):
        raise ValueError(f"encoder_layer ({layer}) must be between 0 and the tower's {len(audio_tower.layers)} layers")


def _tower_lengths(audio_tower: nn.Module, input_features: torch.Tensor, feature_attention_mask: torch.Tensor,
                   trim: bool) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Valid frames inside the tower and at its output per clip, the mel frames the pass uses (the batch's longest
    valid length plus two when trimming) and the padded mel frames."""
    mel_lengths = feature_attention_mask.sum(-1)
    frame_lengths, output_lengths = audio_tower._get_feat_extract_output_lengths(mel_lengths)
    batch, _, mel_frames = input_features.shape
    expected = audio_tower.config.max_source_positions * audio_tower.conv1.stride[0] * audio_tower.conv2.stride[0]
    if mel_frames != expected:
        raise ValueError(f"input_features must have {expected} mel frames (the processor pads to it), got {mel_frames}")
    used = min(mel_frames, 2 * int(frame_lengths.max().item()) + 2) if trim and batch else mel_frames
    return frame_lengths, output_lengths, used, mel_frames


def encode_audio_to_layer(
    audio_tower: nn.Module,
    input_features: torch.Tensor,
    feature_attention_mask: torch.Tensor,
    layer: int,
    trim: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tower's hidden states after its first ``layer`` layers, where an adapter inside the tower reads them.

    Returns ``(batch, frames, d_model)`` at the tower's internal frame rate (two per output frame; ``frames`` is the
    batch's longest valid length plus one when ``trim``, else the padded 1500) and the valid frames per clip
    ``(batch,)``. The same operations as the first part of :func:`encode_audio`.
    """
    _check_layer(audio_tower, layer)
    frame_lengths, _, used, _ = _tower_lengths(audio_tower, input_features, feature_attention_mask, trim)
    conv_frames = (used - 1) // 2 + 1
    attention_mask = _frame_attention_mask(audio_tower, frame_lengths, conv_frames, input_features.device)
    features = input_features[:, :, :used].to(dtype=audio_tower.conv1.weight.dtype,
                                              device=execution_device(audio_tower.conv1))
    hidden = F.gelu(audio_tower.conv1(features))
    hidden = F.gelu(audio_tower.conv2(hidden)).permute(0, 2, 1)
    positions = torch.arange(conv_frames, device=execution_device(audio_tower.embed_positions))
    hidden = hidden + audio_tower.embed_positions(positions).to(hidden.device)  # == weight[:conv_frames], hooked
    hidden = F.dropout(hidden, p=audio_tower.dropout, training=audio_tower.training)
    return _run_tower_layers(audio_tower, hidden, attention_mask, 0, layer), frame_lengths


def finish_audio_tower(
    audio_tower: nn.Module, hidden: torch.Tensor, frame_lengths: torch.Tensor, layer: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rest of the tower from its hidden states after ``layer`` layers: the remaining layers, the 2x pooling
    and the final LayerNorm. Returns the tower's output ``(batch, frames // 2, d_model)`` and its valid lengths."""
    _check_layer(audio_tower, layer)
    frame_lengths = frame_lengths.to(hidden.device)
    attention_mask = _frame_attention_mask(audio_tower, frame_lengths, hidden.shape[1], hidden.device)
    hidden = _run_tower_layers(audio_tower, hidden.to(audio_tower.conv1.weight.dtype), attention_mask, layer)
    hidden = audio_tower.avg_pooler(hidden.permute(0, 2, 1)).permute(0, 2, 1)
    return audio_tower.layer_norm(hidden), pooled_lengths(frame_lengths)


def encode_audio(
    audio_tower: nn.Module,
    input_features: torch.Tensor,
    feature_attention_mask: torch.Tensor,
    trim: bool = True,
    adapt=None,
    adapt_after: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the Qwen2-Audio encoder; returns features ``(batch, frames, d_model)`` and valid lengths ``(batch,)``.

    ``trim=False`` is the stock pass over the padded ``max_source_positions * 2`` mel frames (3000 = 30 s), with
    the stock attention mask. ``trim=True`` runs the same layers and weights on the batch's longest valid mel
    length plus two frames (so the two convolutions see the same neighbours as in the padded pass), with position
    embeddings and the mask built for that length. The stock mask removes padded frames from every query's keys,
    so the valid frames' outputs are the same; the output then has fewer (padded) frames. The trimmed pass calls
    the tower's submodules (and reads the position table through its ``nn.Embedding``), so accelerate's hooks load
    offloaded weights (``device_map`` with ``cpu``/``disk`` offload) as in a normal forward.

    ``adapt(hidden, frame_lengths) -> hidden`` with ``adapt_after = k``: an adapter inside the tower, applied to
    the hidden states after its first ``k`` layers; the remaining layers then run on its output. The first ``k``
    layers run without autograd when none of their weights trains (they are frozen: nothing flows back into them).
    """
    if adapt is not None:
        if adapt_after is None:
            raise ValueError("encode_audio(adapt=...) needs adapt_after (the layer count the adapter follows)")
        prefix = [audio_tower.conv1, audio_tower.conv2, *audio_tower.layers[:adapt_after]]
        grad = torch.is_grad_enabled() and any(p.requires_grad for m in prefix for p in m.parameters())
        with torch.set_grad_enabled(grad):
            hidden, frame_lengths = encode_audio_to_layer(audio_tower, input_features, feature_attention_mask,
                                                          adapt_after, trim=trim)
        return finish_audio_tower(audio_tower, adapt(hidden, frame_lengths), frame_lengths, adapt_after)
    feat_lengths, output_lengths, used, mel_frames = _tower_lengths(audio_tower, input_features,
                                                                    feature_attention_mask, trim)
    if used == mel_frames:
        conv_frames = (used - 1) // 2 + 1
        attention_mask = _frame_attention_mask(audio_tower, feat_lengths, conv_frames, input_features.device)
        hidden = audio_tower(input_features, attention_mask=attention_mask).last_hidden_state
        return hidden, output_lengths
    layers = len(audio_tower.layers)
    hidden, frame_lengths = encode_audio_to_layer(audio_tower, input_features, feature_attention_mask, layers, trim)
    hidden, _ = finish_audio_tower(audio_tower, hidden, frame_lengths, layers)
    return hidden, output_lengths


def _is_pickle(path: str) -> bool:
    return str(path).lower().endswith(_PICKLE_SUFFIXES)


def _resolve_adapter_file(path_or_repo: str, **hub_kwargs) -> str:
    """Local path of an adapter's safetensors file from a file, a directory or a Hub repo."""
    path_or_repo = str(path_or_repo)
    if _is_pickle(path_or_repo):
        raise ValueError(
            f"{path_or_repo}: refusing to load a pickled adapter; only safetensors files are loaded "
            f"(convert with safetensors.torch.save_file)"
        )
    if os.path.isfile(path_or_repo):
        if not path_or_repo.endswith(".safetensors"):
            raise ValueError(f"{path_or_repo}: expected a .safetensors adapter file")
        return path_or_repo
    if os.path.isdir(path_or_repo):
        candidate = os.path.join(path_or_repo, ADAPTER_WEIGHTS_NAME)
        if os.path.isfile(candidate):
            return candidate
        pickles = sorted(p.name for p in Path(path_or_repo).iterdir() if _is_pickle(p.name))
        hint = f"; found only pickle files {pickles}, which are refused: only safetensors are loaded" if pickles else ""
        raise FileNotFoundError(f"{path_or_repo}: no {ADAPTER_WEIGHTS_NAME}{hint}")
    resolved = cached_file(path_or_repo, ADAPTER_WEIGHTS_NAME, _raise_exceptions_for_missing_entries=False, **hub_kwargs)
    if resolved is None:
        raise FileNotFoundError(f"{path_or_repo}: no {ADAPTER_WEIGHTS_NAME} in this repository")
    return resolved


def _has_adapter_file(path_or_repo: str, **hub_kwargs) -> bool:
    if os.path.isdir(str(path_or_repo)):
        return os.path.isfile(os.path.join(str(path_or_repo), ADAPTER_WEIGHTS_NAME))
    return cached_file(str(path_or_repo), ADAPTER_WEIGHTS_NAME, _raise_exceptions_for_missing_entries=False,
                       **hub_kwargs) is not None


def _load_adapter_state(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load an adapter's weights: every key present, none extra, every shape equal."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source}: adapter weights do not match the adapter configuration; "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise ValueError(f"{source}: adapter weight shapes differ (was it trained for another d_model?): {wrong}")
    module.load_state_dict(state, strict=True)


#: ``torch.save`` files that ``load_domain_adapter`` reads with ``torch.load(weights_only=True)`` (tensors only).
_TORCH_SAVE_SUFFIXES = (".pt", ".pth")


def _is_single_adapter_file(path: str) -> bool:
    """A file to load on its own: a ``.pt``/``.pth`` state dict, or a ``.safetensors`` file with no config.json."""
    if not os.path.isfile(path):
        return False
    lowered = path.lower()
    if lowered.endswith(_TORCH_SAVE_SUFFIXES):
        return True
    return lowered.endswith(".safetensors") and not os.path.isfile(os.path.join(os.path.dirname(path), "config.json"))


def load_torch_adapter_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The adapter state dict of a guide-style ``torch.save(model.domain_adapter.state_dict(), path)`` file.

    Read with ``torch.load(weights_only=True)``, so no code in the file runs; anything but a mapping of names to
    tensors is refused. Keys saved from the whole model (``domain_adapter.*``) are accepted without the prefix.
    """
    import pickle

    path = os.fspath(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as error:
        raise ValueError(f"{path}: refusing to load: not a plain state dict of tensors (torch.load with "
                         f"weights_only=True failed: {str(error).splitlines()[0]})") from error
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path}: expected a non-empty dict of tensors (torch.save(model.domain_adapter."
                         f"state_dict(), path)), got {type(state).__name__}")
    wrong = sorted(f"{k!r}: {type(v).__name__}" for k, v in state.items()
                   if not isinstance(k, str) or not isinstance(v, torch.Tensor))
    if wrong:
        raise ValueError(f"{path}: refusing to load: only tensors are accepted, found {wrong[:5]}")
    if all(k.startswith(DOMAIN_ADAPTER_PREFIX) for k in state):
        state = {k[len(DOMAIN_ADAPTER_PREFIX):]: v for k, v in state.items()}
    return dict(state)


def convert_pt_to_safetensors(path: str | os.PathLike, output: str | os.PathLike | None = None) -> str:
    """Convert a guide-style ``.pt`` adapter file to safetensors (default: the same name, ``.safetensors``).

    One line: ``convert_pt_to_safetensors("ldv_domain_adapter.pt")``. Tensors only (see
    :func:`load_torch_adapter_state`). Returns the written path.
    """
    state = load_torch_adapter_state(path)
    output = os.fspath(output) if output is not None else os.path.splitext(os.fspath(path))[0] + ".safetensors"
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, output, metadata={"format": "pt"})
    return output


def _as_adapter_config(config: "DomainAdapterConfig | dict | str | None") -> "DomainAdapterConfig | None":
    """A [`DomainAdapterConfig`] from itself, its dict or a preset name; ``None`` stays ``None``."""
    if isinstance(config, str):
        return DomainAdapterConfig.preset(config)
    if isinstance(config, dict):
        return DomainAdapterConfig.from_dict(config)
    return config


class Qwen2AudioLDVForConditionalGeneration(Qwen2AudioForConditionalGeneration, GenerationMixin):
    """Qwen2-Audio with a domain adapter between ``audio_tower`` and ``multi_modal_projector``.

    Extra ``forward``/``generate`` argument ``audio_domain`` (list of str, one per audio): ``"ldv"`` (default)
    adapts with the active adapter, ``"mic"`` bypasses the adapters, any loaded adapter's name uses that adapter.
    """

    config_class = Qwen2AudioLDVConfig
    config: Qwen2AudioLDVConfig
    # device_map: an adapter is never split over devices
    _no_split_modules = [*Qwen2AudioForConditionalGeneration._no_split_modules, "TransformerDomainAdapter",
                         "MLPDomainAdapter"]
    # quantisation (bitsandbytes & co. skip these modules) and the adapter's float32 weights on a bf16/fp16 base
    _keep_in_fp32_modules = ["domain_adapter", "domain_adapter_bank"]
    _keep_in_fp32_modules_strict = ["domain_adapter", "domain_adapter_bank"]
    def __init__(self, config: Qwen2AudioLDVConfig):
        super().__init__(config)
        self._init_domain_adapter_state()
        self.post_init()

    def _init_domain_adapter_state(self) -> None:
        self.domain_adapter = build_domain_adapter(self.config.adapter_config, self.config.audio_config.d_model,
                                                   self.config.audio_config.encoder_layers)
        self.domain_adapter_bank = nn.ModuleDict()  # named adapters that are loaded but not active
        self.domain_adapter_configs = {DEFAULT_ADAPTER_NAME: self.config.adapter_config}
        self.active_domain_adapter = DEFAULT_ADAPTER_NAME
        self._domain_adapter_enabled = True

    def _init_weights(self, module):
        if isinstance(module, _DomainAdapterBase):
            module.reset_parameters()
        else:
            super()._init_weights(module)

    # ----------------------------------------------------------------------------------------------- audio path
    def _adapter_for(self, name: str) -> nn.Module | None:
        if name in (LDV_DOMAIN, self.active_domain_adapter):
            return self.domain_adapter
        if name in self.domain_adapter_bank:
            return self.domain_adapter_bank[name]
        raise ValueError(f"unknown audio_domain {name!r}; known: {self._known_domains()}")

    def _known_domains(self) -> list[str]:
        return [MIC_DOMAIN, LDV_DOMAIN, self.active_domain_adapter, *self.domain_adapter_bank.keys()]

    def _domains(self, audio_domain: list[str] | str | None, num_audios: int) -> list[str]:
        """``audio_domain`` as one checked name per audio."""
        if audio_domain is None:
            audio_domain = [LDV_DOMAIN] * num_audios
        elif isinstance(audio_domain, str):
            audio_domain = [audio_domain] * num_audios
        if len(audio_domain) != num_audios:
            raise ValueError(f"audio_domain has {len(audio_domain)} entries but the batch has {num_audios} audios")
        for name in audio_domain:
            if name != MIC_DOMAIN:
                self._adapter_for(name)  # raises on unknown names before any work
        return list(audio_domain)

    def _routed_encoder_layer(self, audio_domain: list[str] | str | None, num_audios: int) -> int | None:
        """Where the adapters this batch is routed to sit: ``None`` after the tower (or when no adapter runs), else
        the layer count inside the tower (``DomainAdapterConfig.encoder_layer``)."""
        domains = self._domains(audio_domain, num_audios)
        if not self._domain_adapter_enabled:
            return None
        adapters = [self._adapter_for(name) for name in set(domains) if name != MIC_DOMAIN]
        layers = {adapter.config.encoder_layer for adapter in adapters if adapter is not None}
        if len(layers) > 1:
            raise ValueError(f"audio_domain {sorted(set(domains))} routes one batch to adapters at different places "
                             f"(encoder_layer {sorted(layers, key=str)}); transcribe them in separate batches")
        return next(iter(layers), None)

    def _cached_features_layer(self) -> int | None:
        """Where ``audio_encoder_hidden_states`` (a feature cache) come from: the active adapter's place
        (``None``: the tower's output; ``k``: its hidden states after ``k`` layers)."""
        return self.domain_adapter_configs[self.active_domain_adapter].encoder_layer

    def _encode_adapting_inside(self, input_features, feature_attention_mask, audio_domain, layer: int):
        """The tower with the routed adapters after its first ``layer`` layers: adapted output and lengths."""
        return encode_audio(
            self.model.audio_tower, input_features, feature_attention_mask, trim=self.config.trim_audio_tower,
            adapt=lambda states, frame_lengths: self.apply_domain_adapter(states, frame_lengths, audio_domain),
            adapt_after=layer)

    def _adapt_tower_states(self, hidden, lengths, audio_domain):
        """Cached tower states (taken where the active adapter reads them) -> adapted tower output and lengths."""
        layer = self._cached_features_layer()
        if layer is None:
            return self.apply_domain_adapter(hidden.to(self._projector_compute_dtype()), lengths, audio_domain), lengths
        routed = self._routed_encoder_layer(audio_domain, hidden.shape[0])
        if routed not in (None, layer):
            raise ValueError(f"the cached states were taken after encoder layer {layer} (the active adapter's place); "
                             f"audio_domain routes them to an adapter at encoder_layer {routed}")
        adapted = self.apply_domain_adapter(hidden, lengths, audio_domain)
        return finish_audio_tower(self.model.audio_tower, adapted, lengths, layer)

    @torch.no_grad()
    def domain_adapter_inputs(self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen tower's states where the active adapter reads them, and their valid lengths: the tower's
        output ``(batch, frames, d_model)``, or for an adapter inside the tower (``encoder_layer = k``) its hidden
        states after ``k`` layers (two frames per output frame). What a feature cache holds for this adapter."""
        tower = self.model.audio_tower
        device = execution_device(tower)
        input_features, feature_attention_mask = input_features.to(device), feature_attention_mask.to(device)
        layer = self._cached_features_layer()
        if layer is None:
            return encode_audio(tower, input_features, feature_attention_mask, trim=self.config.trim_audio_tower)
        return encode_audio_to_layer(tower, input_features, feature_attention_mask, layer,
                                     trim=self.config.trim_audio_tower)

    def apply_domain_adapter(
        self,
        audio_hidden_states: torch.Tensor,
        audio_output_lengths: torch.Tensor,
        audio_domain: list[str] | str | None = None,
    ) -> torch.Tensor:
        """Adapt encoder features ``(num_audios, frames, d_model)`` with valid lengths ``(num_audios,)``."""
        num_audios, frames, _ = audio_hidden_states.shape
        audio_domain = self._domains(audio_domain, num_audios)
        if not self._domain_adapter_enabled:
            return audio_hidden_states
        mask = torch.arange(frames, device=audio_hidden_states.device)[None, :] < audio_output_lengths.to(
            audio_hidden_states.device)[:, None]
        if len(set(audio_domain)) == 1:
            adapter = None if audio_domain[0] == MIC_DOMAIN else self._adapter_for(audio_domain[0])
            return audio_hidden_states if adapter is None else adapter(audio_hidden_states, mask)
        output = audio_hidden_states.clone()
        groups: dict[int, tuple[nn.Module, list[int]]] = {}
        for index, name in enumerate(audio_domain):
            adapter = None if name == MIC_DOMAIN else self._adapter_for(name)
            if adapter is not None:
                groups.setdefault(id(adapter), (adapter, []))[1].append(index)
        for adapter, indices in groups.values():
            rows = torch.tensor(indices, device=audio_hidden_states.device)
            output[rows] = adapter(audio_hidden_states[rows], mask[rows])
        return output

    def get_audio_features(
        self,
        input_features: torch.Tensor,
        feature_attention_mask: torch.Tensor,
        audio_domain: list[str] | str | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> Qwen2AudioLDVAudioFeaturesOutput | tuple:
        """Tower -> adapter -> projector, as a [`Qwen2AudioLDVAudioFeaturesOutput`] (``pooler_output``: the projected
        ``(num_audios, frames, text_hidden)`` features; ``audio_output_lengths``: valid frames per audio).

        With ``output_hidden_states`` / ``output_attentions`` the tower runs its stock (padded) forward, which
        records them; otherwise it runs on the valid frames only when ``config.trim_audio_tower``.
        """
        audio_model = self.model
        tower = audio_model.audio_tower
        if feature_attention_mask is None:
            raise ValueError("feature_attention_mask is required with input_features (the processor returns it)")
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        record = bool(output_hidden_states) or bool(output_attentions)
        layer = self._routed_encoder_layer(audio_domain, input_features.shape[0])
        if record and layer is not None:
            raise ValueError("output_hidden_states / output_attentions record the stock tower's pass, which an "
                             f"adapter inside the tower (encoder_layer {layer}) changes; call it inside "
                             "`with model.disable_domain_adapter():`, or with audio_domain='mic'")
        tower_outputs = None
        if record:
            _, lengths = tower._get_feat_extract_output_lengths(feature_attention_mask.sum(-1))
            frames = input_features.shape[-1] // 2
            frame_mask = torch.arange(frames, device=lengths.device)[None, :] < (
                (feature_attention_mask.sum(-1) - 1) // 2 + 1)[:, None]
            dummy = torch.zeros((input_features.shape[0], frames, 1), dtype=tower.conv1.weight.dtype,
                                device=input_features.device)
            mask = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy,
                                             attention_mask=frame_mask.long())
            tower_outputs = tower(input_features, attention_mask=mask, output_hidden_states=output_hidden_states,
                                  output_attentions=output_attentions, return_dict=True)
            hidden = tower_outputs.last_hidden_state
        elif layer is not None:  # the adapter inside the tower: its remaining layers run on the adapted states
            hidden, lengths = self._encode_adapting_inside(input_features, feature_attention_mask, audio_domain, layer)
        else:
            hidden, lengths = encode_audio(tower, input_features, feature_attention_mask,
                                           trim=self.config.trim_audio_tower)
        if layer is None:
            hidden = self.apply_domain_adapter(hidden, lengths, audio_domain)
        output = Qwen2AudioLDVAudioFeaturesOutput(
            last_hidden_state=hidden,
            pooler_output=audio_model.multi_modal_projector(hidden),
            hidden_states=tower_outputs.hidden_states if tower_outputs is not None else None,
            attentions=tower_outputs.attentions if tower_outputs is not None else None,
            audio_output_lengths=lengths,
        )
        return output if return_dict else output.to_tuple()

    def _projector_compute_dtype(self) -> torch.dtype:
        """The dtype the projector computes in: its weight's, or under a quantised base (integer storage, e.g.
        bitsandbytes) its ``compute_dtype`` or else the token embeddings' dtype."""
        linear = self.model.multi_modal_projector.linear
        if linear.weight.is_floating_point():
            return linear.weight.dtype
        compute = getattr(linear, "compute_dtype", None)
        return compute if isinstance(compute, torch.dtype) else self.get_input_embeddings().weight.dtype

    def _merge_audio(
        self, input_ids, input_features, feature_attention_mask, audio_domain, encoder_outputs=None, adapted=False
    ) -> torch.Tensor:
        inputs_embeds = self.get_input_embeddings()(input_ids)
        if encoder_outputs is not None:  # precomputed (cached) tower states: the tower is frozen
            hidden, lengths = encoder_outputs
            if not adapted:
                hidden, lengths = self._adapt_tower_states(hidden, lengths, audio_domain)
            audio_features = self.model.multi_modal_projector(hidden.to(self._projector_compute_dtype()))
        else:
            if feature_attention_mask is None:
                raise ValueError("feature_attention_mask is required with input_features (the processor returns it)")
            target_device = execution_device(self.model.audio_tower)
            features = self.get_audio_features(
                input_features.to(target_device), feature_attention_mask.to(target_device), audio_domain,
                return_dict=True,
            )
            audio_features, lengths = features.pooler_output, features.audio_output_lengths
        valid = torch.arange(audio_features.shape[1], device=audio_features.device)[None, :] < lengths.to(
            audio_features.device)[:, None]
        audio_features = audio_features[valid]
        audio_token_mask = input_ids == self.config.audio_token_id
        n_tokens = int(audio_token_mask.sum().item())
        if n_tokens != audio_features.shape[0]:
            raise ValueError(
                f"Audio features and audio tokens do not match: {n_tokens} <|AUDIO|> tokens in input_ids but "
                f"{audio_features.shape[0]} audio frames. Build inputs with the Qwen2-Audio processor, which "
                "expands one <|AUDIO|> per frame, and never truncate a run of <|AUDIO|> tokens."
            )
        audio_features = audio_features.to(inputs_embeds.device, inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(audio_token_mask.unsqueeze(-1).to(inputs_embeds.device), audio_features)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        input_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        audio_domain: list[str] | str | None = None,
        audio_encoder_hidden_states: torch.Tensor | None = None,
        audio_encoder_lengths: torch.LongTensor | None = None,
        audio_features_adapted: bool = False,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ):
        r"""Same as [`Qwen2AudioForConditionalGeneration.forward`], with the adapter in the audio path.

        audio_domain (`list[str]` or `str`, *optional*):
            Per audio: ``"ldv"`` (default, the active adapter), ``"mic"`` (no adapter) or a loaded adapter's name.
        audio_encoder_hidden_states (`torch.Tensor` of shape `(num_audios, frames, d_model)`, *optional*):
            Precomputed states of the frozen audio tower (a feature cache), used instead of ``input_features``;
            requires ``audio_encoder_lengths`` ``(num_audios,)``, the valid frames of each. They are taken where the
            active adapter reads them: the tower's output, or for an adapter inside the tower
            (``encoder_layer = k``) its hidden states after ``k`` layers (the rest of the tower then runs here).
        audio_features_adapted (`bool`, *optional*, defaults to `False`):
            ``audio_encoder_hidden_states`` are already the adapted tower output (as the audio-only call returns
            them, with its ``output_lengths``): the projector reads them as they are, no adapter runs.
        logits_to_keep (`int` or `torch.Tensor`, *optional*):
            As in transformers' causal LMs: ``0`` (default) all positions, ``n`` the last ``n``, a 1-D tensor the
            sequence indices to keep. Also a 2-D bool mask ``(batch, seq)``: the head runs on the selected positions
            only and ``logits`` is ``(num_selected, vocab)`` (row-major order); with ``labels`` the loss is the mean
            cross-entropy of each selected position against the next label. Training uses it to skip the
            full-vocabulary head on the prompt and audio positions, which carry no labels.

        With audio and no ``input_ids``, returns a [`DomainAdapterOutput`] whose ``hidden_states`` are the adapted
        encoder features ``(num_audios, frames, d_model)`` and ``output_lengths`` their valid frames (no projector,
        no language model).
        """
        if input_ids is None and inputs_embeds is None:
            if audio_features_adapted:
                raise ValueError("audio_features_adapted=True needs input_ids: the audio-only call adapts features")
            return self._adapt_audio_only(input_features, feature_attention_mask, audio_encoder_hidden_states,
                                          audio_encoder_lengths, audio_domain)
        has_audio = input_features is not None or audio_encoder_hidden_states is not None
        if has_audio and inputs_embeds is None and input_ids is not None and input_ids.shape[1] != 1:
            encoder_outputs = None
            if audio_encoder_hidden_states is not None:
                if audio_encoder_lengths is None:
                    raise ValueError("audio_encoder_lengths is required with audio_encoder_hidden_states")
                encoder_outputs = (audio_encoder_hidden_states, audio_encoder_lengths)
            inputs_embeds = self._merge_audio(input_ids, input_features, feature_attention_mask, audio_domain,
                                              encoder_outputs, adapted=audio_features_adapted)
            input_ids = None
        if not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
            return self._forward_selected_logits(input_ids, attention_mask, position_ids, cache, inputs_embeds, labels,
                                                 use_cache, logits_to_keep, **kwargs)
        return super().forward(
            input_ids=input_ids if inputs_embeds is None else None,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            **kwargs,
        )

    def _forward_selected_logits(self, input_ids, attention_mask, position_ids, cache, inputs_embeds, labels,
                                 use_cache, logits_to_keep, **kwargs):
        """The language model, then the head on the kept positions only (see ``logits_to_keep`` in ``forward``)."""
        return_dict = kwargs.pop("return_dict", None)
        outputs = self.model(input_ids=input_ids if inputs_embeds is None else None, attention_mask=attention_mask,
                             position_ids=position_ids, cache=cache, inputs_embeds=inputs_embeds,
                             use_cache=use_cache, return_dict=True, **kwargs)
        hidden = outputs.last_hidden_state
        loss = None
        if isinstance(logits_to_keep, torch.Tensor) and logits_to_keep.dim() == 2:
            if logits_to_keep.dtype != torch.bool or logits_to_keep.shape != hidden.shape[:2]:
                raise ValueError(f"a 2-D logits_to_keep must be a bool mask of shape {tuple(hidden.shape[:2])}, got "
                                 f"{logits_to_keep.dtype} {tuple(logits_to_keep.shape)}")
            keep = logits_to_keep.to(hidden.device)
            logits = self.lm_head(hidden[keep])
            if labels is not None:
                following = torch.full_like(labels, -100)
                following[:, :-1] = labels[:, 1:]
                targets = following.to(keep.device)[keep].to(logits.device)
                loss = F.cross_entropy(logits.float(), targets, ignore_index=-100)
        else:
            index = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden[:, index, :])
            if labels is not None:
                raise ValueError("labels with an int or 1-D logits_to_keep: pass a 2-D bool mask (or no "
                                 "logits_to_keep) to compute the loss")
        result = Qwen2AudioCausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache,
                                                  hidden_states=outputs.hidden_states, attentions=outputs.attentions,
                                                  attention_mask=outputs.attention_mask)
        return result if return_dict is None or return_dict else result.to_tuple()

    def _expand_inputs_for_generation(self, expand_size: int = 1, is_encoder_decoder: bool = False, input_ids=None,
                                      **model_kwargs):
        """The stock expansion (``num_beams`` / ``num_return_sequences``) plus the per-audio ``audio_domain`` list,
        repeated like the audio rows (``repeat_interleave``)."""
        domains = model_kwargs.get("audio_domain")
        if expand_size > 1 and isinstance(domains, (list, tuple)):
            model_kwargs["audio_domain"] = [name for name in domains for _ in range(expand_size)]
        return super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **model_kwargs)

    def _adapt_audio_only(self, input_features, feature_attention_mask, hidden, lengths, audio_domain):
        """Audio without tokens: the adapted encoder features, no projector and no LLM (distillation, analysis)."""
        if hidden is None:
            if input_features is None or feature_attention_mask is None:
                raise ValueError("pass input_ids (and audio), or audio alone: input_features + feature_attention_mask "
                                 "or audio_encoder_hidden_states + audio_encoder_lengths")
            tower = self.model.audio_tower
            device = execution_device(tower)
            input_features, feature_attention_mask = input_features.to(device), feature_attention_mask.to(device)
            layer = self._routed_encoder_layer(audio_domain, input_features.shape[0])
            if layer is not None:  # gradients flow through the tower's remaining (frozen) layers into the adapter
                adapted, lengths = self._encode_adapting_inside(input_features, feature_attention_mask, audio_domain,
                                                                layer)
                return DomainAdapterOutput(hidden_states=adapted, output_lengths=lengths)
            with torch.no_grad():
                hidden, lengths = encode_audio(tower, input_features, feature_attention_mask,
                                               trim=self.config.trim_audio_tower)
            return DomainAdapterOutput(hidden_states=self.apply_domain_adapter(hidden, lengths, audio_domain),
                                       output_lengths=lengths)
        if lengths is None:
            raise ValueError("audio_encoder_lengths is required with audio_encoder_hidden_states")
        if self._cached_features_layer() is None:
            return DomainAdapterOutput(hidden_states=self.apply_domain_adapter(hidden, lengths, audio_domain),
                                       output_lengths=lengths)
        adapted, lengths = self._adapt_tower_states(hidden, lengths, audio_domain)
        return DomainAdapterOutput(hidden_states=adapted, output_lengths=lengths)

    # ------------------------------------------------------------------------------------------------- control
    def adapters_to_float32(self) -> "Qwen2AudioLDVForConditionalGeneration":
        """Keep the (small, trained) adapters in float32 when the base is loaded in bf16/fp16; an adapter computes in
        its own dtype and returns features in the encoder's dtype."""
        for module in (self.domain_adapter, *self.domain_adapter_bank.values()):
            if module is not None:
                module.float()
        return self

    def freeze_base_model(self) -> "Qwen2AudioLDVForConditionalGeneration":
        """Make only the active adapter (``domain_adapter.*``) trainable; everything else is frozen.

        Integer (quantised, e.g. bitsandbytes) weights cannot require gradients and are left as they are.
        """
        for name, parameter in self.named_parameters():
            trainable = name.startswith(DOMAIN_ADAPTER_PREFIX)
            if parameter.is_floating_point() or parameter.is_complex():
                parameter.requires_grad_(trainable)
            elif trainable:
                raise ValueError(f"adapter parameter {name!r} is {parameter.dtype}: the adapter must stay out of "
                                 "quantisation (see _keep_in_fp32_modules)")
        return self

    def domain_adapter_parameters(self) -> list[nn.Parameter]:
        """Parameters of the active adapter."""
        return [] if self.domain_adapter is None else list(self.domain_adapter.parameters())

    def num_domain_adapter_parameters(self) -> int:
        return sum(p.numel() for p in self.domain_adapter_parameters())

    @contextlib.contextmanager
    def disable_domain_adapter(self):
        """Within the block every adapter is bypassed: the base model (bit for bit with ``trim_audio_tower=False``;
        within float32 rounding of the stock padded encoder pass with the default ``True``)."""
        previous = self._domain_adapter_enabled
        self._domain_adapter_enabled = False
        try:
            yield self
        finally:
            self._domain_adapter_enabled = previous

    def list_domain_adapters(self) -> list[str]:
        """Names of the loaded adapters, the active one first."""
        return [self.active_domain_adapter, *self.domain_adapter_bank.keys()]

    def set_domain_adapter(self, adapter_name: str) -> None:
        """Make a loaded adapter the active one (``model.domain_adapter``, ``audio_domain="ldv"``)."""
        if adapter_name == self.active_domain_adapter:
            return
        if adapter_name not in self.domain_adapter_bank:
            raise ValueError(f"unknown adapter {adapter_name!r}; loaded adapters: {self.list_domain_adapters()}")
        incoming = self.domain_adapter_bank.pop(adapter_name)
        if self.domain_adapter is not None:
            self.domain_adapter_bank[self.active_domain_adapter] = self.domain_adapter
        self.domain_adapter = incoming
        self.active_domain_adapter = adapter_name
        self.config.domain_adapter = self.domain_adapter_configs[adapter_name].to_dict()

    def delete_domain_adapter(self, adapter_name: str) -> None:
        """Remove a loaded adapter that is not the active one."""
        if adapter_name == self.active_domain_adapter:
            raise ValueError(f"{adapter_name!r} is the active adapter; set another one active first")
        if adapter_name not in self.domain_adapter_bank:
            raise ValueError(f"unknown adapter {adapter_name!r}; loaded adapters: {self.list_domain_adapters()}")
        del self.domain_adapter_bank[adapter_name]
        del self.domain_adapter_configs[adapter_name]

    def _check_new_adapter_name(self, adapter_name: str) -> None:
        if adapter_name in (MIC_DOMAIN, LDV_DOMAIN) or adapter_name in self.list_domain_adapters():
            raise ValueError(f"adapter name {adapter_name!r} is reserved or already loaded: {self._known_domains()}")

    def load_domain_adapter(self, path_or_repo: str, adapter_name: str | None = None, **hub_kwargs) -> str:
        """Load an adapter saved with ``save_pretrained`` (directory or Hub repo) next to the current ones.

        The adapter must have been trained for this base: the saved ``base_model_name_or_path`` and the encoder
        width must match. Returns the adapter's name (default: the repo or directory name). A single weights file
        (a guide-style ``torch.save`` ``.pt``/``.pth`` state dict, tensors only, or a ``.safetensors`` file without
        config.json) takes the active adapter's configuration, or ``adapter_config=...``.
        """
        path_or_repo = str(path_or_repo)
        if _is_single_adapter_file(path_or_repo):  # a guide-style torch.save file, or weights without config.json
            return self._load_domain_adapter_file(path_or_repo, adapter_name, hub_kwargs.pop("adapter_config", None))
        adapter_name = adapter_name or Path(path_or_repo.rstrip("/")).name
        self._check_new_adapter_name(adapter_name)
        weights = _resolve_adapter_file(path_or_repo, **hub_kwargs)
        config_path = os.path.join(os.path.dirname(weights), "config.json")
        if not os.path.isfile(config_path) and not os.path.exists(path_or_repo):  # a Hub repo: fetch its config
            config_path = cached_file(path_or_repo, "config.json", _raise_exceptions_for_missing_entries=False,
                                      **hub_kwargs) or config_path
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"{path_or_repo}: no config.json next to {ADAPTER_WEIGHTS_NAME}")
        with open(config_path, encoding="utf-8") as handle:
            saved = json.load(handle)
        saved_base = saved.get("base_model_name_or_path")
        own_base = self.config.base_model_name_or_path
        if saved_base and own_base and saved_base != own_base:
            raise ValueError(
                f"{path_or_repo}: adapter was trained for base model {saved_base!r}, but this model's base is {own_base!r}"
            )
        adapter_config = DomainAdapterConfig.from_dict(saved.get("domain_adapter") or {})
        saved_dim = (saved.get("audio_config") or {}).get("d_model")
        own_dim = self.config.audio_config.d_model
        if saved_dim is not None and saved_dim != own_dim:
            raise ValueError(
                f"{path_or_repo}: adapter was trained for an audio encoder with d_model {saved_dim}, "
                f"this model's encoder has d_model {own_dim}"
            )
        module = build_domain_adapter(adapter_config, own_dim, self.config.audio_config.encoder_layers)
        if module is None:
            raise ValueError(f"{path_or_repo}: adapter_type 'none' has no weights to load")
        _load_adapter_state(module, load_file(weights), weights)
        reference = next(self.parameters())
        self.domain_adapter_bank[adapter_name] = module.to(device=reference.device)
        self.domain_adapter_configs[adapter_name] = adapter_config
        module.requires_grad_(False)
        module.train(self.training)  # follow the model's mode: no dropout at inference
        return adapter_name

    # ------------------------------------------------------------------------------------ PEFT-style control
    # What a PEFT user reaches for: a fresh trainable adapter by name, switching adapters off and on outside a
    # `with` block, the trainable-parameter summary, and a saved adapter attached to a base already in memory.
    def add_domain_adapter(self, adapter_name: str, config: DomainAdapterConfig | dict | str | None = None,
                           set_active: bool = True) -> str:
        """Add a fresh adapter named ``adapter_name`` (like PEFT's ``add_adapter``).

        ``config`` is a [`DomainAdapterConfig`], its dict, a preset name (``lightweight``, ``standard``, ``heavy``,
        ``mlp``) or ``None`` (the default configuration). With ``set_active`` (default) the new adapter becomes the
        active one and the only trainable parameters (every other adapter and the base are frozen), ready to
        train; otherwise it is loaded frozen next to the others. Returns the name.
        """
        self._check_new_adapter_name(adapter_name)
        config = _as_adapter_config(config) or DomainAdapterConfig()
        module = build_domain_adapter(config, self.config.audio_config.d_model,
                                      self.config.audio_config.encoder_layers)
        if module is None:
            raise ValueError("adapter_type 'none' has no parameters; nothing to add")
        self.domain_adapter_bank[adapter_name] = module.to(device=next(self.parameters()).device)
        self.domain_adapter_configs[adapter_name] = config
        module.train(self.training)
        module.requires_grad_(False)
        if set_active:
            self.set_domain_adapter(adapter_name)
            self.freeze_base_model()
        return adapter_name

    def disable_domain_adapters(self) -> None:
        """Bypass every adapter until :meth:`enable_domain_adapters` (the model is exactly the base model).

        The non-context form of ``with model.disable_domain_adapter():``."""
        self._domain_adapter_enabled = False

    def enable_domain_adapters(self) -> None:
        """Undo :meth:`disable_domain_adapters`."""
        self._domain_adapter_enabled = True

    @property
    def domain_adapters_enabled(self) -> bool:
        return self._domain_adapter_enabled

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """``(trainable, all)`` parameter counts, as PEFT's method of the same name."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, sum(p.numel() for p in self.parameters())

    def print_trainable_parameters(self) -> None:
        """Print ``trainable params: N || all params: M || trainable%: P``, as PEFT does."""
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: "
              f"{100 * trainable / max(total, 1):.4f}")

    @classmethod
    def from_base_model(
        cls,
        base_model: Qwen2AudioForConditionalGeneration,
        adapter_name_or_path: str | os.PathLike,
        adapter_name: str | None = None,
        is_trainable: bool = False,
        **hub_kwargs: Any,
    ) -> "Qwen2AudioLDVForConditionalGeneration":
        """Attach a saved adapter (directory or Hub repo) to a base model already in memory, without loading the
        base again: the ``PeftModel.from_pretrained(base_model, adapter_id)`` pattern.

        A stock ``Qwen2AudioForConditionalGeneration`` is converted in place (no copy of its weights, as
        :func:`add_domain_adapter_to_model`); a model of this class gets the adapter next to its others. The
        adapter's base (``base_model_name_or_path``) and encoder width must match, as in
        :meth:`load_domain_adapter`. The attached adapter becomes the active one, frozen unless ``is_trainable``.
        """
        if not isinstance(base_model, cls):
            base_model = add_domain_adapter_to_model(base_model, adapter_type="none")
        name = base_model.load_domain_adapter(adapter_name_or_path, adapter_name=adapter_name, **hub_kwargs)
        base_model.set_domain_adapter(name)
        if is_trainable:
            base_model.freeze_base_model()
        else:
            base_model.domain_adapter.requires_grad_(False)
        return base_model

    def _load_domain_adapter_file(self, path: str, adapter_name: str | None,
                                  adapter_config: DomainAdapterConfig | dict | str | None) -> str:
        """Load one weights file without a config.json next to it: a ``.safetensors`` file, or a ``.pt``/``.pth``
        file written by ``torch.save(model.domain_adapter.state_dict(), path)`` (read with
        ``torch.load(weights_only=True)``: tensors only). Its configuration is ``adapter_config`` (default: the
        active adapter's, the one the guide's model was built with)."""
        adapter_name = adapter_name or Path(path).stem
        self._check_new_adapter_name(adapter_name)
        adapter_config = (_as_adapter_config(adapter_config)
                          or self.domain_adapter_configs[self.active_domain_adapter])
        module = build_domain_adapter(adapter_config, self.config.audio_config.d_model,
                                      self.config.audio_config.encoder_layers)
        if module is None:
            raise ValueError(f"{path}: the active adapter has adapter_type 'none'; pass adapter_config=... (the "
                             f"configuration the weights were trained with)")
        state = load_file(path) if path.endswith(".safetensors") else load_torch_adapter_state(path)
        _load_adapter_state(module, state, path)
        self.domain_adapter_bank[adapter_name] = module.to(device=next(self.parameters()).device)
        self.domain_adapter_configs[adapter_name] = adapter_config
        module.requires_grad_(False)
        module.train(self.training)
        return adapter_name

    # ------------------------------------------------------------------------------------------ save and load
    def _write_code_and_config(self, save_directory: str, config: Qwen2AudioLDVConfig) -> None:
        config.auto_map = dict(_AUTO_MAP)
        config.architectures = [type(self).__name__]
        config.save_pretrained(save_directory)
        here = Path(__file__).resolve().parent
        for name in _CODE_FILES:
            shutil.copyfile(here / name, Path(save_directory) / name)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        adapter_only: bool | None = None,
        adapter_name: str | None = None,
        **kwargs: Any,
    ):
        """Save the model.

        With a base reference (``config.base_model_name_or_path``), the default writes the adapter only:
        ``config.json`` (with ``auto_map``), ``domain_adapter.safetensors`` and the two code files. With
        ``adapter_only=False`` (or no base reference) the whole model is written, plus the same code files.
        ``adapter_name`` saves one loaded adapter (default: the active one).
        """
        if adapter_only is None:
            adapter_only = self.config.base_model_name_or_path is not None
        os.makedirs(save_directory, exist_ok=True)
        adapter_name = adapter_name or self.active_domain_adapter
        if adapter_name != self.active_domain_adapter:
            module = self.domain_adapter_bank[adapter_name] if adapter_name in self.domain_adapter_bank else None
            if module is None:
                raise ValueError(f"unknown adapter {adapter_name!r}; loaded adapters: {self.list_domain_adapters()}")
        else:
            module = self.domain_adapter
        config = Qwen2AudioLDVConfig.from_dict(self.config.to_dict())
        config.domain_adapter = self.domain_adapter_configs[adapter_name].to_dict()
        if adapter_only:
            if config.base_model_name_or_path is None:
                raise ValueError("adapter_only=True needs config.base_model_name_or_path (the base to load it onto)")
            if kwargs.get("is_main_process", True):
                self._write_code_and_config(save_directory, config)
                # adapter_type "none" writes an empty file: it still marks the folder as adapter-only (base + nothing)
                state = {} if module is None else {
                    k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
                save_file(state, os.path.join(save_directory, ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
            return None
        if adapter_name != self.active_domain_adapter:
            raise ValueError("a full save writes the active adapter; call set_domain_adapter first")
        state_dict = kwargs.pop("state_dict", None) or self.state_dict()
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("domain_adapter_bank.")}
        result = super().save_pretrained(save_directory, state_dict=state_dict, **kwargs)
        if kwargs.get("is_main_process", True):
            self._write_code_and_config(save_directory, config)
        return result

    @classmethod
    def from_base_pretrained(
        cls,
        base_model_name_or_path: str | os.PathLike,
        adapter_config: DomainAdapterConfig | None = None,
        **kwargs: Any,
    ) -> "Qwen2AudioLDVForConditionalGeneration":
        """Load a stock Qwen2-Audio checkpoint (Hub id or directory) and add a fresh adapter.

        ``kwargs`` go to ``from_pretrained`` (``dtype``, ``device_map``, ``revision``, ...). Every base weight
        must arrive: a missing or unexpected key other than the new adapter's raises.
        """
        base_model_name_or_path = str(base_model_name_or_path)
        output_loading_info = kwargs.pop("output_loading_info", False)
        hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only") if k in kwargs}
        # an adapter repo is not a base; say so before AutoConfig asks to trust its code
        config_file = os.path.join(base_model_name_or_path, "config.json")
        if not os.path.isdir(base_model_name_or_path):
            config_file = cached_file(base_model_name_or_path, "config.json",
                                      _raise_exceptions_for_missing_entries=False, **hub_kwargs)
        if config_file and os.path.isfile(config_file):
            with open(config_file, encoding="utf-8") as handle:
                if json.load(handle).get("model_type") == Qwen2AudioLDVConfig.model_type:
                    raise ValueError(f"{base_model_name_or_path} already holds an LDV adapter model; use "
                                     "from_pretrained")
        base_config = AutoConfig.from_pretrained(base_model_name_or_path, **hub_kwargs)
        if not isinstance(base_config, Qwen2AudioConfig):
            raise ValueError(
                f"{base_model_name_or_path}: expected a Qwen2-Audio checkpoint (model_type 'qwen2_audio'), "
                f"got model_type {getattr(base_config, 'model_type', None)!r}"
            )
        if isinstance(base_config, Qwen2AudioLDVConfig):
            raise ValueError(f"{base_model_name_or_path} already holds an LDV adapter model; use from_pretrained")
        config = Qwen2AudioLDVConfig.from_base_config(
            base_config,
            adapter_config or DomainAdapterConfig(),
            base_model_name_or_path=base_model_name_or_path,
            base_model_revision=kwargs.get("revision"),
        )
        # The new adapter's keys are expected to be missing (they are initialised); keep them out of the load
        # report, and check below that nothing else is missing.
        previous = cls._keys_to_ignore_on_load_missing
        cls._keys_to_ignore_on_load_missing = [r"^domain_adapter\."]
        try:
            model, info = super().from_pretrained(base_model_name_or_path, config=config, output_loading_info=True,
                                                  **kwargs)
        finally:
            cls._keys_to_ignore_on_load_missing = previous
        if output_loading_info:  # reported to the caller, as the stock class does (the adapter's keys are new)
            info = _loading_info_without_new_adapter(info)
        else:
            _raise_on_bad_loading_info(base_model_name_or_path, info)
        model.adapters_to_float32()
        model.freeze_base_model()  # as add_domain_adapter_to_model: only the adapter trains
        return (model, info) if output_loading_info else model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Load an adapter-only checkpoint (base from ``base_model_name_or_path``, then the adapter, strictly) or a
        full checkpoint. ``revision`` applies to this repo; the base uses ``config.base_model_revision``.
        """
        hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only", "subfolder")
                      if k in kwargs}
        output_loading_info = kwargs.pop("output_loading_info", False)
        if pretrained_model_name_or_path is None or not _has_adapter_file(str(pretrained_model_name_or_path),
                                                                          **hub_kwargs):
            # a full checkpoint, or (None, config=..., state_dict=...) as with the stock class
            path = pretrained_model_name_or_path if pretrained_model_name_or_path is None else str(
                pretrained_model_name_or_path)
            model, info = super().from_pretrained(path, *model_args, output_loading_info=True, **kwargs)
            missing_adapter = [k for k in info.get("missing_keys") or [] if k.startswith(DOMAIN_ADAPTER_PREFIX)]
            if output_loading_info:
                if missing_adapter:  # a model without its adapter's weights is refused, whatever was asked
                    raise ValueError(f"{path}: the adapter's weights are missing: {sorted(missing_adapter)}")
            else:
                _raise_on_bad_loading_info(str(path), info, allow_missing_adapter=False)
            model.adapters_to_float32()
            model.freeze_base_model()
            return (model, info) if output_loading_info else model
        path = str(pretrained_model_name_or_path)
        config = kwargs.pop("config", None)
        if not isinstance(config, Qwen2AudioLDVConfig):
            config = Qwen2AudioLDVConfig.from_pretrained(path, **hub_kwargs)
        if not config.base_model_name_or_path:
            raise ValueError(f"{path}: adapter-only checkpoint without `base_model_name_or_path` in config.json")
        for key in ("revision", "subfolder", "trust_remote_code", "adapter_kwargs"):
            kwargs.pop(key, None)
        base_revision = kwargs.pop("base_model_revision", config.base_model_revision)
        if base_revision is not None:
            kwargs["revision"] = base_revision
        loaded = cls.from_base_pretrained(config.base_model_name_or_path, adapter_config=config.adapter_config,
                                          output_loading_info=output_loading_info, **kwargs)
        model, info = loaded if output_loading_info else (loaded, None)
        model.config.trim_audio_tower = config.trim_audio_tower
        weights = _resolve_adapter_file(path, **hub_kwargs)
        state = load_file(weights)
        if model.domain_adapter is not None:
            reference = model.domain_adapter.scale
            _load_adapter_state(model.domain_adapter, {k: v.to(reference.device) for k, v in state.items()}, weights)
        elif state:
            raise ValueError(f"{weights}: adapter_type 'none' but the file holds weights {sorted(state)}")
        model.config.name_or_path = path
        return (model, info) if output_loading_info else model

    def push_to_hub(self, repo_id: str, **kwargs: Any):
        """Publish the adapter with a model card: ``config.json`` (``auto_map``), the code files,
        ``domain_adapter.safetensors`` and ``README.md`` (the full model instead when there is no base reference).

        Keyword arguments are those of ``modeling_qwen2audio_ldv.hub.push_model``: ``results`` (dict or path to
        ``results.json``), ``condition``, ``datasets``, ``adapter_name``, ``base_model``, ``revision``, ``private``,
        ``token``, ``commit_message``, ``create_pr``, ``tags``. Returns the ``CommitInfo`` of the upload.
        """
        try:  # imported here: this file travels to the Hub, where the package may be absent
            from modeling_qwen2audio_ldv.hub import push_model
        except ImportError as error:
            raise ImportError(
                "push_to_hub writes the model card with the qwen2audio-ldv package; install it, or call "
                "save_pretrained(dir) and upload the folder with huggingface_hub"
            ) from error
        return push_model(self, repo_id, **kwargs)


def _loading_info_without_new_adapter(info: dict) -> dict:
    """A base checkpoint's loading info without the new adapter's keys (they are initialised, not missing)."""
    info = dict(info)
    info["missing_keys"] = [k for k in info.get("missing_keys") or [] if not k.startswith(DOMAIN_ADAPTER_PREFIX)]
    return info


def _raise_on_bad_loading_info(source: str, info: dict, allow_missing_adapter: bool = True) -> None:
    """Every weight must arrive; from a base checkpoint only the new adapter's keys may be missing."""
    missing = sorted(info.get("missing_keys") or [])
    if allow_missing_adapter:
        missing = [k for k in missing if not k.startswith(DOMAIN_ADAPTER_PREFIX)]
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{source}: checkpoint does not match the model: missing keys {missing}, unexpected keys {unexpected}, "
            f"mismatched shapes {mismatched}"
        )


def add_domain_adapter_to_model(
    model: Qwen2AudioForConditionalGeneration,
    adapter_type: str = "transformer",
    input_dim: int | None = None,
    num_layers: int | None = None,
    num_heads: int | None = None,
    ff_dim: int | None = None,
    dropout: float | None = None,
    **adapter_kwargs: Any,
) -> Qwen2AudioLDVForConditionalGeneration:
    """Turn a loaded Qwen2-Audio model into a [`Qwen2AudioLDVForConditionalGeneration`] in place.

    The base weights are not copied. ``adapter_type`` is ``transformer``, ``mlp``, ``none`` or a preset name
    (``lightweight``, ``standard``, ``heavy``); the other arguments override the preset's values.
    Returns the same object, now of the adapted class, with the base frozen and the adapter trainable.
    """
    if not isinstance(model, Qwen2AudioForConditionalGeneration):
        raise TypeError(f"expected a Qwen2AudioForConditionalGeneration, got {type(model).__name__}")
    if isinstance(model, Qwen2AudioLDVForConditionalGeneration):
        raise ValueError("the model already has a domain adapter")
    overrides = {"input_dim": input_dim, "num_layers": num_layers, "num_heads": num_heads, "ff_dim": ff_dim,
                 "dropout": dropout, **adapter_kwargs}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if adapter_type in ADAPTER_PRESETS:
        adapter_config = DomainAdapterConfig.preset(adapter_type, **overrides)
    else:
        adapter_config = DomainAdapterConfig(adapter_type=adapter_type, **overrides)
    base_name = model.config.name_or_path or None
    old_config = model.config
    config = Qwen2AudioLDVConfig.from_base_config(old_config, adapter_config, base_model_name_or_path=base_name)
    # the submodules keep their config objects (the stock model shares them with model.config): share them again,
    # so that an edit of model.config.text_config reaches the language model
    config.text_config, config.audio_config = old_config.text_config, old_config.audio_config
    model.config = config
    model.model.config = config
    reference = next(model.parameters())
    model.__class__ = Qwen2AudioLDVForConditionalGeneration
    cls = Qwen2AudioLDVForConditionalGeneration
    for name in ("_no_split_modules", "_keep_in_fp32_modules", "_keep_in_fp32_modules_strict"):
        # post_init stored the stock class's sets on the instance: add this class's entries
        setattr(model, name, set(getattr(model, name, None) or ()) | set(getattr(cls, name)))
    model._init_domain_adapter_state()
    if model.domain_adapter is not None:
        model.domain_adapter.to(device=reference.device)
    model.freeze_base_model()
    return model


if register_checkpoint_conversion_mapping is not None:
    _legacy = get_checkpoint_conversion_mapping("qwen2_audio")
    if _legacy:
        register_checkpoint_conversion_mapping(Qwen2AudioLDVForConditionalGeneration.__name__, _legacy, overwrite=True)

__all__ = [
    "ADAPTER_WEIGHTS_NAME",
    "DOMAIN_ADAPTER_PREFIX",
    "DomainAdapterOutput",
    "MLPDomainAdapter",
    "Qwen2AudioLDVForConditionalGeneration",
    "TransformerDomainAdapter",
    "add_domain_adapter_to_model",
    "build_domain_adapter",
    "convert_pt_to_safetensors",
    "encode_audio",
    "load_torch_adapter_state",
]
