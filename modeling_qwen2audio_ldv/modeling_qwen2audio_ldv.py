# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Qwen2-Audio with a trainable domain adapter between the audio encoder and the projector.

```
input_features (B, n_mels, 3000) -> audio_tower (frozen) -> (B, T, d_model), T <= 750
  -> domain_adapter (trainable)  -> (B, T, d_model), padding-aware, same shape
  -> multi_modal_projector (frozen) -> replaces the <|AUDIO|> tokens -> language model (frozen)
```

This file holds the model: routing (``audio_domain``), the audio path and ``forward``/``generate``.
The adapter layers are in ``adapters_qwen2audio_ldv.py`` (LoRA in the tower's projections, adapter type ``lora``, in
``lora_qwen2audio_ldv.py``), the trimmed / split encoder pass in
``audio_tower_qwen2audio_ldv.py``, the named-adapter bank in ``adapter_bank_qwen2audio_ldv.py``, save and load in
``checkpoints_qwen2audio_ldv.py``; all of them travel
to the Hub with every saved adapter (``trust_remote_code``) and import only torch, transformers and each other.

Integration: ``Qwen2AudioModel.forward`` runs tower and projector inline with no hook in between, so this
class owns the audio path only (tower -> adapter -> projector -> merge into the token embeddings) and hands
``inputs_embeds`` to the parent's ``forward``, which then runs just the language model and the loss. The
base weight names are unchanged; the adapters' parameters all start with ``domain_adapters.<name>.``.
"""

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2AudioForConditionalGeneration
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioCausalLMOutputWithPast
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.deprecation import deprecate_kwarg

from .adapter_bank_qwen2audio_ldv import (
    ADAPTER_WEIGHTS_NAME,
    DOMAIN_ADAPTER_PREFIX,
    LDV_DOMAIN,
    MIC_DOMAIN,
    DomainAdapterBankMixin,
)
from .adapters_qwen2audio_ldv import DomainAdapter, DomainAdapterOutput
from .audio_tower_qwen2audio_ldv import encode_audio, encode_audio_to_layer, execution_device, finish_audio_tower
from .checkpoints_qwen2audio_ldv import CODE_FILES, DomainAdapterCheckpointMixin
from .configuration_qwen2audio_ldv import ADAPTER_PRESETS, DomainAdapterConfig, Qwen2AudioLDVConfig
from .lora_qwen2audio_ldv import LoRADomainAdapter, lora_in_tower

#: The adapters' module (``model.domain_adapters``) as transformers' module lists name it.
_ADAPTERS_MODULE = DOMAIN_ADAPTER_PREFIX.rstrip(".")


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


class Qwen2AudioLDVForConditionalGeneration(DomainAdapterBankMixin, DomainAdapterCheckpointMixin,
                                            Qwen2AudioForConditionalGeneration):
    """Qwen2-Audio with a domain adapter between ``audio_tower`` and ``multi_modal_projector``.

    Extra ``forward``/``generate`` argument ``audio_domain`` (list of str, one per audio): ``"ldv"`` (default)
    adapts with the active adapter, ``"mic"`` bypasses the adapters, any loaded adapter's name uses that adapter.
    """

    config_class = Qwen2AudioLDVConfig
    config: Qwen2AudioLDVConfig
    # device_map: an adapter is never split over devices
    _no_split_modules = [*Qwen2AudioForConditionalGeneration._no_split_modules, "TransformerDomainAdapter",
                         "MLPDomainAdapter", "LoRADomainAdapter"]
    # the adapters stay float32 on an fp16 or bf16 base (they are also built in float32, as transformers expects of
    # this list); a quantised model names them in `_keep_in_fp32_modules` instead (see `_list_adapters_as_fp32`)
    _keep_in_fp32_modules_strict = [_ADAPTERS_MODULE]

    def __init__(self, config: Qwen2AudioLDVConfig):
        super().__init__(config)
        self._init_domain_adapter_state()
        self.post_init()
        self._list_adapters_as_fp32()

    def _list_adapters_as_fp32(self) -> None:
        """Name the adapters (``domain_adapters``) in one of transformers' float32 lists; a module may be in one only.

        Unquantised: ``_keep_in_fp32_modules_strict`` (float32 on an fp16 and a bf16 base). Quantised
        (``config.quantization_config``, which ``from_pretrained`` sets before it builds the model):
        ``_keep_in_fp32_modules``, the list transformers' quantisers (bitsandbytes & co.) leave unconverted; the
        adapters still load in float32 on a bf16 base there, as loading keeps the dtype a parameter was built with
        when no list applies. A model without adapters (``adapter_type="none"``) names them in neither list.
        """
        keep = set(self._keep_in_fp32_modules or ()) - {_ADAPTERS_MODULE}
        strict = set(self._keep_in_fp32_modules_strict or ()) - {_ADAPTERS_MODULE}
        if len(self.domain_adapters):
            quantised = getattr(self.config, "quantization_config", None) is not None
            (keep if quantised else strict).add(_ADAPTERS_MODULE)
        self._keep_in_fp32_modules, self._keep_in_fp32_modules_strict = keep, strict

    def _init_weights(self, module):
        if isinstance(module, (DomainAdapter, LoRADomainAdapter)):
            module.reset_parameters()
        else:
            super()._init_weights(module)

    def _initialize_weights(self, module, is_custom_code: bool = False):
        # An adapter is initialised as a whole by its own reset_parameters whenever a weight of it was not loaded (a
        # fresh adapter on a base). transformers visits its sub-modules first and would give their Linear layers the
        # base's N(0, 0.02); for custom code it also skips a module with no parameters of its own, which a LoRA
        # adapter is (its weights sit in peft's sub-modules): LoRA's B then started random, not at zero.
        if isinstance(module, (DomainAdapter, LoRADomainAdapter)):
            if all(getattr(p, "_is_hf_initialized", False) for p in module.parameters()):
                module._is_hf_initialized = True  # every weight loaded: nothing to initialise
                return
            # through transformers' own step (it marks the module), as code that is not custom: _init_weights below
            super()._initialize_weights(module, is_custom_code=False)
            return
        parts = getattr(self, "_adapter_parts", None)
        if parts is None:  # called outside initialize_weights
            parts = self._adapter_part_ids()
        if id(module) in parts:
            return  # its adapter (visited after it) initialises it
        super()._initialize_weights(module, is_custom_code)

    def _adapter_part_ids(self) -> frozenset[int]:
        """``id`` of every module inside an adapter (not the adapters themselves)."""
        adapters = self._modules.get("domain_adapters")  # absent while the stock __init__ runs post_init
        if adapters is None:
            return frozenset()
        return frozenset(id(part) for adapter in adapters.values() for part in adapter.modules() if part is not adapter)

    def initialize_weights(self):
        # the adapters' sub-modules, found once per pass instead of once per module visited
        self._adapter_parts = self._adapter_part_ids()
        try:
            super().initialize_weights()
        finally:
            del self._adapter_parts

    # ----------------------------------------------------------------------------------------------- audio path
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
        # a lora adapter sits in the projections of the layers from its encoder_layer on, not after that layer
        places = {(isinstance(adapter, LoRADomainAdapter), adapter.config.encoder_layer)
                  for adapter in adapters if adapter is not None}
        if len(places) > 1:
            described = sorted(f"{'lora from ' if lora else ''}{layer}" for lora, layer in places)
            raise ValueError(f"audio_domain {sorted(set(domains))} routes one batch to adapters at different places "
                             f"(encoder_layer {described}); transcribe them in separate batches")
        return next(iter(places), (False, None))[1]

    def _lora_routes(self, audio_domain: list[str] | str | None, num_audios: int
                     ) -> list[tuple[LoRADomainAdapter, list[bool] | None]]:
        """The lora adapters this batch is routed to, each with its rows (``None``: every row); empty when the
        adapters are off or no clip goes to a lora adapter."""
        domains = self._domains(audio_domain, num_audios)
        if not self._domain_adapter_enabled:
            return []
        routes: dict[int, tuple[LoRADomainAdapter, list[bool]]] = {}
        for index, name in enumerate(domains):
            adapter = None if name == MIC_DOMAIN else self._adapter_for(name)
            if isinstance(adapter, LoRADomainAdapter):
                routes.setdefault(id(adapter), (adapter, [False] * num_audios))[1][index] = True
        return [(adapter, None if all(rows) else rows) for adapter, rows in routes.values()]

    def _cached_features_layer(self) -> int | None:
        """Where ``audio_encoder_hidden_states`` (a feature cache) come from: the active adapter's place
        (``None``: the tower's output; ``k``: its hidden states after ``k`` layers)."""
        return self.domain_adapter_config().encoder_layer

    def _encode_adapting_inside(self, input_features, feature_attention_mask, audio_domain, layer: int):
        """The tower with the routed adapters after its first ``layer`` layers (lora: in the projections of the
        layers from ``layer`` on): adapted output and lengths."""
        routes = self._lora_routes(audio_domain, input_features.shape[0])
        if routes:  # the first `layer` layers carry no LoRA and run without autograd, the rest with the LoRA layers
            with lora_in_tower(self.model.audio_tower, routes):
                return encode_audio(self.model.audio_tower, input_features, feature_attention_mask,
                                    trim=self.config.trim_audio_tower, adapt=lambda states, frame_lengths: states,
                                    adapt_after=layer)
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
        routes = self._lora_routes(audio_domain, hidden.shape[0])
        if routes:  # lora on the layers from `layer` on: the rest of the tower runs with the LoRA layers
            with lora_in_tower(self.model.audio_tower, routes):
                return finish_audio_tower(self.model.audio_tower, hidden, lengths, layer)
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

        With ``output_hidden_states`` / ``output_attentions`` (default: the audio tower's config, as the tower's own
        forward reads them) the tower runs its stock (padded) forward, which records them; otherwise it runs on the
        valid frames only when ``config.trim_audio_tower``.
        """
        audio_model = self.model
        tower = audio_model.audio_tower
        if feature_attention_mask is None:
            raise ValueError("feature_attention_mask is required with input_features (the processor returns it)")
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        if output_hidden_states is None:
            output_hidden_states = tower.config.output_hidden_states
        if output_attentions is None:
            output_attentions = tower.config.output_attentions
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
            # the language model's pass records nothing of the tower (as the stock forward): the trimmed pass
            features = self.get_audio_features(
                input_features.to(target_device), feature_attention_mask.to(target_device), audio_domain,
                output_hidden_states=False, output_attentions=False, return_dict=True,
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
        **kwargs: Unpack[TransformersKwargs],
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

    # Adapted from transformers.models.qwen2_audio.modeling_qwen2_audio.Qwen2AudioForConditionalGeneration.forward
    # (the language model, then `lm_head` on the kept positions); differs in taking a 2-D bool mask of positions and
    # computing the loss on those positions only.
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

    # ------------------------------------------------------------------------------------------ save and load
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
    # post_init stored the stock class's sets on the instance: add this class's entries
    model._no_split_modules = set(model._no_split_modules or ()) | set(cls._no_split_modules)
    model._init_domain_adapter_state()
    model._list_adapters_as_fp32()
    if model.domain_adapter is not None:
        model.domain_adapter.to(device=reference.device)
    model.freeze_base_model()
    return model


# transformers 5 renames the legacy Qwen2-Audio checkpoint keys by model type, which skips custom classes: register
# the stock renaming for this class (a full checkpoint's adapter keys are the loader's key mapping, see
# checkpoints_qwen2audio_ldv.py).
register_checkpoint_conversion_mapping(
    Qwen2AudioLDVForConditionalGeneration.__name__,
    get_checkpoint_conversion_mapping("qwen2_audio") or [],
    overwrite=True,
)

__all__ = [
    "ADAPTER_WEIGHTS_NAME",
    "CODE_FILES",
    "DOMAIN_ADAPTER_PREFIX",
    "Qwen2AudioLDVAudioFeaturesOutput",
    "Qwen2AudioLDVForConditionalGeneration",
    "add_domain_adapter_to_model",
]
