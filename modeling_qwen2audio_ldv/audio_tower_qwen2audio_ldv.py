# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The frozen Qwen2-Audio encoder pass, trimmed to the valid frames and split at a layer for an adapter inside it.

``encode_audio`` runs the stock ``Qwen2AudioEncoder`` (padded to 30 s, or on the batch's longest valid length
with the same valid-frame outputs); ``encode_audio_to_layer`` / ``finish_audio_tower`` are its two halves around an
adapter placed after the tower's first ``k`` layers. The layers, convolutions, pooling and norm are the tower's own
modules (called, not re-implemented), so accelerate's hooks and quantised weights behave as in its ``forward``.

This file travels to the Hub with every saved adapter (``trust_remote_code``): it imports only torch and
transformers.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.masking_utils import create_bidirectional_mask


def execution_device(module: nn.Module) -> torch.device:
    """Where ``module`` computes: the device of an accelerate hook (``device_map`` with offloading, whose weights
    wait on the ``meta`` device until the hook loads them), else the device of its first weight."""
    hook = getattr(module, "_hf_hook", None)
    for candidate in (hook, *getattr(hook, "hooks", ())):
        device = getattr(candidate, "execution_device", None)
        if device is not None:
            return torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    return next(module.parameters()).device


# Copied from transformers.models.qwen2_audio.modeling_qwen2_audio.Qwen2AudioModel.forward (the audio attention
# mask), for any number of frames
def frame_attention_mask(audio_tower: nn.Module, frame_lengths: torch.Tensor, frames: int, device) -> torch.Tensor:
    """The stock bidirectional mask over ``frames`` convolution frames, ``frame_lengths`` valid per clip."""
    frame_mask = torch.arange(frames, device=frame_lengths.device)[None, :] < frame_lengths[:, None]
    dummy = torch.zeros((frame_lengths.shape[0], frames, 1), dtype=audio_tower.conv1.weight.dtype, device=device)
    return create_bidirectional_mask(config=audio_tower.config, inputs_embeds=dummy, attention_mask=frame_mask.long())


# Copied from transformers.models.qwen2_audio.modeling_qwen2_audio.Qwen2AudioEncoder.forward (the layer loop with
# LayerDrop), for layers[start:stop]
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


# Copied from transformers.models.qwen2_audio.modeling_qwen2_audio.Qwen2AudioEncoder.forward (convolutions, position
# embeddings, dropout, the first ``layer`` layers), on the mel frames the pass uses
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
    attention_mask = frame_attention_mask(audio_tower, frame_lengths, conv_frames, input_features.device)
    features = input_features[:, :, :used].to(dtype=audio_tower.conv1.weight.dtype,
                                              device=execution_device(audio_tower.conv1))
    hidden = F.gelu(audio_tower.conv1(features))
    hidden = F.gelu(audio_tower.conv2(hidden)).permute(0, 2, 1)
    positions = torch.arange(conv_frames, device=execution_device(audio_tower.embed_positions))
    hidden = hidden + audio_tower.embed_positions(positions).to(hidden.device)  # == weight[:conv_frames], hooked
    hidden = F.dropout(hidden, p=audio_tower.dropout, training=audio_tower.training)
    return _run_tower_layers(audio_tower, hidden, attention_mask, 0, layer), frame_lengths


# Copied from transformers.models.qwen2_audio.modeling_qwen2_audio.Qwen2AudioEncoder.forward (the layers from
# ``layer`` on, the 2x average pooling and the final LayerNorm)
def finish_audio_tower(
    audio_tower: nn.Module, hidden: torch.Tensor, frame_lengths: torch.Tensor, layer: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rest of the tower from its hidden states after ``layer`` layers: the remaining layers, the 2x pooling
    and the final LayerNorm. Returns the tower's output ``(batch, frames // 2, d_model)`` and its valid lengths."""
    _check_layer(audio_tower, layer)
    frame_lengths = frame_lengths.to(hidden.device)
    attention_mask = frame_attention_mask(audio_tower, frame_lengths, hidden.shape[1], hidden.device)
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
        attention_mask = frame_attention_mask(audio_tower, feat_lengths, conv_frames, input_features.device)
        hidden = audio_tower(input_features, attention_mask=attention_mask).last_hidden_state
        return hidden, output_lengths
    layers = len(audio_tower.layers)
    hidden, frame_lengths = encode_audio_to_layer(audio_tower, input_features, feature_attention_mask, layers, trim)
    hidden, _ = finish_audio_tower(audio_tower, hidden, frame_lengths, layers)
    return hidden, output_lengths



__all__ = [
    "encode_audio",
    "encode_audio_to_layer",
    "execution_device",
    "finish_audio_tower",
    "frame_attention_mask",
    "pooled_lengths",
]
